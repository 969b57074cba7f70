"""This host as a witness of the controller's audit log: its own record of every run it finished, and the
checkpoint of each such run.

At a run's own ``finish`` (and at the finish of a rollback or resume of it) the agent appends to ``runs.jsonl``,
in every copy of its ledger, what it knows itself of that run: the run id (and the id the controller's log gives
this part of it), the plan digest and the approval digests it saw, the steps it executed on this host with their
outcome and its own clock's time, the version before and after, the service window as the controller judged it at
the time, and the time it finished -- all by this host's clock. Then, at the end of the run, the controller sends
the run's signed checkpoint (seq, head, signer, key fingerprint, time, run id) and the agent appends it, one JSON
line, to ``checkpoints.jsonl``: only for a run this host finished (a ``runs.jsonl`` record of it), only once per
run, and never with a seq below 1 -- so nobody can flood the record or have a run witnessed that never ran here.

The host is the customer's: the engineer who holds the controller's log and its signing key cannot rewrite these
lines there, so ``upgrader audit verify --witness INVENTORY`` checks the log against them: a rewritten chain, a run
cut off, a run's outcome, versions, approvals, window or times changed, a witness sent late or never.

Append-only: one O_APPEND write of one whole line per copy, through the ledger's descriptors (never through a
link). ``witness_read`` reads them back, read-only and whole: no directory is made, no marker written.
"""

import fcntl
import json
import os
import re
import stat
import time

from .common import AgentError
from .ledger import ledger_fds
from .state import append_line_at, state_file_error

CHECKPOINTS = "checkpoints.jsonl"
#: this host's own record of each run it finished (one line per finish of a run, its rollback or resume)
RUN_RECORDS = "runs.jsonl"
#: this host's own record of each run it took its lock for: opened when the lock is taken (the run id, the plan digest,
#: the approval digests, the requester and the policy digest the run was started with, this host's clock), before
#: any step -- so a run that never reached its finish (needs a person) is still on the host's record
OPENED = "runs-opened.jsonl"
#: the steps of a run as this host executed them (in the run's own directory), read by its finish
STEPS = "steps.jsonl"
#: the unreadable lines listed by name in a reply (their count is always given)
LISTED = 20

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# a run id, or a run id and one more label ("RUN/rollback-TIME"): each part one name, never "." nor ".." (a label
# may name a run's directory)
_RUN = re.compile(r"^(?!\.\.?(?:/|$))[A-Za-z0-9._-]{1,120}(/(?!\.\.?$)[A-Za-z0-9._-]{1,120})?$")
#: the kinds of run a controller opens at a host's lock (the lock request's ``audit.kind``), each with the shape of the
#: label the log gives that part of the run after its id: a first run of a plan (``run``; ``guided``, the customer's
#: guide) is the run id itself; the hosts that waited after a canary (``continuation``) and a ``resume`` are
#: RUN/resume-TIME; a ``rollback`` is RUN/rollback-TIME. The host records the kind it was told, never infers it
KINDS = {"run": "", "guided": "", "continuation": "/resume-", "resume": "/resume-", "rollback": "/rollback-"}
#: the kinds that go on with a run that took this host's lock before (the others open a run this host never saw)
LATER = ("resume", "rollback")


def _checkpoint(req):
    """The checkpoint of the request, checked for shape (the agent writes only what it can read back)."""
    cp = req.get("checkpoint")
    if not isinstance(cp, dict):
        raise AgentError("the witness request carries no checkpoint", "bad_input")
    seq, head = cp.get("seq"), cp.get("head")
    if type(seq) is not int or seq < 1 or not isinstance(head, str) or not _HEX64.match(head):
        raise AgentError("the checkpoint to witness needs seq (a number, 1 or more) and head (64 hex digits)",
                         "bad_input")
    run = cp.get("run")
    if not isinstance(run, str) or not _RUN.match(run):
        raise AgentError("the checkpoint to witness names no run (or not a run id): a host witnesses only the "
                         "checkpoint of a run it finished", "bad_input")
    out = {"seq": seq, "head": head}
    if type(cp.get("line")) is int:
        out["line"] = cp["line"]
    for k in ("signer", "key", "time", "run"):
        v = cp.get(k)
        if v is not None and not isinstance(v, str):
            raise AgentError("checkpoint field %r must be text" % k, "bad_input")
        out[k] = (v or "")[:400] or None
    # the operator's signature of the checkpoint (armoured SSHSIG) and the time it signs, sent by a controller that
    # has them: the syslog copy carries both (to_syslog), so a verifier tells the agent's copy from a forged line
    sig, signed = cp.get("signature"), cp.get("signed")
    if isinstance(sig, str) and _ARMOURED.match(sig) and isinstance(signed, str) and _SIGNED_TIME.match(signed):
        out["signature"], out["signed"] = sig, signed
    return out


#: an armoured SSH signature as the controller's checkpoint holds it (its body is base64 lines), at most 6000 chars
_ARMOURED = re.compile(r"^-----BEGIN SSH SIGNATURE-----\n(?:[A-Za-z0-9+/=]{1,76}\n){1,80}-----END SSH SIGNATURE-----"
                       r"\n?$")
#: the time a checkpoint line was written with (what its signature signs), e.g. 2026-12-04T20:15:00.123+00:00
_SIGNED_TIME = re.compile(r"^[0-9][0-9T:.+Z-]{9,39}$")


def _signature_field(record):
    """`` sig=BASE64 signed=TIME`` for the syslog line: the checkpoint's SSHSIG signature (its armour's body on one
    line) and the time it signs; empty when the controller sent none (an older controller)."""
    sig, signed = record.get("signature"), record.get("signed")
    if not isinstance(sig, str) or not isinstance(signed, str) or len(sig) > 6000:
        return ""
    return " sig=%s signed=%s" % ("".join(sig.strip().split("\n")[1:-1]), signed)


def _lines(d, dfd, name):
    """[(line number, parsed record or None)] of the ledger file ``name`` in ``dfd`` (none when absent)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), dir_fd=dfd)
    except FileNotFoundError:
        return []
    except OSError as e:
        raise state_file_error(d, name, e)
    out = []
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise AgentError("%s/%s is not a regular file; the agent keeps its state only in plain files"
                             % (d, name), "unsafe_path", path=os.path.join(d, name))
        for n, raw in enumerate(f, 1):
            try:
                rec = json.loads(raw.decode("utf-8"))
            except ValueError:
                rec = None
            out.append((n, rec if isinstance(rec, dict) else None))
    return out


def _finished_runs(fds):
    """{run label: this host's record of its finish} over every copy of the ledger (the first finish kept)."""
    out = {}
    for d, dfd in fds:
        for _, rec in _lines(d, dfd, RUN_RECORDS):
            if rec and isinstance(rec.get("as"), str):
                out.setdefault(rec["as"], rec)
    return out


def _opened_runs(fds):
    """{run label: this host's opening record of it} over every copy of the ledger (the first opening kept)."""
    out = {}
    for d, dfd in fds:
        for _, rec in _lines(d, dfd, OPENED):
            if rec and isinstance(rec.get("as"), str):
                out.setdefault(rec["as"], rec)
    return out


def check_opened_approvals(paths, req):
    """At the lock (op_lock), before anything is locked or written: refused (``replayed``) when an approval the
    request names is one this host's own opening records (runs-opened.jsonl, every copy of the ledger) list for
    another run. An approval is spent the moment a run takes a host's lock under it: a run killed after its
    install and then rolled back never reaches the finish that writes approvals-used.jsonl, yet it was opened here
    with that approval. A resume, rollback or continuation of the same run names the same run id and goes on."""
    wanted = set(a for a in req.get("approvals") or [] if isinstance(a, str))
    if not wanted:
        return
    with ledger_fds(paths) as fds:
        for d, dfd in fds:
            for _, rec in _lines(d, dfd, OPENED):
                if not rec or rec.get("run") == paths.run_id or not isinstance(rec.get("approvals"), list):
                    continue
                for digest in rec["approvals"]:
                    if digest in wanted:
                        raise AgentError(
                            "approval %s... was already used on this host by run %s (its lock was taken at %s, "
                            "%s): an approval is good for one run; nothing was locked; have the plan approved "
                            "again" % (digest[:12], rec.get("run"), _when(rec.get("opened")),
                                       os.path.join(d, OPENED)), "replayed", holder={"run": rec.get("run")})


def _text(v, limit=200):
    return v[:limit] if isinstance(v, str) else None


def _audit(req):
    """The request's ``audit`` fields (what the controller tells the host of the run for its records), or {}."""
    return req.get("audit") if isinstance(req.get("audit"), dict) else {}


def _label(paths, req):
    """The id the controller's log gives this part of the run (``audit.as``: RUN, RUN/resume-..., RUN/rollback-...);
    the run id itself when it names none, or not one of this run's."""
    label = _audit(req).get("as")
    if not isinstance(label, str) or not _RUN.match(label) or label.split("/")[0] != paths.run_id:
        label = paths.run_id
    return label


def _history(paths):
    """(this host's opening records of the run ``paths.run_id``, in the order they were taken; {label: its finish
    record} of every part of that run this host finished), over every copy of the ledger (none when there is none)."""
    opened, finished = [], {}
    with ledger_fds(paths) as fds:
        for d, dfd in fds:
            for _, rec in _lines(d, dfd, OPENED):
                if rec and rec.get("run") == paths.run_id and isinstance(rec.get("as"), str) and rec not in opened:
                    opened.append(rec)
            for _, rec in _lines(d, dfd, RUN_RECORDS):
                if rec and rec.get("run") == paths.run_id and isinstance(rec.get("as"), str):
                    finished.setdefault(rec["as"], rec)
    return opened, finished


def _when(t):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if isinstance(t, (int, float)) else "an unknown time"


def check_opening(paths, req, holder):
    """At the lock (op_lock), before anything is written: the kind of run the controller opens (``audit.kind``),
    checked against the label it gives it and against this host's own records of that run; returns the kind, which
    the opening record keeps. Refused (``run_kind``) -- nothing locked, nothing recorded -- for an unknown kind, a
    label of another kind's shape, a first run that already ended here, or a first run (run, guided,
    continuation) of a run id this host opened before; refused (``never_locked``) for a resume or rollback of a run
    that never took this host's lock: there is nothing of it here to go on with or undo. ``holder``: the lock file's
    content (a run killed between its lock and its opening record still holds the lock)."""
    kind = _audit(req).get("kind")
    if kind not in KINDS:
        raise AgentError("the lock request does not say which kind of run it opens (%r): one of %s; nothing was "
                         "locked" % (kind, ", ".join(sorted(KINDS))), "run_kind")
    label = _label(paths, req)
    shape = KINDS[kind]
    if (label != paths.run_id) if not shape else not label.startswith(paths.run_id + shape):
        raise AgentError("a %s of run %s is named %s in the log, not %s: the kind and the label of a run go "
                         "together; nothing was locked" % (kind, paths.run_id, paths.run_id + shape + "..." if shape
                                                          else paths.run_id, label), "run_kind")
    opened, finished = _history(paths)
    ended = finished.get(label)
    # a resume or rollback whose label is one that ended (two in the same second: labels have the second's
    # resolution) may lock to look; its finish is refused (step_gate: a run ends once)
    if ended is not None and kind not in LATER:
        raise AgentError("%s already ended on this host (%s, at %s): a run ends once; a later resume or rollback of "
                         "run %s has a label of its own; nothing was locked" % (
                             label, ended.get("outcome"), _when(ended.get("finished")), paths.run_id), "run_kind")
    if any(r["as"] == label for r in opened):
        # the same part of the run locked again: a retry after a lost connection, or a resume in the same second as
        # the continuation it goes on with (labels have the second's resolution); its shape was checked above
        return kind
    if kind not in LATER and opened:
        raise AgentError("run %s already took this host's lock (as %s, at %s): a %s opens a run this host never "
                         "saw; go on with it with upgrader resume or rollback; nothing was locked" % (
                             paths.run_id, opened[0]["as"], _when(opened[0].get("opened")), kind), "run_kind")
    if kind in LATER and not opened and (holder or {}).get("run") != paths.run_id:
        raise AgentError("run %s never took this host's lock: nothing of it was done here, so there is nothing of "
                         "it here to %s; nothing was locked" % (paths.run_id, "roll back" if kind == "rollback"
                                                               else kind), "never_locked", run=paths.run_id)
    return kind


#: the kinds of run that start a change on an approval (a resume or rollback carries on, or undoes, what its run
#: started): the host refuses their lock once an approval they present has expired by its own clock
NEEDS_VALID_APPROVAL = ("run", "guided", "continuation")


def approval_expiries(req, kind):
    """At the lock (op_lock), before anything is written: {approval digest: its signed expiry (text)} of the
    approvals the run presents, read from each approval's own signed statement the request carries (the evidence's
    ``approvals``: the statement's bytes, whose sha256 is the digest the run names in ``approvals``), never from a
    number the controller could set. For a run, guided run or continuation (NEEDS_VALID_APPROVAL) the lock is
    refused (``approval_expired``, exit 4 -- nothing locked, nothing recorded) when a digest comes without its
    statement, a statement is not one of the run's approvals or names no expiry, or this host's own clock is at or
    past an approval's expiry: a controller whose clock was set back would otherwise run a change whose approval
    ran out. A host with its own trust root checks the same (hosttrust); this holds on every host."""
    import datetime
    import hashlib

    digests = [a for a in req.get("approvals") or [] if isinstance(a, str)]
    evidence = req.get("host_trust") if isinstance(req.get("host_trust"), dict) else {}
    texts = {}
    for item in evidence.get("approvals") or []:
        text = item.get("text") if isinstance(item, dict) else None
        if isinstance(text, str):
            texts[hashlib.sha256(text.encode("utf-8")).hexdigest()] = text
    out = {}
    for digest in digests:
        text = texts.get(digest)
        if text is None:
            continue
        line = next((x[len("expires: "):] for x in text.split("\n") if x.startswith("expires: ")), None)
        out[digest] = line
    if kind not in NEEDS_VALID_APPROVAL:
        return out
    hint = "ask for a new approval of the plan and run it again; nothing was locked or changed"
    hint_zh = "请重新申请对该计划的批准后再运行；未加锁，未作任何更改"
    run = req.get("run_id")
    missing = [d for d in digests if d not in out]
    if missing:
        raise AgentError("the lock request of %s %s names approval %s... without its signed statement: this host "
                         "checks every approval's expiry by its own clock, from the approval's own bytes; %s / %s %s "
                         "的加锁请求列出了批准 %s...，却没有附上它签名的原文：本主机按自己的时钟、依据批准本身核对每份批准的有效期；%s"
                         % (kind, run, missing[0][:12], hint, kind, run, missing[0][:12], hint_zh),
                         "approval_expired", approval=missing[0])
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    shown = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    for digest, expires in out.items():
        try:
            until = datetime.datetime.strptime(str(expires), "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            until = None
        if until is None or now >= until:
            raise AgentError(
                "approval %s... of %s %s expired at %s by this host's clock (it is %s here): a change starts only "
                "on an approval still valid; %s / 批准 %s...（%s %s）已于 %s 过期（按本主机的时钟，此处现在是 %s）：变更只能在批准"
                "仍有效时开始；%s" % (digest[:12], kind, run, expires, shown, hint, digest[:12], kind, run, expires,
                                   shown, hint_zh),
                "approval_expired", approval=digest, expires=expires, host_clock=shown)
    return out


def _log_id(audit):
    """The identity of the audit log the run is written to (``audit.log``: its first line's hash), or None: kept in
    each record of the run, so a verifier compares a log only with its own runs (one host may serve two logs)."""
    log = audit.get("log")
    return log if isinstance(log, str) and _HEX64.match(log) else None


def record_opening(paths, req, holder, expiries=None):
    """At the lock (op_lock), once per run label: this host's opening record of the run, appended to every copy of
    the ledger (made when missing, as the run's finish would): what the run was started with, by this host's clock,
    and its kind (checked by check_opening). The lock file itself is no record: it goes at the finish. Beside this
    host's clock (``opened``) it keeps the controller's clock the lock request carried (``controller_clock``): the
    two fix the host's clock offset for the run, so a later edit of the log's times cannot move it."""
    audit = _audit(req)
    label = _label(paths, req)
    plan = audit.get("plan")
    who = audit.get("requester") if isinstance(audit.get("requester"), dict) else {}
    policy = audit.get("policy")
    now = time.time()
    record = {"run": paths.run_id, "as": label, "kind": audit.get("kind") if audit.get("kind") in KINDS else None,
              "opened": now, "utc_offset": time.strftime("%z", time.localtime(now)),
              "plan": plan if isinstance(plan, str) and _HEX64.match(plan) else None,
              "approvals": sorted(a for a in req.get("approvals") or [] if isinstance(a, str) and _HEX64.match(a)),
              "requester": {k: _text(who.get(k)) for k in ("user", "host", "key")} if who else None,
              "policy": policy if isinstance(policy, str) and _HEX64.match(policy) else None,
              "controller": _text(req.get("controller")), "user": _text(req.get("user")),
              "lock_time": (holder or {}).get("time"), "log": _log_id(audit),
              "controller_clock": _text(audit.get("clock"), 40),
              # each approval's expiry as its own signed statement gives it (approval_expiries), checked at this lock
              "expires": {d: _text(e, 40) for d, e in sorted((expiries or {}).items())},
              # what the run changes here, as the lock was told it: the target version (audit.target) and the package
              # sha256 and installed version of the lock request itself (the log's opening line is compared with them)
              "target": _text(audit.get("target"), 40),
              "package": req.get("sha256") if isinstance(req.get("sha256"), str) and _HEX64.match(req["sha256"])
              else None,
              "current": _text(req.get("current_version"), 40)}
    with ledger_fds(paths, create=True) as fds:
        fcntl.flock(fds[0][1], fcntl.LOCK_EX)
        if label in _opened_runs(fds):
            return
        line = json.dumps(record, sort_keys=True) + "\n"
        for d, fd in fds:
            append_line_at(fd, OPENED, line, d)


def step_gate(req):
    """Before a changing action of a run is run (main.handle: prepare, stop, install, start, hook, rollback, finish):
    refused (``not_locked``) -- nothing done, nothing recorded -- unless the request names the run that holds this
    host's lock. A finish is this host's record that a part of a run ended, so it is also refused (bad_input) for a
    part (label) other than the one the run's latest lock opened, for one that already ended here (a run ends once),
    and, for any outcome but "unchanged", for a run whose prepare did not succeed here."""
    from .state import read_lock

    paths = _paths(req)
    op = req.get("op")
    # the lock as the rest of the agent reads it: from the state dir's descriptor, never through a link, bounded
    holder = read_lock(paths)
    held = "held by run %s" % holder.get("run") if isinstance(holder, dict) else "nobody holds it"
    why = ("a host records the end only of a run that took its lock; nothing was recorded" if op == "finish" else
           "the host runs the %s of a run only while that run holds its lock; nothing was done" % op)
    if not paths.run_id:
        raise AgentError("the %s request names no run (this host's lock: %s): %s" % (op, held, why), "not_locked",
                         holder=holder)
    if not isinstance(holder, dict) or holder.get("run") != paths.run_id:
        raise AgentError("run %s does not hold this host's lock (%s): %s" % (paths.run_id, held, why), "not_locked",
                         holder=holder)
    if op == "finish":
        _finish_once(paths, req)


def _finish_once(paths, req):
    """The finish of run ``paths.run_id`` (which holds the lock): only of the part its latest lock opened, once, and
    as more than "unchanged" only after its prepare succeeded here (step_gate)."""
    label = _label(paths, req)
    opened, finished = _history(paths)
    latest = opened[-1]["as"] if opened else paths.run_id
    if label != latest:
        raise AgentError("the lock of run %s was last taken for %s, not %s: a finish ends the part of a run that "
                         "holds the lock; nothing was recorded" % (paths.run_id, latest, label), "bad_input")
    ended = finished.get(label)
    if ended is not None:
        raise AgentError("%s already ended on this host (%s, at %s): a run ends once; nothing was recorded" % (
            label, ended.get("outcome"), _when(ended.get("finished"))), "bad_input")
    if req.get("outcome") != "unchanged" and not any(
            rec.get("op") == "prepare" and rec.get("ok") for rec in _all_steps(paths)):
        raise AgentError("run %s has no successful prepare on this host: a host records a run as %s only after "
                         "it prepared it itself; nothing was recorded" % (paths.run_id, req.get("outcome")),
                         "bad_input")


def _in_turn(paths, req, label, finished, fds):
    """The witness of ``label`` (finished here: ``finished``) comes from that run, in its turn: refused when the
    request names another run, when another run holds this host's lock now (``not_locked``), or when another run or
    part of a run took the lock since ``label`` ended here -- a run's checkpoint is witnessed at its end, before the
    next run takes the host, not kept back and sent once the log has moved on."""
    from .files import read_json

    run = label.split("/")[0]
    named = req.get("run_id")
    if named is not None and named != run:
        raise AgentError("the witness request is sent for run %s, but its checkpoint is of run %s: a run witnesses "
                         "its own checkpoint only; nothing was recorded" % (named, label), "bad_input")
    holder = read_json(paths.lock) if os.path.lexists(paths.lock) else None
    if isinstance(holder, dict) and holder.get("run") != run:
        raise AgentError("run %s holds this host's lock now: the checkpoint of %s is witnessed at its end, before "
                         "another run takes the host; nothing was recorded" % (holder.get("run"), label),
                         "not_locked", holder=holder)
    ended = finished.get("finished")
    for d, dfd in fds:
        for _, rec in _lines(d, dfd, OPENED):
            if rec and rec.get("as") != label and isinstance(rec.get("opened"), (int, float)) \
                    and isinstance(ended, (int, float)) and rec["opened"] > ended:
                raise AgentError("%s took this host's lock at %s, after %s ended here at %s: a run's checkpoint "
                                 "is witnessed at its end, before the next run takes the host; nothing was "
                                 "recorded" % (rec.get("as"), _when(rec["opened"]), label, _when(ended)),
                                 "bad_input")


def _covered(fds, runs, part):
    """For the checkpoint of a part of a run (RUN/resume-..., RUN/rollback-...) this host did not finish itself:
    (label, finish record) of the part of the same run it finished last and holds no witness of -- a run killed
    after it finished here never signs its own checkpoint, and the part that recovers the run signs one whose head
    covers that finish (attack20r16 M2); None when there is none."""
    if "/" not in part:
        return None
    base = part.split("/")[0]
    witnessed = set()
    for d, dfd in fds:
        for _, rec in _lines(d, dfd, CHECKPOINTS):
            if rec:
                witnessed.update((rec.get("run"), rec.get("covers")))
    mine = [(rec["finished"], label) for label, rec in runs.items()
            if label != part and label.split("/")[0] == base and label not in witnessed
            and isinstance(rec.get("finished"), (int, float))]
    if not mine:
        return None
    label = max(mine)[1]
    return label, runs[label]


def op_witness(req):
    """Append the run's checkpoint to checkpoints.jsonl in every copy of the ledger; returns where it went.
    A part of a run this host did not finish is witnessed for the part of that run it did finish and never received
    a witness of (_covered: a killed run and the resume or rollback that recovers it).
    Refused (bad_input) for a run this host did not finish, for a run already witnessed here, and for a witness out
    of its run's turn (_in_turn)."""
    record = _checkpoint(req)
    written = []
    # every copy of the ledger, each opened once, refused when it is a link or not the agent's own (strict); none is
    # ever made here: a ledger is made only by a run's lock, and one without the agent's marker is refused
    paths = _paths(req)
    _marked(paths)
    with ledger_fds(paths) as fds:
        if not fds:
            raise AgentError("this host keeps no ledger, so it finished no run: nothing to witness", "bad_input")
        fcntl.flock(fds[0][1], fcntl.LOCK_EX)  # one witness at a time: "once per run" holds against a race too
        runs = _finished_runs(fds)
        label, finished = record["run"], runs.get(record["run"])
        if finished is None:
            covered = _covered(fds, runs, record["run"])
            if covered is not None:  # the part that recovers a killed run, for the part this host finished in it
                label, finished = covered
                record["covers"] = label
        if finished is None:
            raise AgentError("this host did not finish run %s (no record of it in %s): a host witnesses the "
                             "checkpoint of a run only after it finished or rolled back that run itself"
                             % (record["run"], RUN_RECORDS), "bad_input")
        _in_turn(paths, req, label, finished, fds)
        record["kind"] = finished.get("kind")  # the kind the run was opened with here (check_opening)
        record["log"] = finished.get("log")  # the log the run belongs to (its first line's hash)
        for d, dfd in fds:
            for _, rec in _lines(d, dfd, CHECKPOINTS):
                if rec and (rec.get("run") in (record["run"], label) or rec.get("covers") == label):
                    raise AgentError("run %s is already witnessed on this host (seq %s, head %s...): a run's "
                                     "checkpoint is witnessed once" % (label, rec.get("seq"),
                                                                       str(rec.get("head"))[:12]), "bad_input")
        record["witnessed"] = time.time()  # this host's own clock
        record["finished"] = finished.get("finished")  # when this host finished the run, by the same clock
        line = json.dumps(record, sort_keys=True) + "\n"
        for d, fd in fds:
            append_line_at(fd, CHECKPOINTS, line, d)
            written.append(os.path.join(d, CHECKPOINTS))
    reply = {"written": written}
    try:
        forced = _host_config().get("syslog") is True
    except AgentError:
        forced = False  # said by to_syslog when the policy asks for syslog; the witness itself is kept
    if req.get("syslog") is True or forced:
        reply["syslog"] = to_syslog(record, _inventory_name(req))
    return reply


#: a host's name as an inventory gives it (fleet/inventory.py): letters, digits, '.', '_' and '-'
_HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def _inventory_name(req):
    """The name the controller's inventory gives this host (the witness request's ``host``), or None. The syslog
    copy carries it (``host=``): a syslog daemon names the host by its own hostname, and every host of a run witnesses
    the same checkpoint, so only this name tells the verifier whose copy a line is."""
    name = req.get("host")
    return name if isinstance(name, str) and _HOST_NAME.match(name) else None


#: the host's own settings for the agent (root's, never the controller's nor an environment variable's):
#: {"syslog": true, "syslog_socket": "/dev/log"} -- the socket the witnessed checkpoints go to, and whether they go
#: there whatever the controller's policy says
HOST_CONFIG = "/etc/upgrader/agent.json"
SYSLOG_SOCKET = "/dev/log"


def _host_config():
    """HOST_CONFIG as a dict (empty when absent); refused (AgentError) when another account could have written it."""
    from .state import ancestor_problem, trusted_uid

    try:
        st = os.lstat(HOST_CONFIG)
    except OSError:
        return {}
    problem = ancestor_problem(HOST_CONFIG)
    if problem is not None:
        raise problem
    if not stat.S_ISREG(st.st_mode) or not trusted_uid(st.st_uid) or st.st_mode & 0o022:
        raise AgentError("%s must be a plain file of root's (or the agent's account) that nobody else can write; "
                         "nothing was sent: chown root and chmod go-w it" % HOST_CONFIG, "unsafe_path",
                         path=HOST_CONFIG)
    with open(HOST_CONFIG, "rb") as f:
        try:
            data = json.loads(f.read(65536).decode("utf-8"))
        except ValueError as e:
            raise AgentError("%s is not JSON (%s): write e.g. {\"syslog_socket\": \"/dev/log\"}" % (HOST_CONFIG, e),
                             "bad_input", path=HOST_CONFIG)
    if not isinstance(data, dict):
        raise AgentError("%s must hold a JSON object, e.g. {\"syslog_socket\": \"/dev/log\"}" % HOST_CONFIG,
                         "bad_input", path=HOST_CONFIG)
    return data


def to_syslog(record, host=None):
    """Send one witnessed checkpoint to this host's syslog (auth facility, info) through the socket the host's own
    config names (/dev/log by default); {"sent": socket} or {"error": why} -- never raises: the witness is kept.
    ``host``: this host's inventory name (_inventory_name), said as ``host=`` when known."""
    import logging
    import logging.handlers

    class _Handler(logging.handlers.SysLogHandler):
        def handleError(self, rec):  # noqa: N802 - the stdlib's name; a failure is reported, not printed
            raise

    try:
        where = _host_config().get("syslog_socket", SYSLOG_SOCKET)
        if not isinstance(where, str) or not where.startswith("/"):
            raise AgentError("syslog_socket in %s must be an absolute path, not %r" % (HOST_CONFIG, where),
                             "bad_input")
        handler = _Handler(address=where, facility=logging.handlers.SysLogHandler.LOG_AUTH)
        try:
            # log=: the identity of the run's log, so the copy (out of the controller's reach) says itself which
            # log the run is of, whatever the host's records are later made to say
            text = ("upgrader-agent: witnessed checkpoint run=%s seq=%s head=%s signer=%s key=%s time=%s log=%s"
                    % tuple(record.get(k) for k in ("run", "seq", "head", "signer", "key", "time", "log"))
                    + (" host=%s" % host if host else "") + _signature_field(record))
            handler.emit(logging.LogRecord("upgrader-agent", logging.INFO, __file__, 0, text, None, None))
        finally:
            handler.close()
    except (AgentError, OSError, ValueError) as e:
        return {"error": str(e)}
    return {"sent": where}


def op_witness_read(req):
    """What this host witnessed, whole: every checkpoint (each line once, in file order, whatever its number), this
    host's own record of every run it finished (``runs``), every line it could not use (``unreadable``, the
    first few named, ``unreadable_count`` all of them), and whether its own trust root protects them
    (``trust_root``)."""
    bad = []
    paths = _paths(req)
    if not _marked(paths, absent_ok=True):  # nothing made: the verifier says what an absent ledger means
        return {"checkpoints": [], "runs": [], "unreadable": [], "unreadable_count": 0, "opened": [],
                "unfinished": [], "lock": None, "absent": paths.state, "trust_root": _trust_root()}

    def checkpoint_key(rec):
        seq = rec.get("seq")
        if type(seq) is not int or seq < 1 or not isinstance(rec.get("head"), str) \
                or not isinstance(rec.get("run"), str):
            return None
        return (seq, rec["head"], rec["run"], rec.get("witnessed"))

    def record_key(when):
        return lambda rec: (rec["as"], rec.get(when)) if isinstance(rec.get("as"), str) else None

    # each file's usable lines once (by key, in file order) over every copy of the ledger; the rest named in bad
    found = {CHECKPOINTS: [], RUN_RECORDS: [], OPENED: []}
    keys = {CHECKPOINTS: checkpoint_key, RUN_RECORDS: record_key("finished"), OPENED: record_key("opened")}
    seen = {name: set() for name in keys}
    with ledger_fds(paths, strict=True) as fds:
        for d, dfd in fds:
            for name, key_of in keys.items():
                path = os.path.join(d, name)
                for n, rec in _lines(d, dfd, name):
                    key = key_of(rec) if rec is not None else None
                    if key is None:
                        bad.append({"file": path, "line": n})
                    elif key not in seen[name]:
                        seen[name].add(key)
                        found[name].append(dict(rec, file=path, file_line=n))
    out, runs, opened = found[CHECKPOINTS], found[RUN_RECORDS], found[OPENED]
    from .files import read_json

    finished = {r["as"] for r in runs}
    holder = read_json(paths.lock) if os.path.lexists(paths.lock) else None
    unfinished = [r["as"] for r in opened if r["as"] not in finished]
    # the steps this host executed for each run it opened and never finished (its finish would have recorded them)
    open_steps = {}
    for r in opened:
        if r["as"] in unfinished and r["as"] not in open_steps and isinstance(r.get("run"), str):
            try:
                open_steps[r["as"]] = _steps(_paths(dict(req, run_id=r["run"])), r["as"])
            except AgentError:
                continue
    return {"checkpoints": out, "runs": runs, "unreadable": bad[:LISTED], "unreadable_count": len(bad),
            "opened": opened, "unfinished": unfinished, "open_steps": open_steps,
            "lock": holder if isinstance(holder, dict) else None, "trust_root": _trust_root()}


def _trust_root():
    """Whether this host's own trust root protects what it records (part of the witness_read answer, so the auditor
    need not infer it): with a root, the agent runs a changing step or hook only for a run the root accepted, so a
    modified controller cannot run a command here that rewrites the ledger; a root that is there but cannot be
    trusted refuses every run, and protects as much. None without a root; else its directory, and the problem of
    a root it cannot use."""
    from .trustroot import TRUST_DIR, load_root

    try:
        root = load_root()
    except AgentError as e:
        return {"dir": TRUST_DIR, "usable": False, "problem": str(e)}
    return None if root is None else {"dir": root["dir"], "usable": True, "problem": None}


def _marked(paths, absent_ok=False):
    """Refused (bad_input) unless the run's state dir exists and carries the agent's marker: witness and
    witness_read never make a ledger, and read none the agent did not make (an install dir that is not the one the
    runs went to shows as that, not as a host with nothing on record)."""
    from .state import STATE_MARKER, open_state_dir

    fd = open_state_dir(paths.state)
    if fd is None:
        if absent_ok:
            return False
        raise AgentError("%s does not exist: no run of upgrader took this host's lock for the install %s, so it "
                         "keeps no record here; check the install dir" % (paths.state, paths.install),
                         "bad_input", path=paths.state)
    try:
        names = os.listdir(fd)
    finally:
        os.close(fd)
    if STATE_MARKER not in names:
        raise AgentError("%s carries no %s marker: it is not a state dir of the agent's; nothing read or written"
                         % (paths.state, STATE_MARKER), "unsafe_path", path=paths.state)
    return True


# -- this host's own record of a run ------------------------------------------------------------------------------


def _run_dir_fd(paths):
    """A descriptor of the run's own directory, opened from the state dir's descriptor one step at a time, never
    through a link (None when it is not there)."""
    from .beneath import walk_dirs
    from .state import open_state_dir

    paths.run()  # the run id's shape, refused otherwise
    sfd = open_state_dir(paths.state)
    if sfd is None:
        return None
    try:
        return walk_dirs(sfd, ["runs", paths.run_id], "the run's directory", paths.state)
    except FileNotFoundError:
        return None
    finally:
        os.close(sfd)


def note_step(req, ok, kind=None, began=None):
    """After a changing action of a run (main.handle): one line in the run's own steps.jsonl -- the action, whether
    it went well, when it started (``start``) and ended (``at``) by this host's clock. ``began``: (wall clock,
    monotonic clock) when the action started; its end is that start plus the monotonic time it took, so a wall
    clock stepped meanwhile changes neither the order nor the length of a step. Never fails the action (the record
    is the host's account, not a gate)."""
    try:
        paths = _paths(req)
        if not paths.run_id:
            return
        if began is not None:
            start, took = began[0], max(0.0, time.monotonic() - began[1])
            line = {"op": req.get("op"), "ok": bool(ok), "start": start, "at": start + took}
        else:
            line = {"op": req.get("op"), "ok": bool(ok), "at": time.time()}
        if kind:
            line["kind"] = str(kind)[:40]
        label = _latest_label(paths)
        if label:  # the part of the run whose lock this step ran under: each part keeps its own steps
            line["as"] = label
        dfd = _run_dir_fd(paths)
        if dfd is None:
            return
        try:
            fd = os.open(STEPS, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
                         | getattr(os, "O_CLOEXEC", 0), 0o600, dir_fd=dfd)
        finally:
            os.close(dfd)
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                os.write(fd, (json.dumps(line, sort_keys=True) + "\n").encode("utf-8"))
        finally:
            os.close(fd)
    except (AgentError, OSError, ValueError):
        pass


def _latest_label(paths):
    """The label of the run's latest opening on this host (the part of the run that holds its lock now), or None
    when its records cannot be read (the step is still recorded, without it)."""
    try:
        opened = _history(paths)[0]
    except (AgentError, OSError):
        return None
    return opened[-1]["as"] if opened else None


def _all_steps(paths):
    """Every line of the run's own steps.jsonl, as parsed (none when it is not there)."""
    try:
        dfd = _run_dir_fd(paths)
        if dfd is None:
            return []
        try:
            rows = _lines(paths.run(), dfd, STEPS)
        finally:
            os.close(dfd)
    except (AgentError, OSError):
        return []
    return [rec for _, rec in rows if isinstance(rec, dict)]


def _steps(paths, label):
    """The steps of part ``label`` of the run (its own, recorded under its label by note_step), as the host's
    records give them: a rollback or resume of a killed run reports its own steps, the killed run keeps its own.
    Steps an agent before labels recorded have none: for those, every step since the run's last finish."""
    steps = []
    for rec in _all_steps(paths):
        if "as" in rec:
            if rec.get("as") == label and rec.get("op") != "finish":
                steps.append(_step(rec))
        elif rec.get("op") == "finish" and rec.get("ok"):
            steps = [x for x in steps if "as" in x]
        else:
            steps.append(_step(rec))
    return steps


def _step(rec):
    """One step as a record gives it: the action, whether it went well, its start and end by the host's clock, and
    the part of the run it ran under (when the agent recorded it)."""
    out = {"op": rec.get("op"), "ok": rec.get("ok"), "start": rec.get("start"), "at": rec.get("at")}
    if "as" in rec:
        out["as"] = rec.get("as")
    return out


def run_record(paths, req, approvals, before, after, now):
    """This host's record of the run it is finishing (op_finish writes it to every copy of the ledger)."""
    audit = _audit(req)
    label = _label(paths, req)
    opening = next((r for r in _history(paths)[0] if r["as"] == label), {})
    steps = _steps(paths, label)
    window = audit.get("window")
    plan = audit.get("plan")
    return {"run": paths.run_id, "as": label, "kind": opening.get("kind"), "outcome": req.get("outcome"),
            "plan": plan if isinstance(plan, str) and _HEX64.match(plan) else None,
            "approvals": [a for a in approvals if isinstance(a, str)],
            "steps": steps, "version_before": before, "version_after": after,
            "window": window if isinstance(window, bool) else None,
            "started": (steps[0].get("start") or steps[0]["at"]) if steps else None, "finished": now,
            "utc_offset": time.strftime("%z", time.localtime(now)), "log": opening.get("log") or _log_id(audit)}


def _paths(req):
    from .state import Paths

    return Paths(req)
