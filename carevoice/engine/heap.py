"""This process's C heap (glibc's malloc): one arena for the whole process, and free pages handed back.

CTranslate2 allocates each layer's buffers with malloc from whichever thread runs it, and the decode
pool's threads allocate audio and features: glibc gives threads arenas of their own (up to 8 per
core), and each keeps the high-water mark of what it once held. On the 123 English clips (base, CPU)
one arena took the CLI's peak from 1033 MB to 678 MB at the same CPU time (benchmarks/README.md,
tenth session). Other C libraries (musl, macOS) have neither call: then nothing is done.
"""

from __future__ import annotations

import ctypes
import functools
import os
from typing import Any

M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)


@functools.cache
def _glibc() -> Any:
    """glibc, looked up once and by its own name: ctypes.util.find_library("c") runs `/sbin/ldconfig -p`
    (a process) each time it is asked, and the watcher asked after every set of files (issue 24)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def one_arena() -> bool:
    """Let every thread allocate from one malloc arena (before threads start: arenas made before stay).
    Returns whether glibc took it. The environment's MALLOC_ARENA_MAX, when set, is left to rule."""
    libc = _glibc()
    if libc is None or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    return bool(libc.mallopt(M_ARENA_MAX, 1))


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's malloc_trim; elsewhere nothing)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
