"""The Typer app: parse -> settings -> call core -> render -> exit code. The only place that exits.

Importing this module must stay cheap: faster_whisper and ctranslate2 load only when a command
needs a model, so `--help` is instant and `doctor` works when they are broken.
"""

from __future__ import annotations

import signal
import sys
import time
import traceback as tb
from pathlib import Path
from typing import Annotated, Optional

import typer

from carevoice import __version__
from carevoice.errors import CareVoiceError, ExitCode, Interrupted
from carevoice.settings import (
    DEFAULT_BEAM_SIZE,
    DEFAULT_MODEL,
    ENV_DEVICE,
    ENV_MODEL,
    SUBTITLE_FORMATS,
    DecodeSettings,
    Device,
    EngineSettings,
    OutputFormat,
    Task,
    TranscribeSettings,
    parse_formats,
)

app = typer.Typer(
    name="carevoice",
    help="Batch transcription of care-work recordings (faster-whisper, GPU or CPU, offline by default).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold patient speech
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"carevoice {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """CareVoice command-line tool."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Interrupted(ExitCode.TERMINATED)


def run_guarded(body, show_traceback: bool) -> int:  # type: ignore[no-untyped-def]
    """Run a command body, mapping every expected failure to one clean line and an exit code."""
    from carevoice.report import stderr_console

    console = stderr_console()
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return int(body(console))
    except Interrupted as exc:
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return int(ExitCode.INTERRUPTED)
    except CareVoiceError as exc:
        if show_traceback:
            console.print(tb.format_exc(), markup=False)
        console.print(f"[red]error[/red]: {exc.message}", markup=True, highlight=False)
        if exc.hint:
            console.print(f"  → {exc.hint}", markup=False)
        return int(exc.exit_code)
    except Exception as exc:  # a bug: say so without dumping locals (they may hold speech)
        if show_traceback:
            console.print(tb.format_exc(), markup=False)
        console.print(
            f"[red]internal error[/red]: {type(exc).__name__} — rerun with --traceback and report it", highlight=False
        )
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


@app.command()
def transcribe(
    paths: Annotated[list[Path], typer.Argument(help="Audio/video files and folders (folders are walked).", show_default=False)],
    formats: Annotated[str, typer.Option("-f", "--format", help="Comma list of txt,srt,vtt,json,tsv (or all).")] = "txt,srt,json",
    output_dir: Annotated[
        Optional[Path], typer.Option("-o", "--output-dir", help="Write outputs under this folder, mirroring the input tree.")
    ] = None,
    model: Annotated[
        str, typer.Option("-m", "--model", envvar=ENV_MODEL, help="Model folder, or a name: base (offline default), tiny.en, large-v3, turbo, …")
    ] = DEFAULT_MODEL,
    device: Annotated[Device, typer.Option("--device", envvar=ENV_DEVICE, help="auto = CUDA when available, else CPU.")] = Device.AUTO,
    compute_type: Annotated[
        Optional[str], typer.Option("--compute-type", help="CTranslate2 compute type (default: float16 on CUDA, int8 on CPU).")
    ] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Speech chunks per batch (default: 16 CUDA, 8 CPU).")] = None,
    beam_size: Annotated[int, typer.Option("--beam-size", help="Beam search width.")] = DEFAULT_BEAM_SIZE,
    language: Annotated[Optional[str], typer.Option("-l", "--language", help="Language code (e.g. en, zh); default: detect per file.")] = None,
    task: Annotated[Task, typer.Option("--task", help="transcribe, or translate to English.")] = Task.TRANSCRIBE,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo finished files and replace existing outputs.")] = False,
    recursive: Annotated[bool, typer.Option("--recursive/--no-recursive", help="Walk sub-folders.")] = True,
    decode_workers: Annotated[int, typer.Option("--decode-workers", help="Parallel ffmpeg decodes (0 = auto).")] = 0,
    cpu_threads: Annotated[int, typer.Option("--cpu-threads", help="CPU inference threads (0 = all cores).")] = 0,
    report: Annotated[Optional[Path], typer.Option("--report", help="Write a per-file JSON record of the run here.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the run record as JSON on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only errors and the summary on stderr.")] = False,
    show_traceback: Annotated[bool, typer.Option("--traceback", help="Show tracebacks for errors (may be long).")] = False,
) -> None:
    """Transcribe recordings; writes <name>.txt/.srt/.json … next to each input (or under --output-dir)."""

    def body(console):  # type: ignore[no-untyped-def]
        fmts = parse_formats(formats)
        settings = TranscribeSettings(
            inputs=tuple(paths),
            output_dir=output_dir,
            formats=fmts,
            engine=EngineSettings(model=model, device=device, compute_type=compute_type, cpu_threads=cpu_threads),
            decode=DecodeSettings(
                task=task,
                language=language.lower() if language else None,
                beam_size=beam_size,
                word_timestamps=bool(SUBTITLE_FORMATS.intersection(fmts)) or OutputFormat.JSON in fmts,
                batch_size=batch_size,
            ),
            overwrite=overwrite,
            recursive=recursive,
            decode_workers=decode_workers,
            report_path=report,
        )
        return _run_transcribe(settings, console, quiet=quiet, json_out=json_out)

    raise typer.Exit(run_guarded(body, show_traceback))


def _run_transcribe(settings: TranscribeSettings, console, quiet: bool, json_out: bool) -> ExitCode:  # type: ignore[no-untyped-def]
    """Drive a run: progress while files finish, then summary, report and exit code.

    An interrupt still prints and records what finished before it.
    """
    import json

    from carevoice.pipeline import FileStatus, start_run
    from carevoice.report import ProgressView, RunSummary, summary_line, write_report

    started = time.monotonic()
    run = start_run(settings)
    summary = RunSummary(model=run.transcriber.engine.ref.model_id if run.transcriber else settings.engine.model)
    if run.transcriber is not None:
        engine = run.transcriber.engine
        summary.device = f"{engine.device} ({engine.compute_type})"
        if not quiet:
            console.print(
                f"[dim]{len(run.jobs)} file(s) to transcribe on {summary.device} ({run.device_note}); "
                f"model {engine.ref.model_id} from {engine.ref.origin}[/dim]"
            )
    code = ExitCode.OK
    with ProgressView(console, run.total, quiet) as view:
        try:
            for result in run.results():
                summary.results.append(result)
                view.update(result)
        except (KeyboardInterrupt, Interrupted) as exc:
            summary.interrupted = True
            code = exc.exit_code if isinstance(exc, Interrupted) else ExitCode.INTERRUPTED
    summary.wall_s = time.monotonic() - started
    if run.transcriber is not None:
        stats = run.transcriber.stats
        summary.engine_calls, summary.chunks, summary.redecoded_chunks = stats.engine_calls, stats.chunks, stats.redecoded_chunks
    console.print(summary_line(summary))
    if settings.report_path is not None:
        write_report(settings.report_path, summary)
    if json_out:
        typer.echo(json.dumps(summary.to_dict(), ensure_ascii=False, indent=2))
    if code is ExitCode.OK and summary.count(FileStatus.FAILED):
        code = ExitCode.FAILED
    return code


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
