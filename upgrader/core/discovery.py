"""Finding installed products on this machine by their files, for ``upgrader guide``.

A directory is an install of a playbook's product when the playbook's version source (its
``version.file``, or the script of its ``version.command``) and the scripts of its ``stop`` and
``start`` commands all exist in it. Folder names are not trusted: sites rename install
directories after upgrades (``TongWeb7046`` -> ``TongWeb7049M1``).

Searched: the directories given, else ``UPGRADER_SEARCH_PATH`` (``:``-separated glob patterns),
else the usual places (``/opt/*``, ``/opt/*/*``, ``/usr/local/*``, ``/srv/*``, ``/app/*``,
``/data/*``, ``~/*``). This module only looks; it reads no version and changes nothing.
"""

from __future__ import annotations

import glob
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

if TYPE_CHECKING:
    from .playbook import Playbook

__all__ = ["Found", "USUAL_PLACES", "search_patterns", "identify", "find_installs", "shipped_playbooks"]

USUAL_PLACES = ("/opt/*", "/opt/*/*", "/usr/local/*", "/srv/*", "/app/*", "/data/*", "~/*")
_MOST = 500  # directories looked at, at most (a /data with thousands of entries must not stall the guide)


@dataclass(frozen=True)
class Found:
    install_dir: Path
    playbook: object  # upgrader.core.playbook.Playbook


def search_patterns(environ: dict[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    given = env.get("UPGRADER_SEARCH_PATH")
    return [p for p in given.split(":") if p] if given else list(USUAL_PLACES)


def _script(command: str) -> str | None:
    """The script a playbook command runs, relative to the install (``bin/stop.sh`` of ``bin/stop.sh -f``)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    first = words[0] if words else ""
    return first if first and not first.startswith("/") and "$" not in first else None


def _marks(playbook: object) -> list[str]:
    spec = getattr(playbook, "spec")
    version = spec.get("version") or {}
    paths = [version["file"]] if version.get("file") else [_script(str(version.get("command", ""))) or ""]
    paths += [_script(str((spec.get(k) or {}).get("command", ""))) or "" for k in ("stop", "start")]
    return [p for p in paths if p]


def identify(directory: Path, playbooks: Sequence[object]) -> object | None:
    """The playbook whose product files are all in ``directory`` (the one with most marks when several are)."""
    best, score = None, 0
    for pb in playbooks:
        marks = _marks(pb)
        if marks and len(marks) > score and all((directory / m).is_file() for m in marks):
            best, score = pb, len(marks)
    return best


def find_installs(playbooks: Sequence[object], patterns: Iterable[str]) -> list[Found]:
    seen: set[Path] = set()
    found: list[Found] = []
    looked = 0
    for pattern in patterns:
        for name in sorted(glob.glob(os.path.expanduser(pattern))):
            looked += 1
            if looked > _MOST:
                return found
            d = Path(name)
            if not d.is_dir() or d.resolve() in seen:
                continue
            seen.add(d.resolve())
            pb = identify(d, playbooks)
            if pb is not None:
                found.append(Found(d.resolve(), pb))
    return found


def shipped_playbooks(extra_dirs: Sequence[Path] = ()) -> list[Playbook]:
    """Every playbook in ``extra_dirs`` and the shipped ones that loads (a broken one is skipped here:
    it cannot identify anything)."""
    from .errors import UpgraderError
    from .playbook import load_playbook, shipped_playbooks_dir
    from .strict_modes import open_to_others

    out = []
    names: set[str] = set()
    shipped = shipped_playbooks_dir()
    for d in [*extra_dirs, shipped]:
        for p in sorted(Path(d).glob("*.y*ml")) if Path(d).is_dir() else ():
            if d != shipped and open_to_others(str(p.absolute())):
                continue  # another account could have written it: its probes would run (as root) to identify
            try:
                pb = load_playbook(p)
            except UpgraderError:
                continue
            if pb.name not in names:
                names.add(pb.name)
                out.append(pb)
    return out
