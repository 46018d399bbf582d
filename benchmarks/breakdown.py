"""Where the time goes: CareVoice's stages timed separately on the corpus clips.

Stages: ffmpeg decode and VAD (chunking.prepare_file, run one file after another before the engine
starts), log-mel features (computed in the batch runner's decode pool, alongside inference), and
inside the engine the CTranslate2 calls (encode, detect_language, generate, align) plus everything
else the engine does (VAD checks, splitting, follow-up bookkeeping, the fallback's model copies).
The engine runs through CareVoice's own batch runner (pipeline.BatchRunner); each CTranslate2 call
is timed where it happens.

Usage: python benchmarks/breakdown.py [--lang en] [--limit N] [--batch-size 8] [--windows 10,15,20,30] [--words] [--plain]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import corpus_clips, print_table, wer  # noqa: E402
from throughput import load, prepare_all  # noqa: E402

CT2_CALLS = ("encode", "generate", "detect_language", "align")


class Totals:
    """Seconds per stage, added from any thread."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] += seconds

    def timed(self, stage: str, call: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                self.add(stage, time.perf_counter() - started)

        return run


class TimedModel:
    """The CTranslate2 Whisper model, with the seconds spent in each of its calls added up."""

    def __init__(self, inner: Any, totals: Totals) -> None:
        self._inner = inner
        self._totals = totals

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        return self._totals.timed(name, attr) if name in CT2_CALLS else attr


class TimedFeatures:
    """The engine as the batch runner sees it, with its feature computation timed."""

    def __init__(self, engine: Any, totals: Totals) -> None:
        self._engine = engine
        self.features = totals.timed("features", engine.features)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


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

    from carevoice.run.pipeline import BatchRunner
    from carevoice.settings import DecodeSettings

    windows = tuple(float(w) for w in args.windows.split(","))
    clips = corpus_clips({args.lang}, args.limit)
    audio_s = sum(c.duration_s for c in clips)
    engine, _ = load(args.model, args.threads, windows)
    totals = Totals()
    engine.decoder.model.model = TimedModel(engine.decoder.model.model, totals)
    language = args.lang.split("-")[0]

    started = time.perf_counter()
    prepared = prepare_all(clips)
    totals.add("ffmpeg decode + VAD", time.perf_counter() - started)

    if args.plain:  # the same CTranslate2 calls, inside plain faster-whisper (batch 8 per file)
        from faster_whisper import BatchedInferencePipeline

        pipeline = BatchedInferencePipeline(engine.decoder.model)
        plain_texts = {}
        started = time.perf_counter()
        for file in prepared:  # plain computes its features (and runs VAD) inside transcribe: "overhead"
            segments, _ = pipeline.transcribe(file.samples, language=language, beam_size=5, batch_size=8, word_timestamps=args.words)
            plain_texts[file.job.source] = " ".join(s.text.strip() for s in segments)
        engine_s = time.perf_counter() - started
        texts = [plain_texts[c.path] for c in clips]
        _report(totals, engine_s, clips, texts, audio_s, f"plain batched, words {args.words}")
        return
    options = DecodeSettings(language=language, word_timestamps=args.words)
    by_job = {p.job: p for p in prepared}
    runner = BatchRunner([TimedFeatures(engine, totals)], options, by_job.__getitem__, batch_size=args.batch_size, windows_s=windows)
    texts_by_job = {}
    redecoded = 0
    started = time.perf_counter()
    for file in runner.run(list(by_job)):
        texts_by_job[file.job.source] = " ".join(s.text.strip() for i in sorted(file.results) for s in file.results[i].segments)
        redecoded += sum(r.redecoded for r in file.results.values())
    engine_s = time.perf_counter() - started
    texts = [texts_by_job[c.path] for c in clips]
    _report(totals, engine_s, clips, texts, audio_s, f"CareVoice batch runner, windows {windows}, batch {args.batch_size}, "
            f"threads {args.threads}, words {args.words}, re-decoded {redecoded}")  # fmt: skip


def _report(totals: Totals, engine_s: float, clips: list, texts: list[str], audio_s: float, title: str) -> None:  # type: ignore[type-arg]
    seconds = dict(totals.seconds)
    inner = sum(seconds.get(k, 0.0) for k in (*CT2_CALLS, "features"))
    seconds["engine python overhead (VAD checks, splitting, fallback copies)"] = engine_s - inner
    print(f"{len(clips)} clips, {audio_s:.0f} s audio, {title}, WER {wer([c.reference for c in clips], texts):.4f}")
    total = seconds["ffmpeg decode + VAD"] + engine_s
    rows = [{"stage": k, "s": v, "share": v / total, "x_realtime": audio_s / v if v else None} for k, v in seconds.items()]
    print_table(rows, ["stage", "s", "share", "x_realtime"])
    print(f"serial total {total:.1f} s → RTFx {audio_s / total:.2f} (features run in the decode pool, overlapping inference)")


if __name__ == "__main__":
    main()
