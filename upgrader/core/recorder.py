"""What the commands write into the audit log, and who they say wrote it.

``Recorder`` turns command steps and engine events into audit events (redacted, chained by
``AuditLog``) and closes a run with a signed checkpoint. ``operator_identity`` finds the
operator's user, host and SSH key (the key that signs checkpoints).
"""

from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from ..audit.log import AuditLog, CheckpointRef
from .clock import Clock
from .errors import InputError
from .shapes import Event, JSONObject

if TYPE_CHECKING:
    import datetime as _dt

    from version_policy import Policy

    from ..trust.signers import AllowedSigners
    from ..trust.sshsig import PrivateKey

__all__ = ["Recorder", "Operator", "operator_identity", "audit_path"]

_KEY_CANDIDATES = ("keys/operator",)
_SSH_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")


def audit_path(home: Path) -> Path:
    return home / "audit" / "audit.jsonl"


@dataclass(frozen=True)
class Operator:
    user: str
    host: str
    key_path: str | None
    key: PrivateKey | None
    principal: str
    fingerprint: str | None
    warning: str | None = None  # why this operator's checkpoints would not verify (said before a run starts)

    def actor(self) -> JSONObject:
        return {"user": self.user, "host": self.host, "key": self.fingerprint, "principal": self.principal}


def stored_key_files(home: Path) -> list[Path]:
    """The key files this account keeps where upgrader looks for an operator key (HOME/keys/operator, ~/.ssh/id_*)."""
    return [p for p in [home / c for c in _KEY_CANDIDATES] + [Path.home() / ".ssh" / k for k in _SSH_KEYS]
            if p.is_file()]


def operator_identity(home: Path, policy: Policy | None, *, key_path: str | None = None,
                      need_key: bool = True, now: _dt.datetime | None = None) -> Operator:
    """The person at this controller: login, machine, and the SSH key that signs audit checkpoints.

    Key: ``key_path``, env ``UPGRADER_AUDIT_KEY``, ``HOME/keys/operator``, then ``~/.ssh/id_*``.
    Principal: looked up by that key in the policy's audit allowed_signers, else ``user@host``.
    """
    from ..trust.keys import load_private_key
    from ..trust.sshsig import fingerprint, public_key_blob

    try:
        user = os.environ.get("UPGRADER_USER") or getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    host = socket.gethostname()
    candidates = [key_path, os.environ.get("UPGRADER_AUDIT_KEY")]
    candidates += [str(home / c) for c in _KEY_CANDIDATES]
    candidates += [str(Path.home() / ".ssh" / k) for k in _SSH_KEYS]
    path = next((c for c in candidates if c and Path(c).is_file()), None)
    if path is None:
        if need_key:
            raise InputError("no SSH key to sign the audit log's checkpoint",
                             hint="give --audit-key KEY, set UPGRADER_AUDIT_KEY, or create HOME/keys/operator "
                                  "(upgrader keys generate operator)")
        return Operator(user, host, None, None, f"{user}@{host}", None)
    key = load_private_key(path)
    fp = fingerprint(public_key_blob(key.public_key()))
    principal = os.environ.get("UPGRADER_AUDIT_SIGNER") or ""
    warning = None
    read = _audit_signers(policy) if policy is not None else None
    if read is not None:
        principal, warning = _principal(read[0], read[1], key, principal, f"{user}@{host}", user, now)
    return Operator(user, host, path, key, principal or f"{user}@{host}", fp, warning)


def _audit_signers(policy: Policy) -> tuple[AllowedSigners, str] | None:
    """The operators' allowed signers (``audit.allowed_signers``, else the approvers' file) and where they were read,
    parsed from the bytes read -- and hashed into the policy's identity -- when the policy was loaded
    (trust.signers.policy_signers: one read, as every other trust decision); None when the policy names none, or the
    file it names is not there (said where the checkpoint is verified)."""
    from ..trust.signers import policy_signers

    key = "audit.allowed_signers" if policy.settings.get("audit.allowed_signers") is not None \
        else "approvals.allowed_signers"
    named = policy.settings.get(key)
    if not named:
        return None
    read = policy.trust_file(key)
    if read is None:  # a policy made without its trust files (a test's Policy): the file as it is now
        where = policy.resolve_path(str(named))
        if not where.is_file():
            return None
        source = str(where)
    elif read.source is None or read.state == "missing":
        return None
    else:
        source = read.source
    signers = policy_signers(policy, key)
    return (signers, source) if signers is not None else None


def _principal(signers: AllowedSigners, source: str, key: PrivateKey, given: str, default: str, user: str,
               now: _dt.datetime | None) -> tuple[str, str | None]:
    """A principal the allowed signers (``signers``, read from ``source``) let this key sign audit checkpoints as
    now, and a warning when there is none (the run's checkpoint would not verify). A pattern entry (``*@customer``)
    gets a concrete name that matches it: ``user@host`` or the pattern with ``*`` as the user."""
    import datetime as dt

    from ..trust.sshsig import public_key_blob

    blob = public_key_blob(key.public_key())
    when = now or dt.datetime.now(dt.timezone.utc)

    def allowed(name: str) -> bool:
        if not name or any(ch in name for ch in "*?!"):
            return False
        try:
            signers.check(name, blob, "upgrader-audit", when)
        except ValueError:
            return False
        return True

    if given:
        candidates = [given]
    else:
        found = signers.principals_for(blob, "upgrader-audit", when)
        candidates = [f for f in found if "*" not in f and "?" not in f] + [default]
        candidates += [f.replace("*", user, 1) for f in found if "*" in f]
    chosen = next((c for c in candidates if allowed(c)), "")
    if chosen:
        return chosen, None
    return given, (f"the audit checkpoint this run signs will not verify: {source} lets no principal "
                   f"({given or default}) sign 'upgrader-audit' with this key now; add the operator's key there, "
                   "or set UPGRADER_AUDIT_SIGNER to a principal it lists for this key")


class Recorder:
    """Audit events of one command (and, as an engine observer, of a run)."""

    def __init__(self, home: Path, operator: Operator, clock: Clock, run: str | None = None) -> None:
        self.log = AuditLog(audit_path(home), operator.actor())
        self.operator = operator
        self.clock = clock
        self.run = run

    def _now(self) -> str:
        return str(self.clock.now().isoformat(timespec="milliseconds"))

    def event(self, event: str, *, host: str | None = None, phase: str | None = None,
              outcome: str | None = None, **data: object) -> None:
        self.log.append(event, run=self.run, host=host, phase=phase, outcome=outcome, time=self._now(),
                        data=data or None, mono=self.clock.monotonic())

    def on_event(self, ev: Event) -> None:
        kind = ev["event"]
        skip = {"event", "run", "host", "time", "phase", "status", "outcome"}
        data = {k: v for k, v in ev.items() if k not in skip}
        if kind in ("phase_started", "phase_finished", "host_started", "host_finished", "rollback_started",
                    "run_finished", "lock_broken"):
            # the engine's events: ``host``, ``phase``, ``status`` and ``outcome`` are text (or absent)
            self.log.append(str(kind), run=self.run, host=cast("str | None", ev.get("host")),
                            phase=cast("str | None", ev.get("phase")),
                            outcome=cast("str | None", ev.get("status") or ev.get("outcome")), time=self._now(),
                            data=data or None, mono=self.clock.monotonic())

    def checkpoint(self) -> CheckpointRef | None:
        if self.operator.key is None:
            return None
        return self.log.checkpoint(run=self.run, time=self._now(), signer=self.operator.principal,
                                   key=self.operator.key, mono=self.clock.monotonic())
