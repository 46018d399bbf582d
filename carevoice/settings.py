"""Frozen option sets for each command, their defaults and environment variables; validated once.

The CLI builds these from flags; everything below it only reads them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from carevoice.chinese import ZhScript
from carevoice.errors import UsageError

ENV_MODEL = "CAREVOICE_MODEL"
ENV_DEVICE = "CAREVOICE_DEVICE"
ENV_CACHE_DIR = "CAREVOICE_CACHE_DIR"

DEFAULT_MODEL = "base"
DEFAULT_BEAM_SIZE = 5
# Chunks per engine call. CPU: beyond 8 the int8 GEMMs are already saturated on a few cores
# and a bigger batch only delays the first outputs; CUDA: big batches keep the GPU busy.
DEFAULT_BATCH_SIZE = {"cpu": 8, "cuda": 16}
DEFAULT_COMPUTE_TYPE = {"cpu": "int8", "cuda": "float16"}


class Device(str, Enum):
    """Where inference runs."""

    AUTO = "auto"
    CUDA = "cuda"
    CPU = "cpu"


class Task(str, Enum):
    """Whisper's two tasks."""

    TRANSCRIBE = "transcribe"
    TRANSLATE = "translate"


class OutputFormat(str, Enum):
    """Files written next to each input."""

    TXT = "txt"
    SRT = "srt"
    VTT = "vtt"
    JSON = "json"
    TSV = "tsv"


SUBTITLE_FORMATS = frozenset({OutputFormat.SRT, OutputFormat.VTT})
DEFAULT_FORMATS = (OutputFormat.TXT, OutputFormat.SRT, OutputFormat.JSON)


def parse_formats(text: str) -> tuple[OutputFormat, ...]:
    """Parse a comma list such as ``"srt,json"`` (or ``"all"``) into formats, keeping order.

    Raises:
        UsageError: an unknown format name.
    """
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return tuple(OutputFormat)
    known = {f.value for f in OutputFormat}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise UsageError(
            f"unknown output format {', '.join(unknown) or repr(text)}",
            f"choose from {', '.join(sorted(known))} or all",
        )
    return tuple(dict.fromkeys(OutputFormat(n) for n in names))


def default_cache_dir() -> Path:
    """Where assembled models live: $CAREVOICE_CACHE_DIR, else $XDG_CACHE_HOME/carevoice."""
    if os.environ.get(ENV_CACHE_DIR):
        return Path(os.environ[ENV_CACHE_DIR])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "carevoice"


@dataclass(frozen=True)
class EngineSettings:
    """How to load and run the model (shared by transcribe, bench and doctor)."""

    model: str = DEFAULT_MODEL
    device: Device = Device.AUTO
    compute_type: str | None = None  # None: DEFAULT_COMPUTE_TYPE for the resolved device
    cpu_threads: int = 0  # 0: let CTranslate2 use every core
    cache_dir: Path = field(default_factory=default_cache_dir)


@dataclass(frozen=True)
class DecodeSettings:
    """What the model is asked to do; these options shape the text, so they key resume."""

    task: Task = Task.TRANSCRIBE
    language: str | None = None  # None: detect per file
    beam_size: int = DEFAULT_BEAM_SIZE
    word_timestamps: bool = True
    batch_size: int | None = None  # None: DEFAULT_BATCH_SIZE for the resolved device
    zh_script: ZhScript = ZhScript.KEEP  # the script Chinese text is written in (carevoice.chinese)

    def fingerprint(self, model_id: str) -> dict[str, Any]:
        """The values that must match for an earlier output to count as finished."""
        return {
            "model": model_id,
            "task": self.task.value,
            "language": self.language,
            "beam_size": self.beam_size,
            "word_timestamps": self.word_timestamps,
            "zh_script": self.zh_script.value,
        }


@dataclass(frozen=True)
class TranscribeSettings:
    """Everything `carevoice transcribe` was asked to do."""

    inputs: tuple[Path, ...]
    output_dir: Path | None = None
    formats: tuple[OutputFormat, ...] = DEFAULT_FORMATS
    engine: EngineSettings = field(default_factory=EngineSettings)
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    overwrite: bool = False
    recursive: bool = True
    decode_workers: int = 0  # 0: derived from the core count
    report_path: Path | None = None

    def validate(self) -> None:
        """Check everything that is cheap to check, before any model is loaded.

        Raises:
            UsageError: the first problem found.
        """
        if not self.inputs:
            raise UsageError("no input files or folders given", "name at least one recording or folder")
        if self.decode.beam_size < 1:
            raise UsageError("--beam-size must be at least 1")
        if self.decode.batch_size is not None and self.decode.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if self.decode_workers < 0:
            raise UsageError("--decode-workers must be 0 (auto) or more")
        if not self.formats:
            raise UsageError("no output format chosen", "pass e.g. -f txt,srt,json")
        if self.output_dir is not None and self.output_dir.exists() and not self.output_dir.is_dir():
            raise UsageError(f"--output-dir {self.output_dir} is not a folder", "name a folder (it is created if missing)")
        if self.decode.language is not None and not self.decode.language.replace("-", "").isalpha():
            raise UsageError(f"--language {self.decode.language!r} is not a language code", "use e.g. en, zh, de")


def parse_devices(text: str) -> tuple[Device, ...]:
    """Parse a comma list such as ``"cuda,cpu"`` into devices, keeping order (``auto`` is not a device to bench).

    Raises:
        UsageError: an unknown or empty device list.
    """
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    known = (Device.CUDA.value, Device.CPU.value)
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise UsageError(f"unknown device {', '.join(unknown) or repr(text)}", "pass --devices cuda,cpu (or one of them)")
    return tuple(dict.fromkeys(Device(n) for n in names))


DEFAULT_GPU_PROBE_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class DoctorSettings:
    """What `carevoice doctor` checks: the model and the output folder a transcribe run would use."""

    output_dir: Path = Path(".")
    engine: EngineSettings = field(default_factory=EngineSettings)
    gpu_timeout_s: float = DEFAULT_GPU_PROBE_TIMEOUT_S
    quick: bool = False  # only the cheap checks (container HEALTHCHECK): no decoding, no inference

    def validate(self) -> None:
        """Raises: UsageError: a bad option."""
        if self.gpu_timeout_s <= 0:
            raise UsageError("--gpu-timeout must be more than 0 seconds")


@dataclass(frozen=True)
class BenchSettings:
    """Everything `carevoice bench` was asked to measure. ``engine.device`` is unused: see ``devices``."""

    inputs: tuple[Path, ...] = ()  # empty: the bundled sample
    devices: tuple[Device, ...] = (Device.CUDA, Device.CPU)
    runs: int = 3
    engine: EngineSettings = field(default_factory=EngineSettings)
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    compare: bool = False  # add plain faster-whisper rows
    recursive: bool = True
    gpu_timeout_s: float = DEFAULT_GPU_PROBE_TIMEOUT_S

    def validate(self) -> None:
        """Raises: UsageError: the first bad option."""
        if self.runs < 1:
            raise UsageError("--runs must be at least 1")
        if not self.devices or Device.AUTO in self.devices:
            raise UsageError("name the devices to compare", "pass --devices cuda,cpu (or one of them)")
        if self.decode.beam_size < 1:
            raise UsageError("--beam-size must be at least 1")
        if self.decode.batch_size is not None and self.decode.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if self.decode.language is not None and not self.decode.language.replace("-", "").isalpha():
            raise UsageError(f"--language {self.decode.language!r} is not a language code", "use e.g. en, zh, de")
        if self.gpu_timeout_s <= 0:
            raise UsageError("--gpu-timeout must be more than 0 seconds")
