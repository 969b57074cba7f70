"""Trust in catalogs: the vendor's SSH signature (namespace ``upgrader-catalog``) over
``catalog.yaml``, checked against the policy's trusted signers, and protection against a
rollback to an older catalog (its ``serial`` may never go down for a product already seen).

The signature lies beside the catalog as ``catalog.yaml.sig`` (what ``ssh-keygen -Y sign``
writes). The highest serial seen per product is kept in ``<home>/trust/catalog-serials.json``.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import TypedDict

from .catalog import Catalog
from ..core.errors import ApprovalRefused
from ..core.journal import write_json_atomic
from .signers import AllowedSigners
from .sshsig import PrivateKey, SignatureError, parse_armored, sign, verify

__all__ = ["NAMESPACE", "sign_catalog", "verify_catalog", "signature_path"]

NAMESPACE = "upgrader-catalog"


def signature_path(catalog: Catalog) -> Path:
    return catalog.path.with_name(catalog.path.name + ".sig")



class CatalogSigner(TypedDict):
    """Who signed a catalog (its allowed_signers principal and key fingerprint) and its serial."""

    signer: str
    fingerprint: str
    serial: int


def sign_catalog(catalog_path: Path, private_key: PrivateKey) -> Path:
    sig = catalog_path.with_name(catalog_path.name + ".sig")
    sig.write_text(sign(private_key, catalog_path.read_bytes(), NAMESPACE), encoding="utf-8")
    return sig


def verify_catalog(catalog: Catalog, *, signers: AllowedSigners | None, now: _dt.datetime, home: Path,
                   record: bool = True) -> CatalogSigner:
    """Refuse (exit 4) an unsigned, wrongly signed or stale catalog; return who signed it. ``signers``: the
    policy's catalog.trusted_signers as read with the policy (signers.policy_signers), not the file read again."""
    if signers is None:
        raise ApprovalRefused(f"{catalog.path}: cannot trust the catalog: the policy names no vendor signers "
                              "(catalog.trusted_signers)", hint="set catalog.trusted_signers in the policy file")
    sig_file = signature_path(catalog)
    if not sig_file.is_file():
        raise ApprovalRefused(f"{catalog.path}: the catalog is not signed ({sig_file.name} is missing)",
                              hint="use the catalog exactly as the vendor published it, with its .sig file")
    try:
        signature = parse_armored(sig_file.read_text(encoding="utf-8", errors="replace"))
        verify(signature, catalog.content, NAMESPACE)  # the very bytes that were parsed
    except SignatureError as e:
        raise ApprovalRefused(f"{catalog.path}: bad catalog signature: {e}") from None
    principals = signers.principals_for(signature.public_key, NAMESPACE, now)
    if not principals:
        raise ApprovalRefused(f"{catalog.path}: signed by {signature.fingerprint}, which is not a trusted vendor key "
                              f"in {signers.source}")
    seen_file = home / "trust" / "catalog-serials.json"
    seen: dict[str, int] = json.loads(seen_file.read_text()) if seen_file.exists() else {}
    for product in catalog.products():
        if seen.get(product, 0) > catalog.serial:
            raise ApprovalRefused(f"{catalog.path}: catalog serial {catalog.serial} is older than serial "
                                  f"{seen[product]} already seen for {product}: refusing a rollback to an old "
                                  "catalog", hint="get the current catalog from the vendor")
    if record:
        for product in catalog.products():
            seen[product] = max(seen.get(product, 0), catalog.serial)
        seen_file.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(seen_file, seen)
    return {"signer": principals[0], "fingerprint": signature.fingerprint, "serial": catalog.serial}
