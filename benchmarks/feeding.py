"""Can the CPU side keep a fast GPU fed? (issue 24 §2)

The real pipeline (Transcriber: claims, real decode, real VAD/audibility, real log-mel features, real
txt/srt/json writing) with the model replaced by a double whose run_batch sleeps a fixed time per batch
and returns a fixed two-word result per chunk. Before (the ffmpeg program per file) and after (the
pool of PyAV decode workers), interleaved in one run:

  (a) --batch-s 0: the CPU side is the bottleneck. Its rate in real-time-x PER CORE = audio seconds /
      CPU seconds used (this process + its children: ffmpeg programs, decode workers), and the cores
      it used (CPU s / wall s).
  (b) a time per batch that makes the double slower than the CPU side: the double's busy fraction
      (sum of its batch times / wall).

Then each part of the CPU side alone, one thread, per clip: decode (program, pool), identify (hash),
audibility, features; and whether the pool's samples equal the program's bit for bit.

    python benchmarks/feeding.py [--clips N] [--copies 3] [--repeats 2] [--batch-s 0.25] [--workers 2] [--no-quiet-blas]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's carevoice

from carevoice.engine.cpus import quiet_blas_environment

if "--no-quiet-blas" not in sys.argv:
    os.environ.update(quiet_blas_environment(os.environ))  # as the CLI does, before numpy loads

import numpy as np
from common import corpus_clips


class SleepEngine:
    """A GPU stand-in: real features (faster-whisper's extractor), a fixed time per batch."""

    device, compute_type, device_index = "cuda", "float16", 0  # a GPU's: one decode worker per decode thread

    def __init__(self, batch_s: float) -> None:
        from faster_whisper.feature_extractor import FeatureExtractor

        from carevoice.engine.models import ModelRef

        self.ref = ModelRef("double", "double", "benchmark double")
        self.batch_s = batch_s
        self.busy_s = 0.0
        self.first_s = self.last_s = 0.0  # monotonic: the first batch's start, the last one's end
        self.extractor = FeatureExtractor(feature_size=80)

    def features(self, samples: np.ndarray) -> np.ndarray:
        return self.extractor(samples)[..., :-1]

    def run_batch(self, items, options):  # type: ignore[no-untyped-def]
        from carevoice.engine.whisper import ItemResult
        from carevoice.transcript import Segment, Word

        started = time.monotonic()
        self.first_s = self.first_s or started
        if self.batch_s:
            time.sleep(self.batch_s)
        results = []
        for item in items:
            d = round(item.duration_s, 3)
            words = (Word(0.0, d / 2, " Chunk", 0.9), Word(d / 2, d, f" {d}.", 0.8))
            results.append(ItemResult("en", 1.0, [Segment(0, 0.0, d, f" Chunk {d}.", -0.1, 0.01, 1.0, words, "en")]))
        self.last_s = time.monotonic()
        self.busy_s += self.last_s - started
        return results


def cpu_s() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def children_s() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return children.ru_utime + children.ru_stime


def run_once(paths: list[Path], decoder: str, batch_s: float, workers: int) -> dict[str, float]:
    from carevoice.results import FileStatus
    from carevoice.run.audio import find_ffmpeg
    from carevoice.run.chunking import prepare_file
    from carevoice.run.claims import claims_for
    from carevoice.run.discovery import find_jobs
    from carevoice.run.pipeline import Transcriber
    from carevoice.settings import DecodeSettings, OutputFormat, TranscribeSettings

    ffmpeg = find_ffmpeg()
    engine = SleepEngine(batch_s)
    # Each run writes into a new folder of the clips' folder, all removed at the end: deleting ~1,500 files
    # between runs makes ext4 search its recently freed inodes at every create, which no user's run pays.
    out = Path(tempfile.mkdtemp(prefix="out-", dir=paths[0].parent.parent))
    settings = TranscribeSettings(
        inputs=tuple(paths), output_dir=out, formats=(OutputFormat.TXT, OutputFormat.SRT, OutputFormat.JSON),
        decode=DecodeSettings(language="en", word_timestamps=True, batch_size=8), decode_workers=workers,
    )  # fmt: skip
    jobs = find_jobs(settings.inputs, settings.output_dir).jobs
    prepare = functools.partial(prepare_file, decoder=ffmpeg) if decoder == "program" else None
    transcriber = Transcriber(settings, engine, ffmpeg, claims_for(settings, "double"), prepare=prepare)
    cpu0, wall0, main0, children0 = cpu_s(), time.monotonic(), time.thread_time(), children_s()
    results = list(transcriber.run(jobs))
    wall, cpu = time.monotonic() - wall0, cpu_s() - cpu0
    main, children = time.thread_time() - main0, children_s() - children0
    bad = [r for r in results if r.status is not FileStatus.DONE]
    if bad:
        raise SystemExit(f"{bad[0].source}: {bad[0].error}")
    audio_s = sum(r.duration_s for r in results)
    return {
        "audio_s": audio_s,
        "wall_s": wall,
        "cpu_s": cpu,
        "busy": engine.busy_s / wall,
        # From the first batch's start to the last one's end: without the run's first decodes and
        # last writes, which a run of thousands of files pays once as this one does.
        "busy_steady": engine.busy_s / (engine.last_s - engine.first_s),
        "per_core_x": audio_s / cpu,
        "cores": cpu / wall,
        # Where the CPU went, ms per file: the main thread (claims, scheduling, writing), the decode threads
        # (waiting on a decode, identify, audibility, features), the children (ffmpeg programs, or workers).
        "main_ms": main / len(results) * 1e3,
        "threads_ms": (cpu - children - main) / len(results) * 1e3,
        "children_ms": children / len(results) * 1e3,
    }


def parts(paths: list[Path]) -> dict[str, float]:
    """Each part of the CPU side alone, one thread: ms per clip; and the pool's samples against the program's."""
    from faster_whisper.feature_extractor import FeatureExtractor

    from carevoice.engine.loudness import audibility
    from carevoice.run.audio import decode_audio, find_ffmpeg
    from carevoice.run.decode_pool import DecodePool
    from carevoice.run.records import identify

    ffmpeg, extractor = find_ffmpeg(), FeatureExtractor(feature_size=80)
    pool = DecodePool(ffmpeg)
    pool.decode(paths[0])  # the worker started
    timing: dict[str, float] = dict.fromkeys(("decode program", "decode pool", "identify (sha256)", "audibility", "features"), 0.0)
    same = 0
    for path in paths:
        t0 = time.perf_counter()
        by_program = decode_audio(path, ffmpeg)
        t1 = time.perf_counter()
        by_pool = pool.decode(path).samples
        t2 = time.perf_counter()
        identify(path)
        t3 = time.perf_counter()
        audibility(by_pool)
        t4 = time.perf_counter()
        extractor(by_pool)
        t5 = time.perf_counter()
        for key, took in zip(timing, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            timing[key] += took
        same += hashlib.sha256(by_program.tobytes()).digest() == hashlib.sha256(by_pool.tobytes()).digest()
    pool.close()
    return {**{k: v / len(paths) * 1e3 for k, v in timing.items()}, "bit-identical": same, "clips": len(paths)}


FORMATS = {  # what phones, recorders and browsers make, from one WAV
    "wav-s24-stereo-44k.wav": ("-ac", "2", "-ar", "44100", "-c:a", "pcm_s24le"),
    "flac-6ch-96k.flac": ("-ac", "6", "-ar", "96000"),
    "aiff-11k.aiff": ("-ar", "11025",),
    "mp3-stereo-44k.mp3": ("-ac", "2", "-ar", "44100", "-c:a", "libmp3lame"),
    "aac-stereo-48k.m4a": ("-ac", "2", "-ar", "48000", "-c:a", "aac"),
    "opus.ogg": ("-ac", "2", "-c:a", "libopus"),
    "vorbis-22k.ogg": ("-ac", "2", "-ar", "22050", "-c:a", "libvorbis"),
    "opus-8k.webm": ("-ac", "1", "-ar", "8000", "-c:a", "libopus"),
}  # fmt: skip


def formats() -> None:
    """Per format: do the workers' libav and the ffmpeg program give the same samples, and which decodes it in a run."""
    import subprocess

    from carevoice.run.audio import ALLOWED_DEMUXERS, decode_audio, find_ffmpeg
    from carevoice.run.decode_pool import program_needed
    from carevoice.run.pyav_worker import ALLOWED_DEMUXERS_ENV, decode_file

    ffmpeg = find_ffmpeg()
    os.environ[ALLOWED_DEMUXERS_ENV] = ALLOWED_DEMUXERS  # as a worker gets it
    source = corpus_clips({"en"})[0].path
    with tempfile.TemporaryDirectory() as folder:
        for name, args in FORMATS.items():
            path = Path(folder) / name
            subprocess.run([ffmpeg.path, "-v", "error", "-i", str(source), *args, str(path)], check=True)
            facts, raw = decode_file(os.fsencode(path))
            by_program = decode_audio(path, ffmpeg)
            assert raw is not None
            by_libav = np.frombuffer(raw, dtype=np.float32)
            n = min(len(by_libav), len(by_program))
            same = len(by_libav) == len(by_program) and by_libav.tobytes() == by_program.tobytes()
            verdict = (
                "identical"
                if same
                else f"differ: {len(by_libav) - len(by_program):+d} samples, max {np.abs(by_libav[:n] - by_program[:n]).max():.2g}"
            )
            print(
                f"  {name:24s} {facts.get('codec', ''):10s} {verdict:40s} decoded by: {'program' if program_needed(facts, path, by_libav) else 'pool'}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=0, help="first N English clips (0: all 123)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--batch-s", type=float, default=0.0, help="(b): seconds per batch of 8 (0: 1.5x the pool's wall time per batch in (a))"
    )
    parser.add_argument("--workers", type=int, default=0, help="decode threads (0: CareVoice's default)")
    parser.add_argument("--no-quiet-blas", action="store_true", help="leave OPENBLAS_THREAD_TIMEOUT as it is (the CLI sets 4)")
    parser.add_argument("--copies", type=int, default=3, help="each clip this many times (in other folders)")
    parser.add_argument("--formats", action="store_true", help="only: libav against the program, format by format")
    args = parser.parse_args()
    if args.formats:
        formats()
        return
    clips = corpus_clips({"en"}, limit=args.clips)
    print(f"{len(clips)} clips x {args.copies}, {sum(c.duration_s for c in clips) * args.copies:.0f} s of audio")
    print("\nparts, one thread, ms per clip:", parts([c.path for c in clips]))
    links = Path(tempfile.mkdtemp(prefix="carevoice-feeding-"))
    paths = []
    for copy in range(args.copies):  # the same clips in other folders: a run long enough for its start and end to count little
        (links / str(copy)).mkdir()
        for clip in clips:
            copied = links / str(copy) / f"{copy}-{clip.path.name}"  # its own name: one output folder holds all
            shutil.copy(clip.path, copied)  # not a link: discovery would see one file
            paths.append(copied)
    rates: dict[str, list[dict[str, float]]] = {"program": [], "pool": []}
    for _ in range(args.repeats):
        for decoder, runs in rates.items():
            runs.append(run_once(paths, decoder, 0.0, args.workers))
    print("\n(a) the CPU side alone (0 s per batch):")
    for decoder, runs in rates.items():
        x = statistics.median(r["per_core_x"] for r in runs)
        cores = statistics.median(r["cores"] for r in runs)
        wall = statistics.median(r["wall_s"] for r in runs)
        print(
            f"  {decoder:8s} {x:6.0f}x real time per core  ({cores:.2f} cores, {wall:.2f} s wall)  runs: {[round(r['per_core_x']) for r in runs]}"
        )
        print(
            "           CPU ms per file:",
            {k: round(statistics.median(r[k] for r in runs), 1) for k in ("main_ms", "threads_ms", "children_ms")},
        )
    batches = len(paths) / 8
    pool_wall_per_batch_s = statistics.median(r["wall_s"] for r in rates["pool"]) / batches
    batch_s = args.batch_s or 1.5 * pool_wall_per_batch_s  # wall: on a shared machine the CPU side gets what it gets
    print(
        f"\n(b) the double at {batch_s * 1e3:.0f} ms per batch of 8 (the pool's CPU side: {pool_wall_per_batch_s * 1e3:.0f} ms wall per batch):"
    )
    busy: dict[str, list[dict[str, float]]] = {"program": [], "pool": []}
    for _ in range(args.repeats):
        for decoder, runs in busy.items():
            runs.append(run_once(paths, decoder, batch_s, args.workers))
    for decoder, runs in busy.items():
        whole, steady = [r["busy"] for r in runs], [r["busy_steady"] for r in runs]
        print(
            f"  {decoder:8s} busy {statistics.median(whole):.1%} of the run ({[f'{f:.1%}' for f in whole]}), "
            f"{statistics.median(steady):.1%} from the first batch to the last ({[f'{f:.1%}' for f in steady]})"
        )
    shutil.rmtree(links)


if __name__ == "__main__":
    main()
