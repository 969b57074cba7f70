"""``upgrader audit verify --plans DIR --approvals DIR``: the plans and approvals the log names, checked against the
files an auditor was given.

Every plan digest the log names (a plan made, approved, run or refused) must be the digest of a file in the plans
folder, recomputed from the file (``core.plan.plan_digest``, the README's canonical form); every approval a run
accepted must be a file in the approvals folder whose sha256 of its statement is the digest the log names, whose
signature holds under the allowed signers, and which approves the plan and names the approver the log says. A
missing file and a swapped one are told apart: when the log also recorded the file's name (``plan_created``,
``approval_created``) and a file of that name is in the folder with another digest, the problem names both digests.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from .log import OPENING_EVENTS

if TYPE_CHECKING:
    from ..trust.approval import Approval
    from ..trust.signers import AllowedSigners

__all__ = ["CrossCheck", "cross_check", "approver_problem", "requester_held"]


@dataclass
class CrossCheck:
    """What was cross-checked: the plans and approvals named by the log (``plans``, ``approvals``: digest -> the
    file that has it, or None), and every ``problems`` (each names the log's line and the file)."""

    plans_dir: str | None
    approvals_dir: str | None
    plans: dict[str, str | None] = field(default_factory=dict)
    approvals: dict[str, str | None] = field(default_factory=dict)
    problems: list[dict[str, object]] = field(default_factory=list)
    unknown_policy: dict[str, str | None] = field(default_factory=dict)  # run -> a policy digest not given

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, object]:
        return {"plans_dir": self.plans_dir, "approvals_dir": self.approvals_dir, "plans": self.plans,
                "approvals": self.approvals, "problems": self.problems, "ok": self.ok,
                "unknown_policy": self.unknown_policy}


def _d(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def _l(value: object) -> list[object]:
    return value if isinstance(value, list) else []


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def _plan_digests(folder: Path) -> dict[str, Path]:
    """digest -> file, for every file of ``folder`` that reads as a plan (other files are not plans: skipped)."""
    from ..core.errors import UpgraderError
    from ..core.plan import load_plan

    found: dict[str, Path] = {}
    for p in _files(folder):
        try:
            found.setdefault(load_plan(p).digest, p)
        except UpgraderError:
            continue
    return found


def _approvals(folder: Path) -> dict[str, Approval]:
    """digest -> Approval, for every file of ``folder`` that reads as an approval (``X.sig`` beside ``X`` is read
    with it)."""
    from ..core.errors import UpgraderError
    from ..trust.approval import read_approval

    found: dict[str, Approval] = {}
    for p in _files(folder):
        if p.suffix == ".sig" and p.with_suffix("").is_file():
            continue
        try:
            a = read_approval(p)
        except UpgraderError:
            continue
        found.setdefault(a.digest, a)
    return found


def _by_name(folder: Path, recorded: object) -> Path | None:
    """The file of ``folder`` with the name the log recorded (a path on the machine that made it)."""
    if not recorded:
        return None
    name = Path(str(recorded)).name
    hits = [p for p in _files(folder) if p.name == name]
    return hits[0] if hits else None


def _at(text: object) -> _dt.datetime:
    try:
        t = _dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
        return t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)
    except ValueError:
        return _dt.datetime.now(_dt.timezone.utc)


def cross_check(events: list[dict[str, object]], *, plans: Path | None, approvals: Path | None,
                signers: AllowedSigners | None, required: Mapping[str, int] | None = None) -> CrossCheck:
    """Check every plan and approval ``events`` (the whole log, read once) names against the files in ``plans``
    and ``approvals``; ``signers``: the approvers' allowed signers (None: the signature is checked, its signer is
    not); ``required``: policy digest -> its approvals.required, for the policies the auditor holds (an upgrade run
    whose opening line names one of them and lists fewer distinct approval keys is a finding: the product never
    runs so; a run under a policy not given is left as the controller's word, ``unknown_policy``)."""
    from ..core.plan import load_plan
    from ..trust.approval import NAMESPACE, read_approval
    from ..trust.sshsig import SignatureError, verify

    out = CrossCheck(str(plans) if plans else None, str(approvals) if approvals else None)

    def problem(line: object, what: str, text: str, zh: str, **extra: str) -> None:
        """One mismatch, said in English (``problem``) and in Chinese (``problem_zh``: audit verify --lang zh)."""
        out.problems.append({"line": line, "what": what, "problem": text, "problem_zh": zh, **extra})

    # the plans: every digest the log names, with the file name the log recorded when it made it
    plan_names: dict[str, object] = {}
    plan_refs: list[tuple[object, str]] = []
    for e in events:
        d = _d(e.get("data"))
        digest = d.get("plan")
        if isinstance(digest, str) and len(digest) == 64:
            plan_refs.append((e.get("seq"), digest))
            if e.get("event") == "plan_created" and d.get("file"):
                plan_names.setdefault(digest, d["file"])
    if plans is not None:
        have = _plan_digests(plans)
        seen: set[str] = set()
        for line, digest in plan_refs:
            if digest in seen:
                continue
            seen.add(digest)
            out.plans[digest] = str(have[digest]) if digest in have else None
            named = _by_name(plans, plan_names.get(digest))
            if named is not None and have.get(digest) != named:
                # the file the log recorded holds another plan: swapped (or edited), wherever this digest is
                try:
                    theirs = load_plan(named).digest
                except Exception as err:  # noqa: BLE001 - a damaged plan is a finding, not a crash
                    theirs = f"none (not a plan: {err})"
                elsewhere = f"; digest {digest} is in file {have[digest]}" if digest in have else ""
                elsewhere_zh = f"；摘要 {digest} 在文件 {have[digest]} 中" if digest in have else ""
                problem(line, "plan", f"file {named} has digest {theirs}, the log names {digest} (line {line}): "
                        f"the plan file was swapped or edited{elsewhere}",
                        f"文件 {named} 的摘要为 {theirs}，日志（第 {line} 行）记的是 {digest}：计划文件被调换或改动过"
                        f"{elsewhere_zh}", file=str(named), digest=digest, file_digest=theirs)
            elif digest not in have:
                problem(line, "plan", f"plan digest {digest} named by line {line}: no file in {plans} has it",
                        f"第 {line} 行提到的计划摘要 {digest}：{plans} 中没有哪个文件有这个摘要", digest=digest)
        # every run's requester against its plan file: the plan's requester (inside its digest) and its signer's key
        for e in events:
            d = _d(e.get("data"))
            digest = d.get("plan")
            if e.get("event") not in OPENING_EVENTS or not isinstance(digest, str) or digest not in have:
                continue
            _requester(problem, e, d, digest, have[digest])
            _plan_hosts(problem, e, d, digest, have[digest], events)
            _plan_target(problem, e, d, digest, have[digest])
        for e in events:  # when the log says each plan was made, against the time signed in its file
            digest = _d(e.get("data")).get("plan")
            if e.get("event") == "plan_created" and isinstance(digest, str) and digest in have:
                try:
                    created = load_plan(have[digest]).data.get("created")
                except Exception:  # noqa: BLE001 - a damaged plan file is named by the checks above
                    continue
                _created(problem, e, "plan", created, str(have[digest]), digest, _time_before(events, e))

    # the approvals a run accepted: (line, digest, plan, approver, key), and the file names the log recorded
    approval_names: dict[tuple[object, object, object], object] = {}
    accepted: list[tuple[object, str, object, object, object, object, dict[str, object]]] = []
    opening_plan: dict[object, object] = {}
    for e in events:
        d = _d(e.get("data"))
        if e.get("event") == "approval_created":
            approval_names.setdefault((d.get("plan"), d.get("approver"), d.get("key")), d.get("file"))
            if isinstance(d.get("digest"), str):  # the file of exactly this approval (recorded since issue 20)
                approval_names.setdefault(("digest", d["digest"], None), d.get("file"))
        if e.get("event") in OPENING_EVENTS:
            opening_plan.setdefault(e.get("run"), d.get("plan"))
            for item in _l(d.get("approvals")):
                given = _d(item)
                named_digest = given.get("digest")
                if approvals is not None and not _is_digest(named_digest):
                    # upgrader names every approval it accepts by its digest: one without it names no file (M3)
                    line = e.get("seq")
                    problem(line, "approval", f"run {e.get('run')} (line {line}) names an approval by "
                            f"{given.get('approver')} without its digest: no approval file can be checked for it; "
                            "upgrader never writes one so (the line was made up or edited)",
                            f"运行 {e.get('run')}（第 {line} 行）记的 {given.get('approver')} 的批准没有摘要：无法核对任何"
                            "批准文件；upgrader 从不这样写（该行是编造或改动过的）", run=str(e.get("run")))
                if isinstance(named_digest, str):
                    accepted.append((e.get("seq"), named_digest, d.get("plan"), given.get("approver"),
                                     given.get("key"), given.get("expires"), given))
        elif e.get("event") == "approval_accepted" and isinstance(d.get("digest"), str):
            # the run's own line per approval says the same fields: each is held to the signed file too
            accepted.append((e.get("seq"), str(d["digest"]), opening_plan.get(e.get("run"), d.get("plan")),
                             d.get("approver"), d.get("key"), d.get("expires"), d))
    _used_twice(problem, events)
    _too_few(problem, events, required or {}, out)
    if approvals is not None:
        have_a = _approvals(approvals)
        for e in events:  # when the log says each approval was made, against the time signed in its file
            digest = _d(e.get("data")).get("digest")
            if e.get("event") == "approval_created" and isinstance(digest, str) and digest in have_a:
                made = have_a[digest]
                _created(problem, e, "approval", made.statement.created.isoformat(), made.source, digest,
                         _time_before(events, e))
        checked: set[str] = set()
        for line, digest, plan, approver, key, expires, said in accepted:
            if digest in checked:  # the file itself was checked at its first use: each run's own pair still is
                a = have_a.get(digest)
                if a is not None and out.approvals.get(digest) == a.source:
                    _pair(problem, a, line, digest, plan, approver, key, expires, said)
                continue
            checked.add(digest)
            a = have_a.get(digest)
            named = _by_name(approvals, approval_names.get(("digest", digest, None),
                                                           approval_names.get((plan, approver, key))))
            if named is not None and (a is None or Path(a.source) != named):
                out.approvals[digest] = a.source if a is not None else None
                try:
                    theirs = read_approval(named).digest
                except Exception as err:  # noqa: BLE001
                    theirs = f"none (not an approval: {err})"
                elsewhere = f"; digest {digest} is in file {a.source}" if a is not None else ""
                elsewhere_zh = f"；摘要 {digest} 在文件 {a.source} 中" if a is not None else ""
                problem(line, "approval", f"file {named} has digest {theirs}, the log names {digest} (line "
                        f"{line}): the approval file was swapped or edited{elsewhere}",
                        f"文件 {named} 的摘要为 {theirs}，日志（第 {line} 行）记的是 {digest}：批准文件被调换或改动过"
                        f"{elsewhere_zh}", file=str(named), digest=digest, file_digest=theirs)
                continue
            if a is None:
                out.approvals[digest] = None
                problem(line, "approval", f"approval digest {digest} named by line {line}: no file in "
                        f"{approvals} has it", f"第 {line} 行提到的批准摘要 {digest}：{approvals} 中没有哪个文件有这个摘要",
                        digest=digest)
                continue
            out.approvals[digest] = a.source
            st = a.statement
            try:
                verify(a.signature, a.text.encode(), NAMESPACE)
            except SignatureError as e:
                problem(line, "approval", f"file {a.source}: bad signature ({e})",
                        f"文件 {a.source}：签名无效（{e}）", file=a.source, digest=digest)
                continue
            if signers is not None:
                try:
                    signers.check(st.approver, a.signature.public_key, NAMESPACE, _at(st.created.isoformat()))
                except ValueError as e:
                    problem(line, "approval", f"file {a.source}: signed by a key the allowed signers do not allow "
                            f"for {st.approver}: {e}",
                            f"文件 {a.source}：签名所用的密钥不在允许的签名人中为 {st.approver} 登记（{e}）",
                            file=a.source, digest=digest)
                    continue
            _pair(problem, a, line, digest, plan, approver, key, expires, said)
        _approval_requester(problem, events, have_a, out)
    return out


def _is_digest(value: object) -> bool:
    """An approval's digest as upgrader writes it: 64 lowercase hex digits."""
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _approval_requester(problem: Callable[..., None], events: list[dict[str, object]], have: Mapping[str, Approval],
                        out: CrossCheck) -> None:
    """Each run's requester (its run_started line's user) against the ``requester:`` its approval files sign (the
    plan's requester, as the approver saw it): an approval signed for another requester's plan names the liar."""
    for e in events:
        d = _d(e.get("data"))
        if e.get("event") != "run_started":
            continue
        said = _d(d.get("requester")).get("user")
        line = e.get("seq")
        for item in _l(d.get("approvals")):
            digest = _d(item).get("digest")
            a = have.get(str(digest))
            if a is None or out.approvals.get(str(digest)) != a.source or a.statement.requester == said:
                continue
            problem(line, "requester", f"run {e.get('run')} (line {line}) names requester user {said}, its approval "
                    f"file {a.source} signs requester {a.statement.requester}",
                    f"运行 {e.get('run')}（第 {line} 行）记的申请人用户是 {said}，它的批准文件 {a.source} 签署的申请人是 "
                    f"{a.statement.requester}", file=a.source, digest=str(digest))
            break


def _too_few(problem: Callable[..., None], events: list[dict[str, object]], required: Mapping[str, int],
             out: CrossCheck) -> None:
    """Every upgrade run (``run_started``: a resume or rollback runs under the first run's approvals) against the
    approvals its policy requires: fewer distinct approval keys on its opening line is a finding; a policy the
    auditor does not hold is noted in ``out.unknown_policy`` (run -> policy digest)."""
    for e in events:
        if e.get("event") != "run_started":
            continue
        d = _d(e.get("data"))
        digest = _d(d.get("policy")).get("sha256")
        if not isinstance(digest, str) or digest not in required:
            out.unknown_policy[str(e.get("run"))] = str(digest) if isinstance(digest, str) else None
            continue
        need = required[digest]
        # only an approval named by its digest counts (one without it names no file anything can check: M3)
        keys = {str(_d(a).get("key") or _d(a).get("digest")) for a in _l(d.get("approvals"))
                if _is_digest(_d(a).get("digest"))}
        if len(keys) < need:
            line = e.get("seq")
            problem(line, "approvals", f"run {e.get('run')} (line {line}) lists {len(keys)} approval key(s), but "
                    f"its policy ({digest[:16]}…) requires {need}: upgrader never runs with fewer; the run's "
                    "opening line was made up or edited",
                    f"运行 {e.get('run')}（第 {line} 行）只列出 {len(keys)} 个批准密钥，而其策略（{digest[:16]}…）要求 "
                    f"{need} 个：upgrader 从不在批准不足时运行；该运行的开始行是编造或改动过的",
                    run=str(e.get("run")))


def approver_problem(events: list[dict[str, object]], signers: AllowedSigners) -> tuple[int, str] | None:
    """The first line whose approver is not a literal principal of the approval's key in the approvers'
    ``signers`` (every run accepts an approval only so, by that name: a name and key the file does not pair were
    written by the controller): (its line, why), or None. Each opening line's approvals and each
    approval_accepted line are held to it."""
    from ..trust.requester import _PATTERN_CHARS

    for e in events:
        d = _d(e.get("data"))
        if e.get("event") in OPENING_EVENTS:
            named = [_d(x) for x in _l(d.get("approvals"))]
        elif e.get("event") == "approval_accepted":
            named = [d]
        else:
            continue
        for a in named:
            name, key = a.get("approver"), a.get("key")
            if not isinstance(key, str) or name is None:
                continue
            listed = sorted({p for x in signers.entries if x.fingerprint == key for p in x.principals
                             if not _PATTERN_CHARS & set(p)})
            # a key the file no longer lists (the engineer left, their key was removed) proves nothing either way:
            # the name stays the controller's word (mark_approvers); a key listed under other names contradicts it
            if listed and name not in listed:
                line = e.get("seq")
                return (int(line) if isinstance(line, int) else 0,
                        f"run {e.get('run')} names approver {name} with key {key}, but in the approvers' "
                        f"allowed signers {signers.source} that key is listed only as {', '.join(listed)}: the "
                        "approver's name was written by the controller")
    return None


def _pair(problem: Callable[..., None], a: Approval, line: object, digest: str, plan: object, approver: object,
          key: object, expires: object = None, said: dict[str, object] | None = None) -> None:
    """One (run, approval) pair of the log against the approval's file: the plan it approves, its signer, its key
    and its expiry, and (``said``: the log's entry for it) its after-hours booking and comment (signed fields all:
    the log cannot say the approval ran longer, for another plan, or said what it did not)."""
    st = a.statement
    for field_name, signed in (("after_hours", st.after_hours), ("comment", st.comment)):
        if said is None or field_name not in said or said.get(field_name) == signed:
            continue
        zh_name = "非工作时间预约" if field_name == "after_hours" else "备注"
        problem(line, "approval", f"file {a.source} says {field_name} {signed!r}, the log says "
                f"{said.get(field_name)!r} (line {line})",
                f"文件 {a.source} 的{zh_name}是 {signed!r}，日志（第 {line} 行）记的是 {said.get(field_name)!r}",
                file=a.source, digest=digest)
        return
    if expires is not None and _at(expires) != st.expires:
        problem(line, "approval", f"file {a.source} expires at {st.expires.isoformat()}, the log says {expires} "
                f"(line {line})", f"文件 {a.source} 的有效期至 {st.expires.isoformat()}，日志（第 {line} 行）记的是 {expires}",
                file=a.source, digest=digest)
        return
    if st.plan != plan:
        problem(line, "approval", f"file {a.source} approves plan {st.plan}, the log names plan {plan} "
                f"(line {line})", f"文件 {a.source} 批准的是计划 {st.plan}，日志（第 {line} 行）记的是计划 {plan}",
                file=a.source, digest=digest)
    elif approver is not None and st.approver != approver:
        problem(line, "approval", f"file {a.source} is signed as {st.approver}, the log names {approver} "
                f"(line {line})", f"文件 {a.source} 的签名人是 {st.approver}，日志（第 {line} 行）记的是 {approver}",
                file=a.source, digest=digest)
    elif key is not None and a.signature.fingerprint != key:
        problem(line, "approval", f"file {a.source} is signed with the key {a.signature.fingerprint}, the "
                f"log names {key} (line {line})",
                f"文件 {a.source} 用密钥 {a.signature.fingerprint} 签名，日志（第 {line} 行）记的是 {key}",
                file=a.source, digest=digest)


#: how long before its log line a plan or approval may have been created (the command that makes it writes the
#: file, then the line; a plan probes its hosts in between): its log line is never earlier than the file says it
#: was made (its "created", to the second), nor later than this
CREATED_SLACK = 600.0


def _created(problem: Callable[..., None], e: dict[str, object], what: str, created: object, path: str,
             digest: str, before: object = None) -> None:
    """The log's time of a plan_created or approval_created line against the ``created`` time signed in the file
    (inside its digest): a line before the file existed, or long after, was moved (the log's times are the
    controller's word; the file's is signed). ``before``: the time of the line before it. A line the writer raised
    to that time (AuditLog.append keeps the times in order, so after the controller's clock stepped back a line
    carries the last line's time) may be any later than its file."""
    line, said = e.get("seq"), e.get("time")
    if not isinstance(said, str) or not isinstance(created, str):
        return
    gap = (_at(said) - _at(created)).total_seconds()
    if -1.0 <= gap <= CREATED_SLACK or gap > 0 and said == before:
        return
    name = "计划" if what == "plan" else "批准"
    problem(line, what, f"the log says the {what} was made at {said} (line {line}), its file {path} says created "
            f"{created}: the log's time was moved",
            f"日志（第 {line} 行）称该{name}于 {said} 生成，它的文件 {path} 写的生成时间是 {created}：日志中的时间被改动过",
            file=path, digest=digest)


def _time_before(events: list[dict[str, object]], e: dict[str, object]) -> object:
    """The time of the line just before ``e`` in the log (None for the first line)."""
    seq = e.get("seq")
    return next((x.get("time") for x in events if type(seq) is int and x.get("seq") == seq - 1), None)


def _used_twice(problem: Callable[..., None], events: list[dict[str, object]]) -> None:
    """An approval is spent by the first run that got past preflight on a host: another run naming it is a
    problem (both runs named). A run refused everywhere at preflight leaves it unspent."""
    passed = {e.get("run") for e in events if e.get("event") == "phase_finished" and e.get("phase") == "preflight"
              and e.get("outcome") == "ok"}
    spent: dict[str, tuple[object, object]] = {}
    for e in events:
        if e.get("event") not in OPENING_EVENTS:
            continue
        for item in _l(_d(e.get("data")).get("approvals")):
            digest = _d(item).get("digest")
            if not isinstance(digest, str):
                continue
            first = spent.get(digest)
            if first is not None and first[0] != e.get("run"):
                problem(e.get("seq"), "approval", f"approval {digest} was spent by run {first[0]} (line {first[1]}) "
                        f"and is named again by run {e.get('run')} (line {e.get('seq')}): an approval is used once",
                        f"批准 {digest} 已被运行 {first[0]}（第 {first[1]} 行）用掉，运行 {e.get('run')}（第 "
                        f"{e.get('seq')} 行）又用了它：一份批准只能用一次", digest=digest)
            elif first is None and e.get("run") in passed:
                spent[digest] = (e.get("run"), e.get("seq"))


def _plan_hosts(problem: Callable[..., None], e: dict[str, object], d: dict[str, object], digest: str, path: Path,
                events: list[dict[str, object]]) -> None:
    """Every host the log names for the run (its opening line's hosts and every line of the run) must be a host of
    its plan file: the plan's hosts are inside its digest, the log's are only what the controller wrote."""
    from ..core.plan import load_plan

    try:
        planned = {str(_d(h).get("name")) for h in _l(load_plan(path).data.get("hosts"))}
    except Exception:  # noqa: BLE001 - a plan that does not load is named by the digest check already
        return
    run = e.get("run")
    named = [str(_d(h).get("host")) for h in _l(d.get("hosts"))]
    named += [str(x.get("host")) for x in events if x.get("run") == run and isinstance(x.get("host"), str)]
    extra = sorted(set(named) - planned)
    if extra:
        line = e.get("seq")
        problem(line, "plan", f"run {run} (line {line}) names host(s) {', '.join(extra)}, its plan file {path} has "
                f"{', '.join(sorted(planned)) or 'none'}",
                f"运行 {run}（第 {line} 行）提到了主机 {'、'.join(extra)}，它的计划文件 {path} 里只有 "
                f"{'、'.join(sorted(planned)) or '无'}", file=str(path), digest=digest)


def _plan_target(problem: Callable[..., None], e: dict[str, object], d: dict[str, object], digest: str,
                 path: Path) -> None:
    """The opening line's target version, and each of its hosts' versions and package sha256, against its plan
    file (inside the plan's digest): the log's are only what the controller wrote before the run's checkpoint."""
    from ..core.plan import load_plan

    try:
        data = load_plan(path).data
    except Exception:  # noqa: BLE001 - a plan that does not load is named by the digest check already
        return
    line, run = e.get("seq"), e.get("run")
    said: list[tuple[str, str, object, object]] = []
    if "target" in d:
        said.append(("target", "目标版本", d.get("target"), data.get("target")))
    planned = {str(_d(h).get("name")): _d(h) for h in _l(data.get("hosts"))}
    for h in (_d(x) for x in _l(d.get("hosts"))):
        mine = planned.get(str(h.get("host")))
        if mine is None:
            continue  # named by _plan_hosts
        name = h.get("host")
        for k, zh in (("target", "目标版本"), ("current", "当前版本")):
            if k in h:
                said.append((f"host {name}'s {k}", f"主机 {name} 的{zh}", h.get(k), mine.get(k)))
        pkg, planned_pkg = _d(h.get("package")), _d(mine.get("package"))
        if "sha256" in pkg:
            said.append((f"host {name}'s package sha256", f"主机 {name} 的安装包 sha256", pkg.get("sha256"),
                         planned_pkg.get("sha256")))
    for what, zh, log_value, file_value in said:
        if log_value != file_value:
            problem(line, "plan", f"run {run} (line {line}) names {what} {log_value}, its plan file {path} has "
                    f"{file_value}", f"运行 {run}（第 {line} 行）记的{zh}是 {log_value}，它的计划文件 {path} 写的是 "
                    f"{file_value}", file=str(path), digest=digest)
            return


def _requester(problem: Callable[..., None], e: dict[str, object], d: dict[str, object], digest: str,
               path: Path) -> None:
    """The run_started line's requester against its plan file: user and host (inside the plan's digest), and the
    key that signed the plan (when it is signed)."""
    from ..core.plan import load_plan
    from ..trust.requester import plan_signer
    from ..trust.sshsig import fingerprint

    line = e.get("seq")
    said = _d(d.get("requester"))
    try:
        data = load_plan(path).data
        key = plan_signer(data, digest, str(path))
    except Exception as err:  # noqa: BLE001 - a plan whose signature does not hold is a finding
        problem(line, "requester", f"file {path}: its signature cannot be checked ({err})",
                f"文件 {path}：无法核验它的签名（{err}）", file=str(path), digest=digest)
        return
    theirs = _d(data.get("requester"))
    for k in ("user", "host"):
        if said.get(k) != theirs.get(k):
            problem(line, "requester", f"run {e.get('run')} (line {line}) names requester {k} {said.get(k)}, its "
                    f"plan file {path} says {theirs.get(k)}",
                    f"运行 {e.get('run')}（第 {line} 行）记的申请人{'用户' if k == 'user' else '主机'}是 {said.get(k)}，"
                    f"它的计划文件 {path} 写的是 {theirs.get(k)}", file=str(path), digest=digest)
            return
    if key is not None and said.get("key") is not None and said.get("key") != fingerprint(key):
        problem(line, "requester", f"run {e.get('run')} (line {line}) names the requester's key {said.get('key')}, "
                f"its plan file {path} is signed with {fingerprint(key)}",
                f"运行 {e.get('run')}（第 {line} 行）记的申请人密钥是 {said.get('key')}，它的计划文件 {path} 却是用 "
                f"{fingerprint(key)} 签名的", file=str(path), digest=digest)


def requester_held(check: CrossCheck, events: list[dict[str, object]], run: str) -> dict[str, str]:
    """The requester's fields of ``run`` (its run_started line's) a file of ``check`` holds, field -> that file:
    the plan file (``--plans``) holds user and host (inside its digest) and, when the plan is signed, the key; an
    approval file (``--approvals``) holds the user (its signed ``requester:``). Nothing when the cross-check found
    the requester contradicted (that is a problem of the check, ALTERED)."""
    from ..core.plan import load_plan
    from ..trust.requester import plan_signer
    from ..trust.sshsig import fingerprint
    from .log import run_opening

    opening = run_opening(events, run)
    if opening is None or opening.get("event") != "run_started":
        return {}
    d = _d(opening.get("data"))
    if any(p.get("what") == "requester" and p.get("line") == opening.get("seq") for p in check.problems):
        return {}
    held: dict[str, str] = {}
    digest = str(d.get("plan"))
    plan_file = check.plans.get(digest)
    if plan_file and not any(p.get("digest") == digest for p in check.problems):
        held["requested.user"] = held["requested.host"] = plan_file
        try:
            key = plan_signer(load_plan(plan_file).data, digest, plan_file)
        except Exception:  # noqa: BLE001 - a plan whose signature does not hold is a problem of the check above
            key = None
        said_key = _d(d.get("requester")).get("key")
        if key is not None and said_key is not None and said_key == fingerprint(key):
            held["requested.key"] = plan_file
    for item in _l(d.get("approvals")):
        a_digest = _d(item).get("digest")
        a_file = check.approvals.get(str(a_digest))
        if a_file and "requested.user" not in held and not any(p.get("digest") == a_digest for p in check.problems):
            held["requested.user"] = a_file
    return held
