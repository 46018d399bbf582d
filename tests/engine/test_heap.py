"""The process's C heap: every thread allocates from one malloc arena once a model is loaded
(carevoice.engine.heap), so memory one thread gave back is what the next one uses (issue 24).

Counted in a fresh child process with glibc's own malloc_stats (one "Arena N:" block per arena).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CHILD = """
import ctypes, sys, threading
import numpy as np
{load}
def work():
    for _ in range(20):
        np.ones(1 << 18)  # 2 MB from malloc, freed at once
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
ctypes.CDLL("libc.so.6").malloc_stats()
"""
LOAD_MODEL = """
from carevoice.engine.decoder import load_decoder
from carevoice.engine.models import resolve_model
from carevoice.settings import EngineSettings, default_cache_dir
load_decoder(EngineSettings(model="tiny.en", cpu_threads=2), resolve_model("tiny.en", default_cache_dir()), "cpu")
"""


def arenas(load: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run([sys.executable, "-c", CHILD.format(load=load)], capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stderr.count("Arena ")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_once_a_model_is_loaded_every_thread_allocates_from_one_arena() -> None:
    assert arenas("") > 1  # glibc's own way: an arena per thread (the test can tell)
    assert arenas(LOAD_MODEL) == 1  # before: 4 (the model's threads and these each had one)


KEPT_AFTER_FREE = """
import numpy as np
{load}
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
for _ in range(2):  # glibc's own threshold rises to the block's size after the first is freed
    block = np.ones({mb} << 17)
    before = rss_mb()
    del block
print(before - rss_mb())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_once_a_model_is_loaded_a_freed_20_mb_buffer_goes_back_to_the_system() -> None:
    """A batch's layer buffers (tens of MB) go back when freed, not into the heap as holes."""

    assert given_back_mb("", 20) < 5  # glibc's own way: the second block stayed in the heap (the test can tell)
    assert given_back_mb(LOAD_MODEL, 20) > 15  # before: ~0


def given_back_mb(load: str, mb: int) -> float:
    """How much RSS a child process gets back when it frees a ``mb`` MB block the second time."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    script = KEPT_AFTER_FREE.format(load=load, mb=mb)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return float(done.stdout)
