"""Which product is installed here, by this host's own account, never the plan's word alone.

A plan names the product it upgrades (the inventory's ``product:``, with the playbook of that product); a vendor
catalog may list several products whose versions look alike, so the plan's product must be the one installed, or
one product's package replaces another's install as a "maintenance upgrade". The host knows its product from
- its ledger beside the install (``installed.json`` ``product``, written at every install and rollback);
- with a host trust root, root's statement in host-trust.json ``installs`` (``{"/opt/app": "sample-middleware"}``);
- the product's identifying files (SIGNATURES: the version file and the stop and start scripts of the shipped
  playbooks, the same marks ``upgrader guide`` looks for, core/discovery.py), looked at beneath the install without
  following any link.
``check_product`` refuses (AgentError, kind host_policy: exit 3) a plan whose product differs from any of these,
before the lock and before anything is changed; on a first upgrade of a host with its own trust root it refuses a
product that neither root states nor the files show. Without a root and without a ledger record the controller
decides (it compares with ``installed_product``, which facts reports).
"""

import os
import stat

from .common import AgentError

#: the identifying files of the products whose playbooks ship with upgrader (playbooks/*.yaml: version file, stop
#: and start scripts), relative to the install dir; a product not listed here is known to a trust-root host only by
#: its ledger or by root's ``installs`` statement
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


def ledger_product(paths):
    """(product, where) from the ledger beside the install (installed.json ``product``), or (None, None). Only the
    default state dir: a state dir a request names may be another install's."""
    from .ledger import ledger_fds
    from .state import read_json_at

    with ledger_fds(paths, strict=False) as fds:
        for d, fd in fds:
            if os.path.abspath(d) != os.path.abspath(paths.default_state):
                continue
            product = (read_json_at(fd, "installed.json", d) or {}).get("product")
            if isinstance(product, str) and product:
                return product, os.path.join(d, "installed.json")
    return None, None


def stated_product(paths, root):
    """(product, where) root states in host-trust.json ``installs`` for this install dir, or (None, None)."""
    from .trustroot import CONFIG, TRUST_DIR

    installs = (root or {}).get("installs") or {}
    for d in (os.path.normpath(paths.install), os.path.realpath(paths.install)):
        if d in installs:
            return installs[d], "%s \"installs\"" % os.path.join(TRUST_DIR, CONFIG)
    return None, None


def installed_product(paths, root=None):
    """What this host says is installed, for facts and the controller's review: {"product", "from"} or None."""
    product, where = ledger_product(paths)
    if product:
        return {"product": product, "from": "the host's ledger %s" % where}
    product, where = stated_product(paths, root)
    if product:
        return {"product": product, "from": where}
    found = recognised(paths.install)
    if len(found) == 1:
        return {"product": found[0], "from": "its files on the host: %s" % ", ".join(SIGNATURES[found[0]])}
    return None


def _refuse(message, what):
    return AgentError(message, "host_policy", file=what)


def check_product(paths, planned, root):
    """Refuse (host_policy, exit 3) a plan whose product ``planned`` is not the product installed here (see the
    module's text); return (product, where it was read) when the host knows it, else (None, None) (no root, no
    ledger record: the controller decides). Reads only; nothing is changed."""
    planned = str(planned or "")
    name = os.path.basename(paths.install.rstrip("/")) or paths.install
    known = []
    product, where = ledger_product(paths)
    if product:
        known.append((product, where))
    stated, swhere = stated_product(paths, root)
    if stated:
        known.append((stated, swhere))
    for product, where in known:
        if product != planned:
            raise _refuse("%s is an install of %s (by %s), but the plan upgrades it as %s: a package of another "
                          "product is never an upgrade of this install; refused before the lock, nothing changed. "
                          "Make the plan for %s (the inventory's product: and playbook: of this host)"
                          % (paths.install, product, where, planned, product), where)
    if known:
        return known[0]
    if root is None:
        return None, None
    from .trustroot import CONFIG, TRUST_DIR

    found = recognised(paths.install)
    if len(found) == 1 and found[0] != planned:
        raise _refuse("%s is an install of %s (its files %s are there), but the plan upgrades it as %s: a package of "
                      "another product is never an upgrade of this install; refused before the lock, nothing changed. "
                      "If %s really is %s, root states it in %s: \"installs\": {\"%s\": \"%s\"}"
                      % (paths.install, found[0], ", ".join(SIGNATURES[found[0]]), planned, name, planned,
                         os.path.join(TRUST_DIR, CONFIG), os.path.normpath(paths.install), planned), TRUST_DIR)
    if found == [planned]:
        return planned, "its files on the host: %s" % ", ".join(SIGNATURES[planned])
    raise _refuse("this host has its own trust root and no ledger of an earlier upgrade of %s, and cannot tell "
                  "which product is installed there (the plan says %s; %s): refused before the lock, nothing "
                  "changed. Root states the product in %s: \"installs\": {\"%s\": \"%s\"}"
                  % (paths.install, planned, "the files of %s are all there" % " and ".join(found) if found else
                     "no shipped product's identifying files are all there", os.path.join(TRUST_DIR, CONFIG),
                     os.path.normpath(paths.install), planned), os.path.join(TRUST_DIR, CONFIG))
