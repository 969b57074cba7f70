"""Witnessed checkpoints: the hosts a run touched keep its signed checkpoint, where the controller cannot rewrite it.

A checkpoint signed with the operator's key proves nothing against whoever holds that key: they can edit the log,
rebuild the chain and sign it again, or cut the last run off the end. So at the end of every run, resume and
rollback, each host the run reached appends the run's checkpoint (seq, head, signer, key fingerprint, time, run id)
to ``checkpoints.jsonl`` in its own ledger (hostagent/witness.py). A host that cannot be reached then gets a
warning in the run's output and a ``witness_missing`` line in the audit log; the run's outcome is not changed.

``upgrader audit verify --witness INVENTORY`` reads every host's record (read-only) and checks the log against it:
each witnessed head must be the hash of the log's line at that seq, followed by that run's checkpoint line.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

from .reach import _reached

from ..core.errors import UpgraderError
from ..core.shapes import JSONObject
from .log import OPENING_EVENTS, fitted, line_clock, run_opening
from .reach import first_like, run_openings

if TYPE_CHECKING:
    from ..trust.signers import AllowedSigners

__all__ = ["WitnessTarget", "send_witnesses", "read_witnesses", "check_witnesses", "case_witnesses", "mark_followups", "WitnessResult", "HostWitness",
           "opening_text", "unused_exports"]

#: seconds a host may take to answer the witness request (a run's end never waits longer on one host)
CALL_TIMEOUT = 30.0


@dataclass(frozen=True)
class WitnessTarget:
    """A host to send the checkpoint to (or read its record from): its name and ``call(op, request)``, which asks
    its agent (the caller connects: api.py), raising on any failure."""

    name: str
    call: Callable[[str, JSONObject], JSONObject]


def _call(t: WitnessTarget, op: str, request: JSONObject | None = None) -> JSONObject:
    return t.call(op, request or {})


def _error(e: BaseException) -> str:
    if isinstance(e, UpgraderError):
        return e.message
    return f"{type(e).__name__}: {e}"


def send_witnesses(targets: Sequence[WitnessTarget], checkpoint: Mapping[str, object], run_id: str,
                   time: str, syslog: bool = False, syslog_failed: dict[str, str] | None = None) -> dict[str, str]:
    """Send the run's checkpoint to every target (in parallel); returns {host: why} for each host that did not
    record it. Never raises: a witness must not fail a run. ``syslog`` (the policy's ``audit.syslog``): each host
    also sends it to its local syslog; a host that could not is put in ``syslog_failed`` with why."""
    record: JSONObject = {"seq": checkpoint["seq"], "head": checkpoint["head"], "line": checkpoint.get("line"),
              "signer": checkpoint.get("signer"), "key": checkpoint.get("key"), "time": time, "run": run_id}
    if isinstance(checkpoint.get("signature"), str) and isinstance(checkpoint.get("time"), str):
        # the operator's signature of the checkpoint and the time it signs: the host's syslog copy carries both, so
        # a verifier can tell the agent's copy from a line any account on the host wrote (attack20r8 #3)
        record["signature"], record["signed"] = checkpoint["signature"], checkpoint["time"]

    def one(t: WitnessTarget) -> tuple[str, str | None, str | None]:
        try:
            # host: the inventory's name of the host, which its syslog copy carries (the daemon names it otherwise)
            reply = _call(t, "witness", {"checkpoint": record, "host": t.name, **({"syslog": True} if syslog else {})})
        except Exception as e:  # noqa: BLE001 - any failure is a missing witness, reported, never raised
            return t.name, _error(e), None
        said = reply.get("syslog") if isinstance(reply, dict) else None
        failed = str(said.get("error")) if isinstance(said, dict) and said.get("error") else None
        return t.name, None, failed

    if not targets:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(targets)))) as pool:
        done = list(pool.map(one, targets))
    if syslog_failed is not None:
        syslog_failed.update({name: why for name, _, why in done if why is not None})
    return {name: why for name, why, _ in done if why is not None}


@dataclass
class HostWitness:
    host: str
    checkpoints: list[JSONObject] = field(default_factory=list)
    error: str | None = None
    unreadable: list[JSONObject] = field(default_factory=list)
    #: this host's own record of every run it finished (hostagent/witness.py runs.jsonl)
    runs: list[JSONObject] = field(default_factory=list)
    unreadable_count: int = 0
    #: this host's opening record of every run that took its lock (hostagent/witness.py runs-opened.jsonl)
    opened: list[JSONObject] = field(default_factory=list)
    #: the run that holds this host's lock now (None: nobody)
    lock: JSONObject | None = None
    #: the state dir the host was asked for, when it does not exist there (no ledger: nothing recorded)
    absent: str | None = None
    #: {run label: the steps this host executed} for each run it opened and never finished
    open_steps: dict[str, list[JSONObject]] = field(default_factory=dict)
    #: what keeps this host's records out of a controller's reach: "host trust root" (the host runs no step, hook
    #: or command outside a run it accepted itself), "syslog" (each witness also went to the host's syslog); empty:
    #: neither (a modified controller's hook, run as root there, can rewrite them)
    protected_by: list[str] = field(default_factory=list)


def _protected_by_root(reply: Mapping[str, object]) -> bool:
    """Whether the host says its own trust root protects its records (its witness_read answer's ``trust_root``:
    present, usable or not; a root it cannot use refuses every run and protects as much)."""
    return isinstance(reply.get("trust_root"), dict)


def read_witnesses(targets: Sequence[WitnessTarget], syslog: bool = False) -> list[HostWitness]:
    """Every target's witnessed checkpoints and its own run records (read-only); a host that cannot be read carries
    its ``error``. ``syslog``: the policy sends every witness to the hosts' syslog too (``audit.syslog``), which
    each host's ``protected_by`` names, beside its own trust root."""

    def dicts(v: object) -> list[JSONObject]:
        return [c for c in v if isinstance(c, dict)] if isinstance(v, list) else []

    def one(t: WitnessTarget) -> HostWitness:
        try:
            reply = _call(t, "witness_read")
        except Exception as e:  # noqa: BLE001 - reported as that host's error
            return HostWitness(t.name, error=_error(e))
        bad = dicts(reply.get("unreadable"))
        count = reply.get("unreadable_count")
        lock = reply.get("lock")
        given = reply.get("open_steps")
        open_steps = {str(k): dicts(v) for k, v in given.items()} if isinstance(given, dict) else {}
        protected = (["host trust root"] if _protected_by_root(reply) else []) + (["syslog"] if syslog else [])
        return HostWitness(t.name, dicts(reply.get("checkpoints")), unreadable=bad, runs=dicts(reply.get("runs")),
                           unreadable_count=count if type(count) is int else len(bad),
                           opened=dicts(reply.get("opened")), lock=lock if isinstance(lock, dict) else None,
                           absent=str(reply["absent"]) if reply.get("absent") else None,
                           open_steps=open_steps, protected_by=protected)

    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(targets)))) as pool:
        return list(pool.map(one, targets))


#: a witness a host received later than this many seconds after it finished the run itself is "late": the
#: controller held the checkpoint back (time enough to rewrite the log and sign it again)
LATE_AFTER = 3600.0
#: how far a host's clock may be from the controller's before the times of a run are called different
CLOCK_SKEW = 900.0


@dataclass
class WitnessResult:
    """The log against the hosts' records: ``problems`` (each names host, run, seq or field) make it altered (exit
    6); ``doubts`` (a witness late, a run a host finished never witnessed, a duplicate, a line unusable) leave it
    not proven (exit 2), and so do hosts that could not be read, when nothing else is wrong."""

    hosts: list[HostWitness]
    lines: int
    problems: list[str] = field(default_factory=list)
    checked: int = 0
    #: every witnessed checkpoint checked: (host, its record, the problem or None when the log matches it)
    findings: list[tuple[str, JSONObject, str | None]] = field(default_factory=list)
    doubts: list[str] = field(default_factory=list)
    #: every run a host finished, against the log: (host, run as the log names it, what differs, doubts)
    accounts: list[tuple[str, str, list[JSONObject], list[JSONObject]]] = field(default_factory=list)
    #: the log against the hosts' opening records and locks (_compare_openings): each finding, ``doubt`` or not
    openings: list[JSONObject] = field(default_factory=list)
    #: ``problems`` and ``doubts`` in Chinese, the same items in the same order (audit verify --lang zh)
    problems_zh: list[str] = field(default_factory=list)
    doubts_zh: list[str] = field(default_factory=list)
    #: the witnesses' syslog copies (--syslog) that match the log and their hosts' records
    syslog_checked: int = 0
    #: {host: {another log's identity: the labels of its runs this host keeps}}: not compared with this log
    other_logs: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    #: the syslog lines not signed by a trusted audit key (authenticated_copies), in English and Chinese: named, never
    #: evidence, and no part of the verdict
    ignored: list[str] = field(default_factory=list)
    ignored_zh: list[str] = field(default_factory=list)

    def found(self, en: str, zh: str, *, doubt: bool = False) -> None:
        """One problem (or doubt), said in English and in Chinese."""
        (self.doubts if doubt else self.problems).append(en)
        (self.doubts_zh if doubt else self.problems_zh).append(zh)

    @property
    def unreachable(self) -> list[HostWitness]:
        return [h for h in self.hosts if h.error]

    @property
    def status(self) -> str:
        if self.problems:
            return "altered"
        if self.doubts:
            return "unproven"
        return "cannot_check" if self.unreachable else "intact"

    def to_dict(self) -> JSONObject:
        return {"status": self.status, "log_lines": self.lines, "checked": self.checked, "problems": self.problems,
                "doubts": self.doubts, "runs_compared": len(self.accounts), "syslog_checked": self.syslog_checked,
                "other_logs": self.other_logs, "ignored": self.ignored,
                "hosts": [{"host": h.host, "checkpoints": len(h.checkpoints), "runs": len(h.runs),
                           "opened": len(h.opened), "lock": h.lock,
                           "protected_by": None if h.error else (h.protected_by or ["neither"]),
                           "limit": None if h.error else protection_text(h),
                           "error": h.error, "unreadable_lines": h.unreadable,
                           "unreadable_count": h.unreadable_count} for h in self.hosts]}


def protection_text(h: HostWitness, lang: str = "en") -> str:
    """What keeps ``h``'s records out of a controller's reach, and what does not. Nothing the host itself keeps is
    out of reach of a controller running modified upgrader: the agent is the code the controller uploads, so it
    can have it rewrite the records as the agent's account (a host trust root binds the shipped agent only). Only
    a copy off the host is: the witnesses sent to syslog and forwarded to a SIEM, compared with --syslog."""
    zh = lang == "zh"
    root, syslog = "host trust root" in h.protected_by, "syslog" in h.protected_by
    if zh:
        said = (f"主机 {h.host} 的记录由它自己的代理写入，而代理是控制端上传的代码："
                + ("主机信任根只约束 upgrader 发布的代理，" if root else "")
                + "运行修改版 upgrader 的控制端（或它以 root 身份运行的钩子）可以改写这些记录")
        return said + ("；每个见证也发往了该主机的 syslog：转发到主机之外（SIEM）的副本不在控制端的掌控之中，"
                       "用 --syslog 给出导出文件，与日志核对" if syslog else
                       "；要得到工程师无法改写的记录，还要把见证发往 syslog（策略 audit.syslog: true）并转发到主机之外，"
                       "再用 --syslog 给出导出文件核对")
    said = (f"host {h.host}'s records are written by its agent, which is the code the controller uploads: "
            + ("its trust root binds only the agent upgrader ships, so " if root else "")
            + "a controller running modified upgrader (or a hook it runs as root there) can rewrite them")
    return said + ("; each witness also went to the host's syslog: a copy forwarded off the host (a SIEM) is out of "
                   "the controller's reach, compare it with --syslog EXPORT" if syslog else
                   "; for records the engineer cannot rewrite, also send the witnesses to syslog (policy "
                   "audit.syslog: true), forward it off the host and compare that copy with --syslog EXPORT")


_HEX64 = re.compile(r"^[0-9a-f]{64}$")
#: the line a host's agent sends to its syslog for each witness (hostagent/witness.py to_syslog), as a syslog
#: export (a SIEM's, or /var/log/auth.log copied off the host) holds it: "... SENDER upgrader-agent: witnessed
#: checkpoint run=R seq=N head=H signer=S key=K time=T log=L host=NAME" (SENDER: the daemon's own hostname)
_SYSLOG_LINE = re.compile(r"(?:(?P<sender>[^\s:]+)\s+)?upgrader-agent(?:\[\d+\])?:\s+witnessed checkpoint\s+"
                          r"(?P<kv>.*)$")
#: a host's name as an inventory gives it (fleet/inventory.py), which the agent's line says as ``host=``
_HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def read_syslog_copies(path: Path) -> list[JSONObject]:
    """The witnesses a syslog export holds (the agent's own line for each, to_syslog): {seq, head, run, host (the
    host's inventory name as its agent said it, ``host=``; None from older agents), sender (the syslog header's
    hostname, when the export keeps it), log (the identity of the run's log, None from older agents), signer, sig
    and signed (the operator's signature of the checkpoint and the time it signs; None from older agents), file,
    file_line}. Every other line is not ours and is skipped. Nothing here is authenticated yet: any account on a host
    can write such a line (authenticated_copies keeps the signed ones)."""
    out: list[JSONObject] = []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            m = _SYSLOG_LINE.search(raw.decode("utf-8", "replace").rstrip("\r\n\x00"))  # a NUL: the sender's end
            if m is None:
                continue
            kv = dict(x.split("=", 1) for x in m.group("kv").split() if "=" in x)
            if not kv.get("seq", "").isdigit() or not _HEX64.match(kv.get("head", "")) or not kv.get("run"):
                continue
            out.append({"seq": int(kv["seq"]), "head": kv["head"], "run": kv["run"],
                        "host": kv["host"] if _HOST_NAME.match(kv.get("host", "")) else None,
                        "sender": m.group("sender"), "log": kv["log"] if _HEX64.match(kv.get("log", "")) else None,
                        "signer": kv.get("signer"), "sig": kv.get("sig"), "signed": kv.get("signed"),
                        "file": str(path), "file_line": n})
    return out


#: an SSHSIG armour's line width (trust/sshsig.sign): the one-line body of a syslog copy is armoured again with it
_ARMOUR_WIDTH = 70


def copy_signature_problem(c: Mapping[str, object], signers: AllowedSigners | None,
                           when: _dt.datetime) -> tuple[str, str] | None:
    """Why a syslog copy is not the agent's copy of a checkpoint the operator signed (English, Chinese); None when
    its signature (``sig=``, the checkpoint's SSHSIG signature) verifies over the checkpoint it names (seq, head,
    run, signer, ``signed=`` time: checkpoint_statement) and ``signers`` let its key sign audit checkpoints as that
    signer now -- the same trust the log's own checkpoints are verified with. Any account on a host can write an
    ``upgrader-agent:`` line to its syslog; only the operator's key can sign a checkpoint."""
    from ..trust.sshsig import BEGIN, END, SignatureError, parse_armored, verify
    from .log import NAMESPACE, checkpoint_statement

    sig, signed, signer = c.get("sig"), c.get("signed"), c.get("signer")
    if not isinstance(sig, str) or not isinstance(signed, str) or not isinstance(signer, str):
        return ("it carries no signature (a line of an agent before signed copies, or not from the agent)",
                "它没有签名（签名副本之前的旧版代理发出的行，或者不是代理发出的）")
    if signers is None:
        return ("no allowed signers are known to check its signature with (give --allowed-signers or the policy's "
                "audit.allowed_signers)",
                "没有可用来核验其签名的可信签名人（请给出 --allowed-signers 或策略中的 audit.allowed_signers）")
    try:
        armoured = parse_armored("\n".join([BEGIN, *(sig[i:i + _ARMOUR_WIDTH] for i in
                                                     range(0, len(sig), _ARMOUR_WIDTH)), END]) + "\n")
        verify(armoured, checkpoint_statement(_seq_of(c), str(c.get("head")), str(c.get("run")), signer, signed),
               NAMESPACE)
    except (SignatureError, ValueError) as e:
        return f"its signature does not verify ({e})", "它的签名无法通过验证"
    try:
        signers.check(signer, armoured.public_key, NAMESPACE, when)
    except ValueError as e:
        return (f"its key may not sign audit checkpoints as {signer} ({e})",
                f"它的密钥不被允许以 {signer} 的名义签署审计检查点")
    return None


def authenticated_copies(copies: Sequence[JSONObject], logs: Sequence[tuple[bytes, AllowedSigners | None]],
                         when: _dt.datetime) -> tuple[list[JSONObject], list[tuple[str, str]], dict[str, int]]:
    """(the syslog copies whose signature verifies, what is said (English, Chinese) of each other copy that names
    one of ``logs`` or one of their runs, {export file: how many of its lines were not authenticated}). ``logs``:
    (bytes, allowed signers) of the log verified first, then each --other-log: a copy naming one of them (``log=``,
    or its run for an older agent's line) is checked with that log's signers, any other with the first's. A copy
    not signed by a trusted audit key is never evidence (attack20r8 #3: one forged datagram made an honest log read
    ALTERED): it is ignored and named, and the verdict stays what the log and the hosts say."""
    parsed = [(_log_lines(d), signers) for d, signers in logs]
    by_id = {hashes[0]: signers for (hashes, _, _), signers in parsed if hashes}
    by_run = {str(e.get("run")): signers for (_, _, events), signers in reversed(parsed) for e in events
              if isinstance(e.get("run"), str)}
    default = logs[0][1] if logs else None
    kept: list[JSONObject] = []
    said: list[tuple[str, str]] = []
    unsigned: dict[str, int] = {}
    for c in copies:
        named = c.get("log")
        ours = named in by_id if named is not None else str(c.get("run")) in by_run
        signers = (by_id.get(str(named)) if named is not None else by_run.get(str(c.get("run")))) if ours \
            else default
        why = copy_signature_problem(c, signers, when)
        if why is None:
            kept.append(_attributed(c, [lines for lines, _ in parsed]))
            continue
        unsigned[str(c.get("file"))] = unsigned.get(str(c.get("file")), 0) + 1
        if not ours:
            continue  # another machine's line of another log: not this log's business, signed or not
        host = c.get("host") or c.get("sender") or "?"
        said.append((f"{c.get('file')} line {c.get('file_line')}: a syslog line not signed by a trusted audit key: "
                     f"ignored (not proven): {why[0]}; it says host {host} witnessed run {c.get('run')} at seq "
                     f"{_seq_of(c)} head {str(c.get('head'))[:12]}…",
                     f"{c.get('file')} 第 {c.get('file_line')} 行：一行没有可信审计密钥签名的 syslog：已忽略（未证实）："
                     f"{why[1]}；它称主机 {host} 在序号 {_seq_of(c)}、链头 {str(c.get('head'))[:12]}… 处见证了运行 "
                     f"{c.get('run')}"))
    return kept, said, unsigned


def _attributed(c: JSONObject, logs: Sequence[tuple[list[str], dict[int, JSONObject], list[JSONObject]]]
                ) -> JSONObject:
    """A signed copy as the log it is of: the signature covers the checkpoint, not ``log=``. A copy that does not
    match the log it names, yet is exactly a checkpoint of another log given (its head at that seq, that run's
    checkpoint on the next line: a hash of that log's chain), is that log's -- a genuine line of another log
    relabelled as this one's accuses nothing."""
    def fits(parsed: tuple[list[str], dict[int, JSONObject], list[JSONObject]]) -> bool:
        hashes, cps, _ = parsed
        return _problem(hashes, cps, [], "", c) is None

    named = [p for p in logs if p[0] and p[0][0] == c.get("log")]
    if named and fits(named[0]):
        return c
    other = next((p for p in logs if p[0] and p[0][0] != c.get("log") and fits(p)), None)
    return {**c, "log": other[0][0]} if other is not None else c


def _compare_syslog(result: WitnessResult, hashes: list[str], cps: dict[int, JSONObject], matching: list[int],
                    copies: Sequence[JSONObject], given_logs: Mapping[str, str], events: list[JSONObject],
                    given: bool = False) -> None:
    """Each witness's syslog copy (off the host, out of a controller's reach) against the log, as a host's own
    witness is; and against its host's records: a witness the copy holds that the host no longer keeps was removed
    from the host (ALTERED). A copy is its host's by the inventory name the agent put in it (``host=``); one naming
    this log (``log=``) is compared with it whatever the host's records now say of its run; one naming another log
    is that log's (checked with it when given, else not proven when its host is one read; another machine's is not
    ours). A copy from an older agent, which names neither, is used only when its host is unambiguous and its run is
    this log's or that host's (_older_copy_usable). ``events``: the log's lines; ``given``: syslog exports were
    given (each witness without a copy in them is named, _copies_missing)."""
    read = {h.host: h for h in result.hosts if not h.error}
    runs, reached = {str(e.get("run")) for e in events if isinstance(e.get("run"), str)}, _reached(events)
    mine = hashes[0] if hashes else None
    copies = [{**c, "host": _inventory_name(result.hosts, c)} for c in copies]
    _copies_missing(result, read, copies, given)
    for c in copies:
        host, where = c.get("host"), f"{c.get('file')} line {c.get('file_line')}"
        named = c.get("log")
        if named is not None and named != mine:
            if named not in given_logs and host in read:
                result.found(f"host {host}'s syslog copy ({where}) witnessed run {c.get('run')} of another log "
                             f"(identity {str(named)[:12]}…): not compared with this log; give that log with "
                             "--other-log to check it (not proven)",
                             f"主机 {host} 的 syslog 副本（{c.get('file')} 第 {c.get('file_line')} 行）见证的运行 "
                             f"{c.get('run')} 属于另一份日志（标识 {str(named)[:12]}…）：没有与本日志对照；请用 --other-log "
                             "给出那份日志以核对它（未证实）", doubt=True)
            continue  # the witness of another log's run (checked with that log), or of another machine's log
        if named is None and not _older_copy_usable(result, c, runs):
            continue
        name = f"{host or '?'} (its syslog copy, {where})"
        problem = _problem(hashes, cps, matching, name, c)
        if problem is not None:
            where_zh = f"{c.get('file')} 第 {c.get('file_line')} 行"
            # the copy is signed by the operator's key (authenticated_copies): the engineer cannot unsend it, so
            # a log that contradicts it was rewritten, whatever a host's own (rewritable) records now say
            result.found(problem, str(_problem(hashes, cps, matching, f"{host or '?'}（syslog 副本，{where_zh}）", c,
                                                "zh")))
            continue
        h = read.get(str(host))
        if h is not None and not any(_same_witness(k, c) for k in h.checkpoints):
            _copy_not_kept(result, c, str(host) in reached.get(str(c.get("run")), set()))
            continue
        result.syslog_checked += 1  # a copy that matches the log and its host's records


def _copy_not_kept(result: WitnessResult, c: Mapping[str, object], reached: bool) -> None:
    """A syslog copy the log agrees with, of a witness its host's own records do not hold: they were rewritten on
    the host (ALTERED) -- when the log says the run took that host's lock (``reached``). A host the run never
    reached was never asked to witness it (and its agent witnesses only a run it finished): such a line claims a
    witness no agent made, which any account on a host can write (not proven)."""
    host, run, seq, head = c.get("host"), c.get("run"), c.get("seq"), str(c.get("head"))[:12]
    where, where_zh = f"{c.get('file')} line {c.get('file_line')}", f"{c.get('file')} 第 {c.get('file_line')} 行"
    if reached:
        result.found(f"host {host}'s syslog copy ({where}) holds its witness of run {run} at seq {seq} head {head}…, "
                     "but the host's own records no longer do: they were rewritten on the host (ALTERED)",
                     f"主机 {host} 的 syslog 副本（{where_zh}）保存着它对运行 {run} 的见证（序号 {seq}，链头 {head}…），"
                     "而该主机自己的记录中已经没有了：记录在主机上被改写（已被篡改）")
        return
    result.found(f"a syslog line ({where}) says host {host} witnessed run {run} at seq {seq} head {head}…, a run the "
                 "log never took that host's lock for and the host keeps no witness of: a syslog line not from the "
                 "agent? (any account on a host can write one to its syslog) (not proven)",
                 f"一行 syslog（{where_zh}）称主机 {host} 在序号 {seq}、链头 {head}… 处见证了运行 {run}，而日志中这次运行"
                 "从未取得该主机的锁，该主机也没有这个见证：这一行也许不是代理发出的（主机上任何账户都能向 syslog 写入这样一行）（未证实）",
                 doubt=True)


def _older_copy_usable(result: WitnessResult, c: Mapping[str, object], runs: set[str]) -> bool:
    """Whether a copy from an older agent (no ``log=``, no ``host=``) is compared with the log: only when its host
    is known (_inventory_name), its run is this log's or one that host keeps a witness of, and the host's records
    do not say the run is another log's. Any other such line may be another machine's, of another log: never
    taken as a rewrite of this one."""
    host = c.get("host")
    if host is None:
        return False
    if any(c.get("run") in labels for labels in result.other_logs.get(str(host), {}).values()):
        return False  # the host's records say it is another log's run
    held = any(k.get("run") == c.get("run") for h in result.hosts if h.host == host for k in h.checkpoints)
    return c.get("run") in runs or held


def _same_witness(k: Mapping[str, object], c: Mapping[str, object]) -> bool:
    return (k.get("run"), _seq_of(k), k.get("head")) == (c.get("run"), _seq_of(c), c.get("head"))


def _inventory_name(hosts: Sequence[HostWitness], c: Mapping[str, object]) -> str | None:
    """The inventory name of the host a syslog copy came from: the name its agent said (``host=``), whatever the
    syslog daemon called the host. A copy from an older agent names only the daemon's hostname (``sender``, often
    not the inventory's name): it is taken when it is an inventory name, else the only host whose records hold
    that very witness; otherwise None (every host of a run witnesses the same checkpoint, and an export holds other
    machines' lines too)."""
    said, sender = c.get("host"), c.get("sender")
    if isinstance(said, str):
        return said
    names = [h.host for h in hosts]
    if isinstance(sender, str) and sender in names:
        return sender
    holding = [h.host for h in hosts if any(_same_witness(k, c) for k in h.checkpoints)]
    return holding[0] if len(holding) == 1 else None


def _copies_missing(result: WitnessResult, read: Mapping[str, HostWitness], copies: Sequence[JSONObject],
                    given: bool = False) -> None:
    """With syslog exports given: each witness of this log a host keeps while its syslog copy was asked for
    (audit.syslog) and that no export holds is named (not proven): its syslog was down then, the export does not
    cover that time, or the copy was never sent; the log after it is not proven by the syslog copies. A copy is
    the host's by its ``host=``; an older agent's copy with no known host serves one host that keeps its witness
    (a run's hosts each sent one)."""
    if not copies and not given:
        return
    pool: dict[tuple[object, int, object], int] = {}
    for c in copies:
        if c.get("host") is None:
            key = (c.get("run"), _seq_of(c), c.get("head"))
            pool[key] = pool.get(key, 0) + 1
    for name, h in read.items():
        if "syslog" not in h.protected_by:
            continue
        for k in sorted(h.checkpoints, key=_seq_of):
            if any(c.get("host") == name and _same_witness(k, c) for c in copies):
                continue
            key = (k.get("run"), _seq_of(k), k.get("head"))
            if pool.get(key):
                pool[key] -= 1
                continue
            result.found(f"host {name} witnessed run {k.get('run')} at seq {_seq_of(k)}, but no syslog export given "
                         "holds its copy (its syslog was down then, the export does not cover that time, or the copy "
                         "was never sent): that part of the log is not proven by the syslog copies (not proven)",
                         f"主机 {name} 在序号 {_seq_of(k)} 处见证了运行 {k.get('run')}，但给出的 syslog 导出文件中都没有它的副本"
                         "（当时 syslog 不可用、导出文件未覆盖那段时间，或副本从未发出）：日志的这一部分没有 syslog 副本证明（未证实）",
                         doubt=True)


def unused_exports(files: Sequence[str], copies: Sequence[JSONObject], logs: Sequence[bytes],
                   unsigned: Mapping[str, int] | None = None) -> list[tuple[str, str]]:
    """Each syslog export given (``files``, as read_syslog_copies names them) that holds no copy of a witness of
    ``logs`` (the log verified and every --other-log), said in English and Chinese: a wrong or empty export proves
    nothing, and must not read as if it had been checked (attack20r7 #5). A copy is of these logs when it names one
    (``log=``), or, from an older agent, when its run is one of theirs. ``copies``: the authenticated ones only;
    ``unsigned``: {file: how many of its witness lines were not signed by a trusted audit key}."""
    parsed = [_log_lines(d) for d in logs]
    ids = {hashes[0] for hashes, _, _ in parsed if hashes}
    runs = {str(e.get("run")) for _, _, events in parsed for e in events if isinstance(e.get("run"), str)}
    out: list[tuple[str, str]] = []
    for f in files:
        held = [c for c in copies if c.get("file") == f]
        if any(c.get("log") in ids or c.get("log") is None and c.get("run") in runs for c in held):
            continue
        if not held and (unsigned or {}).get(f):
            n = (unsigned or {})[f]
            out.append((f"the syslog export {f} holds {n} upgrader-agent witness line(s), none signed by a trusted "
                        "audit key (lines of an agent before signed copies, or not from the agent): it proves nothing "
                        "of the log (not proven)",
                        f"syslog 导出文件 {f} 中有 {n} 行 upgrader-agent 的见证，但没有一行带有可信审计密钥的签名（签名副本之前的"
                        "旧版代理发出的行，或者不是代理发出的）：它不能证明日志的任何部分（未证实）"))
        elif not held:
            out.append((f"the syslog export {f} holds no upgrader-agent witness line at all (the wrong file, period "
                        "or hosts, or the witnesses never went to syslog: policy audit.syslog: true): it proves "
                        "nothing of the log (not proven)",
                        f"syslog 导出文件 {f} 中根本没有 upgrader-agent 的见证行（文件、时间段或主机不对，或见证从未发往 "
                        "syslog：策略 audit.syslog: true）：它不能证明日志的任何部分（未证实）"))
        else:
            out.append((f"the syslog export {f} holds {len(held)} upgrader-agent witness line(s), none of a run of "
                        "this log or of a log given with --other-log (the wrong period or hosts?): it proves nothing "
                        "of the log (not proven)",
                        f"syslog 导出文件 {f} 中有 {len(held)} 行 upgrader-agent 的见证，但没有一行属于本日志或 --other-log "
                        "给出的日志的运行（时间段或主机不对？）：它不能证明日志的任何部分（未证实）"))
    return out


def _log_lines(data: bytes) -> tuple[list[str], dict[int, JSONObject], list[JSONObject]]:
    """The hash of every complete line (index 0 is line 1), the parsed checkpoint lines by line number, and every
    event the log holds (as parsed)."""
    hashes: list[str] = []
    checkpoints: dict[int, JSONObject] = {}
    events: list[JSONObject] = []
    for n, line in enumerate(data.split(b"\n")[:-1], 1):  # the part after the last newline is no complete line
        hashes.append(hashlib.sha256(line).hexdigest())
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if not isinstance(rec, dict):
            continue
        events.append(fitted(rec))  # a misfit field (an edited line: verify_log names it) read as the views do
        if rec.get("event") == "checkpoint" and isinstance(rec.get("checkpoint"), dict):
            checkpoints[n] = rec
    return hashes, checkpoints, events


def _seq_of(c: Mapping[str, object]) -> int:
    seq = c.get("seq")
    return seq if type(seq) is int else 0


def _head_of(cp: object) -> object:
    return cp.get("head") if isinstance(cp, dict) else None


def check_witnesses(data: bytes, hosts: list[HostWitness], *, not_read: Mapping[str, str] | None = None,
                    window: object = None, policy_digest: str | None = None,
                    earlier: Mapping[str, object] | None = None,
                    syslog_copies: Sequence[JSONObject] = (), given_logs: Mapping[str, str] | None = None,
                    syslog_given: bool = False) -> WitnessResult:
    """Check the log's bytes against every host's witnessed checkpoints, its own record of each run it finished and
    its opening record of each run that took its lock -- in both directions. ``not_read``: {host the log names:
    why it was not read} (each a doubt); ``window``: the service window (version_policy.ServiceWindow) of the
    policy whose sha256 is ``policy_digest``: each run of that policy judged from the host's own clock;
    ``earlier``: {sha256: service window} of the policies in force at other times, for the runs made under them;
    ``syslog_copies``: the witnesses' copies a syslog export holds (read_syslog_copies); ``syslog_given``: syslog
    exports were given, even with no copy in them (each witness without its copy is named); ``given_logs``: {identity:
    file} of the other logs the auditor gave (each checked against its own records by its own call): a host's
    records of a run of another log are never compared with this one; those of a log not given leave it not
    proven."""
    hashes, cps, events = _log_lines(data)
    n = len(hashes)
    hosts, others = _own_records(hosts, hashes[0] if hashes else None)
    result = WitnessResult(hosts, n, other_logs=others)
    for host, logs in others.items():
        for log_id, labels in logs.items():
            shown = ", ".join(labels[:5]) + (f" (+{len(labels) - 5})" if len(labels) > 5 else "")
            if log_id in (given_logs or {}):
                continue
            result.found(f"host {host} keeps the records of {len(labels)} run(s) of another log (identity "
                         f"{log_id[:12]}…: {shown}): not compared with this log; give that log with --other-log "
                         "to check them (not proven)",
                         f"主机 {host} 保存着另一份日志（标识 {log_id[:12]}…）的 {len(labels)} 次运行的记录（{shown}）："
                         "没有与本日志对照；请用 --other-log 给出那份日志以核对它们（未证实）", doubt=True)
    matching = sorted({_seq_of(c) for h in hosts for c in h.checkpoints
                       if 0 < _seq_of(c) <= n and hashes[_seq_of(c) - 1] == c.get("head")})
    for h in hosts:
        for c in sorted(h.checkpoints, key=_seq_of):
            if _seq_of(c) < 1:
                continue
            result.checked += 1
            problem = _problem(hashes, cps, matching, h.host, c)
            result.findings.append((h.host, c, problem))
            if problem is not None:
                result.found(problem, str(_problem(hashes, cps, matching, h.host, c, "zh")))
    _compare_syslog(result, hashes, cps, matching, syslog_copies, given_logs or {}, events, syslog_given)
    _twice_finished(result, events)
    _compare_accounts(result, events)
    _compare_openings(result, events, {**(earlier or {}), **({policy_digest: window} if policy_digest else {})},
                      policy_digest)
    for host, why in (not_read or {}).items():
        result.found(f"host {host} is named by the log but was not read ({why}): what it recorded itself "
                     "is not known, so the log is not proven",
                     f"日志提到了主机 {host}，但没有读取它（{why}）：不知道它自己记录了什么，因此日志未经证实", doubt=True)
    return result


def _own_records(hosts: list[HostWitness], log_id: str | None) -> tuple[list[HostWitness],
                                                                          dict[str, dict[str, list[str]]]]:
    """Each host's records of this log's runs only (a record that names no log, from an agent before log
    identities, counts as this log's), and {host: {other log: labels of its runs}} for the rest."""
    from dataclasses import replace

    def mine(rec: Mapping[str, object]) -> bool:
        return not isinstance(rec.get("log"), str) or rec.get("log") == log_id

    own: list[HostWitness] = []
    others: dict[str, dict[str, list[str]]] = {}
    for h in hosts:
        foreign = [r for r in h.opened + h.runs + h.checkpoints if not mine(r)]
        if not foreign:
            own.append(h)
            continue
        for r in foreign:
            labels = others.setdefault(h.host, {}).setdefault(str(r.get("log")), [])
            label = str(r.get("as") or r.get("run") or "")
            if label not in labels:
                labels.append(label)
        gone = {str(r.get("run") or "") for r in foreign}
        kept = [r for r in h.opened if mine(r)]
        lock = h.lock if not (h.lock and h.lock.get("run") in gone
                              and not any(r.get("run") == h.lock.get("run") for r in kept)) else None
        own.append(replace(h, checkpoints=[c for c in h.checkpoints if mine(c)], runs=[r for r in h.runs if mine(r)],
                           opened=kept, lock=lock,
                           open_steps={k: v for k, v in h.open_steps.items()
                                       if any(str(r.get("as")) == k for r in kept)}))
    return own, others


def _problem(hashes: list[str], cps: dict[int, JSONObject], matching: list[int], host: str,
             c: Mapping[str, object], lang: str = "en") -> str | None:
    """What is wrong with the log against one witnessed checkpoint ``c`` of ``host``; None when it matches."""
    n = len(hashes)
    seq, head, run = _seq_of(c), str(c.get("head") or ""), c.get("run") or "-"
    if lang == "zh":
        said = f"主机 {host} 在序号 {seq}、链头 {head[:12]}… 处见证了运行 {run}"
        if seq > n:
            return f"{said}，但日志到序号 {n} 就结束了：被截断（末尾至少少了 {seq + 1 - n} 行，包括运行 {run} 的检查点）"
        if hashes[seq - 1] != head:
            good = [m for m in matching if m < seq]
            where = (f"日志在第 {good[-1]} 行之后被改写（在那里见证的链头仍然相符）" if good else
                     f"日志在第 {seq} 行或之前被改写")
            return f"{said}，日志在序号 {seq} 处的链头却是 {hashes[seq - 1][:12]}…：{where}"
        rec = cps.get(seq + 1)
        if seq + 1 > n:
            return f"{said}，但日志到序号 {n} 就结束了，在第 {seq + 1} 行运行 {run} 的检查点之前：被截断"
        if rec is None or rec.get("run") != c.get("run") or _head_of(rec.get("checkpoint")) != head:
            return f"{said}；日志第 {seq + 1} 行不是这次运行的检查点：日志在第 {seq} 行之后被改写"
        return None
    said = f"host {host} witnessed run {run} at seq {seq} head {head[:12]}…"
    if seq > n:
        return (f"{said}, but the log ends at seq {n}: cut off ({seq + 1 - n} line(s) at least, run {run}'s "
                f"checkpoint among them, are missing from the end)")
    if hashes[seq - 1] != head:
        good = [m for m in matching if m < seq]
        where = (f"the log was rewritten after line {good[-1]} (a head witnessed there still matches)"
                 if good else f"the log was rewritten at or before line {seq}")
        return f"{said}, the log has head {hashes[seq - 1][:12]}… at seq {seq}: {where}"
    rec = cps.get(seq + 1)
    if seq + 1 > n:
        return f"{said}, but the log ends at seq {n}, before run {run}'s checkpoint on line {seq + 1}: cut off"
    if rec is None or rec.get("run") != c.get("run") or _head_of(rec.get("checkpoint")) != head:
        return (f"{said}; the log's line {seq + 1} is not that run's checkpoint: the log was rewritten after "
                f"line {seq}")
    return None


#: a host's finish outcome for each outcome the log can give a host (a rollback the operator asked for ends
#: "restored" in the log, "rolled_back" on the host; every refusal before anything changed, "unchanged")
_OUTCOME = {"committed": "committed", "rolled_back": "rolled_back", "restored": "rolled_back",
            "needs_person": "needs_person"}


def _same_outcome(told: object, said: object, log: JSONObject) -> bool:
    """Whether the host's finish outcome and the log's host_finished outcome of a run say the same (_OUTCOME). A
    rollback of a run killed before its backup restores nothing: the log says "restored" (the old version runs),
    the host finished it "unchanged"; with no rollback phase that went well, the two agree."""
    if _OUTCOME.get(str(said), "unchanged") == _OUTCOME.get(str(told), "unchanged"):
        return True
    phases = log.get("phases")
    return said == "restored" and told == "unchanged" and isinstance(phases, set) and "rollback" not in phases


def _when(value: object) -> float | None:
    """Seconds since the epoch of a log time (ISO text) or a host time (a number)."""
    import datetime as _dt

    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        at = _dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return at.timestamp() if at.tzinfo is not None else None


def _iso(value: object) -> str:
    import datetime as _dt

    t = _when(value)
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="seconds") if t is not None else "?"


def _log_account(events: list[JSONObject], label: str, host: str) -> JSONObject | None:
    """What the log says of ``host`` in the run ``label``: None when the log has no line of that run at all."""
    mine = [e for e in events if e.get("run") == label]
    if not mine:
        return None
    start = run_opening(mine, label)
    sd = start.get("data") if start is not None and isinstance(start.get("data"), dict) else {}
    assert isinstance(sd, dict)
    ended = next((e for e in mine if e.get("event") == "host_finished" and e.get("host") == host), None)
    ed = ended.get("data") if ended is not None and isinstance(ended.get("data"), dict) else {}
    assert isinstance(ed, dict)
    before = next((h.get("current") for h in sd.get("hosts") or [] if isinstance(h, dict) and h.get("host") == host),
                  None) if start is not None else None
    window = sd.get("window")
    phases = {str(e.get("phase")) for e in mine if e.get("event") == "phase_finished" and e.get("host") == host
              and e.get("outcome") == "ok"}
    first = next((line_clock(e) for e in mine if e.get("host") == host and e.get("event") == "phase_started"), None)
    # each phase of this host as the log times it: [start, end, outcome, line of its start] in the log's order, by the
    # controller's clock when each line was written (line_clock: a line's time raised after a clock step back is not)
    spans: dict[str, list[list[object]]] = {}
    for e in mine:
        if e.get("host") != host or e.get("phase") is None:
            continue
        if e.get("event") == "phase_started":
            spans.setdefault(str(e.get("phase")), []).append([line_clock(e), None, None, e.get("seq")])
        elif e.get("event") == "phase_finished":
            open_ = next((x for x in spans.get(str(e.get("phase")), []) if x[1] is None), None)
            if open_ is not None:
                open_[1], open_[2] = line_clock(e), e.get("outcome")
                open_.append(e.get("seq"))  # [4]: the line of its end
    account: JSONObject = {
            "kind": start.get("event") if start is not None else None, "spans": spans,
            "plan": sd.get("plan") if start is not None else None,
            "approvals": sorted(str(a.get("digest")) for a in sd.get("approvals") or [] if isinstance(a, dict))
            if "approvals" in sd else None,
            "window": window.get("inside") if isinstance(window, dict) else None,
            "outcome": ended.get("outcome") if ended is not None else None, "finished": line_clock(ended)
            if ended is not None else None, "finished_line": ended.get("seq") if ended is not None else None, "version_after": ed.get("version"), "version_before": before,
            "phases": phases, "started": first, "started_line": next(
                (e.get("seq") for e in mine if e.get("host") == host and e.get("event") == "phase_started"), None),
            "opened_at": line_clock(start) if start is not None else None,
            "opened_line": start.get("seq") if start is not None else None}
    _unstep(account, mine)
    return account


def _stepped_back(lines: Sequence[JSONObject], ref: object) -> dict[int, float]:
    """How far (seconds, >= 0) the controller's wall clock had stepped back since the line ``ref`` when each later
    line of a run was written, as the log records it: each line keeps the writer's monotonic clock (``mono``) beside
    its wall clock, and a wall clock stepped back (an NTP step, a VM resumed) leaves the two that much further apart.
    A step back stays: a line credited with it only if every later line of the run (each with its ``mono``) shows it
    too -- a phase moved earlier by its times alone, the lines after it not, is credited with nothing."""
    def reading(e: Mapping[str, object]) -> tuple[int, float, float] | None:
        seq, mono, at = e.get("seq"), e.get("mono"), _when(line_clock(e))
        if type(seq) is not int or type(mono) not in (int, float) or at is None:
            return None
        assert isinstance(mono, (int, float))
        return seq, at, float(mono)

    base = next((r for e in lines for r in [reading(e)] if r is not None and r[0] == ref), None)
    if base is None:
        return {}
    out: dict[int, float] = {}
    least = float("inf")  # the smallest step back every line from here to the run's end shows
    for e in reversed(lines):
        seq = e.get("seq")
        if type(seq) is not int or seq <= base[0]:
            continue
        r = reading(e)
        # wall clock elapsed minus monotonic elapsed: < 0 after a step back; a line of another boot (its monotonic
        # clock behind) or with no reading shows none
        back = (base[1] - r[1]) + (r[2] - base[2]) if r is not None and r[2] >= base[2] else 0.0
        least = min(least, max(back, 0.0))
        out[seq] = least
    return out


def _unstep(account: JSONObject, mine: Sequence[JSONObject]) -> None:
    """The host's account of a run (_log_account) by the controller's clock as it ran at the host's lock: each
    phase time and the finish after a step back the log records (_stepped_back, from the first line of the host's
    lock window) put forward by that step, so the host's one clock offset of the run holds across it. And
    ``stepped_at_lock``: the step back recorded between the run's first lock (its first preflight line, else its
    opening line) and this host's, which the controller's clock told at this host's lock carries."""
    la, lb, ref = _lock_window(account)
    credit = _stepped_back(mine, ref)

    def fwd(at: object, seq: object) -> object:
        t, by = _when(at), credit.get(seq, 0.0) if type(seq) is int else 0.0
        return _iso_ms(t + by) if t is not None and by >= 0.0005 else at

    spans = account.get("spans")
    assert isinstance(spans, dict)
    for span in (x for v in spans.values() for x in v):
        span[0], span[1] = fwd(span[0], span[3]), fwd(span[1], span[4] if len(span) > 4 else None)
    account["finished"] = fwd(account.get("finished"), account.get("finished_line"))
    account["started"] = fwd(account.get("started"), account.get("started_line"))
    first = next((e.get("seq") for e in mine if e.get("event") == "phase_started" and e.get("phase") == "preflight"),
                 account.get("opened_line"))
    account["stepped_at_lock"] = _stepped_back(mine, first).get(ref, 0.0) if type(ref) is int else 0.0


def _differences(rec: JSONObject, log: JSONObject, opened: JSONObject | None = None) -> list[JSONObject]:
    """Each field where the host's own record of a run and the log's lines of it differ:
    {"field", "host": what the host recorded, "log": what the log says}. ``opened``: the host's opening record of
    the run (when it took its lock), which with ``rec``'s finish fixes the host's clock offset for the run."""
    out: list[JSONObject] = []

    def differ(name: str, host_value: object, log_value: object) -> None:
        out.append({"field": name, "host": host_value, "log": log_value})

    told = rec.get("outcome")
    said = log.get("outcome")
    if said is None:
        differ("outcome", told, None)
    elif told is not None and not _same_outcome(told, said, log):
        differ("outcome", told, said)
    for name in ("version_after", "version_before", "plan", "window"):
        if rec.get(name) is not None and log.get(name) is not None and rec.get(name) != log.get(name):
            differ(name, rec.get(name), log.get(name))
    mine = rec.get("approvals")
    if isinstance(mine, list) and mine and log.get("approvals") is not None and sorted(map(str, mine)) != log["approvals"]:
        differ("approvals", sorted(map(str, mine)), log["approvals"])
    given = rec.get("steps")
    steps: list[object] = list(given) if isinstance(given, list) else []
    done = {str(s.get("op")) for s in steps if isinstance(s, dict) and s.get("ok")}
    phases = log.get("phases") or set()
    assert isinstance(phases, set)
    # a resume's record from an agent that did not label its steps also holds the interrupted run's steps; one that
    # labels them (attack20r5) holds its own only, and is held to its phases like any run
    resumed = log.get("kind") == "resume_requested" and any(isinstance(s, dict) and "as" not in s for s in steps)
    if not resumed:  # a record with no step executed "agrees" with no install, no start
        for phase in ("install", "start"):
            if (phase in done) != (phase in phases):
                differ("phases", f"{phase} {'done' if phase in done else 'not done'}",
                       f"{phase} {'done' if phase in phases else 'not done'}")
        if "rollback" in phases and "rollback" not in done:
            differ("phases", "rollback not done", "rollback done")
    # every phase, a resume's too, must hold one of the host's own steps (a resume's record also holds the steps of
    # the run it went on with: one more step to choose from, never one missing), under one clock offset
    out += _step_times(steps, log.get("spans"))
    said = {(d.get("field"), d.get("log")) for d in out  # a phase already beyond CLOCK_SKEW is said once
            if not isinstance(d.get("log"), (list, dict))}  # (a list, the approvals', is no phase's time)
    out += [d for d in _offset_times(steps, log, _offset_bounds(rec, log, opened))
            if (d.get("field"), d.get("log")) not in said]
    out += _lock_clock(log, opened)
    host_end, log_end = _when(rec.get("finished")), _when(log.get("finished"))
    if host_end is not None and log_end is not None and abs(host_end - log_end) > CLOCK_SKEW:
        differ("finished", _iso(host_end), log.get("finished"))
    host_start, log_start = _when(rec.get("started")), _when(log.get("started"))
    if resumed:
        return out
    if host_start is not None and log_start is not None and abs(host_start - log_start) > CLOCK_SKEW + 3600 \
            or host_start is not None and log_start is not None and log_start > host_start + CLOCK_SKEW:
        differ("started", _iso(host_start), log.get("started"))
    return out


#: the actions whose start and end a host records (hostagent note_step) that the log times as a phase of the same
#: name: the log's phase holds the action (the controller logs its start before it asks and its end after the
#: answer), so it can be no shorter than the host's own step, nor start or end further than CLOCK_SKEW from it
TIMED_STEPS = ("stop", "install", "start", "rollback")
#: the log's times are kept to the millisecond: a phase may read this much shorter than the step it holds
TIME_SLACK = 0.005


def _spans(steps: Sequence[object], op: str, ok: bool = False) -> list[tuple[float, float]]:
    """Every ``op`` step's (start, end) by the host's clock that has both (agents before this version recorded only
    the end); ``ok``: only the steps that went well."""
    out = []
    for x in steps:
        if isinstance(x, dict) and x.get("op") == op and (x.get("ok") or not ok):
            a, b = _when(x.get("start")), _when(x.get("at"))
            if a is not None and b is not None and b >= a:
                out.append((a, b))
    return out


def host_downtime(steps: object) -> float | None:
    """The outage by the host's own clock: its first stop step's start to the end of the last start step that went
    well after it; None when the host did not record both (not stopped, not started again, or an older agent)."""
    given: Sequence[object] = steps if isinstance(steps, list) else []
    stops, starts = _spans(given, "stop"), _spans(given, "start", ok=True)
    if not stops or not starts or starts[-1][1] < stops[0][0]:
        return None
    return round(starts[-1][1] - stops[0][0], 3)


def _step_times(steps: Sequence[object], spans: object) -> list[JSONObject]:
    """The log's phases (TIMED_STEPS) on a host against the host's own steps of the same name. Every phase the log
    says went well must hold a step the host executed: one (each used once, in order) that starts and ends within
    CLOCK_SKEW of the phase and is no longer than it; none is a difference, naming the host's nearest step. And
    the log's outage (its first stop phase's start to its last good start phase's end) must be no shorter than the
    host's own when the host stopped and started once."""
    out: list[JSONObject] = []
    given: dict[str, list[list[object]]] = spans if isinstance(spans, dict) else {}
    for op in TIMED_STEPS:
        mine = [(a, b) for x in steps if isinstance(x, dict) and x.get("op") == op and x.get("ok")
                for a, b in [(_when(x.get("start")), _when(x.get("at")))] if a is not None and b is not None]
        if not mine:  # an agent before this version recorded no start: nothing to compare
            continue
        used: set[int] = set()
        for span in given.get(op) or []:
            la, lb = _when(span[0]), _when(span[1])
            if la is None or lb is None or span[2] != "ok":
                continue
            fits = [i for i, (a, b) in enumerate(mine) if i not in used and abs(a - la) <= CLOCK_SKEW
                    and abs(b - lb) <= CLOCK_SKEW and (lb - la) + TIME_SLACK >= (b - a)]
            if fits:
                used.add(fits[0])
                continue
            a, b = min(mine, key=lambda ab: abs(ab[0] - la))
            out.append({"field": f"{op} time", "host": f"{_iso_ms(a)} – {_iso_ms(b)} ({b - a:.3f}s)",
                        "log": f"{span[0]} – {span[1]} ({lb - la:.3f}s)"})
    down = host_downtime(list(steps))
    ran = [str(x.get("op")) for x in steps if isinstance(x, dict) and (x.get("op") != "start" or x.get("ok"))]
    stops = [_when(x[0]) for x in given.get("stop") or []]
    ups = [_when(x[1]) for x in given.get("start") or [] if x[2] == "ok"]
    first, last = min((t for t in stops if t is not None), default=None), max((t for t in ups if t is not None),
                                                                             default=None)
    if down is not None and ran.count("stop") == ran.count("start") == 1 and first is not None and last is not None \
            and (last - first) + TIME_SLACK < down:
        out.append({"field": "downtime", "host": f"{down:.3f}s", "log": f"{last - first:.3f}s"})
    return out


#: how far (seconds) a phase may be from the host's own step once the host's clock offset is fixed for the run: the
#: controller's and the host's clocks are read to the millisecond, so one second is room enough and a phase moved
#: by more is moved, however far it stays within CLOCK_SKEW
OFFSET_TOLERANCE = 1.0


def _offset_bounds(rec: JSONObject, log: JSONObject, opened: JSONObject | None) -> tuple[float, float] | None:
    """The host's clock offset for one run (log time minus host time) as the range (low, high) the two moments
    both sides record allow: the host took its lock (its opening record's time) inside the log's preflight phase on
    it -- a resume or rollback, which has none, takes it after the log's line that opens the run and before the
    host's first phase (or its host_finished line, with no phase) -- and it recorded its finish before the log's
    host_finished line. None without the host's opening record or those lines: the phases are then held to
    CLOCK_SKEW only."""
    at = _when(opened.get("opened")) if opened is not None else None
    la, lb, _ = _lock_window(log)
    if at is None or la is None or lb is None:
        return None
    low, high = la - at, lb - at
    told = _when(opened.get("controller_clock")) if opened is not None else None
    if told is not None:  # the controller read its clock before the host took the lock: the offset is no less
        low = max(low, told - at)
    end, logged = _when(rec.get("finished")), _when(log.get("finished"))
    if end is not None and logged is not None:
        high = min(high, logged - end)
    return low, high


def _lock_window(log: JSONObject) -> tuple[float | None, float | None, object]:
    """The log's lines between which a host took a run's lock, by the controller's clock, and the log's line of the
    first: its preflight phase on the host; for a resume or rollback (no preflight), the line that opens it and the
    host's first phase (or its host_finished line, with no phase)."""
    spans = log.get("spans") if isinstance(log.get("spans"), dict) else {}
    assert isinstance(spans, dict)
    pre = next((x for x in spans.get("preflight") or []), None)
    if pre is not None:
        return _when(pre[0]), _when(pre[1]), pre[3] if len(pre) > 3 else None
    return _when(log.get("opened_at")), _when(log.get("started") or log.get("finished")), log.get("opened_line")


def _lock_clock(log: JSONObject, opened: JSONObject | None) -> list[JSONObject]:
    """The controller's clock the host was told at a run's lock (its opening record's ``controller_clock``) against
    the log's lines around that lock (_lock_window): the lines of a run moved together move the offset the log's
    own times fix, but not this clock, which the host keeps. Outside them by more than OFFSET_TOLERANCE is a
    difference naming the log's line; none for a record of an agent before the clock was kept (the old rule)."""
    told = _when(opened.get("controller_clock")) if opened is not None else None
    if told is None:
        return []
    assert opened is not None
    host = (f"{_iso_ms(told)} (the controller's clock, told to the host at its lock at "
            f"{_iso_ms(_when(opened.get('opened')) or 0.0)} by its own)")
    host_zh = f"{_iso_ms(told)}（控制端在加锁时告诉主机的时钟；主机自己的时钟为 {_iso_ms(_when(opened.get('opened')) or 0.0)}）"
    out: list[JSONObject] = []
    # the run's opening line (run_started, resume_requested, rollback_requested) is written before any lock it takes,
    # whatever the kind and whether the run finished: by the writer's own clock (line_clock) it is no later than the
    # controller's clock at this lock. A run moved later by its unsigned lines (its opening line set later, every line
    # after "raised" to it with the true clock beside it) moves that line, not the clock the host kept
    start = _when(log.get("opened_at"))
    # the controller's clock stepped back between the run's first lock and this host's (_unstep): told that much less
    back = log.get("stepped_at_lock")
    if start is not None and start > told + (back if isinstance(back, float) else 0.0) + OFFSET_TOLERANCE:
        out.append({"field": "run start", "line": log.get("opened_line"), "host": host, "host_zh": host_zh,
                    "log": f"{_iso_ms(start)} (the run's opening line, before the lock)",
                    "log_zh": f"{_iso_ms(start)}（运行的开始行，应在加锁之前）"})
    la, lb, line = _lock_window(log)
    if la is None or lb is None or la - OFFSET_TOLERANCE <= told <= lb + OFFSET_TOLERANCE:
        return out
    return out + [{"field": "lock time", "line": line, "host": host, "host_zh": host_zh,
                   "log": f"{_iso_ms(la)} – {_iso_ms(lb)}"}]


def _offset_times(steps: Sequence[object], log: JSONObject, bounds: tuple[float, float] | None) -> list[JSONObject]:
    """Every phase (TIMED_STEPS) the log says went well on a host, under the host's one clock offset of the run
    (``bounds``, _offset_bounds): it must hold one of the host's own steps of that name (its start no later than the
    step's, its end no earlier) within OFFSET_TOLERANCE. A phase moved (even by less than CLOCK_SKEW) is a
    difference naming the log's line of its start; the lock and the finish not agreeing on any offset is one
    naming the host_finished line."""
    if bounds is None:
        return []
    low, high = bounds
    if low > high + OFFSET_TOLERANCE:
        return [{"field": "clock offset", "line": log.get("finished_line"), "host": f"{low:+.3f}s / {high:+.3f}s",
                 "log": log.get("finished")}]
    out: list[JSONObject] = []
    given = log.get("spans") if isinstance(log.get("spans"), dict) else {}
    assert isinstance(given, dict)
    for op in TIMED_STEPS:
        mine = [(a, b) for x in steps if isinstance(x, dict) and x.get("op") == op and x.get("ok")
                for a, b in [(_when(x.get("start")), _when(x.get("at")))] if a is not None and b is not None]
        if not mine:
            continue
        for span in given.get(op) or []:
            la, lb = _when(span[0]), _when(span[1])
            if la is None or lb is None or span[2] != "ok":
                continue
            # the offsets under which this phase holds step (a, b): la <= a + off and b + off <= lb
            if any(max(low, la - a) <= min(high, lb - b) + OFFSET_TOLERANCE for a, b in mine):
                continue
            a, b = min(mine, key=lambda ab: abs(ab[0] + (low + high) / 2 - la))
            line = span[3] if len(span) > 3 else None
            out.append({"field": f"{op} time", "line": line, "offset": f"{low:+.3f}s … {high:+.3f}s",
                        "host": f"{_iso_ms(a)} – {_iso_ms(b)} ({b - a:.3f}s)",
                        "log": f"{span[0]} – {span[1]} ({lb - la:.3f}s)"})
    return out


def _iso_ms(t: float) -> str:
    import datetime as _dt

    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="milliseconds")


#: the fields of a host's own run record, in Chinese
FIELDS_ZH = {"outcome": "结果", "version_after": "之后的版本", "version_before": "之前的版本", "plan": "计划摘要",
             "window": "在维护窗口内", "approvals": "批准摘要", "phases": "执行的阶段", "finished": "结束时间",
             "started": "开始时间", "run": "运行", "stop time": "停止步骤的时间", "install time": "安装步骤的时间",
             "start time": "启动步骤的时间", "rollback time": "回滚步骤的时间", "downtime": "停机时长",
             "clock offset": "时钟偏差（由加锁和结束两个时刻确定）", "lock time": "加锁时控制端的时钟",
             "run start": "运行开始行的时间（不晚于加锁时控制端的时钟）", "approval expiry": "批准的有效期"}


def _shown_zh(field_: str, value: object) -> str:
    """A value of a host's record or of the log, as a difference shows it in Chinese: a phase done or not done, an
    outcome, inside the window or not, in Chinese words; a version, digest or time as it is."""
    from ..core.reasons import word

    if field_ == "phases" and isinstance(value, str):
        phase, _, state = value.partition(" ")
        return f"{word('phase', phase, 'zh')}{'未执行' if state == 'not done' else '已执行'}"
    if field_ == "outcome":
        return word("status", value, "zh") if value is not None else "无"
    if isinstance(value, bool):
        return "是" if value else "否"
    return str(value)


def difference_zh(d: Mapping[str, object]) -> str:
    """One field of a host's own run record that differs from the log, in Chinese (after the host and run)."""
    field_ = str(d.get("field"))
    return (f"{FIELDS_ZH.get(field_, field_)}：主机记为 {_shown_zh(field_, d.get('host_zh', d.get('host')))}，日志为 "
            f"{_shown_zh(field_, d.get('log_zh', d.get('log')))}{_where(d, 'zh')}（已被篡改）")


def _where(d: Mapping[str, object], lang: str = "en") -> str:
    """The log's line a difference names and the host's clock offset it was judged under, when it has them."""
    zh = lang == "zh"
    parts = []
    if d.get("line") is not None:
        parts.append(f"第 {d.get('line')} 行" if zh else f"line {d.get('line')}")
    if d.get("offset") is not None:
        parts.append(f"按主机这次运行的时钟偏差 {d.get('offset')}（由加锁和结束确定）" if zh else
                     f"under the host's clock offset {d.get('offset')} for the run, fixed by its lock and finish")
    if not parts:
        return ""
    return f"（{'，'.join(parts)}）" if zh else f" ({', '.join(parts)})"


def account_texts(a: Mapping[str, object], lang: str = "en") -> list[str]:
    """One host's own record of a run against the log (an item of case_witnesses' ``accounts``), as plain lines:
    each field that differs (ALTERED), each doubt, or that it matches."""
    zh = lang == "zh"
    host = a.get("host")
    out: list[str] = []
    diffs = a.get("differences") if isinstance(a.get("differences"), list) else []
    doubts = a.get("doubts") if isinstance(a.get("doubts"), list) else []
    assert isinstance(diffs, list) and isinstance(doubts, list)
    for d in diffs:
        field_ = str(d.get("field"))
        if zh:
            out.append(f"主机 {host} 自己的运行记录与日志不符——{difference_zh(d)}")
        else:
            out.append(f"host {host}'s own record of the run differs from the log — {field_}: {d.get('host')} on "
                       f"the host, {d.get('log')} in the log{_where(d)} (ALTERED)")
    out += [doubt_text(d, lang) for d in doubts if isinstance(d, dict)]
    if not diffs and not doubts:
        out.append(f"主机 {host} 自己的运行记录（结果、版本、计划、批准、窗口、步骤、时间）与日志相符" if zh else
                   f"host {host}'s own record of the run (outcome, versions, plan, approvals, window, steps, "
                   "times) agrees with the log")
    return out


def doubt_text(d: Mapping[str, object], lang: str = "en") -> str:
    """A doubt about a run a host finished (``kind`` unwitnessed, late or duplicate), in English or Chinese."""
    host, run, when, kind = d.get("host"), d.get("run"), d.get("finished"), d.get("kind")
    if lang == "zh":
        if kind == "late" and d.get("via"):
            return (f"主机 {host} 没有收到运行 {run} 的检查点；覆盖它的第一个见证（运行 {d.get('via')} 的检查点）在主机自己"
                    f"结束该运行 {d.get('seconds')} 秒后才到（超过 {int(LATE_AFTER)} 秒）：迟到的见证")
        if kind == "late":
            return (f"主机 {host} 在自己结束运行 {run} {d.get('seconds')} 秒后才收到其检查点（超过 {int(LATE_AFTER)} "
                    "秒）：迟到的见证")
        if kind == "duplicate":
            return f"主机 {host} 保存了运行 {run} 的 {d.get('count')} 个见证：重复"
        return (f"主机 {host} 于 {when} 结束了运行 {run}，但没有保存其检查点的见证：未见证（若该主机在结束这次运行后 "
                f"{int(LATE_AFTER)} 秒内见证了之后某次运行、续跑或回滚的检查点，它就覆盖这次运行；否则这次运行将一直未经证实）")
    if kind == "late" and d.get("via"):
        return (f"host {host} never received the checkpoint of run {run}; the first witness covering it (the "
                f"checkpoint of run {d.get('via')}) came {d.get('seconds')} s after it finished the run (more than "
                f"{int(LATE_AFTER)} s): late")
    if kind == "late":
        return (f"host {host} received the checkpoint of run {run} {d.get('seconds')} s after it finished the run "
                f"(more than {int(LATE_AFTER)} s): late")
    if kind == "duplicate":
        return f"host {host} keeps {d.get('count')} witnesses of run {run}: duplicate"
    return (f"host {host} finished run {run} at {when} but keeps no witness of its checkpoint: unwitnessed (a later "
            f"run, resume or rollback whose checkpoint this host witnesses within {int(LATE_AFTER)} s of that finish "
            "covers it; after that it stays not proven)")


def _compare_accounts(result: WitnessResult, events: list[JSONObject]) -> None:
    """Every run a host finished (its own record) against the log: the run missing from the log, or a field of it
    different, is a problem; a run the host finished with no witness, or a witness it received late, or twice, is
    a doubt. Lines of a host's record it could not use are a doubt too."""
    witnessed_wrong = {(host, c.get("run")) for host, c, problem in result.findings if problem is not None}
    for h in result.hosts:
        if h.error:
            continue
        if h.unreadable_count:
            result.found(f"host {h.host}: {h.unreadable_count} line(s) of its record could not be used "
                         "(not a witness or run record this version writes)",
                         f"主机 {h.host}：其记录中有 {h.unreadable_count} 行无法使用（不是本版本写的见证或运行记录）",
                         doubt=True)
        mine: dict[str, list[JSONObject]] = {}
        for rec in h.runs:  # every record the host keeps, not only the first of each run
            label = str(rec.get("as") or rec.get("run") or "")
            if label:
                mine.setdefault(label, []).append(rec)
        for label, recs in mine.items():
            if len(recs) > 1:  # the shipped controller finishes a run once (a retried finish no longer holds the lock)
                outcomes = ", ".join(str(r.get("outcome")) for r in recs)
                result.found(f"host {h.host} keeps {len(recs)} records of finishing run {label} ({outcomes}): a run "
                             "ends once on a host, every record after its first was sent by another controller "
                             "(ALTERED)",
                             f"主机 {h.host} 保存了 {len(recs)} 条结束运行 {label} 的记录（{outcomes}）：一次运行在一台主机上只"
                             "结束一次，第一条之后的记录都是另一个控制端发来的（已被篡改）")
        for label, recs in mine.items():
            for rec in recs:
                log = _log_account(events, label, h.host)
                when = _iso(rec.get("finished"))
                diffs: list[JSONObject] = []
                doubts: list[JSONObject] = []
                if log is None:
                    if (h.host, label) not in witnessed_wrong and rec is recs[0]:  # said once (or by its witness)
                        result.found(
                            f"host {h.host} finished run {label} at {when} ({rec.get('outcome')}), but the log has no "
                            "line of that run: cut off or removed",
                            f"主机 {h.host} 于 {when} 结束了运行 {label}（{_shown_zh('outcome', rec.get('outcome'))}），但日志中没有这次运行的任何"
                            "一行：被截断或删除")
                    diffs.append({"field": "run", "host": label, "log": None})
                else:
                    opening = next((o for o in h.opened if str(o.get("as") or o.get("run") or "") == label), None)
                    diffs = _differences(rec, log, opening)
                    for d in diffs:
                        result.found(
                            f"host {h.host}'s own record of run {label} differs from the log: {d['field']} is "
                            f"{d['host']} on the host, {d['log']} in the log{_where(d)}: ALTERED",
                            f"主机 {h.host} 自己对运行 {label} 的记录与日志不符——{difference_zh(d)}")
                if rec is not recs[0]:  # the witness of the run is judged against its first finish only
                    result.accounts.append((h.host, label, diffs, []))
                    continue
                wits = [c for c in h.checkpoints if c.get("run") == label]
                base = {"host": h.host, "run": label, "finished": when}
                later = _covering(result, h, events, label) if not wits else None
                if later is not None:  # a later run's head witnessed here fixes this run's lines too, from its receipt
                    got, end = _when(later.get("witnessed")), _when(rec.get("finished"))
                    if got is not None and end is not None and got - end > LATE_AFTER:
                        doubts.append({**base, "kind": "late", "seconds": int(got - end), "via": later.get("run")})
                    if log is not None and (h.host, label) not in witnessed_wrong:
                        opening = next((o for o in h.opened if str(o.get("as") or o.get("run") or "") == label), None)
                        _end_moved(result, h.host, label, rec, log, opening, later, events, via=str(later.get("run")))
                elif not wits:
                    doubts.append({**base, "kind": "unwitnessed"})
                else:
                    if len(wits) > 1:
                        doubts.append({**base, "kind": "duplicate", "count": len(wits)})
                    got, end = _when(wits[0].get("witnessed")), _when(rec.get("finished"))
                    if got is not None and end is not None and got - end > LATE_AFTER:
                        doubts.append({**base, "kind": "late", "seconds": int(got - end)})
                    if log is not None and (h.host, label) not in witnessed_wrong:
                        opening = next((o for o in h.opened if str(o.get("as") or o.get("run") or "") == label), None)
                        _end_moved(result, h.host, label, rec, log, opening, wits[0], events)
                if log is not None and (h.host, label) not in witnessed_wrong:
                    _end_before_next(result, h, label, rec, log, events)
                for d in doubts:
                    d["text"] = doubt_text(d)
                for d in doubts:
                    result.found(str(d["text"]), doubt_text(d, "zh"), doubt=True)
                result.accounts.append((h.host, label, diffs, doubts))


def _forward_kept(events: list[JSONObject], label: str, hf: JSONObject | None, e: JSONObject) -> float:
    """A forward step of the controller's wall clock (NTP, a VM resumed) between the host's host_finished line
    ``hf`` and the run's end line ``e`` that stays: the log's first line after the run (same machine) shows it too
    (audit/moved.py). That much of the end's lateness is the clock's, not a move; 0 when no later line shows it
    (a run's last line with nothing after it yet: a forward step there is not told from a move)."""
    from .moved import MOVE_TOLERANCE, reading as _reading, step as _step

    a, b = (_reading(hf) if hf is not None else None), _reading(e)
    ahead = _step(a, b) if a is not None and b is not None else None
    if a is None or ahead is None or ahead <= MOVE_TOLERANCE:
        return 0.0
    last = max((int(str(x.get("seq"))) for x in events if x.get("run") == label and type(x.get("seq")) is int),
               default=0)
    after = next((r for x in events if type(x.get("seq")) is int and int(str(x.get("seq"))) > last
                  and x.get("run") != label for r in [_reading(x)] if r is not None), None)
    kept = _step(a, after) if after is not None else None
    return max(0.0, min(ahead, kept)) if kept is not None else 0.0


def _end_before_next(result: WitnessResult, h: HostWitness, label: str, rec: JSONObject, log: JSONObject,
                     events: list[JSONObject]) -> None:
    """The run's end held to the host's NEXT opening record (the lock of the run that followed it there, by the
    host's own clock, ``opened``): every end line of the run (run_finished, its checkpoint) the log puts before that
    next run's opening line was written before the controller asked for that lock, so by the controller's clock it
    is no later than ``opened`` plus this run's clock offset (_end_moved). A run whose end the log puts after the
    next run's opening (two runs at once, on other hosts) is not held so."""
    labels = [str(o.get("as") or o.get("run") or "") for o in h.opened]
    if label not in labels:
        return
    after = [o for o in h.opened[labels.index(label) + 1:] if str(o.get("as") or o.get("run") or "") != label]
    if not after or _when(after[0].get("opened")) is None:
        return
    nxt = after[0]
    nxt_label = str(nxt.get("as") or nxt.get("run") or "")
    nxt_line = next((e.get("seq") for e in events if e.get("run") == nxt_label and e.get("event") in _LOG_KINDS),
                    None)
    if not isinstance(nxt_line, int):
        return
    _end_moved(result, h.host, label, rec, log, h.opened[labels.index(label)], {"witnessed": nxt.get("opened")},
               events, via=nxt_label, before=nxt_line)


def _end_moved(result: WitnessResult, host: str, label: str, rec: JSONObject, log: JSONObject,
               opening: JSONObject | None, wit: Mapping[str, object], events: list[JSONObject],
               via: str | None = None, before: int | None = None) -> None:
    """The run's end (its run_finished lines and the checkpoint the host witnessed) held to the time the host
    received that checkpoint by its own clock (``witnessed``): the controller wrote them before it sent the
    witness, so by the controller's clock they are no later than that time plus the run's clock offset (log minus
    host: _offset_bounds, else the offset the host's finish and the log's host_finished line allow, else
    CLOCK_SKEW), within OFFSET_TOLERANCE. A later one was moved later (ALTERED, naming the line); the ``mono``
    difference from the host's host_finished line, when it does not show the jump, is said beside it. ``via``: the
    later run whose witness (it covers this run's lines) or, with ``before`` (the log's line that opens it: only
    this run's end lines before it are held), whose lock on the host (``wit``'s ``witnessed``: its opening record's
    time) bounds the end instead."""
    got = _when(wit.get("witnessed"))
    if got is None:
        return
    bounds = _offset_bounds(rec, log, opening)
    end, logged = _when(rec.get("finished")), _when(log.get("finished"))
    high = bounds[1] if bounds is not None else (logged - end if end is not None and logged is not None
                                                 else CLOCK_SKEW)
    latest = got + high + OFFSET_TOLERANCE
    seq = _seq_of(wit) if via is None else None
    hf = next((e for e in events if e.get("event") == "host_finished" and e.get("run") == label
               and e.get("host") == host), None)
    for e in events:
        if e.get("run") != label or not (e.get("event") == "run_finished" or e.get("event") == "checkpoint"
                                         and (seq is None or e.get("seq") == seq + 1)):
            continue
        if before is not None and not (isinstance(e.get("seq"), int) and int(str(e.get("seq"))) < before):
            continue
        at = _when(line_clock(e))  # the controller's clock, not a time raised after it stepped back
        if at is None or at <= latest + _forward_kept(events, label, hf, e):
            continue
        mono_note, mono_zh = "", ""
        if hf is not None and isinstance(hf.get("mono"), (int, float)) and isinstance(e.get("mono"), (int, float)) \
                and _when(line_clock(hf)) is not None:
            wall = at - (_when(line_clock(hf)) or 0.0)
            mono = float(str(e.get("mono"))) - float(str(hf.get("mono")))
            if wall - mono > OFFSET_TOLERANCE:
                mono_note = (f"; its monotonic clock ran {mono:.3f} s since the host_finished line "
                             f"{hf.get('seq')}, its wall time {wall:.3f} s")
                mono_zh = f"；自 host_finished 行（第 {hf.get('seq')} 行）起其单调时钟只走了 {mono:.3f} 秒，墙上时间却走了 {wall:.3f} 秒"
        line, event = e.get("seq"), e.get("event")
        what, what_zh = ("received that run's checkpoint", "就收到了这次运行的检查点") if via is None else (
            (f"locked for the next run {via} (opened by the log's line {before}, after this one)",
             f"就为下一次运行 {via} 加了锁（日志第 {before} 行开启它，在本行之后）") if before is not None else
            (f"received the checkpoint of the later run {via}, which covers this run's lines",
             f"就收到了之后的运行 {via} 的检查点（它涵盖这次运行的各行）"))
        result.found(
            f"line {line} ({event} of run {label}) says {_iso_ms(at)}, but host {host} {what} at {_iso_ms(got)} by "
            f"its own clock (the run's clock offset at most {high:+.3f} s): "
            f"{at - latest + OFFSET_TOLERANCE:.3f} s later than it can have been written{mono_note}: the run's end "
            "was moved later (ALTERED)",
            f"第 {line} 行（运行 {label} 的 {event}）记的时间是 {_iso_ms(at)}，但主机 {host} 按自己的时钟在 {_iso_ms(got)} "
            f"{what_zh}（运行的时钟偏差至多 {high:+.3f} 秒）：比它可能写下的时间晚了 "
            f"{at - latest + OFFSET_TOLERANCE:.3f} 秒{mono_zh}：运行的结束时间被往后挪了（已被篡改）")


def _twice_finished(result: WitnessResult, events: list[JSONObject]) -> None:
    """The log's own side of "a run ends once on a host": two host_finished lines of one run on one host (the first
    one read alone would hide what the second says) are a problem naming both lines."""
    first: dict[tuple[str, str], object] = {}
    for e in events:
        if e.get("event") != "host_finished" or not isinstance(e.get("run"), str):
            continue
        key = (str(e.get("run")), str(e.get("host")))
        if key not in first:
            first[key] = e.get("seq")
            continue
        run, host = key
        result.found(f"the log ends run {run} on host {host} twice (host_finished on lines {first[key]} and "
                     f"{e.get('seq')}, the second {e.get('outcome')}): a run ends once on a host (ALTERED)",
                     f"日志两次记录运行 {run} 在主机 {host} 上结束（第 {first[key]} 行和第 {e.get('seq')} 行的 host_finished，"
                     f"第二次为 {e.get('outcome')}）：一次运行在一台主机上只结束一次（已被篡改）")


def _covering(result: WitnessResult, h: HostWitness, events: list[JSONObject], label: str) -> JSONObject | None:
    """For a run ``h`` finished but never received the checkpoint of: the first witness (by its receipt on the host)
    of a later checkpoint of the log that ``h`` keeps and the log matches; its head covers every line before it,
    this run's own checkpoint among them. None when there is none (or the log has no checkpoint of the run)."""
    own = [_seq_of(c) for e in events if e.get("event") == "checkpoint" and e.get("run") == label
           for c in [e.get("checkpoint")] if isinstance(c, dict)]
    if not own:  # a run killed before its checkpoint: a later checkpoint after its last line covers all of it (the
        # one of the resume or rollback that recovers it, which the host takes for it: attack20r16 M2)
        mine = [int(s) for e in events if e.get("run") == label for s in [e.get("seq")] if type(s) is int]
        if not mine:
            return None
        own = [max(mine) - 1]  # a head at or after its last line
    good = [c for host, c, problem in result.findings if host == h.host and problem is None
            and _seq_of(c) > own[0] and _when(c.get("witnessed")) is not None]
    return min(good, key=lambda c: _when(c.get("witnessed")) or 0.0) if good else None


#: outcomes the log gives a host that ended its run there (the host then has finished it too)
_ENDED = ("committed", "rolled_back", "restored", "unchanged")

#: the kinds a host records at a run's lock (its opening record's ``kind``, stated by the controller and checked by
#: the host: hostagent/witness.py) that fit each opening line of the log: a run_started is a first run (upgrader run,
#: or the customer's guide); a resume_requested after a canary is the continuation that opens the waiting hosts,
#: any other one a resume; a rollback_requested a rollback
_LOG_KINDS = {"run_started": ("run", "guided"), "resume_requested": ("resume",),
              "rollback_requested": ("rollback",)}


def _log_kind(opener: Mapping[str, object] | None) -> tuple[str, str, tuple[str, ...]]:
    """The log's opening line of a run label as the auditor reads it (its event and line, in English and Chinese),
    and the host kinds that fit it."""
    if opener is None:
        return "no opening line", "没有开始行", ()
    event, data, seq = str(opener.get("event")), opener.get("data"), opener.get("seq")
    continuation = event == "resume_requested" and isinstance(data, dict) and data.get("after") == "canary confirmed"
    return (f"{event}{' after the canary' if continuation else ''} (line {seq})",
            f"{event}{'（金丝雀之后）' if continuation else ''}（第 {seq} 行）",
            ("continuation",) if continuation else _LOG_KINDS.get(event, ()))


def _kind_problem(rec: Mapping[str, object], opener: Mapping[str, object] | None) -> JSONObject | None:
    """The host's kind and the log's opening (the finding's values, en and zh) when the host's opening record says
    another kind of run than the log opens it as; None when they fit. The host's record says its kind itself (never
    inferred from which fields it holds); only a record of an agent before kinds were kept falls back on its
    fields: a first run alone records a requester and a policy."""
    said, said_zh, fits = _log_kind(opener)
    file, line = rec.get("file"), rec.get("file_line")
    where, where_zh = (f"{file} line {line}", f"{file} 第 {line} 行") if file else ("its record", "其记录")
    if "kind" not in rec:  # an older agent's record: no kind kept
        if (rec.get("requester") is None and rec.get("policy") is None) or "run" in fits:
            return None
        shown, shown_zh = "first run", "首次运行"
    elif rec.get("kind") in fits:
        return None
    else:
        shown = shown_zh = repr(rec.get("kind"))
    return {"host_value": f"{shown} ({where})", "log_value": said,
            "host_value_zh": f"{shown_zh}（{where_zh}）", "log_value_zh": said_zh}


def _made_up_recoveries(events: list[JSONObject], h: HostWitness, opened: Mapping[str, JSONObject],
                        openers: Mapping[str, Mapping[str, object] | None], first_seq: Mapping[str, int]) -> list[JSONObject]:
    """A resume's or rollback's end of host ``h`` held to what the engine can write there (attack20r12 H1). A resume
    of a host whose run had already ended there (not needing a person) keeps that end ("already finished: nothing
    to do", no lock): another outcome is a made-up line. Otherwise a resume that ends a host committed or rolled
    back, or a rollback that ends it restored, took the host's lock first (a rollback ends a host restored with no
    lock only when the run never locked it: refused at its preflight there, or no record of the run's lock on the
    host): a host that keeps opening records of the log's earlier runs and none of this part never ran it."""
    out: list[JSONObject] = []
    host = h.host
    for e in events:
        label, outcome = e.get("run"), e.get("outcome")
        if e.get("event") != "host_finished" or e.get("host") != host or not isinstance(label, str) \
                or not isinstance(outcome, str):
            continue
        opener = openers.get(label)
        data = opener.get("data") if opener is not None else None
        if not isinstance(data, dict) or opener is None:
            continue
        kind = opener.get("event")
        after = kind == "resume_requested" and data.get("after") is not None
        of = data.get("of_run")
        if kind not in ("resume_requested", "rollback_requested") or not isinstance(of, str):
            continue
        seq = e.get("seq") if isinstance(e.get("seq"), int) else 10 ** 12
        before = first_seq.get(label, 10 ** 12)
        earlier = [x.get("outcome") for x in events
                   if x.get("event") == "host_finished" and x.get("host") == host and isinstance(x.get("run"), str)
                   and (x["run"] == of or str(x["run"]).startswith(of + "/")) and x.get("run") != label
                   and isinstance(x.get("seq"), int) and int(str(x["seq"])) < before
                   and x.get("outcome") not in ("not_started", "waiting")]
        had = earlier[-1] if earlier else None
        if kind == "resume_requested" and isinstance(had, str) and had != "needs_person":
            if outcome != had:
                out.append({"kind": "resume_outcome", "run": label, "outcome": outcome, "had": had, "of_run": of})
            continue
        if after:
            continue  # a continuation after the canary runs its waiting hosts as a first run does (held by _reached)
        if outcome not in ("committed", "rolled_back", "restored") or label in opened or outcome == had:
            continue
        journal = data.get("journal")
        seen = journal.get(host) if isinstance(journal, dict) else None
        if kind == "resume_requested" and isinstance(seen, dict) and seen.get("ended") == outcome and any(
                str(rec.get("as") or rec.get("run") or "").split("/")[0] == of
                and rec.get("outcome") == ("rolled_back" if outcome == "restored" else outcome) for rec in h.runs):
            continue  # the run's journal had ended it so (its log line lost in a crash) and the host finished it
        modern = any(first_seq.get(o, 10 ** 12) < before for o in opened)
        if not modern or int(str(seq)) < before:
            continue
        if kind == "rollback_requested":
            refused = any(x.get("run") == of and x.get("host") == host and x.get("event") == "phase_finished"
                          and x.get("phase") == "preflight" and x.get("outcome") != "ok" for x in events)
            if refused or of not in opened:
                continue  # never locked by the run: nothing of it to undo, the rollback takes no lock
        out.append({"kind": "recovery_unlocked", "run": label, "outcome": outcome, "of_run": of})
    return out


def _host_time(value: object, offset: object) -> str:
    """A host's clock time (seconds) as ISO text with the host's own UTC offset when it gave one."""
    import datetime as _dt

    t = _when(value)
    if t is None:
        return "?"
    tz = _dt.timezone.utc
    if isinstance(offset, str) and len(offset) == 5 and offset[0] in "+-" and offset[1:].isdigit():
        sign = -1 if offset[0] == "-" else 1
        tz = _dt.timezone(sign * _dt.timedelta(hours=int(offset[1:3]), minutes=int(offset[3:])))
    return _dt.datetime.fromtimestamp(t, tz).isoformat(timespec="seconds")


def _who(v: object) -> str:
    if not isinstance(v, dict):
        return str(v)
    return f"{v.get('user')}@{v.get('host')} key {v.get('key')}"


def opening_text(d: Mapping[str, object], lang: str = "en") -> str:
    """One finding of _compare_openings (``kind``: no_opening, not_in_log, unfinished, field, window, lock), in
    English or Chinese."""
    from ..core.reasons import translate

    zh = lang == "zh"
    host, run, when, kind = d.get("host"), d.get("run"), d.get("opened"), d.get("kind")
    if kind == "no_opening":
        return (f"日志称运行 {run} 取得了主机 {host} 的锁，但该主机没有这次运行的开始记录：无法证明它在那里运行过（未证实）"
                if zh else f"the log says run {run} took host {host}'s lock, but the host keeps no opening record of "
                "that run: not proven that it ran there")
    if kind == "no_opening_closed":
        return (f"日志称已签名的运行 {run} 到达了主机 {host}（取得其锁或在那里结束），但该主机没有这次运行的开始记录，而它保存着"
                "日志中更早运行的开始记录：这次运行从未在那里运行过（已被篡改）" if zh else
                f"the log says signed run {run} reached host {host} (took its lock or ended there), but the host keeps "
                "no opening record of that run, though it keeps those of earlier runs of the log: the run never ran "
                "there (ALTERED)")
    if kind == "resume_outcome":
        return (f"日志称续跑 {run} 在主机 {host} 上以 {_shown_zh('outcome', d.get('outcome'))} 结束，但它续跑的运行 "
                f"{d.get('of_run')} 在该主机上早已以 {_shown_zh('outcome', d.get('had'))} 结束；续跑保留主机已有的结局"
                "（“已结束，无事可做”），不会写出别的结局：这是编造的行（已被篡改）" if zh else
                f"the log says resume {run} ended host {host} {d.get('outcome')}, but the run it resumes, "
                f"{d.get('of_run')}, had already ended {d.get('had')} there; a resume keeps the end a host already "
                "had (\"already finished: nothing to do\") and writes no other: a made-up line (ALTERED)")
    if kind == "recovery_unlocked":
        return (f"日志称 {run} 在主机 {host} 上以 {_shown_zh('outcome', d.get('outcome'))} 结束，这需要先取得该主机的锁，"
                f"但该主机没有这次续跑/回滚的开始记录，而它保存着日志中更早运行的开始记录：它从未在那里运行过（已被篡改）"
                if zh else
                f"the log says {run} ended host {host} {d.get('outcome')}, which upgrader does only under the host's "
                "lock, but the host keeps no opening record of this resume/rollback, though it keeps those of earlier "
                "runs of the log: it never ran there (ALTERED)")
    if kind == "not_in_log":
        return (f"主机 {host} 按自己的时钟于 {when} 开始了运行 {run}（为 {d.get('who')} 加锁），但日志中没有这次运行的任何"
                "一行：被截断或删除（已被篡改）" if zh else
                f"host {host} opened run {run} at {when} by its own clock (its lock taken for {d.get('who')}), but the "
                "log has no line of that run: cut off or removed (ALTERED)")
    if kind == "unfinished":
        return (f"主机 {host} 按自己的时钟于 {when} 开始了运行 {run}，但从未在那里结束它；日志却称它在该主机上以 "
                f"{_shown_zh('outcome', d.get('outcome'))} 结束（已被篡改）" if zh else
                f"host {host} opened run {run} at {when} by its own clock and never finished it there, but the log "
                f"says it ended {d.get('outcome')} on that host (ALTERED)")
    if kind == "field":
        name = {"plan": "计划摘要", "policy sha256": "策略 sha256", "requester": "申请人", "approvals": "批准摘要",
                "kind": "运行类型", "operator": "操作员", "approval expiry": "批准的有效期", "target": "目标版本",
                "package sha256": "安装包 sha256", "current version": "原版本"}
        return (f"主机 {host} 对运行 {run} 的开始记录与日志不符——{name.get(str(d.get('field')), d.get('field'))}：主机记为 "
                f"{d.get('host_value_zh', d.get('host_value'))}，日志为 {d.get('log_value_zh', d.get('log_value'))}（已被篡改）"
                if zh else
                f"host {host}'s opening record of run {run} differs from the log: {d.get('field')} is "
                f"{d.get('host_value')} on the host, {d.get('log_value')} in the log (ALTERED)")
    if kind == "window":
        inside = d.get("log_inside")
        return (f"主机 {host} 按自己的时钟于 {when} 开始了运行 {run}：{translate(str(d.get('reason')), 'zh')}（策略 sha256 "
                f"{d.get('policy')}）；"
                f"日志却称这次运行在维护窗口{'内' if inside else '外'}（已被篡改）" if zh else
                f"host {host} opened run {run} at {when} by its own clock: {d.get('reason')} (policy sha256 "
                f"{d.get('policy')}); the log says the run was {'inside' if inside else 'outside'} the window (ALTERED)")
    if kind == "window_unjudged":
        return (f"运行 {run}（主机 {host} 于 {when} 开始）的维护窗口未能判定：该运行的策略 sha256 为 {d.get('run_policy')}，"
                f"而给出的策略为 {d.get('policy')}；请用 --earlier-policy（或 --policy）给出当时生效的策略文件（未证实）" if zh else
                f"the service window of run {run} (opened on host {host} at {when}) was not judged: the run's policy "
                f"sha256 is {d.get('run_policy')}, the policy given is {d.get('policy')}; pass the policy file in force "
                "at that time with --earlier-policy (or --policy) (NOT PROVEN)")
    if kind == "steps":
        step, line, said = d.get("step"), d.get("line"), d.get("said")
        log_zh = {"failed": f"称它在该主机上失败（第 {line} 行）",
                  "unchanged": f"称这次运行在该主机上以“未改变”结束（第 {line} 行）"}.get(
                      str(said), f"这次运行在该主机上没有 {step} 阶段")
        log_en = {"failed": f"the log says it failed there (line {line})",
                  "unchanged": f"the log says the run ended unchanged there (line {line})"}.get(
                      str(said), f"the log has no {step} phase of that run on that host")
        return (f"主机 {host} 为运行 {run} 执行了 {step}（它开始了这次运行但没有结束），而日志中{log_zh}（已被篡改）" if zh
                else f"host {host} executed {step} for run {run} (opened there at {when}, never finished), but "
                f"{log_en} (ALTERED)")
    if kind == "claimed":
        return (f"日志称运行 {run} 的 {d.get('step')} 在主机 {host} 上成功（第 {d.get('line')} 行），而该主机从未为这次运行执行"
                f"它（{when} 开始，没有结束）（已被篡改）" if zh else
                f"the log says {d.get('step')} of run {run} went well on host {host} (line {d.get('line')}), but the "
                f"host never executed it for that run (opened there at {when}, never finished) (ALTERED)")
    if kind == "open_time":
        return (f"主机 {host} 自己记录的运行 {run} 的步骤（未结束）与日志不符——" + difference_zh(
                    {"field": d.get("field"), "host": d.get("host_value"), "log": d.get("log_value"),
                     "line": d.get("line"), **({"host_zh": d["host_value_zh"]} if "host_value_zh" in d else {}),
                     **({"log_zh": d["log_value_zh"]} if "log_value_zh" in d else {})})
                if zh else
                f"host {host}'s own steps of run {run} (opened there at {when}, never finished) differ from the log: "
                f"{d.get('field')} is {d.get('host_value')} on the host, {d.get('log_value')} in the log"
                f"{_where({'line': d.get('line')})} (ALTERED)")
    if kind == "expired":
        src = d.get("source") == "host"
        whose = "the host read from the approval's signed statement at its lock" if src else "the log gives it"
        return (f"主机 {host} 按自己的时钟于 {when} 为运行 {run} 加锁，而批准 {str(d.get('approval'))[:12]}…（{d.get('approver')}）"
                f"已于 {d.get('expires')} 过期（{'主机在加锁时从批准签名的原文读到' if src else '日志所记'}的有效期）：变更在批准过期后才"
                "开始（已被篡改）" if zh else
                f"host {host} took its lock for run {run} at {when} by its own clock, after approval "
                f"{str(d.get('approval'))[:12]}… ({d.get('approver')}) expired at {d.get('expires')} (the expiry "
                f"{whose}): a change started on an expired approval (ALTERED)")
    if kind == "reused":
        return (f"批准 {d.get('approval')} 已被运行 {d.get('first')}（主机 {d.get('first_host')} 自己的记录）用掉，主机 {host} "
                f"却于 {when} 为运行 {run} 又接受了它：一份批准只能用一次（已被篡改）" if zh else
                f"approval {d.get('approval')} was spent by run {d.get('first')} (host {d.get('first_host')}'s own "
                f"record), yet host {host} opened run {run} with it at {when}: an approval is used once (ALTERED)")
    return (f"主机 {host} 被运行 {run}（{d.get('who')}）锁定，而日志中没有这次运行的任何一行：被截断或删除（已被篡改）" if zh
            else f"host {host} is locked by run {run} ({d.get('who')}), a run the log has no line of: cut off or "
            "removed (ALTERED)")


#: the host's steps of a run it opened and never finished that the log's lines of that run must agree with
OPEN_STEPS = ("stop", "install", "start", "rollback")


def _open_differences(steps: Sequence[JSONObject], log: JSONObject | None, own: bool,
                      opened: JSONObject | None = None) -> list[JSONObject]:
    """The log's lines of a run a host opened and never finished, against the host's own steps of it (each part of
    a run keeps its own steps on the host: a later rollback or resume does not take them over). A step the host
    executed that the log has no phase of, says failed, or whose run it says ended unchanged there; a phase the
    log says went well that the host never executed; a phase's time or the outage the host's steps contradict --
    each a finding (kind "steps", "claimed" or "open_time"). A phase the log started and never ended (the
    controller died in it) agrees with either. ``own``: the steps are this part's own (an agent before step labels
    gave a resume's steps no label; only a first run's are then compared). ``opened``: the host's opening record
    of the run, which with the log's lines around the lock fixes the host's clock offset: each phase is then held
    to that one offset, as a finished run's are (not only to CLOCK_SKEW)."""
    if log is None:
        return []
    if not own:  # the steps are not this part's own to compare; the clock the host kept at its lock still holds
        return [{"kind": "open_time", "field": d.get("field"), "host_value": d.get("host"), "log_value": d.get("log"),
                 "line": d.get("line"), **({"host_value_zh": d["host_zh"]} if "host_zh" in d else {}),
                 **({"log_value_zh": d["log_zh"]} if "log_zh" in d else {})} for d in _lock_clock(log, opened)]
    spans = log.get("spans") if isinstance(log.get("spans"), dict) else {}
    assert isinstance(spans, dict)
    done = {str(x.get("op")) for x in steps if x.get("ok")}
    out: list[JSONObject] = []
    for op in OPEN_STEPS:
        mine = spans.get(op) or []
        ok = [x for x in mine if x[2] == "ok"]
        running = [x for x in mine if x[1] is None]
        if op in done and not ok and not running:
            failed = next((x for x in mine if x[2] is not None), None)
            if op == "stop" and failed is None and spans.get("rollback"):
                continue  # a rollback phase stops the service first: the host's stop step is that phase's
            out.append({"kind": "steps", "step": op, "said": "failed" if failed else "absent",
                        "line": failed[3] if failed is not None and len(failed) > 3 else None})
        elif op not in done and ok and op != "stop":  # a stop of a service already down may ask nothing of the host
            out.append({"kind": "claimed", "step": op, "line": ok[0][3] if len(ok[0]) > 3 else None})
    if log.get("outcome") == "unchanged":
        changed = next((op for op in ("install", "stop") if op in done), None)
        if changed is not None:
            out.append({"kind": "steps", "step": changed, "said": "unchanged", "line": log.get("finished_line")})
    said = {(d.get("step"), d.get("kind")) for d in out}
    timed = _step_times(list(steps), spans)
    fields = {d.get("field") for d in timed}  # a phase already beyond CLOCK_SKEW is said once
    timed += [d for d in _offset_times(list(steps), log, _offset_bounds({}, log, opened)) if d.get("field") not in fields]
    timed += _lock_clock(log, opened)
    for d in timed:
        if (str(d.get("field")).split(" ")[0], "claimed") not in said:
            out.append({"kind": "open_time", "field": d.get("field"), "host_value": d.get("host"),
                        "log_value": d.get("log"), "line": d.get("line"),
                        **({"host_value_zh": d["host_zh"]} if "host_zh" in d else {}),
                        **({"log_value_zh": d["log_zh"]} if "log_zh" in d else {})})
    return out


#: the kinds of run that start a change on an approval (hostagent/witness.py NEEDS_VALID_APPROVAL): the host's lock
#: of such a run must come before each approval's expiry, by the host's own clock
_NEEDS_VALID_APPROVAL = ("run", "guided", "continuation")


def _expiry_findings(rec: JSONObject, src: Mapping[str, object], first_run: bool) -> list[JSONObject]:
    """A host's lock of a run, guided run or continuation (its opening record's ``kind``; a record of an agent before
    kinds were kept: a first run) against the expiry of each approval the run presents: the expiry the host read from
    the approval's own signed statement at that lock (its record's ``expires``), else the log's (an agent before this
    check kept none; ``--approvals DIR`` holds the log's to the file's). A lock at or after an expiry by the host's own
    clock is a finding (kind "expired"); an expiry the host read that the log gives otherwise is one (kind "field")."""
    kind = rec.get("kind") if "kind" in rec else ("run" if first_run else None)
    at = _when(rec.get("opened"))
    if kind not in _NEEDS_VALID_APPROVAL or at is None:
        return []
    kept = rec.get("expires") if isinstance(rec.get("expires"), dict) else {}
    assert isinstance(kept, dict)
    out: list[JSONObject] = []
    given = src.get("approvals")
    for a in given if isinstance(given, list) else []:
        if not isinstance(a, dict) or not isinstance(a.get("digest"), str):
            continue
        digest, said = str(a["digest"]), a.get("expires")
        own = kept.get(digest)
        if own is not None and _when(said) is not None and _when(own) != _when(said):
            out.append({"kind": "field", "field": "approval expiry", "host_value": f"{own} ({digest[:12]}…, from the "
                        "approval's signed statement at the lock)", "log_value": str(said),
                        "host_value_zh": f"{own}（{digest[:12]}…，加锁时取自批准签名的原文）"})
        until = _when(own if own is not None else said)
        if until is not None and at >= until:
            out.append({"kind": "expired", "approval": digest, "approver": a.get("approver"),
                        "expires": own if own is not None else said, "source": "host" if own is not None else "log"})
    return out


def _compare_openings(result: WitnessResult, events: list[JSONObject], windows: Mapping[str, object],
                      policy_digest: str | None) -> None:
    """The log against each host's opening records (what a run was started with, recorded when it took the lock)
    and its lock, both ways: a run the log says took a host's lock with no opening record there is a doubt; a run
    opened on a host that the log lacks, a run the log ends (committed, rolled back) that the host never finished,
    an opening field (plan, approvals, requester, policy) that differs, a lock held by a run the log lacks, or a
    window the host's own clock contradicts, is a problem (ALTERED)."""
    import datetime as _dt

    labels = {str(e.get("run")) for e in events if isinstance(e.get("run"), str)}
    runs = {label.split("/")[0] for label in labels}
    reached = _reached(events)
    closed = {str(e.get("run")) for e in events if e.get("event") == "checkpoint" and isinstance(e.get("run"), str)}
    first_seq: dict[str, int] = {}
    for e in events:
        if isinstance(e.get("run"), str) and isinstance(e.get("seq"), int):
            first_seq.setdefault(str(e["run"]), int(str(e["seq"])))
    opening = run_openings(events)  # the run's opening line (its first line, an opening event), whatever its kind
    openers = {label: opening.get(label) for label in labels}
    # a first run by its opening line (not its id), and a continuation after a canary, which runs its waiting hosts
    # as a first run does (attack20r14 H1)
    firstlike = {label for label, o in openers.items() if first_like(o)}
    # a first run's host ended committed, rolled back or restored was locked by it, whatever its lines say of its
    # start and preflight (a resume's may not be; a host that needs a person may never have been: unreachable, or
    # locked by another run)
    for e in events:
        run_, host_ = e.get("run"), e.get("host")
        if e.get("event") == "host_finished" and isinstance(run_, str) and run_ in firstlike \
                and isinstance(host_, str) and e.get("outcome") in ("committed", "rolled_back", "restored"):
            reached.setdefault(run_, set()).add(host_)
    started = {label: o.get("data") for label, o in openers.items()
               if o is not None and isinstance(o.get("data"), dict)}
    first_runs = {label for label, o in openers.items() if o is not None and o.get("event") == "run_started"}
    ended = {(str(e.get("run")), str(e.get("host"))): e.get("outcome") for e in events
             if e.get("event") == "host_finished"}

    def found(doubt: bool, **d: object) -> None:
        result.openings.append({**d, "doubt": doubt})
        result.found(opening_text(d), opening_text(d, "zh"), doubt=doubt)

    # an approval is single-use: spent by a run a host finished (its own record), named by another run a host opened
    used: dict[str, tuple[str, str]] = {}

    def digests(rec: JSONObject) -> list[str]:
        given = rec.get("approvals")
        return [str(a) for a in given] if isinstance(given, list) else []

    for h in result.hosts:
        for rec in [] if h.error else h.runs:
            for a in digests(rec):
                used.setdefault(a, (str(rec.get("run") or ""), h.host))
    for h in result.hosts:
        for rec in [] if h.error else h.opened:
            run_id = str(rec.get("run") or "")
            for a in digests(rec):
                first = used.get(a)
                if first is not None and first[0] != run_id:
                    found(False, kind="reused", host=h.host, run=str(rec.get("as") or run_id), approval=str(a),
                          first=first[0], first_host=first[1],
                          opened=_host_time(rec.get("opened"), rec.get("utc_offset")))
    for h in result.hosts:
        if h.error:
            continue
        opened: dict[str, JSONObject] = {}
        for rec in h.opened:
            opened.setdefault(str(rec.get("as") or rec.get("run") or ""), rec)
        finished = {str(rec.get("as") or rec.get("run") or "") for rec in h.runs}
        for label in sorted(run for run, hosts in reached.items() if h.host in hosts and run not in opened):
            # a signed run the host would have opened: with an agent that keeps opening records (it keeps one of a
            # run earlier in the log), the missing record is a run that never ran there; else not proven
            modern = label in closed and any(first_seq.get(o, 10 ** 12) < first_seq.get(label, 0) for o in opened)
            found(not modern, kind="no_opening_closed" if modern else "no_opening", host=h.host, run=label)
        for label, rec in opened.items():
            base = {"host": h.host, "run": label, "opened": _host_time(rec.get("opened"), rec.get("utc_offset"))}
            if label not in labels:
                if label not in finished:  # a finished one is named by its own record already
                    found(False, kind="not_in_log", who=f"{rec.get('user')}@{rec.get('controller')}", **base)
                continue
            outcome = ended.get((label, h.host))
            if label not in finished and outcome in _ENDED and outcome != "unchanged":
                found(False, kind="unfinished", outcome=outcome, **base)
            if label not in finished:  # what the host did, against what the log says of it, finished or not
                for d in _open_differences(h.open_steps.get(label, []), _log_account(events, label, h.host),
                                           label in first_runs or any("as" in x for x in h.open_steps.get(label, [])),
                                           rec):
                    found(False, **d, **base)
            # who ran it: the controller's user and machine the host was told at its lock, against every actor the
            # log gives the run's lines (the engineer who re-signs the log cannot give the run to someone else)
            told = (rec.get("user"), rec.get("controller"))
            if all(isinstance(x, str) for x in told):
                for ran in dict.fromkeys((a.get("user"), a.get("host")) for e in events if e.get("run") == label
                                         for a in [e.get("actor")] if isinstance(a, dict)):
                    if ran != told:
                        found(False, kind="field", field="operator", host_value="%s@%s" % told,
                              log_value="%s@%s" % ran, **base)
                        break
            sd = started.get(label)
            if not isinstance(sd, dict):
                continue
            first_run = label in first_runs
            kind_problem = _kind_problem(rec, openers.get(label))
            if kind_problem is not None:
                found(False, kind="field", field="kind", **kind_problem, **base)
            # a resume or rollback carries on its first run's plan, approvals and requester (verify_log holds it to
            # an of_run earlier in the log); its window is its own, and so is its policy when it recorded one (since
            # attack20r5: the policy in force when it ran, which the customer may have changed since the first run)
            of = sd if first_run else started.get(str(sd.get("of_run")))
            src = of if isinstance(of, dict) else {}
            own = sd.get("policy") if not first_run and isinstance(sd.get("policy"), dict) else None
            pol, who, win = own or src.get("policy"), src.get("requester"), sd.get("window")
            log_policy = pol.get("sha256") if isinstance(pol, dict) else None
            log_who = who if isinstance(who, dict) else {}
            log_approvals = sorted(str(a.get("digest")) for a in src.get("approvals") or [] if isinstance(a, dict))
            checks: list[tuple[str, object, object]] = [("plan", rec.get("plan"), src.get("plan")),
                                                        ("policy sha256", rec.get("policy"), log_policy)]
            asked, spent = rec.get("requester"), rec.get("approvals")
            if isinstance(asked, dict):
                mine = {k: asked.get(k) for k in ("user", "host", "key")}
                checks.append(("requester", mine, {k: log_who.get(k) for k in ("user", "host", "key")}))
            if isinstance(spent, list) and (spent or log_approvals and first_run):
                checks.append(("approvals", sorted(str(a) for a in spent), log_approvals))
            # what the run changed on this host, as its lock was told (records since attack20r9; older ones keep
            # none): the target version, the package sha256 and the version it started from, against the log's
            # opening line of the run (a resume's or rollback's: its first run's)
            planned = next((x for x in src.get("hosts") or [] if isinstance(x, dict) and x.get("host") == h.host),
                           None)
            if isinstance(planned, dict):
                package = planned.get("package")
                checks += [("target", rec.get("target"), planned.get("target")),
                           ("package sha256", rec.get("package"),
                            package.get("sha256") if isinstance(package, dict) else None),
                           ("current version", rec.get("current"), planned.get("current"))]
            for name, host_value, log_value in checks:
                if host_value is not None and host_value != log_value:
                    shown = (_who(host_value), _who(log_value)) if name == "requester" else (host_value, log_value)
                    found(False, kind="field", field=name, host_value=shown[0], log_value=shown[1], **base)
            for d in _expiry_findings(rec, src, first_run):
                found(False, **d, **base)
            inside = win.get("inside") if isinstance(win, dict) else None
            at = _when(rec.get("opened"))
            # a continuation's window is judged under the policy it recorded; one recorded before that was judged
            # under the policy given, as before
            run_policy = rec.get("policy") or (log_policy if first_run or own else None)
            if at is None or not isinstance(inside, bool):
                continue
            judged_by = run_policy if isinstance(run_policy, str) else policy_digest
            if judged_by is None:  # no policy given, none recorded: nothing to judge it by
                continue
            if judged_by not in windows:  # a policy not given: never skipped silently
                found(True, kind="window_unjudged", run_policy=run_policy, policy=policy_digest, **base)
                continue
            window = windows[judged_by]
            if window is None:
                continue
            from version_policy import window_status

            status = window_status(_dt.datetime.fromtimestamp(at, _dt.timezone.utc), window)  # type: ignore[arg-type]
            # two minutes earlier too: the controller judged the window a moment before the host took its lock
            before = window_status(_dt.datetime.fromtimestamp(at - 120, _dt.timezone.utc), window)  # type: ignore[arg-type]
            if status.inside is not None and status.inside != inside and before.inside == status.inside:
                found(False, kind="window", reason=status.reason.split(";")[0], policy=judged_by,
                      log_inside=inside, **base)
        for d in _made_up_recoveries(events, h, opened, openers, first_seq):
            found(False, host=h.host, **d)
        lock = h.lock or {}
        holder = lock.get("run")
        if isinstance(holder, str) and holder not in runs:
            found(False, kind="lock", host=h.host, run=holder, who=f"{lock.get('user')}@{lock.get('controller')}")


def case_witnesses(result: WitnessResult, run: str, hosts: Sequence[str]) -> JSONObject:
    """The witnesses of one run for its case file (``audit case RUN --witness``): every host that keeps the run's
    checkpoint and whether the log matches it, the hosts that could not be read, and the run's hosts (of those
    read) that keep no record of it."""
    kept: list[JSONObject] = [
        {"host": host, "seq": c.get("seq"), "head": c.get("head"), "signer": c.get("signer"), "key": c.get("key"),
         "time": c.get("time"), "matches": problem is None, "problem": problem}
        for host, c, problem in result.findings if c.get("run") == run]
    keeping = {str(k["host"]) for k in kept}
    read = {h.host for h in result.hosts if not h.error}
    accounts: list[JSONObject] = [{"host": host, "differences": diffs, "doubts": doubts}
                                  for host, label, diffs, doubts in result.accounts if label == run]
    openings = [o for o in result.openings if o.get("run") == run]
    status = ("altered" if any(not k["matches"] for k in kept) or any(a["differences"] for a in accounts)
              or any(not o["doubt"] for o in openings) else
              "unproven" if any(a["doubts"] for a in accounts) or openings else
              "cannot_check" if not kept and any(h.error for h in result.hosts) else
              "intact" if kept else "none")
    # the outage of each host by its own clock (its stop step's start to its start step's end), from its own record
    downtime: JSONObject = {}
    for h in result.hosts:
        rec = next((r for r in ([] if h.error else h.runs) if str(r.get("as") or r.get("run") or "") == run), None)
        down = host_downtime(rec.get("steps")) if rec is not None else None
        if down is not None:
            downtime[h.host] = down
    # hosts read that keep no record at all of the run (no checkpoint, opening or finish): what the log says the run
    # did there is the controller's word (a host it never reached, or a made-up end)
    recorded = keeping | {h.host for h in result.hosts if not h.error and any(
        str(r.get("as") or r.get("run") or "") == run for r in [*h.runs, *h.opened])}
    finished = keeping | {h.host for h in result.hosts if not h.error and any(
        str(r.get("as") or r.get("run") or "") == run for r in h.runs)}
    return {"status": status, "hosts": kept, "accounts": accounts, "openings": openings, "downtime": downtime,
            "unreadable": [{"host": h.host, "error": h.error} for h in result.hosts if h.error],
            "not_kept": [h for h in hosts if h in read and h not in keeping],
            "no_record": [h for h in hosts if h in read and h not in recorded],
            # hosts read that opened the run but keep no finish of it (nor its checkpoint): an end the log gives the
            # run there is the controller's word too (attack20r16 H1: a killed run given a made-up end)
            "no_finish": [h for h in hosts if h in read and h in recorded and h not in finished]}


def mark_followups(case: JSONObject, result: WitnessResult) -> None:
    """Each later run of ``case`` (its resumes and rollbacks, ``followups``) marked ``witnessed``: whether a host read
    keeps that run's checkpoint, its opening record or its own record of its finish. A later run no host witnessed is
    only the controller's word (the case says so), like any fact of the log no host holds."""
    kept = {str(c.get("run")) for _host, c, _problem in result.findings}
    for h in result.hosts:
        if not h.error:
            kept |= {str(rec.get("as") or rec.get("run") or "") for rec in [*h.runs, *h.opened]}
    followups = case.get("followups")
    for f in followups if isinstance(followups, list) else []:
        if isinstance(f, dict):
            f["witnessed"] = str(f.get("run")) in kept
