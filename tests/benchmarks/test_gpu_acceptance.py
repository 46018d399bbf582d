"""The GPU acceptance script (benchmarks/gpu_acceptance.py) in its CPU form, so that it cannot rot
before a GPU is lent: every step runs, the GPU-only ones say they were skipped, and both summaries
are written."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA_DIR, REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "gpu_acceptance.py"


@pytest.mark.slow
def test_the_acceptance_run_works_end_to_end_on_the_cpu(tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    audio.mkdir()
    for clip in ("hfdatasets__vctk_p225_001_mic1.flac", "lhotse__LJ002-0035.wav"):
        shutil.copy(DATA_DIR / clip, audio / clip)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--model", "tiny.en", "--audio", str(audio), "--device", "cpu", "--out", str(out)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((out / "gpu_acceptance.json").read_text(encoding="utf-8"))
    steps = {s["name"]: s for s in result["steps"]}
    assert list(steps) == ["doctor", "pytest -m gpu", "transcribe", "bench", "throughput vs plain faster-whisper"]
    assert steps["pytest -m gpu"]["status"] == "skipped" and "no GPU test ran here" in steps["pytest -m gpu"]["detail"]
    assert {n: s["status"] for n, s in steps.items() if n != "pytest -m gpu"} == dict.fromkeys(
        ["doctor", "transcribe", "bench", "throughput vs plain faster-whisper"], "passed"
    )
    assert steps["transcribe"]["numbers"]["counts"]["done"] == 2
    assert set(steps["throughput vs plain faster-whisper"]["numbers"]["plain"]) == {"seq", "batched-8"}
    assert (out / "gpu_acceptance.md").read_text(encoding="utf-8").startswith("# CareVoice GPU acceptance — cpu, model tiny.en")
