"""What a host can upgrade to: the newest free upgrade, the versions the policy refuses and why,
and the catalog's advisories that concern the installed version, with their free fix. Pure.

``host_offers`` asks ``version_policy.decide`` about every package of the host's product that
is newer than the installed version (or cannot be ordered against it, e.g. another product
line: then the refusal says so). A package's declared changes and ``requires`` range are the
catalog's (the package files are not opened). An advisory concerns a host when its installed
version is listed or lies in an affected range ("cannot tell" when a range cannot be ordered
against it); its free fix is the least change among the fixed versions and the hotfix package
that the policy allows. No I/O: the caller reads the host's facts and the catalog.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from ..trust.catalog import Advisory, Catalog, CatalogEntry

__all__ = ["host_offers", "unreadable_host"]


def unreadable_host(host: str, product: str, error: str) -> dict[str, Any]:
    """The entry of a host whose installed version could not be read."""
    return {"host": host, "product": product, "current": None, "newest_free": None, "allowed": [], "refused": [],
            "advisories": [], "note": "", "error": error}


def _entry(e: CatalogEntry) -> dict[str, Any]:
    return {"version": e.version, "kind": e.kind, "file": e.file}


def _decide(current: Any, e: CatalogEntry, product: str, maintenance_until: _dt.date | None, today: _dt.date,
            policy: Any, host: str | None = None) -> Any:
    from version_policy import Decision, RuleResult, UpgradeRequest, VersionError, decide, parse_range, parse_version

    try:
        requires = parse_range(e.requires) if e.requires else None
    except VersionError as error:
        return Decision(False, (RuleResult("patch_requires", "fail", f"the package's requires range is invalid: "
                                                                       f"{error}"),))
    return decide(UpgradeRequest(product=product, target_product=e.product, current=current,
                                 target=parse_version(e.version), kind="patch" if e.kind == "patch" else "full",
                                 declared_changes=e.changes, requires=requires,
                                 maintenance_until=maintenance_until, today=today, host=host), policy)


def _affects(advisory: Advisory, version: Any) -> tuple[bool | None, str]:
    from version_policy import Version

    unknown: list[str] = []
    for text, item in advisory.affected:
        if isinstance(item, Version):
            if item == version:
                return True, f"{version} is listed as affected ({text})"
            continue
        containment = item.contains(version)
        if containment.result:
            return True, containment.reason
        if containment.result is None:
            unknown.append(containment.reason)
    return (None, "; ".join(unknown)) if unknown else (False, f"{version} is not affected")


def host_offers(*, host: str, product: str, current: str, maintenance_until: _dt.date | None, catalog: Catalog,
                policy: Any, today: _dt.date) -> dict[str, Any]:
    """Newest free upgrade, allowed and refused versions (with reasons), and advisories for one host."""
    from version_policy import VersionError, compare, parse_version

    try:
        current_v = parse_version(current)
    except VersionError as error:
        return unreadable_host(host, product, f"the installed version is unreadable: {error}")
    entries = sorted((e for e in catalog.entries if e.product == product), key=lambda e: parse_version(e.version)
                     .sort_key())
    decisions: dict[str, Any] = {}

    def decision(e: CatalogEntry) -> Any:
        if e.file not in decisions:
            decisions[e.file] = _decide(current_v, e, product, maintenance_until, today, policy, host)
        return decisions[e.file]

    allowed: list[dict[str, Any]] = []
    refused: list[dict[str, Any]] = []
    for e in entries:
        if compare(parse_version(e.version), current_v).order not in (1, None):
            continue
        d = decision(e)
        if d.allowed:
            allowed.append({**_entry(e), "reason": d.summary()})
        else:
            refused.append({**_entry(e), "reasons": [r.reason for r in d.refusals()]})
    newest = allowed[-1] if allowed else None
    if newest:
        note = f"newest free upgrade: {newest['version']} ({newest['kind']})"
    elif refused:
        note = f"no free upgrade: the policy refuses all {len(refused)} newer version(s) in the catalog"
    else:
        note = f"already at the newest {product} version in the catalog ({current})"
    advisories = [a for a in (_advisory(adv, current_v, product, catalog, decision) for adv in catalog.advisories)
                  if a is not None]
    return {"host": host, "product": product, "current": current,
            "newest_free": {k: newest[k] for k in ("version", "kind", "file")} if newest else None,
            "allowed": allowed, "refused": refused, "advisories": advisories, "note": note, "error": None}


def _advisory(advisory: Advisory, current: Any, product: str, catalog: Catalog, decision: Any) -> dict[str, Any] | None:
    """The advisory as it concerns this host (None when it does not), with its free fix."""
    from version_policy import parse_version

    if advisory.product != product:
        return None
    affected, why = _affects(advisory, current)
    if affected is False:
        return None
    candidates: list[CatalogEntry] = []
    notes: list[str] = []
    for version in advisory.fixed:
        entry = catalog.find(product, version)
        if entry is None:
            notes.append(f"fixed in {version}, which this catalog does not hold")
        else:
            candidates.append(entry)
    if advisory.hotfix:
        candidates += [e for e in catalog.entries if e.file == advisory.hotfix and e not in candidates]
    free = sorted((e for e in candidates if decision(e).allowed), key=lambda e: parse_version(e.version).sort_key())
    for e in candidates:
        if not decision(e).allowed:
            notes.append(f"{e.version} ({e.kind}) is refused: {'; '.join(r.reason for r in decision(e).refusals())}")
    fix = _entry(free[0]) if free else None
    if fix:
        note = f"free fix: {fix['version']} ({fix['kind']}, {fix['file']})"
    else:
        note = "no free fix: " + ("; ".join(notes) or "no fixed version given")
    return {**advisory.to_dict(), "status": "affected" if affected else "cannot tell", "why": why, "fix": fix,
            "fix_note": note}
