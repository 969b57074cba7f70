"""What the controller sends a host that keeps its own trust root (``hostagent/hosttrust.py``), so the host can
decide on its own: the plan's bytes exactly as an approval's statement digests them (its canonical JSON without
the requester's signature) and that signature, each approval's statement and armoured signature, the catalog's
bytes (the very bytes whose signature the controller checked and parsed) and the catalog's signature.

A host without a trust root ignores all of it; a host with one trusts none of it until its own keys verify it.

The run keeps what it sent in its run directory (``host-evidence.json``; the plan's bytes only as their sha256,
put back from the accepted plan) so that ``resume`` sends the very same evidence (the waiting hosts after a canary are checked by their trust roots like the first). It is only signed
material, and ``resume`` sends it only when it is the evidence of the run's own accepted plan and approvals
(``run_evidence``): another approved plan's evidence put in its place is refused (exit 4); a host with a trust root
also binds every later step to the plan entry it accepted (hostagent/hosttrust.py). ``rollback`` sends none: restoring the version
a host ran before needs no one's consent, on any host.
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

from ..core.plan import canonical_json
from .sshsig import BEGIN, END, MAGIC, VERSION, Signature, _string

if TYPE_CHECKING:
    from ..core.shapes import JSONObject
    from .approval import Approval
    from .catalog import Catalog

__all__ = ["host_evidence", "armor", "save_evidence", "load_evidence", "run_evidence", "EVIDENCE_FILE"]

EVIDENCE_FILE = "host-evidence.json"


def armor(signature: Signature) -> str:
    """The armoured text of a parsed signature (parse_armored accepts only canonical armour: the same text)."""
    body = (MAGIC + struct.pack(">I", VERSION) + _string(signature.public_key) + _string(signature.namespace.encode())
            + _string(b"") + _string(signature.hash_alg.encode()) + _string(signature.signature))
    b64 = base64.b64encode(body).decode()
    return "\n".join([BEGIN, *(b64[i:i + 70] for i in range(0, len(b64), 70)), END]) + "\n"


def host_evidence(plan_data: Mapping[str, object], approvals: Sequence[Approval], catalog: Catalog) -> JSONObject:
    from .catalog_trust import signature_path

    try:
        catalog_sig = signature_path(catalog).read_text(encoding="utf-8", errors="replace")
    except OSError:
        catalog_sig = ""
    signature = plan_data.get("signature")
    return {"plan": canonical_json({k: v for k, v in plan_data.items() if k != "signature"}).decode("utf-8"),
            "plan_signature": str(signature) if signature else None,
            "approvals": [{"text": a.text, "signature": armor(a.signature)} for a in approvals],
            "catalog": {"content": base64.b64encode(catalog.content).decode("ascii"), "signature": catalog_sig}}


def save_evidence(run_dir: Path, evidence: JSONObject | None) -> None:
    """Keep what the run sends hosts with their own trust root beside its journal (for ``resume``). The plan's own
    bytes are not kept (a plan may hold values that must not reach run files: hook commands with secrets), only
    their sha256: ``run_evidence`` puts the accepted plan's canonical bytes back, which must digest to it."""
    import hashlib

    from ..core.journal import write_json_atomic

    if evidence is not None:
        kept = {k: v for k, v in evidence.items() if k != "plan"}
        text = evidence.get("plan")
        kept["plan_sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest() if isinstance(text, str) else None
        write_json_atomic(run_dir / EVIDENCE_FILE, kept)


def load_evidence(run_dir: Path) -> JSONObject | None:
    """The evidence the run sent (None for a run that kept none: a host with a trust root then refuses, closed)."""
    try:
        data = json.loads((run_dir / EVIDENCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run_evidence(run_dir: Path, plan_data: Mapping[str, object], approval_digests: Sequence[str]) -> JSONObject | None:
    """The run's evidence for ``resume`` and the canary continuation, refused (ApprovalRefused, exit 4) unless it
    is the evidence of this run: the plan's bytes digest to the plan the run's journal accepted (``plan_data``, from
    ``accepted_plan``), its signature is that plan's, and its approvals are exactly the approvals the journal
    recorded (``approval_digests``). None when the run kept none."""
    import hashlib

    from ..core.errors import ApprovalRefused
    from ..core.plan import plan_digest

    evidence = load_evidence(run_dir)
    if evidence is None:
        return None
    where = run_dir / EVIDENCE_FILE
    hint = "put back the evidence the run wrote, or make, approve and run a new plan"
    text = evidence.get("plan")  # the plan's bytes themselves (as sent), or only their sha256 (as kept)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest() if isinstance(text, str) else evidence.get("plan_sha256")
    accepted = plan_digest(plan_data)
    if digest != accepted or evidence.get("plan_signature") != (str(plan_data["signature"])
                                                               if plan_data.get("signature") else None):
        raise ApprovalRefused(f"{where} carries the evidence of plan {str(digest)[:16]}…, but this run accepted plan "
                              f"{accepted[:16]}…: the file was replaced; nothing was changed", hint=hint)
    items = evidence.get("approvals")
    got = sorted(hashlib.sha256(str(a.get("text")).encode()).hexdigest() for a in items
                 if isinstance(a, dict)) if isinstance(items, list) else []
    if not isinstance(items, list) or len(got) != len(items) or got != sorted(approval_digests):
        raise ApprovalRefused(f"{where} carries other approvals than the ones this run accepted (its journal): the "
                              "file was replaced; nothing was changed", hint=hint)
    # the plan's bytes as the approvals digest them: the accepted plan's canonical JSON (its digest is checked above)
    return {**evidence, "plan": canonical_json({k: v for k, v in plan_data.items() if k != "signature"}).decode("utf-8")}
