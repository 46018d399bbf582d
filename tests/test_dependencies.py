"""Issue 21 — declared dependencies are the imported ones (deptry), and the hash-pinned locks that CI
and the Containerfile install from still satisfy pyproject.toml (docs/dependencies.md).

Nothing here needs a network: deptry reads the code and the installed metadata, the lock checks
read files.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
# Which extras each lock holds: requirements/refresh.sh compiles them so.
LOCK_EXTRAS = {
    "requirements/ci.txt": ("models", "ffmpeg", "plot", "test", "ray"),
    "requirements/container.txt": ("models", "plot"),
}
# The environment the locks are compiled for (requirements/refresh.sh); markers are judged there.
LOCK_ENVIRONMENT = {"python_version": "3.11", "python_full_version": "3.11.0", "sys_platform": "linux",
                    "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
                    "implementation_name": "cpython", "platform_python_implementation": "CPython"}  # fmt: skip


def run_deptry(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deptry", *args, "--no-ansi"], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_the_package_imports_exactly_its_declared_dependencies() -> None:
    """carevoice/ against `dependencies` and the runtime extras, as [tool.deptry] configures it:
    nothing imported undeclared or only transitively, nothing declared and never imported."""
    result = run_deptry(".")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"Scanning [1-9]\d* files", result.stderr), result.stderr  # it looked at the code


def test_tests_and_benchmarks_import_only_declared_distributions() -> None:
    """tests/ and benchmarks/ (which [tool.deptry] leaves out) may use any declared distribution, the
    test and bench extras included, but nothing that is only there because something else needs it.
    Unused (DEP002) and development-only (DEP004) say nothing about them, so those are not checked."""
    result = run_deptry(
        "tests", "benchmarks", "--exclude", "__pycache__", "--extend-exclude", "__pycache__", "--ignore", "DEP002,DEP004"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"Scanning [1-9]\d* files", result.stderr), result.stderr


def locked_pins(lock: str) -> dict[str, str]:
    """A lock's pins, name -> version, each checked to carry at least one hash."""
    text = (REPO / lock).read_text(encoding="utf-8")
    entries = re.findall(r"^([A-Za-z0-9][^\s=]*)==(\S+)((?:\s*\\\n\s+--hash=sha256:[0-9a-f]{64})*)", text, re.MULTILINE)
    assert entries, f"{lock} pins nothing"
    unhashed = [name for name, _, hashes in entries if "--hash=" not in hashes]
    assert not unhashed, f"{lock}: pins without a hash: {unhashed}"
    return {canonicalize_name(name): version for name, version, _ in entries}


@pytest.fixture(scope="module")
def project() -> dict[str, Any]:
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11")
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


@pytest.mark.parametrize(("lock", "extras"), LOCK_EXTRAS.items())
def test_each_lock_satisfies_pyproject(project: dict[str, Any], lock: str, extras: tuple[str, ...]) -> None:
    """A range changed in pyproject.toml without requirements/refresh.sh fails here, not after CI's
    README command has quietly installed something else."""
    pins = locked_pins(lock)
    declared = [*project["dependencies"], *(r for extra in extras for r in project["optional-dependencies"][extra])]
    checked = 0
    for line in declared:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate(LOCK_ENVIRONMENT):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{lock} lacks {requirement} (run requirements/refresh.sh)"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{lock} pins {name}=={pins[name]}, pyproject.toml asks {requirement} (run requirements/refresh.sh)"
        )
        checked += 1
    assert checked >= len(project["dependencies"])


def test_the_image_ships_the_versions_ci_tested() -> None:
    """The container lock is resolved within CI's, so each package in the image is the version the suite ran with."""
    ci, container = locked_pins("requirements/ci.txt"), locked_pins("requirements/container.txt")
    differing = {name: (version, ci.get(name)) for name, version in container.items() if ci.get(name) != version}
    assert not differing, f"container pin vs CI pin: {differing}"


def test_the_containerfile_installs_from_the_lock_and_carevoice_without_dependencies() -> None:
    with open(REPO / "Containerfile", "rb") as f:
        instructions = DockerfileParser(fileobj=f).structure
    runs = [i["value"] for i in instructions if i["instruction"] == "RUN"]
    copies = [i["value"] for i in instructions if i["instruction"] == "COPY"]
    assert any("requirements/container.txt" in c.split()[:-1] for c in copies), copies
    lock_installs = [r for r in runs if re.search(r"pip install [^&]*--require-hashes -r requirements/container\.txt", r)]
    assert lock_installs, "no RUN installs requirements/container.txt with --require-hashes"
    installs = [m for r in runs for m in re.findall(r"pip install [^&]*", r)]
    unlocked = [m for m in installs if "--require-hashes" not in m and "--no-deps" not in m]
    assert not unlocked, f"pip installs that may pull unpinned dependencies: {unlocked}"
    context = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert "!requirements/container.txt" in context, "the lock is not in the build context"
