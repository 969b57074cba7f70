"""Types that say what they hold: ``mypy --strict`` passes on the typed packages, and no function of core,
trust or audit takes or returns ``Any`` (the real types instead: Plan, Policy, Clock, the TypedDicts of
``upgrader.core.shapes``, ``object`` for free JSON that is narrowed before use)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: checked by ``mypy --strict``; upgrader/api.py joins them once it exists
STRICT = ["upgrader/core", "upgrader/trust", "upgrader/audit", "version_policy"]
#: no ``Any`` in a function's parameters or return
NO_ANY = ["upgrader/core", "upgrader/trust", "upgrader/audit"]


def _strict_targets() -> list[str]:
    return STRICT + (["upgrader/api.py"] if (ROOT / "upgrader" / "api.py").is_file() else [])


def _no_any_files() -> list[Path]:
    files = [p for d in NO_ANY for p in sorted((ROOT / d).rglob("*.py"))]
    api = ROOT / "upgrader" / "api.py"
    return files + ([api] if api.is_file() else [])


def test_mypy_strict_passes() -> None:
    targets = _strict_targets()
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", *targets], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"mypy --strict {' '.join(targets)} failed:\n{proc.stdout}{proc.stderr}"
    assert "Success: no issues found" in proc.stdout, proc.stdout


def _any_in(node: ast.expr, aliases: set[str]) -> bool:
    """Does this annotation name ``Any`` (also ``typing.Any``, ``"Any"`` in a string, or an alias of it)?"""
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and (n.id == "Any" or n.id in aliases):
            return True
        if isinstance(n, ast.Attribute) and n.attr == "Any":
            return True
        if isinstance(n, ast.Constant) and isinstance(n.value, str):
            try:
                inner = ast.parse(n.value, mode="eval").body
            except SyntaxError:
                continue
            if _any_in(inner, aliases):
                return True
    return False


def _aliases_of_any(tree: ast.Module) -> set[str]:
    """Module-level names whose value mentions ``Any`` (``JSON = dict[str, Any]``): they would hide it."""
    names: set[str] = set()
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and _any_in(stmt.value, set()):
            names |= {t.id for t in stmt.targets if isinstance(t, ast.Name)}
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None \
                and _any_in(stmt.value, set()):
            names.add(stmt.target.id)
    return names


def signatures_with_any(path: Path) -> list[str]:
    """``file:line function`` of every function whose parameters or return are annotated with ``Any``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    aliases = _aliases_of_any(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        a = node.args
        params = [*a.posonlyargs, *a.args, *a.kwonlyargs, *([a.vararg] if a.vararg else []),
                  *([a.kwarg] if a.kwarg else [])]
        annotations = [p.annotation for p in params if p.annotation is not None]
        annotations += [node.returns] if node.returns is not None else []
        if any(_any_in(x, aliases) for x in annotations):
            shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            found.append(f"{shown}:{node.lineno} {node.name}")
    return found


def test_no_any_in_signatures() -> None:
    files = _no_any_files()
    assert len(files) > 30  # the packages are there (a wrong path would check nothing)
    found = [hit for p in files for hit in signatures_with_any(p)]
    assert not found, "Any in the signatures of:\n  " + "\n  ".join(found)


def test_the_check_sees_any(tmp_path: Path) -> None:
    """The checker itself finds Any however it is spelled (else the test above could pass on nothing)."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import typing\nfrom typing import Any\nJSON = dict[str, Any]\n"
        "def a(x: Any) -> None: ...\n"
        "def b(x: int) -> 'dict[str, Any]': ...\n"
        "def c(**kw: typing.Any) -> None: ...\n"
        "def d(x: JSON) -> None: ...\n"
        "def e(x: dict[str, object]) -> list[int]: ...\n"
        "class K:\n    def f(self, *a: Any) -> int: ...\n", encoding="utf-8")
    found = [hit.split()[1] for hit in signatures_with_any(sample)]
    assert found == ["a", "b", "c", "d", "f"]
