"""Gathering what a plan needs: read-only facts from each host, playbooks, catalog, policy.

This is the effectful half of planning (connects to hosts, reads files); ``plan.build_plan`` is
the pure half. Nothing on any host is changed here: the agent's ``facts`` action only reads.
"""

from __future__ import annotations

import getpass
import socket
from concurrent.futures import ThreadPoolExecutor
import datetime as _dt
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal, Mapping, cast

from ..trust.catalog import Catalog, CatalogEntry, verify_package_file
from .config_vars import merge_variables, read_config_vars, refuse_overrides
from .clock import Clock
from .errors import ApprovalRefused, InputError, TransportError
from .host_paths import check_rendered, paths_to_check, refuse_unsafe
from ..fleet.inventory import Host, Inventory
from .plan import HostInput, Plan, build_plan, same_installs
from .shapes import AgentReply, DecisionData, PathsToCheck, PlanPackage, PlaybookSpec, ProbeResult
from .playbook import Playbook
from .probe_proof import ProbeUnproven, agent_call, prove
from ..fleet.transport.base import AgentClient, AgentFailure, Transport

if TYPE_CHECKING:
    from version_policy import Decision, Policy, UpgradeRequest, Version, VersionError, VersionRange

__all__ = ["make_plan", "host_facts", "requester_identity", "package_entry"]


def requester_identity(user: str | None = None) -> dict[str, str]:
    """Who is asking: the given name, else env UPGRADER_USER, else the login name; and this machine."""
    import os

    if not user:
        user = os.environ.get("UPGRADER_USER")
    if not user:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown"
    return {"user": user, "host": socket.gethostname()}


def installed_product(inventory: str, said: object) -> tuple[str, str]:
    """(the installed product the same_product rule decides on, where it came from) (issue 12). Confirmed only by
    what the service account cannot write (the host trust root's ``installs``, or a ledger record written by a run
    that root accepted: hostagent/product.py): then the host's word. Otherwise the inventory's word, marked NOT
    CONFIRMED for the review; the host's own guess (its files, a ledger without a trust root) is named beside it,
    and a guess of another product is decided on (so the plan is refused: a guess can refuse, never confirm)."""
    if not isinstance(said, dict) or not isinstance(said.get("product"), str) or not said.get("product"):
        return inventory, "NOT CONFIRMED: the inventory's word: the host does not tell"
    product, where = str(said["product"]), str(said.get("from"))
    if said.get("confirmed") is True:
        return product, f"by {where}"
    if product != inventory:
        return product, f"NOT CONFIRMED: the host's own guess by {where}"
    return inventory, (f"NOT CONFIRMED: the inventory's word; the host's own guess by {where} agrees, but no host "
                       "trust root confirms it")


def host_facts(agent: AgentClient, host: Host, spec: PlaybookSpec, packages: list[str],
               check_drift: bool = True, check_paths: PathsToCheck | None = None) -> AgentReply:
    extra = {"check_paths": check_paths} if check_paths is not None else {}
    try:
        return cast(AgentReply, agent.call("facts", install_dir=host.install_dir, state_dir=host.state_dir,
                          version_source=spec["version"], preserve=[p["path"] for p in spec["preserve"]],
                          check_drift=check_drift, packages=packages,
                          ascii_dirs=spec.get("preflight", {}).get("ascii_dirs", []), timeout=600, **extra))
    except AgentFailure as e:
        from .host_paths import refuse_agent_unsafe

        refuse_agent_unsafe(e, host=host.name)
        raise TransportError(f"cannot read the host's state: {e.message}", host=host.name) from e


def package_entry(catalog: Catalog, entry: CatalogEntry) -> PlanPackage:
    """Verify the package file against its catalog entry and describe it for the plan."""
    meta = verify_package_file(catalog.package_path(entry), entry, catalog.verified)
    return {"file": entry.file, "sha256": entry.sha256, "size": entry.size, "kind": entry.kind,
            "product": entry.product, "version": entry.version, "requires": entry.requires,
            "changes": list(meta.changes), "remove": list(meta.remove),
            "limits": {"members": entry.max_members, "unpacked_bytes": entry.max_unpacked_bytes}}


def make_plan(inventory: Inventory, hosts: list[Host], *, target: str, catalog: Catalog, policy: Policy,
              clock: Clock, connect: Callable[[Host], Transport], forks: int = 8,
              requester: dict[str, str] | None = None, window: Mapping[str, object] | None = None,
              signed_by: Mapping[str, object] | None = None, home: str | Path = ".",
              playbooks: dict[str, tuple[Playbook, str]] | None = None) -> Plan:
    """Read every host (read-only), decide, and build the plan. ``signed_by``: who signed the catalog (its
    signer, key fingerprint and serial), recorded in the plan for the approver's review. Each host's playbook
    NAME comes from the operator's playbook roots under ``home`` (``core.playbook.playbook_roots``), never from
    beside the inventory; ``playbooks`` (name -> (Playbook, where from)) are ones the caller already chose."""
    from version_policy import (UpgradeRequest, VersionError, decide, parse_range, parse_version)

    try:
        target_v = parse_version(target)
    except VersionError as e:
        raise InputError(f"--to: {e}") from None
    today = clock.now().date()
    from .playbook import load_operator_playbook

    chosen = dict(playbooks or {})
    for h in hosts:
        if h.playbook not in chosen:
            chosen[h.playbook] = load_operator_playbook(h.playbook, home, where=str(inventory.path),
                                                        key=f"hosts.{h.name}.playbook")
    # each package is verified once, before the hosts are contacted (not once per concurrent host thread)
    entries = {h.name: catalog.find(h.product, target) for h in hosts}
    packages: dict[str, PlanPackage] = {}
    for entry in entries.values():
        if entry is not None and entry.sha256 not in packages:
            packages[entry.sha256] = package_entry(catalog, entry)

    def one(h: Host) -> tuple[HostInput, ProbeUnproven | None]:
        pb, pb_from = chosen[h.playbook]
        if pb.product != h.product:
            raise InputError(f"host {h.name} runs {h.product!r} but playbook {pb.path} is for {pb.product!r}",
                             path=str(inventory.path), key=f"hosts.{h.name}.playbook")
        where = {"host": h.name, "inventory": str(inventory.path)}
        entry = entries[h.name]
        transport = connect(h)
        try:
            agent = AgentClient(transport)
            # explicit values (inventory vars, --var) win over what the configuration says (config_vars)
            read = read_config_vars(agent, install_dir=h.install_dir, state_dir=h.state_dir, vars_from=pb.vars_from)
            refuse_overrides(h.name, h.vars, read, policy.vars_override, inventory=str(inventory.path),
                             policy=policy.source)  # the requester's inventory may not redirect the probes
            values, vars_read = merge_variables(pb.defaults, read, {"install_dir": h.install_dir, "host": h.name,
                                                                    **h.vars})
            base_vars = {**values, "install_dir": h.install_dir, "host": h.name}
            probe_spec = pb.render({**base_vars, "target_version": target, "current_version": "unknown"})
            check_rendered(probe_spec, playbook=str(pb.path), **where)
            check_paths = paths_to_check(probe_spec, packages[entry.sha256] if entry is not None else None)
            facts = host_facts(agent, h, probe_spec, [entry.sha256] if entry else [], check_paths=check_paths)
            refuse_unsafe(facts.get("unsafe_paths") or [], **where)
            if facts.get("version_refused"):  # a host with its own trust root did not run the version command
                raise ApprovalRefused(version_refused_text(h.name, str(facts.get("version_error"))),
                                      hint="read the installed version from a file in the playbook (version: file:), "
                                           "or have root allow that very command in the host trust root's "
                                           "host-trust.json \"version_commands\"; nothing was run or changed "
                                           "/ 在剧本中从文件读取版本（version: file:），或由 root 在主机信任根的 "
                                           "host-trust.json \"version_commands\" 中允许这条命令；未运行也未更改任何东西")
            if entry is not None:
                check_seen_serial(h.name, h.product, facts, catalog.serial)
            current = facts.get("version")
            spec = pb.render({**base_vars, "target_version": target, "current_version": current or "unknown"})
            check_rendered(spec, playbook=str(pb.path), **where)
            rollback_observe = pb.render({**base_vars, "target_version": current or "unknown",
                                          "current_version": current or "unknown"})["observe"]
            package = packages[entry.sha256] if entry is not None else None
            decision = _decide(h, current, facts, target_v, entry, package, policy, today,
                               UpgradeRequest, decide, parse_version, parse_range, VersionError)
            proof: list[ProbeResult] = []
            unproven = None
            if decision.get("allowed") and package is not None:
                try:  # only an upgrade the policy allows would stop the service
                    proof = prove(agent_call(agent, h.install_dir, h.state_dir), host=h.name,
                                  observe=rollback_observe, version=current, vars_read=vars_read)
                except ProbeUnproven as e:
                    unproven = e
        finally:
            transport.close()
        explicit = {str(k): str(v) for k, v in h.vars.items()}  # recorded: the run renders the playbook with them
        return HostInput(host={**h.describe(), **({"vars": explicit} if explicit else {}),
                               "identity": facts.get("identity")}, state_dir=h.state_dir,
                         playbook={"name": h.playbook, "path": str(pb.path), "sha256": pb.digest, "from": pb_from},
                         spec=spec, rollback_observe=rollback_observe, facts=facts, package=package,
                         decision=decision, current=current, target=target, vars_read=vars_read,
                         proof=proof), unproven

    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(hosts)))) as pool:
        done = list(pool.map(one, hosts))
    twice = same_installs([(str(i.host.get("name")), cast("Mapping[str, object] | None", i.host.get("identity")))
                           for i, _ in done])
    if twice:
        raise ApprovalRefused("the inventory names one install twice (another name, address or spelling of the "
                              "same directory), nothing was changed:\n  " + "\n  ".join(twice),
                              hint="keep one entry per install in the inventory")
    unproven = [e for _, e in done if e is not None]
    if len(unproven) == 1:
        raise unproven[0]
    if unproven:
        raise InputError("health checks fail on the running version of these hosts, nothing was changed:\n  "
                         + "\n  ".join(f"{e} ({e.hint})" for e in unproven),
                         hint="a check that fails now would roll a good upgrade back: fix each as its hint says")
    inputs = [i for i, _ in done]
    return build_plan(
        inputs, target=target,
        catalog={"path": str(catalog.path.resolve()), "sha256": catalog.sha256, "serial": catalog.serial,
                 **({"signer": signed_by.get("signer"), "fingerprint": signed_by.get("fingerprint")}
                    if signed_by else {})},
        policy={"source": policy.source, "digest": policy.digest, "rules": policy.raw.get("rules", {}),
                "identity": policy.identity, "trust_files": [t.to_dict() for t in policy.trust_files]},
        requester=requester or requester_identity(), created=clock.now(), window=window)


def version_refused_text(host: str, said: str) -> str:
    """The plan's refusal when a host with its own trust root did not run the playbook's version command (en + zh)."""
    return (f"{host}: {said}\n{host}：版本来源是一条命令；主机有自己的信任根时，在被接受的运行之外只读取文件来源"
            "（该命令未运行）")


def check_seen_serial(host: str, product: str, facts: AgentReply, serial: int) -> None:
    """ApprovalRefused when the host was already upgraded from a catalog newer than ``serial``."""
    seen = int((facts.get("catalog_serials") or {}).get(product, 0) or 0)
    if seen > serial:
        raise ApprovalRefused(f"{host}: catalog serial {serial} is older than serial {seen} this host was already "
                              f"upgraded from ({product}, by this install or another one on this machine): refusing "
                              f"a rollback to an old catalog; nothing was changed\n{host}：目录序号 {serial} 比本机（此安装"
                              f"或本机上的另一安装）已用于升级 {product} 的目录序号 {seen} 旧：拒绝回退到旧目录；未做任何更改",
                              hint="get the current catalog from the vendor / 请向厂商获取当前目录")


def _decide(h: Host, current: str | None, facts: AgentReply, target_v: Version, entry: CatalogEntry | None,
            package: PlanPackage | None, policy: Policy, today: _dt.date, UpgradeRequest: type[UpgradeRequest],
            decide: Callable[[UpgradeRequest, Policy], Decision], parse_version: Callable[[str], Version],
            parse_range: Callable[[str], VersionRange], VersionError: type[VersionError]) -> DecisionData:
    if current is None:
        return {"allowed": False, "rules": [{"rule": "installed_version", "status": "fail",
                                             "reason": facts.get("version_error") or "no version found"}]}
    if entry is None or package is None:
        return {"allowed": False, "rules": [{"rule": "package", "status": "fail",
                                             "reason": f"the catalog has no package of {h.product} {target_v}"}]}
    try:
        current_v = parse_version(current)
    except VersionError as e:
        return {"allowed": False, "rules": [{"rule": "installed_version", "status": "fail",
                                             "reason": f"the installed version is unreadable: {e}"}]}
    try:
        requires = parse_range(package["requires"] or "") if package.get("requires") else None
    except VersionError as e:
        return {"allowed": False, "rules": [{"rule": "patch_requires", "status": "fail",
                                             "reason": f"the package's requires range is invalid: {e}"}]}
    installed, installed_from = installed_product(h.product, facts.get("installed_product"))
    request = UpgradeRequest(product=installed, product_from=installed_from, claimed=h.product,
                             target_product=entry.product, current=current_v, target=target_v,
                             kind=cast(Literal["full", "patch"], entry.kind),
                             declared_changes=tuple(package.get("changes", ())),
                             requires=requires, maintenance_until=h.maintenance_until, today=today, host=h.name)
    return cast(DecisionData, dict(decide(request, policy).to_dict()))

