"""What makes the words besides the model and the options: the versions of the libraries that decode
and run Whisper, the compute type, and the path the arithmetic takes (the instruction set
CTranslate2's kernels dispatch to on this CPU and the library its matrix products run in, or the
GPU). Records carry it (docs/reruns.md says what an
upgrade or a move to other hardware does to finished files), and bench reports it.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from carevoice.engine import nvml

# The packages whose versions can change a transcript's words (faster-whisper's decoding code,
# CTranslate2's kernels, onnxruntime's Silero VAD, numpy's feature extraction).
WORD_PACKAGES = ("ctranslate2", "faster-whisper", "onnxruntime", "numpy")
ISA_ENV = "CT2_FORCE_CPU_ISA"  # CTranslate2's own override of its CPU dispatch


def package_versions(names: Sequence[str] = WORD_PACKAGES) -> dict[str, str | None]:
    """Installed versions by distribution name (None: not installed)."""
    return {name: installed_version(name) for name in names}


@lru_cache(maxsize=None)
def installed_version(name: str) -> str | None:
    """A distribution's installed version (None: not installed), asked once per process: a watcher
    makes a run (and its build) for every set of files."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_facts(cpuinfo: str) -> tuple[str, frozenset[str]]:
    """The vendor and the feature flags of the first processor in a /proc/cpuinfo text."""
    vendor, flags = "", frozenset[str]()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "vendor_id" and not vendor:
            vendor = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = frozenset(value.split())
        elif not line.strip() and (vendor or flags):
            break  # the first processor's block ends
    return vendor, flags


def cpu_isa(flags: frozenset[str], machine: str, forced: str | None = None) -> str:
    """The instruction set CTranslate2's own CPU kernels dispatch to, as it chooses it
    (src/cpu/cpu_isa.cc): ``CT2_FORCE_CPU_ISA`` when set; else AVX2, AVX or GENERIC on x86-64 —
    AVX512 is used only when forced —, NEON on ARM64."""
    if forced:
        return forced.strip()
    if machine in ("aarch64", "arm64"):
        return "NEON"
    if "avx2" in flags:
        return "AVX2"
    if "avx" in flags:
        return "AVX"
    return "GENERIC"


# oneDNN's names for what its kernels may use, widest first, and the CPU flags each needs.
ONEDNN_ISAS = (
    ("avx512_core_amx", ("amx_tile", "avx512_bf16", "avx512_vnni", "avx512f", "avx512bw", "avx512vl", "avx512dq")),
    ("avx512_core_bf16", ("avx512_bf16", "avx512_vnni", "avx512f", "avx512bw", "avx512vl", "avx512dq")),
    ("avx512_core_vnni", ("avx512_vnni", "avx512f", "avx512bw", "avx512vl", "avx512dq")),
    ("avx512_core", ("avx512f", "avx512bw", "avx512vl", "avx512dq")),
    ("avx2_vnni", ("avx_vnni", "avx2", "fma")),
    ("avx2", ("avx2", "fma")),
    ("avx", ("avx",)),
    ("sse41", ("sse4_1",)),
)


def gemm_backend(vendor: str, flags: frozenset[str], machine: str, env: Mapping[str, str]) -> str:
    """The library CTranslate2's matrix products run in on x86-64 (src/cpu/backend.cc): Intel MKL
    on GenuineIntel CPUs, oneDNN elsewhere (``CT2_USE_MKL`` overrides); oneDNN then dispatches to
    the widest instruction set the CPU has, capped by ``ONEDNN_MAX_CPU_ISA``. Both change the
    last bits of the arithmetic, and so, now and then, a word."""
    if machine not in ("x86_64", "amd64"):
        return ""
    use_mkl = env.get("CT2_USE_MKL")
    if (vendor == "GenuineIntel") if use_mkl is None else use_mkl.strip().lower() in ("1", "true", "on"):
        return "MKL"
    widest = next((name for name, needs in ONEDNN_ISAS if set(needs) <= flags), "generic")
    cap = env.get("ONEDNN_MAX_CPU_ISA") or env.get("DNNL_MAX_CPU_ISA")
    return f"oneDNN {widest}" + (f" (capped at {cap.lower()})" if cap else "")


@lru_cache(maxsize=1)
def this_cpu() -> str:
    """This machine's CPU path, read once: ``AVX2 oneDNN avx512_core_vnni``, ``AVX2 MKL``, ``NEON``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            vendor, flags = cpu_facts(handle.read())
    except OSError:
        vendor, flags = "", frozenset()
    machine = platform.machine().lower()
    isa = cpu_isa(flags, machine, os.environ.get(ISA_ENV))
    backend = gemm_backend(vendor, flags, machine, os.environ)
    return f"{isa} {backend}".strip()


def engine_build(device: str, compute_type: str, gpu_name: str | None = None) -> str:
    """One engine's arithmetic path: ``cpu int8 AVX2 oneDNN avx512_core_vnni``, ``cuda float16 NVIDIA H100 80GB HBM3``."""
    where = this_cpu() if device == "cpu" else (gpu_name or "GPU")
    return f"{device} {compute_type} {where}"


def blas_threads(env: Mapping[str, str], usable_cpus: int) -> int:
    """How many threads numpy's OpenBLAS splits a matrix product over: OPENBLAS_NUM_THREADS (the CLI
    sets 2: engine/cpus.py), else OMP_NUM_THREADS, else one per usable CPU; never more than the usable
    CPUs. The log-mel features are such a product, and their last bits — and so, now and then, a word —
    change with it (1 thread against 2 changed 25 of 45 corpus transcripts: benchmarks/README.md)."""
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        value = env.get(name, "").split(",")[0].strip()
        if value.isdigit() and int(value) > 0:
            return min(int(value), usable_cpus)  # OpenBLAS starts no more threads than CPUs it may use
    return usable_cpus


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def words_build(engines: Sequence[str]) -> dict[str, Any]:
    """What a run's words are made with besides model and options, for its records (each record
    adds the ffmpeg that decoded its recording).

    Args:
        engines: Each engine's :func:`engine_build` (a file's chunks may go to any of them).
    """
    return {**package_versions(), "blas_threads": blas_threads(os.environ, usable_cpus()), "engines": sorted(set(engines))}


def cuda_names(indices: Sequence[int]) -> dict[int, str]:
    """The kind of GPU behind each CUDA index (NVML's name, matched by UUID where it can be told,
    with its compute capability): what shapes the arithmetic is the kind, not which one of several
    alike; ``an unnamed GPU`` where NVML cannot say."""
    info = nvml.read_nvml_info()
    by_uuid = {d.uuid: d for d in info.devices if d.uuid}
    behind = nvml.visible_gpus(max(indices, default=-1) + 1, [d.uuid for d in info.devices])
    names = {}
    for index in indices:
        device = by_uuid.get(behind[index] or "")
        if device is None:
            names[index] = "an unnamed GPU"
        else:
            names[index] = device.name + (f" (compute capability {device.compute_capability})" if device.compute_capability else "")
    return names
