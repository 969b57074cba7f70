"""Which product is installed here, by an account the service account cannot write, never the plan's word alone.

A plan names the product it upgrades (the inventory's ``product:``, with the playbook of that product); a vendor
catalog may list several products whose versions look alike, so the plan's product must be the one installed, or
one product's package replaces another's install as a "maintenance upgrade". Who may say which product it is:
- root, in the host trust root's host-trust.json ``installs`` (``{"/opt/app": "sample-middleware"}``), matched to
  the install dir by the directory itself (st_dev, st_ino; the last component never a link), not by its spelling;
- a ledger record (``installed.json`` ``product``) written by a run this host's trust root accepted: it carries
  ``product_source`` naming the trust root and where that run read the product (root's ``installs``, or an earlier
  such record).
Everything else is the service account's word: the ledger of a run without a trust root, and the product's
identifying files (SIGNATURES: the version file and the stop and start scripts of the shipped playbooks, looked at
beneath the install without following any link). Such a guess is reported (facts ``installed_product`` with
``confirmed: false``: the plan's review says NOT CONFIRMED) and a guess that differs from the plan refuses it, but a
guess never confirms a product. On a host with a trust root ``check_product`` refuses (AgentError, kind
host_policy: exit 3) a plan unless a confirmed source names its product, before the lock, nothing changed.
"""

import os
import stat

from .common import AgentError

#: the identifying files of the products whose playbooks ship with upgrader (playbooks/*.yaml: version file, stop
#: and start scripts), relative to the install dir: a guess only, these files are the service account's
SIGNATURES = {
    "sample-middleware": ("lib/VERSION", "bin/stop.sh", "bin/start.sh"),
    "tomcat": ("lib/catalina.jar", "bin/shutdown.sh", "bin/startup.sh"),
    "tongweb": ("version.txt", "bin/stopserver.sh", "bin/startservernohup.sh"),
}
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _is_file_beneath(root_fd, rel):
    """True when ``rel`` is a regular file beneath the directory ``root_fd``, every component a plain directory
    (no link followed, none leads out)."""
    parts = [p for p in rel.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        return False
    fd = root_fd
    try:
        for name in parts[:-1]:
            try:
                nfd = os.open(name, _OPEN_DIR | _NOFOLLOW, dir_fd=fd)
            except OSError:
                return False
            if fd != root_fd:
                os.close(fd)
            fd = nfd
        try:
            st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode)
    finally:
        if fd != root_fd:
            os.close(fd)


def recognised(install_dir):
    """The shipped products whose identifying files (SIGNATURES) are all in ``install_dir``."""
    try:
        root_fd = os.open(install_dir, _OPEN_DIR)
    except OSError:
        return []
    try:
        return sorted(p for p, marks in SIGNATURES.items() if all(_is_file_beneath(root_fd, m) for m in marks))
    finally:
        os.close(root_fd)


def product_source(root_dir, product_from, plan):
    """The ``product_source`` a run accepted under the host trust root ``root_dir`` records in installed.json beside
    its ``product``: which root, where that run read the product, and the plan it accepted."""
    return {"trust_root": root_dir, "from": product_from, "plan": plan}


def _under_root(record):
    """True when an installed.json record's product was written by a run the host trust root accepted."""
    from .trustroot import TRUST_DIR

    source = record.get("product_source")
    return isinstance(source, dict) and source.get("trust_root") == TRUST_DIR and bool(source.get("from"))


def ledger_product(paths):
    """(product, where, written under the host trust root) from the ledger beside the install (installed.json
    ``product``), or (None, None, False). Only the default state dir: a state dir a request names may be another
    install's."""
    from .ledger import ledger_fds
    from .state import read_json_at

    with ledger_fds(paths, strict=False) as fds:
        for d, fd in fds:
            if os.path.abspath(d) != os.path.abspath(paths.default_state):
                continue
            record = read_json_at(fd, "installed.json", d) or {}
            product = record.get("product")
            if isinstance(product, str) and product:
                return product, os.path.join(d, "installed.json"), _under_root(record)
    return None, None, False


def _dir_key(path):
    """(st_dev, st_ino) of the directory ``path`` names, its last component never followed (a link there is no
    install dir), trailing slashes ignored; None when it is not a directory."""
    path = str(path)
    trimmed = path.rstrip("/") or "/"
    try:
        st = os.stat(trimmed, follow_symlinks=False)
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def stated_product(paths, root):
    """(product, where) root states in host-trust.json ``installs`` for this install dir, or (None, None). Matched
    by the directory (its st_dev and st_ino, bind mounts and every spelling of it alike), never by the path string;
    root's entries that name the same directory with two products are a refusal."""
    from .trustroot import CONFIG, TRUST_DIR

    installs = (root or {}).get("installs") or {}
    here = _dir_key(paths.install)
    if here is None or not installs:
        return None, None
    where = os.path.join(TRUST_DIR, CONFIG)
    named = sorted((product, key) for key, product in installs.items() if _dir_key(key) == here)
    if len(set(p for p, _ in named)) > 1:
        raise _refuse("%s \"installs\" names %s (the same directory) as %s: root must state one product for it; "
                      "refused before the lock, nothing changed" % (where, " and ".join(k for _, k in named),
                                                                    " and ".join(p for p, _ in named)), where)
    if not named:
        return None, None
    return named[0][0], "%s \"installs\" (%s)" % (where, named[0][1])


def _guess(paths):
    """(product, where) the service account's files say (the ledger of a run without a trust root, or the
    product's identifying files), or (None, None)."""
    product, where, _ = ledger_product(paths)
    if product:
        return product, "the host's ledger %s" % where
    found = recognised(paths.install)
    if len(found) == 1:
        return found[0], "its files on the host: %s" % ", ".join(SIGNATURES[found[0]])
    return None, None


def confirmed_product(paths, root):
    """(product, where) from a source the service account cannot write (root's ``installs``, else a ledger record
    written under this trust root), or (None, None); always (None, None) without a trust root."""
    if root is None:
        return None, None
    product, where = stated_product(paths, root)
    if product:
        return product, where
    product, where, trusted = ledger_product(paths)
    if product and trusted:
        return product, "the host's ledger %s, written by a run its trust root accepted" % where
    return None, None


def installed_product(paths, root=None):
    """What this host says is installed, for facts and the controller's review: {"product", "from", "confirmed"}
    or None. ``confirmed`` is false for the service account's word (see the module's text). Root's entries that
    contradict each other confirm nothing here (the lock refuses them, naming both)."""
    try:
        product, where = confirmed_product(paths, root)
    except AgentError:
        product, where = None, None
    if product:
        return {"product": product, "from": where, "confirmed": True}
    product, where = _guess(paths)
    if product:
        return {"product": product, "from": where, "confirmed": False}
    return None


def _refuse(message, what):
    return AgentError(message, "host_policy", file=what)


def _other(paths, product, where, planned):
    return _refuse("%s is an install of %s (by %s), but the plan upgrades it as %s: a package of another product is "
                   "never an upgrade of this install; refused before the lock, nothing changed. Make the plan for %s "
                   "(the inventory's product: and playbook: of this host)"
                   % (paths.install, product, where, planned, product), where)


def check_product(paths, planned, root):
    """Refuse (host_policy, exit 3) a plan whose product ``planned`` is not the product installed here (see the
    module's text); return (product, where it was read) when a confirmed source names it, else (None, None) (no
    root: the controller decides, with the host's guess NOT CONFIRMED in its review). Reads only."""
    planned = str(planned or "")
    product, where = confirmed_product(paths, root)
    if product and product != planned:
        raise _other(paths, product, where, planned)
    guess, gwhere = _guess(paths)
    if guess and guess != planned and (root is None or not product):
        raise _other(paths, guess, gwhere, planned)
    if product or root is None:
        return product, where
    from .trustroot import CONFIG, TRUST_DIR

    config = os.path.join(TRUST_DIR, CONFIG)
    raise _refuse("this host has its own trust root and cannot tell which product is installed in %s: neither root's "
                  "%s \"installs\" nor a ledger record of a run that trust root accepted says it (the plan says %s%s; the install "
                  "dir's files and a ledger of a run without the trust root are the service account's word, not "
                  "root's): refused before the lock, nothing changed. Root states the product in %s: \"installs\": "
                  "{\"%s\": \"%s\"} (the directory itself is matched, by any path to it without a link at its end)"
                  % (paths.install, config, planned, "; its files suggest %s" % guess if guess else "", config,
                     os.path.normpath(paths.install), planned), config)
