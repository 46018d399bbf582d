"""Will CUDA inference run here? cuBLAS found and loaded, and a real decode in a child process
(a missing library aborts the process it runs in, so never this one). Nothing here prints.
"""

from __future__ import annotations

import ctypes
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# CTranslate2 4.x is built against CUDA 12 and opens cuBLAS only when the first GEMM runs; when
# the library is missing it prints "Library libcublas.so.12 is not found" and aborts the process.
CUBLAS_LIBRARY = "libcublas.so.12"
DEFAULT_PROBE_TIMEOUT_S = 180.0


def load_cublas() -> tuple[bool, str]:
    """Whether the dynamic loader finds the cuBLAS CTranslate2 needs: (loads, detail)."""

    if not sys.platform.startswith("linux"):
        return False, f"not checked on {sys.platform}"
    try:
        ctypes.CDLL(CUBLAS_LIBRARY)
    except OSError as exc:
        return False, str(exc).splitlines()[0][:200]
    return True, f"{CUBLAS_LIBRARY} loads"


# Runs in a child process: a missing cuBLAS can abort the process that touches it.
_PROBE_SCRIPT = """
import json, sys, time
import numpy as np
from faster_whisper import WhisperModel
model_dir, compute_type, audio, download_root, device_index = sys.argv[1:6]
started = time.monotonic()
model = WhisperModel(model_dir, device="cuda", device_index=int(device_index), compute_type=compute_type, download_root=download_root or None)
loaded = time.monotonic()
samples = np.fromfile(audio, dtype=np.float32) if audio else np.zeros(16000, dtype=np.float32)
segments, _ = model.transcribe(samples, beam_size=1, language="en" if model.model.is_multilingual else None)
count = sum(1 for _ in segments)  # the lazy generator is where inference runs
print(json.dumps({"load_s": loaded - started, "infer_s": time.monotonic() - loaded, "segments": count}))
"""


@dataclass(frozen=True)
class CudaProbe:
    """Result of a tiny real inference on the GPU in a child process."""

    ok: bool
    detail: str
    elapsed_s: float = 0.0
    results: dict[str, Any] = field(default_factory=dict)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith(("  File ", "Traceback"))]
    return lines[-1][:200] if lines else ""


def probe_cuda_inference(
    model_dir: str,
    compute_type: str,
    audio: Path | None = None,
    timeout_s: float = DEFAULT_PROBE_TIMEOUT_S,
    download_root: str | None = None,
    device_index: int = 0,
) -> CudaProbe:
    """Load the model on one CUDA device and transcribe a second of audio, in a child process.

    Args:
        model_dir: A model faster-whisper can load (a folder or a cached hub name).
        compute_type: e.g. "float16".
        audio: Raw float32 16 kHz mono samples; default: one second of silence.
        timeout_s: Kill the child after this long.
        download_root: Where a hub model was cached (as in Engine.load); None for a local folder.
        device_index: The CUDA device.

    Returns:
        ok, and one line naming what failed (the signal, the last error line) or how long it took.
    """
    command = [sys.executable, "-c", _PROBE_SCRIPT, model_dir, compute_type, str(audio) if audio else "", download_root or "", str(device_index)]
    started = time.monotonic()
    try:
        proc = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return CudaProbe(False, f"the GPU test did not finish within {timeout_s:g} s and was stopped", timeout_s)
    except OSError as exc:
        return CudaProbe(False, f"cannot start {sys.executable} ({exc.strerror})")
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        if proc.returncode < 0:
            try:
                how = f"was killed by {signal.Signals(-proc.returncode).name}"
            except ValueError:
                how = f"was killed by signal {-proc.returncode}"
        else:
            how = f"exited with status {proc.returncode}"
        last = _last_line(proc.stderr)
        return CudaProbe(False, f"the GPU test process {how}" + (f": {last}" if last else ""), elapsed)
    try:
        results = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return CudaProbe(False, "the GPU test process printed no result", elapsed)
    return CudaProbe(
        True,
        f"{compute_type} inference ran (load {results['load_s']:.1f} s, 1 s of audio in {results['infer_s']:.2f} s)",
        elapsed,
        results,
    )
