"""Every field of an approved plan is the requester's input: at run time each host's package is rebuilt from
the signed catalog entry (and the package file it verifies) and must equal the plan's copy in full.

The plan names a host's product, target version and package. The entry is found by the plan's product and
target in the signed catalog, never by the package the plan carries; the package description is made again
from that entry exactly as ``plan`` made it (``planner.package_entry``: file, sha256, size, kind, product,
version, requires, declared changes, remove list, limits). A plan whose package differs in any field is not
the plan the catalog supports: refused (exit 4) before any host is touched, naming the host and the fields.
The run then decides and installs from the rebuilt description only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from ..core.errors import ApprovalRefused
from ..core.shapes import PlanHost, PlanPackage

if TYPE_CHECKING:
    from .catalog import Catalog, CatalogEntry

__all__ = ["trusted_package", "PACKAGE_FIELDS"]

#: the fields of a plan's package description, each compared with the one rebuilt from the catalog
PACKAGE_FIELDS = ("product", "version", "kind", "file", "sha256", "size", "requires", "changes", "remove", "limits")

_BUILT: dict[tuple[str, str], PlanPackage] = {}  # (catalog sha256, package sha256) -> description, this process


def trusted_package(catalog: Catalog, h: PlanHost, *, verify: bool = False) -> tuple[CatalogEntry, PlanPackage]:
    """The catalog entry for the plan host ``h`` (its product and target) and the package description rebuilt
    from it; ApprovalRefused (exit 4) when the catalog has none or the plan's package differs in any field.
    The package file is verified when the description is first built in this process, and with ``verify``
    always (once, not twice, when both apply)."""
    from ..core.planner import package_entry
    from .catalog import verify_package_file

    name, product, target = h.get("name"), str(h.get("product")), str(h.get("target"))
    entry = catalog.find(product, target)
    if entry is None:
        raise ApprovalRefused(f"{name}: the signed catalog {catalog.path} has no package of {product} {target}, the "
                              "plan's target; nothing was changed",
                              hint="make and approve a new plan with the current catalog")
    key = (catalog.sha256, entry.sha256)
    if key not in _BUILT:
        _BUILT[key] = package_entry(catalog, entry)  # verifies the file (size, sha256, package.yaml, members)
    elif verify:
        verify_package_file(catalog.package_path(entry), entry, catalog.verified)
    expected = _BUILT[key]
    given = h.get("package")
    planned: Mapping[str, object] = given if isinstance(given, dict) else {}
    differ = [f for f in PACKAGE_FIELDS if _norm(planned.get(f)) != _norm(expected.get(f))]
    extra = sorted(set(planned) - set(PACKAGE_FIELDS))
    if differ or extra:
        shown = ", ".join(f"{f} (plan: {_short(planned.get(f))}, catalog: {_short(expected.get(f))})" for f in differ)
        if extra:
            shown = ", ".join(x for x in (shown, "fields the catalog does not have: " + ", ".join(extra)) if x)
        raise ApprovalRefused(f"{name}: the plan's package does not match the signed catalog's entry for {product} "
                              f"{target}: {shown}; nothing was changed",
                              hint="the plan was altered or made with another catalog: make and approve a new plan")
    return entry, expected.copy()


def _norm(value: object) -> object:
    """JSON's shape of a value (a plan is read back from JSON: tuples are lists)."""
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _norm(v) for k, v in value.items()}
    return value


def _short(value: object) -> str:
    text = repr(_norm(value))
    return text if len(text) <= 80 else text[:77] + "..."
