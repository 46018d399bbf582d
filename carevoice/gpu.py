"""NVIDIA GPU facts: NVML device information, a background utilisation sampler, and a CUDA
inference probe that runs in a child process. Nothing here prints.

Without an NVIDIA driver every entry point still works: it reports "no NVIDIA GPU (NVML
unavailable: <reason>)" as data, never raises, and the sampler starts no thread at all.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

DEFAULT_INTERVAL_S = 0.5
MIB = 1024 * 1024
# CTranslate2 4.x is built against CUDA 12 and opens cuBLAS only when the first GEMM runs; when
# the library is missing it prints "Library libcublas.so.12 is not found" and aborts the process.
CUBLAS_LIBRARY = "libcublas.so.12"
DEFAULT_PROBE_TIMEOUT_S = 180.0


def unavailable_message(reason: str) -> str:
    """The one line shown when there is no usable NVML (no driver, no GPU, no nvidia-ml-py)."""
    return f"no NVIDIA GPU (NVML unavailable: {reason})"


@dataclass(frozen=True)
class GpuSample:
    """One reading of one GPU, by its CUDA index (as --gpus and CUDA_VISIBLE_DEVICES count). Fields
    a GPU does not report are None, shown as n/a (a MIG slice reports no utilisation; restricted
    permissions can hide memory too)."""

    index: int
    util_pct: float | None
    memory_used_mib: float | None
    memory_total_mib: float | None
    power_w: float | None = None
    temperature_c: float | None = None
    sm_clock_mhz: float | None = None
    memory_clock_mhz: float | None = None


@dataclass(frozen=True)
class GpuDevice:
    """Static facts about one GPU plus its load at the moment it was read (NVML's index)."""

    index: int
    name: str
    memory_total_mib: float | None
    memory_used_mib: float | None
    util_pct: float | None
    uuid: str = ""
    compute_capability: str | None = None  # e.g. "12.0"

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "uuid": self.uuid or None,
            "compute_capability": self.compute_capability,
            "memory_total_mib": _rounded(self.memory_total_mib, 0),
            "memory_used_mib": _rounded(self.memory_used_mib, 0),
            "util_pct": self.util_pct,
        }


@dataclass(frozen=True)
class NvmlInfo:
    """What NVML says about this machine.

    Attributes:
        available: NVML loaded and initialised.
        reason: Why it is unavailable (empty when available).
        driver_version: e.g. "550.54.15".
        cuda_driver_version: Highest CUDA version the driver supports, e.g. "12.4".
        devices: Every GPU NVML sees.
    """

    available: bool
    reason: str = ""
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    devices: tuple[GpuDevice, ...] = ()

    @property
    def has_gpu(self) -> bool:
        return self.available and bool(self.devices)

    def describe(self) -> str:
        """One line for people: the GPUs, or why there are none."""
        if not self.available:
            return unavailable_message(self.reason)
        if not self.devices:
            return f"no NVIDIA GPU (NVML found no device; driver {self.driver_version})"
        gpus = ", ".join(f"{d.name} ({gib(d.memory_total_mib, '.0f')} GiB)" for d in self.devices)
        return f"{gpus}; driver {self.driver_version}, CUDA {self.cuda_driver_version or '?'}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "available": self.available,
            "reason": self.reason or None,
            "driver_version": self.driver_version,
            "cuda_driver_version": self.cuda_driver_version,
            "devices": [d.to_dict() for d in self.devices],
        }


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _nvml_reason(exc: BaseException) -> str:
    if isinstance(exc, ImportError):
        return "nvidia-ml-py is not installed"
    text = str(exc).strip()
    return text if text else type(exc).__name__


def _optional(read: Callable[[], float]) -> float | None:
    """A reading some GPUs do not support (power, clocks on some boards, MIG slices)."""
    try:
        return float(read())
    except Exception:
        return None


def visible_gpus(cuda_count: int, nvml_uuids: Sequence[str], env: dict[str, str] | None = None) -> list[str | None]:
    """The UUID of the physical GPU behind each CUDA device index (None where it cannot be told).

    NVML numbers GPUs in PCI bus order and ignores CUDA_VISIBLE_DEVICES; CUDA renumbers the GPUs
    that variable lists (indices, or UUIDs and their prefixes, or MIG UUIDs), in its own order
    unless CUDA_DEVICE_ORDER is PCI_BUS_ID (CareVoice sets that before CUDA starts, when it is
    not set). So GPU 1 of a run can be NVML's GPU 3, another tenant's GPU 1.

    Args:
        cuda_count: How many CUDA devices there are.
        nvml_uuids: Every GPU's UUID, in NVML (PCI) order.
        env: The environment (default: this process's).
    """
    env = dict(os.environ) if env is None else env
    pci_order = env.get("CUDA_DEVICE_ORDER", "FASTEST_FIRST") == "PCI_BUS_ID"
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        physical: list[str | None] = list(nvml_uuids) if pci_order or len(nvml_uuids) == 1 else [None] * len(nvml_uuids)
    else:
        physical = []
        for entry in (e.strip() for e in listed.split(",")):
            if entry.isdigit() and int(entry) < len(nvml_uuids):
                physical.append(nvml_uuids[int(entry)] if pci_order or len(nvml_uuids) == 1 else None)
            elif entry.startswith(("GPU-", "MIG-")):
                matches = [u for u in nvml_uuids if u.startswith(entry)]
                physical.append(matches[0] if len(matches) == 1 else (entry if entry.startswith("MIG-") else None))
            else:
                break  # CUDA ignores an invalid entry and every one after it
    return (physical + [None] * cuda_count)[:cuda_count]


class _Nvml:
    """An initialised NVML session over some GPUs; :meth:`open` returns None (with a reason) when
    there is none. ``handles``: (label, handle) — the label is the index a run calls the GPU by."""

    def __init__(self, nvml: Any, handles: list[tuple[int, Any]]) -> None:
        self.nvml = nvml
        self.handles = handles

    @classmethod
    def open(cls, cuda_indices: Sequence[int] | None = None) -> tuple[_Nvml | None, str]:
        """Every GPU NVML sees, by NVML index; or the GPUs behind these CUDA device indices (a
        GPU that cannot be matched to one is left out: its numbers would be another GPU's)."""
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ImportError, ...
            return None, _nvml_reason(exc)
        try:
            every = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            if cuda_indices is None:
                return cls(pynvml, list(enumerate(every))), ""
            uuids = [_text(pynvml.nvmlDeviceGetUUID(h)) for h in every]
            behind = visible_gpus(max(cuda_indices, default=-1) + 1, uuids)
            handles = []
            for index in cuda_indices:
                uuid = behind[index]
                if uuid is None:
                    continue
                handles.append((index, every[uuids.index(uuid)] if uuid in uuids else pynvml.nvmlDeviceGetHandleByUUID(uuid)))
        except Exception as exc:
            cls._shutdown(pynvml)
            return None, _nvml_reason(exc)
        return cls(pynvml, handles), ""

    @staticmethod
    def _shutdown(nvml: Any) -> None:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass

    def close(self) -> None:
        self._shutdown(self.nvml)

    def sample(self) -> list[GpuSample]:
        """Read every GPU once. A reading a GPU refuses (a MIG slice, restricted permissions) is
        None; when not one reading of any GPU comes back, the driver is gone: NVMLError."""
        nvml = self.nvml
        samples, failures = [], []

        def read(call: Callable[[], float]) -> float | None:
            try:
                return float(call())
            except Exception as exc:
                failures.append(exc)
                return None

        for index, handle in self.handles:
            try:
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception as exc:
                failures.append(exc)
                memory = None
            samples.append(
                GpuSample(
                    index=index,
                    util_pct=read(lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
                    memory_used_mib=memory.used / MIB if memory is not None else None,
                    memory_total_mib=memory.total / MIB if memory is not None else None,
                    power_w=read(lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0),
                    temperature_c=read(lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
                    sm_clock_mhz=read(lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM)),
                    memory_clock_mhz=read(lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM)),
                )
            )
        if failures and len(failures) == 6 * len(self.handles):
            raise failures[-1]
        return samples

    def info(self) -> NvmlInfo:
        nvml = self.nvml
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        cuda = _optional(nvml.nvmlSystemGetCudaDriverVersion_v2)
        cuda_text = f"{int(cuda) // 1000}.{int(cuda) % 1000 // 10}" if cuda else None
        now = {s.index: s for s in self.sample()}
        devices = []
        for i, handle in self.handles:
            try:
                uuid = _text(nvml.nvmlDeviceGetUUID(handle))
            except Exception:
                uuid = ""
            try:
                major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
                capability: str | None = f"{major}.{minor}"
            except Exception:
                capability = None
            devices.append(
                GpuDevice(i, _text(nvml.nvmlDeviceGetName(handle)), now[i].memory_total_mib, now[i].memory_used_mib, now[i].util_pct, uuid, capability)
            )
        return NvmlInfo(True, "", driver, cuda_text, tuple(devices))


def read_nvml_info() -> NvmlInfo:
    """Driver version and each GPU's name, memory and utilisation now. Never raises."""
    session, reason = _Nvml.open()
    if session is None:
        return NvmlInfo(False, reason)
    try:
        return session.info()
    except Exception as exc:
        return NvmlInfo(False, _nvml_reason(exc))
    finally:
        session.close()


T = TypeVar("T")


def busiest(devices: Sequence[T], load: Callable[[T], tuple[float | None, float | None]]) -> T | None:
    """The one rule for "the busiest GPU" (live progress, summaries, bench): the highest
    utilisation, then the most memory in use, then the lowest index; n/a counts as 0."""
    if not devices:
        return None
    return max(devices, key=lambda d: tuple(v or 0.0 for v in load(d)))  # the first of equals: the lowest index


def gib(mib: float | None, fmt: str = ".1f") -> str:
    """MiB as GiB for people; "n/a" for a reading the GPU did not give."""
    return "n/a" if mib is None else format(mib / 1024, fmt)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (a value that was actually observed); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True)
class DeviceStats:
    """Utilisation of one GPU over a sampled stretch of time."""

    index: int
    samples: int
    util_mean_pct: float | None  # None: the GPU reports no utilisation (e.g. a MIG slice)
    util_p95_pct: float | None
    util_peak_pct: float | None
    memory_used_mean_mib: float | None  # None: the GPU reports no memory (restricted permissions)
    memory_used_peak_mib: float | None
    memory_total_mib: float | None
    power_mean_w: float | None = None
    power_peak_w: float | None = None
    temperature_peak_c: float | None = None
    sm_clock_mean_mhz: float | None = None
    memory_clock_mean_mhz: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "samples": self.samples,
            "util_mean_pct": _rounded(self.util_mean_pct),
            "util_p95_pct": _rounded(self.util_p95_pct),
            "util_peak_pct": _rounded(self.util_peak_pct),
            "memory_used_mean_mib": _rounded(self.memory_used_mean_mib, 0),
            "memory_used_peak_mib": _rounded(self.memory_used_peak_mib, 0),
            "memory_total_mib": _rounded(self.memory_total_mib, 0),
            "power_mean_w": _rounded(self.power_mean_w),
            "power_peak_w": _rounded(self.power_peak_w),
            "temperature_peak_c": _rounded(self.temperature_peak_c, 0),
            "sm_clock_mean_mhz": _rounded(self.sm_clock_mean_mhz, 0),
            "memory_clock_mean_mhz": _rounded(self.memory_clock_mean_mhz, 0),
        }


def summarise(readings: Sequence[Sequence[GpuSample]]) -> tuple[DeviceStats, ...]:
    """Per-GPU mean / p95 / peak over a series of readings (each reading covers every GPU)."""
    by_index: dict[int, list[GpuSample]] = {}
    for reading in readings:
        for sample in reading:
            by_index.setdefault(sample.index, []).append(sample)
    stats = []
    for index, samples in sorted(by_index.items()):
        util = [s.util_pct for s in samples if s.util_pct is not None]
        used = [s.memory_used_mib for s in samples if s.memory_used_mib is not None]
        total = [s.memory_total_mib for s in samples if s.memory_total_mib is not None]
        power = [s.power_w for s in samples if s.power_w is not None]
        temperature = [s.temperature_c for s in samples if s.temperature_c is not None]
        sm_clock = [s.sm_clock_mhz for s in samples if s.sm_clock_mhz is not None]
        memory_clock = [s.memory_clock_mhz for s in samples if s.memory_clock_mhz is not None]
        stats.append(
            DeviceStats(
                index=index,
                samples=len(samples),
                util_mean_pct=_mean(util),
                util_p95_pct=percentile(util, 95) if util else None,
                util_peak_pct=max(util) if util else None,
                memory_used_mean_mib=_mean(used),
                memory_used_peak_mib=max(used) if used else None,
                memory_total_mib=max(total) if total else None,
                power_mean_w=_mean(power),
                power_peak_w=max(power) if power else None,
                temperature_peak_c=max(temperature) if temperature else None,
                sm_clock_mean_mhz=_mean(sm_clock),
                memory_clock_mean_mhz=_mean(memory_clock),
            )
        )
    return tuple(stats)


MAX_SERIES_POINTS = 600


@dataclass(frozen=True)
class DeviceSeries:
    """One GPU over time, for charts: utilisation (mean) and memory used (peak) per time step.

    ``t_s`` counts from the sampler's origin (a run's start), so it lines up with the run's timeline.
    """

    index: int
    t_s: tuple[float, ...]
    util_pct: tuple[float | None, ...]
    memory_used_mib: tuple[float | None, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "t_s": [round(t, 2) for t in self.t_s],
            "util_pct": [_rounded(u) for u in self.util_pct],
            "memory_used_mib": [_rounded(m, 0) for m in self.memory_used_mib],
        }


def time_series(readings: Sequence[tuple[float, Sequence[GpuSample]]], max_points: int = MAX_SERIES_POINTS) -> tuple[DeviceSeries, ...]:
    """Each GPU's readings as a series of at most ``max_points`` steps: consecutive readings are
    merged (mean utilisation, peak memory, time of the first) when there are more."""
    step = max(1, -(-len(readings) // max_points))
    by_index: dict[int, list[tuple[float, GpuSample]]] = {}
    for t, reading in readings:
        for sample in reading:
            by_index.setdefault(sample.index, []).append((t, sample))
    series = []
    for index, samples in sorted(by_index.items()):
        times, util, memory = [], [], []
        for start in range(0, len(samples), step):
            group = samples[start : start + step]
            utils = [s.util_pct for _, s in group if s.util_pct is not None]
            used = [s.memory_used_mib for _, s in group if s.memory_used_mib is not None]
            times.append(group[0][0])
            util.append(_mean(utils))
            memory.append(max(used) if used else None)
        series.append(DeviceSeries(index, tuple(times), tuple(util), tuple(memory)))
    return tuple(series)


@dataclass(frozen=True)
class GpuStats:
    """What a sampler saw: per-GPU statistics, or why there was nothing to see.

    Attributes:
        available: A GPU could be sampled.
        reason: Why not (or why sampling ended early: a GPU that stopped answering).
        interval_s: Time between readings.
        duration_s: How long the sampler ran.
        devices: One entry per GPU, in NVML index order.
        series: Each GPU's utilisation and memory over time (for charts).
    """

    available: bool
    reason: str = ""
    interval_s: float = DEFAULT_INTERVAL_S
    duration_s: float = 0.0
    devices: tuple[DeviceStats, ...] = ()
    series: tuple[DeviceSeries, ...] = ()

    @property
    def busiest(self) -> DeviceStats | None:
        """The GPU with the highest mean utilisation (the one doing the work)."""
        return busiest(self.devices, lambda d: (d.util_mean_pct, d.memory_used_peak_mib))

    def to_dict(self) -> dict[str, Any]:
        return {
            "available": self.available,
            "reason": self.reason or None,
            "interval_s": self.interval_s,
            "duration_s": round(self.duration_s, 3),
            "devices": [d.to_dict() for d in self.devices],
            "series": [d.to_dict() for d in self.series],
        }


QueryFn = Callable[[], Sequence[GpuSample]]


class GpuSampler:
    """Reads every GPU each ``interval_s`` in a daemon thread while a run goes on.

    Use as a context manager (or :meth:`start` / :meth:`stop` in a ``finally``). With no NVML
    it starts no thread and :attr:`available` is False with :attr:`reason` set. Errors while
    sampling end the sampling, never the run.

    Args:
        query: Returns one reading of every GPU; default: NVML. Tests inject a fake.
        interval_s: Seconds between readings.
        on_sample: Called from the sampler thread with each reading (e.g. a live display);
            its exceptions are swallowed.
        cuda_indices: The GPUs to read, by CUDA index (the run's own); None: every GPU NVML sees.
        origin: The time.monotonic() the series' times count from (default: when sampling starts).
    """

    def __init__(
        self,
        query: QueryFn | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
        on_sample: Callable[[Sequence[GpuSample]], None] | None = None,
        cuda_indices: Sequence[int] | None = None,
        origin: float | None = None,
    ) -> None:
        self._query = query
        self.origin = origin
        self.cuda_indices = cuda_indices
        self.interval_s = interval_s
        self.on_sample = on_sample
        self.available = False
        self.reason = ""
        self._session: _Nvml | None = None
        self._readings: list[tuple[GpuSample, ...]] = []
        self._times: list[float] = []  # time.monotonic() of each reading
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_at = 0.0
        self._stopped_at: float | None = None

    def start(self) -> GpuSampler:
        """Take the first reading now and keep sampling in the background."""
        if self._thread is not None:
            return self
        if self._query is None:
            self._session, reason = _Nvml.open(self.cuda_indices)
            if self._session is None:
                self.reason = reason
                return self
            if not self._session.handles:
                self._session.close()
                self._session = None
                self.reason = "NVML found no device" if self.cuda_indices is None else "NVML cannot tell which GPUs this run uses"
                return self
            self._query = self._session.sample
        self.available = True
        self._started_at = time.monotonic()
        self._sample_once()
        self._thread = threading.Thread(target=self._loop, name="carevoice-gpu-sampler", daemon=True)
        self._thread.start()
        return self

    def _sample_once(self) -> bool:
        assert self._query is not None
        try:
            reading = tuple(self._query())
        except Exception as exc:  # a GPU that fell off the bus ends sampling, not the run
            self.reason = f"sampling stopped: {_nvml_reason(exc)}"
            return False
        with self._lock:
            self._readings.append(reading)
            self._times.append(time.monotonic())
        if self.on_sample is not None:
            try:
                self.on_sample(reading)
            except Exception:
                pass
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            if not self._sample_once():
                return

    def stop(self) -> GpuStats:
        """Stop sampling (idempotent) and return the statistics."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, self.interval_s * 2))
        if self._stopped_at is None and self.available:
            self._stopped_at = time.monotonic()
        if self._session is not None:
            self._session.close()
            self._session = None
        return self.stats()

    def __enter__(self) -> GpuSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def latest(self) -> tuple[GpuSample, ...]:
        """The most recent reading (empty before the first)."""
        with self._lock:
            return self._readings[-1] if self._readings else ()

    def readings(self) -> list[tuple[GpuSample, ...]]:
        with self._lock:
            return list(self._readings)

    def stats(self) -> GpuStats:
        """Statistics over every reading so far."""
        if not self.available:
            return GpuStats(False, self.reason, self.interval_s)
        end = self._stopped_at if self._stopped_at is not None else time.monotonic()
        with self._lock:
            readings, times = list(self._readings), list(self._times)
        origin = self._started_at if self.origin is None else self.origin
        timed = [(t - origin, reading) for t, reading in zip(times, readings)]
        return GpuStats(True, self.reason, self.interval_s, end - self._started_at, summarise(readings), time_series(timed))


def load_cublas() -> tuple[bool, str]:
    """Whether the dynamic loader finds the cuBLAS CTranslate2 needs: (loads, detail)."""
    import ctypes

    if not sys.platform.startswith("linux"):
        return False, f"not checked on {sys.platform}"
    try:
        ctypes.CDLL(CUBLAS_LIBRARY)
    except OSError as exc:
        return False, str(exc).splitlines()[0][:200]
    return True, f"{CUBLAS_LIBRARY} loads"


# Runs in a child process: a missing cuBLAS can abort the process that touches it.
_PROBE_SCRIPT = """
import json, sys, time
import numpy as np
from faster_whisper import WhisperModel
model_dir, compute_type, audio, download_root, device_index = sys.argv[1:6]
started = time.monotonic()
model = WhisperModel(model_dir, device="cuda", device_index=int(device_index), compute_type=compute_type, download_root=download_root or None)
loaded = time.monotonic()
samples = np.fromfile(audio, dtype=np.float32) if audio else np.zeros(16000, dtype=np.float32)
segments, _ = model.transcribe(samples, beam_size=1, language="en" if model.model.is_multilingual else None)
count = sum(1 for _ in segments)  # the lazy generator is where inference runs
print(json.dumps({"load_s": loaded - started, "infer_s": time.monotonic() - loaded, "segments": count}))
"""


@dataclass(frozen=True)
class CudaProbe:
    """Result of a tiny real inference on the GPU in a child process."""

    ok: bool
    detail: str
    elapsed_s: float = 0.0
    results: dict[str, Any] = field(default_factory=dict)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith(("  File ", "Traceback"))]
    return lines[-1][:200] if lines else ""


def probe_cuda_inference(
    model_dir: str,
    compute_type: str,
    audio: Path | None = None,
    timeout_s: float = DEFAULT_PROBE_TIMEOUT_S,
    download_root: str | None = None,
    device_index: int = 0,
) -> CudaProbe:
    """Load the model on one CUDA device and transcribe a second of audio, in a child process.

    Args:
        model_dir: A model faster-whisper can load (a folder or a cached hub name).
        compute_type: e.g. "float16".
        audio: Raw float32 16 kHz mono samples; default: one second of silence.
        timeout_s: Kill the child after this long.
        download_root: Where a hub model was cached (as in Engine.load); None for a local folder.
        device_index: The CUDA device.

    Returns:
        ok, and one line naming what failed (the signal, the last error line) or how long it took.
    """
    command = [sys.executable, "-c", _PROBE_SCRIPT, model_dir, compute_type, str(audio) if audio else "", download_root or "", str(device_index)]
    started = time.monotonic()
    try:
        proc = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return CudaProbe(False, f"the GPU test did not finish within {timeout_s:g} s and was stopped", timeout_s)
    except OSError as exc:
        return CudaProbe(False, f"cannot start {sys.executable} ({exc.strerror})")
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        if proc.returncode < 0:
            try:
                how = f"was killed by {signal.Signals(-proc.returncode).name}"
            except ValueError:
                how = f"was killed by signal {-proc.returncode}"
        else:
            how = f"exited with status {proc.returncode}"
        last = _last_line(proc.stderr)
        return CudaProbe(False, f"the GPU test process {how}" + (f": {last}" if last else ""), elapsed)
    try:
        results = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return CudaProbe(False, "the GPU test process printed no result", elapsed)
    return CudaProbe(
        True,
        f"{compute_type} inference ran (load {results['load_s']:.1f} s, 1 s of audio in {results['infer_s']:.2f} s)",
        elapsed,
        results,
    )
