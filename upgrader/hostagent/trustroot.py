"""The host's own trust root, as loaded: the fixed directory root keeps (TRUST_DIR), its files checked as root's,
host-trust.json parsed. hosttrust.py decides with it; versions.py asks only whether there is one (and what root
allows), without importing the deciding module.
"""

import json
import os
import shutil
import stat

from .common import AgentError
from .state import ancestor_problem

TRUST_DIR = "/etc/upgrader/host-trust"
ALLOWED = "allowed_signers"
VENDORS = "vendor_signers"
CONFIG = "host-trust.json"
NONE_TEXT = "host trust root: none \u2014 the controller's trust roots decide"
_KEYGEN = []  # [absolute path of ssh-keygen], found once


def _keygen():
    if not _KEYGEN:
        # the fixed directories only, never the agent's PATH: another account's directory on it would choose the
        # program that verifies the host trust root's signatures
        found = shutil.which("ssh-keygen", path="/usr/bin:/bin:/usr/local/bin:/usr/sbin:/sbin")
        _KEYGEN.append(os.path.abspath(found) if found else None)
    return _KEYGEN[0]


def _trust_error(message, what):
    return AgentError("host trust root %s: %s" % (what, message), "host_trust", file=what)


def _check_owned(path, st, kind):
    if st.st_uid != 0 or st.st_mode & 0o022:
        raise _trust_error("%s owned by uid %d, mode %o: it must be owned by root and writable by nobody else; "
                           "run: chown root:root %s && chmod go-w %s (then check what it holds)"
                           % (kind, st.st_uid, stat.S_IMODE(st.st_mode), path, path), path)


def _read(path, required):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        if e.errno == 2 and not required:
            return None
        raise _trust_error("cannot be read (%s): the host trust root needs %s and %s; put them there or remove "
                           "the directory %s" % (e.strerror, ALLOWED, VENDORS, TRUST_DIR), path)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _trust_error("is not a regular file", path)
        _check_owned(path, st, "the file is")
        chunks = []
        while True:
            b = os.read(fd, 1 << 16)
            if not b:
                break
            chunks.append(b)
            if sum(len(c) for c in chunks) > 4 << 20:
                raise _trust_error("is larger than 4 MiB", path)
        return b"".join(chunks)
    finally:
        os.close(fd)


#: hours after a committed finish during which the host still admits that run's rollback (host-trust.json
#: ``rollback_hours``): a downgrade later than that is a change nobody approved, however old the run's journal
ROLLBACK_HOURS = 24


def load_root():
    """None when the host has no trust root; else {"allowed": path, "vendors": path, "required": N}; an
    AgentError (kind host_trust) for a root that exists but cannot be trusted."""
    try:
        st = os.lstat(TRUST_DIR)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        raise _trust_error("is not a directory (a link or a file): make it a directory owned by root", TRUST_DIR)
    _check_owned(TRUST_DIR, st, "the directory is")
    problem = ancestor_problem(os.path.join(TRUST_DIR, ALLOWED))
    if problem is not None:
        raise _trust_error(str(problem), TRUST_DIR)
    root = {"dir": TRUST_DIR, "allowed": os.path.join(TRUST_DIR, ALLOWED),
            "vendors": os.path.join(TRUST_DIR, VENDORS), "required": 1, "refused_changes": [],
            "version_commands": [], "version_patterns": [], "access_accounts": [], "installs": {},
            "rollback_hours": ROLLBACK_HOURS}
    for name in (ALLOWED, VENDORS):
        _read(os.path.join(TRUST_DIR, name), True)
    config = _read(os.path.join(TRUST_DIR, CONFIG), False)
    if config is not None:
        where = os.path.join(TRUST_DIR, CONFIG)
        try:
            data = json.loads(config.decode("utf-8"))
        except ValueError as e:
            raise _trust_error("is not JSON (%s): write e.g. {\"approvals_required\": 1}" % e, where)
        required = data.get("approvals_required", 1) if isinstance(data, dict) else None
        if isinstance(required, bool) or not isinstance(required, int) or required < 1:
            raise _trust_error("approvals_required must be a whole number of at least 1, not %r" % (required,),
                               where)
        root["required"] = required
        hours = data.get("rollback_hours", ROLLBACK_HOURS)
        if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not 0 <= hours < float("inf"):
            raise _trust_error("rollback_hours must be a number of hours of at least 0, not %r" % (hours,), where)
        root["rollback_hours"] = hours
        for key in ("refused_changes", "version_commands", "version_patterns", "access_accounts"):
            value = data.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise _trust_error("%s must be a list of strings, not %r" % (key, value), where)
        for command in data.get("version_commands", []):
            if not command.strip().startswith("/"):
                raise _trust_error("version_commands lists %r, which is not an absolute command: a relative one would "
                                   "run whatever lies at that path in any install dir a controller names; list it by "
                                   "its absolute path (e.g. \"/opt/app/bin/version.sh\")" % command, where)
        installs = data.get("installs", {})
        if not isinstance(installs, dict) or not all(isinstance(k, str) and k.startswith("/") and
                                                     isinstance(v, str) and v for k, v in installs.items()):
            raise _trust_error("installs must map absolute install dirs to product names (e.g. {\"/opt/app\": "
                               "\"sample-middleware\"}), not %r" % (installs,), where)
        root["installs"] = dict((os.path.normpath(k), v) for k, v in installs.items())
        root["refused_changes"] = list(data.get("refused_changes", []))
        root["version_commands"] = list(data.get("version_commands", []))
        root["version_patterns"] = list(data.get("version_patterns", []))
        root["access_accounts"] = list(data.get("access_accounts", []))
    if _keygen() is None:
        raise _trust_error("exists, but ssh-keygen (OpenSSH) is not installed on this host: the agent cannot "
                           "check signatures; install OpenSSH's client tools", TRUST_DIR)
    return root


def describe():
    """One line for facts and the plan's review: whether this host has its own trust root."""
    try:
        root = load_root()
    except AgentError as e:
        return {"present": True, "ok": False, "text": "host trust root: refused \u2014 %s" % e}
    if root is None:
        return {"present": False, "ok": True, "text": NONE_TEXT}
    return {"present": True, "ok": True, "required": root["required"],
            "text": "host trust root: %s (approvals by %s, catalogs by %s, %d approval(s) required)"
                    % (root["dir"], root["allowed"], root["vendors"], root["required"])}
