"""Where the time goes: CareVoice's stages timed separately on the corpus clips.

Stages: ffmpeg decode, log-mel features, and inside the engine the CTranslate2 calls (encode,
detect_language, generate, align) plus re-decodes of degenerate chunks. Each stage runs on its
own here (no overlap), so the sum is the serial cost; the pipeline overlaps decode/features with
inference in its decode pool.

Usage: python benchmarks/breakdown.py [--lang en] [--limit N] [--batch-size 8] [--windows 10,15,20,30]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import corpus_clips, print_table, wer  # noqa: E402
from throughput import load  # noqa: E402


class TimedModel:
    """Wraps the CTranslate2 Whisper model and adds up the seconds spent in each method."""

    def __init__(self, inner, totals: dict[str, float]) -> None:  # type: ignore[no-untyped-def]
        self._inner = inner
        self._totals = totals

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        attr = getattr(self._inner, name)
        if name not in ("encode", "generate", "detect_language", "align"):
            return attr

        def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
            started = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                self._totals[name] += time.perf_counter() - started

        return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lang", default="en")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--model", default="base")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--windows", default="10,15,20,30", help="encoder window buckets in seconds")
    parser.add_argument("--words", action="store_true", help="compute word timestamps (as for srt/vtt/json)")
    parser.add_argument("--plain", action="store_true", help="time plain BatchedInferencePipeline per file instead")
    args = parser.parse_args()

    from carevoice import scheduler as sched
    from carevoice.audio import decode_audio, find_ffmpeg
    from carevoice.engine import EngineItem, window_frames
    from carevoice.settings import DecodeSettings

    windows = tuple(float(w) for w in args.windows.split(","))
    clips = corpus_clips({args.lang}, args.limit)
    audio_s = sum(c.duration_s for c in clips)
    engine = load(args.model, args.threads)
    totals: dict[str, float] = defaultdict(float)
    engine.model.model = TimedModel(engine.model.model, totals)
    ffmpeg = find_ffmpeg()
    language = args.lang.split("-")[0]

    started = time.perf_counter()
    decoded = [decode_audio(c.path, ffmpeg) for c in clips]
    totals["ffmpeg decode"] = time.perf_counter() - started
    started = time.perf_counter()
    items = [EngineItem(a, engine.features(a), window_frames(len(a) / 16000, windows), language) for a in decoded]
    totals["features"] = time.perf_counter() - started

    if args.plain:  # the same CTranslate2 calls, inside plain faster-whisper (batch 8 per file)
        from faster_whisper import BatchedInferencePipeline

        pipeline = BatchedInferencePipeline(engine.model)
        totals["features"] = 0.0  # plain computes its features (and runs VAD) inside transcribe: "overhead"
        texts = []
        started = time.perf_counter()
        for samples in decoded:
            segments, _ = pipeline.transcribe(samples, language=language, beam_size=5, batch_size=8)
            texts.append(" ".join(s.text.strip() for s in segments))
        totals["engine total"] = time.perf_counter() - started
        _report(totals, clips, texts, audio_s, f"plain batched, words {args.words}")
        return
    scheduler: sched.BatchScheduler = sched.BatchScheduler(args.batch_size)
    for i, item in enumerate(items):
        scheduler.add(item.window_frames, (i, item))
    options = DecodeSettings(language=language, word_timestamps=args.words)
    texts = [""] * len(items)
    redecoded = 0
    started = time.perf_counter()
    for batch in list(scheduler.ready()) + list(scheduler.flush()):
        for (i, _), result in zip(batch, engine.run_batch([item for _, item in batch], options)):
            texts[i] = " ".join(s.text.strip() for s in result.segments)
            redecoded += result.redecoded
    totals["engine total"] = time.perf_counter() - started
    _report(totals, clips, texts, audio_s, f"CareVoice engine, windows {windows}, batch {args.batch_size}, "
            f"threads {args.threads}, words {args.words}, re-decoded {redecoded}")  # fmt: skip


def _report(totals: dict[str, float], clips: list, texts: list[str], audio_s: float, title: str) -> None:  # type: ignore[type-arg]
    inner = sum(totals[k] for k in ("encode", "generate", "detect_language", "align"))
    totals["engine python overhead (VAD, features of follow-ups, splitting)"] = totals["engine total"] - inner
    print(f"{len(clips)} clips, {audio_s:.0f} s audio, {title}, WER {wer([c.reference for c in clips], texts):.4f}")
    total = totals["ffmpeg decode"] + totals["features"] + totals["engine total"]
    rows = [
        {"stage": k, "s": v, "share": v / total, "x_realtime": audio_s / v if v else None}
        for k, v in totals.items()
        if k != "engine total"
    ]
    print_table(rows, ["stage", "s", "share", "x_realtime"])
    print(f"serial total {total:.1f} s → RTFx {audio_s / total:.2f}")


if __name__ == "__main__":
    main()
