"""What a bench measured: per device and mode, the load and the timed runs (end to end and
inference-only), GPU utilisation, the speedups between rows, and the machine and versions it ran on.
Shapes only: carevoice.commands.bench makes them, carevoice.render.bench_tables words them.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from carevoice import __version__
from carevoice.settings import Device

if TYPE_CHECKING:
    from carevoice.engine.gpu_stats import GpuStats


class BenchMode(str, Enum):
    """What is timed."""

    CAREVOICE = "carevoice"  # cross-file batched pipeline
    FASTER_WHISPER = "faster-whisper"  # plain WhisperModel.transcribe, one file after another


@dataclass(frozen=True)
class BenchFile:
    """One input that was benchmarked."""

    path: Path
    duration_s: float


@dataclass(frozen=True)
class Timing:
    """Wall times of the timed runs of one measure."""

    runs_s: tuple[float, ...] = ()

    @property
    def min_s(self) -> float | None:
        return min(self.runs_s) if self.runs_s else None

    @property
    def median_s(self) -> float | None:
        return statistics.median(self.runs_s) if self.runs_s else None

    def rtfx(self, audio_s: float) -> float | None:
        """Audio seconds per wall second, at the median run."""
        median = self.median_s
        return audio_s / median if median else None

    def per_s(self, count: int) -> float | None:
        median = self.median_s
        return count / median if median else None

    def to_dict(self, audio_s: float, files: int) -> dict[str, Any]:
        return {
            "runs_s": [round(t, 4) for t in self.runs_s],
            "min_s": _round(self.min_s, 4),
            "median_s": _round(self.median_s, 4),
            "rtfx": _round(self.rtfx(audio_s), 3),
            "files_per_s": _round(self.per_s(files), 3),
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


@dataclass
class BenchRow:
    """One device and mode: why it could not run, or its timings.

    Attributes:
        reason: Why the row is unavailable (no GPU, CUDA broken, load failed, a run failed).
        segments: Segments produced by the last timed end-to-end run (proof that work was done).
        gpu: NVML utilisation during the timed runs (CUDA rows).
    """

    mode: BenchMode
    device: Device
    audio_s: float
    files: int
    compute_type: str | None = None
    batch_size: int | None = None
    available: bool = False
    reason: str = ""
    load_s: float | None = None
    warmup_s: float | None = None
    e2e: Timing = field(default_factory=Timing)
    inference: Timing = field(default_factory=Timing)
    segments: int = 0
    gpu: GpuStats | None = None

    @property
    def key(self) -> str:
        return f"{self.mode.value}/{self.device.value}"

    @property
    def rtfx_e2e(self) -> float | None:
        return self.e2e.rtfx(self.audio_s)

    @property
    def rtfx_inference(self) -> float | None:
        return self.inference.rtfx(self.audio_s)

    @property
    def files_per_s(self) -> float | None:
        return self.e2e.per_s(self.files)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "device": self.device.value,
            "compute_type": self.compute_type,
            "batch_size": self.batch_size,
            "available": self.available,
            "reason": self.reason or None,
            "load_s": _round(self.load_s, 4),
            "warmup_s": _round(self.warmup_s, 4),
            "e2e": self.e2e.to_dict(self.audio_s, self.files),
            "inference": self.inference.to_dict(self.audio_s, self.files),
            "segments": self.segments,
            "gpu": self.gpu.to_dict() if self.gpu is not None else None,
        }


@dataclass(frozen=True)
class Speedup:
    """How many times faster one row is than another, at the median, on the same files."""

    label: str
    measure: str  # "e2e" or "inference"
    faster: str  # row key
    slower: str
    ratio: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "measure": self.measure, "faster": self.faster, "slower": self.slower, "ratio": round(self.ratio, 3)}


def speedups(rows: Sequence[BenchRow]) -> list[Speedup]:
    """GPU over CPU for each mode, and CareVoice over plain faster-whisper for each device."""
    done = {(r.mode, r.device): r for r in rows if r.available}
    pairs = [
        (f"GPU/CPU ({mode.value})", done.get((mode, Device.CUDA)), done.get((mode, Device.CPU))) for mode in BenchMode
    ] + [
        (f"CareVoice/faster-whisper ({device.value})", done.get((BenchMode.CAREVOICE, device)), done.get((BenchMode.FASTER_WHISPER, device)))
        for device in (Device.CUDA, Device.CPU)
    ]
    result = []
    for label, fast, slow in pairs:
        if fast is None or slow is None:
            continue
        for measure in ("e2e", "inference"):
            fast_s, slow_s = getattr(fast, measure).median_s, getattr(slow, measure).median_s
            if fast_s and slow_s:
                result.append(Speedup(label, measure, fast.key, slow.key, slow_s / fast_s))
    return result


@dataclass
class BenchResult:
    """Everything a bench run measured, with the facts needed to compare two machines."""

    settings: dict[str, Any]
    versions: dict[str, str | None]
    hardware: dict[str, Any]
    files: list[BenchFile]
    skipped: list[tuple[Path, str]]
    rows: list[BenchRow]
    gpu_note: str = ""  # "no NVIDIA GPU (NVML unavailable: ...)" or the GPUs, said once
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def audio_s(self) -> float:
        return sum(f.duration_s for f in self.files)

    @property
    def any_device_works(self) -> bool:
        return any(r.available and r.mode is BenchMode.CAREVOICE for r in self.rows)

    @property
    def speedups(self) -> list[Speedup]:
        return speedups(self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "carevoice_version": __version__,
            "created": self.created,
            "versions": self.versions,
            "hardware": self.hardware,
            "settings": self.settings,
            "audio_s": round(self.audio_s, 3),
            "files": [{"file": str(f.path), "duration_s": round(f.duration_s, 3)} for f in self.files],
            "skipped_files": [{"file": str(p), "reason": why} for p, why in self.skipped],
            "rows": [r.to_dict() for r in self.rows],
            "speedups": [s.to_dict() for s in self.speedups],
        }
