"""engine/build.py: what shapes the words besides model and options — the instruction set CTranslate2's
kernels dispatch to and the library its matrix products run in (tables of real CPUs' /proc/cpuinfo
flags, read against CTranslate2's src/cpu/cpu_isa.cc and backend.cc), library versions, and each
engine's label."""

from __future__ import annotations

import importlib.metadata

import pytest

from carevoice.engine import build
from carevoice.engine.build import blas_threads, cpu_facts, cpu_isa, engine_build, gemm_backend, package_versions, words_build

EPYC_GENOA = "sse4_1 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16"  # AMD EPYC 9004 (this CI's kind)
SAPPHIRE_RAPIDS = EPYC_GENOA + " amx_tile amx_int8 amx_bf16"  # Xeon 4th gen
SKYLAKE_CLIENT = "sse4_1 avx avx2 fma"  # Core i7-6700: no AVX-512
ALDER_LAKE = "sse4_1 avx avx2 fma avx_vnni"  # Core i7-12700: AVX-VNNI, no AVX-512
SANDY_BRIDGE = "sse4_1 avx"  # AVX without AVX2
NEHALEM = "sse4_1 sse4_2"


@pytest.mark.parametrize(
    ("flags", "machine", "forced", "isa"),
    [
        (EPYC_GENOA, "x86_64", None, "AVX2"),  # AVX512 only when forced: CTranslate2 never picks it itself
        (SKYLAKE_CLIENT, "x86_64", None, "AVX2"),
        (SANDY_BRIDGE, "x86_64", None, "AVX"),
        (NEHALEM, "x86_64", None, "GENERIC"),
        ("fp asimd", "aarch64", None, "NEON"),
        (EPYC_GENOA, "x86_64", "AVX512", "AVX512"),  # CT2_FORCE_CPU_ISA wins
    ],
)
def test_the_instruction_set_ctranslate2_kernels_dispatch_to(flags: str, machine: str, forced: str | None, isa: str) -> None:
    assert cpu_isa(frozenset(flags.split()), machine, forced) == isa


@pytest.mark.parametrize(
    ("vendor", "flags", "env", "backend"),
    [
        ("AuthenticAMD", EPYC_GENOA, {}, "oneDNN avx512_core_bf16"),
        ("GenuineIntel", SAPPHIRE_RAPIDS, {}, "MKL"),  # MKL on Intel: another library, other last bits
        ("GenuineIntel", SAPPHIRE_RAPIDS, {"CT2_USE_MKL": "0"}, "oneDNN avx512_core_amx"),
        ("AuthenticAMD", EPYC_GENOA, {"CT2_USE_MKL": "1"}, "MKL"),
        ("AuthenticAMD", ALDER_LAKE, {}, "oneDNN avx2_vnni"),
        ("AuthenticAMD", EPYC_GENOA, {"ONEDNN_MAX_CPU_ISA": "AVX2"}, "oneDNN avx512_core_bf16 (capped at avx2)"),
        ("AuthenticAMD", NEHALEM, {}, "oneDNN sse41"),
    ],
)
def test_the_library_matrix_products_run_in(vendor: str, flags: str, env: dict[str, str], backend: str) -> None:
    assert gemm_backend(vendor, frozenset(flags.split()), "x86_64", env) == backend


def test_vendor_and_flags_are_read_from_the_first_processor() -> None:
    text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 fma\n\nprocessor\t: 1\nvendor_id\t: Other\nflags\t\t: other\n"
    assert cpu_facts(text) == ("AuthenticAMD", frozenset({"fpu", "avx2", "fma"}))
    assert cpu_facts("Features\t: fp asimd\n") == ("", frozenset({"fp", "asimd"}))
    assert cpu_facts("") == ("", frozenset())


def test_this_machine_honours_the_override(monkeypatch: pytest.MonkeyPatch) -> None:
    build.this_cpu.cache_clear()
    monkeypatch.setenv(build.ISA_ENV, "GENERIC")
    try:
        assert build.this_cpu().startswith("GENERIC")
    finally:
        build.this_cpu.cache_clear()


def test_a_run_names_its_libraries_and_engines() -> None:
    made = words_build([engine_build("cuda", "float16", "NVIDIA H200"), engine_build("cuda", "float16", "NVIDIA H200")])
    assert made["ctranslate2"] == importlib.metadata.version("ctranslate2")
    assert made["faster-whisper"] == importlib.metadata.version("faster-whisper")
    assert made["engines"] == ["cuda float16 NVIDIA H200"]  # one label per kind of engine
    assert package_versions(("no-such-distribution",)) == {"no-such-distribution": None}


@pytest.mark.parametrize(
    ("env", "threads"),
    [({}, 16), ({"OPENBLAS_NUM_THREADS": "1"}, 1), ({"OMP_NUM_THREADS": "4,2"}, 4), ({"OPENBLAS_NUM_THREADS": "0", "OMP_NUM_THREADS": "2"}, 2), ({"OPENBLAS_NUM_THREADS": "64"}, 16)],
)
def test_numpys_blas_threads_as_openblas_counts_them(env: dict[str, str], threads: int) -> None:
    assert blas_threads(env, 16) == threads
