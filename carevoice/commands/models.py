"""`carevoice models`: the catalogue with what is in the cache and the model to use here, and
`models pull NAME`. Returns values; never prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carevoice.engine.catalogue import CATALOGUE, COMPUTE_TYPES, CatalogueModel, find_model
from carevoice.engine.hub import PullProgress, endpoint, pull_model
from carevoice.engine.models import missing_model_files, pulled_dir, resolve_model
from carevoice.engine.nvml import read_nvml_info
from carevoice.errors import CareVoiceError, UsageError
from carevoice.languages import resolve_language

# A model fits a GPU when one decode's estimate takes at most this share of its memory: a run batches
# several chunks, and the desktop (or another job) holds some of it.
GPU_SHARE = 0.5
# Largest first: the first that fits is the one recommended.
MULTILINGUAL_ORDER = ("turbo", "large-v3", "medium", "small", "base")
ENGLISH_ORDER = ("turbo", "medium.en", "small.en", "base.en")
CPU_MODEL = {True: "base.en", False: "base"}  # larger models are several times slower than real time on a CPU


@dataclass(frozen=True)
class Recommendation:
    """The model to use on this machine for the language asked for, and why (for people)."""

    name: str
    reason: str


@dataclass(frozen=True)
class CatalogueRow:
    """One catalogue model and its state in this cache.

    Attributes:
        model: The catalogue entry.
        cached: Where it is on disk, or None.
        missing: The files its cached folder lacks (empty: complete).
    """

    model: CatalogueModel
    cached: Path | None
    missing: tuple[str, ...] = ()

    @property
    def state(self) -> str:
        if self.cached is None:
            return "not in cache"
        return f"incomplete (no {self.missing[0]})" if self.missing else "ready"

    def to_dict(self) -> dict[str, Any]:
        model = self.model
        return {
            "name": model.name,
            "repo": model.repo,
            "languages": model.languages,
            "english_only": model.english_only,
            "parameters_m": model.parameters_m,
            "disk_mb": model.disk_mb,
            "disk_source": model.disk_source.value,
            "gpu_mib": {c: {"mib": model.gpu_mib(c)[0], "source": model.gpu_mib(c)[1].value} for c in COMPUTE_TYPES},
            "licence": model.licence,
            "note": model.note or None,
            "state": self.state,
            "path": str(self.cached) if self.cached else None,
            "missing": list(self.missing),
        }


def recommend(gpu_memory_mib: float | None, language: str | None) -> Recommendation:
    """The catalogue model to use: Breeze-ASR-25 for Taiwanese Mandarin when a GPU holds it, the
    English-only models for English, the largest that fits the GPU, a small one on a CPU.

    Args:
        gpu_memory_mib: The largest GPU's total memory, or None without a GPU.
        language: A --language value (``zh-TW``, ``en``, ...), or None for any.

    Raises:
        UsageError: a language Whisper does not know.
    """
    choice = resolve_language(language) if language else None
    english = choice is not None and choice.code == "en"
    taiwan = choice is not None and choice.code == "zh" and choice.zh_script == "tw"
    if gpu_memory_mib is None:
        name = CPU_MODEL[english]
        why = "no GPU here: larger models run several times slower than real time on a CPU"
        if taiwan:
            why += "; breeze-asr-25 (best for Taiwanese Mandarin) needs a GPU to be quick"
        return Recommendation(name, why)
    room = gpu_memory_mib * GPU_SHARE

    def fits(name: str) -> bool:
        model = find_model(name)
        return model is not None and model.gpu_mib("float16")[0] <= room

    if taiwan and fits("breeze-asr-25"):
        return Recommendation("breeze-asr-25", "Taiwanese Mandarin with English code-switching, written in Traditional characters")
    order = ENGLISH_ORDER if english else MULTILINGUAL_ORDER
    name = next((n for n in order if fits(n)), CPU_MODEL[english])
    what = "English" if english else "any language"
    return Recommendation(name, f"the most accurate for {what} that fits {gpu_memory_mib / 1024:.0f} GiB of GPU memory with room to batch")


def catalogue_rows(cache_dir: Path) -> list[CatalogueRow]:
    """Every catalogue model and its state in ``cache_dir`` (the packaged tiny.en and base count as
    cached). Cheap: assembles the packaged base model at most once, downloads nothing."""
    rows = []
    for model in CATALOGUE:
        folder: Path | None = pulled_dir(model.name, cache_dir)
        if not folder.is_dir():  # type: ignore[union-attr]
            folder = _packaged(model.name, cache_dir)
        rows.append(CatalogueRow(model, folder, tuple(missing_model_files(folder)) if folder else ()))
    return rows


def _packaged(name: str, cache_dir: Path) -> Path | None:
    if name not in ("base", "tiny.en"):
        return None
    try:
        ref = resolve_model(name, cache_dir)
    except CareVoiceError:
        return None
    return Path(ref.load_from) if ref.is_local else None


def pull(name: str, cache_dir: Path, progress: PullProgress) -> Path:
    """Download a catalogue model into the cache (see carevoice.engine.hub.pull_model).

    Raises:
        UsageError: not a catalogue name.
        SetupError: the download failed (what to do is in the hint).
    """
    model = find_model(name)
    if model is None:
        raise UsageError(f"{name!r} is not in the catalogue", f"pick one of: {', '.join(m.name for m in CATALOGUE)} (carevoice models)")
    return pull_model(model, cache_dir, progress)


def hub_address() -> str:
    """The hub pulls download from (for the listing's footer)."""
    return endpoint()


def largest_gpu_mib() -> float | None:
    """The total memory of this machine's largest NVIDIA GPU (NVML), or None without one."""
    devices = [d.memory_total_mib for d in read_nvml_info().devices if d.memory_total_mib]
    return max(devices) if devices else None
