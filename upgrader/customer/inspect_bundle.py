"""The half-yearly inspection's template workflow: the customer's one file, and the engineer's review of it.

``write_bundle`` writes ``NAME.tar.gz`` holding one folder ``inspection-TIME/``::

    manifest.json     every other member: path, sha256, size
    inspection.json   the inspection as ``upgrader inspect --json`` prints it, redacted (as diagnostics bundles are)
    report.html       the self-contained report in the chosen language

``read_bundle`` opens one on the engineer's side without extracting anything to disk: only those three names, regular
members, each at most 64 MiB, each matching the manifest; anything else is refused (InputError, exit 2, naming the
file). The data is the customer's: it is escaped wherever it is shown.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from ..core.errors import InputError

__all__ = ["write_bundle", "read_bundle", "MEMBERS"]

MEMBERS = ("manifest.json", "inspection.json", "report.html")
_MAX = 64 << 20


def _hint() -> str:
    return "ask the customer for the file upgrader inspect --bundle wrote, unchanged"


def write_bundle(data: dict[str, Any], out: Path, *, lang: str) -> Path:
    from ..audit.redaction import redact, redact_value
    from .inspect_report import render_html

    if not str(out).endswith(".tar.gz"):
        raise InputError(f"--bundle: the file's name must end in .tar.gz, got {str(out)!r}",
                         hint="e.g. --bundle inspection-app-01.tar.gz")
    clean = redact_value(data)
    assert isinstance(clean, dict)
    texts = {"inspection.json": json.dumps(clean, indent=1, sort_keys=True, ensure_ascii=False, default=str) + "\n",
             "report.html": redact(render_html(clean, lang))}
    blobs = {k: v.encode("utf-8") for k, v in texts.items()}
    manifest = {"format": 1, "kind": "upgrader-inspection", "lang": lang,
                "members": [{"path": k, "sha256": hashlib.sha256(b).hexdigest(), "size": len(b)}
                            for k, b in blobs.items()]}
    blobs = {"manifest.json": (json.dumps(manifest, indent=1) + "\n").encode(), **blobs}
    stamp = str((data.get("inspection") or {}).get("time") or _dt.datetime.now(_dt.timezone.utc).isoformat())
    top = "inspection-" + "".join(ch for ch in stamp if ch.isalnum())[:15]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            for name, blob in blobs.items():
                info = tarfile.TarInfo(f"{top}/{name}")
                info.size, info.mode, info.mtime = len(blob), 0o644, 0
                tar.addfile(info, io.BytesIO(blob))
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def read_bundle(path: Path) -> dict[str, Any]:
    """The inspection a bundle holds (its manifest checked); InputError naming the file for anything else."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for m in tar:
                name = m.name.split("/", 1)[-1] if "/" in m.name else m.name
                if m.isdir() and "/" not in m.name.strip("/"):
                    continue
                if not m.isreg() or name not in MEMBERS or m.name.count("/") != 1 or name in found:
                    raise InputError(f"--review: {m.name!r} is not a member of an inspection bundle", path=str(path),
                                     hint=_hint())
                if m.size > _MAX:
                    raise InputError(f"--review: {m.name} is larger than {_MAX >> 20} MiB", path=str(path),
                                     hint=_hint())
                f = tar.extractfile(m)
                assert f is not None
                found[name] = f.read(_MAX + 1)
    except FileNotFoundError:
        raise InputError("--review: the bundle does not exist", path=str(path), hint=_hint()) from None
    except (tarfile.TarError, OSError, EOFError) as e:
        raise InputError(f"--review: not an inspection bundle (a .tar.gz): {e}", path=str(path), hint=_hint()) from None
    missing = [n for n in MEMBERS if n not in found]
    if missing:
        raise InputError(f"--review: the bundle lacks {', '.join(missing)}", path=str(path), hint=_hint())
    try:
        manifest = json.loads(found["manifest.json"])
        listed = {m["path"]: m["sha256"] for m in manifest["members"]}
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"--review: its manifest.json is unreadable ({e})", path=str(path), hint=_hint()) from None
    for name in MEMBERS[1:]:
        if listed.get(name) != hashlib.sha256(found[name]).hexdigest():
            raise InputError(f"--review: {name} does not match its digest in manifest.json (changed after it was "
                             "written)", path=str(path), hint=_hint())
    try:
        data = json.loads(found["inspection.json"])
    except ValueError as e:
        raise InputError(f"--review: inspection.json is not JSON ({e})", path=str(path), hint=_hint()) from None
    if not isinstance(data, dict) or not isinstance(data.get("hosts"), list) or not isinstance(data.get("inspection"),
                                                                                               dict):
        raise InputError("--review: inspection.json holds no inspection", path=str(path), hint=_hint())
    for h in data["hosts"]:
        if not isinstance(h, dict) or not isinstance(h.get("host"), str) or not isinstance(h.get("facts", {}), dict):
            raise InputError("--review: inspection.json has a host entry without a name", path=str(path), hint=_hint())
    return data
