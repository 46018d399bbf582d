"""This process's C heap (glibc's malloc): one arena for the whole process, and free pages handed back.

CTranslate2 allocates each layer's buffers with malloc from whichever thread runs it, and the decode
pool's threads allocate audio and features: glibc gives threads arenas of their own (up to 8 per
core), and each keeps the high-water mark of what it once held. On the 123 English clips (base, CPU)
one arena and a fixed 16 MB threshold took the CLI's peak from 1033 MB to 627 MB at the same CPU time
(benchmarks/README.md, "Issue 24 §1"). Other C libraries (musl, macOS) have neither call: then nothing
is done.
"""

from __future__ import annotations

import ctypes
import functools
import os
from typing import Any

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8  # glibc's mallopt parameters (malloc.h)
# Blocks this large or larger come from the system and go back to it when freed. glibc's own
# threshold rises with each large block freed (to 32 MB), so a batch's layer buffers then stay in the
# heap as free holes. At 1-4 MB every buffer is mapped and faulted in again each time: +25 % CPU.
MMAP_THRESHOLD_BYTES = 16 << 20
# A fixed threshold also fixes how much free heap top is kept before it is given back (glibc: 128 kB),
# and the next batch then faults it in again: 91.9 s of CPU against 82.9 s with 32 MB kept.
TRIM_THRESHOLD_BYTES = 32 << 20


@functools.cache
def _glibc() -> Any:
    """glibc, looked up once and by its own name: ctypes.util.find_library("c") runs `/sbin/ldconfig -p`
    (a process) each time it is asked, and the watcher asked after every set of files (issue 24)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def lean_heap() -> bool:
    """One malloc arena for every thread, and fixed thresholds for blocks from the system and for the
    free heap top kept; to be set before threads start (arenas made before stay). Returns whether glibc
    took them. What the environment sets (MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_,
    MALLOC_TRIM_THRESHOLD_) is left to rule, and "0" leaves glibc's own behaviour
    (benchmarks/throughput.py runs plain faster-whisper so)."""
    libc = _glibc()
    if libc is None:
        return False
    took = True
    if "MALLOC_ARENA_MAX" not in os.environ:
        took = bool(libc.mallopt(M_ARENA_MAX, 1)) and took
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        took = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and took
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        took = bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)) and took
    return took


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's malloc_trim; elsewhere nothing)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
