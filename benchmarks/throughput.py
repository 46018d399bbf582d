"""Throughput and accuracy in ONE run: plain faster-whisper against CareVoice on the same files.

Runners (same model, beam size, language and thread count for all):
  seq            faster-whisper WhisperModel.transcribe, one file at a time
  batched        faster-whisper BatchedInferencePipeline.transcribe per file (batch 8)
  batched-words  the same with word_timestamps=True: what CareVoice's default txt,srt,json output needs
  carevoice      the real CLI, `python -m carevoice transcribe FILES -o TMP -f txt,srt,json`, in a process
                 of its own: start-up and model load included, exactly what a user waits for
  carevoice-txt  the same with -f txt (no word timestamps)
  carevoice-inproc, carevoice-txt-inproc
                 the same pipeline (pipeline.Transcriber) called in the benchmark's process, model loaded
                 before timing: the difference to the CLI rows is start-up and model load
  bound          compute-only bound: files decoded and chunked (chunking.prepare_file) before timing,
                 then CareVoice's batch runner (pipeline.BatchRunner) without writing

Every runner runs in a process of its own (this script starts itself once per runner), so each
peak-RSS figure belongs to that runner alone (the CLI rows: the CLI's process). Model load is
excluded from every runner but the CLI ones. Results go to stdout as a table and, with --out, as JSON.

Usage:
  python benchmarks/throughput.py                      # English corpus clips, base int8, beam 5
  python benchmarks/throughput.py --lang zh-CN --runners seq,carevoice
  python benchmarks/throughput.py --long --runners batched,batched-words,carevoice,carevoice-txt
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Clip, cer, corpus_clips, long_clips, print_table, wer  # noqa: E402

HERE = Path(__file__).resolve().parent
CLI_FORMATS = {"carevoice": "txt,srt,json", "carevoice-txt": "txt"}
PLAIN = ("seq", "batched", "batched-words")
RUNNERS = ("seq", "batched", "batched-words", "carevoice", "carevoice-txt", "carevoice-inproc", "carevoice-txt-inproc", "bound")


def load(model_name: str, threads: int, windows: tuple[float, ...] | None = None):  # type: ignore[no-untyped-def]
    """CareVoice's engine on the CPU (int8), loaded as `transcribe` loads it; its decoder's
    WhisperModel serves the plain faster-whisper runners."""
    from carevoice.engine.models import resolve_model
    from carevoice.engine.whisper import Engine
    from carevoice.settings import (
        DEFAULT_WINDOWS_S,
        Device,
        EngineSettings,
        default_cache_dir,
    )

    settings = EngineSettings(model=model_name, device=Device.CPU, compute_type="int8", cpu_threads=threads, windows_s=windows or DEFAULT_WINDOWS_S)
    return Engine.load(settings, resolve_model(model_name, default_cache_dir()), "cpu"), settings


def run_seq(engine, clips: list[Clip], language: str | None, beam: int) -> list[str]:  # type: ignore[no-untyped-def]
    texts = []
    for clip in clips:
        segments, _ = engine.decoder.model.transcribe(str(clip.path), language=language, beam_size=beam)
        texts.append(" ".join(s.text.strip() for s in segments))  # draining runs the work
    return texts


def run_batched(engine, clips: list[Clip], language: str | None, beam: int, words: bool = False) -> list[str]:  # type: ignore[no-untyped-def]
    from faster_whisper import BatchedInferencePipeline

    pipeline = BatchedInferencePipeline(engine.decoder.model)
    texts = []
    for clip in clips:
        segments, _ = pipeline.transcribe(str(clip.path), language=language, beam_size=beam, batch_size=8, word_timestamps=words)
        texts.append(" ".join(s.text.strip() for s in segments))
    return texts


def texts_written(out: Path, clips: list[Clip]) -> list[str]:
    return [(out / clip.path.with_suffix(".txt").name).read_text(encoding="utf-8").replace("\n", " ") for clip in clips]


def run_cli(clips: list[Clip], args: argparse.Namespace, formats: str) -> tuple[list[str], dict[str, object]]:
    """The real CLI in a process of its own; its report gives the engine counters."""
    with tempfile.TemporaryDirectory() as tmp:
        out, report = Path(tmp) / "out", Path(tmp) / "report.json"
        command = [sys.executable, "-m", "carevoice", "transcribe", *(str(c.path) for c in clips), "-o", str(out), "-f", formats,
                   "-m", args.model, "--device", "cpu", "--compute-type", "int8", "--cpu-threads", str(args.threads),
                   "--beam-size", str(args.beam_size), "--batch-size", str(args.batch_size), "--report", str(report), "-q"]  # fmt: skip
        if args.lang_code:
            command += ["-l", args.lang_code]
        finished = subprocess.run(command, capture_output=True, text=True)
        if finished.returncode != 0:
            raise SystemExit(f"carevoice exited {finished.returncode}: {finished.stderr[-2000:]}")
        record = json.loads(report.read_text(encoding="utf-8"))
        counters = {k: record[k] for k in ("engine_calls", "widened_chunks", "continued_chunks", "redecoded_chunks")}
        return texts_written(out, clips), counters


def run_inproc(engine, settings, clips: list[Clip], args: argparse.Namespace, formats: str):  # type: ignore[no-untyped-def]
    from carevoice.results import FileStatus
    from carevoice.run.audio import find_ffmpeg
    from carevoice.run.claims import claims_for
    from carevoice.run.discovery import find_jobs
    from carevoice.run.pipeline import Transcriber
    from carevoice.settings import (
        SUBTITLE_FORMATS,
        DecodeSettings,
        OutputFormat,
        TranscribeSettings,
    )

    fmts = tuple(OutputFormat(f) for f in formats.split(","))
    with tempfile.TemporaryDirectory() as out:
        transcribe = TranscribeSettings(
            inputs=tuple(c.path for c in clips),
            output_dir=Path(out),
            formats=fmts,
            engine=settings,
            decode=DecodeSettings(
                language=args.lang_code,
                beam_size=args.beam_size,
                batch_size=args.batch_size,
                word_timestamps=bool(SUBTITLE_FORMATS.intersection(fmts)) or OutputFormat.JSON in fmts,
            ),
        )
        jobs = find_jobs(transcribe.inputs, transcribe.output_dir).jobs
        transcriber = Transcriber(transcribe, engine, find_ffmpeg(), claims_for(transcribe, engine.ref.model_id))
        failed = [r for r in transcriber.run(jobs) if r.status is not FileStatus.DONE]
        if failed:
            raise SystemExit(f"carevoice failed on {failed[0].source}: {failed[0].error}")
        stats = transcriber.stats
        counters = {"engine_calls": stats.engine_calls, "widened_chunks": stats.widened_chunks,
                    "continued_chunks": stats.continued_chunks, "redecoded_chunks": stats.redecoded_chunks}  # fmt: skip
        return texts_written(Path(out), clips), counters


def prepare_all(clips: list[Clip]):  # type: ignore[no-untyped-def]
    """Every clip decoded and chunked (ffmpeg, VAD for long files): the bound's input, made before timing."""
    from carevoice.run.audio import find_ffmpeg
    from carevoice.run.chunking import prepare_file
    from carevoice.run.discovery import find_jobs

    ffmpeg = find_ffmpeg()
    return [prepare_file(job, ffmpeg) for job in find_jobs(tuple(c.path for c in clips)).jobs]


def run_bound(engine, prepared, clips: list[Clip], args: argparse.Namespace) -> list[str]:  # type: ignore[no-untyped-def]
    """Decoded, chunked files through CareVoice's batch runner only (no ffmpeg, VAD or writing);
    the texts in the clips' order."""
    from carevoice.run.pipeline import BatchRunner
    from carevoice.settings import DecodeSettings

    options = DecodeSettings(language=args.lang_code, beam_size=args.beam_size, word_timestamps=False)
    by_job = {p.job: p for p in prepared}
    runner = BatchRunner([engine], options, by_job.__getitem__, batch_size=args.batch_size, windows_s=engine.windows_s)
    texts = {}
    for file in runner.run(list(by_job)):
        assert file.failed is None, file.failed
        texts[file.job.source] = " ".join(s.text.strip() for i in sorted(file.results) for s in file.results[i].segments)
    return [texts[clip.path] for clip in clips]


def measure(runner: str, clips: list[Clip], args: argparse.Namespace) -> dict[str, object]:
    """Run one runner (in this process, which runs nothing else) and return its row."""
    counters: dict[str, object] = {}
    if runner in CLI_FORMATS:
        started = time.perf_counter()
        texts, counters = run_cli(clips, args, CLI_FORMATS[runner])
        wall = time.perf_counter() - started
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the CLI process (this one's only child)
    else:
        windows = tuple(float(w) for w in args.windows.split(",")) if args.windows else None
        if runner in PLAIN:  # faster-whisper as it comes: glibc's own heap, not CareVoice's (engine/heap.py)
            os.environ.setdefault("MALLOC_ARENA_MAX", "0")
            os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "0")
            os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", "0")
        engine, settings = load(args.model, args.threads, windows)
        prepared = prepare_all(clips) if runner == "bound" else None
        started = time.perf_counter()
        if runner == "seq":
            texts = run_seq(engine, clips, args.lang_code, args.beam_size)
        elif runner in ("batched", "batched-words"):
            texts = run_batched(engine, clips, args.lang_code, args.beam_size, words=runner == "batched-words")
        elif runner in ("carevoice-inproc", "carevoice-txt-inproc"):
            texts, counters = run_inproc(engine, settings, clips, args, CLI_FORMATS[runner.removesuffix("-inproc")])
        elif runner == "bound":
            texts = run_bound(engine, prepared, clips, args)
        else:
            raise SystemExit(f"unknown runner {runner}")
        wall = time.perf_counter() - started
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    audio_s = sum(c.duration_s for c in clips)
    score = cer if args.cjk else wer
    return {"runner": runner, "files": len(clips), "audio_s": audio_s, "wall_s": wall, "rtfx": audio_s / wall,
            ("cer" if args.cjk else "wer"): score([c.reference for c in clips], texts), "peak_rss_mb": peak_kib / 1024,
            **counters}  # fmt: skip


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
    parser.add_argument("--detect", action="store_true", help="give no language: every runner detects it (as a user who passes no -l)")
    parser.add_argument("--windows", default="", help="encoder window buckets in seconds (default: CareVoice's; not for the CLI runners)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # run one runner here, write its row to --out
    args = parser.parse_args()

    clips = long_clips() if args.long else corpus_clips({args.lang}, args.limit, set(args.quality.split(",")))
    if args.long:
        clips = [c for c in clips if c.language == args.lang]
    args.lang_code = None if args.detect else args.lang.split("-")[0]
    args.cjk = args.lang.split("-")[0] in {"zh", "yue", "ja"}
    if args.child:
        args.out.write_text(json.dumps(measure(args.runners, clips, args)))
        return
    runners = args.runners.split(",")
    unknown = [r for r in runners if r not in RUNNERS]
    if unknown:
        raise SystemExit(f"unknown runner(s) {', '.join(unknown)}: choose from {', '.join(RUNNERS)}")
    rows = []
    for runner in runners:
        with tempfile.NamedTemporaryFile(suffix=".json") as row_file:
            child = [a for a in sys.argv[1:] if a != "--child"]
            child = _without(child, "--runners") + ["--runners", runner, "--child"]
            child = _without(child, "--out") + ["--out", row_file.name]
            subprocess.run([sys.executable, str(HERE / "throughput.py"), *child], check=True)
            rows.append(json.loads(Path(row_file.name).read_text()))
        print(f"# {runner}: {rows[-1]['wall_s']:.1f} s", file=sys.stderr, flush=True)
    plain = [r for r in rows if r["runner"] in ("seq", "batched")]  # batched-words is the like-for-like extra
    best = max(plain, key=lambda r: r["rtfx"]) if plain else None
    bound = next((r for r in rows if r["runner"] == "bound"), None)
    for r in rows:
        if best:
            r["x_best_plain"] = r["rtfx"] / best["rtfx"]
        if bound:
            r["x_bound"] = r["rtfx"] / bound["rtfx"]
    columns = ["runner", "files", "audio_s", "wall_s", "rtfx", "cer" if args.cjk else "wer", "x_best_plain", "x_bound",
               "engine_calls", "widened_chunks", "continued_chunks", "redecoded_chunks", "peak_rss_mb"]  # fmt: skip
    print(f"model={args.model} int8 beam={args.beam_size} batch={args.batch_size} threads={args.threads} "
          f"lang={args.lang}{' (detected)' if args.detect else ''} windows={args.windows or 'default'}")
    print_table(rows, columns)
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))


def _without(argv: list[str], option: str) -> list[str]:
    """argv without ``option`` and its value (``--opt v`` or ``--opt=v``)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


if __name__ == "__main__":
    main()
