"""The shapes of the JSON that the core hands around: a playbook rendered for a host, a plan and its host
entries, the host agent's answers and the engine's events. Types only (``TypedDict``): at run time each is a
plain ``dict``, exactly what is written to and read from the plan, the journal and the agent's pipe.

A key that some values leave out is ``NotRequired``; an agent answer (``AgentReply``) holds the keys of
whichever action answered, so all of them are optional. Free JSON, whose shape nobody here relies on, is a
``JSONObject`` (values are ``object``: narrow before use).
"""

from __future__ import annotations

from typing import NotRequired, Protocol, TypeAlias, TypedDict

__all__ = ["JSONObject", "VersionSpec", "PreserveSpec", "ProcessSpec", "ProbeSpec", "StopSpec", "StartSpec",
           "ObserveSpec", "HookSpec", "PlaybookSpec", "VarsFromSpec", "VarRead", "PathsToCheck", "RuleResult",
           "DecisionData", "PlanPlaybook", "PackageLimits", "PlanPackage", "PlanCheck", "PlanHost", "PlanData",
           "CommandResult", "ConfigKept", "ProbeResult", "AgentReply", "AgentCall", "JournalSeen", "Event"]

#: a JSON object whose values are read only after narrowing (``isinstance``)
JSONObject: TypeAlias = dict[str, object]


# -- a playbook rendered for one host (``Playbook.render``; the plan's ``playbook.spec``) ------------------

class VersionSpec(TypedDict, total=False):
    file: str
    member: str
    command: str
    timeout: float
    pattern: str


class PreserveSpec(TypedDict):
    path: str
    kind: str


class ProcessSpec(TypedDict):
    cmdline_contains: list[str]
    cmdline_last: NotRequired[str]
    ports: list[str]


class ProbeSpec(TypedDict, total=False):
    type: str
    name: str
    pid_file: str
    process: ProcessSpec
    port: int | str
    host: str
    url: str
    status: int
    body: str
    contains: str
    timeout: float
    file: str
    absent: str
    present: str
    command: str
    exit: int


class StopSpec(TypedDict):
    command: str
    timeout: float
    pid_file: str | None
    ports: list[str]
    force: bool
    kill_wait: float
    process: NotRequired[ProcessSpec]


class StartSpec(TypedDict):
    command: str
    timeout: float


class ObserveSpec(TypedDict):
    window: float
    interval: float
    start_timeout: float
    probes: list[ProbeSpec]


class HookSpec(TypedDict):
    command: str
    timeout: float


class BackupSpec(TypedDict):
    keep: int


class PreflightSpec(TypedDict):
    ascii_dirs: list[str]
    min_free: int


class PlaybookSpec(TypedDict):
    version: VersionSpec
    preserve: list[PreserveSpec]
    process: NotRequired[ProcessSpec]
    stop: StopSpec
    start: StartSpec
    observe: ObserveSpec
    backup: BackupSpec
    hooks: dict[str, list[HookSpec]]
    on_resume: str
    preflight: PreflightSpec


class VarsFromSpec(TypedDict, total=False):
    """``vars_from:`` of a playbook: where one variable's value is in the install's configuration."""

    file: str
    pattern: str
    xml: list[str]
    attribute: str


class VarRead(TypedDict, total=False):
    """What the configuration said for one ``vars_from`` variable, and what was used (``config_vars``)."""

    file: str
    value: str
    line: int
    error: str
    used: bool
    value_used: str | None
    why: str


class PathsToCheck(TypedDict):
    """Every path of a rendered spec that the agent will open, move or delete (``host_paths``)."""

    preserve: list[str]
    remove: list[str]
    pid_files: list[str]
    logs: list[str]
    version_file: str | None
    ascii_dirs: list[str]
    copied: list[str]  # preserved config and cache: copied into the backup (sparse or huge files refused)
    commands: dict[str, str]  # the playbook's commands by key: a script another account can change is refused


# -- a plan (``plan.build_plan``, ``plan.load_plan``) --------------------------------------------------------

class RuleResult(TypedDict):
    rule: str
    status: str
    reason: str


class DecisionData(TypedDict):
    """A policy decision (``version_policy.Decision.to_dict()``)."""

    allowed: bool
    rules: list[RuleResult]


class PlanPlaybook(TypedDict):
    name: str
    path: str
    sha256: str
    spec: PlaybookSpec
    rollback_observe: ObserveSpec


class PackageLimits(TypedDict):
    members: int
    unpacked_bytes: int


class PlanPackage(TypedDict):
    """A package as the plan describes it (``planner.package_entry``)."""

    file: str
    sha256: str
    size: int
    kind: str
    product: str
    version: str
    requires: str | None
    changes: list[str]
    remove: list[str]
    limits: PackageLimits


class PlanCheck(TypedDict):
    check: str
    status: str
    reason: str


class PlanHost(TypedDict):
    """One host of a plan: ``Host.describe()`` plus what the planner decided (``plan._HOST`` lists the keys)."""

    name: str
    address: str
    port: NotRequired[int]
    user: NotRequired[str | None]
    install_dir: str
    product: str
    playbook: PlanPlaybook
    maintenance_until: NotRequired[str | None]
    groups: NotRequired[list[str]]
    key: NotRequired[str | None]
    host_key: NotRequired[str | None]
    known_hosts: NotRequired[str | None]
    state_dir: NotRequired[str | None]
    current: str | None
    target: str
    package: NotRequired[PlanPackage | None]
    decision: DecisionData
    checks: NotRequired[list[PlanCheck]]
    allowed: bool
    phases: NotRequired[list[dict[str, str]]]
    vars: NotRequired[dict[str, str]]
    vars_read: NotRequired[dict[str, VarRead]]


class PlanData(TypedDict):
    format: int
    created: str
    requester: JSONObject
    target: str
    catalog: JSONObject
    policy: JSONObject
    window: JSONObject | None
    hosts: list[PlanHost]
    allowed: bool
    signature: NotRequired[str]


# -- the host agent's answers --------------------------------------------------------------------------------

class ProbeResult(TypedDict, total=False):
    probe: str
    ok: bool
    detail: str
    skipped: bool


class CommandResult(TypedDict, total=False):
    """A command the agent ran (start, hook, probe)."""

    exit: int
    seconds: float
    stdout: str
    stderr: str
    account: str  # who ran it: "daemon (uid 1)", the install's owner when the agent is root and the owner is not


#: the configuration in use before a rollback, kept aside (``in``: where)
ConfigKept = TypedDict("ConfigKept", {"paths": list[str], "in": str})


class AgentReply(TypedDict, total=False):
    """What an agent action answers: each action fills its own keys (see ``upgrader/agent.py``)."""

    # facts
    vars: dict[str, VarRead]
    version: str | None
    version_error: str
    lock: JSONObject | None
    drift: list[dict[str, str]]
    drift_count: int
    baseline: bool
    unsafe_paths: list[str]
    free_bytes: int
    copied_bytes: int  # the preserved config and cache the backup copies (counted in the free space a run needs)
    non_ascii: list[str]
    catalog_serials: dict[str, int]
    identity: JSONObject  # {"machine": "machine-id:...", "install": [st_dev, st_ino]}
    installed_product: dict[str, str | bool] | None  # {"product", "from", "confirmed"}: hostagent/product.py
    # observe, prove
    healthy: bool
    probes: list[ProbeResult]
    unevaluated: list[ProbeResult]
    stage: str
    ready_seconds: float
    checks: int
    # recovery_check, state
    verdict: str
    config_changed: list[str]
    by: str | None
    backup: JSONObject | None
    state: JSONObject | None
    install_exists: bool
    old_exists: bool
    # lock
    broken: JSONObject | None
    # receive_check, receive_commit
    present: bool
    upload_to: str
    path: str
    # prepare, stop, install, start, rollback, verify_tree
    backup_digest: str
    backup_files: int
    backup_bytes: int
    staged_files: int
    seconds: float
    already_stopped: bool
    escalated: str | None
    files: int
    log_offsets: dict[str, int]
    command: CommandResult
    identical: bool
    differences: list[dict[str, str]]
    config_kept: ConfigKept | None


class AgentCall(Protocol):
    """``call(op, timeout=..., **request)``: one action of a host's agent (its answer, or ``AgentFailure``)."""

    def __call__(self, op: str, timeout: float | None = None, **request: object) -> AgentReply: ...


class JournalSeen(TypedDict, total=False):
    """Per host, what a run's journal proves happened (what ``Engine.resume`` decides from)."""

    started: bool
    ended: str | None
    version: str | None
    intents: list[str]
    done: list[str]


#: one engine event (``Engine.emit``): ``event``, ``run``, ``host``, ``time`` and the event's own fields
Event: TypeAlias = dict[str, object]
