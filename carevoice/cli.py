"""The Typer app: parse -> settings -> call core -> render -> exit code. The only place that exits.

Importing this module must stay cheap: faster_whisper and ctranslate2 load only when a command
needs a model, so `--help` is instant and `doctor` works when they are broken.
"""

from __future__ import annotations

import os
import sys
import time
import traceback as tb
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from carevoice import __version__, interrupts
from carevoice.errors import CareVoiceError, ExitCode, Interrupted
from carevoice.languages import LanguageChoice, resolve_language
from carevoice.results import FileStatus
from carevoice.settings import (
    DEFAULT_BEAM_SIZE,
    DEFAULT_GATHER_S,
    DEFAULT_GPU_PROBE_TIMEOUT_S,
    DEFAULT_HEALTH_MAX_AGE_S,
    DEFAULT_MODEL,
    DEFAULT_SETTLE_S,
    ENV_HEARTBEAT,
    ENV_DEVICE,
    ENV_MODEL,
    SUBTITLE_FORMATS,
    BenchSettings,
    DecodeSettings,
    Device,
    DoctorSettings,
    EngineSettings,
    OutputFormat,
    Task,
    TranscribeSettings,
    WatchSettings,
    ZhScript,
    default_heartbeat,
    parse_duration,
    parse_devices,
    parse_formats,
    parse_gpus,
    parse_shard,
)

app = typer.Typer(
    name="carevoice",
    help="Batch transcription of care-work recordings (faster-whisper, GPU or CPU, offline by default).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals may hold patient speech
    add_completion=False,
    # Help texts are plain text: with rich markup, "pip install 'carevoice[ray]'" lost its "[ray]".
    rich_markup_mode=None,
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
    # Before anything starts CUDA: number GPUs in PCI order, as NVML and nvidia-smi do, so that
    # "GPU 1" in a report is the GPU CUDA calls 1 (carevoice.gpu.visible_gpus). A user's own
    # setting is kept.
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")


BENCH_INTERRUPTED_HINT = "the bench stopped before its table; nothing was written — rerun it (--runs 1 or fewer files take less time)"
DOCTOR_INTERRUPTED_HINT = "the checks stopped; nothing was changed — rerun carevoice doctor"


def run_guarded(body, show_traceback: bool, interrupted_hint: str = Interrupted.hint) -> int:  # type: ignore[no-untyped-def]
    """Run a command body, mapping every expected failure to one clean line and an exit code.

    ``interrupted_hint``: what the command's user can do after Ctrl-C (transcribe's: rerun to finish).
    """
    # SIGINT -> KeyboardInterrupt, SIGTERM -> Interrupted; both held while a file's outputs are written.
    restore_signals = interrupts.install()
    try:
        from carevoice.report import stderr_console  # imports rich's rendering: long enough to be interrupted

        console = stderr_console()
    except (Interrupted, KeyboardInterrupt) as exc:  # nothing has started yet
        restore_signals()
        print(f"interrupted: {interrupted_hint}", file=sys.stderr)
        return int(exc.exit_code if isinstance(exc, Interrupted) else ExitCode.INTERRUPTED)
    except BaseException:
        restore_signals()
        raise
    try:
        return int(body(console))
    except (Interrupted, KeyboardInterrupt) as exc:
        # Only interrupts outside the per-file loop get here (that loop prints its own summary).
        console.print(f"[yellow]interrupted[/yellow]: {escape(interrupted_hint)}", highlight=False)
        return int(exc.exit_code if isinstance(exc, Interrupted) else ExitCode.INTERRUPTED)
    except CareVoiceError as exc:
        if show_traceback:
            console.print(tb.format_exc(), markup=False)
        console.print(f"[red]error[/red]: {escape(exc.message)}", highlight=False)
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
        restore_signals()


# Options that transcribe and watch share: what each file gets.
FormatsOption = Annotated[str, typer.Option("-f", "--format", help="Comma list of txt,srt,vtt,json,tsv (or all).")]
OutputDirOption = Annotated[
    Optional[Path], typer.Option("-o", "--output-dir", help="Write outputs under this folder, mirroring the input tree.")
]
ModelOption = Annotated[
    str, typer.Option("-m", "--model", envvar=ENV_MODEL, help="Model folder, or a name: base (offline default), tiny.en, large-v3, turbo, …")
]
DeviceOption = Annotated[Device, typer.Option("--device", envvar=ENV_DEVICE, help="auto = CUDA when available, else CPU.")]
GpusOption = Annotated[
    Optional[str],
    typer.Option(
        "--gpus",
        metavar="0,2",
        help="CUDA devices to use, one engine each, fed from one batch queue (default: every GPU CTranslate2 sees; "
        "not with --device cpu).",
    ),
]
ComputeTypeOption = Annotated[
    Optional[str], typer.Option("--compute-type", help="CTranslate2 compute type (default: float16 on CUDA, int8 on CPU).")
]
BatchSizeOption = Annotated[Optional[int], typer.Option("--batch-size", help="Speech chunks per batch (default: 16 CUDA, 8 CPU).")]
BeamSizeOption = Annotated[int, typer.Option("--beam-size", help="Beam search width.")]
LanguageOption = Annotated[
    Optional[str],
    typer.Option(
        "-l",
        "--language",
        help="Language: a code (en, zh, yue), a name (english, mandarin, cantonese) or a tag (zh-TW = zh with "
        "--zh-script tw, zh-HK, zh-CN, en-US); default: detect per file.",
    ),
]
TaskOption = Annotated[Task, typer.Option("--task", help="transcribe, or translate to English.")]
ZhScriptOption = Annotated[
    Optional[ZhScript],
    typer.Option(
        "--zh-script",
        help="Script of Chinese text (zh, yue): keep = as the model wrote it; tw = Traditional, Taiwan phrasing; "
        "hk = Traditional, Hong Kong; simplified. Default: keep, or what a --language tag such as zh-TW says.",
    ),
]
RecursiveOption = Annotated[bool, typer.Option("--recursive/--no-recursive", help="Walk sub-folders.")]
DecodeWorkersOption = Annotated[int, typer.Option("--decode-workers", help="Parallel ffmpeg decodes (0 = auto).")]
CpuThreadsOption = Annotated[int, typer.Option("--cpu-threads", help="CPU inference threads (0 = all cores).")]
QuietOption = Annotated[bool, typer.Option("-q", "--quiet", help="Only errors and the summary on stderr.")]
TracebackOption = Annotated[bool, typer.Option("--traceback", help="Show tracebacks for errors (may be long).")]
DEFAULT_FORMATS_TEXT = "txt,srt,json"


@app.command()
def transcribe(
    paths: Annotated[list[Path], typer.Argument(help="Audio/video files and folders (folders are walked).", show_default=False)],
    formats: FormatsOption = DEFAULT_FORMATS_TEXT,
    output_dir: OutputDirOption = None,
    model: ModelOption = DEFAULT_MODEL,
    device: DeviceOption = Device.AUTO,
    gpus: GpusOption = None,
    compute_type: ComputeTypeOption = None,
    batch_size: BatchSizeOption = None,
    beam_size: BeamSizeOption = DEFAULT_BEAM_SIZE,
    language: LanguageOption = None,
    task: TaskOption = Task.TRANSCRIBE,
    zh_script: ZhScriptOption = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo finished files and replace existing outputs.")] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Only say what a run would do with each file (transcribe, skip, redo and why, fail); touch nothing."
        ),
    ] = False,
    recursive: RecursiveOption = True,
    decode_workers: DecodeWorkersOption = 0,
    cpu_threads: CpuThreadsOption = 0,
    report: Annotated[Optional[Path], typer.Option("--report", help="Write the run's report here: a page to open in a browser if the name ends in .html, else JSON.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the run record as JSON on stdout.")] = False,
    quiet: QuietOption = False,
    shard: Annotated[
        Optional[str],
        typer.Option(
            "--shard",
            metavar="K/N",
            help="Do only shard K of N, numbered from 0 (0/4 … 3/4): a fixed share of the files, chosen by a hash "
            "of each file's path below the folder named (or its name), the same on every machine. "
            "For job arrays: run K = 0 … N-1 on the same inputs.",
        ),
    ] = None,
    ray: Annotated[
        Optional[str],
        typer.Option(
            "--ray",
            metavar="ADDRESS",
            help="Run on a Ray cluster (pip install 'carevoice[ray]'): auto ($RAY_ADDRESS, or the cluster `ray start` "
            "made here), local (a new Ray on this machine), HOST:PORT or ray://HOST:10001. The workers write the "
            "outputs: inputs and outputs must be on a filesystem every node shares, at the same path.",
        ),
    ] = None,
    ray_actors: Annotated[
        int, typer.Option("--ray-actors", help="With --ray: actors (models) to run (0 = one per GPU, or per free CPU without GPUs).")
    ] = 0,
    ray_files_per_task: Annotated[
        int, typer.Option("--ray-files-per-task", help="With --ray: files per actor call (0 = 4 batches' worth).")
    ] = 0,
    show_traceback: TracebackOption = False,
) -> None:
    """Transcribe recordings; writes <name>.txt/.srt/.json … next to each input (or under --output-dir)."""

    def body(console):  # type: ignore[no-untyped-def]
        chosen = resolve_language(language) if language else None
        settings = transcribe_settings(
            paths, formats, output_dir, model, device, gpus, compute_type, batch_size, beam_size, chosen, task, zh_script,
            recursive, decode_workers, cpu_threads,
        )  # fmt: skip
        settings = replace(
            settings,
            overwrite=overwrite,
            report_path=report,
            shard=None if shard is None else parse_shard(shard),
            ray_address=ray,
            ray_actors=ray_actors,
            ray_files_per_task=ray_files_per_task,
            dry_run=dry_run,
        )
        if dry_run:
            return _dry_run(settings, console, json_out=json_out)
        return _run_transcribe(settings, console, quiet=quiet, json_out=json_out, language=chosen)

    raise typer.Exit(run_guarded(body, show_traceback))


def transcribe_settings(
    paths: list[Path],
    formats: str,
    output_dir: Path | None,
    model: str,
    device: Device,
    gpus: str | None,
    compute_type: str | None,
    batch_size: int | None,
    beam_size: int,
    language: LanguageChoice | None,
    task: Task,
    zh_script: ZhScript | None,
    recursive: bool,
    decode_workers: int,
    cpu_threads: int,
) -> TranscribeSettings:
    """What each file gets, from the options transcribe and watch share."""
    fmts = parse_formats(formats)
    return TranscribeSettings(
        inputs=tuple(paths),
        output_dir=output_dir,
        formats=fmts,
        engine=EngineSettings(model=model, device=device, compute_type=compute_type, cpu_threads=cpu_threads),
        decode=DecodeSettings(
            task=task,
            language=language.code if language else None,
            beam_size=beam_size,
            word_timestamps=bool(SUBTITLE_FORMATS.intersection(fmts)) or OutputFormat.JSON in fmts,
            batch_size=batch_size,
            zh_script=zh_script or ZhScript((language.zh_script if language else None) or ZhScript.KEEP.value),  # an explicit --zh-script wins
        ),
        recursive=recursive,
        decode_workers=decode_workers,
        gpus=None if gpus is None else parse_gpus(gpus),
    )


def _dry_run(settings: TranscribeSettings, console, json_out: bool) -> ExitCode:  # type: ignore[no-untyped-def]
    """Plan only: one line per file and a count per action; nothing is read beyond what a plan
    needs (records, stats, and a file's bytes only when its stat changed), nothing is written."""
    import json

    from carevoice.report import plan_counts_line, plan_lines, plan_to_dict
    from carevoice.runs import plan_run

    plan = plan_run(settings)
    for line in plan_lines(plan):
        console.print(line, highlight=False)
    console.print(plan_counts_line(plan), highlight=False)
    if json_out:
        typer.echo(json.dumps(plan_to_dict(plan), ensure_ascii=False, indent=2))
    return ExitCode.OK


def _run_transcribe(
    settings: TranscribeSettings, console, quiet: bool, json_out: bool, language: LanguageChoice | None = None  # type: ignore[no-untyped-def]
) -> ExitCode:
    """Drive a run: progress while files finish, then summary, report and exit code.

    An interrupt still prints and records what finished before it, and so does an unexpected error
    while results arrive (which then ends the command as an internal error).
    """
    import json

    from carevoice.devices import DeviceChoice
    from carevoice.pipeline import RunStats
    from carevoice.report import (
        ProgressView,
        RunSummary,
        Timeline,
        engines_text,
        gpu_live_text,
        is_html,
        placement_note,
        summary_line,
        write_report,
    )
    from carevoice.runs import start_run

    started = time.monotonic()
    started_at = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
    if settings.ray_address is not None:
        settings.validate()  # usage errors before Ray is even imported
        from carevoice.distributed import start_ray_run

        run = start_ray_run(settings)
    else:
        run = start_run(settings)
    summary = RunSummary(results=run.finished, model=run.transcriber.engine.ref.model_id if run.transcriber else settings.engine.model)
    summary.extra["started"] = started_at
    summary.extra["options"] = settings.options()
    if settings.report_path is not None and is_html(settings.report_path) and not quiet:
        from carevoice import charts

        if not charts.available():
            console.print(f"[dim]--report {escape(str(settings.report_path))}: no charts in it without matplotlib ({escape(charts.PLOT_EXTRA_HINT)})[/dim]")
    if run.transcriber is not None and run.placement is not None:
        engine = run.transcriber.engine
        summary.device = engines_text(run.transcriber.engines)
        fell_back = isinstance(run.placement, DeviceChoice) and run.placement.fell_back
        if not quiet or fell_back:  # a fallback is a warning, even with -q
            console.print(
                f"[dim]{len(run.jobs)} file(s) to transcribe on {summary.device} ({escape(placement_note(run.placement))}); "
                f"model {escape(engine.ref.model_id)} from {escape(engine.ref.origin)}{escape(language_note(settings, language))}[/dim]"
            )
    elif run.transcriber is not None and not quiet:
        console.print(f"[dim]{len(run.jobs)} file(s) to complete from their recorded JSON outputs (no model loaded)[/dim]")
    if settings.shard is not None:
        summary.extra["shard"] = {"index": settings.shard.index, "count": settings.shard.count, "files": run.total, "of": run.found}
        if not quiet:
            console.print(f"[dim]shard {settings.shard} (numbered from 0): {run.total} of {run.found} file(s)[/dim]")
    code = ExitCode.OK
    timeline = Timeline(origin=started)
    with ProgressView(console, run.total, quiet) as view:
        sampler = _start_gpu_sampler(run, view, console, quiet, origin=started)
        shown = 0

        def show_finished() -> None:
            """A line for each file finished since the last call (run.finished is complete even
            after an interrupt, while the loop below may not have seen the last one)."""
            nonlocal shown
            while shown < len(run.finished):
                result = run.finished[shown]
                shown += 1
                view.update(result, gpu_live_text(sampler.latest()) if sampler else None)
                timeline.add(view.audio_done_s, view.files_done)

        def on_progress(stats: RunStats) -> None:
            view.advance(stats.audio_done_s, stats.estimated_audio_s(len(run.jobs)), stats.files_seen >= len(run.jobs), stats.audio_rendered_s)
            timeline.add(view.audio_done_s, view.files_done)

        failure: Exception | None = None
        try:
            for _ in run.results(on_progress):
                show_finished()
        except (KeyboardInterrupt, Interrupted) as exc:
            summary.interrupted = True
            code = exc.exit_code if isinstance(exc, Interrupted) else ExitCode.INTERRUPTED
            show_finished()
        except Exception as exc:  # a bug, or a Ray task error: keep the summary and report of what finished
            failure = exc
            show_finished()
        finally:
            if sampler is not None:
                summary.extra["gpu"] = sampler.stop().to_dict()
    summary.wall_s = time.monotonic() - started
    timeline.close()
    summary.extra["timeline"] = timeline.to_dict()
    if run.transcriber is not None:
        stats = run.transcriber.stats
        summary.engine_calls, summary.chunks = stats.engine_calls, stats.chunks
        summary.widened_chunks, summary.continued_chunks = stats.widened_chunks, stats.continued_chunks
        summary.redecoded_chunks = stats.redecoded_chunks
        if len(stats.calls_per_engine) > 1:
            summary.extra["engine_calls_per_engine"] = list(stats.calls_per_engine)
    ray_log = run.transcriber.log_path if run.transcriber is not None else None
    if ray_log is not None and ray_log.exists() and not quiet:
        console.print(f"[dim]Ray's own messages: {escape(str(ray_log))}[/dim]")
    console.print(summary_line(summary))
    if settings.report_path is not None:
        try:
            write_report(settings.report_path, summary)
        except (OSError, CareVoiceError) as exc:  # the transcripts are written; only the report is missing
            why = exc.message if isinstance(exc, CareVoiceError) else exc.strerror or type(exc).__name__
            console.print(
                f"[red]error[/red]: cannot write --report {escape(str(settings.report_path))} ({escape(why)}) — choose a writable path"
            )
            if code is ExitCode.OK:  # an interrupt's own exit code stays
                code = ExitCode.FAILED
    if json_out:
        typer.echo(json.dumps(summary.to_dict(), ensure_ascii=False, indent=2))
    if failure is not None:
        raise failure
    if code is ExitCode.OK and summary.count(FileStatus.FAILED):
        code = ExitCode.FAILED
    return code


def language_note(settings: TranscribeSettings, language: LanguageChoice | None) -> str:
    """For the run header, when --language was not given as Whisper's own code: what it became."""
    if language is None or not language.translated:
        return ""
    note = f"; --language {language.given} → {language.code}"
    if language.zh_script is not None:
        note += f", --zh-script {settings.decode.zh_script.value}"
    return note


def _start_gpu_sampler(run, view, console, quiet: bool, origin: float):  # type: ignore[no-untyped-def]
    """NVML utilisation sampling while a CUDA run goes on (None on the CPU); live in the progress bar."""
    from carevoice.devices import DeviceChoice
    from carevoice.gpu import GpuSampler, unavailable_message
    from carevoice.report import gpu_live_text

    if run.transcriber is None or run.transcriber.engine.device != "cuda" or not isinstance(run.placement, DeviceChoice):
        return None
    sampler = GpuSampler(on_sample=lambda reading: view.refresh(gpu_live_text(reading)), cuda_indices=run.placement.gpus, origin=origin).start()
    if not sampler.available and not quiet:
        console.print(f"[dim]{escape(unavailable_message(sampler.reason))}: GPU utilisation not reported[/dim]")
    return sampler


WATCH_INTERRUPTED_HINT = "the watcher stopped before it started watching; nothing was changed — start it again"


@app.command()
def watch(
    folders: Annotated[list[Path], typer.Argument(help="Drop folders to watch (sub-folders too, unless --no-recursive).", show_default=False)],
    settle: Annotated[
        str,
        typer.Option(
            "--settle",
            metavar="DURATION",
            help="Take a file only once its size and time have not changed for this long (e.g. 10s, 500ms, 2m); "
            "a file that still turns out incomplete waits for the rest.",
        ),
    ] = f"{DEFAULT_SETTLE_S:g}s",
    poll: Annotated[
        Optional[str],
        typer.Option(
            "--poll",
            metavar="DURATION",
            help="Walk the folders this often instead of listening for file-system events (default: events, or a walk "
            "every 5 s on NFS, SMB, FUSE and other file systems that send none).",
        ),
    ] = None,
    gather: Annotated[
        str, typer.Option("--gather", metavar="DURATION", help="Once a file is ready, wait this long for others to share its batches.")
    ] = f"{DEFAULT_GATHER_S:g}s",
    report_dir: Annotated[
        Optional[Path], typer.Option("--report-dir", help="Write one JSON report per day here (carevoice-watch-YYYY-MM-DD.json).")
    ] = None,
    heartbeat: Annotated[
        Optional[Path],
        typer.Option(
            "--heartbeat",
            envvar=ENV_HEARTBEAT,
            help="The file the watcher rewrites every few seconds, for `carevoice health` (default: /tmp/carevoice-watch-UID.json).",
        ),
    ] = None,
    formats: FormatsOption = DEFAULT_FORMATS_TEXT,
    output_dir: OutputDirOption = None,
    model: ModelOption = DEFAULT_MODEL,
    device: DeviceOption = Device.AUTO,
    gpus: GpusOption = None,
    compute_type: ComputeTypeOption = None,
    batch_size: BatchSizeOption = None,
    beam_size: BeamSizeOption = DEFAULT_BEAM_SIZE,
    language: LanguageOption = None,
    task: TaskOption = Task.TRANSCRIBE,
    zh_script: ZhScriptOption = None,
    recursive: RecursiveOption = True,
    decode_workers: DecodeWorkersOption = 0,
    cpu_threads: CpuThreadsOption = 0,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only errors and the service's own lines on stderr.")] = False,
    show_traceback: TracebackOption = False,
) -> None:
    """Transcribe recordings as they arrive: first everything not yet done, then new and changed files.

    Runs until SIGTERM or Ctrl-C (exit 0), which end it after the file being written; a restart
    resumes. Lines on stderr carry the time; no transcript text is ever logged.
    """

    def body(console):  # type: ignore[no-untyped-def]
        from carevoice.report import file_line, printable
        from carevoice.service import Service, WatchLog

        chosen = resolve_language(language) if language else None
        settings = WatchSettings(
            transcribe=transcribe_settings(
                folders, formats, output_dir, model, device, gpus, compute_type, batch_size, beam_size, chosen, task, zh_script,
                recursive, decode_workers, cpu_threads,
            ),  # fmt: skip
            settle_s=parse_duration(settle, "--settle"),
            poll_s=None if poll is None else parse_duration(poll, "--poll"),
            gather_s=parse_duration(gather, "--gather"),
            report_dir=report_dir,
            heartbeat=heartbeat or default_heartbeat(),
        )

        def say(text: str) -> None:
            stamp = datetime.now().astimezone().isoformat(timespec="seconds")
            # A stop signal waits for the line: landing inside rich's print, it left the line in
            # rich's buffer, and the next line printed it a second time.
            with interrupts.deferred():
                console.print(f"[dim]{stamp}[/dim] {text}", highlight=False)

        def on_result(result) -> None:  # type: ignore[no-untyped-def]
            if result.status is FileStatus.FAILED or not quiet:
                say(file_line(result))

        log = WatchLog(
            note=lambda text: say(escape(printable(text))),
            result=on_result,
            waiting=lambda path, why: None if quiet else say(
                f"[yellow]waiting[/yellow] {escape(printable(str(path)))}: {escape(printable(why))} — tried again once it changes"
            ),
        )
        return Service(settings, log).run()

    raise typer.Exit(run_guarded(body, show_traceback, WATCH_INTERRUPTED_HINT))


@app.command()
def health(
    heartbeat: Annotated[
        Optional[Path], typer.Option("--heartbeat", envvar=ENV_HEARTBEAT, help="The watcher's heartbeat file (as given to carevoice watch).")
    ] = None,
    max_age: Annotated[
        float,
        typer.Option("--max-age", help="Seconds without a beat after which the watcher counts as stuck (raise it if one batch takes longer here)."),
    ] = DEFAULT_HEALTH_MAX_AGE_S,
) -> None:
    """Tell whether a `carevoice watch` is alive and working (for a container's HEALTHCHECK).

    Exit 0 and one line when it beats, 1 and the reason when it is stuck, stopped or not running.
    """
    from carevoice.heartbeat import health as judge
    from carevoice.heartbeat import read_beat

    ok, line = judge(read_beat(heartbeat or default_heartbeat()), time.time(), max_age)
    typer.echo(line, err=not ok)
    raise typer.Exit(0 if ok else 1)


@app.command()
def doctor(
    output_dir: Annotated[Path, typer.Argument(help="The folder transcripts will be written to (checked for write access and space).")] = Path("."),
    model: Annotated[
        str, typer.Option("-m", "--model", envvar=ENV_MODEL, help="The model to check (as for transcribe).")
    ] = DEFAULT_MODEL,
    gpu_timeout: Annotated[
        float, typer.Option("--gpu-timeout", help="Seconds the GPU inference test may take (it runs in a child process).")
    ] = DEFAULT_GPU_PROBE_TIMEOUT_S,
    json_out: Annotated[bool, typer.Option("--json", help="Print the checks as JSON on stdout.")] = False,
    quick: Annotated[
        bool, typer.Option("--quick", help="Only the sub-second checks (python, packages, ffmpeg, NVML, output folder).")
    ] = False,
    show_traceback: Annotated[bool, typer.Option("--traceback", help="Show the traceback of a check that crashed.")] = False,
) -> None:
    """Check that CareVoice works here: Python, packages, ffmpeg and Opus/AAC decoding, model, GPU, output folder.

    Exit 0 when nothing failed (warnings allowed), 1 when a check failed.
    """

    def body(console):  # type: ignore[no-untyped-def]
        import json

        from carevoice.doctor import exit_status, run_checks
        from carevoice.report import checks_to_dict, print_checks

        settings = DoctorSettings(
            output_dir=output_dir, engine=EngineSettings(model=model), gpu_timeout_s=gpu_timeout, quick=quick
        )
        settings.validate()
        results = []
        with console.status("checking…") as status:
            for result in run_checks(settings):
                results.append(result)
                status.update(f"checked {result.name}…")
        if show_traceback:
            for result in results:
                if result.trace:
                    console.print(result.trace, markup=False)
        print_checks(console, results)
        if json_out:
            typer.echo(json.dumps(checks_to_dict(results), ensure_ascii=False, indent=2))
        return exit_status(results)

    raise typer.Exit(run_guarded(body, show_traceback, DOCTOR_INTERRUPTED_HINT))


@app.command()
def bench(
    paths: Annotated[
        Optional[list[Path]], typer.Argument(help="Audio files and folders to time (default: the bundled sample).", show_default=False)
    ] = None,
    devices: Annotated[str, typer.Option("--devices", help="Comma list of devices to compare: cuda, cpu.")] = "cuda,cpu",
    runs: Annotated[int, typer.Option("--runs", help="Timed runs per device (after a warm-up on 5 s of audio).")] = 3,
    model: Annotated[str, typer.Option("-m", "--model", envvar=ENV_MODEL, help="Model folder or name (as for transcribe).")] = DEFAULT_MODEL,
    compute_type: Annotated[
        Optional[str], typer.Option("--compute-type", help="CTranslate2 compute type (default: float16 on CUDA, int8 on CPU).")
    ] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Speech chunks per batch (default: 16 CUDA, 8 CPU).")] = None,
    beam_size: Annotated[int, typer.Option("--beam-size", help="Beam search width.")] = DEFAULT_BEAM_SIZE,
    language: Annotated[Optional[str], typer.Option("-l", "--language", help="Language code; default: detect per file.")] = None,
    word_timestamps: Annotated[
        bool, typer.Option("--word-timestamps/--no-word-timestamps", help="Align words, as transcribe does for srt/vtt/json.")
    ] = True,
    compare: Annotated[bool, typer.Option("--compare", help="Add plain faster-whisper (WhisperModel.transcribe per file) rows.")] = False,
    cpu_threads: Annotated[int, typer.Option("--cpu-threads", help="CPU inference threads (0 = all cores).")] = 0,
    gpu_timeout: Annotated[
        float, typer.Option("--gpu-timeout", help="Seconds the GPU check before the CUDA rows may take.")
    ] = DEFAULT_GPU_PROBE_TIMEOUT_S,
    json_out: Annotated[bool, typer.Option("--json", help="Print every timing, version and hardware fact as JSON on stdout.")] = False,
    plot: Annotated[
        Optional[Path],
        typer.Option(
            "--plot",
            metavar="PATH",
            help="Also draw the results into PATH (.png, .svg, or .html: one self-contained page with a table): RTFx per "
            "device and runner, speedups, GPU use; the --json record goes beside it as <name>.data.json. "
            "Needs pip install 'carevoice[plot]'.",
        ),
    ] = None,
    show_traceback: Annotated[bool, typer.Option("--traceback", help="Show tracebacks for errors (may be long).")] = False,
) -> None:
    """Time transcription of your files on each device (GPU vs CPU), optionally against plain faster-whisper.

    Exit 0 when at least one device worked, 3 when none did.
    """

    def body(console):  # type: ignore[no-untyped-def]
        from carevoice.bench import run_bench
        from carevoice.report import bench_to_json, print_bench

        settings = BenchSettings(
            inputs=tuple(paths or ()),
            devices=parse_devices(devices),
            runs=runs,
            engine=EngineSettings(model=model, compute_type=compute_type, cpu_threads=cpu_threads),
            decode=DecodeSettings(
                language=resolve_language(language).code if language else None,
                beam_size=beam_size,
                word_timestamps=word_timestamps,
                batch_size=batch_size,
            ),
            compare=compare,
            gpu_timeout_s=gpu_timeout,
        )
        if plot is not None:  # a bad --plot must not cost a whole bench first
            from carevoice.bench_plot import check_plot_path

            settings.validate()
            check_plot_path(plot)
        result = run_bench(settings, say=lambda line: console.print(f"[dim]{escape(line)}[/dim]"))
        print_bench(console, result)
        if json_out:
            typer.echo(bench_to_json(result))
        if plot is not None:  # after --json: a plot that cannot be written loses no timing
            from carevoice.bench_plot import write_bench_plot

            written = write_bench_plot(plot, result.to_dict())
            console.print(f"[dim]plot written to {escape(str(written.plot))}, its data to {escape(str(written.data))}[/dim]", soft_wrap=True)
        if not result.any_device_works:
            console.print("[red]error[/red]: no requested device could run the benchmark (see the table)")
            return ExitCode.SETUP
        return ExitCode.OK

    raise typer.Exit(run_guarded(body, show_traceback, BENCH_INTERRUPTED_HINT))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
