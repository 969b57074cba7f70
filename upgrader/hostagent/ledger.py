"""This host's trust ledger: used approvals, catalog serials and the last install's manifest, kept in every
copy of the state dir (the default one beside the install, and the request's when it names another).
"""

import contextlib
import json
import os

from .common import AgentError
from .manifests import drift
from .state import ledger_dirs, open_state_dir, read_json_at, state_file_error, write_json_at
from .versions import same_version


@contextlib.contextmanager
def ledger_fds(paths, create=False, strict=True):
    """[(dir, descriptor)] of every copy of the ledger (ledger_dirs), each opened once with open_state_dir: a copy
    that is a link, or a directory of another account or writable by others, is refused (``strict``), or left
    out (not ``strict``: a read-only look such as facts, before the run's lock refuses it). A missing copy is
    made when ``create``, else left out. Every read and write of the ledger goes through these descriptors."""
    fds = []
    try:
        for d in ledger_dirs(paths):
            try:
                fd = open_state_dir(d, create)
            except AgentError:
                if strict:
                    raise
                continue
            if fd is not None:
                fds.append((d, fd))
        yield fds
    finally:
        for _, fd in fds:
            os.close(fd)


def ledger_serials(paths, strict=True):
    """Per product, the newest catalog serial any copy of the ledger recorded, and this machine's record
    (machine_serials: a sibling install of the product is not upgraded from an older catalog either)."""
    seen = dict(machine_serials(strict))
    with ledger_fds(paths, strict=strict) as fds:
        for d, fd in fds:
            for product, serial in (read_json_at(fd, CATALOG_SERIALS, d) or {}).items():
                seen[product] = max(int(serial), int(seen.get(product, 0)))
    return seen


#: root's record of the newest catalog serials this machine accepted, whatever install (a fixed place beside the
#: host trust root, never moved by a request); another account keeps it in its own home
MACHINE_LEDGER_ROOT = "/etc/upgrader/ledger"


def machine_ledger_dir():
    """Where this machine's catalog serials are kept for the agent's account: root's in MACHINE_LEDGER_ROOT, any
    other account's in ``.upgrader-agent`` in its home (``$HOME``, as the account's own grants take it, else the
    password database's)."""
    if os.geteuid() == 0:
        return MACHINE_LEDGER_ROOT
    import pwd

    home = os.environ.get("HOME") or pwd.getpwuid(os.geteuid()).pw_dir
    return os.path.join(home, ".upgrader-agent")


def machine_serials(strict=True):
    """Per product, the newest catalog serial a run on this machine was accepted with (any install): read from the
    directory's descriptor, never through a link (a link, or a directory of another account or writable by others,
    is refused when ``strict``, else left out, as a ledger copy is)."""
    d = machine_ledger_dir()
    try:
        fd = open_state_dir(d)
    except (AgentError, OSError):
        if strict:
            raise
        return {}
    if fd is None:
        return {}
    try:
        seen = read_json_at(fd, CATALOG_SERIALS, d) or {}
    except (AgentError, OSError):
        if strict:
            raise
        return {}
    finally:
        os.close(fd)
    return dict((str(k), int(v)) for k, v in seen.items()) if isinstance(seen, dict) else {}


def record_machine_serial(catalog):
    """Raise this machine's record of the product's catalog serial (made 0700 when absent; root's parent
    /etc/upgrader 0755). A record that cannot be written is left as it is: the install's own ledger keeps the
    serial, and the run that got this far is not failed for it."""
    if not catalog:
        return
    d = machine_ledger_dir()
    try:
        if d == MACHINE_LEDGER_ROOT:
            try:
                os.mkdir(os.path.dirname(d), 0o755)
            except FileExistsError:
                pass
        fd = open_state_dir(d, create=True)
    except (AgentError, OSError):
        return
    try:
        seen = read_json_at(fd, CATALOG_SERIALS, d) or {}
        if int(seen.get(catalog["product"], 0)) < int(catalog["serial"]):
            seen[catalog["product"]] = int(catalog["serial"])
            write_json_at(fd, CATALOG_SERIALS, seen)
    except (AgentError, OSError, ValueError, TypeError):
        pass
    finally:
        os.close(fd)


def ledger_drift(paths, current, strict=True):
    """Hand changes against the last install's manifest in every ledger copy (one that is missing, as a fresh
    state dir would be, hides nothing the default one holds)."""
    out, listed = [], set()
    with ledger_fds(paths, strict=strict) as fds:
        for d, fd in fds:
            for change in drift(read_json_at(fd, "installed.json", d), current):
                if change["path"] not in listed:
                    listed.add(change["path"])
                    out.append(change)
    return sorted(out, key=lambda c: c["path"])


def used_approvals(paths):
    """Approvals (digests) already consumed by a run on this host, with the run that used them (every copy of
    the ledger: a plan that names a fresh state dir does not make a used approval new)."""
    out = {}
    with ledger_fds(paths) as fds:
        for d, dfd in fds:
            try:  # never through a link to elsewhere
                fd = os.open("approvals-used.jsonl", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                             | getattr(os, "O_CLOEXEC", 0), dir_fd=dfd)
            except FileNotFoundError:
                continue
            except OSError as e:
                raise state_file_error(d, "approvals-used.jsonl", e)
            with os.fdopen(fd, encoding="utf-8") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                        out.setdefault(rec["approval"], rec)
                    except (ValueError, KeyError, TypeError):
                        continue
    return out


#: per product, the newest catalog serial a run on this host was accepted with (next to the used approvals)
CATALOG_SERIALS = "catalog-serials.json"


def check_catalog_serial(paths, catalog):
    """Refuse a run from a catalog older than one this host has already been upgraded from (any controller, any
    install of this machine)."""
    if not catalog:
        return
    seen = ledger_serials(paths).get(catalog["product"], 0)
    if int(seen) > int(catalog["serial"]):
        raise AgentError(serial_refusal(catalog["serial"], seen, catalog["product"]), "catalog_rollback")


def serial_refusal(serial, seen, product):
    """The refusal of a catalog older than one this machine accepted (en + zh)."""
    return ("catalog serial %s is older than serial %s this host was already upgraded from (%s, by this install or "
            "another one on this machine): refusing a rollback to an old catalog; nothing was changed: get the current "
            "catalog from the vendor\n目录序号 %s 比本机（此安装或本机上的另一安装）已用于升级 %s 的目录序号 %s 旧：拒绝回退到"
            "旧目录；未做任何更改：请向厂商获取当前目录" % (serial, seen, product, serial, product, seen))


def record_catalog_serial(fds, catalog):
    """Record the catalog's serial in every copy of the ledger (``fds``, from ledger_fds), and this machine's."""
    if not catalog:
        return
    for d, fd in fds:
        seen = read_json_at(fd, CATALOG_SERIALS, d) or {}
        if int(seen.get(catalog["product"], 0)) < int(catalog["serial"]):
            seen[catalog["product"]] = int(catalog["serial"])
            write_json_at(fd, CATALOG_SERIALS, seen)
    record_machine_serial(catalog)


def check_ledger_version(paths, current):
    """Before anything is staged or stopped: the version this host's own ledger says upgrader installed last
    (installed.json beside the install, and in the request's state dir when it names another one) must be the
    plan's current version. A plan that reads the version from elsewhere (an old log line) and so plans a
    downgrade as an upgrade is refused here, nothing changed. Each copy is read through its descriptor
    (ledger_fds), never through a link."""
    with ledger_fds(paths) as fds:
        for d, fd in fds:
            recorded = (read_json_at(fd, "installed.json", d) or {}).get("version")
            if recorded and current and not same_version(recorded, current):
                raise AgentError("this host's ledger (%s) says upgrader last installed %s here, but the plan says "
                                 "the host runs %s: the plan's version source does not read the installed version; "
                                 "refusing before stop, nothing changed" % (os.path.join(d, "installed.json"),
                                                                            recorded, current),
                                 "version_mismatch", recorded=recorded, planned=current)
