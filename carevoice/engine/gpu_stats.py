"""GPU utilisation over a run: a background sampler of NVML readings, and their statistics
(mean, p95, peak per device) and time series for reports. Without NVML the sampler starts no thread.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from carevoice.engine.nvml import GpuSample, NvmlSession, nvml_reason, rounded

DEFAULT_INTERVAL_S = 0.5


T = TypeVar("T")


def busiest(devices: Sequence[T], load: Callable[[T], tuple[float | None, float | None]]) -> T | None:
    """The one rule for "the busiest GPU" (live progress, summaries, bench): the highest
    utilisation, then the most memory in use, then the lowest index; n/a counts as 0."""
    if not devices:
        return None
    return max(devices, key=lambda d: tuple(v or 0.0 for v in load(d)))  # the first of equals: the lowest index


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (a value that was actually observed); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


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
            "util_mean_pct": rounded(self.util_mean_pct),
            "util_p95_pct": rounded(self.util_p95_pct),
            "util_peak_pct": rounded(self.util_peak_pct),
            "memory_used_mean_mib": rounded(self.memory_used_mean_mib, 0),
            "memory_used_peak_mib": rounded(self.memory_used_peak_mib, 0),
            "memory_total_mib": rounded(self.memory_total_mib, 0),
            "power_mean_w": rounded(self.power_mean_w),
            "power_peak_w": rounded(self.power_peak_w),
            "temperature_peak_c": rounded(self.temperature_peak_c, 0),
            "sm_clock_mean_mhz": rounded(self.sm_clock_mean_mhz, 0),
            "memory_clock_mean_mhz": rounded(self.memory_clock_mean_mhz, 0),
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
            "util_pct": [rounded(u) for u in self.util_pct],
            "memory_used_mib": [rounded(m, 0) for m in self.memory_used_mib],
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
        self._session: NvmlSession | None = None
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
            self._session, reason = NvmlSession.open(self.cuda_indices)
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
            self.reason = f"sampling stopped: {nvml_reason(exc)}"
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
