"""pytest fixtures for the real Tomcat of tests/tomcat.py; a test file imports the ones it uses.

Kept out of conftest.py so only the tests that run a JVM pay for it. Every fixture that may start a
JVM stops it in its finalizer, whatever the test did.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tomcat import Home, Site, Tomcat, cached_home, install, oldest_and_newest
from upgrader.cli import main

__all__ = ["TomcatCatalog", "tomcat_homes", "tomcat_catalog", "old_tomcat", "package_name"]


@dataclass(frozen=True)
class TomcatCatalog:
    """A vendor-signed catalog of one full upgrader package per Tomcat version."""

    directory: Path
    packages: dict[str, Path]           # server number (10.1.60.0) -> package
    vendor_key: Path
    vendor_signers: Path                # allowed_signers line for catalog.trusted_signers


def package_name(home: Home) -> str:
    return f"tomcat-{home.server_number}.tar.gz"


@pytest.fixture(scope="session")
def tomcat_homes() -> tuple[Home, Home]:
    """The oldest and the newest Tomcat 10 the mirror offers, as stock homes (built once, then cached)."""
    old, new = oldest_and_newest()
    return cached_home(old), cached_home(new)


@pytest.fixture(scope="session")
def tomcat_catalog(tmp_path_factory: pytest.TempPathFactory, tomcat_homes: tuple[Home, Home]) -> TomcatCatalog:
    """``upgrader package build`` of each version's CATALINA_HOME, in a catalog signed by a vendor key."""
    root = tmp_path_factory.mktemp("tomcat-catalog")
    directory = root / "catalog"
    key = root / "vendor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tomcat-vendor", "-f", str(key)],
                   check=True)
    signers = root / "vendor_signers"
    pub = " ".join(key.with_suffix(".pub").read_text().split()[:2])
    signers.write_text(f'tomcat-vendor namespaces="upgrader-catalog" {pub}\n')
    packages = {}
    for home in tomcat_homes:
        out = directory / package_name(home)
        rc = main(["--home", str(root / "upgrader-home"), "package", "build", str(home.path), "--product", "tomcat",
                   "--version", home.server_number, "--description", f"Apache Tomcat {home.debian_version} (Debian)",
                   "-o", str(out)])
        assert rc == 0, f"package build of {home.path} exited {rc}"
        packages[home.server_number] = out
    rc = main(["--home", str(root / "upgrader-home"), "catalog", "build", str(directory), "--serial", "1",
               "--key", str(key)])
    assert rc == 0, f"catalog build exited {rc}"
    return TomcatCatalog(directory, packages, key, signers)


@pytest.fixture
def old_tomcat(tmp_path: Path, tomcat_homes: tuple[Home, Home]) -> Iterator[Tomcat]:
    """The oldest Tomcat installed with a site's customisations at <tmp>/tomcat, not started; never left running."""
    tomcat = install(tomcat_homes[0], tmp_path / "tomcat", Site.on_free_ports())
    try:
        yield tomcat
    finally:
        tomcat.ensure_stopped()
