"""Issue 15 — every CUDA path of `carevoice transcribe`, `doctor` and `bench`, proven on a machine
without a GPU: the real CLI and the real engine, with CTranslate2's CUDA side and NVML replaced by
the doubles in tests/doubles.py (a real CPU model computes, so the transcripts are real)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import DATA_DIR, CliResult, invoke_cli
from doubles import (
    OUT_OF_MEMORY,
    RTX_5070_TI,
    FakeCuda,
    FakeGpu,
    FakeNvml,
    arrays_elsewhere,
    h200s,
)

from carevoice.engine.cpus import cpu_budget_here

MODEL = ("-m", "tiny.en")
# Six short English clips: with --batch-size 2 and two GPUs, each GPU gets batches of two (whose
# encoder rows are copied out one by one for word alignment).
CLIPS = [
    "hfdatasets__vctk_p225_001_mic1.flac",
    "hfdatasets__vctk_p225_002_mic1.flac",
    "lhotse__LJ002-0020.wav",
    "lhotse__LJ002-0035.wav",
    "pocketsphinx__sense_and_sensibility_01_austen_64kb-0880.wav",
    "pocketsphinx__sense_and_sensibility_01_austen_64kb-0930.wav",
]

Install = Callable[[list[FakeGpu]], FakeCuda]


def folder_of(tmp_path: Path, clips: list[str] = CLIPS, name: str = "visits") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for clip in clips:
        shutil.copy(DATA_DIR / clip, folder / clip)
    return folder


def texts(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.txt"))}


def report_of(path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(path.read_text(encoding="utf-8"))


def cuda_run(tmp_path: Path) -> tuple[CliResult, dict]:  # type: ignore[type-arg]
    """Two clips transcribed with --device cuda and a --report: what the run said, and its report."""
    report = tmp_path / "run.json"
    result = invoke_cli("transcribe", folder_of(tmp_path, CLIPS[:2]), *MODEL, "--device", "cuda", "--report", report)
    assert result.exit_code == 0, result.stderr
    return result, report_of(report)


@pytest.fixture(scope="module")
def cpu_texts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What the CPU writes for the clips: the fake GPUs compute on the CPU, so they must write the same."""
    folder = folder_of(tmp_path_factory.mktemp("cpu"))
    assert invoke_cli("transcribe", folder, *MODEL, "--device", "cpu", "-f", "txt", "--batch-size", "2").exit_code == 0
    return texts(folder)


# --- 1, 2 and 4 GPUs: every array stays on its own GPU -----------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 4])
def test_each_gpu_gets_batches_and_only_its_own_arrays(
    count: int, tmp_path: Path, fake_cuda: Install, fake_nvml: Callable[..., FakeNvml], cpu_texts: dict[str, str]
) -> None:
    gpus = h200s(count)
    fake_nvml(gpus)
    cuda = fake_cuda(gpus)
    folder = folder_of(tmp_path)
    report = tmp_path / "run.json"
    result = invoke_cli("transcribe", folder, *MODEL, "--device", "cuda", "--batch-size", "2", "-f", "txt,srt,json", "--report", report)
    assert result.exit_code == 0, result.stderr
    assert sorted({i for i, _ in cuda.loaded}) == list(range(count))  # one engine per GPU, all in float16
    assert {t for _, t in cuda.loaded} == {"float16"}
    assert arrays_elsewhere(cuda) == {}  # no GPU was handed another GPU's memory
    assert all(cuda.handed.get(i) for i in range(count)), cuda.handed  # and every GPU worked
    assert texts(folder) == cpu_texts
    record = report_of(report)
    assert record["device"] == (f"cuda ×{count} (float16)" if count > 1 else "cuda (float16)")
    assert [d["index"] for d in record["gpu"]["devices"]] == list(range(count))
    assert [d["util_mean_pct"] for d in record["gpu"]["devices"]] == [10.0 * (i + 1) for i in range(count)]


# --- compute types ------------------------------------------------------------------------------------


def test_a_gpu_without_fast_float16_runs_int8_float32_and_the_header_says_so(
    tmp_path: Path, fake_cuda: Install, fake_nvml: Callable[..., FakeNvml]
) -> None:
    old = replace(h200s(1)[0], name="Tesla P40", capability=(6, 1), compute_types=frozenset({"float32", "int8", "int8_float32"}))
    fake_nvml([old])
    cuda = fake_cuda([old])
    folder = folder_of(tmp_path, CLIPS[:2])
    for device in ("cuda", "auto"):
        result = invoke_cli("transcribe", folder, *MODEL, "--device", device, "--overwrite")
        assert result.exit_code == 0, result.stderr  # before: --device cuda exited 3, auto fell back to the CPU
        assert "on cuda (int8_float32)" in result.stderr and "GPU 0 has no fast float16: int8_float32" in result.stderr
    assert {t for _, t in cuda.loaded} == {"int8_float32"}


def test_int8_asked_of_an_rtx_5070_ti_becomes_float16_with_a_note(tmp_path: Path, fake_cuda: Install, fake_nvml: Callable[..., FakeNvml]) -> None:
    fake_nvml([RTX_5070_TI])
    cuda = fake_cuda([RTX_5070_TI])
    folder = folder_of(tmp_path, CLIPS[:2])
    result = invoke_cli("transcribe", folder, *MODEL, "--device", "cuda", "--compute-type", "int8_float16")
    assert result.exit_code == 0, result.stderr
    assert "GPU 0 cannot run int8_float16: float16 instead" in result.stderr
    assert cuda.loaded == [(0, "float16")]
    record = json.loads((folder / f".{Path(CLIPS[0]).stem}.carevoice.json").read_text(encoding="ascii"))
    assert record["build"]["engines"] == [f"cuda float16 {RTX_5070_TI.name} (compute capability 12.0)"]  # what made the words


# --- a GPU that cannot run the model ------------------------------------------------------------------


def test_a_full_gpu_is_left_out_and_the_others_do_the_work(tmp_path: Path, fake_cuda: Install, fake_nvml: Callable[..., FakeNvml]) -> None:
    gpus = h200s(2)
    gpus[0].full = True  # another tenant's job
    fake_nvml(gpus)
    cuda = fake_cuda(gpus)
    folder = folder_of(tmp_path, CLIPS[:4])
    for device in ("cuda", "auto"):
        result = invoke_cli("transcribe", folder, *MODEL, "--device", device, "--overwrite")
        assert result.exit_code == 0, result.stderr
        assert f"GPU 0 left out (cannot load model 'tiny.en' on cuda:0 ({OUT_OF_MEMORY}))" in result.stderr
        assert "on cuda (float16)" in result.stderr
    assert 0 not in cuda.handed and cuda.handed[1]


@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_cublas_missing_is_found_at_load_not_at_the_first_batch(
    device: str, tmp_path: Path, fake_cuda: Install, fake_nvml: Callable[..., FakeNvml]
) -> None:
    gpu = replace(h200s(1)[0], cublas_missing=True)
    fake_nvml([gpu])
    fake_cuda([gpu])
    folder = folder_of(tmp_path, CLIPS[:2])
    result = invoke_cli("transcribe", folder, *MODEL, "--device", device)
    problem = "model 'tiny.en' loads on cuda:0 but cannot run there (Library libcublas.so.12 is not found or cannot be loaded)"
    if device == "cuda":
        assert result.exit_code == 3
        assert result.stderr.splitlines()[0] == f"error: {problem}"
        assert "cuDNN is not needed" in result.stderr.splitlines()[1]
        assert not list(folder.glob("*.txt"))
    else:
        assert result.exit_code == 0, result.stderr
        assert f"on cpu (int8) (auto: CUDA unusable ({problem}), fell back to CPU; {cpu_budget_here().reason})" in result.stderr
        assert len(list(folder.glob("*.txt"))) == 2


def test_out_of_memory_at_batch_16_is_split_until_it_fits(tmp_path: Path, fake_cuda: Install, fake_nvml: Callable[..., FakeNvml]) -> None:
    gpu = replace(h200s(1)[0], oom_from_batch=16)
    fake_nvml([gpu])
    cuda = fake_cuda([gpu])
    folder = tmp_path / "visits"
    folder.mkdir()
    for i in range(16):
        shutil.copy(DATA_DIR / CLIPS[i % 2], folder / f"v{i:02d}.flac")
    report = tmp_path / "run.json"
    result = invoke_cli("transcribe", folder, *MODEL, "--device", "cuda", "--batch-size", "16", "-f", "txt", "--report", report)
    assert result.exit_code == 0, result.stderr
    record = report_of(report)
    assert record["counts"]["done"] == 16 and record["engine_calls"] == 2 and record["chunks"] == 16
    assert cuda.batches[0][-2:] == [8, 8]  # the batch of 16 ran out of memory and went as two of 8


# --- NVML and CUDA numbering ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("visible", "nvml_of_cuda"),
    [("2,0", [2, 0]), ("GPU-00000001", [1])],
    ids=["indices", "uuid-prefix"],
)
def test_gpu_utilisation_is_read_from_the_gpus_this_run_uses(
    visible: str, nvml_of_cuda: list[int], tmp_path: Path, fake_cuda: Install, fake_nvml: Callable[..., FakeNvml], monkeypatch: pytest.MonkeyPatch
) -> None:
    """NVML counts in PCI order and ignores CUDA_VISIBLE_DEVICES: CUDA's GPU 0 here is NVML's GPU 2."""
    gpus = h200s(3)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    fake_nvml(gpus)
    fake_cuda(gpus)
    folder = folder_of(tmp_path, CLIPS[:4])
    report = tmp_path / "run.json"
    result = invoke_cli("transcribe", folder, *MODEL, "--device", "cuda", "--batch-size", "2", "--report", report)
    assert result.exit_code == 0, result.stderr
    devices = report_of(report)["gpu"]["devices"]
    assert [(d["index"], d["util_mean_pct"]) for d in devices] == [(cuda, gpus[nvml].util_pct) for cuda, nvml in enumerate(nvml_of_cuda)]


def test_under_slurm_cuda_gpu_0_is_the_jobs_own_gpu_read_past_the_ones_that_refuse_access(
    tmp_path: Path, fake_cuda: Install, fake_nvml: Callable[..., FakeNvml], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slurm with cgroups: NVML counts the node's three GPUs and refuses the two of other jobs; CUDA
    sees only this job's GPU (NVML's 2) and calls it 0, as Slurm's CUDA_VISIBLE_DEVICES=0 says."""
    gpus = h200s(3)
    gpus[:2] = [replace(g, denied=True) for g in gpus[:2]]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    fake_nvml(gpus)
    fake_cuda(gpus)
    _, report = cuda_run(tmp_path)
    gpu = report["gpu"]
    assert gpu["available"], gpu["reason"]
    assert [(d["index"], d["util_mean_pct"]) for d in gpu["devices"]] == [(0, gpus[2].util_pct)]


def test_nvml_gone_mid_run_ends_sampling_not_the_run(tmp_path: Path, fake_cuda: Install, fake_nvml: Callable[..., FakeNvml]) -> None:
    gpus = h200s(1)
    fake_nvml(gpus, vanish_after=1)
    fake_cuda(gpus)
    _, report = cuda_run(tmp_path)
    gpu = report["gpu"]
    assert gpu["available"] and gpu["devices"][0]["samples"] >= 1
    assert gpu["reason"] in (None, "sampling stopped: Driver Not Loaded")  # gone before or after the run's end


def test_a_mig_slice_or_hidden_memory_reads_as_n_a_and_sampling_goes_on(
    tmp_path: Path, fake_cuda: Install, fake_nvml: Callable[..., FakeNvml]
) -> None:
    gpus = [replace(h200s(1)[0], mig=True, refuse=frozenset({"memory"}))]
    fake_nvml(gpus)
    fake_cuda(gpus)
    result, report = cuda_run(tmp_path)
    (device,) = report["gpu"]["devices"]
    assert (device["util_mean_pct"], device["memory_used_peak_mib"]) == (None, None) and report["gpu"]["reason"] is None
    assert "(no utilisation reported)" in result.stderr.splitlines()[-1]


# --- doctor and bench ------------------------------------------------------------------------------------


def test_doctor_names_each_gpu_its_compute_capability_and_tests_every_one(
    fake_cuda: Install, fake_nvml: Callable[..., FakeNvml], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from carevoice.engine import cuda_probe
    from carevoice.engine.cuda_probe import CudaProbe

    gpus = [h200s(1)[0], RTX_5070_TI]
    fake_nvml(gpus)
    fake_cuda(gpus)
    probed: list[tuple[int, str]] = []

    def probe(model: str, compute_type: str, audio: object, timeout_s: float, root: object, device_index: int = 0) -> CudaProbe:
        probed.append((device_index, compute_type))  # the probe's child process would not see the doubles
        return CudaProbe(True, f"{compute_type} inference ran (load 1.0 s, 1 s of audio in 0.10 s)")

    monkeypatch.setattr(cuda_probe, "load_cublas", lambda: (True, "libcublas.so.12 loads"))
    monkeypatch.setattr(cuda_probe, "probe_cuda_inference", probe)
    result = invoke_cli("doctor", tmp_path, *MODEL, "--json")
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert "GPU1 NVIDIA GeForce RTX 5070 Ti (compute capability 12.0)" in checks["NVIDIA GPU"]["detail"]
    cuda = checks["CUDA (ctranslate2)"]["detail"]
    assert "0 NVIDIA H200 (compute capability 9.0): bfloat16, float16, float32, int8, int8_bfloat16, int8_float16, int8_float32 — runs float16" in cuda
    assert "1 NVIDIA GeForce RTX 5070 Ti (compute capability 12.0): bfloat16, float16, float32 — runs float16" in cuda
    assert probed == [(0, "float16"), (1, "float16")]  # every GPU, not only the first
    assert checks["GPU inference"]["status"] == "pass"


def test_doctor_reports_the_gpus_it_may_use_when_another_jobs_gpu_refuses_access(
    fake_cuda: Install, fake_nvml: Callable[..., FakeNvml], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from carevoice.engine import cuda_probe
    from carevoice.engine.cuda_probe import CudaProbe

    gpus = h200s(2)
    gpus[0] = replace(gpus[0], denied=True)
    fake_nvml(gpus)
    fake_cuda(gpus)
    monkeypatch.setattr(cuda_probe, "load_cublas", lambda: (True, "libcublas.so.12 loads"))
    monkeypatch.setattr(cuda_probe, "probe_cuda_inference", lambda *a, **k: CudaProbe(True, "float16 inference ran"))
    result = invoke_cli("doctor", tmp_path, *MODEL, "--json")
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    nvidia = checks["NVIDIA GPU"]
    assert nvidia["status"] == "pass", nvidia["detail"]
    assert "GPU1 NVIDIA H200 (compute capability 9.0)" in nvidia["detail"]
    assert nvidia["detail"].count("GPU0 refused access (Insufficient Permissions): not ours, left out") == 1
    assert "0 NVIDIA H200 (compute capability 9.0)" in checks["CUDA (ctranslate2)"]["detail"]  # CUDA's 0 is NVML's 1


def test_bench_times_the_gpu_rows_on_the_double(
    fake_cuda: Install, fake_nvml: Callable[..., FakeNvml], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from carevoice.engine import cuda_probe
    from carevoice.engine.cuda_probe import CudaProbe

    gpus = h200s(1)
    fake_nvml(gpus)
    cuda = fake_cuda(gpus)
    monkeypatch.setattr(cuda_probe, "probe_cuda_inference", lambda *a, **k: CudaProbe(True, "float16 inference ran"))
    folder = folder_of(tmp_path, CLIPS[:2])
    result = invoke_cli("bench", folder, *MODEL, "--devices", "cuda,cpu", "--runs", "1", "--json")
    assert result.exit_code == 0, result.stderr
    rows = {(r["mode"], r["device"]): r for r in json.loads(result.stdout)["rows"]}
    assert rows[("carevoice", "cuda")]["available"] and rows[("carevoice", "cuda")]["compute_type"] == "float16"
    assert rows[("carevoice", "cuda")]["gpu"]["devices"][0]["util_mean_pct"] == 10.0
    assert cuda.handed[0]
