"""`carevoice watch`: options -> WatchSettings -> the service, its lines timed on stderr.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from carevoice import interrupts
from carevoice.cli.guard import run_guarded
from carevoice.cli.options import (
    DEFAULT_FORMATS_TEXT,
    BatchSizeOption,
    BeamSizeOption,
    ComputeTypeOption,
    CpuThreadsOption,
    DecodeWorkersOption,
    DeviceOption,
    FormatsOption,
    GlossaryOption,
    GpusOption,
    LanguageOption,
    ModelOption,
    OutputDirOption,
    RecursiveOption,
    TaskOption,
    TracebackOption,
    ZhScriptOption,
    text_choices,
    transcribe_settings,
)
from carevoice.settings import (
    DEFAULT_BEAM_SIZE,
    DEFAULT_GATHER_S,
    DEFAULT_MODEL,
    DEFAULT_SETTLE_S,
    DEFAULT_SETTLE_UNSIZED_S,
    ENV_HEARTBEAT,
    Device,
    Task,
    WatchSettings,
    default_heartbeat,
    parse_duration,
)

WATCH_INTERRUPTED_HINT = "the watcher stopped before it started watching; nothing was changed — start it again"


def watch(
    ctx: typer.Context,
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
    settle_unsized: Annotated[
        Optional[str],
        typer.Option(
            "--settle-unsized",
            metavar="DURATION",
            help=f"As --settle, for formats that do not state their length, where a stalled copy looks whole: streamed WAV, "
            f"MP3 without a Xing header, Ogg, browser WebM, AAC, … (default: {DEFAULT_SETTLE_UNSIZED_S:g}s, or --settle if longer; "
            "see docs/watch.md).",
        ),
    ] = None,
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
    glossary: GlossaryOption = None,
    recursive: RecursiveOption = True,
    decode_workers: DecodeWorkersOption = 0,
    cpu_threads: CpuThreadsOption = 0,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only errors and the service's own lines on stderr.")] = False,
    show_traceback: TracebackOption = False,
) -> None:
    """Transcribe recordings as they arrive: first everything not yet done, then new and changed files.

    Runs until SIGTERM or Ctrl-C (exit 0), which end it once the batch in progress is finished and
    its files written (a second signal: at once); a restart resumes. Lines on stderr carry the time;
    no transcript text is ever logged. A crash (a bug) leaves its traceback on stderr and beside
    the heartbeat (HEARTBEAT.crash.txt), and exits 1. Each folder's carevoice.toml sets the options
    that shape the text which the command line does not give (docs/settings.md).
    """
    # not at import: `carevoice --help` and `health` start in 0.08 s (0.15 s with these at the top)
    from carevoice.engine.cpus import cpu_budget_here
    from carevoice.render.words import file_line, placement_note, printable
    from carevoice.watch.log import WatchLog

    beat_path = heartbeat or default_heartbeat()

    def body(console):  # type: ignore[no-untyped-def]
        # not at import: it loads numpy and most of carevoice (0.1-0.2 s)
        from carevoice.watch.service import Service

        settle_s = parse_duration(settle, "--settle")
        unsized_s = (
            max(DEFAULT_SETTLE_UNSIZED_S, settle_s) if settle_unsized is None else parse_duration(settle_unsized, "--settle-unsized")
        )
        settings = WatchSettings(
            transcribe=transcribe_settings(
                folders, text_choices(ctx, language=language, zh_script=zh_script, model=model, formats=formats, task=task, beam_size=beam_size, glossary=glossary),
                output_dir, device, gpus, compute_type, batch_size, recursive, decode_workers, cpu_threads,
            ),  # fmt: skip
            settle_s=settle_s,
            settle_unsized_s=unsized_s,
            poll_s=None if poll is None else parse_duration(poll, "--poll"),
            gather_s=parse_duration(gather, "--gather"),
            report_dir=report_dir,
            heartbeat=beat_path,
        )

        def say(text: str) -> None:
            stamp = datetime.now().astimezone().isoformat(timespec="seconds")
            # A stop signal waits for the line: landing inside rich's print, it left the line in
            # rich's buffer, and the next line printed it a second time.
            with interrupts.deferred():
                console.print(f"[dim]{stamp}[/dim] {text}", highlight=False)

        def on_result(result) -> None:  # type: ignore[no-untyped-def]
            if result.needs_person is not None or not quiet:  # failed, no speech heard, an edit kept aside
                say(file_line(result))

        log = WatchLog(
            note=lambda text: say(escape(printable(text))),
            result=on_result,
            waiting=lambda path, why: None if quiet else say(
                f"[yellow]waiting[/yellow] {escape(printable(str(path)))}: {escape(printable(why))} — tried again once it changes"
            ),
            loaded=lambda ref, device, choice: say(
                escape(printable(f"model {ref.model_id} from {ref.origin} on {device} ({placement_note(choice, cpu_budget_here())})"))
            ),
            held=lambda path, why: (
                None if quiet else say(f"[yellow]waiting[/yellow] {escape(printable(str(path)))}: {escape(printable(why))}")
            ),
        )
        return Service(settings, log).run()

    raise typer.Exit(run_guarded(body, show_traceback, WATCH_INTERRUPTED_HINT, crash_log=crash_log_path(beat_path)))


def crash_log_path(heartbeat: Path) -> Path:
    """Where a crash's traceback is kept: beside the heartbeat (`carevoice-watch.json` -> `carevoice-watch.crash.txt`)."""
    return heartbeat.with_suffix(".crash.txt")
