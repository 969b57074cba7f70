"""Package files this operator already verified in full, remembered in HOME so that a run does not hash and
walk the same (perhaps 1 GiB) package again after ``plan`` did.

``catalog.verify_package_file`` checks a package file against its catalog entry: size, sha256, package.yaml,
every member. When it passed, the file's identity (``st_dev``, ``st_ino``, size, ``st_mtime_ns``,
``st_ctime_ns``) is recorded with the sha256 and the limits it was checked against, in
``HOME/cache/verified-packages.json``. A later check of an entry with that sha256 and those limits, whose file
still has that identity, skips the hash and the member walk (package.yaml is still read and compared).

The record never lets changed bytes pass:

- any change to a file's bytes sets its ctime to the current time (the kernel does; ``utime`` can set mtime
  back, never ctime), and a file put in its place has another inode or ctime: the identity no longer matches,
  so the file is verified in full again (and refused if its bytes differ);
- a file is recorded only when its identity was the same before and after the whole check and its ctime is at
  least ``SETTLED_NS`` older than the check's start, so a write in the same tick of the file system's clock as
  the last one cannot leave the identity unchanged;
- the record names the sha256 and the limits it was checked against: any other entry is checked in full;
- the file is read only when it is a regular file owned by this user, not a link, and writable by nobody
  else; otherwise it is ignored (every package checked in full) and written again.

This relies on the catalog's file system setting ctime on every change, as every local POSIX file system does.
"""

from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["VerifiedPackages", "Identity", "identity_of", "CACHE_NAME", "SETTLED_NS"]

CACHE_NAME = "verified-packages.json"
FORMAT = 1
#: a file is recorded only when its last change is at least this much older than the check's start
SETTLED_NS = 2_000_000_000
#: records kept (the newest); an older package is simply verified in full again
KEEP = 64

Identity = tuple[int, int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns


def identity_of(st: os.stat_result) -> Identity:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass
class VerifiedPackages:
    """The record of fully verified package files in ``home``/cache (one per operator HOME)."""

    home: Path
    _records: list[dict[str, object]] | None = field(default=None, repr=False)

    @property
    def path(self) -> Path:
        return Path(self.home) / "cache" / CACHE_NAME

    def passed(self, path: Path, st: os.stat_result, sha256: str, limits: tuple[int, int]) -> bool:
        """Was the file ``path`` (stat ``st``, taken now) verified in full as ``sha256`` with ``limits``, and has
        it not changed since?"""
        want = self._record(path, st, sha256, limits)
        return any(r == want for r in self._load())

    def remember(self, path: Path, before: os.stat_result, started_ns: int, sha256: str,
                 limits: tuple[int, int]) -> None:
        """``path`` has just passed every check (``before``: its stat when the check started, at ``started_ns``):
        record it when it did not change during the check and its last change had settled. Best effort: a
        HOME that cannot be written only means the next check hashes the file again."""
        try:
            after = os.stat(path)
        except OSError:
            return
        if identity_of(after) != identity_of(before) or not stat.S_ISREG(after.st_mode):
            return
        if started_ns - after.st_ctime_ns < SETTLED_NS:
            return
        record = self._record(path, after, sha256, limits)
        records = [r for r in self._load() if not (r.get("path") == record["path"] or r == record)]
        records.append(record)
        self._records = records[-KEEP:]
        self._save(self._records)

    @staticmethod
    def _record(path: Path, st: os.stat_result, sha256: str, limits: tuple[int, int]) -> dict[str, object]:
        dev, ino, size, mtime_ns, ctime_ns = identity_of(st)
        return {"path": os.path.abspath(path), "dev": dev, "ino": ino, "size": size, "mtime_ns": mtime_ns,
                "ctime_ns": ctime_ns, "sha256": sha256, "members": limits[0], "unpacked_bytes": limits[1]}

    def _load(self) -> list[dict[str, object]]:
        if self._records is None:
            self._records = self._read()
        return self._records

    def _read(self) -> list[dict[str, object]]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return []  # none yet, or a link or something else in the way: every package is checked in full
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
                return []  # not the operator's own file: not believed
            try:
                data = json.loads(f.read(1 << 20))
            except ValueError:
                return []
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("packages"), list):
            return []
        return [r for r in data["packages"] if isinstance(r, dict)]

    def _save(self, records: list[dict[str, object]]) -> None:
        directory = self.path.parent
        tmp = directory / f".{CACHE_NAME}.{os.getpid()}.{os.urandom(4).hex()}"
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"format": FORMAT, "packages": records}, f, indent=1)
                f.write("\n")
            os.replace(tmp, self.path)  # replaces a link itself, never writes through it
        except OSError:
            tmp.unlink(missing_ok=True)


def now_ns() -> int:
    """The real time, as the file system stamps ctime (not the run's clock: it is compared with ctime)."""
    return time.time_ns()
