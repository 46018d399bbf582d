"""The package's shape is a contract: the import-linter layers in pyproject.toml hold (and bite when a
forbidden import is added), nothing below render prints, every function-local import says why it is
there, each package says what it may import, and no class grows past what one job needs."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "carevoice"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("cli", "render", "commands", "watch", "run", "engine")
# Layers that may print or draw: the command line and the renderers.
PRINTING = ("cli", "render")
MAX_CLASS_LINES = 210  # one job per class (STYLE.md); Service was 302 lines and Decoder 266 before issue 21


def modules() -> list[Path]:
    found = sorted(PACKAGE.rglob("*.py"))
    assert len(found) > 50  # the guard: the package was found
    return found


def lint_imports(package_parent: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports with the project's contracts, on the carevoice package found in ``package_parent``."""
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(REPO_ROOT / "pyproject.toml"), "--no-cache"],
        cwd=package_parent, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_the_import_contracts_hold() -> None:
    result = lint_imports(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 5 kept, 0 broken." in result.stdout


@pytest.mark.parametrize(
    ("module", "forbidden_import", "broken"),
    [
        ("engine/policy.py", "import carevoice.run.pipeline", "carevoice.engine is not allowed to import carevoice.run"),
        ("settings.py", "import carevoice.engine.models", "carevoice.settings is not allowed to import carevoice.engine"),
        ("run/records.py", "from rich.console import Console", "Nothing below render prints"),
        ("watch/arrivals.py", "import faster_whisper", "Only the engine touches faster-whisper"),
        ("render/words.py", "import carevoice.render.progress", "No import circles"),
    ],
)
def test_the_contracts_bite_on_a_forbidden_import(tmp_path: Path, module: str, forbidden_import: str, broken: str) -> None:
    shutil.copytree(PACKAGE, tmp_path / "carevoice", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "carevoice" / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n\ndef _added() -> None:\n    {forbidden_import}\n", encoding="utf-8")
    result = lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout
    assert broken in result.stdout


def _prints(tree: ast.AST) -> list[int]:
    """Lines that print: print(), or sys.stdout / sys.stderr .write()."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id == "print":
                lines.append(node.lineno)
            elif (
                isinstance(func, ast.Attribute)
                and func.attr == "write"
                and isinstance(func.value, ast.Attribute)
                and func.value.attr in ("stdout", "stderr")
                and isinstance(func.value.value, ast.Name)
                and func.value.value.id == "sys"
            ):
                lines.append(node.lineno)
    return lines


def test_nothing_below_render_prints() -> None:
    printing = {}
    checked = 0
    for path in modules():
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in PRINTING:
            continue
        checked += 1
        if lines := _prints(ast.parse(path.read_text(encoding="utf-8"))):
            printing[str(relative)] = lines
    assert checked > 30
    assert printing == {}


def _function_imports(tree: ast.AST) -> list[ast.stmt]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found += [n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
    return found


def test_every_function_local_import_says_why() -> None:
    """An import inside a function buys something (an optional extra, start-up time, a broken install
    reported instead of crashing): the comment on its line, or above the block of imports it is
    in, says what."""
    unexplained = []
    seen = 0
    for path in modules():
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in _function_imports(ast.parse("\n".join(lines))):
            seen += 1
            own = lines[node.lineno - 1 : node.end_lineno]
            above = node.lineno - 2
            while above >= 0 and lines[above].strip().startswith(("from ", "import ")):
                above -= 1  # the block of imports this one is in
            if not any("#" in line.split("import", 1)[-1] for line in own) and not lines[above].strip().startswith("#"):
                unexplained.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    assert seen > 0
    assert unexplained == []


def test_each_package_says_its_job_and_what_it_may_import() -> None:
    for name in PACKAGES:
        doc = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text(encoding="utf-8")))
        assert doc, name
        if name != "cli":
            assert "May import" in doc, name
        else:
            assert "nothing imports it" in doc


def test_no_class_does_more_than_one_job() -> None:
    sizes = {}
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                sizes[f"{path.relative_to(PACKAGE)}:{node.name}"] = node.end_lineno - node.lineno + 1  # type: ignore[operator]
    assert len(sizes) > 40
    assert {name: lines for name, lines in sizes.items() if lines > MAX_CLASS_LINES} == {}
