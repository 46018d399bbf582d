"""Throughput and accuracy in ONE run: plain faster-whisper against CareVoice on the same files.

Runners (same model object, beam size and language for all; every runner decodes the files itself):
  seq        faster-whisper WhisperModel.transcribe, one file at a time
  batched    faster-whisper BatchedInferencePipeline.transcribe per file (batch 8)
  batched-words  the same with word_timestamps=True: what CareVoice's default txt,srt,json output needs
  carevoice  CareVoice's pipeline end to end (ffmpeg pool, VAD, cross-file batching, writers),
             with the default formats txt,srt,json (so word timestamps are computed), and with txt only
  bound      compute-only bound: pre-decoded audio, CareVoice's batching, nothing else

Usage:
  python benchmarks/throughput.py                      # English corpus clips, base int8, beam 5
  python benchmarks/throughput.py --lang zh-CN --runners seq,carevoice
  python benchmarks/throughput.py --long --runners batched,batched-words,carevoice,carevoice-txt
Model load is excluded from every runner (loaded once before timing). Results go to stdout as a
table and, with --out, as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Clip, cer, corpus_clips, long_clips, peak_rss_mb, print_table, wer  # noqa: E402


def load(model_name: str, threads: int):  # type: ignore[no-untyped-def]
    from faster_whisper import WhisperModel

    from carevoice.engine import Engine
    from carevoice.models import resolve_model
    from carevoice.settings import default_cache_dir

    ref = resolve_model(model_name, default_cache_dir())
    model = WhisperModel(ref.load_from, device="cpu", compute_type="int8", cpu_threads=threads)
    return Engine(model, ref, "cpu", "int8", cpu_threads=threads)


def run_seq(engine, clips: list[Clip], language: str | None, beam: int) -> list[str]:  # type: ignore[no-untyped-def]
    texts = []
    for clip in clips:
        segments, _ = engine.model.transcribe(str(clip.path), language=language, beam_size=beam)
        texts.append(" ".join(s.text.strip() for s in segments))  # draining runs the work
    return texts


def run_batched(engine, clips: list[Clip], language: str | None, beam: int, words: bool = False) -> list[str]:  # type: ignore[no-untyped-def]
    from faster_whisper import BatchedInferencePipeline

    pipeline = BatchedInferencePipeline(engine.model)
    texts = []
    for clip in clips:
        segments, _ = pipeline.transcribe(
            str(clip.path), language=language, beam_size=beam, batch_size=8, word_timestamps=words
        )
        texts.append(" ".join(s.text.strip() for s in segments))
    return texts


def run_carevoice(engine, clips, language, beam, batch_size, formats):  # type: ignore[no-untyped-def]
    from carevoice.audio import find_ffmpeg
    from carevoice.discovery import find_jobs
    from carevoice.pipeline import FileStatus, Transcriber
    from carevoice.settings import DecodeSettings, OutputFormat, TranscribeSettings

    fmts = tuple(OutputFormat(f) for f in formats)
    with tempfile.TemporaryDirectory() as out:
        settings = TranscribeSettings(
            inputs=tuple(c.path for c in clips),
            output_dir=Path(out),
            formats=fmts,
            decode=DecodeSettings(
                language=language,
                beam_size=beam,
                batch_size=batch_size,
                word_timestamps=fmts != (OutputFormat.TXT,),
            ),
        )
        jobs = find_jobs(settings.inputs, settings.output_dir).jobs
        transcriber = Transcriber(settings, engine, find_ffmpeg(), settings.decode.fingerprint(engine.ref.model_id))
        results = {r.source: r for r in transcriber.run(jobs)}
        texts = []
        for clip in clips:
            result = results[clip.path]
            if result.status is not FileStatus.DONE:
                raise SystemExit(f"carevoice failed on {clip.path.name}: {result.error}")
            texts.append((Path(out) / clip.path.with_suffix(".txt").name).read_text(encoding="utf-8").replace("\n", " "))
        return texts, transcriber.stats


def run_bound(engine, clips, language, beam, batch_size, decoded):  # type: ignore[no-untyped-def]
    """Pre-decoded audio through CareVoice's batching and engine only (no ffmpeg, VAD, writers)."""
    from carevoice.engine import EngineItem
    from carevoice.engine import window_frames
    from carevoice.scheduler import BatchScheduler
    from carevoice.settings import DecodeSettings

    options = DecodeSettings(language=language, beam_size=beam, word_timestamps=False)
    scheduler: BatchScheduler = BatchScheduler(batch_size)
    texts: dict[int, list[str]] = {i: [] for i in range(len(clips))}
    for i, samples in enumerate(decoded):
        for start in range(0, len(samples), 30 * 16000):
            piece = samples[start : start + 30 * 16000]
            item = EngineItem(piece, engine.features(piece), window_frames(len(piece) / 16000), language)
            scheduler.add(item.window_frames, (i, start, item))

    def run(batch):  # type: ignore[no-untyped-def]
        results = engine.run_batch([item for _, _, item in batch], options)
        for (i, start, _), result in zip(batch, results):
            texts[i].append((start, " ".join(s.text.strip() for s in result.segments)))

    for batch in scheduler.ready():
        run(batch)
    for batch in scheduler.flush():
        run(batch)
    return [" ".join(t for _, t in sorted(texts[i])) for i in range(len(clips))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lang", default="en", help="corpus language (en, zh-CN, yue, ...)")
    parser.add_argument("--long", action="store_true", help="use the stitched long files instead of clips")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--quality", default="human,derived", help="reference qualities to use (manifest ref_quality)")
    parser.add_argument("--model", default="base")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--runners", default="seq,batched,carevoice,carevoice-txt,bound")
    parser.add_argument("--windows", default="", help="encoder window buckets in seconds (default: CareVoice's)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.windows:
        from carevoice import engine

        # The benchmark's knob only: every caller uses window_frames' default buckets.
        engine.window_frames.__defaults__ = (tuple(float(w) for w in args.windows.split(",")),)

    clips = long_clips() if args.long else corpus_clips({args.lang}, args.limit, set(args.quality.split(",")))
    if args.long:
        clips = [c for c in clips if c.language == args.lang]
    language = args.lang.split("-")[0]
    cjk = language in {"zh", "yue", "ja"}
    audio_s = sum(c.duration_s for c in clips)
    engine = load(args.model, args.threads)
    references = [c.reference for c in clips]
    score = cer if cjk else wer
    rows = []
    decoded = None
    for runner in args.runners.split(","):
        extra: dict[str, object] = {}
        if runner == "bound" and decoded is None:
            from carevoice.audio import decode_audio, find_ffmpeg

            ff = find_ffmpeg()
            decoded = [decode_audio(c.path, ff) for c in clips]
        started = time.perf_counter()
        if runner == "seq":
            texts = run_seq(engine, clips, language, args.beam_size)
        elif runner in ("batched", "batched-words"):
            texts = run_batched(engine, clips, language, args.beam_size, words=runner == "batched-words")
        elif runner in ("carevoice", "carevoice-txt"):
            formats = ("txt",) if runner == "carevoice-txt" else ("txt", "srt", "json")
            texts, stats = run_carevoice(engine, clips, language, args.beam_size, args.batch_size, formats)
            extra = {"engine_calls": stats.engine_calls, "widened": stats.widened_chunks,
                     "continued": stats.continued_chunks, "redecoded": stats.redecoded_chunks}  # fmt: skip
        elif runner == "bound":
            texts = run_bound(engine, clips, language, args.beam_size, args.batch_size, decoded)
        else:
            raise SystemExit(f"unknown runner {runner}")
        wall = time.perf_counter() - started
        rows.append(
            {"runner": runner, "files": len(clips), "audio_s": audio_s, "wall_s": wall, "rtfx": audio_s / wall,
             ("cer" if cjk else "wer"): score(references, texts), "peak_rss_mb": peak_rss_mb(), **extra}
        )  # fmt: skip
        print(f"# {runner}: {wall:.1f} s", file=sys.stderr, flush=True)
    plain = [r for r in rows if r["runner"] in ("seq", "batched")]  # batched-words is the like-for-like extra
    best = max(plain, key=lambda r: r["rtfx"]) if plain else None
    bound = next((r for r in rows if r["runner"] == "bound"), None)
    for r in rows:
        if best:
            r["x_best_plain"] = r["rtfx"] / best["rtfx"]
        if bound:
            r["x_bound"] = r["rtfx"] / bound["rtfx"]
    columns = ["runner", "files", "audio_s", "wall_s", "rtfx", "cer" if cjk else "wer", "x_best_plain", "x_bound",
               "engine_calls", "widened", "continued", "redecoded", "peak_rss_mb"]  # fmt: skip
    print(f"model={args.model} int8 beam={args.beam_size} batch={args.batch_size} threads={args.threads} "
          f"lang={args.lang} windows={args.windows or 'default'}")
    print_table(rows, columns)
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
