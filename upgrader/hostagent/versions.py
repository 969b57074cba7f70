"""The installed version, read from a file (or a member of an archive in the install) or a command's output,
and compared with another.
"""

import os
import re

from .beneath import read_beneath
from .common import AgentError
from .processes import root_command_problems, run_shell


#: the host's own reading (trust root): the first word of the file, or of the command's output
FIRST_WORD = r"^\s*(\S+)"
_WHOLE_VERSION = re.compile(r"[Vv]?[0-9]+(?:\.[0-9]+)*\Z")


def read_version(paths, source):
    """The installed version, from a file (+ optional regex) or a command's output."""
    text, error = read_version_text(paths, source)
    if text is None:
        return None, error
    return match_version(text, source.get("pattern") or FIRST_WORD)


def match_version(text, pattern):
    m = re.search(pattern, text, re.MULTILINE)
    if not m:
        return None, "no version found by pattern %r" % pattern
    return (m.group(1) if m.groups() else m.group(0)).strip(), None


def install_owner_problem(paths):
    """With a host trust root a version command runs only in an install dir owned by root or the agent's user
    (another account's directory would choose what the command runs or reads, as the agent's user)."""
    try:
        st = os.stat(paths.install)
    except OSError as e:
        return "install dir %s cannot be read (%s)" % (paths.install, e.strerror)
    if st.st_uid not in (0, os.geteuid()):
        return ("install dir %s is owned by uid %d, not by root or the agent's user: with a host trust root no version "
                "command runs there; make root own the install, or read the version from a file"
                % (paths.install, st.st_uid))
    return None


def host_read_version(paths, source, root, target):
    """The host's own reading with a trust root (never the playbook's ``pattern`` unless root lists that exact
    pattern in host-trust.json ``version_patterns``): (version, raw first line read, error). The version must be
    a whole version: digits only (a V prefix aside), as many levels as the target; else error names what was read."""
    text, error = read_version_text(paths, source)
    if text is None:
        return None, None, error
    lines = text.strip().splitlines()
    raw = lines[0][:200] if lines else ""
    pattern = source.get("pattern")
    if not pattern or pattern not in (root.get("version_patterns") or []):
        pattern = FIRST_WORD
    found, error = match_version(text, pattern)
    if found is None:
        return None, raw, error
    want = len(str(target or "").strip().lstrip("Vv").split("."))
    if not _WHOLE_VERSION.match(found) or len(found.lstrip("Vv").split(".")) != want:
        return None, raw, ("read %r (first line %r), which is not a whole version of %d numeric levels like the "
                           "target %s" % (found, raw, want, target))
    return found, raw, None


def read_version_text(paths, source):
    """The text a version source reads (the file, the archive member, or the command's output): (text, error)."""
    if not source.get("file"):
        try:
            from .trustroot import load_root
            root = load_root()
        except AgentError:
            root = {}
        if root is not None:
            problem = install_owner_problem(paths)
            if problem:
                return None, problem
    if source.get("file"):
        f = os.path.join(paths.install, source["file"])
        try:
            if source.get("member"):
                text, why = read_version_member(paths, source)
                if text is None:
                    return None, why
            else:
                text = read_beneath(paths.install, source["file"], "version file", 65536).decode("utf-8", "replace")
        except FileNotFoundError:
            return None, "version file %s not found" % f
        except AgentError as e:  # another account's file put there (a hard link of a root-only file): not disclosed
            if not e.data.get("not_disclosed") and not e.data.get("hard_link"):
                raise
            return None, str(e)
    else:
        # the same rule as the run's stop and start: run as root, the command must not run, source or read what
        # another account can change (plan, status, inspect and available all read the version here)
        refused = root_command_problems(paths.install, {"version.command": source["command"]})
        if refused:
            return None, refused[0]
        res = run_shell(source["command"], paths.install, float(source.get("timeout", 30)))
        if res["exit"] != 0:
            return None, "version command exited %s: %s" % (res["exit"], res["stderr"][-300:])
        text = res["stdout"]
    return text, None


def read_version_member(paths, source):
    """The text of ``member`` inside the zip or jar archive ``file`` (read without starting any program)."""
    import io
    import zipfile

    data = read_beneath(paths.install, source["file"], "version file", 64 << 20)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            info = z.getinfo(source["member"])
            if info.file_size > 1 << 20:
                raise ValueError("%s in %s is larger than 1 MiB" % (source["member"], source["file"]))
            return z.read(info).decode("utf-8", "replace"), None
    except KeyError:
        return None, "%s holds no %s" % (source["file"], source["member"])
    except (zipfile.BadZipfile, ValueError, RuntimeError, EOFError) as e:
        return None, "%s is not a readable archive: %s" % (source["file"], e)


def same_version(a, b):
    """Two version strings name the same version (case, and trailing .0 levels, aside: 10.1.60.0 is 10.1.60)."""
    def norm(v):
        parts = str(v).strip().lower().split(".")
        while len(parts) > 1 and parts[-1] == "0":
            parts.pop()
        return parts
    return a is not None and b is not None and norm(a) == norm(b)


def check_installed_version(paths, source, target):
    """After the swap: the version the install now holds, read again, must be the target (else the run fails and
    the old version is put back)."""
    try:
        from .trustroot import load_root
        root = load_root()
    except AgentError:
        root = {}
    if root is None:
        found, error = read_version(paths, source)
    else:  # the host's own rule, as on the first upgrade (hosttrust.host_version)
        found, _raw, error = host_read_version(paths, source, root, target)
    if not same_version(found, target):
        raise AgentError("after the install the host reads version %s, not the target %s%s: the package did not put "
                         "the target in place" % (found, target, " (%s)" % error if error else ""),
                         "failed", found=found, target=target)
