"""Static checks of deploy/: the systemd unit and the Kubernetes manifest for `carevoice watch`.

Neither can run here (no systemd as PID 1, no cluster). What can be checked is checked against
the real thing: systemd-analyze reads the unit, the watch command lines go through the real CLI's
parser, and the manifest's user and heartbeat agree with the Containerfile.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sysconfig
from pathlib import Path, PurePosixPath

import pytest
import typer.main
import yaml
from conftest import REPO_ROOT

from carevoice.cli.app import app
from carevoice.settings import ENV_HEARTBEAT

REPO = REPO_ROOT
UNIT = REPO / "deploy" / "carevoice-watch.service"
MANIFEST = REPO / "deploy" / "kubernetes.yaml"
CONTAINERFILE = REPO / "Containerfile"
# systemd-analyze security's exposure, in tenths (its --threshold unit): 4.1 with systemd 252.
# Above 4.9 means hardening was dropped.
MAX_EXPOSURE_TENTHS = 49
# Settings that would hide the GPU (/dev/nvidia*) or break CUDA, or hide what carevoice reads in /proc.
GPU_BREAKING = ("PrivateDevices", "ProtectClock", "MemoryDenyWriteExecute", "DevicePolicy", "ProtectProc", "ProcSubset")


def watch_params(args: list[str]) -> dict[str, object]:
    """``carevoice ARGS`` parsed by the real CLI (nothing runs): unknown options or bad values raise."""
    assert args[0] == "watch", args
    command = typer.main.get_command(app).commands["watch"]  # type: ignore[attr-defined]
    with command.make_context("watch", list(args[1:])) as ctx:
        return dict(ctx.params)


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """A unit file's sections as (key, value) lists, in order: keys repeat (Environment=)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        assert not line.endswith("\\"), f"continued lines are not parsed here: {line}"
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"a setting outside any section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not a setting: {line}"
        current.append((key.strip(), value.strip()))
    return sections


@pytest.fixture(scope="module")
def unit() -> dict[str, list[tuple[str, str]]]:
    return parse_unit(UNIT.read_text(encoding="utf-8"))


def last(section: list[tuple[str, str]], key: str) -> str:
    """The value systemd uses for a single-valued setting (the last one wins)."""
    found = [value for k, value in section if k == key]
    assert found, f"{key}= is not set"
    return found[-1]


def environment(section: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for key, value in section:
        if key == "Environment":
            for word in shlex.split(value):
                name, _, setting = word.partition("=")
                env[name] = setting
    return env


def image_user() -> tuple[int, int]:
    """The Containerfile's final USER uid:gid."""
    users = re.findall(r"^USER\s+(\d+):(\d+)\s*$", CONTAINERFILE.read_text(encoding="utf-8"), re.MULTILINE)
    assert users, "the Containerfile has no numeric USER uid:gid"
    uid, gid = users[-1]
    return int(uid), int(gid)


def image_heartbeat() -> PurePosixPath:
    found = re.findall(rf"\b{ENV_HEARTBEAT}=(\S+)", CONTAINERFILE.read_text(encoding="utf-8"))
    assert found, f"the Containerfile sets no {ENV_HEARTBEAT}"
    return PurePosixPath(found[-1])


def under(path: PurePosixPath, folders: list[str]) -> bool:
    return any(path == PurePosixPath(f) or PurePosixPath(f) in path.parents for f in folders)


# ---- systemd --------------------------------------------------------------------------------


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd); the unit is still parsed by the other tests")
    return found


@pytest.fixture
def unit_with_this_carevoice(tmp_path: Path, unit: dict[str, list[tuple[str, str]]]) -> Path:
    """The unit with ExecStart's binary replaced by this environment's carevoice: systemd-analyze
    verify checks that the binary exists, and /opt/carevoice is where an install puts it, not here."""
    binary = shlex.split(last(unit["Service"], "ExecStart"))[0]
    here = Path(sysconfig.get_path("scripts")) / "carevoice"
    assert here.is_file(), "carevoice is not installed in this environment (pip install -e .)"
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text(encoding="utf-8").replace(f"ExecStart={binary} ", f"ExecStart={here} "), encoding="utf-8")
    return copy


def test_systemd_analyze_verify_accepts_the_unit(unit_with_this_carevoice: Path) -> None:
    """Unknown keys and bad values are only warnings to systemd (exit 0): any line about the unit fails."""
    result = subprocess.run(
        [systemd_analyze(), "verify", "--man=no", str(unit_with_this_carevoice)], capture_output=True, text=True, timeout=60
    )
    about_unit = [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line]
    assert result.returncode == 0 and not about_unit, result.stdout + result.stderr


def test_systemd_hardening_stays_in_place(unit_with_this_carevoice: Path) -> None:
    result = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", f"--threshold={MAX_EXPOSURE_TENTHS}", str(unit_with_this_carevoice)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    overall = [line for line in result.stdout.splitlines() if "Overall exposure" in line]
    assert result.returncode == 0, "\n".join(overall) or result.stdout + result.stderr


def test_unit_runs_watch_with_options_the_cli_accepts(unit: dict[str, list[tuple[str, str]]]) -> None:
    argv = shlex.split(last(unit["Service"], "ExecStart"))
    assert PurePosixPath(argv[0]).is_absolute() and PurePosixPath(argv[0]).name == "carevoice", argv
    params = watch_params(argv[1:])
    assert params["folders"], argv


def test_unit_can_write_where_watch_writes(unit: dict[str, list[tuple[str, str]]]) -> None:
    """ProtectSystem=strict makes everything read-only but the ReadWritePaths and the unit's own
    State/Cache/Runtime directories: the watched folders, reports, model cache and heartbeat must be there."""
    service = unit["Service"]
    assert last(service, "ProtectSystem") == "strict"
    writable = [p for k, v in service if k == "ReadWritePaths" for p in v.split()]
    for key, root in (("StateDirectory", "/var/lib"), ("CacheDirectory", "/var/cache"), ("RuntimeDirectory", "/run")):
        writable += [f"{root}/{name}" for k, v in service if k == key for name in v.split()]
    params = watch_params(shlex.split(last(service, "ExecStart"))[1:])
    env = environment(service)
    must_write = [*params["folders"], params["report_dir"], params["output_dir"]]  # type: ignore[list-item]
    must_write += [env["CAREVOICE_CACHE_DIR"], env[ENV_HEARTBEAT]]
    checked = 0
    for path in must_write:
        if path is not None:
            assert under(PurePosixPath(str(path)), writable), f"{path} is not writable under ProtectSystem=strict ({writable})"
            checked += 1
    assert checked >= 4, must_write
    # The watched folder's mount is waited for, and health run outside the service finds the heartbeat.
    mounts = [p for k, v in unit["Unit"] for p in v.split() if k == "RequiresMountsFor"]
    assert all(under(PurePosixPath(str(f)), mounts) for f in params["folders"]), mounts  # type: ignore[attr-defined]
    assert last(service, "PrivateTmp") == "yes" and not env[ENV_HEARTBEAT].startswith("/tmp/")


def test_unit_runs_unprivileged_and_stops_cleanly(unit: dict[str, list[tuple[str, str]]]) -> None:
    service = unit["Service"]
    assert last(service, "User") not in ("", "root", "0")
    assert last(service, "NoNewPrivileges") == "yes"
    assert last(service, "KillSignal") == "SIGTERM"
    # SIGTERM to carevoice alone, as `docker stop` and Kubernetes send it; it stops its own ffmpeg children.
    assert last(service, "KillMode") == "mixed"
    assert int(last(service, "TimeoutStopSec")) >= 60
    assert last(service, "Restart") in ("on-failure", "always")
    assert environment(service).get("HF_HUB_OFFLINE") == "1"
    assert not [k for k, _ in service if k in GPU_BREAKING]


# ---- Kubernetes -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifests() -> list[dict]:
    with open(MANIFEST, encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


@pytest.fixture(scope="module")
def deployment(manifests: list[dict]) -> dict:
    found = [doc for doc in manifests if doc["kind"] == "Deployment"]
    assert len(found) == 1, [doc["kind"] for doc in manifests]
    return found[0]


@pytest.fixture(scope="module")
def pod(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def container(pod: dict) -> dict:
    (only,) = pod["containers"]
    return only


def test_one_watcher_and_never_two(deployment: dict) -> None:
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"]["type"] == "Recreate"
    assert spec["selector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_container_watches_data_with_reports_in_a_hidden_folder(container: dict) -> None:
    args = container["args"]
    assert args == ["watch", "/data", "--report-dir", "/data/.carevoice-reports"]
    params = watch_params(args)
    assert [str(f) for f in params["folders"]] == ["/data"]  # type: ignore[attr-defined]
    # Inside the watched folder, so hidden: discovery and the event filter skip hidden names.
    report_dir = PurePosixPath(str(params["report_dir"]))
    assert report_dir.parent == PurePosixPath("/data") and report_dir.name.startswith(".")


def test_recordings_claim_is_mounted_at_data(pod: dict, container: dict, manifests: list[dict]) -> None:
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/data"]
    assert not mount.get("readOnly", False)
    claim = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
    claims = [doc["metadata"]["name"] for doc in manifests if doc["kind"] == "PersistentVolumeClaim"]
    assert claim in claims, (claim, claims)


def test_liveness_is_carevoice_health(container: dict) -> None:
    probe = container["livenessProbe"]
    command = probe["exec"]["command"]
    assert command[:2] == ["carevoice", "health"], command
    assert probe["timeoutSeconds"] < probe["periodSeconds"]
    assert probe.get("failureThreshold", 3) >= 2
    assert "readinessProbe" not in container  # no traffic to gate; a failing one would only hide the pod


def test_pod_stops_cleanly_and_runs_as_the_image_user(pod: dict, container: dict) -> None:
    assert pod["terminationGracePeriodSeconds"] >= 60
    security = pod["securityContext"]
    uid, gid = image_user()
    assert (security["runAsUser"], security["runAsGroup"], security["fsGroup"]) == (uid, gid, gid)
    assert security["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_heartbeat_is_writable_under_a_read_only_root(pod: dict, container: dict) -> None:
    """The image's CAREVOICE_HEARTBEAT (and HOME, /tmp) must be on a writable volume when the root is read-only."""
    if not container["securityContext"].get("readOnlyRootFilesystem"):
        pytest.skip("the root file system is writable: nothing to check")
    volumes = {v["name"]: v for v in pod["volumes"]}
    writable = [m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly") and m["name"] in volumes]
    assert under(image_heartbeat(), writable), (image_heartbeat(), writable)
    assert "/tmp" in writable  # HOME=/tmp in the image


def test_gpu_limit_is_offered_commented() -> None:
    """Without a GPU node the manifest must still schedule; the GPU line is there to uncomment."""
    text = MANIFEST.read_text(encoding="utf-8")
    assert re.search(r"^\s*#\s*nvidia\.com/gpu:\s*1\b", text, re.MULTILINE), "no commented nvidia.com/gpu limit"


# ---- the time a stop gets, everywhere -------------------------------------------------------

# A stop (SIGTERM) lets the batch in progress finish and its files be written (docs/watch.md,
# "Stopping and restarting"): the longest it waits is one batch. The default model's slowest batch
# (base int8 on the CPU: 8 chunks of 30 s of speech, beam 5, word timestamps) took 82 s on a 2-core
# VM that another job shared (benchmarks/README.md, issue 22); writing its files, the day's report
# and exiting take about a second. A GPU runs such a batch in seconds. Every way of running the
# watcher the project ships gives a stop this long, and the docs say so.
STOP_GRACE_S = 120
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def container_watch_commands() -> list[tuple[str, str]]:
    """Every `docker run` / `podman run` of `carevoice watch` in the docs, continuation lines joined, by file."""
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8").replace("\\\n", " ")
        for line in text.splitlines():
            words = shlex.split(line.strip()) if re.match(r"\s*(docker|podman) run\b", line) else []
            if "carevoice" in words and words[words.index("carevoice") + 1 :][:1] == ["watch"]:
                found.append((doc.name, line.strip()))
    return found


def test_every_deploy_gives_a_stop_the_time_one_batch_needs(unit: dict[str, list[tuple[str, str]]], pod: dict) -> None:
    commands = container_watch_commands()
    assert commands, "no docker/podman run of carevoice watch in the docs"
    grace = {
        "systemd TimeoutStopSec": int(last(unit["Service"], "TimeoutStopSec")),
        "kubernetes terminationGracePeriodSeconds": int(pod["terminationGracePeriodSeconds"]),
    }
    for doc, command in commands:
        timeout = re.search(r"--stop-timeout[= ](\d+)", command)
        grace[f"{doc}: {command[:40]}…"] = int(timeout.group(1)) if timeout else 10  # docker's and podman's default
    assert set(grace.values()) == {STOP_GRACE_S}, grace
    stopping = (REPO / "docs" / "watch.md").read_text(encoding="utf-8")
    assert f"{STOP_GRACE_S} s" in stopping and "finishing the batch in progress" in stopping


def test_a_crash_report_outlives_the_restart_it_causes(unit: dict[str, list[tuple[str, str]]], pod: dict, container: dict) -> None:
    """A crash's traceback is kept beside the heartbeat (carevoice.cli.watch.crash_log_path); the
    restart that follows must not remove it: systemd removes a RuntimeDirectory when the service
    stops, a restart included, unless told to keep it; a container's /tmp must be a volume."""
    service = unit["Service"]
    heartbeat = PurePosixPath(environment(service)[ENV_HEARTBEAT])
    runtime = [f"/run/{name}" for k, v in service if k == "RuntimeDirectory" for name in v.split()]
    if under(heartbeat, runtime):
        assert last(service, "RuntimeDirectoryPreserve") in ("restart", "yes")
    # An emptyDir lives as long as the pod, a claim longer.
    lasting = {v["name"] for v in pod["volumes"] if {"emptyDir", "persistentVolumeClaim"} & v.keys()}
    mounts = [m["mountPath"] for m in container["volumeMounts"] if m["name"] in lasting]
    assert under(image_heartbeat(), mounts), (image_heartbeat(), mounts)
