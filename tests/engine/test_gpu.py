"""engine/nvml.py, gpu_stats.py and cuda_probe.py: NVML sampling aggregated from a fake query, the real no-driver path, and the CUDA probe's child process."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from types import SimpleNamespace

import pytest
from doubles import FakeGpu, FakeNvml, h200s
from rich.console import Console

from carevoice.engine import cuda_probe, gpu_stats
from carevoice.engine.devices import DeviceChoice, DeviceReason
from carevoice.engine.gpu_stats import GpuSampler, percentile, summarise
from carevoice.engine.nvml import GpuSample, NvmlSession, read_nvml_info, visible_gpus
from carevoice.render.progress import gpu_live_text
from carevoice.render.summaries import RunSummary, gpu_summary_text, summary_line

NVML_WORKS = read_nvml_info().available

ON_GPU_0 = DeviceChoice("cuda", DeviceReason.ASKED, 1, gpus=(0,))


def reading(*utils: float, used_mib: float = 1024.0, power_w: float | None = 100.0) -> tuple[GpuSample, ...]:
    return tuple(
        GpuSample(index=i, util_pct=u, memory_used_mib=used_mib + i, memory_total_mib=81920.0, power_w=power_w)
        for i, u in enumerate(utils)
    )


def wait_for(condition, timeout_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


@pytest.mark.parametrize(
    ("values", "pct", "expected"),
    [([], 95, 0.0), ([7.0], 95, 7.0), ([float(v) for v in range(1, 21)], 95, 19.0), ([float(v) for v in range(1, 21)], 100, 20.0),
     ([float(v) for v in range(1, 101)], 95, 95.0), ([3.0, 1.0, 2.0], 50, 2.0)],
)  # fmt: skip
def test_percentile_is_nearest_rank(values: list[float], pct: float, expected: float) -> None:
    assert percentile(values, pct) == expected


def test_summarise_gives_mean_p95_and_peak_per_gpu() -> None:
    utils = [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0]
    readings = [reading(u, 50.0, used_mib=1000.0 + 10 * k) for k, u in enumerate(utils)]
    readings[3] = reading(30.0, 50.0, used_mib=1030.0, power_w=None)  # a GPU that did not report power once

    stats = summarise(readings)

    assert [d.index for d in stats] == [0, 1]
    busy, steady = stats
    assert busy.samples == len(utils)
    assert busy.util_mean_pct == pytest.approx(50.0)
    assert busy.util_p95_pct == 100.0  # nearest rank of 11 values: the 11th
    assert busy.util_peak_pct == 100.0
    assert busy.memory_used_peak_mib == 1100.0
    assert busy.memory_used_mean_mib == pytest.approx(1050.0)
    assert busy.memory_total_mib == 81920.0
    assert busy.power_mean_w == pytest.approx(100.0) and busy.power_peak_w == 100.0
    assert busy.temperature_peak_c is None  # never reported
    assert steady.util_mean_pct == steady.util_p95_pct == steady.util_peak_pct == 50.0
    assert steady.memory_used_peak_mib == 1101.0


def test_busiest_gpu_is_the_one_doing_the_work() -> None:
    stats = gpu_stats.GpuStats(True, devices=summarise([reading(5.0, 90.0), reading(15.0, 70.0)]))
    assert stats.busiest is not None and stats.busiest.index == 1
    as_dict = stats.to_dict()
    assert as_dict["available"] is True and len(as_dict["devices"]) == 2
    assert as_dict["devices"][1]["util_mean_pct"] == 80.0


def test_sampler_aggregates_every_reading_of_an_injected_query() -> None:
    values = [10.0, 20.0, 90.0, 40.0]
    calls: list[float] = []
    seen: list[tuple[GpuSample, ...]] = []

    def query() -> tuple[GpuSample, ...]:
        util = values[len(calls) % len(values)]
        calls.append(util)
        return reading(util)

    sampler = GpuSampler(query, interval_s=0.005, on_sample=seen.append).start()
    assert sampler.available and sampler.running
    wait_for(lambda: len(calls) >= 8)
    stats = sampler.stop()

    assert not sampler.running
    assert len(seen) == len(calls) == stats.devices[0].samples  # nothing read after stop, nothing lost
    assert stats.devices[0].util_mean_pct == pytest.approx(sum(calls) / len(calls))
    assert stats.devices[0].util_peak_pct == 90.0
    assert stats.duration_s > 0
    assert sampler.latest() == reading(calls[-1])


def test_sampler_stops_at_once_and_idles_between_readings() -> None:
    calls = []
    sampler = GpuSampler(lambda: calls.append(1) or reading(1.0), interval_s=30.0).start()
    time.sleep(0.1)
    assert len(calls) == 1  # the first reading is taken at start; then it sleeps
    started = time.monotonic()
    sampler.stop()
    assert time.monotonic() - started < 1.0
    assert not sampler.running
    assert sampler.stop().devices[0].samples == 1  # idempotent


def test_a_failing_query_ends_sampling_not_the_run() -> None:
    calls = []

    def query() -> tuple[GpuSample, ...]:
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("GPU is lost")
        return reading(50.0)

    sampler = GpuSampler(query, interval_s=0.005).start()
    wait_for(lambda: not sampler.running)
    stats = sampler.stop()
    assert stats.available and stats.devices[0].samples == 2
    assert stats.reason == "sampling stopped: GPU is lost"


def test_sampler_thread_ends_when_the_run_is_interrupted() -> None:
    sampler = GpuSampler(lambda: reading(1.0), interval_s=0.005)
    with pytest.raises(KeyboardInterrupt):
        with sampler:
            assert sampler.running
            raise KeyboardInterrupt
    assert not sampler.running
    assert not any(t.name == "carevoice-gpu-sampler" and t.is_alive() for t in threading.enumerate())


@pytest.mark.skipif(NVML_WORKS, reason="this machine has an NVIDIA driver")
def test_without_a_driver_nvml_reports_why_and_the_sampler_starts_nothing() -> None:
    info = read_nvml_info()
    assert not info.available and not info.has_gpu and info.reason
    assert info.describe() == f"no NVIDIA GPU (NVML unavailable: {info.reason})"
    assert info.to_dict()["devices"] == []

    before = threading.active_count()
    started = time.monotonic()
    sampler = GpuSampler().start()
    assert time.monotonic() - started < 2.0
    assert not sampler.available and sampler.reason == info.reason
    assert not sampler.running and threading.active_count() == before
    stats = sampler.stop()
    assert stats.to_dict() == {"available": False, "reason": info.reason, "interval_s": 0.5, "duration_s": 0.0, "devices": [], "series": []}


def test_missing_nvidia_ml_py_reads_as_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    info = read_nvml_info()
    assert info.describe() == "no NVIDIA GPU (NVML unavailable: nvidia-ml-py is not installed)"
    assert not GpuSampler().start().available


def test_nvml_info_from_a_fake_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real NVML code path (handles, names, units) against a stand-in pynvml module."""

    class NotSupported(Exception):
        pass

    def unsupported(*args: object) -> float:
        raise NotSupported

    fake = SimpleNamespace(
        NVML_TEMPERATURE_GPU=0, NVML_CLOCK_SM=1, NVML_CLOCK_MEM=2,
        nvmlInit=lambda: None, nvmlShutdown=lambda: None, nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: f"h{i}", nvmlDeviceGetName=lambda h: b"NVIDIA H200",
        nvmlSystemGetDriverVersion=lambda: "570.86.15", nvmlSystemGetCudaDriverVersion_v2=lambda: 12080,
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(used=2 * 1024**3, total=141 * 1024**3),
        nvmlDeviceGetUtilizationRates=lambda h: SimpleNamespace(gpu=87),
        nvmlDeviceGetPowerUsage=lambda h: 350_000, nvmlDeviceGetTemperature=lambda h, kind: 51,
        nvmlDeviceGetClockInfo=unsupported,
    )  # fmt: skip
    monkeypatch.setitem(sys.modules, "pynvml", fake)

    info = read_nvml_info()
    assert info.describe() == "NVIDIA H200 (141 GiB); driver 570.86.15, CUDA 12.8"
    assert info.devices[0].util_pct == 87.0 and info.devices[0].memory_used_mib == 2048.0
    sampler = GpuSampler(interval_s=60).start()
    stats = sampler.stop()
    device = stats.devices[0]
    assert (device.util_mean_pct, device.power_mean_w, device.temperature_peak_c, device.sm_clock_mean_mhz) == (87.0, 350.0, 51.0, None)


def test_progress_and_summary_texts() -> None:
    assert gpu_live_text(()) == ""
    assert gpu_live_text(reading(12.0, 87.0, used_mib=3276.8)) == " · GPU1 87% · 3.2/80 GiB"  # the busiest GPU, by the run's number
    stats = gpu_stats.GpuStats(True, devices=summarise([reading(20.0), reading(60.0), reading(100.0)]))
    summary = RunSummary(wall_s=1.0, extra={"gpu": stats.to_dict()})
    line = summary_line(summary)
    assert line.endswith(" · GPU0 util mean 60% / p95 100% / peak 100%, memory peak 1.0 GiB")
    assert summary.to_dict()["gpu"]["devices"][0]["util_p95_pct"] == 100.0
    assert gpu_summary_text({"available": False, "reason": "x", "devices": []}) == ""


def test_a_cuda_run_without_nvml_says_so_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from carevoice.cli.transcribe import _start_gpu_sampler

    monkeypatch.setitem(sys.modules, "pynvml", None)
    console = Console(record=True, width=200)
    run = SimpleNamespace(transcriber=SimpleNamespace(engine=SimpleNamespace(device="cuda")), placement=ON_GPU_0)
    view = SimpleNamespace(refresh=lambda text: None)

    sampler = _start_gpu_sampler(run, view, console, quiet=False, origin=0.0)
    assert sampler is not None and not sampler.available
    assert console.export_text().count("no NVIDIA GPU (NVML unavailable: nvidia-ml-py is not installed)") == 1
    assert sampler.stop().to_dict()["available"] is False

    run.transcriber.engine.device = "cpu"
    assert _start_gpu_sampler(run, view, console, quiet=False, origin=0.0) is None


def test_a_cuda_run_shows_live_utilisation(monkeypatch: pytest.MonkeyPatch) -> None:
    from carevoice.cli import transcribe

    refreshed: list[str] = []
    used: list[object] = []

    def sampler_of(on_sample: object, cuda_indices: object, origin: float) -> GpuSampler:
        used.append(cuda_indices)
        return GpuSampler(lambda: reading(42.0), interval_s=0.005, on_sample=on_sample)  # type: ignore[arg-type]

    monkeypatch.setattr(gpu_stats, "GpuSampler", sampler_of)
    run = SimpleNamespace(transcriber=SimpleNamespace(engine=SimpleNamespace(device="cuda")), placement=ON_GPU_0)
    sampler = transcribe._start_gpu_sampler(run, SimpleNamespace(refresh=refreshed.append), Console(record=True), quiet=False, origin=0.0)
    wait_for(lambda: len(refreshed) >= 2)
    stats = sampler.stop()
    assert refreshed[0] == " · GPU0 42% · 1.0/80 GiB"
    assert stats.devices[0].util_mean_pct == 42.0
    assert used == [(0,)]  # only the GPUs the run uses


def test_cuda_probe_survives_an_aborting_child(monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing cuBLAS aborts the process that touches it: the probe reports the signal instead."""
    monkeypatch.setattr(cuda_probe, "_PROBE_SCRIPT", "import os, signal, sys\nprint('Library libcublas.so.12 is not found', file=sys.stderr)\nos.abort()"
    )
    probe = cuda_probe.probe_cuda_inference("model", "float16", timeout_s=30)
    assert not probe.ok
    assert probe.detail == "the GPU test process was killed by SIGABRT: Library libcublas.so.12 is not found"


def test_cuda_probe_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cuda_probe, "_PROBE_SCRIPT", "import time\ntime.sleep(30)")
    started = time.monotonic()
    probe = cuda_probe.probe_cuda_inference("model", "float16", timeout_s=0.5)
    assert time.monotonic() - started < 10
    assert not probe.ok and probe.detail == "the GPU test did not finish within 0.5 s and was stopped"


def test_cuda_probe_reports_success(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cuda_probe, "_PROBE_SCRIPT", 'import json\nprint(json.dumps({"load_s": 1.5, "infer_s": 0.25, "segments": 1}))')
    probe = cuda_probe.probe_cuda_inference("model", "float16", timeout_s=30)
    assert probe.ok and probe.detail == "float16 inference ran (load 1.5 s, 1 s of audio in 0.25 s)"


@pytest.mark.skipif(NVML_WORKS, reason="this machine has an NVIDIA driver")
def test_real_cuda_probe_fails_cleanly_without_a_gpu(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from carevoice.engine.models import resolve_model

    ref = resolve_model("tiny.en", tmp_path)
    probe = cuda_probe.probe_cuda_inference(ref.load_from, "float16", timeout_s=120)
    assert not probe.ok
    assert probe.detail.startswith("the GPU test process exited with status 1: ")
    assert "Traceback" not in probe.detail


def test_a_gpu_without_utilisation_readings_still_reports_memory() -> None:
    """MIG slices answer memory queries but not utilisation (NVML_ERROR_NOT_SUPPORTED)."""
    mig = (GpuSample(index=0, util_pct=None, memory_used_mib=2048.0, memory_total_mib=18432.0),)
    stats = gpu_stats.GpuStats(True, devices=summarise([mig, mig]))
    device = stats.devices[0]
    assert (device.samples, device.util_mean_pct, device.util_p95_pct, device.util_peak_pct) == (2, None, None, None)
    assert device.memory_used_peak_mib == 2048.0
    assert gpu_live_text(mig) == " · GPU0 n/a · 2.0/18 GiB"
    assert gpu_summary_text(stats.to_dict()) == " · GPU0 memory peak 2.0 GiB (no utilisation reported)"


def test_each_gpu_over_time_is_a_bounded_series_from_the_run_s_start() -> None:
    from carevoice.engine.gpu_stats import time_series

    readings = [(10.0 + 0.5 * k, reading(float(k % 4) * 10, 50.0, used_mib=1000.0 + k)) for k in range(12)]
    full = time_series(readings)
    assert [s.index for s in full] == [0, 1]
    assert full[0].t_s[:3] == (10.0, 10.5, 11.0) and full[0].util_pct[:4] == (0.0, 10.0, 20.0, 30.0)
    merged = time_series(readings, max_points=3)  # four readings per step: mean utilisation, peak memory
    assert merged[0].t_s == (10.0, 12.0, 14.0)
    assert merged[0].util_pct == (15.0, 15.0, 15.0) and merged[0].memory_used_mib == (1003.0, 1007.0, 1011.0)
    refused = time_series([(0.0, (GpuSample(0, None, None, None),))])
    assert refused[0].util_pct == (None,) and refused[0].to_dict() == {"index": 0, "t_s": [0.0], "util_pct": [None], "memory_used_mib": [None]}


def test_a_sampler_s_series_counts_from_the_origin_it_is_given() -> None:
    sampler = GpuSampler(lambda: reading(42.0), interval_s=0.005, origin=time.monotonic() - 100.0).start()
    wait_for(lambda: len(sampler.readings()) >= 3)
    series = sampler.stop().series[0]
    assert all(100.0 <= t < 160.0 for t in series.t_s) and series.t_s == tuple(sorted(series.t_s))
    assert set(series.util_pct) == {42.0}


# --- GPU first contact: GPUs that refuse access, Slurm's numbering, MIG devices --------------------------

U0, U1, U2 = (g.uuid for g in h200s(3))
PCI = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


@pytest.mark.parametrize(
    ("visible", "nvml_uuids", "behind"),
    [(None, [U0, U1, U2], [U0, U1, U2]),
     ("2,0", [U0, U1, U2], [U2, U0]),
     ("0", [None, None, U2], [U2]),  # Slurm: NVML's 0 and 1 refuse access; CUDA counts only the job's own GPU
     ("1,0", [None, U1, U2], [U2, U1]),
     (None, [None, U1, U2], [U1, U2]),
     ("GPU-00000002", [None, None, U2], [U2]),
     ("MIG-GPU-00000001-aaaa-bbbb-cccc-000000000001/1/0", [U0, U1], ["MIG-GPU-00000001-aaaa-bbbb-cccc-000000000001/1/0"]),
     ("00000000:02:00.0,0", [U0, U1], []),  # CUDA takes indices, UUIDs and MIG names, not PCI bus ids: it ignores the rest
     ("3", [U0, U1, U2], [])],
)  # fmt: skip
def test_each_cuda_device_is_matched_to_its_gpu(visible: str | None, nvml_uuids: list[str], behind: list[str]) -> None:
    env = PCI if visible is None else {**PCI, "CUDA_VISIBLE_DEVICES": visible}
    assert visible_gpus(len(behind), nvml_uuids, env) == behind


def test_gpus_that_all_refuse_access_read_as_none_of_ours(fake_nvml: Callable[..., FakeNvml]) -> None:
    fake_nvml([replace(g, denied=True) for g in h200s(2)])
    info = read_nvml_info()
    assert not info.has_gpu
    assert info.describe() == "no NVIDIA GPU this process may use (GPU0, GPU1 refused access: not ours)"


@pytest.mark.parametrize("visible", ["MIG-{gpu}/2/0", "{mig}"], ids=["legacy-MIG-GPU-uuid", "MIG-uuid"])
def test_a_mig_device_named_in_cuda_visible_devices_is_read_not_its_whole_gpu(
    visible: str, fake_nvml: Callable[..., FakeNvml], monkeypatch: pytest.MonkeyPatch
) -> None:
    small = FakeGpu(name="NVIDIA H200 MIG 1g.18gb", uuid="MIG-11111111-2222-3333-4444-555555555555", mig=True, instance=(1, 0))
    large = replace(small, name="NVIDIA H200 MIG 2g.35gb", uuid="MIG-66666666-7777-8888-9999-000000000000", instance=(2, 0))
    small, large = replace(small, memory_total_mib=16_384.0), replace(large, memory_total_mib=32_768.0)
    gpus = h200s(2)
    gpus[1] = replace(gpus[1], slices=(small, large))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible.format(gpu=gpus[1].uuid, mig=large.uuid))
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    fake_nvml(gpus)
    session, reason = NvmlSession.open([0])
    assert session is not None, reason
    (sample,) = session.sample()
    session.close()
    assert (sample.index, sample.util_pct, sample.memory_total_mib) == (0, None, 32_768.0)
