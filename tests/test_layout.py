"""The layout shows the architecture, and the tests keep it so (issue 16).

Packages by subsystem below ``upgrader/``: ``cli`` (argument parsing and rendering: the only place
that imports argparse or rich), ``core``, ``trust``, ``audit``, ``fleet``, ``customer``, ``sample``;
``hostagent`` (the host agent, shipped to hosts alone as one zip) imports nothing of upgrader but itself,
and ``version_policy/`` (pure) nothing of upgrader.
``api.py`` (the use cases as typed functions) is imported by the CLI and by other programs, never by a
subsystem, and no signature outside ``cli`` takes an ``argparse.Namespace``.
The graph is read from the source with ``ast``: every ``import`` counts, at module level, inside a
function or under ``if TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SUBSYSTEMS = ("cli", "core", "trust", "audit", "fleet", "customer", "sample", "hostagent")
#: top-level modules of upgrader/ that belong to no subsystem package
TOP_LEVEL = ("__init__", "__main__", "api")
#: subsystem -> the subsystems it never imports (dependencies point inward, towards core)
FORBIDDEN = {
    "core": {"cli", "customer", "sample"},
    "trust": {"cli", "customer", "fleet", "sample"},
    "audit": {"cli", "customer", "fleet", "sample"},
    "fleet": {"cli", "customer", "sample"},
    "customer": {"cli", "sample"},
    "sample": {"cli", "customer"},
}
RENDERING = ("argparse", "rich")


def modules(root: Path, top: str) -> dict[str, Path]:
    """Dotted name -> file, for every module of package ``top`` below ``root``."""
    out = {}
    for p in sorted((root / top).rglob("*.py")):
        parts = list(p.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported module, line) for every import statement anywhere in the module: absolute names as
    written, relative ones resolved; ``from X import y`` counts as ``X.y`` when that is a module."""
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for a in node.names:
                sub = f"{module}.{a.name}"
                out.append((sub if sub in known else module, node.lineno))
    return out


def graph(root: Path, top: str) -> dict[str, set[str]]:
    known = modules(root, top)
    return {m: {i for i, _ in imports(m, p, known) if i in known and i != m} for m, p in known.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected parts of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def subsystem(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in SUBSYSTEMS else module


def rendering_outside_cli(root: Path) -> list[str]:
    known = modules(root, "upgrader")
    bad = []
    for m, p in known.items():
        if subsystem(m) == "cli":
            continue
        for i, line in imports(m, p, known):
            if i.split(".")[0] in RENDERING:
                bad.append(f"{p.relative_to(root)}:{line} imports {i}")
    return bad


def wrong_direction(root: Path) -> list[str]:
    known = modules(root, "upgrader")
    bad = []
    for m, p in known.items():
        mine = subsystem(m)
        for i, line in imports(m, p, known):
            if not i.startswith("upgrader.") or i not in known:
                continue
            theirs = subsystem(i)
            if theirs == "upgrader.api" and mine != "cli":
                bad.append(f"{p.relative_to(root)}:{line} ({mine}) imports {i}: only the CLI (and other programs) use it")
            elif theirs == "cli" and mine != "cli" and m != "upgrader.__main__":
                bad.append(f"{p.relative_to(root)}:{line} ({mine}) imports {i}: nothing below upgrader/cli imports it")
            elif theirs in FORBIDDEN.get(mine, ()):
                bad.append(f"{p.relative_to(root)}:{line} ({mine}) imports {i} ({theirs})")
    return bad


def test_no_module_outside_cli_imports_argparse_or_rich():
    assert rendering_outside_cli(REPO) == []
    # and the CLI does use them (the check looks at the right modules)
    known = modules(REPO, "upgrader")
    cli_imports = {i.split(".")[0] for m, p in known.items() if subsystem(m) == "cli" for i, _ in imports(m, p, known)}
    assert set(RENDERING) <= cli_imports


def test_no_import_circles_among_upgrader_modules():
    g = graph(REPO, "upgrader")
    assert len(g) > 60 and sum(len(v) for v in g.values()) > 300  # the whole package was read
    assert cycles(g) == []


def test_subsystems_depend_inwards():
    assert wrong_direction(REPO) == []


def namespace_signatures(root: Path) -> list[str]:
    """``file:line function`` of every function outside ``upgrader/cli`` whose parameters or return mention
    ``Namespace`` (argparse's): the use cases take typed values, the CLI turns arguments into them."""
    known = modules(root, "upgrader")
    bad = []
    for m, p in known.items():
        if subsystem(m) == "cli":
            continue
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"), str(p))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            a = node.args
            params = [*a.posonlyargs, *a.args, *a.kwonlyargs, *([a.vararg] if a.vararg else []),
                      *([a.kwarg] if a.kwarg else [])]
            notes = [x.annotation for x in params if x.annotation is not None]
            notes += [node.returns] if node.returns is not None else []
            if any("Namespace" in ast.unparse(n) for n in notes):
                bad.append(f"{p.relative_to(root)}:{node.lineno} {node.name}")
    return bad


def test_no_signature_below_cli_takes_a_namespace():
    assert (REPO / "upgrader" / "api.py").is_file()
    assert namespace_signatures(REPO) == []


def test_every_module_lives_in_a_subsystem_package():
    """A module left at the top of upgrader/ (an old place, e.g. after a merge) is refused here."""
    top = sorted(p.stem for p in (REPO / "upgrader").glob("*.py"))
    assert top == sorted(TOP_LEVEL)
    packages = sorted(p.name for p in (REPO / "upgrader").iterdir() if (p / "__init__.py").is_file())
    assert packages == sorted(SUBSYSTEMS)


def test_host_agent_and_version_policy_import_nothing_of_upgrader():
    known = modules(REPO, "upgrader")
    agent = {m: p for m, p in known.items() if subsystem(m) == "hostagent"}
    assert len(agent) > 10
    for m, p in agent.items():
        found = imports(m, p, known)
        assert [i for i, _ in found if i.split(".")[0] == "upgrader" and subsystem(i) != "hostagent"] == [], p
    policy = modules(REPO, "version_policy")
    assert policy
    for m, p in policy.items():
        assert [i for i, _ in imports(m, p, policy) if i.split(".")[0] == "upgrader"] == [], p


def test_the_checks_find_circles_rendering_and_wrong_directions(tmp_path):
    """The checks above on a small package that breaks every rule, imports hidden in functions and
    under TYPE_CHECKING: each break is reported."""
    pkg = tmp_path / "upgrader"
    for d in ("", "core", "cli", "trust", "customer"):
        (pkg / d).mkdir(exist_ok=True)
        (pkg / d / "__init__.py").write_text("")
    (pkg / "core" / "a.py").write_text("def f():\n    from .b import g\n    return g\n")
    (pkg / "core" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n"
                                       "def g():\n    import rich.console\n")
    (pkg / "trust" / "t.py").write_text("def h():\n    from ..customer import c\n")
    (pkg / "customer" / "c.py").write_text("import argparse\n")
    (pkg / "cli" / "main.py").write_text("import argparse\nfrom ..core import a\n")
    (pkg / "core" / "d.py").write_text("from upgrader.cli.main import x\n")
    (pkg / "api.py").write_text("from .core import a\n")
    (pkg / "trust" / "u.py").write_text("import argparse as ap\nfrom upgrader import api\n"
                                        "def use(args: 'ap.Namespace') -> None: ...\n")
    assert cycles(graph(tmp_path, "upgrader")) == [["upgrader.core.a", "upgrader.core.b"]]
    assert rendering_outside_cli(tmp_path) == ["upgrader/core/b.py:5 imports rich.console",
                                               "upgrader/customer/c.py:1 imports argparse",
                                               "upgrader/trust/u.py:1 imports argparse"]
    assert wrong_direction(tmp_path) == [
        "upgrader/core/d.py:1 (core) imports upgrader.cli.main: nothing below upgrader/cli imports it",
        "upgrader/trust/t.py:2 (trust) imports upgrader.customer.c (customer)",
        "upgrader/trust/u.py:2 (trust) imports upgrader.api: only the CLI (and other programs) use it"]
    assert namespace_signatures(tmp_path) == ["upgrader/trust/u.py:3 use"]


def test_every_module_imports_and_the_console_entry_points_work(tmp_path):
    """Each module imports in a fresh interpreter (no order hides a circle), and both ways to start the
    CLI (the console script's upgrader.cli:main and python -m upgrader) answer --version."""
    names = [m for m in modules(REPO, "upgrader") if not m.endswith(".__main__")]
    code = ("import importlib, subprocess, sys\n"
            f"names = {names!r}\n"
            "bad = []\n"
            "for n in names:\n"
            "    r = subprocess.run([sys.executable, '-c', f'import {n}'], capture_output=True, text=True)\n"
            "    if r.returncode:\n"
            "        bad.append((n, r.stderr.strip().splitlines()[-1]))\n"
            "print(bad)\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'upgrader = "upgrader.cli:main"' in pyproject
    script = subprocess.run([sys.executable, "-c", "import sys; from upgrader.cli import main; sys.exit(main(['--version']))"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    module = subprocess.run([sys.executable, "-m", "upgrader", "--version"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert script.returncode == 0 and module.returncode == 0, (script.stderr, module.stderr)
    assert script.stdout == module.stdout and "0.1.0" in script.stdout
