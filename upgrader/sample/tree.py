"""Writing the sample product's files: release trees, patch overlays and customer installs.

``write_tree`` lays out the files a full release ships (``bin/``, ``lib/``, ``conf/``,
``docs/``), ``write_patch_tree`` the few files a patch overlays, and ``install`` an installed
product as a customer would have it (with ``data/`` and ``logs/``), ready for ``bin/start.sh``.

This module only writes files. It does not start or stop the service, build packages (see
``packages.py``) or know the release line beyond one rule: ``lib/legacy_compat.py`` exists
before 7.0.4.3 only.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Protocol


class ReleaseLike(Protocol):
    """What ``write_patch_tree`` reads of a release (``packages.SampleRelease``)."""

    @property
    def version(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def requires(self) -> str | None: ...
    @property
    def fault(self) -> str | None: ...
    @property
    def description(self) -> str: ...


__all__ = ["DEFAULT_PORT", "INSTALLED_FIRST", "PRODUCT", "install", "write_patch_tree", "write_tree"]

PRODUCT = "sample-middleware"
INSTALLED_FIRST = "7.0.4.1"
DEFAULT_PORT = 18080
LEGACY_COMPAT = "lib/legacy_compat.py"
_LEGACY_REMOVED_IN = (7, 0, 4, 3)
_SOURCE_DIR = Path(__file__).resolve().parent
_CHUNK = 1 << 20

_LEGACY_COMPAT_TEXT = '''\
"""Compatibility shims for 6.x session descriptors (deprecated; removed by the 7.0.4.3 patch)."""


def upgrade_descriptor(text):
    return text.replace("<session-config>", "<session-manager>")
'''

_README_TEXT = """\
{product} {version}
{underline}

A small sample middleware product with the layout of a Java application server install.

  bin/start.sh       start the service in the background (writes run/server.pid)
  bin/stop.sh        ask the service to stop (SIGTERM)
  conf/server.conf   port, bind address, greeting, admin password
  lib/               the service and its modules
  data/              your data: upgrades must keep it
  logs/server.log    the service's log

Endpoints: GET /version, GET /health, GET /.
"""


def _conf_text(port: int, admin_password: str) -> str:
    return (
        f"# {PRODUCT} configuration: 'key = value' lines, '#' starts a comment line.\n"
        f"port = {port}\n"
        "bind = 127.0.0.1\n"
        f"greeting = Welcome to {PRODUCT}\n"
        f"admin_password = {admin_password}\n"
    )


def _version_key(version: str) -> tuple[int, ...]:
    m = re.match(r"\s*(\d+(?:\.\d+)*)", version)
    if not m:
        raise ValueError(f"not a sample-middleware version: {version!r} (expected e.g. '7.0.4.2')")
    return tuple(int(p) for p in m.group(1).split("."))


def _write(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    os.chmod(path, mode)


def _copy_source(name: str, dest: Path, mode: int = 0o644) -> None:
    _write(dest, (_SOURCE_DIR / name).read_bytes(), mode)


def _write_filler(modules: Path, version: str, total: int, files: int) -> None:
    count = min(files, total)
    base, extra = divmod(total, count)
    for index in range(count):
        size = base + (1 if index < extra else 0)
        rng = random.Random(f"{PRODUCT}/{version}/module/{index}")
        path = modules / f"module-{index:04d}.jar"
        with open(path, "wb") as f:
            left = size
            while left:
                n = min(left, _CHUNK)
                f.write(rng.randbytes(n))
                left -= n
        os.chmod(path, 0o644)


def write_tree(dest: Path, version: str, *, fault: str | None = None, filler_bytes: int = 0,
               filler_files: int = 20) -> None:
    """Write the product files of ``version`` into ``dest`` (created if needed; files overwritten).

    Writes ``bin/start.sh``, ``bin/stop.sh``, ``lib/server.py``, ``lib/VERSION``,
    ``lib/legacy_compat.py`` (versions before 7.0.4.3 only), ``lib/FAULT`` (when ``fault`` is
    given), a default ``conf/server.conf`` (port 18080) and ``docs/README.txt``. It does not create
    ``data/``, ``logs/`` or ``run/``. ``filler_bytes > 0`` adds up to ``filler_files`` files
    ``lib/modules/module-NNNN.jar`` totalling exactly ``filler_bytes``, pseudo-random but the same
    for the same (version, index), written in 1 MiB chunks. Scripts get mode 0755, the rest 0644.
    """
    if filler_bytes < 0:
        raise ValueError(f"filler_bytes must be >= 0, got {filler_bytes}")
    if filler_files < 1:
        raise ValueError(f"filler_files must be >= 1, got {filler_files}")
    key = _version_key(version)
    dest = Path(dest)
    for sub in ("bin", "lib", "conf", "docs"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(dest / sub, 0o755)
    _copy_source("start.sh", dest / "bin" / "start.sh", 0o755)
    _copy_source("stop.sh", dest / "bin" / "stop.sh", 0o755)
    _copy_source("server.py", dest / "lib" / "server.py")
    _write(dest / "lib" / "VERSION", f"{version}\n")
    if key < _LEGACY_REMOVED_IN:
        _write(dest / LEGACY_COMPAT, _LEGACY_COMPAT_TEXT)
    if fault:
        _write(dest / "lib" / "FAULT", f"{fault}\n")
    _write(dest / "conf" / "server.conf", _conf_text(DEFAULT_PORT, "changeit"))
    readme = _README_TEXT.format(product=PRODUCT, version=version,
                                 underline="=" * len(f"{PRODUCT} {version}"))
    _write(dest / "docs" / "README.txt", readme)
    if filler_bytes:
        modules = dest / "lib" / "modules"
        modules.mkdir(parents=True, exist_ok=True)
        os.chmod(modules, 0o755)
        _write_filler(modules, version, filler_bytes, filler_files)


def write_patch_tree(dest: Path, release: ReleaseLike) -> None:
    """Write the files a patch overlays into ``dest``: ``lib/VERSION``, ``lib/server.py`` and
    ``lib/patches/<version>.txt`` (plus ``lib/FAULT`` for a faulty patch).

    Files the patch deletes are not written here; the package lists them (``remove``).
    """
    if release.kind != "patch":
        raise ValueError(f"{release.version} is a {release.kind} release, not a patch")
    _version_key(release.version)
    dest = Path(dest)
    _copy_source("server.py", dest / "lib" / "server.py")
    _write(dest / "lib" / "VERSION", f"{release.version}\n")
    note = (f"{PRODUCT} patch {release.version}\n"
            f"applies to: {release.requires or 'any version'}\n"
            f"{release.description or 'fixes and security updates'}\n"
            f"removes: {LEGACY_COMPAT}\n")
    _write(dest / "lib" / "patches" / f"{release.version}.txt", note)
    if release.fault:
        _write(dest / "lib" / "FAULT", f"{release.fault}\n")
    for d in (dest / "lib", dest / "lib" / "patches"):
        os.chmod(d, 0o755)


def install(install_dir: Path, *, port: int, version: str = INSTALLED_FIRST, filler_bytes: int = 0,
            admin_password: str = "s3cret-admin") -> None:
    """Lay out ``version`` in ``install_dir`` as a customer would have installed it by hand.

    The release files, then ``conf/server.conf`` with ``port`` and ``admin_password``,
    ``data/orders.db`` and ``data/README`` (the customer's data) and an empty ``logs/server.log``.
    Raises ValueError if ``install_dir`` exists and is not an empty directory, or for a bad port.
    Does not start the service.
    """
    install_dir = Path(install_dir)
    if not 1 <= port <= 65535:
        raise ValueError(f"port must be from 1 to 65535, got {port}")
    if "\n" in admin_password:
        raise ValueError("admin_password must be one line")
    if install_dir.exists() and (not install_dir.is_dir() or any(install_dir.iterdir())):
        raise ValueError(f"{install_dir} is not an empty directory; refusing to install over it")
    install_dir.mkdir(parents=True, exist_ok=True)
    write_tree(install_dir, version, filler_bytes=filler_bytes)
    _write(install_dir / "conf" / "server.conf", _conf_text(port, admin_password))
    rows = "".join(f"{n:06d},customer-{n % 37:02d},{(n * 7919) % 100000 / 100:.2f},shipped\n"
                   for n in range(1, 201))
    _write(install_dir / "data" / "orders.db", "SAMPLE-ORDERS v1\nid,customer,amount,state\n" + rows)
    _write(install_dir / "data" / "README",
           "Customer data of this installation. Upgrades and rollbacks must leave it untouched.\n")
    _write(install_dir / "logs" / "server.log", "")
    for sub in ("data", "logs"):
        os.chmod(install_dir / sub, 0o755)
