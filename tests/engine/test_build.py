"""engine/build.py: what shapes the words besides model and options — the instruction set CTranslate2
dispatches to (a table of real /proc/cpuinfo flag sets), library versions, and each engine's label."""

from __future__ import annotations

import importlib.metadata

import pytest

from carevoice.engine import build
from carevoice.engine.build import cpu_flags, cpu_isa, engine_build, package_versions, words_build

EPYC_GENOA = "avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_vnni sse4_1"  # AMD EPYC 9004 (this CI's kind)
SKYLAKE_CLIENT = "avx avx2 fma sse4_1 sse4_2"  # Core i7-6700: no AVX-512
SANDY_BRIDGE = "avx sse4_1 sse4_2"  # AVX without AVX2/FMA
KNIGHTS_LANDING = "avx avx2 fma avx512f avx512cd"  # AVX-512 foundation without BW/DQ/VL


@pytest.mark.parametrize(
    ("flags", "machine", "forced", "isa"),
    [
        (EPYC_GENOA, "x86_64", None, "AVX512"),
        (SKYLAKE_CLIENT, "x86_64", None, "AVX2"),
        (SANDY_BRIDGE, "x86_64", None, "AVX"),
        (KNIGHTS_LANDING, "x86_64", None, "AVX2"),
        ("sse2 sse4_1", "x86_64", None, "GENERIC"),
        ("fp asimd", "aarch64", None, "NEON"),
        (EPYC_GENOA, "x86_64", "avx2", "AVX2"),  # CT2_FORCE_CPU_ISA wins, as in CTranslate2
    ],
)
def test_the_instruction_set_ctranslate2_dispatches_to(flags: str, machine: str, forced: str | None, isa: str) -> None:
    assert cpu_isa(frozenset(flags.split()), machine, forced) == isa


def test_flags_are_read_from_cpuinfo_text() -> None:
    text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 fma\n\nprocessor\t: 1\nflags\t\t: other\n"
    assert cpu_flags(text) == frozenset({"fpu", "avx2", "fma"})
    assert cpu_flags("Features\t: fp asimd\n") == frozenset({"fp", "asimd"})
    assert cpu_flags("") == frozenset()


def test_this_machine_honours_the_override(monkeypatch: pytest.MonkeyPatch) -> None:
    build.this_cpu_isa.cache_clear()
    monkeypatch.setenv(build.ISA_ENV, "GENERIC")
    try:
        assert build.this_cpu_isa() == "GENERIC"
    finally:
        build.this_cpu_isa.cache_clear()


def test_a_run_names_its_libraries_ffmpeg_and_engines() -> None:
    made = words_build([engine_build("cuda", "float16", "NVIDIA H200"), engine_build("cuda", "float16", "NVIDIA H200")], "7.1")
    assert made["ctranslate2"] == importlib.metadata.version("ctranslate2")
    assert made["faster-whisper"] == importlib.metadata.version("faster-whisper")
    assert made["ffmpeg"] == "7.1"
    assert made["engines"] == ["cuda float16 NVIDIA H200"]  # one label per kind of engine
    assert package_versions(("no-such-distribution",)) == {"no-such-distribution": None}
