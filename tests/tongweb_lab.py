"""pytest fixtures around the TongWeb-shaped install of tests/tongweb.py: the vendor's packages of two build tags
(``7.0.4.9_M3`` on the oldest Tomcat the mirror offers, ``7.0.4.9_M4`` on the newest) built with the shipped CLI
(``upgrader package build``) into a catalog signed with a real vendor key, a broken ``_M4`` in a second catalog,
and an upgrader HOME (tests/tomcat_lab.py) whose inventory's one host is the install, with the ``tongweb`` playbook.
"""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
import yaml  # type: ignore[import-untyped]

from tomcat import Home
from tomcat_lab import Lab, make_lab
from tongweb import TongWeb, TongWebSite, install, release
from upgrader.cli import main
from upgrader.core.playbook import shipped_playbooks_dir

__all__ = ["OLD", "NEW", "TongWebCatalog", "tongweb_catalog", "broken_tongweb_catalog", "tongweb_lab",
           "write_inventory", "quick_tongweb_playbook", "kept_digest"]

OLD = "7.0.4.9_M3"
NEW = "7.0.4.9_M4"


@dataclass(frozen=True)
class TongWebCatalog:
    directory: Path
    products: dict[str, Path]           # version -> the vendor's product tree
    vendor_key: Path
    vendor_signers: Path


def _build(root: Path, product: Path, version: str, out: Path) -> None:
    rc = main(["--home", str(root / "upgrader-home"), "package", "build", str(product), "--product", "tongweb",
               "--version", version, "--description", f"TongWeb {version} Enterprise (test build)", "-o", str(out)])
    assert rc == 0, f"package build of {product} exited {rc}"


@pytest.fixture(scope="session")
def tongweb_catalog(tmp_path_factory: pytest.TempPathFactory, tomcat_homes: tuple[Home, Home]) -> TongWebCatalog:
    """TongWeb 7.0.4.9_M3 and _M4 packages in a catalog signed by the vendor's key."""
    root = tmp_path_factory.mktemp("tongweb-catalog")
    key = root / "vendor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tongweb-vendor", "-f", str(key)],
                   check=True)
    signers = root / "vendor_signers"
    pub = " ".join(key.with_suffix(".pub").read_text().split()[:2])
    signers.write_text(f'tongweb-vendor namespaces="upgrader-catalog" {pub}\n')
    directory = root / "catalog"
    products = {}
    for home, version in zip(tomcat_homes, (OLD, NEW)):
        products[version] = release(home, version, root / "dist" / f"TongWeb{version}_Enterprise_Linux")
        _build(root, products[version], version, directory / f"TongWeb{version}_Enterprise_Linux.tar.gz")
    assert main(["--home", str(root / "upgrader-home"), "catalog", "build", str(directory), "--serial", "1",
                 "--key", str(key)]) == 0
    return TongWebCatalog(directory, products, key, signers)


@pytest.fixture(scope="session")
def broken_tongweb_catalog(tmp_path_factory: pytest.TempPathFactory,
                           tongweb_catalog: TongWebCatalog) -> Path:
    """The vendor's catalog (same key) whose _M4 ships a lib/catalina.jar without its classes: every integrity check
    passes, version.txt reads _M4, and its JVM cannot start."""
    root = tmp_path_factory.mktemp("tongweb-broken")
    bad = root / "dist"
    shutil.copytree(tongweb_catalog.products[NEW], bad)
    jar = bad / "lib" / "catalina.jar"
    info = "org/apache/catalina/util/ServerInfo.properties"
    with zipfile.ZipFile(jar) as z:
        properties = z.read(info)
    jar.unlink()
    with zipfile.ZipFile(jar, "w") as z:
        z.writestr(info, properties)
    directory = root / "catalog"
    directory.mkdir()
    old_pkg = f"TongWeb{OLD}_Enterprise_Linux.tar.gz"
    shutil.copy(tongweb_catalog.directory / old_pkg, directory / old_pkg)
    _build(root, bad, NEW, directory / f"TongWeb{NEW}_Enterprise_Linux.tar.gz")
    assert main(["--home", str(root / "upgrader-home"), "catalog", "build", str(directory), "--serial", "2",
                 "--key", str(tongweb_catalog.vendor_key)]) == 0
    return directory


def write_inventory(lab: Lab, playbook: str = "tongweb") -> None:
    entry = {**lab.host_entry, "install_dir": str(lab.tomcat.home), "product": "tongweb", "playbook": playbook,
             "maintenance_until": "2099-12-31"}
    lab.inventory.write_text(yaml.safe_dump({"format": 1, "hosts": {"tw-01": entry}}, sort_keys=False))


def quick_tongweb_playbook(lab: Lab, window: str = "3s", interval: str = "0.5s") -> Path:
    """The shipped tongweb playbook with only its observation window and interval shortened, in HOME/playbooks."""
    text = (shipped_playbooks_dir() / "tongweb.yaml").read_text()
    for old, new in (("  window: 60s\n", f"  window: {window}\n"), ("  interval: 5s\n", f"  interval: {interval}\n")):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = lab.root / "playbooks" / "tongweb.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def kept_digest(home: Path) -> dict[str, bytes]:
    """What the site owns and an upgrade must keep byte for byte: conf/tongweb.xml, conf/security/, license.dat,
    bin/external.vmoptions, autodeploy/."""
    paths = [home / "conf" / "tongweb.xml", home / "license.dat", home / "bin" / "external.vmoptions"]
    for d in ("conf/security", "autodeploy"):
        paths += [p for p in sorted((home / d).rglob("*")) if p.is_file()]
    return {str(p.relative_to(home)): p.read_bytes() for p in paths}


@pytest.fixture
def tongweb_lab(tmp_path: Path, tongweb_catalog: TongWebCatalog) -> Iterator[Lab]:
    """TongWeb 7.0.4.9_M3 installed (the directory named as sites do), started and answering; a lab around it whose
    ``tomcat`` is the :class:`tongweb.TongWeb`."""
    tw: TongWeb = install(tongweb_catalog.products[OLD], tmp_path / "TongWeb7049M3", TongWebSite.on_free_ports())
    try:
        tw.start()
        lab = make_lab(tmp_path / "home", tw, tongweb_catalog.directory, tongweb_catalog.vendor_signers)  # type: ignore[arg-type]
        write_inventory(lab)
        yield lab
    finally:
        tw.ensure_stopped()
