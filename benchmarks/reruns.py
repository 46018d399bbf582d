"""What the rerun contract costs: hashing each recording, and planning a large folder.

1. ``--hash``: the SHA-256 a record needs of every recording transcribed, on the English corpus
   clips, measured as the pipeline does it (right after ffmpeg has read the file), against the
   wall time of the real CLI on the same clips (``-f txt,srt,json``, base, in its own process).
2. ``--plan N``: a folder of N recordings already transcribed (small WAVs, each with its outputs and
   a record written by CareVoice's own writer), then ``carevoice transcribe --dry-run`` on it, timed
   as a user runs it: all unchanged (stat only), then with every 10th file touched (read and hashed)
   and every 100th replaced.

Usage: python benchmarks/reruns.py --hash
       python benchmarks/reruns.py --plan 10000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import corpus_clips  # noqa: E402

MODEL = "tiny.en"


def hash_cost(model: str) -> None:
    from carevoice.run.audio import decode_audio, find_ffmpeg
    from carevoice.run.records import identify

    clips = corpus_clips({"en"})
    ffmpeg = find_ffmpeg()
    hashing = 0.0
    for clip in clips:
        decode_audio(clip.path, ffmpeg)  # as in the pipeline: ffmpeg has just read the file
        started = time.perf_counter()
        identify(clip.path)
        hashing += time.perf_counter() - started
    size_mb = sum(c.path.stat().st_size for c in clips) / 1e6
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "carevoice", "transcribe", *(str(c.path) for c in clips), "-o", out, "-m", model, "-q"], check=True)
        run_s = time.perf_counter() - started
    print(f"{len(clips)} clips, {size_mb:.1f} MB: hashing {hashing:.3f} s; the CLI run {run_s:.1f} s; hashing = {100 * hashing / run_s:.2f} % of it")


def write_wav(path: Path, seed: int) -> None:
    samples = (np.random.default_rng(seed).normal(0, 0.1, 16_000) * 32767).astype("<i2")  # 1 s, each file its own bytes
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(samples.tobytes())


def make_transcribed_folder(folder: Path, count: int) -> None:
    """``count`` recordings, each with txt/srt/json and a record as CareVoice writes them for tiny.en."""
    from carevoice.engine.models import resolve_model, weights_digest
    from carevoice.engine.policy import ENGINE_REVISION
    from carevoice.run.records import Provenance, identify
    from carevoice.run.writers import write_outputs
    from carevoice.settings import DEFAULT_FORMATS, DecodeSettings, default_cache_dir
    from carevoice.transcript import Segment, Transcript, Word

    ref = resolve_model(MODEL, default_cache_dir())
    digest = weights_digest(Path(ref.load_from), default_cache_dir())
    transcript = Transcript("en", 1.0, 1.0, (Segment(0, 0.0, 1.0, " Noise.", -0.5, 0.1, 1.0, (Word(0.0, 1.0, " Noise.", 0.5),), "en"),), model=MODEL)
    decode = DecodeSettings(word_timestamps=True)
    for i in range(count):
        sub = folder / f"ward-{i // 1000:02d}"
        sub.mkdir(exist_ok=True)
        path = sub / f"visit-{i:05d}.wav"
        write_wav(path, i)
        provenance = Provenance("setup", MODEL, digest, ENGINE_REVISION, decode.text_options(), identify(path), True)
        write_outputs(path.with_suffix(""), DEFAULT_FORMATS, transcript, provenance)


def dry_run(folder: Path) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "carevoice", "transcribe", str(folder), "-m", MODEL, "--dry-run"], capture_output=True, text=True, check=True
    )
    return time.perf_counter() - started, done.stderr.strip().splitlines()[-1]


def plan_cost(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "recordings"
        folder.mkdir()
        started = time.perf_counter()
        make_transcribed_folder(folder, count)
        print(f"made {count} transcribed recordings in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        wall, summary = dry_run(folder)
        print(f"--dry-run, nothing changed: {wall:.2f} s — {summary}")
        files = sorted(folder.rglob("*.wav"))
        for i, path in enumerate(files):
            if i % 100 == 0:
                write_wav(path, count + i)  # a new recording under the old name
            elif i % 10 == 0:
                os.utime(path)  # touched: read and hashed, found unchanged
        wall, summary = dry_run(folder)
        print(f"--dry-run, every 10th touched and every 100th replaced: {wall:.2f} s — {summary}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hash", action="store_true", help="the hashing cost on the English corpus clips")
    parser.add_argument("--plan", type=int, default=0, help="time --dry-run on this many transcribed recordings")
    parser.add_argument("--model", default="base", help="model for the --hash run (default base)")
    args = parser.parse_args()
    if args.hash:
        hash_cost(args.model)
    if args.plan:
        plan_cost(args.plan)


if __name__ == "__main__":
    main()
