"""What makes the words besides the model and the options: the versions of the libraries that decode
and run Whisper, the compute type, and the path the arithmetic takes (the instruction set
CTranslate2 dispatches to on this CPU, or the GPU). Records carry it (docs/reruns.md says what an
upgrade or a move to other hardware does to finished files), and bench reports it.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from carevoice.engine.nvml import read_nvml_info, visible_gpus

# The packages whose versions can change a transcript's words (faster-whisper's decoding code,
# CTranslate2's kernels, onnxruntime's Silero VAD, numpy's feature extraction).
WORD_PACKAGES = ("ctranslate2", "faster-whisper", "onnxruntime", "numpy")
ISA_ENV = "CT2_FORCE_CPU_ISA"  # CTranslate2's own override of its CPU dispatch


def package_versions(names: Sequence[str] = WORD_PACKAGES) -> dict[str, str | None]:
    """Installed versions by distribution name (None: not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags of the first processor in a /proc/cpuinfo text."""
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_isa(flags: frozenset[str], machine: str, forced: str | None = None) -> str:
    """The instruction set CTranslate2 dispatches its CPU kernels to, as it chooses it
    (CTranslate2 src/cpu/cpu_isa.cc: ``CT2_FORCE_CPU_ISA`` when set, else the widest of AVX512,
    AVX2, AVX the CPU has on x86-64; NEON on ARM64; else GENERIC)."""
    if forced:
        return forced.strip().upper()
    if machine in ("aarch64", "arm64"):
        return "NEON"
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags:
        return "AVX512"
    if {"avx2", "fma"} <= flags:
        return "AVX2"
    if "avx" in flags:
        return "AVX"
    return "GENERIC"


@lru_cache(maxsize=1)
def this_cpu_isa() -> str:
    """:func:`cpu_isa` on this machine (read once)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = cpu_flags(handle.read())
    except OSError:
        flags = frozenset()
    return cpu_isa(flags, platform.machine().lower(), os.environ.get(ISA_ENV))


def engine_build(device: str, compute_type: str, gpu_name: str | None = None) -> str:
    """One engine's arithmetic path: ``cpu int8 AVX512``, ``cuda float16 NVIDIA H100 80GB HBM3``."""
    where = this_cpu_isa() if device == "cpu" else (gpu_name or "GPU")
    return f"{device} {compute_type} {where}"


def words_build(engines: Sequence[str], ffmpeg_version: str | None) -> dict[str, Any]:
    """What a run's words were made with besides model and options, for its records.

    Args:
        engines: Each engine's :func:`engine_build` (a file's chunks may go to any of them).
        ffmpeg_version: The ffmpeg that decoded the recordings (None: not known).
    """
    return {**package_versions(), "ffmpeg": ffmpeg_version, "engines": sorted(set(engines))}


def cuda_names(indices: Sequence[int]) -> dict[int, str]:
    """The name of the GPU behind each CUDA index (NVML's, matched by UUID where it can be told),
    with its compute capability; ``GPU <index>`` where NVML cannot say."""
    info = read_nvml_info()
    by_uuid = {d.uuid: d for d in info.devices if d.uuid}
    behind = visible_gpus(max(indices, default=-1) + 1, [d.uuid for d in info.devices])
    names = {}
    for index in indices:
        device = by_uuid.get(behind[index] or "")
        if device is None:
            names[index] = f"GPU {index}"
        else:
            names[index] = device.name + (f" (compute capability {device.compute_capability})" if device.compute_capability else "")
    return names
