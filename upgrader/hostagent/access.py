"""Access grants: an account's ~/.ssh/authorized_keys, read whole and replaced whole. The controller
edits the text (upgrader/customer/access.py); here it is only read, and swapped in under a lock when
nobody changed it since it was read (compare and swap on its sha256), owner and mode kept.
"""

import errno
import hashlib
import os
import stat

from .beneath import OPEN_DIR
from .common import AgentError


AUTHORIZED_KEYS_MAX = 64 << 20  # as the controller reads it (sshd reads it all)


def access_target(req):
    """The account a request names (default: the agent's own, at $HOME) and its authorized_keys path."""
    import pwd

    euid, user = os.geteuid(), req.get("user")
    try:
        pw = pwd.getpwnam(user) if user else pwd.getpwuid(euid)
    except KeyError:
        raise AgentError("there is no user %r on this host" % (user or euid), "bad_input")
    if user and euid not in (0, pw.pw_uid):
        raise AgentError("only root (or %s) may change the authorized_keys of %s" % (user, user), "bad_input")
    home = pw.pw_dir if user else (os.environ.get("HOME") or pw.pw_dir)
    if not home or not os.path.isdir(home):
        raise AgentError("user %s has no home directory (%s)" % (pw.pw_name, home or "none"), "bad_input")
    ssh_dir = os.path.join(home, ".ssh")
    return pw, ssh_dir, os.path.join(ssh_dir, "authorized_keys")


def access_consent(account):
    """With a host trust root, who may log in to this host is the host's own decision, not a controller's: the
    agent changes an account's authorized_keys (``access grant`` / ``revoke``) only for an account root lists in
    host-trust.json ``access_accounts``; any other is refused (kind host_trust, exit 4) before anything is read or
    written. Root on the host edits the file by hand, or lists the account. No root: the controller decides."""
    from .trustroot import CONFIG, TRUST_DIR, load_root

    root = load_root()  # a root that exists but is refused: refused here too (nothing written)
    if root is None or account in root["access_accounts"]:
        return
    raise AgentError("host trust root %s: this host decides itself who may log in; the agent changes the "
                     "authorized_keys of %s only when root lists that account in %s \"access_accounts\": refused, "
                     "nothing was changed. Root on this host edits the file by hand, or adds the account there"
                     % (TRUST_DIR, account, os.path.join(TRUST_DIR, CONFIG)), "host_trust",
                     file=os.path.join(TRUST_DIR, CONFIG))


def open_ssh_dir(pw, ssh_dir, create):
    """A descriptor of the account's ~/.ssh, reached from / one component at a time with O_NOFOLLOW (open_home),
    so a directory the account swaps for a link meanwhile cannot redirect the edit. None when it is missing and
    ``create`` is false; made (0700, owned by the account) when it is missing and ``create`` is true. Only a
    ``.ssh`` made by this call is handed to the account: an existing one keeps its owner and mode; one owned by
    neither the account nor root is refused (whoever owns it could swap the files root writes there)."""
    fd = open_home(os.path.dirname(ssh_dir))
    made = False
    try:
        if create:
            try:
                os.mkdir(".ssh", 0o700, dir_fd=fd)
                os.fsync(fd)
                made = True
            except FileExistsError:
                pass
        try:
            ssh_fd = os.open(".ssh", OPEN_DIR, dir_fd=fd)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise AgentError("%s is not a plain directory (a link?); edit it by hand" % ssh_dir, "bad_input")
            raise
    finally:
        os.close(fd)
    st = os.fstat(ssh_fd)
    if made and st.st_uid == os.geteuid() and os.geteuid() != pw.pw_uid:
        os.fchown(ssh_fd, pw.pw_uid, pw.pw_gid)  # the directory this call made, never one found there
    elif st.st_uid not in (pw.pw_uid, 0, os.geteuid()):
        os.close(ssh_fd)
        raise AgentError("%s is owned by uid %d, neither %s nor root: upgrader does not write into it (and leaves "
                         "its owner and mode as they are); give it to %s or root, or edit it by hand"
                         % (ssh_dir, st.st_uid, pw.pw_name, pw.pw_name), "bad_input")
    return ssh_fd


def open_home(home):
    """A descriptor of directory ``home``, opened from / one component at a time with O_NOFOLLOW. A link on the
    way (``/home -> /usr/home``) is followed only where the directory holding it is root's and nobody else can
    write it (so only root could have made it); any other link is refused."""
    parts = [p for p in os.path.abspath(home).split("/") if p]
    fd = os.open("/", OPEN_DIR)
    links = 0
    try:
        while parts:
            name = parts.pop(0)
            if name == ".":
                continue
            try:
                nfd = os.open(name, OPEN_DIR, dir_fd=fd)
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                    raise
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISLNK(st.st_mode):
                    raise AgentError("home directory %s: %s is not a directory" % (home, name), "bad_input")
                dst = os.fstat(fd)
                links += 1
                if dst.st_uid != 0 or dst.st_mode & 0o022 or links > 40:
                    raise AgentError(
                        "home directory %s: %s is a link (-> %s) in a directory owned by uid %d with mode %o that "
                        "not only root can change; upgrader follows a link on the way to a home only in a "
                        "root-owned directory nobody else can write: fix the account's home, or edit its "
                        "authorized_keys by hand" % (home, name, os.readlink(name, dir_fd=fd), dst.st_uid,
                                                    stat.S_IMODE(dst.st_mode)), "bad_input")
                target = os.readlink(name, dir_fd=fd)
                parts = [p for p in target.split("/") if p] + parts
                if target.startswith("/"):
                    nfd = os.open("/", OPEN_DIR)
                else:
                    continue
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def read_authorized_keys(ssh_fd, path, pw):
    """(bytes, stat) of authorized_keys in the directory ssh_fd, (None, None) when there is none; never
    through a link."""
    if ssh_fd is None:
        return None, None
    try:
        fd = os.open("authorized_keys", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=ssh_fd)
    except FileNotFoundError:
        return None, None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise AgentError("%s is a link; upgrader edits only a plain file" % path, "bad_input")
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        check_account_file(st, path, pw, owner=False)
        data = f.read(AUTHORIZED_KEYS_MAX + 1)
    if len(data) > AUTHORIZED_KEYS_MAX:
        raise AgentError("%s is larger than %d MiB; is it the right file? Edit it by hand"
                         % (path, AUTHORIZED_KEYS_MAX >> 20), "bad_input")
    return data, st


def op_access_read(req):
    import base64

    pw, ssh_dir, path = access_target(req)
    ssh_fd = open_ssh_dir(pw, ssh_dir, create=False)
    try:
        data, _ = read_authorized_keys(ssh_fd, path, pw)
    finally:
        if ssh_fd is not None:
            os.close(ssh_fd)
    return {"user": pw.pw_name, "path": path, "exists": data is not None,
            "sha256": hashlib.sha256(data).hexdigest() if data is not None else None,
            "data": base64.b64encode(data or b"").decode("ascii")}


def op_access_write(req):
    """Replace authorized_keys with req["data"] if it still has sha256 req["expect"] (None: absent).
    Every file is opened and renamed relative to the descriptor of ~/.ssh (see open_ssh_dir)."""
    import base64
    import fcntl

    pw, ssh_dir, path = access_target(req)
    access_consent(pw.pw_name)
    data = base64.b64decode(req["data"])
    ssh_fd = open_ssh_dir(pw, ssh_dir, create=True)
    try:
        lock, created = open_access_lock(ssh_fd, ssh_dir, pw)
        try:
            if (created and os.geteuid() == 0 and os.fstat(lock).st_uid != pw.pw_uid
                    and os.fstat(ssh_fd).st_uid == pw.pw_uid):
                os.fchown(lock, pw.pw_uid, pw.pw_gid)  # only the file this call made, never one found there
            fcntl.flock(lock, fcntl.LOCK_EX)
            old, st = read_authorized_keys(ssh_fd, path, pw)
            if (hashlib.sha256(old).hexdigest() if old is not None else None) != req.get("expect"):
                raise AgentError("%s changed while it was being edited" % path, "conflict")
            replace_authorized_keys(ssh_fd, path, data, st, pw)
        finally:
            os.close(lock)
    finally:
        os.close(ssh_fd)
    return {"path": path, "created": st is None, "sha256": hashlib.sha256(data).hexdigest()}


def check_account_file(st, path, pw, owner=True):
    """A file in the account's ~/.ssh that root may use: a regular file with one name (not a hard link to a
    file elsewhere) and (``owner``) owned by the account or root. authorized_keys keeps whatever owner it has."""
    if not stat.S_ISREG(st.st_mode):
        raise AgentError("%s is not a regular file; edit it by hand" % path, "bad_input")
    if st.st_nlink != 1:
        raise AgentError("%s has %d names (a hard link to a file elsewhere?); upgrader edits only a file with one "
                         "name: edit it by hand" % (path, st.st_nlink), "bad_input")
    if owner and st.st_uid not in (pw.pw_uid, 0):
        raise AgentError("%s is owned by uid %d, not by %s or root; edit it by hand" % (path, st.st_uid, pw.pw_name),
                         "bad_input")


def open_access_lock(ssh_fd, ssh_dir, pw):
    """(descriptor, made by this call) of ~/.ssh/.authorized_keys.lock: made new (O_EXCL), else an existing one
    opened without following a link and checked (check_account_file)."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    path = os.path.join(ssh_dir, ".authorized_keys.lock")
    try:
        return os.open(".authorized_keys.lock", flags | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=ssh_fd), True
    except FileExistsError:
        pass
    try:
        fd = os.open(".authorized_keys.lock", flags, dir_fd=ssh_fd)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise AgentError("%s is a link; remove it" % path, "bad_input")
        raise
    try:
        check_account_file(os.fstat(fd), path, pw)
    except BaseException:
        os.close(fd)
        raise
    return fd, False


def replace_authorized_keys(ssh_fd, path, data, st, pw):
    """Write data to a new file in ssh_fd (owner and mode of the old file; else the account's and 0600, or, in a
    ~/.ssh kept by root, root's and 0644 as that hardening has it), then rename it over authorized_keys."""
    if st:
        uid, gid, mode = st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)
    elif os.fstat(ssh_fd).st_uid == 0 and pw.pw_uid != 0:
        uid, gid, mode = 0, 0, 0o644
    else:
        uid, gid, mode = pw.pw_uid, pw.pw_gid, 0o600
    tmp = ".authorized_keys.%d.%s" % (os.getpid(), os.urandom(4).hex())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600,
                 dir_fd=ssh_fd)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if (uid, gid) != (os.geteuid(), os.getegid()):
                try:
                    os.fchown(f.fileno(), uid, gid)
                except PermissionError:
                    raise AgentError("cannot keep %s owned by uid %d, gid %d (only root can); nothing was "
                                     "changed" % (path, uid, gid), "bad_input")
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.rename(tmp, "authorized_keys", src_dir_fd=ssh_fd, dst_dir_fd=ssh_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=ssh_fd)
        except OSError:
            pass
        raise
    os.fsync(ssh_fd)
