"""The host's own trust root: which engineers' approvals and which vendors' catalogs this host accepts.

The controller's trust roots (policy, allowed_signers, vendor keys) live in the controller's HOME; whoever holds
the host's SSH credentials can make a HOME of their own and name their own keys there. A host that must not
depend on the controller keeps its own root in a fixed directory (``TRUST_DIR``; no request field, environment
variable or inventory key moves it): ``allowed_signers`` (the engineers whose approvals it accepts),
``vendor_signers`` (the keys whose catalogs it accepts), both in OpenSSH's allowed_signers format, and an optional
``host-trust.json`` (``{"approvals_required": N}``; ``refused_changes``: declared changes it refuses besides
REFUSED_CHANGES; ``version_commands``: absolute version commands root allows outside an accepted run; ``installs``: the product
installed in an install dir, for a first upgrade, product.py; ``version_patterns``: playbook
version patterns the host may use to read the version; ``access_accounts``: the accounts whose authorized_keys the
agent may change on a controller's request, access.py). The directory and its files must be owned by root and not
writable by group or others, below directories only root can change (the StrictModes-like rule); a root that
exists but fails this is a refusal, never silently ignored. No directory: the controller's trust roots decide.

With a root, the agent decides on its own, from the evidence the controller sends (the plan's canonical bytes
and the requester's signature of their digest, the approvals, the catalog and its signature), with the host's
``ssh-keygen -Y``: every approval verifies under the host's allowed_signers as the literal principal it names,
approves the digest of these very plan bytes, has not expired by the host's clock; enough distinct people (keys
and names: one person's two keys count once), none of them the requester; the catalog verifies under vendor_signers and its entry for the plan's product
and target version lists the package's sha256; the plan's entry
for this host was made for this machine and install (its recorded identity), is for the product installed here
(product.py: root's ``installs`` statement, or a ledger record a run accepted under this root wrote; the catalog
serial is then keyed on
that product), names this install, its current
version is the one the host reads itself (its ledger's, else the playbook's version file), and its target changes
only levels 3 and 4, never going back; the signed catalog entry declares no change that is never free
(REFUSED_CHANGES), its kind is the plan's and a patch's ``requires`` holds the version the host runs (at prepare the
package's own package.yaml must say the same). At prepare the accepted
entry is kept in the run's directory and every later step of the run is bound to it (``bound``); the approvals it
verified are the ones checked and recorded as used. A failure is an AgentError of kind ``host_trust`` (signatures, catalog: exit 4) or ``host_policy``
(version rule, approvals required, self-approval: exit 3), raised before anything on the host is changed.
"""

import base64
import datetime
import hashlib
import json
import os
import re
import subprocess
import tempfile
import time

from .common import AgentError
from .mounts import remove_tree
from .tarheaders import meta_member, open_package
from .trustroot import TRUST_DIR as TRUST_DIR, load_root as load_root  # part of this module's interface
from .trustroot import NONE_TEXT as NONE_TEXT, describe as describe  # likewise
from .trustroot import ALLOWED, CONFIG, _keygen, _read, _trust_error

APPROVAL_NS = "upgrader-approval"
CATALOG_NS = "upgrader-catalog"
PLAN_NS = "upgrader-plan"
_FIELDS = ("plan", "approver", "requester", "created", "expires", "after-hours", "comment")
_FINGERPRINT = re.compile(r"(SHA256:[A-Za-z0-9+/]{43})")
#: a package digest line of catalog.yaml as trust/catalog.py writes it (yaml.safe_dump of a list of mappings:
#: ``  sha256: <64 hex>`` or ``- sha256: <64 hex>``). The agent has no YAML parser: it matches this exact form in
#: the bytes whose vendor signature it verified, so only a digest the vendor signed can match.
_CATALOG_SHA = re.compile(r"^[ \t-]*sha256: ([0-9a-f]{64})[ \t]*$", re.MULTILINE)
#: the catalog's serial as trust/catalog.py writes it: the top-level mapping's ``serial: N`` at the start of a line
#: (a package entry's keys are indented), read from the signed bytes; exactly one must be there
_CATALOG_SERIAL = re.compile(r"^serial: ([0-9]{1,18})[ \t]*$", re.MULTILINE)


def _scalar(text):
    """A YAML plain or quoted scalar as safe_dump writes one on a single line; None for anything else."""
    text = text.rstrip(" \t")
    if len(text) >= 2 and text[0] == text[-1] == "'":
        inner = text[1:-1]
        return None if "'" in inner.replace("''", "") else inner.replace("''", "'")
    if len(text) >= 2 and text[0] == text[-1] == '"':
        inner = text[1:-1]
        return None if "\\" in inner or '"' in inner else inner
    if not text or text[0] in "[{&*!|>'\"%@`#" or " #" in text:
        return None
    return text


#: the changes a package may declare that make an upgrade never free (PRODUCT.md; trust/package.py CHANGE_KINDS):
#: this host refuses each of them whatever the controller's policy says; host-trust.json ``refused_changes`` may add
#: more, never remove these
REFUSED_CHANGES = ("external_interface", "config_format", "monitoring")
#: the keys of a catalog entry (and of package.yaml) this host reads itself
_READ_KEYS = ("product", "version", "sha256", "kind", "requires", "changes", "remove", "limits")
#: the keys written as a block list (``- item`` lines), and the mapping of numbers (the extraction limits)
_LIST_KEYS = ("changes", "remove")
_LIMIT_KEYS = ("members", "unpacked_bytes")
_KEY_LINE = re.compile(r"^([a-z0-9_]+): ?(.*)$")
_LIMIT_LINE = re.compile(r"^([a-z_]+): ([0-9]{1,18})[ \t]*$")


def block_mapping(lines, prefix):
    """The keys of _READ_KEYS of a block mapping written by yaml.safe_dump whose keys start at ``prefix`` (a
    catalog entry: two spaces; package.yaml: none): scalars, ``changes`` and ``remove`` as lists (``[]``, or
    ``- item`` lines at ``prefix``; None when written any other way), ``limits`` as {members, unpacked_bytes}
    (numbers on the lines two spaces deeper; None when it holds anything else). Other deeper lines (a wrapped
    description) are not its own. None when a key of _READ_KEYS is repeated (a YAML reader would keep one of the
    two)."""
    out, open_list, open_map = {}, None, False
    for line in lines:
        if open_list and line.startswith(prefix + "- "):
            item = _scalar(line[len(prefix) + 2:])
            if item is None or out[open_list] is None:
                out[open_list] = None
            else:
                out[open_list].append(item)
            continue
        open_list = None
        if open_map and line.startswith(prefix + "  ") and line[len(prefix) + 2:len(prefix) + 3] not in (" ", ""):
            m = _LIMIT_LINE.match(line[len(prefix) + 2:])
            if m is None or m.group(1) not in _LIMIT_KEYS or out["limits"] is None or m.group(1) in out["limits"]:
                out["limits"] = None
            else:
                out["limits"][m.group(1)] = int(m.group(2))
            continue
        open_map = False
        if not line.startswith(prefix) or line[len(prefix):len(prefix) + 1] in (" ", "-", ""):
            continue
        m = _KEY_LINE.match(line[len(prefix):])
        if m is None or m.group(1) not in _READ_KEYS:
            continue
        key, raw = m.group(1), m.group(2).rstrip(" \t")
        if key in out:
            return None
        if key in _LIST_KEYS:
            out[key] = [] if raw in ("", "[]") else None
            open_list = key if raw == "" else None
        elif key == "limits":
            out[key] = {} if raw in ("", "{}") else None
            open_map = raw == ""
        else:
            out[key] = _scalar(raw)
    return out


def catalog_entry_list(text):
    """Every package entry of a catalog's text, read the way trust/catalog.py writes it (block_mapping); an entry
    that repeats a key is left out."""
    entries, current, inside = [], None, False
    for line in text.splitlines():
        if not inside:
            inside = line.rstrip() == "packages:"
            continue
        if line and not line.startswith((" ", "-")):  # the next top-level key: the package list ended
            break
        if line.startswith("- "):
            if current is not None:
                entries.append(current)
            current = ["  " + line[2:]]
        elif current is not None:
            current.append(line)
    if current is not None:
        entries.append(current)
    return [e for e in (block_mapping(lines, "  ") for lines in entries) if e is not None]


def catalog_entries(text):
    """The (product, version, sha256) of every package entry of a catalog's text (catalog_entry_list)."""
    return [(e.get("product"), e.get("version"), e.get("sha256")) for e in catalog_entry_list(text)]


# -- ssh-keygen -------------------------------------------------------------------------------------------

def _run_keygen(args, data, signature, tmp):
    sig = os.path.join(tmp, "sig")
    with open(sig, "w") as f:
        f.write(signature)
    try:
        proc = subprocess.run([_keygen()] + args + ["-s", sig], input=data, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=60, close_fds=True)
    except (OSError, subprocess.SubprocessError) as e:
        return 255, "", str(e)
    finally:
        os.unlink(sig)
    return proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")


def _fingerprint_of(out):
    m = _FINGERPRINT.search(out)
    return m.group(1) if m else None


def _verify(signers, principal, namespace, data, signature, tmp):
    """The key fingerprint when ``signature`` is a good signature of ``data`` in ``namespace`` by a key listed
    for ``principal`` in ``signers``; else None and ssh-keygen's words."""
    code, out, err = _run_keygen(["-Y", "verify", "-f", signers, "-I", principal, "-n", namespace], data,
                                 signature, tmp)
    if code != 0:
        return None, (err or out).strip().splitlines()[-1:] or ["ssh-keygen exited %d" % code]
    return _fingerprint_of(out + err), None


def _b64(text):
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeError):
        return None


def _first_string(blob):
    """The first SSH wire string of ``blob`` and the rest (None when it is not one)."""
    if blob is None or len(blob) < 4:
        return None, b""
    n = int.from_bytes(blob[:4], "big")
    if len(blob) < 4 + n:
        return None, b""
    return blob[4:4 + n], blob[4 + n:]


def _fingerprint(blob):
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


def signature_key(armored):
    """The public key blob inside an armoured SSHSIG signature (None when it is not one); the key is checked by
    ssh-keygen afterwards, this only says whose it claims to be."""
    lines = [x.strip() for x in str(armored or "").strip().splitlines()]
    if len(lines) < 3 or lines[0] != "-----BEGIN SSH SIGNATURE-----" or lines[-1] != "-----END SSH SIGNATURE-----":
        return None
    body = _b64("".join(lines[1:-1]))
    if not body or body[:6] != b"SSHSIG" or len(body) < 10:
        return None
    key, _ = _first_string(body[10:])
    return key or None


_TOKEN = re.compile(r'(?:[^\s"]|"[^"]*")+')


def signer_lines(path):
    """The lines of an allowed_signers file (OpenSSH's format: ``principals [options] keytype base64``) as
    (principals, namespaces or None, key blob, cert_authority); a line the agent cannot read is left out (then no
    key of it is found here, and ssh-keygen, which decides, is never asked to accept it)."""
    out = []
    for raw in _read(path, True).decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tokens = _TOKEN.findall(line)
        for i in range(1, len(tokens) - 1):
            blob = _b64(tokens[i + 1])
            kind, _ = _first_string(blob)
            if kind is not None and kind.decode("ascii", "replace") == tokens[i]:
                break
        else:
            continue
        options = ",".join(tokens[1:i])
        names = re.search(r'(?:^|,)namespaces="([^"]*)"', options, re.IGNORECASE)
        out.append(([p.strip() for p in tokens[0].strip('"').split(",") if p.strip()],
                    [n.strip() for n in names.group(1).split(",")] if names else None, blob,
                    bool(re.search(r"(?:^|,)cert-authority(?:,|$)", options, re.IGNORECASE))))
    return out


def _names_of(lines, blob, namespace=None, literal=True):
    """The principals ``blob`` is listed under (for ``namespace``, when given: its lines with no namespaces option
    or one that names it), literal names only unless ``literal`` is False."""
    names = []
    for principals, namespaces, key, ca in lines:
        if key != blob or ca or (namespace and namespaces is not None and namespace not in namespaces):
            continue
        names.extend(p for p in principals if not literal or not any(c in p for c in "*?!"))
    return names


def same_person(a, b):
    """Two principals name the same person by the controller's rule (trust/requester.py same_person):
    ``alice`` == ``alice@vendor`` == ``alice@customer``, case-insensitive."""
    a, b = a.lower(), b.lower()
    return a == b or a.split("@")[0] == b.split("@")[0]


def _people(approvals):
    """The distinct people among approvals given as ({key fingerprint}, names, [approver]): two are one person when
    they share a key, or a name of one and a name of the other are ``same_person`` (every literal principal of the
    key counts, not only the name the approval is signed as)."""
    groups = []
    for keys, names, approvers in approvals:
        mine = (set(keys), set(names), list(approvers))
        rest = []
        for g in groups:
            if mine[0] & g[0] or any(same_person(a, b) for a in mine[1] for b in g[1]):
                mine[0].update(g[0])
                mine[1].update(g[1])
                mine[2].extend(g[2])
            else:
                rest.append(g)
        groups = rest + [mine]
    return groups


# -- the evidence -----------------------------------------------------------------------------------------

def _statement(text, where):
    lines = text.split("\n")
    if len(lines) != len(_FIELDS) + 2 or lines[0] != "upgrader approval 1" or lines[-1] != "":
        raise _trust_error("%s is not an upgrader approval statement" % where, ALLOWED_PATH())
    values = {}
    for key, line in zip(_FIELDS, lines[1:-1]):
        if not line.startswith(key + ": "):
            raise _trust_error("%s: expected the line '%s: ...'" % (where, key), ALLOWED_PATH())
        values[key] = line[len(key) + 2:]
    return values


def ALLOWED_PATH():  # noqa: N802 - a constant's spelling, computed
    return os.path.join(TRUST_DIR, ALLOWED)


def _when(text):
    try:
        return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None


def _levels(version):
    """The four levels of a vendor version as text (V prefix and build tag dropped, padded with 0)."""
    text = str(version or "").strip()
    if text[:1] in ("V", "v"):
        text = text[1:]
    parts = text.split(".")
    last = re.match(r"[0-9A-Za-z]+?(?=[_-]|$)", parts[-1] or "")
    parts[-1] = last.group(0) if last else parts[-1]
    parts = [p.lstrip("0") or "0" if p.isdigit() else p.upper() for p in parts]
    return (parts + ["0", "0", "0", "0"])[:4]


def free_levels_only(current, target):
    """None when ``current`` -> ``target`` keeps levels 1 and 2 and moves levels 3-4 forward (the shipped
    default policy's free_levels: 3, 4); else why not. Stdlib-only twin of version_policy's rule."""
    a, b = _levels(current), _levels(target)
    if a[:2] != b[:2]:
        changed = 1 if a[0] != b[0] else 2
        return "%s -> %s changes level %d; only levels 3 and 4 are free" % (current, target, changed)

    x3, y3 = a[2], b[2]
    if x3.isdigit() != y3.isdigit() or (not x3.isdigit() and x3 != y3):
        return "%s -> %s changes the product line (level 3)" % (current, target)
    if x3.isdigit() and int(y3) < int(x3):
        return "%s -> %s is a downgrade (level 3 goes back)" % (current, target)
    if not (a[3].isdigit() and b[3].isdigit()):
        return "%s -> %s: this host cannot order level 4 (%s, %s): only numbers are free" % (current, target, a[3],
                                                                                              b[3])
    if (int(y3) if y3.isdigit() else 0) == (int(x3) if x3.isdigit() else 0) and int(b[3]) < int(a[3]):
        return "%s -> %s is a downgrade (level 4 goes back)" % (current, target)
    return None


def check(req, package_sha256=None):
    """Decide on this host's own trust root whether the run may go on here (see the module's text). Returns
    None (no root: the controller decides) or a summary of what was accepted; raises AgentError otherwise."""
    root = load_root()
    if root is None:
        return None
    ev = req.get("host_trust")
    if not isinstance(ev, dict) or not isinstance(ev.get("plan"), str):
        raise AgentError("this host has its own trust root (%s), but the controller sent no evidence (plan, "
                         "approvals, catalog) for it to check: upgrade the controller, or remove the host trust root "
                         "if the controller's trust roots are to decide" % TRUST_DIR, "host_trust", file=TRUST_DIR)
    tmp = tempfile.mkdtemp(prefix="upgrader-trust-")
    try:
        return _check(req, ev, root, package_sha256, tmp)
    finally:
        drop_tmp(tmp)


def drop_tmp(tmp):
    """Remove the check's own temporary directory from descriptors: nothing in it is followed, and a mount point
    found in it (a file system mounted there meanwhile) is left as it is with everything below it, never emptied."""
    try:
        remove_tree(tmp)
    except (OSError, AgentError):
        pass  # what is left is the agent's own 0700 directory, or a mount it must not touch


def _policy_error(message, what):
    return AgentError("host trust root %s: %s" % (what, message), "host_policy", file=what)


def _check(req, ev, root, package_sha256, tmp):
    allowed, vendors = root["allowed"], root["vendors"]
    plan_bytes = ev["plan"].encode("utf-8")
    digest = hashlib.sha256(plan_bytes).hexdigest()
    try:
        plan = json.loads(ev["plan"])
    except ValueError:
        raise _trust_error("the plan the controller sent is not JSON", TRUST_DIR)
    # who asked: the requester's key signed the plan's digest (namespace upgrader-plan)
    requester_key = (plan.get("requester") or {}).get("key")
    if not requester_key or not isinstance(ev.get("plan_signature"), str):
        raise _policy_error("the plan is not signed by its requester; this host accepts only signed plans (its "
                            "approvers must differ from the requester's key): make the plan with 'upgrader plan "
                            "--key KEY' and have it approved again", allowed)
    blob = signature_key(ev["plan_signature"])
    if blob is None or _fingerprint(blob) != requester_key:
        raise _trust_error("the requester's signature of the plan does not verify (it names key %s): the plan was "
                           "altered; make and approve it again" % requester_key, allowed)
    # the requester is someone this host knows: their key is listed in allowed_signers for upgrader-plan (a line
    # without a namespaces option, or one naming it), like the controller's allowed_signers lists requesters;
    # a throwaway key of an engineer the host trusts is nobody here
    lines = signer_lines(allowed)
    listed = _names_of(lines, blob, PLAN_NS, literal=False)
    if not listed:
        raise _trust_error("the plan is signed by key %s, which this host's allowed_signers does not list for "
                           "%s: the host cannot tell whose plan it is; the requester signs plans with their key "
                           "listed there (have root add it with namespaces=\"%s\"), then the plan is made and "
                           "approved again" % (requester_key, PLAN_NS, PLAN_NS), allowed)
    why = ["no principal"]
    for principal in listed:
        fp, why = _verify(allowed, principal, PLAN_NS, digest.encode("ascii"), ev["plan_signature"], tmp)
        if fp is not None:
            break
    else:
        raise _trust_error("the requester's signature of the plan (key %s) does not verify under this host's "
                           "allowed_signers (%s): make the plan again with a key listed there"
                           % (requester_key, "; ".join(why)), allowed)
    requester_names = _names_of(lines, blob)
    if not _names_of(lines, blob, PLAN_NS):  # only a pattern (*@vendor) lists the key: nobody in particular
        raise _trust_error("the plan is signed by key %s, which this host's allowed_signers lists for %s only "
                           "through a pattern principal (%s): a pattern is never a plan's requester identity (the "
                           "self-approval rule could not tell the requester from an approver); have root list the "
                           "requester's key under a literal name, then make and approve the plan again"
                           % (requester_key, PLAN_NS, ", ".join(listed)), allowed)
    # the approvals: the host's engineers, of these very plan bytes, in time, enough distinct keys, none the
    # requester's
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    keys = {}
    people = []
    for i, item in enumerate(ev.get("approvals") or []):
        text, armored = item.get("text"), item.get("signature")
        where = "approval %d" % (i + 1)
        if not isinstance(text, str) or not isinstance(armored, str):
            raise _trust_error("%s is incomplete (statement or signature missing)" % where, allowed)
        st = _statement(text, where)
        approver = st["approver"]
        where = "the approval by %s" % approver
        if any(c in approver for c in "*?!,") or not approver:
            raise _trust_error("%s names a pattern, not one engineer" % where, allowed)
        fp, why = _verify(allowed, approver, APPROVAL_NS, text.encode("utf-8"), armored, tmp)
        if fp is None:
            raise _trust_error("%s does not verify under this host's allowed_signers as %s (%s): only an engineer "
                               "listed there may approve upgrades of this host; ask one of them to approve the plan, "
                               "or have root add the engineer's key to %s" % (where, approver, "; ".join(why),
                                                                              allowed), allowed)
        approver_blob = signature_key(armored)
        if approver not in _names_of(lines, approver_blob, APPROVAL_NS):
            raise _trust_error("%s matches its key only through a pattern: an approver must be a literal principal "
                               "of their key's line" % where, allowed)
        if st["plan"] != digest:
            raise _trust_error("%s approves plan %s..., but the plan sent to this host is %s...: the plan changed "
                               "after it was approved; have the new plan approved" % (where, st["plan"][:16],
                                                                                      digest[:16]), allowed)
        expires = _when(st["expires"])
        if expires is None or now >= expires:
            raise _trust_error("%s expired at %s by this host's clock: ask for a new approval"
                               % (where, st["expires"]), allowed)
        if fp == requester_key:
            raise _policy_error("%s is signed by the requester's own key %s: another engineer must approve it "
                                "with their own key (segregation of duties)" % (where, fp), allowed)
        mine = [approver] + _names_of(lines, approver_blob)
        same = [(a, r) for a in mine for r in requester_names if same_person(a, r)]
        if same:
            raise _policy_error("%s: %s and the requester %s (key %s, who signed the plan) are the same person: "
                                "another engineer must approve it with their own key (segregation of duties)"
                                % (where, same[0][0], same[0][1], requester_key), allowed)
        keys[fp] = approver
        people.append(({fp}, set(mine), [approver]))
    groups = _people(people)
    if len(groups) < root["required"]:
        same = "; ".join((" and ".join(sorted(set(g[2]))) if len(set(g[2])) > 1 else "the %d keys of %s"
                          % (len(g[0]), g[2][0])) + " are one person (the same key, or names with the same local "
                         "part)" for g in groups if len(g[0]) > 1 or len(set(g[2])) > 1)
        raise _policy_error("this host requires approvals by %d different keys listed in %s, of %d different "
                            "people; got %d (%s)%s"
                            % (root["required"], allowed, root["required"], len(groups),
                               ", ".join(sorted(min(g[2]) for g in groups)) or "none", (": " + same) if same else ""),
                            os.path.join(TRUST_DIR, CONFIG) if root["required"] > 1 else allowed)
    # the catalog: signed by a vendor this host trusts, listing the package
    catalog = ev.get("catalog") or {}
    try:
        catalog_bytes = base64.b64decode(str(catalog.get("content", "")).encode("ascii"), validate=True)
    except ValueError:
        raise _trust_error("the catalog the controller sent is damaged", vendors)
    armored = catalog.get("signature")
    if not isinstance(armored, str) or not catalog_bytes:
        raise _trust_error("no signed catalog was sent: this host installs only packages of a catalog signed by a "
                           "key in %s" % vendors, vendors)
    signer = None
    for principal in _names_of(signer_lines(vendors), signature_key(armored), CATALOG_NS, literal=False):
        fp, _ = _verify(vendors, principal, CATALOG_NS, catalog_bytes, armored, tmp)
        if fp is not None:
            signer = (principal, fp)
            break
    if signer is None:
        raise _trust_error("the catalog is not signed by a vendor key this host trusts (%s): use the vendor's "
                           "catalog, or have root add the vendor's key there" % vendors, vendors)
    host = _plan_host(plan, req)
    _check_identity(host, req)
    # the plan's product is the product installed here (its ledger, root's statement, or its files), never only the
    # plan's word: another product's package is no upgrade of this install (product.py)
    from .product import check_product
    from .state import Paths as _Paths

    _, product_from = check_product(_Paths(req), host.get("product"), root)
    package = host.get("package") or {}
    sha = package_sha256 or package.get("sha256")
    if package.get("sha256") != sha:
        raise _trust_error("the package given (sha256 %s) is not the plan's (%s)" % (sha, package.get("sha256")),
                           vendors)
    # the entry of the plan's product and target in the signed bytes lists this very package (the install's
    # version is read back against the target): a digest the vendor signed for another product or version is not it
    text = catalog_bytes.decode("utf-8", "replace")
    want = (str(host.get("product") or ""), str(host.get("target") or ""), sha)
    entries = catalog_entries(text)
    if want not in entries:
        listed = ["%s %s" % (p, v) for p, v, d in entries if d == sha]
        raise _trust_error("the catalog signed by %s (%s) has no entry for %s %s with the package sha256 %s%s: "
                           "refused, nothing changed; make the plan from the vendor's catalog entry for this version"
                           % (signer[0], signer[1], want[0], want[1], sha,
                              " (it lists that package as %s)" % ", ".join(listed) if listed else
                              " (that package is not listed)" if sha not in _CATALOG_SHA.findall(text) else
                              " (that digest appears only outside an entry this host can read: the catalog must be "
                              "the one 'upgrader catalog build' writes)"), vendors)
    signed = [e for e in catalog_entry_list(text) if (e.get("product"), e.get("version"), e.get("sha256")) == want]
    if len(signed) != 1:
        raise _trust_error("the catalog signed by %s lists %s %s with the package sha256 %s %d times: refused, nothing "
                           "changed; ask the vendor for a catalog made by 'upgrader catalog build'"
                           % (signer[0], want[0], want[1], sha, len(signed)), vendors)
    signed = signed[0]
    # the catalog's serial, read from the very bytes the vendor signed (never the controller's word): a catalog
    # older than one this host was already upgraded from is refused, as the lock refuses the controller's claim
    from .ledger import check_ledger_version, ledger_serials
    from .state import Paths

    serials = _CATALOG_SERIAL.findall(catalog_bytes.decode("utf-8", "replace"))
    if len(serials) != 1:
        raise _trust_error("the catalog signed by %s has %s top-level 'serial: N' line: this host reads the serial "
                           "from the signed bytes; ask the vendor for a catalog made by 'upgrader catalog build'"
                           % (signer[0], "no" if not serials else "more than one"), vendors)
    serial = int(serials[0])
    product = str(host.get("product") or "")
    seen = ledger_serials(Paths(req)).get(product, 0)
    if int(seen) > serial:
        raise AgentError("host trust root %s: the catalog signed by %s has serial %d, older than serial %s this host "
                         "was already upgraded from: refusing a rollback to an old catalog; get the current catalog "
                         "from the vendor" % (vendors, signer[0], serial, seen), "catalog_rollback", file=vendors)
    # the plan's entry for this host: this install, the ledger's version, a free (level 3-4) upgrade

    if req.get("current_version") is not None and str(req["current_version"]) != str(host.get("current")):
        raise _policy_error("the plan says %s runs %s, the run asks to install over %s"
                            % (host.get("name"), host.get("current"), req["current_version"]), allowed)
    check_ledger_version(Paths(req), host.get("current"))
    running, read_from, raw = host_version(req, host, root)
    why = free_levels_only(running, host.get("target"))
    if why:
        raise _policy_error("%s: this host accepts only free maintenance upgrades (levels 3 and 4); refused before "
                            "stop, nothing changed" % why, TRUST_DIR)
    _entry_rules(signed, package, root, signer, running, read_from, vendors)
    verified = sorted(hashlib.sha256(item["text"].encode("utf-8")).hexdigest() for item in ev.get("approvals") or [])
    return {"root": TRUST_DIR, "plan": digest, "approvers": sorted(keys.values()), "approval_keys": sorted(keys),
            "approvals": verified, "entry": host, "host": host.get("name"), "identity": host.get("identity"),
            "catalog_signer": signer[0], "catalog_key": signer[1], "catalog_serial": serial, "product": product,
            "product_from": product_from,
            "package": sha, "catalog_entry": {k: signed.get(k) for k in ("kind", "requires", "changes", "limits")},
            "current": host.get("current"), "target": host.get("target"), "read": read_from, "read_line": raw}


def levels(version):
    """How many numeric levels a version has (V7.0.4.9_M3 has 4), 0 for what is not a version."""
    text = str(version or "").strip().lstrip("Vv").split("_")[0]
    parts = text.split(".")
    return len(parts) if text and all(p.isdigit() for p in parts) else 0


def host_version(req, host, root):
    """(the version this host itself says runs, where it was read): the version its ledger recorded for the last
    install (installed.json), else, on a first upgrade, the plan entry's version FILE source read here (the file,
    or the archive member, beneath the install) — never a command (whoever wrote the playbook would decide what it
    prints) unless root lists that very (absolute) command in host-trust.json ``version_commands``, and never in an
    install dir of another account. Read the host's way (versions.host_read_version): the first word, never the
    playbook's ``pattern`` unless root lists it in ``version_patterns``, a whole version with the target's number of
    levels. It must be the plan's current version: the version rule and a patch's ``requires`` are decided on it.
    Returns (version, where, the raw first line read or None for the ledger)."""
    from .ledger import ledger_fds
    from .state import Paths, read_json_at
    from .versions import host_read_version, install_owner_problem, same_version

    paths = Paths(req)
    with ledger_fds(paths) as fds:
        # only the ledger beside the install (the default state dir, which no plan or inventory can move): a state
        # dir the request names may be another install's, whose last version says nothing about this one
        for d, fd in [(d, fd) for d, fd in fds if os.path.abspath(d) == os.path.abspath(paths.default_state)]:
            recorded = (read_json_at(fd, "installed.json", d) or {}).get("version")
            if recorded and levels(recorded) != levels(host.get("current")):  # 7.0 is not the 7.0.0.0 recorded
                raise AgentError("host trust root %s: %s runs %s by its ledger %s, but the plan says it runs %s: "
                                 "refusing before stop, nothing changed; make the plan again"
                                 % (TRUST_DIR, host.get("name"), recorded, os.path.join(d, "installed.json"),
                                    host.get("current")), "host_trust", recorded=recorded, planned=host.get("current"))
            if recorded:
                return str(recorded), os.path.join(d, "installed.json"), None
    source = ((host.get("playbook") or {}).get("spec") or {}).get("version") or {}
    if not source.get("file") and source.get("command") not in (root.get("version_commands") or []):
        raise _policy_error("%s has no ledger of an earlier upgrade (installed.json) and the plan reads the installed "
                            "version with a command: on a first upgrade this host reads the version it runs only from "
                            "a file of the install (the playbook's version: file:); refused before stop, nothing "
                            "changed" % host.get("name"), TRUST_DIR)
    if not source.get("file"):
        problem = install_owner_problem(paths)
        if problem:
            raise _trust_error("%s: refused before stop, nothing changed" % problem, TRUST_DIR)
    found, raw, error = host_read_version(paths, source, root, host.get("target"))
    where = ("the version file %s" % source["file"] + (" (%s)" % source["member"] if source.get("member") else "")
             if source.get("file") else "the version command root allows in %s" % CONFIG)
    if found is None:
        raise _trust_error("%s cannot read the version it runs from %s (%s): refused before stop, nothing changed"
                           % (host.get("name"), where, error), TRUST_DIR)
    if not same_version(found, host.get("current")):
        raise AgentError("host trust root %s: %s runs %s by %s, but the plan says it runs %s: refusing before stop, "
                         "nothing changed; make the plan again" % (TRUST_DIR, host.get("name"), found, where,
                                                                   host.get("current")),
                         "host_trust", recorded=found, planned=host.get("current"), read_line=raw)
    return found, where, raw


def _entry_rules(signed, package, root, signer, running, read_from, vendors):
    """The rest of "free", from the vendor-signed catalog entry (never the controller's policy): no declared change
    this host refuses (REFUSED_CHANGES and host-trust.json's refused_changes; a change of a kind it does not know is
    refused too), the plan's package kind, and a patch's ``requires`` range holding the version this host runs."""
    what = "the vendor's signed catalog entry %s %s (sha256 %s..., signed by %s)" % (
        signed.get("product"), signed.get("version"), str(signed.get("sha256"))[:12], signer[0])
    changes = signed.get("changes")
    if changes is None:
        raise _trust_error("%s has no 'changes:' list this host can read: refused, nothing changed; ask the vendor "
                           "for a catalog made by 'upgrader catalog build'" % what, vendors)
    refused = set(REFUSED_CHANGES) | set(root.get("refused_changes") or [])
    bad = [c for c in changes if c in refused or c not in REFUSED_CHANGES]
    if bad:
        raise _policy_error("%s declares the change %s: an upgrade that changes external interfaces, the configuration "
                            "format or monitoring/management is never free, and this host refuses it whatever the "
                            "controller's policy says; refused before stop, nothing changed"
                            % (what, ", ".join(bad)), TRUST_DIR)
    kind = signed.get("kind")
    if kind not in ("full", "patch") or kind != package.get("kind"):
        raise _trust_error("%s is of kind %s, the plan's package says %s: refused, nothing changed"
                           % (what, kind, package.get("kind")), vendors)
    if kind == "patch" and signed.get("requires") is not None:
        why = requires_problem(running, signed["requires"])
        if why:
            raise _policy_error("%s is a patch for %s; this host runs %s (%s): %s; refused before stop, nothing "
                                "changed" % (what, signed["requires"], running, read_from, why), TRUST_DIR)


def signed_limits(req, verdict):
    """At prepare, before the package is copied: the extraction limits are the vendor's signed catalog entry's
    (``limits``: members, unpacked_bytes), never the controller's word; a request that names others, or a signed entry
    without limits this host can read, is refused (AgentError, kind host_trust). Returns the signed limits."""
    limits = (verdict.get("catalog_entry") or {}).get("limits")
    what = "%s %s" % (verdict.get("product"), verdict.get("target"))
    if not isinstance(limits, dict) or sorted(limits) != sorted(_LIMIT_KEYS):
        raise _trust_error("the vendor's signed catalog entry for %s has no extraction limits this host can read "
                           "(limits: members, unpacked_bytes, as 'upgrader catalog build' writes them): refused before "
                           "the package was copied, nothing changed" % what, TRUST_DIR)
    asked = req.get("limits")
    if not isinstance(asked, dict) or asked != limits:
        raise _trust_error("the prepare request of run %s extracts %s with the limits %r, the vendor's signed catalog "
                           "entry says %r: refused before the package was copied, nothing changed"
                           % (req.get("run_id"), what, asked, limits), TRUST_DIR)
    return dict(limits)


def check_package_meta(archive, verdict, req=None):
    """At prepare, with the copy of the package this host hashed: its own package.yaml declares what the vendor's
    signed catalog entry says (changes, kind, requires), and the request's remove list is the package's own
    (``remove``, a patch's files to delete, as the vendor signed the package); a package that declares otherwise, or
    a request that removes other files, is refused before anything is extracted (AgentError, kind host_trust)."""
    import tarfile

    entry = verdict.get("catalog_entry") or {}
    text = None
    what = "the package %s... (%s %s)" % (str(verdict.get("package"))[:12], verdict.get("product"),
                                         verdict.get("target"))
    try:
        # AgentError for an oversized pax/long-name header, or a package.yaml after the first members: not caught
        with open_package(archive) as tar:
            member = meta_member(tar, what)
            if member is not None and member.isreg() and member.size <= 1 << 20:
                text = tar.extractfile(member).read().decode("utf-8", "replace")
    except (tarfile.TarError, OSError, EOFError):
        text = None
    meta = block_mapping(text.splitlines(), "") if text is not None else None
    if meta is None or meta.get("changes") is None:
        raise _trust_error("%s has no package.yaml with a 'changes:' list this host can read: refused before it was "
                           "extracted, nothing changed" % what, TRUST_DIR)
    def differs(k):
        if k == "changes":
            return sorted(meta.get(k) or []) != sorted(entry.get(k) or [])
        return meta.get(k) != entry.get(k)

    wrong = ["%s (package.yaml: %r, the signed catalog entry: %r)" % (k, meta.get(k), entry.get(k))
             for k in ("changes", "kind", "requires") if differs(k)]
    if req is not None and req.get("remove", []) != (meta.get("remove", []) if "remove" in meta else []):
        wrong.append("remove (the request: %r, the signed package's package.yaml: %r)"
                     % (req.get("remove", []), meta.get("remove", [])))
    if wrong:
        raise _trust_error("%s declares otherwise than the vendor's signed catalog entry (or the request removes "
                           "other files than the signed package's own list): %s differ; refused before it was "
                           "extracted, nothing changed" % (what, "; ".join(wrong)), TRUST_DIR)


_CONSTRAINT = re.compile(r"^(>=|<=|==|!=|>|<)[ \t]*([^\s<>=!]\S*)$")


def _order(version):
    levels = _levels(version)
    return tuple(int(p) for p in levels) if all(p.isdigit() for p in levels) else None


def requires_problem(version, requires):
    """None when ``version`` is within the patch range ``requires`` (``>=7.0.4.1, <7.0.4.3``: every constraint
    holds); else why not. A bound this host cannot order against the version (a letter line) is refused."""
    clauses = [c.strip() for c in str(requires).split(",")]
    if not clauses or not all(clauses):
        return "the range %r cannot be read" % requires
    have = _order(version)
    for clause in clauses:
        m = _CONSTRAINT.match(clause)
        if m is None:
            return "the range %r cannot be read" % requires
        bound = _order(m.group(2))
        if have is None or bound is None:
            return "this host cannot order %s against %s" % (version, m.group(2))
        op = m.group(1)
        holds = {">=": have >= bound, ">": have > bound, "<=": have <= bound, "<": have < bound,
                 "==": have == bound, "!=": have != bound}[op]
        if not holds:
            return "%s is outside %s (%s fails)" % (version, requires, clause)
    return None


def _plan_host(plan, req):
    name = req.get("host_trust", {}).get("host")
    install = os.path.normpath(str(req.get("install_dir") or ""))
    for h in plan.get("hosts") or []:
        if h.get("name") == name and os.path.normpath(str(h.get("install_dir") or "")) == install:
            return h
    raise _policy_error("the plan has no entry for host %r with the install dir %s: refused" % (name, install),
                        TRUST_DIR)


def _check_identity(host, req):
    """The plan entry was made for this machine and this install (the identity planner.py recorded from this
    agent's facts: machine id, the install dir's st_dev/st_ino). Checked before the install is swapped (host_trust
    and prepare come before it), so the install's identity is still the one planned."""
    from .identity import install_identity, install_lineage, machine_identity
    from .state import Paths

    ident = host.get("identity")
    if not isinstance(ident, dict) or not ident.get("machine") or not isinstance(ident.get("install"), list):
        raise _trust_error("the plan's entry for %s does not record which machine and install it was made for: "
                           "this host accepts only plans made for it; make the plan again" % host.get("name"),
                           TRUST_DIR)
    mine = machine_identity().get("machine")
    if ident["machine"] != mine:
        raise _trust_error("this plan was approved for machine %s, this is machine %s: refused, nothing changed; "
                           "make and approve a plan for this machine" % (ident["machine"], mine), TRUST_DIR)
    paths = Paths(req)
    install = paths.install
    here = install_identity(install)
    earlier = install_lineage(paths, here) if here is not None else []  # trees this agent itself replaced there
    if here is None or (list(here) != list(ident["install"]) and list(ident["install"]) not in earlier):
        raise _trust_error("this plan was approved for the install %s with (st_dev, st_ino) %s, the install there "
                           "now is %s: refused, nothing changed; make and approve a plan for this install"
                           % (install, tuple(ident["install"]), tuple(here) if here else "missing"), TRUST_DIR)


def op_host_trust(req):
    """Read-only: the verdict of this host's trust root on the evidence (before the lock)."""
    verdict = check(req, req.get("sha256"))
    return {"host_trust": {k: v for k, v in verdict.items() if k != "entry"} if verdict else None}


# -- the accepted entry binds every later step of the run ------------------------------------------------

ENTRY = "host-trust-entry.json"


def keep_entry(paths, verdict):
    """At prepare: keep the plan entry this host's trust root accepted (from the verified plan bytes) and the
    digests of the approvals it verified in the run's own directory under the agent's state dir; every later step
    of the run is checked against it (``bound``)."""
    from .files import write_json_atomic

    write_json_atomic(paths.run(ENTRY), {"plan": verdict["plan"], "entry": verdict["entry"],
                                         "approvals": verdict["approvals"],
                                         "product_from": verdict.get("product_from")})


def spend_entry(paths, outcome):
    """At finish: the run's kept entry is marked spent with the run's outcome. A spent entry admits only what the
    run's own recovery needs (``admit``): after a commit, the rollback of that same run (lock, stop, rollback, start,
    hook, observe, finish; never prepare or install again); after any other end (rolled back, unchanged), no step
    that stops the service or changes the install (only lock, start, hook, observe and finish: a rollback asked again
    finds nothing to undo and makes sure the old version runs)."""
    from .files import read_json, write_json_atomic

    data = read_json(paths.run(ENTRY))
    if not isinstance(data, dict) or not isinstance(data.get("entry"), dict):
        return
    # "committed" only on the host's own account too (this run's tree was not rolled back here) and only once: an
    # entry spent by another end never becomes a committed one again on the controller's word at a later finish
    rolled = (read_json(paths.run("state.json")) or {}).get("rolled_back")
    ended = str(outcome or "finished")
    if ended == "committed" and (rolled or data.get("finished") not in (None, "committed")):
        ended = "finished"
    write_json_atomic(paths.run(ENTRY), dict(data, finished=ended, finished_at=data.get("finished_at", time.time())))


#: what a spent entry (the run finished) still admits, by the outcome it finished with
SPENT_ADMITS = {"committed": ("lock", "stop", "rollback", "start", "hook", "finish"),
                None: ("lock", "start", "hook", "finish")}
#: what a committed entry no longer admits once root's ``rollback_hours`` have passed since its finish
LATE_ROLLBACK = ("lock", "stop", "rollback")
#: what an unfinished run's entry no longer admits once rollback_hours (and the run's own hour) have passed since its
#: install: its lock stays admitted, so that a resume can still record the end of a run that was healthy
UNFINISHED_LATE = ("stop", "rollback")
#: hours an unfinished run has, beyond rollback_hours, for its own observe and automatic rollback
RUN_HOURS = 1


def refuse_late_rollback(paths, run, op, kept, root):
    """A committed run's rollback (its lock, stop, rollback) only within root's ``rollback_hours`` of its finish
    as this host recorded it (``finished_at``, by the agent's own clock; an entry spent before that was recorded:
    the entry file's time). Later, any controller with a copy of the run's journal could downgrade the host with no
    approval: a change nobody approved. Refused (exit 4) saying the limit and what a person does instead."""
    if not kept.get("finished"):
        return refuse_late_unfinished(paths, run, op, root)
    if kept.get("finished") != "committed" or op not in LATE_ROLLBACK:
        return
    at = kept.get("finished_at")
    if isinstance(at, bool) or not isinstance(at, (int, float)):
        at = os.stat(paths.run(ENTRY)).st_mtime
    hours = (time.time() - at) / 3600.0
    if hours <= root["rollback_hours"]:
        return
    raise _trust_error("run %s committed here %.1f hours ago, longer than rollback_hours (%s) in %s allows: this "
                       "host no longer admits its rollback (%s); nothing was changed. A person restores the old "
                       "version by hand from the run's backup (%s), or root raises rollback_hours there"
                       % (run, hours, root["rollback_hours"], os.path.join(TRUST_DIR, CONFIG), op,
                          paths.run("backup")), os.path.join(TRUST_DIR, CONFIG))


def refuse_late_unfinished(paths, run, op, root):
    """An unfinished run's stop and rollback (its entry never spent: the controller died after the install, or its
    finish never reached the host) only within root's ``rollback_hours``, plus RUN_HOURS for the run's own observe and
    automatic rollback, of the install as this host recorded it (state.json ``installed_at``, the agent's own
    clock). Otherwise any controller holding the run's journal could downgrade the host days later with no approval.
    A run not installed yet has nothing to roll back: its steps are admitted as before."""
    from .state import run_state

    at = run_state(paths).get("installed_at")
    if op not in UNFINISHED_LATE or isinstance(at, bool) or not isinstance(at, (int, float)):
        return
    hours = (time.time() - at) / 3600.0
    if hours <= root["rollback_hours"] + RUN_HOURS:
        return
    raise _trust_error("run %s was installed here %.1f hours ago and never finished, longer than rollback_hours (%s) "
                       "in %s allows (plus %s hour for the run itself): this host no longer admits its rollback (%s); "
                       "nothing was changed. A person restores the old version by hand from the run's backup (%s), or "
                       "root raises rollback_hours there"
                       % (run, hours, root["rollback_hours"], os.path.join(TRUST_DIR, CONFIG), RUN_HOURS, op,
                          paths.run("backup")), os.path.join(TRUST_DIR, CONFIG))


def accepted(paths):
    """What keep_entry kept for this run (None when nothing was accepted here), and only for the install it was
    accepted for: a request naming another install (with this run's id and this state dir) finds nothing, so no
    step of another install's run is admitted for it (its relative stop/start would act on that install)."""
    from .files import read_json
    from .identity import install_identity, install_lineage

    data = read_json(paths.run(ENTRY))
    if not isinstance(data, dict) or not isinstance(data.get("entry"), dict):
        return None
    entry = data["entry"]
    if os.path.abspath(str(entry.get("install_dir") or "")) != os.path.abspath(paths.install):
        return None
    ident = entry.get("identity")
    if isinstance(ident, dict) and isinstance(ident.get("install"), list):
        here = install_identity(paths.install)  # None while a rollback has the install moved aside
        if here is not None and list(here) != list(ident["install"]) \
                and list(ident["install"]) not in install_lineage(paths, here):
            return None
    return data


def admit(req):
    """With a host trust root, before the agent takes anything for a run (the host's lock, the run's action lock
    ``runs/RUN/.op.lock``): the run must hold evidence this host accepted. ``lock``: a run whose plan entry was
    kept here at prepare (its resume or rollback), or a request that carries the plan, approvals and catalog
    ``check`` accepts now; ``prepare`` and ``finish``: the host lock held by this run (taken on accepted evidence;
    prepare checks it again in full, finish of a run with no kept entry records nothing but releases it); every other mutating step: the run's kept entry (``bound`` then checks the step against it).
    A modified controller therefore cannot leave the host locked, nor its state dir, for a run nobody the host
    trusts approved. No root: nothing to admit (the controller decides)."""
    op = req.get("op")
    root = load_root()
    if root is None:
        return
    from .files import read_json
    from .state import Paths

    run = req.get("run_id")
    if not run or not req.get("install_dir"):
        raise _trust_error("this host has its own trust root: refusing %s without a run and an install (nothing "
                           "was changed)" % op, TRUST_DIR)
    paths = Paths(req)
    kept = accepted(paths)
    if kept is not None and kept.get("finished"):
        admits = SPENT_ADMITS.get(kept["finished"], SPENT_ADMITS[None])
        if op not in admits:
            raise _trust_error("this host has its own trust root, and run %s already finished here (%s): its "
                               "accepted plan entry is spent and admits only the run's own rollback, not %s; "
                               "nothing was changed. Make and approve a new plan for another change"
                               % (run, kept["finished"], op), TRUST_DIR)
    if kept is not None:
        refuse_late_rollback(paths, run, op, kept, root)  # committed, or never finished: within rollback_hours
        if op != "lock":  # the step is the kept entry's own, checked before the run's action lock or step record
            bound(req, op, kept)
        return
    if op == "lock":
        try:
            check(req, req.get("sha256"))
        except AgentError as e:
            raise AgentError("this host has its own trust root: refusing the lock of run %s, whose plan and "
                             "approvals it does not accept (nothing was locked or changed): %s" % (run, e), e.kind,
                             **e.data)
        return
    holder = read_json(paths.lock) if os.path.isfile(paths.lock) else None
    if op in ("prepare", "finish") and isinstance(holder, dict) and holder.get("run") == run:
        return  # prepare checks the evidence again in full; finish of such a run records nothing (op_finish)
    raise _trust_error("this host has its own trust root, but run %s has no plan entry accepted here%s: refusing "
                       "%s (its commands were approved by no one this host trusts); nothing was changed. A run this "
                       "host refused has nothing to roll back; run an approved plan from the start"
                       % (run, "" if op not in ("prepare", "finish") else " and does not hold the host's lock", op),
                       TRUST_DIR)


def unapproved_commands(req):
    """Why a probe's command may not run for this request (None: it may). With a host trust root, a command probe
    is a command of whoever wrote the playbook: it runs only for a run this host accepted (its kept entry, or its
    lock, which a root grants only on accepted evidence), never for a plan being made (plan-time proof, anyone's
    playbook, before any approval): then only the agent's built-in read-only probes run (tcp, http, process, log
    place), and the command probes are proven at the run's preflight, under its lock. A root that exists but is
    refused (writable by others) runs no command either: the facts report that refusal."""
    try:
        if load_root() is None:
            return None
    except AgentError:
        pass
    from .files import read_json
    from .state import Paths

    run = req.get("run_id")
    if run and req.get("install_dir"):
        paths = Paths(req)
        if accepted(paths) is not None:
            return None
        holder = read_json(paths.lock) if os.path.isfile(paths.lock) else None
        if isinstance(holder, dict) and holder.get("run") == run:
            return None
    return ("not run: this host has its own trust root (%s); a command probe runs only for a run whose plan and "
            "approvals it accepted, and is proven at that run's preflight" % TRUST_DIR)


def _entry_command_probes(entry):
    """The command probes the plan entry names: its observe probes and its rollback_observe probes."""
    playbook = entry.get("playbook") or {}
    spec = playbook.get("spec") or {}
    out = []
    for probes in ((spec.get("observe") or {}).get("probes"), (playbook.get("rollback_observe") or {}).get("probes")):
        out.extend(p for p in probes or [] if isinstance(p, dict) and p.get("type") == "command")
    return out


def _probe_bytes(probe):
    return json.dumps(probe, sort_keys=True, ensure_ascii=False)


def lock_plan(req):
    """For the host's lock record (lock.op_lock): the digest of the plan bytes ``admit`` verified before it granted
    this lock (None with no root, no evidence, or a run whose kept entry admitted it: then that entry binds)."""
    from .state import Paths

    ev = req.get("host_trust")
    if not isinstance(ev, dict) or not isinstance(ev.get("plan"), str) or load_root() is None:
        return None
    if accepted(Paths(req)) is not None:
        return None
    return hashlib.sha256(ev["plan"].encode("utf-8")).hexdigest()


def bind_probes(req):
    """With a host trust root, before any probe of a ``prove`` request runs for a run it accepted: every command
    probe asked for is one the accepted plan entry names (its observe or rollback_observe probes, the whole probe,
    byte for byte). The entry is the run's kept entry (after prepare), else the one in the plan bytes whose digest
    the host recorded in its lock when it granted the lock on that verified evidence (the run's preflight). Any other
    command is refused (AgentError host_trust, exit 4) naming the probe; nothing was run. No root: nothing to bind."""
    from .files import read_json
    from .state import Paths

    wanted = [p for p in req.get("probes") or [] if isinstance(p, dict) and p.get("type") == "command"]
    if not wanted or load_root() is None:
        return
    run = req.get("run_id")
    paths = Paths(req)
    kept = accepted(paths)
    if kept is not None:
        entry, digest = kept["entry"], str(kept.get("plan"))
    else:
        holder = read_json(paths.lock) if os.path.isfile(paths.lock) else None
        digest = holder.get("host_trust_plan") if isinstance(holder, dict) and holder.get("run") == run else None
        ev = req.get("host_trust")
        text = ev.get("plan") if isinstance(ev, dict) else None
        if not digest or not isinstance(text, str) or hashlib.sha256(text.encode("utf-8")).hexdigest() != digest:
            raise _trust_error("this host has its own trust root: the command probe(s) %s of run %s come without the "
                               "plan it accepted when it granted the run's lock; refused before any probe ran, "
                               "nothing was run" % (", ".join(repr(p.get("name") or p.get("command")) for p in wanted),
                                                    run), TRUST_DIR)
        try:
            entry = _plan_host(json.loads(text), req)
        except ValueError:
            raise _trust_error("the plan sent with the probes of run %s is not JSON" % run, TRUST_DIR)
    allowed = set(_probe_bytes(p) for p in _entry_command_probes(entry))
    for p in wanted:
        if _probe_bytes(p) not in allowed:
            raise _trust_error("the command probe %r (%s) of run %s is not one the plan this host accepted names "
                               "(plan %s..., %s): refused before any probe ran, nothing was run. The host runs only the "
                               "probe commands of the approved plan, byte for byte"
                               % (p.get("name") or "command", p.get("command"), run, digest[:16], entry.get("name")),
                               TRUST_DIR)


#: facts and inspect with a host trust root, outside a run it accepted: a playbook's version command is not run
VERSION_COMMAND_REFUSED = "version source is a command; with a host trust root only file sources are read outside " \
                          "an accepted run"


def version_command_refused(req, source):
    """Why the version source ``source`` may not be run for this request (None: it may, or it is a file). With a
    host trust root a version ``command`` is a command of whoever wrote the playbook: read-only ops (facts, inspect,
    status, plan) run it only for a run this host accepted (its kept entry, or its lock: unapproved_commands), or
    when root lists that very command in host-trust.json ``version_commands``; a root that is refused runs none."""
    if not isinstance(source, dict) or source.get("file") or not source.get("command"):
        return None
    try:
        root = load_root()
    except AgentError as e:
        return "%s: the command was not run (%s)" % (VERSION_COMMAND_REFUSED, e)
    if root is None:
        return None
    from .state import Paths
    from .versions import install_owner_problem
    problem = install_owner_problem(Paths(req)) if req.get("install_dir") else None
    if problem:
        return "%s: %s" % (VERSION_COMMAND_REFUSED, problem)
    if source["command"] in (root.get("version_commands") or []) or unapproved_commands(req) is None:
        return None
    return ("%s: the command was not run (host trust root %s; root may allow this very command in %s "
            "\"version_commands\", or the playbook may read the version from a file)"
            % (VERSION_COMMAND_REFUSED, TRUST_DIR, os.path.join(TRUST_DIR, CONFIG)))


#: the hook phases of a playbook (core/playbook.py PHASE_HOOKS) and the phases of the run's own state on this host
#: (runs/RUN/state.json, written by prepare, install, rollback and finish) at which each may run
HOOK_STATES = {"before_stop": ("prepared",), "after_stop": ("prepared",), "after_install": ("installed",),
               "after_start": ("installed",), "after_commit": ("installed",), "after_rollback": ("rolled_back",)}


def bound(req, op, kept=None):
    """With a host trust root: refuse (AgentError, kind host_trust, exit 4) a request of ``op`` whose
    playbook-derived input is not the accepted plan entry's (``playbook.spec``, ``package``, current and target),
    before it acts. The controller is not trusted to send what was approved: another plan's evidence could have
    been accepted while its own steps are asked for. Nothing accepted at prepare and no root: nothing to bind (the
    controller decides)."""
    from .state import Paths

    if kept is None and req.get("run_id") is not None:  # a request of no run (a probe of the service) has none
        kept = accepted(Paths(req))
    if kept is None:  # nothing accepted here for this run (refused at preflight, another controller's run, a run
        # prepared before the root existed): with a root, no step of it runs at all — its stop, start, hook and
        # probes would be commands nobody the host trusts approved (a rollback of a run the host refused is one)
        if load_root() is not None:
            raise _trust_error("this host has its own trust root, but run %s has no plan entry accepted here at "
                               "prepare: refusing %s (its commands were approved by no one this host trusts); "
                               "nothing was changed. A run this host refused has nothing to roll back; run an "
                               "approved plan from the start" % (req.get("run_id"), op), TRUST_DIR)
        return
    entry = kept["entry"]
    spec = (entry.get("playbook") or {}).get("spec") or {}
    package = entry.get("package") or {}
    stop = spec.get("stop") or {}
    wrong = []

    def want(field, got, expected):
        if got != expected:
            wrong.append(field)

    env = req.get("env")
    if env is not None:
        want("env", (env.get("UPGRADER_HOST"), env.get("UPGRADER_CURRENT_VERSION"), env.get("UPGRADER_TARGET_VERSION")),
             (entry.get("name"), str(entry.get("current")), str(entry.get("target"))))
    if op == "prepare":
        want("package sha256", req.get("sha256"), package.get("sha256"))
        want("kind", req.get("kind"), package.get("kind"))
        want("remove", req.get("remove", []), package.get("remove", []))
        want("preserve", req.get("preserve"), spec.get("preserve"))
    elif op == "stop":
        want("stop", req.get("stop"), stop)
    elif op == "start":
        want("start", req.get("start"), spec.get("start"))
        want("pid_file", req.get("pid_file"), stop.get("pid_file"))
        want("ports", req.get("ports", []), stop.get("ports", []))
        want("process", req.get("process"), spec.get("process") or None)
    elif op == "hook":
        phase = req.get("phase")
        listed = (spec.get("hooks") or {}).get(phase) if isinstance(phase, str) else None
        if not any(h.get("command") == req.get("command") and h.get("timeout") == req.get("hook_timeout")
                   for h in listed or []):
            wrong.append("hook %r at phase %r (the plan's hooks at that phase: %s)"
                         % (req.get("command"), phase, ", ".join(repr(h.get("command")) for h in listed or [])
                            or "none"))
        else:  # and only where the run is at that phase by the host's own account of it (runs/RUN/state.json)
            from .state import run_state

            now = run_state(Paths(req)).get("phase")
            if now not in HOOK_STATES.get(phase, ()):
                wrong.append("hook %r at phase %r (this run is at %r here; %s hooks run only at %s)"
                             % (req.get("command"), phase, now, phase,
                                " or ".join(repr(x) for x in HOOK_STATES.get(phase, ()))))
    elif op == "install":
        want("preserve", req.get("preserve"), spec.get("preserve"))
        want("target_version", req.get("target_version"), entry.get("target"))
        want("version_source", req.get("version_source"), spec.get("version"))
    elif op == "observe":
        probes = (req.get("observe") or {}).get("probes")
        allowed = [(spec.get("observe") or {}).get("probes"),
                   ((entry.get("playbook") or {}).get("rollback_observe") or {}).get("probes")]
        if probes not in allowed:
            wrong.append("probes")
    if wrong:
        raise _trust_error("the %s request of run %s is not what the plan this host accepted says (plan %s..., "
                           "%s): %s differ; refused before it acted. The controller asked for steps of another plan "
                           "than the one approved here" % (op, req.get("run_id"), str(kept.get("plan"))[:16],
                                                           entry.get("name"), ", ".join(wrong)), TRUST_DIR)
