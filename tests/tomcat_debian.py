"""Apache-layout Tomcat 10.1 homes assembled from Debian's packages, cached for the tests.

Debian splits Tomcat over ``/usr/share/tomcat10`` (bin, lib as jar symlinks, default conf in etc),
``/usr/share/java`` (the jars, some from other library packages, such as Eclipse's Java compiler
that Jasper needs for JSPs) and ``/etc/tomcat10``. This module fetches the packages with
``apt-get download`` (it never installs them), extracts them with ``dpkg-deb -x`` and lays out a
self-contained ``CATALINA_HOME`` the way Apache ships it: ``bin/ lib/ conf/ webapps/ logs/ temp/
work/`` with real files only. Each version's home is assembled once and kept under
``.cache/tomcat/<debian version>/`` in the repository (git ignores it); the downloaded ``.deb``
files stay in ``.cache/tomcat/debs/``. Callers copy a cached home; they never change it.

``conf/`` holds Debian's defaults as shipped. They differ from Apache's in one way that matters: the
shutdown port is disabled (``<Server port="-1">``), and then ``bin/shutdown.sh`` exits 0 without
stopping anything; a site (tests/tomcat.py) sets its own port. ``webapps/ROOT`` is Debian's default
page, as Apache ships a ROOT application too.

It does not start anything: tests/tomcat.py runs the homes.
"""

from __future__ import annotations

import fcntl
import functools
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CACHE", "TOMCAT_PACKAGES", "TomcatSetupError", "Home", "offered_versions", "oldest_and_newest",
           "cached_home"]

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "tomcat"
TOMCAT_PACKAGES = ("tomcat10", "tomcat10-common", "libtomcat10-java")
_HOME_FORMAT = 1


class TomcatSetupError(RuntimeError):
    """The fixture could not be built or run; the message says what is missing and what to do."""


def _run(argv: list[str], *, cwd: Path | None = None, timeout: float = 300,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    try:
        res = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as e:
        raise TomcatSetupError(f"{argv[0]} is not installed: {e}") from e
    except subprocess.TimeoutExpired as e:
        raise TomcatSetupError(f"{' '.join(argv)} did not finish within {timeout}s") from e
    if res.returncode != 0:
        raise TomcatSetupError(f"{' '.join(argv)} exited {res.returncode}: {res.stderr.strip()[-800:]}")
    return res


# --- what the package mirror offers --------------------------------------------------------------

def _compare(a: str, b: str) -> int:
    if a == b:
        return 0
    lt = subprocess.run(["dpkg", "--compare-versions", a, "lt", b]).returncode == 0
    return -1 if lt else 1


def offered_versions(package: str) -> list[str]:
    """Every version of ``package`` the configured apt sources offer, oldest first."""
    out = _run(["apt-cache", "madison", package], timeout=60).stdout
    versions = {line.split("|")[1].strip() for line in out.splitlines() if line.count("|") >= 2}
    return sorted(versions, key=functools.cmp_to_key(_compare))


def oldest_and_newest(package: str = TOMCAT_PACKAGES[0]) -> tuple[str, str]:
    """The oldest and newest Debian versions of Tomcat 10 on the mirror; two are needed for an upgrade."""
    versions = offered_versions(package)
    if len(versions) < 2:
        raise TomcatSetupError(
            f"the package mirror offers {len(versions)} version(s) of {package} ({', '.join(versions) or 'none'});"
            " the Tomcat tests need two: check /etc/apt/sources.list(.d) has both bookworm and"
            " bookworm-security, then run apt-get update")
    return versions[0], versions[-1]


def _candidate(package: str) -> str:
    out = _run(["apt-cache", "policy", package], timeout=60).stdout
    m = re.search(r"^\s*Candidate:\s*(\S+)", out, re.MULTILINE)
    if not m or m.group(1) == "(none)":
        raise TomcatSetupError(f"the package mirror has no version of {package}; run apt-get update")
    return m.group(1)


def _java_library_depends(package: str, version: str) -> list[str]:
    """The Java library packages (``lib*-java``) that ``package`` of ``version`` depends on."""
    out = _run(["apt-cache", "show", f"{package}={version}"], timeout=60).stdout
    m = re.search(r"^Depends:\s*(.*)$", out, re.MULTILINE)
    names = []
    for clause in (m.group(1).split(",") if m else []):
        name = clause.split("|")[0].strip().split()[0].split(":")[0]
        if re.fullmatch(r"lib[a-z0-9.+-]*-java", name) and name not in TOMCAT_PACKAGES:
            names.append(name)
    return names


def _download(package: str, version: str, debs: Path) -> Path:
    """``apt-get download package=version`` into ``debs`` unless it is there already."""
    debs.mkdir(parents=True, exist_ok=True)
    pattern = f"{package}_{version.replace(':', '%3a')}_*.deb"
    found = sorted(debs.glob(pattern))
    if not found:
        _run(["apt-get", "download", "-q", f"{package}={version}"], cwd=debs)
        found = sorted(debs.glob(pattern))
    if not found:
        raise TomcatSetupError(f"apt-get download {package}={version} wrote no {pattern} in {debs}")
    return found[0]


# --- the assembled CATALINA_HOME ------------------------------------------------------------------

@dataclass(frozen=True)
class Home:
    """A cached, stock CATALINA_HOME of one Debian version of Tomcat (read-only for tests)."""

    path: Path
    debian_version: str
    server_number: str                     # what bin/version.sh prints, e.g. 10.1.60.0
    packages: dict[str, str] = field(default_factory=dict)   # every .deb used, name -> version

    @property
    def upstream(self) -> str:
        """The Apache version, e.g. 10.1.60."""
        return self.debian_version.split("-")[0].split(":")[-1]


def cached_home(debian_version: str, cache: Path = CACHE) -> Home:
    """The stock home of this Tomcat version, assembled once and then read from ``cache``."""
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / debian_version
    with open(cache / ".lock", "w") as lock:   # parallel test runs build each version once
        fcntl.flock(lock, fcntl.LOCK_EX)
        meta = _read_meta(final)
        if meta is None:
            if final.exists():
                shutil.rmtree(final)
            part = Path(tempfile.mkdtemp(prefix=f"{debian_version}.part-", dir=cache))
            try:
                _assemble(debian_version, part, cache / "debs")
                part.chmod(0o755)
                os.rename(part, final)
            finally:
                shutil.rmtree(part, ignore_errors=True)
            meta = _read_meta(final)
            assert meta is not None
    return meta


def _read_meta(root: Path) -> Home | None:
    try:
        data = json.loads((root / "home.json").read_text())
    except (OSError, ValueError):
        return None
    if data.get("format") != _HOME_FORMAT or not (root / "home" / "bin" / "catalina.sh").is_file():
        return None
    return Home(root / "home", data["debian_version"], data["server_number"], data["packages"])


def _assemble(version: str, out: Path, debs: Path) -> None:
    packages = {name: version for name in TOMCAT_PACKAGES}
    todo = [dep for name in TOMCAT_PACKAGES for dep in _java_library_depends(name, version)]
    while todo:   # the libraries' own Java dependencies too, at the version the mirror has
        name = todo.pop()
        if name not in packages:
            packages[name] = _candidate(name)
            todo.extend(_java_library_depends(name, packages[name]))
    root = out / "debian-root"
    for name, ver in sorted(packages.items()):
        _run(["dpkg-deb", "-x", str(_download(name, ver, debs)), str(root)])
    home = out / "home"
    share = root / "usr/share/tomcat10"
    _copy_resolved(root, share / "bin", home / "bin")
    _copy_resolved(root, share / "lib", home / "lib")
    _add_manifest_class_path(root, home / "lib")
    _copy_resolved(root, share / "etc", home / "conf")
    policies = sorted((root / "etc/tomcat10/policy.d").glob("*.policy"))
    if policies:   # Debian splits Apache's conf/catalina.policy into policy.d/ and joins it at start
        (home / "conf" / "catalina.policy").write_text("".join(p.read_text() for p in policies))
    _copy_resolved(root, root / "usr/share/tomcat10-root/default_root", home / "webapps" / "ROOT")
    for empty in ("logs", "temp", "work"):
        (home / empty).mkdir()
    for doc in ("RELEASE-NOTES", "RUNNING.txt"):
        gz = root / "usr/share/doc/tomcat10-common" / f"{doc}.gz"
        if gz.exists():
            (home / doc).write_bytes(gzip.decompress(gz.read_bytes()))
    number = _server_number(home / "lib" / "catalina.jar")
    shutil.rmtree(root)
    (out / "home.json").write_text(json.dumps(
        {"format": _HOME_FORMAT, "debian_version": version, "server_number": number, "packages": packages},
        indent=2) + "\n")


def _inside(root: Path, path: Path) -> Path:
    """``path`` with every symlink followed inside the extracted tree ``root`` (absolute links too)."""
    seen = 0
    parts = list(path.relative_to(root).parts)
    current = root
    while parts:
        current = current / parts.pop(0)
        if current.is_symlink():
            seen += 1
            if seen > 40:
                raise TomcatSetupError(f"symlink loop at {current}")
            target = os.readlink(current)
            base = root if target.startswith("/") else current.parent
            resolved = Path(os.path.normpath(base / target.lstrip("/")))
            if resolved != root and root not in resolved.parents:
                raise TomcatSetupError(f"{current} points outside the extracted packages: {target}")
            parts = list(resolved.relative_to(root).parts) + parts
            current = root
    return current


def _copy_resolved(root: Path, src: Path, dst: Path) -> None:
    """Copy directory ``src`` to ``dst`` with every symlink replaced by the file it points to."""
    dst.mkdir(parents=True)
    for entry in sorted(src.iterdir()):
        real = _inside(root, entry)
        if not real.exists():
            raise TomcatSetupError(
                f"{entry.relative_to(root)} points to {os.readlink(entry)}, which none of the downloaded"
                " packages provides: add the package that ships it to the Tomcat fixture")
        if real.is_dir():
            _copy_resolved(root, real, dst / entry.name)
        else:
            shutil.copy2(real, dst / entry.name)


def _manifest_class_path(jar: Path) -> list[str]:
    with zipfile.ZipFile(jar) as z:
        try:
            text = z.read("META-INF/MANIFEST.MF").decode("utf-8", "replace")
        except KeyError:
            return []
    text = re.sub(r"\r?\n ", "", text)   # manifest continuation lines
    m = re.search(r"^Class-Path:\s*(.*)$", text, re.MULTILINE)
    return m.group(1).split() if m else []


def _add_manifest_class_path(root: Path, lib: Path) -> None:
    """Put into ``lib`` the jars that lib's jars name in their Class-Path and lib does not hold yet.

    Jasper names ``eclipse-jdt-core.jar`` (the JSP compiler, from another Debian package); the other
    names there are Tomcat's own API jars, already in lib under Apache's names."""
    java = root / "usr/share/java"
    have = {_digest(p) for p in lib.glob("*.jar")}
    for jar in sorted(lib.glob("*.jar")):
        for name in _manifest_class_path(jar):
            src = _inside(root, java / name)
            if not src.is_file():
                raise TomcatSetupError(f"lib/{jar.name} needs {name} (its Class-Path), which no downloaded"
                                       " package provides: add that library's package to the fixture")
            if _digest(src) not in have:
                shutil.copy2(src, lib / name)
                have.add(_digest(src))


def _digest(path: Path) -> tuple[int, bytes]:
    data = path.read_bytes()
    return len(data), hashlib.sha256(data).digest()


def _server_number(catalina_jar: Path) -> str:
    with zipfile.ZipFile(catalina_jar) as z:
        text = z.read("org/apache/catalina/util/ServerInfo.properties").decode()
    m = re.search(r"^server\.number=(\S+)", text, re.MULTILINE)
    if not m:
        raise TomcatSetupError(f"{catalina_jar} has no server.number")
    return m.group(1)
