"""Commands and processes: shell commands with a deadline, pids and ports, and the server's process without a
pid file: the playbook's ``process:`` selector (a stock Tomcat, like many Java servers, writes no pid file
unless told to), cross-checked against the ports it listens on.
"""

import errno
import os
import pwd
import re
import signal
import socket
import shutil
import stat
import time

from .beneath import OPEN_DIR, account_of, dir_writers, open_beneath, read_beneath, root_only_problem, walk_deep_said
from .common import AgentError
from .files import read_text


OUTPUT_TAIL = 16000  # a command's output, before the controller redacts it and keeps its last 4000 characters


LEFT_OUT = "[… %d bytes left out …]"  # where output was cut: BoundedOutput's middle, a tail's first line
#: a marker read back from output (at most 12 digits: a longer number is the output's own text, not a count -- and
#: int() of thousands of digits raises; the output is the service account's, which may print anything)
_LEFT_OUT = re.compile(r"\n?\[… ([0-9]{1,12}) bytes left out …\]\n?")


def output_tail(text):
    """The end of a command's output, cut as cut_tail cuts it (OUTPUT_TAIL characters)."""
    return cut_tail(text, OUTPUT_TAIL)


def cut_tail(text, limit):
    """The end of a command's output: at most ``limit`` characters, starting at a line boundary (a line cut in half
    can lose the name that marks its value as a secret; the controller redacts what it gets). When it cuts, its
    first line says how much is left out (LEFT_OUT): the bytes cut here, and those the markers among them counted
    (BoundedOutput's, an earlier tail's), so the operator learns that output was left out, and how much, from
    every tail down to the audit log's. Shared by the agent and the controller."""
    if len(text) <= limit:
        return text
    end = text[-limit:]
    kept = end[end.find("\n") + 1:] if "\n" in end else ""
    gone = text[:len(text) - len(kept)]
    dropped = len(gone.encode("utf-8", "replace"))
    for m in _LEFT_OUT.finditer(gone):  # a marker stands for what it counted, not for its own few bytes
        dropped += int(m.group(1)) - len(m.group(0).encode("utf-8"))
    return LEFT_OUT % dropped + ("\n" + kept if kept else "")


def account_name(uid):
    """An account as the output names it: ``daemon (uid 1)``, or ``uid 1234`` when it has no account entry."""
    try:
        return "%s (uid %d)" % (pwd.getpwuid(uid).pw_name, uid)
    except KeyError:
        return "uid %d" % uid


def become(uid, gid, groups):
    """A ``preexec_fn`` that makes the child ``uid`` for good: its supplementary groups, then real, effective and
    saved gid, then uid (in that order: once the uid is dropped the groups can no longer be changed), so that
    nothing the child runs can take root back. Python 3.8 has no ``user=``/``group=`` for Popen; the groups are
    looked up by the parent (account_of), since a child of fork() should not read the account databases."""
    def child():
        os.setgroups(groups)
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    return child


def command_account(place):
    """{uid, gid, groups, name, home} of the account a playbook command run in directory ``place`` (the install
    dir, or the old tree after an interrupted swap) runs as when that is not the agent's own: its owner, when the
    agent is root and the owner is not. The owner writes the scripts there (``bin/stop.sh``) and the files they
    act on (``run/server.pid``): run as root, whatever it wrote would run, or be signalled, as root. None when
    the agent is not root (it cannot change account; the kernel limits the command to the agent's) or root owns
    the install. ``place`` is looked at with lstat: the install dir is never a link (state.check_install)."""
    if os.geteuid() != 0:
        return None
    uid = os.lstat(place).st_uid
    if uid == 0:
        return None
    gid, groups = account_of(uid)
    try:
        user = pwd.getpwuid(uid)
        name, home = user.pw_name, user.pw_dir or "/"
    except KeyError:
        name, home = None, "/"
    return {"uid": uid, "gid": gid, "groups": groups, "name": name, "home": home}


def root_command_problems(install, commands):
    """The refusal (one sentence, or none) of playbook commands (``commands``: {key: rendered command}) that would run
    as root code another account can change. When the agent is root and root owns the install dir (command_account:
    the commands run as root, in the install dir or in ``/``), every command is refused when a path it names outside
    the install is not root's alone (outside_path_problem: ``/bin/sh /home/svc/stop.sh`` would run what the service
    account writes); and a command that is not a plain command outside the install (outside_install) needs the whole
    install tree root's alone (tree_problems). Which file a shell command runs, sources (Tomcat's catalina.sh sources
    bin/setenv.sh) or reads (``kill $(cat run/server.pid)``, a pid file the service account can rewrite between the
    agent's look and the script's) cannot be told by reading the command, so nothing of the tree is exempt: the
    service account owning ``bin/``, ``conf/``, ``logs/`` or a pid file would otherwise have root run, source or act
    on what it wrote. Code upgrader does not read (inline_code: ``perl -e``, an awk program, ``echo x | sh``) is
    refused whoever owns what it names."""
    if os.geteuid() != 0 or command_account(install) is not None:
        return []  # the commands run as the install's owner, or as the agent's own account
    # the agent's own variables as a command will see them (run_shell); those not known yet stand for a plain word,
    # and the command is judged again with their values right before it runs (root_workdir)
    known = dict((name, "x") for name in AGENT_VARS)
    known["UPGRADER_INSTALL_DIR"] = install
    for key in sorted(commands):
        odd = unjudged_word(commands[key], known)
        if odd:
            return ["%s (%s) would run as root, but the word %s in it cannot be judged as written (%s): the shell would "
                    "turn it into paths the agent does not see, another account's among them; nothing was stopped: "
                    "write it as a plain absolute path" % (key, commands[key], odd[0], odd[1])]
        code = inline_code(commands[key], known)
        if code:
            return ["%s (%s) would run as root, but %s in it runs code upgrader does not read (%s): another account "
                    "could have root run what it wrote; nothing was stopped: put the code in a root-owned script and "
                    "name that script by its absolute path" % (key, commands[key], code[0], code[1])]
        found = outside_path_problem(install, commands[key], known)
        if found:
            return ["%s (%s) would run as root, but %s, named in it, is not root's alone: %s: another account could "
                    "change what root runs or reads; nothing was stopped: make it and every directory above it "
                    "root's and writable by nobody else (chown root, chmod go-w), or name a file that is"
                    % (key, commands[key], found[0], found[1])]
        code = unlisted_code(commands[key], known)
        if code:
            return ["%s (%s) would run as root, but %s in it runs code upgrader does not read (%s): another account "
                    "could have root run what it wrote; nothing was stopped: put the code in a root-owned script and "
                    "name that script by its absolute path" % (key, commands[key], code[0], code[1])]
    ran = ran_written_problem(install, list(commands.values()), known)
    if ran:
        key = next(k for k in sorted(commands) if commands[k] == ran[2])
        return ["%s (%s) would run as root, but %s in it %s: nothing was stopped: %s"
                % (key, commands[key], ran[0], ran[1], ran[3])]
    inside = sorted(key for key, command in commands.items() if not outside_install(install, command))
    if not inside:
        return []
    found = tree_checked(install)
    if not found:
        return []
    return ["%s would run as root in %s, but %s%s: another account could change what root runs, sources or acts on; "
            "nothing was stopped: give the install to the service account (chown -R; the commands then run as that "
            "account), or make it root's alone (chown -R root, chmod -R go-w), or start and stop it through a "
            "command outside the install (systemctl)"
            % (", ".join(inside), install, found[0], " (and %d more)" % (len(found) - 1) if len(found) > 1 else "")]


#: where a path ends for the outside-path rule: what a shell would expand (``$X``, a glob, ``~``) or unquote
_PATH_END = re.compile(r"[$*?\[\]~\\]")


#: unquoted characters a shell would expand (or run) before the word reaches the program, and what they are called
_ODD = {"*": "a glob", "?": "a glob", "[": "a glob", "~": "a ~ (home directory)", "$": "a $ expansion",
        "`": "a command substitution", "{": "a brace expansion"}
_OPS = ";&|<>()\n"
SCRIPT_DEPTH = 8  # sh -c scripts inside sh -c scripts: deeper is refused


#: the variables the agent itself gives every command (run_shell): a root command may name them, judged by their value
AGENT_VARS = ("UPGRADER_INSTALL_DIR", "UPGRADER_HOST", "UPGRADER_CURRENT_VERSION", "UPGRADER_TARGET_VERSION",
              "UPGRADER_RUN")
_VAR = re.compile(r"\$(?:([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)\})")


def shell_words(command, known=None, breaks=None, attached=None):
    """The words of ``command`` as the POSIX shell splits them: (words, unresolved). Each word is (text, odd, at):
    its text with quotes and escapes resolved, what in it the shell would expand (``odd``: "a glob", "a ~ (home
    directory)", "a $ expansion", ...; empty when the word is literal) and where in the text the first expansion is
    (``at``). Operators (``;`` ``&&`` ``|`` ``<`` ``(`` and newlines) end words and are not words; comments are
    skipped; a process substitution ``<(`` is a word of its own, odd. ``$NAME`` or ``${NAME}`` of a variable in
    ``known`` (the agent's own, AGENT_VARS) is its value, judged as written (odd when, unquoted, the shell would
    split or glob it). ``unresolved`` is the rest of the command from a quote or escape that does not end (None when
    all end). ``breaks``, when given, gets (index of the next word, operator character) for each operator;
    ``attached``, the index of each word of one unquoted ASCII digit an operator follows with no blank between
    (``2>``; not ``2 >``, ``10>``, ``'5'>``, ``²>``, which dash passes to the program as words)."""
    words = []
    cur, odd, at, started = [], [], None, False
    quoted = False  # a quote or an escape in the word now read: then no redirection's descriptor (dash: '5'>x)
    i, n = 0, len(command)

    def flag(kind):
        nonlocal at
        if kind not in odd:
            odd.append(kind)
        if at is None:
            at = len(cur)

    def var(at_i, quoted):
        """Put a known variable's value at command[at_i] into the word: its length in the text, or 0."""
        m = _VAR.match(command, at_i)
        name = m and (m.group(1) or m.group(2))
        if not m or name not in (known or {}):
            return 0
        value = known[name]
        if not quoted and (not value or any(ch.isspace() or ch in "*?[" for ch in value)):
            flag(_ODD["$"])
        cur.append(value)
        return m.end() - at_i

    def end():
        nonlocal cur, odd, at, started, quoted
        if started:
            words.append(("".join(cur), tuple(odd), at))
        cur, odd, at, started, quoted = [], [], None, False, False

    while i < n:
        c = command[i]
        if c in " \t\r\f\v":
            end()
        elif c == "#" and not started:
            while i < n and command[i] != "\n":
                i += 1
            continue
        elif c in _OPS:
            if started and attached is not None and not quoted and re.match(r"[0-9]$", "".join(cur)):
                attached.add(len(words))  # one plain digit glued to the operator: dash's descriptor (2>, not 2 >)
            end()
            if breaks is not None:
                breaks.append((len(words), c))
            if c in "<>" and command[i + 1:i + 2] == "(":
                words.append((command[i:i + 2], ("a process substitution",), 0))
        elif c == "\\":
            quoted = True
            if i + 1 >= n:
                return words, command[i:]
            if command[i + 1] != "\n":
                cur.append(command[i + 1])
                started = True
            i += 2
            continue
        elif c == "'":
            quoted = True
            close = command.find("'", i + 1)
            if close < 0:
                return words, command[i:]
            cur.append(command[i + 1:close])
            started, i = True, close + 1
            continue
        elif c == '"':
            j, started, quoted = i + 1, True, True
            while j < n and command[j] != '"':
                if command[j] == "\\" and j + 1 < n and command[j + 1] in '$`"\\\n':
                    if command[j + 1] != "\n":
                        cur.append(command[j + 1])
                    j += 2
                    continue
                if command[j] == "$":
                    took = var(j, True)
                    if took:
                        j += took
                        continue
                if command[j] in "$`":
                    flag(_ODD[command[j]])
                cur.append(command[j])
                j += 1
            if j >= n:
                return words, command[i:]
            i = j + 1
            continue
        elif c == "`":
            end()
            words.append(("`", (_ODD["`"],), 0))
        elif c in "{}" and not started and command[i + 1:i + 2] in ("", " ", "\t", "\n", ";"):
            # a group's brace ({ cmd; }), or a word dash takes as written where no command starts (> {): a word,
            # odd, so a root command holding one is refused (unjudged_word) rather than read two ways
            words.append((c, ("a brace",), 0))
        elif c == "{" and command[i + 1:i + 2] == "}" and (command[i + 2:i + 3] in ("", " ", "\t") or
                                                             command[i + 2] in _OPS):
            # find's literal {} ending a word: no brace expansion (``x{},a}`` is one); any other unquoted { is one
            cur.append("{}")
            started = True
            i += 2
            continue
        else:
            took = var(i, False) if c == "$" else 0
            started = True
            if took:
                i += took
                continue
            if c in _ODD:
                flag(_ODD[c])
            cur.append(c)
        i += 1
    end()
    return words, None


def script_words(command, depth=0, known=None):
    """Every word of ``command`` (shell_words) and, recursively, of every script in it (read_command: the operands of
    a shell run with ``-c`` whatever options come first, ``su -c``, ``flock -c``, ``env -S``, a ``find -exec``
    command, and the word after any ``-c`` option), at most SCRIPT_DEPTH deep. (words, unresolved): a quote or escape
    that does not end, in the command or a script, or a script nested deeper, is ``unresolved``."""
    seen = _read(command, known, depth)
    return seen["words"], seen["unresolved"]


def inline_code(command, known=None):
    """The first program of a root command that would run code upgrader does not read, and why: (program, why), or
    None (read_command)."""
    return _read(command, known)["code"]


def unlisted_code(command, known=None):
    """The first program of a root command that is not one upgrader knows runs only what it is given, and why:
    (program, why), or None (unlisted_program, read_command). Judged after inline_code and the outside-path rule,
    whose reasons are the more precise."""
    return _read(command, known)["unlisted"]


def script_files(command, known=None):
    """The script files the interpreters of ``command`` run, as named (read_command)."""
    return _read(command, known)["files"]


def _read(command, known=None, depth=0):
    seen = {"words": [], "files": [], "writes": [], "runs": [], "code": None, "unlisted": None, "unresolved": None,
            "install": (known or {}).get("UPGRADER_INSTALL_DIR")}
    read_command(command, known, depth, seen)
    return seen


#: programs that run code, by the name of their family (program_name, then family): a POSIX shell, another shell, a
#: scripting language, awk, ssh, the JDK's launchers. Names in _FAMILY_PREFIX are matched as prefixes of the
#: basename (``perl5.36-x86_64-linux-gnu`` is perl, ``python3.11`` python, ``ksh93`` ksh): a hard link or an
#: alternative's name is still known by its family
SHELLS = frozenset(("sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "rbash"))
_FAMILY_PREFIX = ("ksh", "perl", "python", "pypy", "ruby", "nodejs", "node", "php", "lua", "tclsh", "wish", "groovy",
                  "scala", "guile")
_FAMILY_EXACT = frozenset(("sh", "bash", "dash", "zsh", "mksh", "ash", "rbash", "csh", "tcsh", "fish", "expect", "awk",
                           "gawk", "mawk", "nawk", "ssh", "jshell", "java", "jrunscript", "jjs", "Rscript", "R"))
INTERPRETERS = SHELLS | frozenset(_FAMILY_PREFIX) | _FAMILY_EXACT
#: programs that run another command or script given in their words, read by their own rules (_read_program)
RUNNERS = frozenset(("find", "su", "runuser", "script", "sg", "newgrp", "env", "eval", "watch", "flock", "xargs",
                     "parallel", ".", "source"))
#: programs that never run their words as commands: the words after them are not looked through for an interpreter
#: (``systemctl restart php8.2-fpm``). Every other program's later words are (setarch, prlimit, runcon, sudo, ...)
NOT_RUNNERS = frozenset(("systemctl", "kill", "pkill", "pgrep", "sleep", "echo", "printf", "true", "false", "test",
                         "[", "cat", "rm", "rmdir", "mkdir", "chown", "chgrp", "chmod", "touch", "ls", "cp", "mv",
                         "ln", "grep", "egrep", "fgrep", "id", "date", "logger", "wc", "head", "tail", "sort", "cut",
                         "tr", "basename", "dirname", "readlink", "realpath", "stat", "sync"))
#: words that begin a shell's compound command, not a program
RESERVED = frozenset(("if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}", "case",
                      "esac"))
#: characters that make a word a shell script to a program that hands it to a shell (``sg GROUP 'S'``)
_SCRIPTISH = re.compile(r"[\s;&|<>()`]")


#: the programs (by the name their links lead to, in SYSTEM_DIRS) a root command may run besides the shells, a
#: script file (#!) root alone can change, and the install's own programs: each runs only what its words say, never
#: code from its words, a file it finds or its standard input (sed's ``e``, gdb, ed, vim, tar's checkpoint action,
#: sort's compress program and find's -exec do; so do ssh and every interpreter). Everything else: a root-owned script
LISTED = frozenset(("systemctl", "kill", "pkill", "pgrep", "sleep", "echo", "printf", "true", "false", "test", "[",
                    "cat", "rm", "rmdir", "mkdir", "chown", "chgrp", "chmod", "touch", "ls", "cp", "mv", "grep", "id",
                    "date", "logger", "wc", "head", "tail", "cut", "basename", "dirname", "readlink",
                    "realpath", "stat", "sync", "tee", "timeout", "nice", "printenv", "seq", "yes"))
SYSTEM_DIRS = ("/usr/bin", "/bin", "/usr/sbin", "/sbin")
#: shell builtins a root command may use (``cd``'s operand is judged as a directory: command_dirs). None sets a
#: variable (``printf -v``, ``unset PATH``, ``export``: a program found by a PATH of pieces) or the umask, and
#: ``test -v``/``printf -v``, whose operand bash evaluates as code, are refused (_read_program)
BUILTINS = frozenset(("cd", "pushd", "popd", "exit", ":", "true", "false", "test", "[", "echo", "printf", "set"))
#: shell builtins refused by name: each runs its words as code, or sets variables, the umask or the shell's lookup
CODE_BUILTINS = frozenset(("eval", "trap", "builtin", "enable", "alias", "fc", "export", "unset", "readonly", "local",
                           "declare", "typeset", "umask", "read", "mapfile", "readarray", "getopts", "let", "hash",
                           "shopt", "ulimit", "return", "shift", "break", "continue", "wait", "source"))
#: interpreters of a script file named with no option (``python3 -i FILE`` reads code from its standard input,
#: ``perl -d`` a debugger's): the file is judged as a path, its directory as a tree
FILE_INTERPRETERS = frozenset(("python", "pypy", "perl", "ruby", "node", "nodejs", "php", "lua", "tclsh"))
#: a POSIX shell's options a root command may give (then a -c script, read as a command, or a script file)
_SHELL_OPTION = re.compile(r"[-+][euxvc]+$")
_SHELL_SET = frozenset(("errexit", "nounset", "pipefail", "xtrace", "verbose"))


def _wrapped(texts, i):
    """The index of the command a wrapper at ``texts[i]`` runs (``timeout [-s SIG] [-k D] DURATION CMD``,
    ``nice [-n N] CMD``), past its options; None when ``texts[i]`` is no wrapper. (``nohup`` is none: it writes
    ``nohup.out`` where it runs, a file no word names.)"""
    name = os.path.basename(texts[i])
    if name not in ("timeout", "nice"):
        return None
    k = i + 1
    valued = {"timeout": ("-s", "-k"), "nice": ("-n",)}[name]
    flags = {"timeout": ("--preserve-status", "--foreground", "-v", "--verbose"), "nice": ()}[name]
    attached = {"timeout": ("-s", "-k", "--signal=", "--kill-after="), "nice": ("-n", "--adjustment=")}[name]
    while k < len(texts) and texts[k].startswith("-") and texts[k] != "-":
        if texts[k] == "--":
            k += 1
            break
        if texts[k] in valued:
            k += 2
        elif texts[k] in flags or texts[k].startswith(attached) or name == "nice" and texts[k][1:].isdigit():
            k += 1
        else:
            return len(texts) + 1  # an option not known exactly (GNU takes --adj for --adjustment): not read
    return k + 1 if name == "timeout" else k


def unlisted_program(word, args, install):
    """Why the program ``word`` (with its ``args``) may not run in a root command, or None. It may be a shell builtin
    (BUILTINS); a POSIX shell with the options _SHELL_OPTION/``-o`` _SHELL_SET (its -c script or script file read by
    read_command); an interpreter of FILE_INTERPRETERS given a script file and no option; awk with ``-f FILE``; a
    program of the install (the whole-tree rule judges it); a script (``#!``) outside it (judged as a path, its
    directory as a tree); or a program LISTED, found (by absolute path, or by name on root's PATH: root_path) where
    its links lead, in SYSTEM_DIRS. Any other program may run code upgrader does not read (sed, gdb, ed, vim, tar,
    ssh, java, ...), in its words, a file it finds or its standard input: refused (fail closed)."""
    if word in BUILTINS or word in (".", "source"):  # a sourced file: judged as a path, read from no stream
        return None

    if word in CODE_BUILTINS and word != "source":
        return "a shell builtin that runs its words as code, or sets variables or the umask (%s)" % word
    kind = family(word)
    if kind in SHELLS:
        unread = _shell_args(args)[2]
        return "a shell option upgrader does not read (%s)" % unread if unread else None
    if kind in FILE_INTERPRETERS:
        if args and args[0].startswith("-"):
            return ("an option of %s (%s): an interpreter may only be given a script file, with no option (-i, -d "
                    "and the like read code upgrader does not see)" % (kind, args[0]))
        return None
    if kind:
        return "a program that runs code upgrader does not read (%s)" % kind
    path = _program_path(word, install or "/nonexistent")
    if path is None:
        return "a program not found on root's PATH (%s)" % word
    real = os.path.realpath(path)
    if install and (_in_install(install, os.path.normpath(path)) and _in_install(install, real)):
        return None  # the install's own: the whole-tree rule judges it
    if _is_script(real) or _listed_real(real):
        return None
    return ("a program not on upgrader's list of programs that run only what they are given (%s): sed, gdb, ed, "
            "vim, tar and the like can run code from their words, a file or their standard input" % real)


def listed_program(word):
    """Whether ``word`` is a shell builtin or a LISTED program where its links lead in SYSTEM_DIRS (by absolute path,
    or by name on root's PATH)."""
    if word in BUILTINS:
        return True
    path = _program_path(word, None)
    return path is not None and _listed_real(os.path.realpath(path))


def _program_path(word, install):
    """The path a root command's program ``word`` names: itself when absolute, relative to ``install`` when it has a
    ``/`` (None without an install), else found by name on root's PATH (None when it is not there)."""
    if word.startswith("/"):
        return word
    if "/" in word:
        return os.path.join(install, word) if install else None
    return shutil.which(word, path=root_path())


def _listed_real(real):
    """Whether the real path of a program is a LISTED one in SYSTEM_DIRS."""
    return os.path.basename(real) in LISTED and os.path.dirname(real) in SYSTEM_DIRS


def _is_script(path):
    """Whether ``path`` is a script: a regular file that is no ELF program (``#!``, or text the shell runs when the
    kernel cannot), read without blocking on a FIFO."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode) and os.read(fd, 4) != b"\x7fELF"
    finally:
        os.close(fd)


def program_name(word):
    """The name a program word is known by: its basename without a version suffix (``/usr/bin/python3.11``: python)."""
    base = word.rsplit("/", 1)[-1]
    return re.sub(r"[-.0-9]+$", "", base) or base


def family(word):
    """The interpreter family (INTERPRETERS) a program word belongs to, or None: ``/usr/bin/perl5.36-x86_64-linux-gnu``
    is perl, ``python3.11`` python, ``/bin/ksh93`` ksh, ``bash`` bash; ``/opt/x/bin/stop.sh`` none. An absolute path
    is known by the name its links lead to as well (``/usr/bin/js -> /etc/alternatives/node``)."""
    for w in dict.fromkeys((word, os.path.realpath(word) if word.startswith("/") else word)):
        base = w.rsplit("/", 1)[-1]
        if _SCRIPTISH.search(base):
            return None  # no program's name: a script (read as such)
        for prefix in _FAMILY_PREFIX:
            if base.startswith(prefix):
                return prefix
        name = program_name(w)
        if name in _FAMILY_EXACT:
            return name
    return None


def read_command(command, known, depth, seen):
    """Read ``command`` as the shell would run it, into ``seen``: its words (``words``: every word, and those of every
    script in it), the script files its interpreters run (``files``), the first program that would run code upgrader
    does not read (``code``: (program, why)) and a quote or escape that does not end, or a script nested deeper than
    SCRIPT_DEPTH (``unresolved``). Each simple command (between operators; a redirection's target is no word of it)
    is read from its program on, past assignments and reserved words; then, whatever the program (NOT_RUNNERS
    aside), every later word that names an interpreter (family) or a program running a command (RUNNERS) is read as
    a program with the words after it (``setarch x86_64 /bin/sh -c -- S`` reads S). An interpreter (INTERPRETERS)
    may run a script file named by a plain path, or a shell a ``-c`` script (every operand after its options, read as
    a command); code given as text (``perl -e``, ``python3 -c``, an awk program, ssh's remote command), a module
    found by name (``python3 -m``) or a script read from standard input (``echo x | sh``, ``sh -s``, ``sh < file``,
    ``sh /dev/stdin``, a FIFO, ``xargs``) is code upgrader does not read: refused. A word with blanks or shell
    operators in it is read as a script too (``sg GROUP 'S'``), as is the word after any ``-…c…`` option."""
    if seen["unresolved"] is not None:
        return
    breaks, attached = [], set()
    words, unresolved = shell_words(command, known, breaks, attached)
    seen["words"] += words
    if unresolved is not None:
        seen["unresolved"] = unresolved
        return
    cuts = {}
    for at, c in breaks:
        cuts.setdefault(at, []).append(c)
    commands, cur, target, group_of_target = [], [], False, ()
    fed, feeding = set(), False  # the commands whose standard input is a pipe or a file (not /dev/null)
    for k, word in enumerate(words):
        redirecting = False
        group = cuts.get(k, ())
        for c in group:
            if c in "<>":
                target = redirecting = True
                feeding = c == "<" and ">" not in group
                group_of_target = group
            elif c == "&" and redirecting:
                pass  # >&1, <&0: a descriptor, the redirection's target
            else:
                target = False
                if cur:
                    commands.append(cur)
                cur = []
        if list(group) == ["|"]:
            fed.add(len(commands))  # the command now starting reads the pipe
        if target:
            target = False
            if feeding and word[0] != "/dev/null":
                fed.add(len(commands))
            elif not feeding and "&" not in group_of_target:
                seen["writes"].append(word[0])  # > FILE, >> FILE (not >&N): a file the command writes
            feeding = False
            continue
        if word[0].isdigit() and any(c in "<>" for c in cuts.get(k + 1, ())[:1]) and not word[1] and k in attached:
            continue  # 2>&1, 3<x: the descriptor a redirection names, no word of the command (``5 >x``: 5 is one)
        cur.append(word[0])
    if cur:
        commands.append(cur)

    odd = None if seen.get("loose") else _grammar_problem(words, cuts, commands)  # a word of a listed program: data
    if odd and seen["unlisted"] is None:
        seen["unlisted"] = (odd, "shell syntax a root command may not use (%s): only simple commands joined by &&, || "
                                 "and ;, with output redirections and < /dev/null" % odd)
    for n, texts in enumerate(commands):
        seen["fed"] = n in fed
        scripts = []
        listed = bool(texts) and listed_program(texts[0])  # head -c N, cut -c LIST: a listed program's -c is data
        for k in range(1, len(texts)):  # the word after any -c (sh -ec, su -c, a program of its own with one)
            if not listed and re.match(r"-[A-Za-z]*c[A-Za-z]*$", texts[k - 1]) \
                    and not texts[k].startswith(("-", "+")):
                scripts.append(texts[k])
        _read_simple(texts, scripts.append, seen)
        words_as_scripts = []
        if seen["code"] is None:  # code refused as such is not read again as a script
            # a word with blanks or operators is a script to a program that hands it to a shell; one line with a
            # quote that does not end is not (sh and bash refuse the whole line, nothing of it runs): a message.
            # Read for its paths and expansions; its programs are not held to the list (unlisted_program): only a
            # program not on it (refused already) would run it
            words_as_scripts = [t for t in texts if _SCRIPTISH.search(t) and t not in scripts
                                and ("\n" in t or shell_words(t, known)[1] is None)]
        for text in dict.fromkeys(scripts + words_as_scripts):  # each script once
            if depth >= SCRIPT_DEPTH:
                seen["unresolved"] = text
                return
            loose = seen.get("loose")
            seen["loose"] = loose or text not in scripts
            try:
                read_command(text, known, depth + 1, seen)
            finally:
                seen["loose"] = loose


#: the operators a root command may use between its simple commands, and its redirections (output only, and
#: ``< /dev/null``): no pipe into anything but a listed program (_read_simple), subshell, group, compound command,
#: background job, heredoc, ``<>``, ``|&`` or other input. A script that needs them belongs in a root-owned file
_JOINS = re.compile(r"(&&|\|\||;|>>|>&|>|<|\|)")
_COMPOUND = frozenset(("if", "then", "else", "elif", "fi", "do", "done", "while", "until", "for", "case", "esac",
                       "select", "function", "{", "}", "!", "[[", "]]", "coproc"))


def _grammar_problem(words, cuts, commands):
    """The first piece of shell syntax in a command that a root command may not use (_JOINS, _COMPOUND), or None."""
    for k in sorted(cuts):
        ops = "".join(c for c in cuts[k] if c not in " \t")
        rest = _JOINS.sub("", ops)
        if rest:
            return rest[0] if rest[0] != "\n" else "a newline"
        for op in _JOINS.findall(ops):
            if op == "<" and (k >= len(words) or words[k][0] != "/dev/null"):
                return "<"  # input other than /dev/null
        if "|&" in ops or "<>" in ops or "<<" in ops or "<&" in ops or ">|" in ops:
            return next(x for x in ("|&", "<>", "<<", "<&", ">|") if x in ops)
        if ops.endswith("&") and not ops.endswith(("&&", ">&")):
            return "&"  # a background job
        if ops.endswith(">&") and (k >= len(words) or not re.match(r"[0-9]+$|-$", words[k][0])):
            return ">&"  # bash's >&FILE: stdout and stderr into a file
    for texts in commands:
        if texts and texts[0] in _COMPOUND:
            return texts[0]
        if texts == ["exec"]:
            return "exec"  # with redirections only
    return None


def _read_simple(texts, script, seen):
    """read_command of one simple command (its words' texts): its program (past ``exec``/``command``/``time`` and
    the wrappers ``timeout``/``nice``/``nohup``, whose command is read as one), which must be one upgrader knows runs
    only what it is given (unlisted_program), then every later word naming an interpreter or a runner (unless the
    program is one of NOT_RUNNERS)."""
    i = 0
    while i < len(texts) and (texts[i] in RESERVED or re.match(r"[A-Za-z_][A-Za-z0-9_]*=", texts[i])):
        _assignment(texts[i], seen)
        i += 1
    while i < len(texts) and texts[i] in ("exec", "command", "time") and texts[i + 1:i + 2] != ["-v"]:
        i += 1
        while i < len(texts) and texts[i] in ("-p", "--", "-c", "-l"):  # exec -c/-l, command -p: no other option
            i += 1
    if i < len(texts) and texts[i] == "function" or any(t.endswith("()") or t == "()" for t in texts[i:i + 2]):
        seen["unlisted"] = seen["unlisted"] or (texts[i], "a shell function definition: its body and its calls are "
                                                          "not read")
        return
    if i >= len(texts) or texts[i] in ("for", "select", "case", "in", "esac"):
        return  # a loop's or case's words, no program (judged as paths like every word)
    if seen.get("loose"):  # a word read as a script only for its paths: no program of it is held to the list
        return _read_listed(texts, i, script, seen)
    wrapped = _wrapped(texts, i)
    if wrapped is not None:
        if wrapped > len(texts):
            seen["unlisted"] = seen["unlisted"] or (texts[i], "an option of %s upgrader does not read exactly "
                                                              "(the command it runs is then not known)" % texts[i])
        elif wrapped < len(texts):
            _read_simple(texts[wrapped:], script, seen)
        return
    if "/" in texts[i]:
        seen["runs"].append(texts[i])
    why = unlisted_program(texts[i], texts[i + 1:], seen["install"])
    if not why and seen.get("fed") and not listed_program(texts[i]):
        why = ("a program given its standard input by a pipe or a file, which it may read as code (a script, an "
               "interpreter, a shell): only a listed program may read one")
    if why and seen["unlisted"] is None:
        seen["unlisted"] = (texts[i], why)
    _read_listed(texts, i, script, seen)  # the program's own rules too: their reason (inline_code) is more precise


def _read_listed(texts, i, script, seen):
    """_read_simple past its program's check: the program's own rules, then its later words naming an interpreter
    or a runner (NOT_RUNNERS aside)."""
    _read_program(texts, i, script, seen)
    if program_name(texts[i]) in NOT_RUNNERS:
        return
    for j in range(i + 1, len(texts)):
        if family(texts[j]) or program_name(texts[j]) in RUNNERS:
            _read_program(texts, j, script, seen)


def _read_program(texts, i, script, seen):
    """Read the program ``texts[i]`` with the words after it as its arguments (its own rules; not its later words)."""
    def code(program, why):
        if seen["code"] is None:
            seen["code"] = (program, why)

    def unlisted(program, why):
        if seen["unlisted"] is None:
            seen["unlisted"] = (program, why)

    word, name, args = texts[i], program_name(texts[i]), texts[i + 1:]
    unread = _shell_args(args)[2] if name == "set" else None
    if unread:
        return unlisted(word, "a shell option upgrader does not read (%s)" % unread)
    if name in ("test", "[") and any(a in ("-v", "-R") for a in args):
        return unlisted(word, "a test of a variable (-v, -R), whose name bash evaluates as code")
    if name == "printf" and args[:1] and args[0].startswith("-v"):
        return unlisted(word, "printf -v, which sets a variable (bash evaluates its name as code)")
    if name in ("printf", "echo"):
        for a in args:
            odd = _ESCAPE.search(a.replace("\\\\", ""))
            if odd or name == "printf" and "%b" in a:
                return unlisted(word, "text written in escapes (%s) the approver does not read as it will be "
                                      "written" % (odd.group(0) if odd else "%b"))
        return
    if name == "systemctl":
        return _read_systemctl(word, args, unlisted)
    if name == "tee":
        options, operands = _split_options(args)
        bad = [a for a in options if a not in ("-a", "--append", "-i", "-p")]
        if bad:
            return unlisted(word, "an option of tee upgrader does not read exactly (%s)" % bad[0])
        seen["writes"] += operands
        return
    if name in ("cp", "mv"):
        written = _copied(name, args)
        if isinstance(written, str):
            return unlisted(word, "an option of %s upgrader does not read exactly (%s): only %s"
                            % (name, written, _COPY_OPTIONS[name][2]))
        seen["writes"] += written
        return
    if name in ("chmod", "chown", "chgrp", "mkdir"):
        options, operands = _split_options(args, r"-[rwxXst]+$" if name == "chmod" else None)
        why = _mode_problem(name, options, operands)
        if why:
            return unlisted(word, why)
        # what they change is written as much as what tee writes (attack12r32: chmod 644 of the operator's key)
        seen["writes"] += operands if name == "mkdir" else operands[1:]
        return
    if name in ("rm", "rmdir"):  # removing the agent's ledger of spent approvals is writing it (attack12r32 H1)
        seen["writes"] += _split_options(args)[1]
        return
    if name == "touch":
        seen["writes"] += _split_options(args)[1]
        return
    if name in ("xargs", "parallel"):
        return code(word, "a command built from its standard input (%s)" % name)
    if name == "find":
        for k, a in enumerate(args):
            if a in ("-exec", "-execdir", "-ok", "-okdir"):
                rest = args[k + 1:]
                end = [j for j, b in enumerate(rest) if b in (";", "+")]
                _read_simple(rest[:end[0]] if end else rest, script, seen)
        return
    if name == "newgrp":
        return code(word, "a shell reading its standard input")
    if word in (".", "source"):  # the shell runs the file named (judged as a path) as a script of its own
        operands = [a for a in args if a != "--"]
        if operands and stdin_script(operands[0]):
            return code(word, unread_script(operands[0]))
        seen["runs"] += operands[:1]
        return
    if name in ("su", "runuser", "script", "sg"):
        values = _option_values(args, ("-c", "--command", "--session-command"))
        for v in values:
            script(v)
        if name != "script":
            operands = [a for a in args if not a.startswith("-")]
            for a in operands[1:]:
                script(a)
            if name == "sg" and len(operands) > 1:
                return  # sg GROUP 'S': S is run by /bin/sh -c
        if not values:
            code(word, "a shell reading its standard input")
        return
    if name == "env":
        for v in _env_scripts(args):
            script(v)
        return
    if name in ("eval", "watch"):  # its operands, joined by blanks, are a shell script
        operands = [a for a in args if not a.startswith("-")]
        if operands:
            script(" ".join(operands))
        return
    if name == "flock":  # its -c script; without one, the command after the lock file (a later word)
        for v in _option_values(args, ("-c", "--command")):
            script(v)
        return
    kind = family(word)
    if kind:
        _read_interpreter(word, kind, args, script, code, seen)


#: the variables a root command may set (``NAME=value cmd``, ``export NAME=value``): the locale and time zone. Any
#: other may have a program load code (LD_PRELOAD, BASH_ENV, PYTHONPATH, PATH, JAVA_TOOL_OPTIONS, HOME for
#: ``~/.local``, SYSTEMD_EDITOR, CATALINA_OPTS' ``-javaagent``...)
_ASSIGNABLE = re.compile(r"(LANG|LANGUAGE|LC_[A-Z]+|TZ|TERM|COLUMNS|LINES)=")
#: an escape of printf or echo that writes what the text does not show (``\101``, ``\x41``, ``\u0041``, ``\c``):
#: only ``\n``, ``\t`` and ``\\`` are read
_ESCAPE = re.compile(r"\\(?:[0-7]{1,3}|x[0-9A-Fa-f]{0,2}|u[0-9A-Fa-f]{0,4}|U[0-9A-Fa-f]{0,8}|[^nt])|\\$")
#: what ``systemctl`` may do in a root command: act on units by name (no path: ``systemctl link /x/evil.service``, no
#: editor: ``systemctl edit``, no other host: ``-H``)
SYSTEMCTL_VERBS = frozenset(("start", "stop", "restart", "reload", "try-restart", "reload-or-restart",
                             "try-reload-or-restart", "kill", "is-active", "is-failed", "is-enabled", "status", "show",
                             "daemon-reload", "reset-failed", "enable", "disable", "list-units"))
_SYSTEMCTL_OPTIONS = re.compile(r"(-q|--quiet|--no-block|--no-pager|--no-legend|--now|--wait|--value|--all|-a|"
                                r"--signal=[A-Z0-9+-]+|-s[A-Z0-9+-]*|--kill-whom=(main|control|all)|"
                                r"--property=[A-Za-z,]+|-p[A-Za-z,]*|--state=[a-z,-]+|--type=[a-z,]+)$")


def _assignment(text, seen):
    """A variable a root command sets (``NAME=value``): refused (``unlisted``) unless _ASSIGNABLE."""
    if not _ASSIGNABLE.match(text) and seen["unlisted"] is None:
        seen["unlisted"] = (text.split("=", 1)[0] + "=", "a variable a program may load code by (%s): a root command "
                                                         "may set only LANG, LC_*, TZ, TERM, COLUMNS and LINES"
                            % text.split("=", 1)[0])


def _read_systemctl(word, args, unlisted):
    """_read_program of ``systemctl``: SYSTEMCTL_VERBS on units named without a path, options _SYSTEMCTL_OPTIONS."""
    k, verb = 0, None
    while k < len(args):
        a = args[k]
        if a.startswith("-"):
            if a in ("-s", "-p", "--signal", "--property", "--kill-whom", "--state", "--type") and k + 1 < len(args):
                a = a + ("=" if a.startswith("--") else "") + args[k + 1]
                k += 1
            if not _SYSTEMCTL_OPTIONS.match(a):
                return unlisted(word, "a systemctl option upgrader does not read (%s)" % a)
        elif verb is None:
            verb = a
            if a not in SYSTEMCTL_VERBS:
                return unlisted(word, "a systemctl command upgrader does not read (%s): only %s"
                                % (a, ", ".join(sorted(SYSTEMCTL_VERBS))))
        elif "/" in a:
            return unlisted(word, "a unit named by a path (%s): systemctl would load a unit file upgrader does not "
                                  "read" % a)
        k += 1
    return None


#: the options cp and mv may have in a root command, read exactly (GNU would take ``--t`` for
#: ``--target-directory``; ``-l``/``-s`` make links and ``-b``/``-S`` backups, which write where no operand says):
#: (short letters, long options, as said in a refusal)
_COPY_OPTIONS = {
    "cp": ("fipvuT", ("--force", "--interactive", "--no-clobber", "--verbose", "--update", "--no-target-directory"),
           "-f -i -n -p -v -u -T -t DIR and their long names; not -r/-a, which copy links as links"),
    "mv": ("fivuT", ("--force", "--interactive", "--no-clobber", "--verbose", "--update", "--no-target-directory"),
           "-f -i -n -v -u -T -t DIR and their long names"),
}


def _copied(name, args):
    """What ``cp``/``mv`` with ``args`` write: the destination (``-t DIR``, ``--target-directory=DIR``, else the last
    operand) and, for mv, every source (moved away); or the first option not read exactly (a string)."""
    letters, longs, _ = _COPY_OPTIONS[name]
    letters += "n"
    operands, target, k = [], None, 0
    while k < len(args):
        a = args[k]
        if a == "--":
            operands += args[k + 1:]
            break
        if a.startswith("--"):
            if a.startswith("--target-directory="):
                target = a.split("=", 1)[1]
            elif a == "--target-directory" and k + 1 < len(args):
                target, k = args[k + 1], k + 1
            elif a not in longs:
                return a
        elif a.startswith("-") and a != "-":
            for j, c in enumerate(a[1:]):
                if c == "t":
                    target = a[j + 2:] or (args[k + 1] if k + 1 < len(args) else "")
                    k += 0 if a[j + 2:] else 1
                    break
                if c not in letters:
                    return a
        else:
            operands.append(a)
        k += 1
    if target is not None:
        return [target] + (operands if name == "mv" else [])
    return operands[-1:] + (operands[:-1] if name == "mv" else [])


def _split_options(args, operand_like=None):
    """(options, operands) of a GNU program's ``args``: every word after ``--`` is an operand (``tee -- -a`` writes
    ./-a), as is ``-`` and a word matching ``operand_like`` (chmod's ``-w``)."""
    options, operands = [], []
    for k, a in enumerate(args):
        if a == "--":
            return options, operands + args[k + 1:]
        if a.startswith("-") and a != "-" and not (operand_like and re.match(operand_like, a)):
            options.append(a)
        else:
            operands.append(a)
    return options, operands


def _mode_problem(name, options, operands):
    """Why ``chmod``/``chown``/``chgrp``/``mkdir`` with these ``options`` and ``operands`` (_split_options) may hand
    a path to another account in a root command (the whole-tree rule looks before the command, not while it runs), or None: a mode giving the group or
    others write (``o+w``, ``777``, ``1777``) or set-id/sticky bits, a mode copied from a file, an owner or group
    other than root, ``mkdir -m``."""
    bad = [a for a in options if a not in ("-R", "--recursive", "-p", "--parents", "-v", "--verbose", "-f",
                                           "--silent", "--quiet", "-h", "--no-dereference")]
    if bad:
        return "an option of %s upgrader does not read exactly (%s)" % (name, bad[0])
    if name == "mkdir" or not operands:
        return None
    first = operands[0]
    if name == "chmod":
        if re.match(r"[0-7]+$", first):
            ok = not int(first, 8) & 0o7022
        else:
            parts = [re.match(r"([ugoa]*)([-+=])([rwxXst]*)$", part) for part in first.split(",")]
            ok = all(m and (m.group(2) == "-" or not set(m.group(3)) & set("st") and not (
                "w" in m.group(3) and (not m.group(1) or set(m.group(1)) & set("goa")))) for m in parts)
        if ok:
            return None
        return ("a mode that lets another account write, or runs as another (%s): the path would be changed by "
                "what root runs next" % first)
    sep = ":" if ":" in first else "." if "." in first else None  # GNU chown takes root.staff for root:staff
    owner = first.split(sep)[0] if name == "chown" and sep else first if name == "chown" else "root"
    group = first.split(sep, 1)[1] if name == "chown" and sep else first if name == "chgrp" else "root"
    if owner not in ("root", "0") or group not in ("root", "0", ""):
        return ("an owner other than root (%s): the path would be the other account's to change while root runs "
                "what follows" % first)
    return None


def _env_scripts(args):
    """The ``-S``/``--split-string`` scripts of env's ``args``, option clusters read (``-iS S``, ``-uX -S S``,
    ``-vS'S'``), up to env's command."""
    out, k = [], 0
    while k < len(args):
        a = args[k]
        if a == "--" or not a.startswith("-") or a == "-":
            break
        if a.startswith("--"):
            opt, _, value = a.partition("=")
            takes = opt in ("--split-string", "--unset", "--chdir", "--argv0", "--default-signal", "--ignore-signal",
                            "--block-signal") and not value and "=" not in a
            if opt == "--split-string":
                out.append(value if "=" in a else args[k + 1] if k + 1 < len(args) else "")
            k += 2 if takes else 1
            continue
        for j, letter in enumerate(a[1:]):
            rest = a[j + 2:]
            if letter in "SuCa":
                if letter == "S":
                    out.append(rest or (args[k + 1] if k + 1 < len(args) else ""))
                k += 1 if rest else 2
                break
        else:
            k += 1
    return out


def _option_values(args, names):
    """The values of the options ``names`` (``-c V``, ``-cV``, ``--command=V``, ``--command V``) among ``args``."""
    out = []
    for k, a in enumerate(args):
        for n in names:
            if a == n and k + 1 < len(args):
                out.append(args[k + 1])
            elif n.startswith("--") and a.startswith(n + "="):
                out.append(a[len(n) + 1:])
            elif not n.startswith("--") and a.startswith(n) and len(a) > len(n):
                out.append(a[len(n):])
    return out


#: per interpreter family: (options whose letters give code as text, letters naming a module to load, letters that
#: take the next word as their value, letters that name a script file)
_LANG = {"perl": ("eE", "mM", "", ""), "python": ("c", "m", "WXQ", ""), "pypy": ("c", "m", "WXQ", ""),
         "ruby": ("e", "r", "ICEFx", ""), "node": ("ep", "r", "", ""), "nodejs": ("ep", "r", "", ""),
         "php": ("rBRE", "", "cdz", "fF"), "lua": ("e", "l", "", ""), "tclsh": ("", "", "", ""),
         "wish": ("", "", "", ""), "expect": ("c", "", "", "f"), "awk": ("e", "il", "vF", "f"),
         "ssh": ("", "", "BbcDEeFIiJLlmOopQRSWw", ""),
         # csh, tcsh and fish scripts are not POSIX shell: a -c script of theirs is code upgrader does not read
         "csh": ("c", "", "", ""), "tcsh": ("c", "", "", ""), "fish": ("c", "", "C", ""),
         "jrunscript": ("e", "", "lq", "f"), "jjs": ("e", "", "", ""), "groovy": ("e", "", "", ""),
         "scala": ("e", "", "", ""), "Rscript": ("e", "", "", ""), "R": ("e", "", "", "f"),
         "guile": ("ce", "", "L", "ls"), "ksh": ("", "", "", "")}
_LANG.update(dict((a, _LANG["awk"]) for a in ("gawk", "mawk", "nawk")))
_LONG_CODE = ("--eval", "--print", "--source", "--command", "--expr")
_LONG_MODULE = ("--require", "--import", "--loader", "--experimental-loader", "--include", "--load")
#: java's options whose value is a class or module path (each entry's directory judged as a tree: a jar's manifest
#: Class-Path is relative to it), and those that take the next word as their value
_JAVA_PATHS = ("-cp", "-classpath", "--class-path", "-p", "--module-path", "--upgrade-module-path", "--startup")
_JAVA_VALUED = ("--add-modules", "--add-opens", "--add-exports", "--add-reads", "--patch-module", "--limit-modules",
                "-m", "--module", "-d", "--describe-module", "--source", "--feedback", "--execution", "-R", "-J",
                "--enable-native-access")


def unread_script(path):
    """Why a script file stdin_script refused is not read: a stream (``-``, /dev, a FIFO, a process's own file
    descriptor) is the interpreter's standard input; another /proc path is what some process sees."""
    norm = "/" + os.path.normpath(path).lstrip("/") if path.startswith("/") else path
    if norm.startswith("/proc/") and not re.match(r"/proc/(?:self|thread-self)/fd(/|$)", norm):
        return "a script under /proc (%s): what a process sees, which the agent cannot judge" % path
    return "a script read from its standard input (%s)" % path


def stdin_script(path):
    """Whether the script file ``path`` an interpreter is given is no plain file another run would find again: ``-``,
    a path under /dev or /proc (``/dev/stdin``, ``/dev/fd/0``, ``/proc/self/fd/0``; as named, relative or as its
    links lead), or an existing file that is not a regular file (a FIFO, a device, a socket). What it reads comes
    from its standard input or another process: upgrader does not read it."""
    if path in ("-", ""):
        return True
    # the command's own view (/proc/self/cwd/x: the install or /, /proc/self/root/x: /x) is the path beneath it
    own = re.match(r"/proc/(?:self|thread-self)/(cwd|root)(?:/(.*))?$", "/" + os.path.normpath(path).lstrip("/"))
    if own:
        rest = own.group(2) or "."
        return stdin_script("/" + rest if own.group(1) == "root" else rest)
    for p in (path, os.path.realpath(path) if path.startswith("/") else path):
        parts = [q for q in os.path.normpath(p).split("/") if q not in ("", ".", "..")]
        if parts and parts[0] in ("dev", "proc"):
            return True
    try:
        st = os.stat(path) if path.startswith("/") else None
    except OSError:
        return False
    return st is not None and not stat.S_ISREG(st.st_mode)


def _shell_args(args):
    """A POSIX shell's arguments as the shell reads them: (its option letters, its operands, the first option upgrader
    does not read or None). Read: clusters of _SHELL_OPTION and ``-o``/``+o`` with _SHELL_SET; anything else (``-i``,
    ``-s``, ``--rcfile F``, ``-O``) is named, and still skipped as the shell would skip it."""
    letters, unread, k = "", None, 0
    while k < len(args):
        a = args[k]
        if a in ("--", "-", "+"):
            k += 1
            break
        if a.startswith("--"):
            unread = unread or a
            k += 2 if a in ("--rcfile", "--init-file") else 1
            continue
        if a[:1] not in "-+" or len(a) < 2:
            break
        if a in ("-o", "+o"):
            if args[k + 1:k + 2] == [] or args[k + 1] not in _SHELL_SET:
                unread = unread or ("%s %s" % (a, " ".join(args[k + 1:k + 2]))).strip()
        elif not _SHELL_OPTION.match(a):
            unread = unread or a
        letters += a[1:]
        k += 2 if a[-1] in "oO" else 1
    return letters, args[k:], unread


def _read_interpreter(word, name, args, script, code, seen):
    """_read_program of an interpreter ``word`` (of family ``name``) with its arguments."""
    if name in SHELLS:
        opts, operands, _ = _shell_args(args)
        if "c" in opts:
            for a in operands:
                script(a)
        elif "s" in opts or "i" in opts or not operands:
            code(word, "a shell reading its standard input")
        elif stdin_script(operands[0]):
            code(word, unread_script(operands[0]))
        else:
            seen["files"].append(operands[0])
        return
    if name in ("java", "jshell"):
        return _read_java(word, name, args, code, seen)
    inline, module, valued, filed = _LANG[name]
    k, files = 0, []
    while k < len(args):
        a = args[k]
        if a == "--":
            k += 1
            break
        if a.startswith("--"):
            opt = a.split("=", 1)[0]
            if opt in _LONG_CODE:
                return code(word, "code given as text (%s)" % opt)
            if opt in _LONG_MODULE:
                return code(word, "a module found by name (%s)" % opt)
            if opt == "--file":
                files.append(a.split("=", 1)[1] if "=" in a else args[k + 1] if k + 1 < len(args) else "")
                k += 1 if "=" in a else 2
                continue
            k += 1
            continue
        if a[:1] != "-" or a == "-":
            break
        for j, letter in enumerate(a[1:]):
            rest = a[j + 2:]
            if letter in inline:
                return code(word, "code given as text (-%s)" % letter)
            if letter in module:
                return code(word, "a module found by name (-%s)" % letter)
            if name == "ssh" and letter in "oF":
                value = rest or (args[k + 1] if k + 1 < len(args) else "")
                if letter == "F" or re.search(r"(?i)command", value):
                    return code(word, "an ssh option that runs a command (-%s %s)" % (letter, value))
            if letter in filed:
                files.append(rest or (args[k + 1] if k + 1 < len(args) else ""))
            if letter in valued + filed:
                k += 1 if rest else 2
                break
        else:
            k += 1
    operands = args[k:]
    if name == "ssh":
        code(word, "a remote command for ssh" if len(operands) > 1 else "a shell reading its standard input")
        return
    if name in ("awk", "gawk", "mawk", "nawk"):
        if not files:
            return code(word, "an awk program given as text")
    elif not files:
        if not operands:
            return code(word, "a script read from its standard input")
        files.append(operands[0])
    for f in files:
        if stdin_script(f):
            return code(word, unread_script(f))
    seen["files"] += files


def _read_java(word, name, args, code, seen):
    """_read_interpreter of java (``-jar F``, class/module path entries, a ``.java`` source file; an ``@argfile`` is
    options upgrader does not read) or jshell (its load files; none, or ``-``, is its standard input)."""
    k, files, operands = 0, [], []
    while k < len(args):
        a = args[k]
        value = args[k + 1] if k + 1 < len(args) else ""
        if a.startswith("@"):
            return code(word, "options read from a file (%s)" % a)
        opt, eq, attached = a.partition("=")
        if name == "java" and a == "-jar":
            files.append(value)
            break
        if opt in _JAVA_PATHS:
            files += [e for e in (attached if eq else value).split(":") if e]
            k += 1 if eq else 2
            continue
        if a.startswith(("-javaagent:", "-agentpath:", "-Xbootclasspath")):
            files += [e.split("=", 1)[0] for e in a.split(":", 1)[1].split(":") if e] if ":" in a else []
            k += 1
            continue
        if opt in _JAVA_VALUED:
            if opt == "--patch-module":  # MODULE=PATH:PATH
                files += [e for e in (attached if eq else value).split("=", 1)[-1].split(":") if e]
            k += 1 if eq else 2
            continue
        if a.startswith("-") and a != "-":
            k += 1
            continue
        if name == "java":
            if a.endswith(".java") or "/" in a:
                files.append(a)  # the source launcher, or a file run as source (a #! java script)
            break
        operands.append(a)
        k += 1
    if name == "jshell":
        if not operands or "-" in operands:
            return code(word, "a script read from its standard input")
        files += [f for f in operands if f not in ("DEFAULT", "PRINTING", "JAVASE", "TOOLING")]
    for f in files:
        if stdin_script(f):
            return code(word, unread_script(f))
    seen["files"] += files


def named_paths(command, known=None):
    """Every absolute path ``command`` names, as the outside-path rule reads it: each piece (arg_pieces:
    ``--opt=/x``, ``-C/x``, ``/a:/b``, ``@/x``) of each word, the words split as the shell splits them (script_words:
    quotes joined, ``cd /x && ./y``, ``$(cat /x)``, ``3</x``, a ``sh -c '...'`` script's own words), and the words of
    any word with blanks in it (a script for some other program), and every path that starts inside a word after a
    character no path holds (_INNER_PATH: ``exec("/x/hook.sh")``), cut where the shell would expand (``/x/$NAME`` is
    /x/; such a word in a root command is refused first: unjudged_word)."""
    out = []
    for word in _path_words(command, known):
        for piece in arg_pieces(word) + _INNER_PATH.findall(_UNEXPANDED.sub("x", word)):
            piece = _PATH_END.split(piece, 1)[0]
            if piece.startswith("/") and piece not in out:
                out.append(piece)
    return out


#: an absolute path that starts inside a word, after a character no path name of a command holds (perl's
#: ``exec("/x/hook.sh")``, ``x=/y``, ``'a;/x/hook.sh'``), up to such a character
_UNEXPANDED = re.compile(r"\$(\{[^}]*\}|[A-Za-z_0-9]*)")  # a $ expansion left as text: no path starts after it
_INNER_PATH = re.compile(r"""(?:(?<=[\s'"()\[\]{}<>=;,:@|&`!])|^)(/[^\s'"()\[\]{}<>;,:@|&`!$*?~\\]*)""")


def unjudged_word(command, known=None):
    """The first word of a root command the outside-path rule cannot judge as written, and why: (word, why), or None.
    A word the shell would expand (a glob, ``~``, ``$``, a command or process substitution, braces), in the command or
    in a ``sh -c`` script in it (script_words), names paths the agent does not see: ``/x/*/hook.sh`` or
    ``~svc/hook.sh`` may run another account's file; a glob relative to the install (``cd logs; cp * x``) may expand
    to a file named ``-l`` another root command made, an option of the program. A quote or escape that does not end
    cannot be split: refused too."""
    words, unresolved = script_words(command, 0, known)
    if unresolved is not None:
        return unresolved, "a quote or escape in it does not end, or sh -c scripts nest more than %d deep" \
            % SCRIPT_DEPTH
    for text, odd, _ in words:
        if not odd:
            if "$" in text or "`" in text:  # quoted: bash evaluates it as code all the same in test -v 'a[$(...)]'
                return text, "a $ or a backquote, which bash evaluates as code in places (test -v 'a[$(...)]')"
            continue
        return text, " and ".join(odd)
    return None


def outside_path_problem(install, command, known=None, plain=None):
    """The first path ``command`` names outside the install that another account could change, and why: (path, "who
    can change it"), or None. Judged: every absolute path it names (named_paths: its program and every piece of its
    arguments), and every relative piece of its words (relative_pieces: not options) taken in every directory the
    command may run in (command_dirs: the install, ``/`` for a plain command outside the install, each ``cd``
    operand). A path root alone can change passes: the file and every directory up to ``/``, as named, as its links
    lead and as the kernel walks it (``..`` after a link: _walk), root's and writable by nobody else
    (root_alone_problem, sshd's StrictModes for root); ``/bin/sh`` does. A path that does not exist (yet) is judged by
    the nearest directory above it that does: whoever can write there can make it (``systemctl stop tomcat10`` in
    ``/`` passes).
    A character device root owns (``/dev/null``) passes when its directories do: nobody puts code in one. Paths in the
    install are the whole-tree rule's (tree_problems). /proc (_views): ``/proc/self/cwd/X`` is X in those
    directories, ``/proc/self/root/X`` is /X; any other view of a process (``/proc/PID/...``, ``/proc/self/fd/3``,
    ``/proc/self/task/...``, a /proc path with ``..``) cannot be judged: refused; kernel files (``/proc/loadavg``) and
    the command's standard streams (``/dev/stdin``) pass. ``plain``: whether the command runs in ``/``
    (outside_install, computed when None). What a program takes from a path it is given is judged too: a directory
    named outside the install (not ``/``; ``cd``'s too: what runs there next is found in it) and the directory of an
    interpreter's script file (script_files: ``python3 /x/tool/main.py`` imports /x/tool/helper.py, ``run-parts
    /x/hooks.d`` runs all of it; an executable ``#!`` script named is one too, _script_file) must be root's alone as a
    whole tree (tree_checked), and one of more than TREE_MOST entries is refused as too big to judge."""
    if plain is None:
        plain = outside_install(install, command)
    dirs = command_dirs(install, command, known, plain)
    judged = set()
    scripts = []
    for path in named_paths(command, known) + relative_pieces(command, known):
        for form, why, base in _views(path, dirs):
            if form in judged and not why:
                continue
            judged.add(form)
            if not why and _in_install(install, form):
                continue
            if not why:
                why = root_alone_problem(form)
            if not why and form != "/" and os.path.isdir(form) and os.path.realpath(form) != "/":
                found = tree_checked(os.path.realpath(form), limit=1, most=TREE_MOST)
                why = found[0] if found else None
            if why:
                return _shown(path, form, base, why)
            if _script_file(form):
                scripts.append((path, form, base))
    for path in script_files(command, known):
        scripts += [(path, form, base) for form, why, base in _views(path, dirs) if not why]
    for path, form, base in scripts:
        if _in_install(install, form):
            continue
        # the directory as named (a script finds "$(dirname "$0")") and as its links lead (python3's sys.path[0])
        for top in dict.fromkeys((os.path.realpath(os.path.dirname(form)), os.path.dirname(os.path.realpath(form)))):
            if _in_install(install, top) or top == "/" or not os.path.isdir(top):
                continue
            found = tree_checked(top, limit=1, most=TREE_MOST)
            if found:
                return _shown(path, form, base, found[0])
    return None


#: where the system's own scripts lie (not /usr/local): python's timeit.py and pdb, perl's tools, and the like take
#: code in their words; a root command runs the programs LISTED there, never a script
_SYSTEM_TOPS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


def system_script(path):
    """Whether the absolute ``path`` (as its links lead) is a script of the system (_SYSTEM_TOPS): a regular file
    there that is no ELF program."""
    real = os.path.realpath(path)
    top = "/" + real.lstrip("/").split("/", 1)[0]
    return top in _SYSTEM_TOPS and not (real + "/").startswith("/usr/local/") and _is_script(real)


#: what a root command may write besides the install's logs/: its own streams. Nothing else, /tmp neither (the
#: controller's HOME or the agent's state, a backup hard-linked into the install may lie there)
STREAMS = ("/dev/null", "/dev/stdout", "/dev/stderr")


def ran_written_problem(install, commands, known=None):
    """The first file a root command of ``commands`` (one playbook's) writes (a redirection's target, tee's files,
    the destination of cp and mv, mv's sources, what touch and mkdir make) anywhere but beneath the install's
    ``logs/`` (root's alone, no hard-linked file) or to its own streams (STREAMS); or runs (a program named by a path,
    a shell's or an interpreter's script file, a sourced file: read_command's ``runs`` and ``files``) from ``logs/``,
    or a script of the system (system_script); each as named from every directory the command may run in
    (command_dirs) and as its links lead (a glob, which would name files unseen, is refused before: unjudged_word):
    (file, why, command, what to do), or None. ``printf %s … > logs/x; /bin/sh logs/x`` would run
    what the approver cannot read, ``cp run/x bin/`` then ``bin/x`` too, a ``lib/x.py`` or a ``.pth`` file root
    writes a root python loads, a program written into ``/usr/local/sbin`` root's PATH finds first, a line added to
    the operator's allowed_signers."""
    top = os.path.normpath(install)
    logs = [os.path.join(top, "logs"), os.path.realpath(os.path.join(top, "logs"))]

    def under(path, dirs):
        return any(path == d or path.startswith(d.rstrip("/") + "/") for d in dirs)

    runs = []
    for command in commands:
        seen = _read(command, known)
        dirs = command_dirs(install, command, known, outside_install(install, command))
        runs += [(path, dirs, command) for path in seen["runs"] + seen["files"]]
        for path in seen["writes"]:
            for form, why, _ in _views(path, dirs):
                if why or form in STREAMS:
                    continue
                real = os.path.realpath(form)
                if not (under(form, logs) and under(real, logs)):
                    where = ("in the install outside its logs/ (%s)" if _in_install(install, form) or
                             _in_install(install, real) else "outside the install's logs/ (%s)") % logs[0]
                    return (path, "writes %s, %s" % (real, where), command,
                            "write only under logs/ (a root command's output is kept in the audit log anyway), and "
                            "ship files in the package")
                why = root_alone_problem(real)
                if why:
                    return (path, "writes %s, which is not root's alone: %s" % (real, why), command,
                            "make logs/ root's alone, or write nothing there")
                try:
                    st = os.lstat(real)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                    return (path, "writes %s, a file with %d names (hard links): what it writes lands elsewhere too"
                            % (real, st.st_nlink), command, "write to a file of logs/ that has one name")
    for path, dirs, command in runs:
        for form, why, _ in _views(path, dirs):
            if why:
                continue
            real = os.path.realpath(form)
            if system_script(form):
                return (path, "runs a script of the system (%s): scripts such as python's timeit.py or pdb run "
                              "code given in their words" % real, command,
                        "run the programs upgrader lists, or a root-owned script of your own outside /usr")
            if under(form, logs) or under(real, logs):
                return (path, "runs a file from the install's logs/ (%s), where root commands write" % form,
                        command, "ship the scripts in the package or as root-owned files outside logs/")
    return None


def _shown(path, form, base, why):
    """(path, why) as outside_path_problem says it: a relative piece by the absolute path it reaches, and how."""
    if base is None:
        return path, why
    return form, "the command reaches it as %s from %s, and %s" % (path, base, why)


def _path_words(command, known=None):
    """The words named_paths and relative_pieces read paths from: every word of ``command`` and of its scripts
    (script_words), and the words of any word with blanks in it (a script for some other program)."""
    words, _ = script_words(command, 0, known)
    texts = [w[0] for w in words]
    for text in list(texts):
        if any(c.isspace() for c in text):
            texts += [w[0] for w in shell_words(text, known)[0]]
    return texts


def relative_pieces(command, known=None):
    """Every relative piece (arg_pieces, cut where the shell would expand) of every word of ``command`` (as
    named_paths reads them), options (``-x``) and text with blanks left out: ``tmp`` in ``/usr/bin/env -C tmp ...``,
    ``../../x/hook.sh``. Each is a path in every directory the command may run in (command_dirs)."""
    out = []
    for word in _path_words(command, known):
        for piece in arg_pieces(word):
            piece = _PATH_END.split(piece, 1)[0]
            if piece and not piece.startswith(("/", "-")) and not any(c.isspace() for c in piece) \
                    and piece not in out:
                out.append(piece)
    return out


def command_dirs(install, command, known=None, plain=False):
    """Every directory ``command`` may run a relative name in: the install, ``/`` when it is a plain command outside
    the install (``plain``: run there, root_workdir), and each ``cd``/``pushd`` operand (root's home for a last
    ``cd`` with none; words are read flat, so ``cd && x`` takes ``x`` for the operand) taken in every directory found
    before it (_views: as written and as the kernel walks it), and ``/`` when any word names it (``env -C /``).
    Over-reading only adds directories and refusals."""
    dirs = [os.path.normpath(install)] + (["/"] if plain else [])
    words = [w[0] for w in script_words(command, 0, known)[0]]
    for i, word in enumerate(words):
        if word not in ("cd", "pushd"):
            continue
        operands = [w for w in words[i + 1:] if w == "-" or not w.startswith("-")][:1]  # past any options
        if not operands:  # cd alone: root's home
            try:
                operands = [pwd.getpwuid(os.geteuid()).pw_dir or "/"]
            except KeyError:
                operands = ["/"]
        for where in [w for w in operands if w != "-"]:
            for form, why, _ in _views(where, dirs):
                if not why and form not in dirs:
                    dirs.append(form)
    # a program may change to any directory it is given (env -C /, make -C ../..): every directory it names outside
    # the install but / is judged as a whole tree, so what lies beneath it is root's; / is not: it is one more
    if "/" not in dirs and any(form == "/" for path in named_paths(command, known) + relative_pieces(command, known)
                               for form, why, _ in _views(path, dirs) if not why):
        dirs.append("/")
    return dirs


#: how deep /proc/self/root and /proc/self/cwd are followed inside each other before a path is refused
_PROC_DEPTH = 8


def _views(path, dirs, depth=0, base=None):
    """Every absolute path ``path`` may reach, each as (path, why refused or None, the directory a relative path was
    taken in or None): a relative path in each of ``dirs``; an absolute one as written (normalised) and as the kernel
    walks it (_walk: ``/dev/fd/../../2/root`` is /proc/2/root). Beneath /proc: ``self`` (``thread-self``) ``/root/X``
    is /X, ``/cwd/X`` is X in ``dirs``, ``/fd/0``-``2`` the command's standard streams (not judged), anything else of
    ``self``, a process by number and a path with ``..`` are refused; other /proc names are kernel files (not
    judged)."""
    if depth > _PROC_DEPTH:
        yield path, "it leads through /proc more than %d times, which the agent cannot judge" % _PROC_DEPTH, base
        return
    raws = [(path, base)] if path.startswith("/") else [(os.path.join(d, path), d) for d in dirs]
    for raw, via in raws:
        norm, walked = "/" + os.path.normpath(raw).lstrip("/"), _walk(raw)
        # /dev/stdin, /dev/fd/N: links into /proc/self/fd, whose targets are the command's own (or the agent's) files
        std = walked.startswith("/proc/") and any(norm == p or norm.startswith(p + "/") for p in PROCESS_PATHS[1:])
        for form in dict.fromkeys((walked,) if std else (norm, walked)):
            if form != "/proc" and not form.startswith("/proc/"):
                yield form, None, via
                continue
            parts = [p for p in form[len("/proc"):].split("/") if p not in ("", ".")]
            if ".." in parts:
                yield form, "a /proc path with .. in it leads where the agent cannot judge", via
            elif parts and parts[0] in ("self", "thread-self"):
                rest = "/".join(parts[2:])
                if parts[1:2] == ["root"]:
                    yield from _views("/" + rest, dirs, depth + 1, via)
                elif parts[1:2] == ["cwd"]:
                    if rest:
                        yield from _views(rest, dirs, depth + 1, via)
                elif not (parts[1:2] == ["fd"] and len(parts) == 3 and parts[2] in ("0", "1", "2")):
                    yield form, "it is what the command's own process holds (%s), which the agent cannot judge" \
                        % "/".join(parts[1:3] or ["/proc/" + parts[0]]), via
            elif parts and parts[0].isdigit():
                yield form, "it is what another process sees, which the agent cannot judge", via
            # else: /proc itself or a kernel file (/proc/loadavg, /proc/sys/...): nobody puts code there


#: symbolic links followed in one path before _walk gives up (the kernel's own limit)
_LINKS_MOST = 40


def _walk(path):
    """The absolute ``path`` as the kernel walks it: links followed one at a time and ``..`` taken after each (so
    ``/dev/fd/../..`` is /proc, where os.path.normpath says /), up to /proc, where the rest is left as written for
    _views to judge (its links are the processes' own views). A name that does not exist is kept as written."""
    todo = [p for p in path.split("/") if p]
    cur, links = "/", 0
    while todo:
        if cur == "/proc":
            return "/proc/" + "/".join(todo)
        part = todo.pop(0)
        if part == ".":
            continue
        if part == "..":
            cur = os.path.dirname(cur)
            continue
        nxt = os.path.join(cur, part)
        try:
            target = os.readlink(nxt)
        except OSError:
            cur = nxt
            continue
        links += 1
        if links > _LINKS_MOST:
            return "/".join([nxt] + todo)
        todo = [p for p in target.split("/") if p] + todo
        if target.startswith("/"):
            cur = "/"
    return cur


def _script_file(path):
    """Whether the absolute ``path`` is an executable script (``#!``): the kernel runs its interpreter on it, which
    may take more from the script's directory (python3 imports what lies beside it). Looked at only once the path is
    found root's alone (outside_path_problem), never blocking."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or not st.st_mode & 0o111:
            return False
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        return os.read(fd, 2) == b"#!"
    except OSError:
        return False
    finally:
        os.close(fd)


def root_alone_problem(path):
    """Why another account could change the absolute ``path`` a root command names, or make it when it does not exist
    (None when it cannot): the file and every directory up to ``/``, as named and as really reached through its links,
    root's and writable by nobody else (mode bits and POSIX ACL; root_only_problem's rule). A sticky directory root
    owns (``/tmp``) may be writable by others when what the path names beneath it exists and is root's: only root can
    then replace it. A path that does not exist is judged by the nearest directory above it that does, which must not
    be writable by others even when sticky (anyone could make the name). A character device root owns (``/dev/null``)
    is judged by its directories: nobody puts code in one."""
    where = path
    while not os.path.lexists(where) and where != "/":
        where = os.path.dirname(where)
    if where != path:
        why = _root_alone(where)
        return "%s does not exist, and %s" % (path, why) if why else None
    return _root_alone(path)


def _root_alone(path):
    """root_alone_problem of an existing ``path``."""
    try:
        st = os.stat(path)
    except OSError:
        st = None
    device = st is not None and stat.S_ISCHR(st.st_mode) and st.st_uid == 0
    for start in dict.fromkeys((os.path.normpath(path), os.path.realpath(path))):
        q, below = start, None  # below: the lstat of the entry on the way beneath q (None at the start)
        while True:
            try:
                st = os.lstat(q)
            except OSError as e:
                return "%s cannot be examined (%s)" % (q, e.strerror)
            if not stat.S_ISLNK(st.st_mode) and not (device and q == start):
                if st.st_uid != 0:
                    return "%s is owned by %s" % (q, account_name(st.st_uid))
                try:
                    writers = dir_writers(q, st)
                except OSError as e:
                    return "%s cannot be examined (%s)" % (q, e.strerror)
                # a sticky directory: only the owner of an entry in it (or root) replaces it, so a root-owned entry
                # beneath is root's alone; the start itself has no entry beneath it on the way (a name may be made)
                sticky = stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX and below is not None \
                    and below.st_uid == 0
                if writers and not sticky:
                    kind, named = writers
                    return "%s may be written by %s" % (q, ", ".join(named) if named else
                                                        "everyone" if kind == "everyone" else
                                                        "its group (gid %d)" % st.st_gid)
            if q == "/":
                break
            below, q = st, os.path.dirname(q)
    return None


#: what makes a command more than one program with its arguments: a shell runs it (";", "&&", "$(...)", redirection,
#: globbing, "~"), and what that shell then runs cannot be told from the text
SHELL_SPECIAL = frozenset(";&|<>$`(){}*?[]~\n\r\t\\")


def outside_install(install, command):
    """Whether ``command`` is a plain command outside the install: no shell syntax (SHELL_SPECIAL, no ``NAME=value``
    prefix), its program an absolute path outside the install that root alone can change (root_only_problem), and
    no piece of an argument (arg_pieces: ``--opt=x``, ``-Cbin``, ``lib:x,y``, ``@file``) a path inside the install
    (install_path), nor a word with blanks (a script for the program: ``sh -c "cd bin && ./stop.sh"``).
    ``/usr/bin/systemctl stop tomcat10`` is one, ``/bin/sh bin/stop.sh`` and ``/usr/bin/make -Cbin`` are not. Run as
    root, such a command runs in ``/`` (run_shell): its working directory is not the install either."""
    if any(c in SHELL_SPECIAL for c in command):
        return False
    split, unresolved = shell_words(command)
    if unresolved is not None or any(w[1] for w in split):
        return False
    words = [w[0] for w in split]
    if not words or not words[0].startswith("/") or install_path(install, words[0]) \
            or root_only_problem(words[0]):
        return False
    for word in words[1:]:
        if any(c.isspace() for c in word) or any(install_path(install, w) for w in arg_pieces(word)):
            return False
    return True


def arg_pieces(word):
    """Every piece of the argument ``word`` a program may take as a path: the word, the value of ``--opt=value``
    and the attached value of a short option (``-Cbin``, ``-Ilib``), an ``@file`` (java's argument files), and each
    item of a ``:`` or ``,`` list (``-cp lib:x``)."""
    whole = [word]
    if "=" in word:
        whole.append(word.split("=", 1)[1])
    if word.startswith("-") and not word.startswith("--") and len(word) > 2:
        whole.append(word[2:])
    whole += [w[1:] for w in list(whole) if w.startswith("@")]
    pieces = [piece for w in whole for piece in re.split("[:,]", w) + [w] if piece]
    # in a cluster of short options a value may start after any letter (``-ft/x`` is cp's -f -t /x, ``-fttmp/x``
    # -t tmp/x): every suffix of it is judged as a path
    if word.startswith("-") and not word.startswith("--"):  # relative too: cd /; cp -fttmp/x (attack12r27 H2)
        pieces += [word[k:] for k in range(2, len(word)) if word[k:] not in pieces]
    return pieces


#: paths that lead to what another process sees (its working directory, its root, its open files), whatever they
#: look like: /proc/self/cwd is the install for a command run there, /proc/PID/root the service's view
PROCESS_PATHS = ("/proc", "/dev/fd", "/dev/stdin", "/dev/stdout", "/dev/stderr")


def install_path(install, word):
    """Whether ``word`` (a program or a piece of an argument) may name a path inside the install: an absolute path
    beneath it (as written or as its links lead, from the install's real path too) or through another process's view
    (PROCESS_PATHS); a relative path (with a ``/``, ``.``, ``..``, or the name of something in the install: it was
    relative to the install, where such commands ran). An option (``-x``, no ``/``) is none."""
    if not word or word.startswith("-") and "/" not in word:
        return False
    if word.startswith("/"):
        norm = "/" + os.path.normpath(word).lstrip("/")
        return any(norm == p or norm.startswith(p + "/") for p in PROCESS_PATHS) \
            or _in_install(install, word) or _in_install(os.path.realpath(install), word)
    return "/" in word or word in (".", "..") or os.path.lexists(os.path.join(install, word))


def _in_install(install, path):
    """Whether the absolute ``path`` is the install dir or beneath it (as written, and as its links lead)."""
    top = os.path.normpath(install)
    return any(p == top or p.startswith(top.rstrip("/") + "/") for p in (os.path.normpath(path), os.path.realpath(path)))


TREE_PROBLEMS = 5  # the walk stops there: the first one is named


#: entries of a directory outside the install a root command names (or whose script it runs) looked through: past
#: them it is refused as too big to judge
TREE_MOST = 20000


def tree_problems(install, limit=TREE_PROBLEMS, most=None):
    """Up to ``limit`` sentences, one per file or directory beneath ``install`` another account can change: owned by
    another account than root, or writable by group or others (mode bits, a POSIX ACL granting write), a link owned
    by another account, or a link to a place outside the tree that is not root's alone. Walked from directory
    descriptors, no link followed, as the manifest scan walks the install. ``install`` may be any directory (one a
    root command names outside the install); with ``most``, a tree of more entries is one more problem: too big to
    judge."""
    found = []
    seen = [0]

    def look(fd, name, rel, st):
        path = os.path.join(install, rel)
        seen[0] += 1
        if most is not None and seen[0] > most:
            found.append("%s holds more than %d entries, more than upgrader looks through to judge it"
                         % (install, most))
            return
        if st.st_uid != 0:
            found.append("%s is owned by %s (mode %o)" % (path, account_name(st.st_uid), stat.S_IMODE(st.st_mode)))
        elif stat.S_ISLNK(st.st_mode):
            target = os.readlink(name, dir_fd=fd)
            where = os.path.realpath(os.path.join(os.path.dirname(path), target))
            if not _in_install(install, where):
                problem = root_only_problem(where if os.path.lexists(where) else os.path.dirname(where))
                if problem:
                    found.append("%s links to %s, and %s" % (path, target, problem))
        elif stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
            writers = _writers_at(fd, name, st)
            if writers:
                found.append("%s may be written by %s (mode %o)" % (path, writers, stat.S_IMODE(st.st_mode)))
        elif st.st_mode & 0o022:
            found.append("%s is writable by its %s (mode %o)" % (path, "group" if st.st_mode & 0o020 else "others",
                                                                stat.S_IMODE(st.st_mode)))

    top = os.open(install, OPEN_DIR)  # the install dir itself: whoever may write it may replace bin/
    try:
        st = os.fstat(top)
        writers = _writers_said(dir_writers(top, st), st)
    finally:
        os.close(top)
    if writers:
        found.append("%s may be written by %s (mode %o)" % (install, writers, stat.S_IMODE(st.st_mode)))
    walk_deep_said(install, look, lambda: len(found) >= limit or most is not None and seen[0] > most, (), found)
    return found


#: whole-tree looks of this agent call that found the tree root's alone, by the install dir's identity (tree_key):
#: another look finds the same as long as no command ran meanwhile (nobody but root can change such a tree, and root
#: here is the agent and what it runs). Emptied when a command starts (run_shell) and when an agent call begins and
#: ends (main.handle: forget_tree_checks), so nothing is reused across calls
_TREE_CLEAN = set()


def forget_tree_checks():
    """Forget the whole-tree looks made so far (tree_checked): the next one walks the tree again."""
    _TREE_CLEAN.clear()


def tree_key(install):
    """What identifies the install dir for tree_checked: its path, real path, device, inode, and its own change
    and modification times (a swap puts another directory there; an entry made or renamed in it changes them)."""
    try:
        st = os.lstat(install)
    except OSError:
        return None
    return install, os.path.realpath(install), st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns


def tree_checked(install, limit=TREE_PROBLEMS, most=None):
    """tree_problems, walked once per agent call while nothing runs in between: a tree found root's alone is not
    walked again (the walk costs about 170 ms for 20,000 files, and one call looks at it up to three times: a
    version command's check, its run, the preflight's commands) until a command starts or the install dir changes."""
    key = tree_key(install)
    if key is not None and key in _TREE_CLEAN:
        return []
    found = tree_problems(install, limit, most)
    if not found and key is not None and tree_key(install) == key:
        _TREE_CLEAN.add(key)
    return found


def _writers_at(fd, name, st):
    """Who besides root may write the file or directory ``name`` of the directory open as ``fd`` (dir_writers: mode
    bits and POSIX ACL), said for a message; None when nobody. Opened without following a link, never blocking."""
    try:
        sub = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)
                      | getattr(os, "O_CLOEXEC", 0), dir_fd=fd)
    except OSError as e:
        return "an account this agent cannot tell (it could not be opened: %s)" % e.strerror
    try:
        return _writers_said(dir_writers(sub, st), st)
    finally:
        os.close(sub)


def _writers_said(writers, st):
    """dir_writers' answer for a message ("everyone", "its group (gid 7)", "uid 4242"); None when nobody."""
    if not writers:
        return None
    kind, named = writers
    return ", ".join(named) if named else "everyone" if kind == "everyone" else "its group (gid %d)" % st.st_gid


ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def root_path():
    """The PATH of a command run as root: ROOT_PATH's directories that are root's alone (root_alone_problem), as
    sudo's secure_path, whatever the agent's own PATH says."""
    return ":".join(d for d in ROOT_PATH.split(":") if os.path.isdir(d) and not root_alone_problem(d))


PASSED_ENV = ("PATH", "JAVA_HOME", "LANG", "LANGUAGE", "TZ")  # and every LC_*: what a command may take from the agent's


def command_env(who, env):
    """The environment of a playbook command: the agent's PATH, JAVA_HOME (the README's "Java on the agent's PATH or
    JAVA_HOME"), locale and time zone; HOME, USER and LOGNAME of the account that runs it (``who``, else the agent's
    own); then ``env`` (the run's UPGRADER_* variables). Nothing else of the agent's: on the local transport that is
    the operator's own environment (UPGRADER_KEY_PASSPHRASE, cloud credentials), and the service account writes the
    scripts the commands run. Over SSH it is what sshd gives a login, about the same list."""
    out = dict((k, v) for k, v in os.environ.items() if k in PASSED_ENV or k.startswith("LC_"))
    out.setdefault("PATH", ROOT_PATH)
    if who is None and os.geteuid() == 0:
        # a root command: programs are found only in root's own directories (sudo's secure_path), never through the
        # agent's PATH, whose directories another account may write (bin/start.sh runs python3, catalina.sh java);
        # JAVA_HOME is kept when the JDK it names is root's alone
        out["PATH"] = root_path()
        if out.get("JAVA_HOME") and root_alone_problem("/" + os.path.normpath(out["JAVA_HOME"]).lstrip("/")):
            del out["JAVA_HOME"]
    if who:
        out["HOME"], name = who["home"], who["name"]
    else:
        try:
            user = pwd.getpwuid(os.geteuid())
            out["HOME"], name = user.pw_dir or "/", user.pw_name
        except KeyError:
            out["HOME"], name = os.environ.get("HOME") or "/", None
    if name:
        out["USER"] = out["LOGNAME"] = name
    out.update(env or {})
    return out


def _root_umask():
    """A root command's umask (run_shell): what it makes is root's alone, whatever the agent's own umask is."""
    os.umask(0o022)


def run_shell(command, cwd, timeout, env=None):
    """Run a playbook command with sh in its own process group, as command_account says (the install's owner when
    the agent is root and the owner is not), in ``cwd`` (the install dir, or the old tree after an interrupted
    swap) or in ``/`` (root_workdir); kill the group on timeout. ``UPGRADER_INSTALL_DIR`` names ``cwd``, for a
    wrapper run in ``/`` that must work there. The result names the account that ran it."""
    import subprocess

    start = time.time()
    who = command_account(cwd)
    preexec = become(who["uid"], who["gid"], who["groups"]) if who else _root_umask
    full_env = command_env(who, dict(env or {}, UPGRADER_INSTALL_DIR=cwd))
    account = account_name(who["uid"] if who else os.geteuid())
    workdir = root_workdir(cwd, command, full_env) if who is None else cwd
    forget_tree_checks()  # what this command does to the install is not known: the next look walks it again
    try:
        proc = subprocess.Popen(["/bin/sh", "-c", command], cwd=workdir, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env,
                                start_new_session=True, preexec_fn=preexec)
    except subprocess.SubprocessError as e:  # the child could not take the account (no CAP_SETUID): nothing ran
        raise AgentError("the command %r was not run: the agent could not run it as %s, the install dir's owner "
                         "(%s); it never runs the owner's scripts as root: run the agent with its usual "
                         "capabilities, or as that account" % (command, account, e), "failed", account=account)
    out, err, timed_out = read_bounded(proc, timeout)
    return {"exit": proc.returncode, "stdout": output_tail(out), "stderr": output_tail(err), "timed_out": timed_out,
            "seconds": round(time.time() - start, 3), "account": account}


def root_workdir(install, command, env=None):
    """Where a command the agent runs as itself in ``install`` runs. As root in an install root owns: a command naming
    a path outside the install another account can change (outside_path_problem) is refused (``unsafe_path``): it
    does not run; a plain command outside the install (outside_install, exempt from the whole-tree rule) runs in
    ``/``, since a program run in the install reads files there (``make`` its Makefile, ``python3 -m`` its modules,
    ``java @args`` its argument file); any other command needs the whole tree root's alone, looked at again here,
    right before it runs (a file the service account adds to the install after the plan can turn an exempt command
    into one that is not): refused (``unsafe_path``, naming the path), it does not run. Not root: the install, the
    kernel limits the command to the agent's own account."""
    if os.geteuid() != 0:
        return install
    known = dict((name, (env or {})[name]) for name in AGENT_VARS if name in (env or {}))
    odd = unjudged_word(command, known)
    if odd:
        raise AgentError("the command %r was not run: it would run as root, but the word %s in it cannot be judged as "
                         "written (%s)" % ((command,) + odd), "unsafe_path")
    code = inline_code(command, known)
    if code:
        raise AgentError("the command %r was not run: it would run as root, but %s in it runs code upgrader does not "
                         "read (%s)" % ((command,) + code), "unsafe_path")
    plain = outside_install(install, command)  # once: where it runs is where its relative names are judged
    outside = outside_path_problem(install, command, known, plain)
    if outside:
        raise AgentError("the command %r was not run: it would run as root, but %s, named in it, is not root's alone: "
                         "%s: another account could change what root runs or reads" % ((command,) + outside),
                         "unsafe_path")
    code = unlisted_code(command, known)
    if code:
        raise AgentError("the command %r was not run: it would run as root, but %s in it runs code upgrader does not "
                         "read (%s)" % ((command,) + code), "unsafe_path")
    ran = ran_written_problem(install, [command], known)
    if ran:
        raise AgentError("the command %r was not run: it would run as root, but %s in it %s"
                         % (command, ran[0], ran[1]), "unsafe_path")
    if plain:
        return "/"
    found = tree_checked(install, limit=1)
    if found:
        raise AgentError("the command %r was not run: it would run as root in %s, but %s: another account could "
                         "change what root runs, sources or acts on" % (command, install, found[0]), "unsafe_path")
    return install


OUTPUT_KEPT = 64 << 10  # bytes of each output stream kept from its start, and as many from its end
EXIT_GRACE = 2.0        # seconds the pipes are read after the command ended (or was killed), then left


class BoundedOutput(object):
    """One output stream of a command, kept in bounded memory: its first and its last ``keep`` bytes, and how many
    bytes in between were read and dropped. The command runs as another account, which decides what it prints:
    everything it printed, held by the (root) agent, would be memory it chose."""

    def __init__(self, keep=OUTPUT_KEPT):
        self.keep, self.head, self.tail, self.dropped = keep, bytearray(), bytearray(), 0

    def add(self, data):
        room = self.keep - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        self.tail += data
        if len(self.tail) > self.keep:
            cut = len(self.tail) - self.keep
            self.dropped += cut
            del self.tail[:cut]

    def text(self):
        middle = "\n" + LEFT_OUT % self.dropped + "\n" if self.dropped else ""
        return self.head.decode("utf-8", "replace") + middle + self.tail.decode("utf-8", "replace")


def read_bounded(proc, timeout, keep=OUTPUT_KEPT):
    """Read a Popen's stdout and stderr pipes (those it has) into BoundedOutput until both end, until the command
    has ended EXIT_GRACE seconds ago (a child that left its process group, ``setsid cmd &``, may hold a pipe open
    for ever), or until ``timeout``: then its process group is killed and the pipes are read EXIT_GRACE seconds
    more at most. The pipes are closed and the command reaped. (stdout text, stderr text, timed out)."""
    import selectors
    import subprocess

    pipes = [p for p in (proc.stdout, proc.stderr) if p is not None]
    kept = dict((p.fileno(), BoundedOutput(keep)) for p in pipes)
    texts = [kept[p.fileno()] for p in pipes]
    sel = selectors.DefaultSelector()
    for fd in kept:
        sel.register(fd, selectors.EVENT_READ)
    deadline, leave_at, timed_out = time.time() + timeout, None, False
    try:
        while sel.get_map():
            now = time.time()
            if leave_at is None and proc.poll() is not None:
                leave_at = now + EXIT_GRACE
            if leave_at is None and now >= deadline:
                kill_group(proc.pid)
                timed_out, leave_at = True, time.time() + EXIT_GRACE
            if leave_at is not None and now >= leave_at:
                break
            for key, _ in sel.select(max(0.0, min(0.2, (leave_at or deadline) - now))):
                data = os.read(key.fd, 1 << 16)
                if data:
                    kept[key.fd].add(data)
                else:
                    sel.unregister(key.fd)
    finally:
        sel.close()
        for p in pipes:
            p.close()
    try:
        proc.wait(timeout=max(0.0, deadline - time.time()))
    except subprocess.TimeoutExpired:  # it closed its output and went on: past its deadline all the same
        kill_group(proc.pid)
        timed_out = True
        proc.wait()
    out = [t.text() for t in texts] + [""] * (2 - len(texts))
    return out[0], out[1], timed_out


def kill_group(pid):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except OSError:
            return
        deadline = time.time() + 2
        while time.time() < deadline:
            try:
                os.killpg(pid, 0)
            except OSError:
                return
            time.sleep(0.02)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM
    try:  # a zombie is not alive
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def read_pid(paths, pid_file):
    """The pid a pid file names, or None. The number is its content, returned (inspect, probes) and acted on
    (stop): read under open_beneath's disclosure rule, and a refusal raised (an AgentError, ``not_disclosed``)."""
    if not pid_file:
        return None
    try:
        return int(read_beneath(paths.install, pid_file, "pid_file", 64, disclose=True).strip() or b"0") or None
    except AgentError:
        raise
    except (OSError, ValueError):
        return None


def port_open(port, host="127.0.0.1", timeout=0.5):
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(predicate, deadline, interval=0.02):
    while True:
        if predicate():
            return True
        if time.time() >= deadline:
            return False
        time.sleep(interval)


def real_ports(ports):
    """The ports of a list that can be connected to: a disabled port (Tomcat's <Server port="-1">) is none."""
    out = []
    for p in ports or []:
        try:
            n = int(p)
        except (TypeError, ValueError):
            continue
        if 0 < n < 65536:
            out.append(n)
    return out


def proc_cmdline(pid):
    """The arguments of process ``pid`` ([] when it is gone or cannot be read)."""
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return []
    return data.decode("utf-8", "replace").split("\0")[:-1]


def cmdline_matches(argv, wants, last=None):
    """Does ``argv`` hold every argument of ``wants`` (and end with ``last``)? ``NAME=/dir`` also matches the
    same directory written another way (through a link, or with a trailing slash)."""
    if not argv or (last is not None and argv[-1] != last):
        return False
    for want in wants:
        if want in argv:
            continue
        name, sep, value = want.partition("=")
        if not sep or not value.startswith("/"):
            return False
        prefix = name + "="
        real = os.path.realpath(value)
        if not any(a.startswith(prefix + "/") and os.path.realpath(a[len(prefix):]) == real for a in argv):
            return False
    return True


def proc_identity(pid):
    """(uids, started) of process ``pid``: its real, effective and saved uids, and when it started (seconds since the
    epoch, from its start in clock ticks after boot); None when it is gone or cannot be read."""
    status = read_text("/proc/%d/status" % pid)
    stat = read_text("/proc/%d/stat" % pid)
    boot = read_text("/proc/stat")
    if not status or not stat or not boot:
        return None
    uids = btime = None
    for line in status.splitlines():
        if line.startswith("Uid:"):
            uids = [int(x) for x in line.split()[1:4]]
    for line in boot.splitlines():
        if line.startswith("btime "):
            btime = int(line.split()[1])
    try:
        ticks = int(stat.rsplit(")", 1)[-1].split()[19])  # starttime, field 22 of proc(5)
    except (IndexError, ValueError):
        return None
    if not uids or btime is None:
        return None
    return uids, btime + float(ticks) / os.sysconf("SC_CLK_TCK")


def pid_file_record(paths, pid_file):
    """What the pid file says and who wrote it: {pid, uid, mtime} (read through one descriptor, under open_beneath's
    disclosure rule), or None when there is none, it cannot be read beneath the install, or it names no number."""
    if not pid_file:
        return None
    try:
        fd = open_beneath(paths.install, pid_file, "pid_file", disclose=True)
    except (AgentError, OSError):
        return None
    try:
        st = os.fstat(fd)
        data = os.read(fd, 64)
    finally:
        os.close(fd)
    try:
        pid = int(data.strip() or b"0")
    except ValueError:
        return None
    return {"pid": pid, "uid": st.st_uid, "mtime": st.st_mtime} if pid > 0 else None


START_SLACK = 2.0  # seconds: a start time is known to a clock tick, a file's time to the file system's grain


def foreign_process(pid, paths, records=(), sel=None):
    """Why process ``pid`` is not the service's own (None when it is, or when it is gone). It is the service's only
    when it is

    - the pid a pid file names (``records``: what pid_file_record read), running with real, effective and saved
      uid all the pid file's owner (whoever wrote the pid file may name only a process it could signal itself), and
      started no later than the pid file was written (a later one took the pid of a service that is gone); or
    - a match of the playbook's process selector ``sel``, running (real, effective and saved uid) as the agent's
      account or the install's owner, the accounts that start the service.

    Nothing else counts: not a working directory, an open file or a command-line path in the install dir (root's
    ``tail -f INSTALL/logs/x.log``). The pid file is the service account's to write: it may name any process, which
    the agent, often root, must never signal nor attach to."""
    ident = proc_identity(pid)
    if ident is None:
        return None  # gone: nothing to signal
    uids, started = ident
    argv = proc_cmdline(pid)
    # only the pid and the uids are said: the process is whoever the pid file's writer named, and its command line
    # (a database URL, a token) is not that account's to see, nor the console's to show
    shown = "uid %s" % "/".join(str(u) for u in uids)
    problems = []
    for rec in records or ():
        if not rec or rec.get("pid") != pid:
            continue
        if set(uids) != {rec["uid"]}:
            problems.append("it runs as uid %s and the pid file is owned by uid %d: the pid file's writer may name "
                            "only a process of its own account" % ("/".join(str(u) for u in uids), rec["uid"]))
        elif started > rec["mtime"] + START_SLACK:
            problems.append("it started at %s, after the pid file was written (%s): the pid is another process's now"
                            % (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
                               time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(rec["mtime"]))))
        else:
            return None
    if sel and cmdline_matches(argv, sel.get("cmdline_contains") or [], sel.get("cmdline_last")):
        starters = {os.geteuid()}
        try:
            starters.add(os.stat(paths.install).st_uid)
        except OSError:
            pass
        if len(set(uids)) == 1 and uids[0] in starters:
            return None
        problems.append("it matches the playbook's process selector but runs as uid %s, neither the agent's account "
                        "nor the install's owner" % "/".join(str(u) for u in uids))
    return "pid %d (%s): %s" % (pid, shown, "; ".join(problems) or
                                "it is neither the pid the pid file names nor a match of the playbook's process "
                                "selector")


def pidfd(pid):
    """A pidfd of process ``pid`` (Linux 5.3+, Python 3.9+), None where there is none: signals sent through it reach
    the process checked, never one that took its pid since."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return opener(pid)
    except OSError:
        return None


def send_signal(pid, fd, sig):
    sender = getattr(signal, "pidfd_send_signal", None)
    try:
        if fd is not None and sender is not None:
            sender(fd, sig)
        else:
            os.kill(pid, sig)
    except OSError:
        pass


def port_owners(ports, first=()):
    """{port: pid} of the processes holding the listening TCP sockets of ``ports`` (IPv4 and IPv6), from
    /proc/net/tcp* and /proc/PID/fd; a port nobody listens on, or whose holder cannot be read, is left out.
    The pids in ``first`` are looked at first (the server found by its command line, usually)."""
    socks = {}
    want = set(ports)
    for name in ("tcp", "tcp6"):
        for line in (read_text("/proc/net/" + name) or "").splitlines()[1:]:
            cols = line.split()
            if len(cols) > 9 and cols[3] == "0A":  # LISTEN
                port = int(cols[1].rsplit(":", 1)[1], 16)
                if port in want:
                    socks["socket:[%s]" % cols[9]] = port
    owners = {}
    if not socks:
        return owners
    wanted = set(socks.values())

    def scan(pid):
        try:
            fds = os.listdir("/proc/%s/fd" % pid)
        except OSError:
            return
        for fd in fds:
            try:
                target = os.readlink("/proc/%s/fd/%s" % (pid, fd))
            except OSError:
                continue
            if target in socks:
                owners.setdefault(socks[target], int(pid))

    for pid in first:
        scan(pid)
    if set(owners) != wanted:
        try:
            entries = os.listdir("/proc")
        except OSError:
            entries = []
        for entry in entries:
            if entry.isdigit() and int(entry) not in first:
                scan(entry)
                if set(owners) == wanted:
                    break
    return owners


def select_processes(sel):
    """(pids, problem): the live processes the selector names, and why they cannot be trusted (None when they
    can). When one of the selector's ports listens, the process holding it must be one of those found (then
    only the holders are returned): a port held by some other process means the server found is not the one
    that serves."""
    try:
        entries = os.listdir("/proc")
    except OSError as e:
        return [], "cannot list processes (/proc: %s)" % e.strerror
    me = os.getpid()
    found = []
    for entry in entries:
        if entry.isdigit() and int(entry) != me and \
                cmdline_matches(proc_cmdline(entry), sel.get("cmdline_contains") or [], sel.get("cmdline_last")) \
                and pid_alive(int(entry)):
            found.append(int(entry))
    found.sort()
    ports = real_ports(sel.get("ports"))
    if not ports:
        return found, None
    owners = port_owners(ports, found)
    for port, owner in sorted(owners.items()):
        if owner not in found:
            # by pid and uids only (as foreign_process): the port may be the service account's choice (vars_from
            # its own config), and the command line of whatever holds it is not that account's to see
            ident = proc_identity(owner)
            shown = "uid %s" % "/".join(str(u) for u in ident[0]) if ident else "gone"
            return found, ("port %d is held by pid %d (%s), not by the server found by its command line (%s)"
                           % (port, owner, shown, ", ".join(str(p) for p in found) or "none"))
    holders = [p for p in found if p in owners.values()]
    return holders or found, None


def describe_selector(sel):
    return "a process whose command line holds %s%s" % (
        " ".join(sel.get("cmdline_contains") or []),
        " and ends with %r" % sel["cmdline_last"] if sel.get("cmdline_last") else "")


def service_pids(paths, pid_file=None, sel=None, known=None):
    """The live pids of the service: the pid file's, else (or as well, when both are given) the selector's."""
    out = []
    try:
        named = read_pid(paths, pid_file)
    except AgentError as e:
        if not (e.data.get("hard_link") or e.data.get("not_disclosed")):
            raise
        raise AgentError("the service's pid file %s is withheld (%s): the service's process is unknown, so no "
                         "signal was sent and nothing was stopped or started; a person must check the pid file "
                         "(replace it by the service's own) and the service" % (pid_file, e), "needs_person",
                         path=pid_file)
    for pid in ([known] if known else []) + [named]:
        if pid and pid not in out and pid_alive(pid):
            out.append(pid)
    if sel:
        for pid in select_processes(sel)[0]:
            if pid not in out:
                out.append(pid)
    return out


def listening():
    """Listening TCP sockets: port -> local addresses (from /proc/net/tcp and tcp6)."""
    found = {}
    for name in ("tcp", "tcp6"):
        for line in (read_text("/proc/net/" + name) or "").splitlines()[1:]:
            cols = line.split()
            if len(cols) > 3 and cols[3] == "0A":
                addr, port = cols[1].rsplit(":", 1)
                if len(addr) == 8:
                    addr = ".".join(str(int(addr[i:i + 2], 16)) for i in (6, 4, 2, 0))
                else:
                    addr = "::" if set(addr) == set("0") else "ipv6:" + addr
                found.setdefault(int(port, 16), set()).add(addr)
    return dict((p, sorted(a)) for p, a in found.items())
