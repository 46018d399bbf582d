"""`carevoice transcribe`: options -> settings -> a planned run (or only its plan, --dry-run) ->
progress, summary, report -> exit code.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape

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
    QuietOption,
    RecursiveOption,
    TaskOption,
    TracebackOption,
    ZhScriptOption,
    text_choices,
    transcribe_settings,
)
from carevoice.errors import CareVoiceError, ExitCode, Interrupted
from carevoice.languages import LanguageChoice, resolve_language
from carevoice.results import FileStatus
from carevoice.settings import (
    DEFAULT_BEAM_SIZE,
    DEFAULT_MODEL,
    Device,
    Task,
    TranscribeSettings,
    parse_shard,
)

if TYPE_CHECKING:
    from carevoice.run.pipeline import Drain, RunStats


def transcribe(
    ctx: typer.Context,
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
    glossary: GlossaryOption = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo finished files and replace existing outputs.")] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Only say what a run would do with each file (transcribe, skip, redo and why, try again, fail) and where each option "
            "came from (command line, a folder's carevoice.toml, default), on stdout; touch nothing. Exit 1 if a file would fail "
            "(a file that failed last time and is unchanged counts), else 0.",
        ),
    ] = False,
    recursive: RecursiveOption = True,
    decode_workers: DecodeWorkersOption = 0,
    cpu_threads: CpuThreadsOption = 0,
    report: Annotated[Optional[Path], typer.Option("--report", help="Write the run's report here: a page to open in a browser if the name ends in .html, else JSON; into an existing folder, a page of each run's own and an index.html of them.")] = None,
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
    """Transcribe recordings; writes <name>.txt/.srt/.json … next to each input (or under --output-dir).

    The options that shape the text (-l, --zh-script, -m, -f, --task, --beam-size, --glossary) come from the
    command line, else from the nearest carevoice.toml in or above each recording's folder, else
    their defaults (docs/settings.md). Exit codes: 0 all done or skipped, 1 a file failed (with
    --dry-run: would fail), 2 bad options or a bad carevoice.toml, 3 setup, 130 interrupted.
    """

    def body(console):  # type: ignore[no-untyped-def]
        chosen = resolve_language(language) if language else None
        choices = text_choices(ctx, language=language, zh_script=zh_script, model=model, formats=formats, task=task, beam_size=beam_size, glossary=glossary)
        settings = transcribe_settings(paths, choices, output_dir, device, gpus, compute_type, batch_size, recursive, decode_workers, cpu_threads)
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


def _dry_run(settings: TranscribeSettings, console, json_out: bool) -> ExitCode:  # type: ignore[no-untyped-def]
    """Plan only: the options of each group of files and where each came from, one line per file
    and a count per action, on stdout (with --json: the plan as JSON on stdout, the lines on
    stderr). Nothing is read beyond what a plan needs (records, stats, and a file's bytes only when
    its stat changed), nothing is written. Exit 1 when the run would fail a file."""
    # not at import: `carevoice --help` and `health` start in 0.08 s (0.15 s with these at the top)
    from carevoice.render.plans import plan_counts_line, plan_exit_code, plan_lines, plan_to_dict
    from carevoice.render.words import stdout_console

    # and it loads numpy and most of carevoice (0.1-0.2 s):
    from carevoice.run.planning import plan_run

    plan = plan_run(settings)
    out = console if json_out else stdout_console()
    for line in plan_lines(plan):
        out.print(line, highlight=False)
    out.print(plan_counts_line(plan), highlight=False)
    if json_out:
        typer.echo(json.dumps(plan_to_dict(plan), ensure_ascii=False, indent=2))
    return plan_exit_code(plan)


def _run_transcribe(
    settings: TranscribeSettings, console, quiet: bool, json_out: bool, language: LanguageChoice | None = None  # type: ignore[no-untyped-def]
) -> ExitCode:
    """Drive a run: progress while files finish, then summary, report and exit code.

    An interrupt still prints and records what finished before it, and so does an unexpected error
    while results arrive (which then ends the command as an internal error).
    """
    # not at import: `carevoice --help` and `health` start in 0.08 s (0.15 s with these at the top)
    from carevoice.engine.cpus import cpu_budget_here
    from carevoice.engine.devices import DeviceChoice, engines_label
    from carevoice.render import charts
    from carevoice.render.progress import ProgressView, Timeline, gpu_live_text
    from carevoice.render.summaries import RunSummary, files_ahead, is_html, summary_line, write_report
    from carevoice.render.words import placement_note

    # and it loads numpy and most of carevoice (0.1-0.2 s):
    from carevoice.run.runs import start_run

    started = time.monotonic()
    started_at = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
    if settings.ray_address is not None:
        settings.validate()  # usage errors before Ray is even imported
        # not at import: it loads numpy and most of carevoice (0.1-0.2 s); --help starts in 0.08 s
        from carevoice.run.distributed import start_ray_run

        run = start_ray_run(settings)
    else:
        run = start_run(settings)
    summary = RunSummary(results=run.finished, model=run.transcriber.engine.ref.model_id if run.transcriber else settings.engine.model)
    summary.extra["started"] = started_at
    summary.extra["options"] = settings.options()
    if settings.report_path is not None and is_html(settings.report_path) and not quiet:

        if not charts.available():
            console.print(f"[dim]--report {escape(str(settings.report_path))}: no charts in it without matplotlib ({escape(charts.PLOT_EXTRA_HINT)})[/dim]")
    if run.transcriber is not None and run.placement is not None:
        engine = run.transcriber.engine
        summary.device = engines_label(run.transcriber.engines)
        fell_back = isinstance(run.placement, DeviceChoice) and run.placement.fell_back
        if not quiet or fell_back:  # a fallback is a warning, even with -q
            console.print(
                f"[dim]{files_ahead(len(run.jobs), run.settled)} on {summary.device} ({escape(placement_note(run.placement, cpu_budget_here()))}); "
                f"model {escape(engine.ref.model_id)} from {escape(engine.ref.origin)}{escape(language_note(settings, language))}[/dim]"
            )
    elif run.transcriber is not None and not quiet:
        console.print(f"[dim]{files_ahead(len(run.jobs), run.settled, 'to complete from their saved transcripts')}; no model loaded[/dim]")
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

        def on_stop(drain: Drain) -> None:  # Ctrl-C or SIGTERM: the batch in progress is finished and written first
            console.print(f"[yellow]interrupted[/yellow]: {escape(drain.describe())}; {drain.by} again drops the batch", highlight=False)

        failure: Exception | None = None
        try:
            for _ in run.results(on_progress, on_stop):
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
        summary.rendered_files, summary.rendered_audio_s = stats.files_rendered, stats.audio_rendered_s
        if len(stats.calls_per_engine) > 1:
            summary.extra["engine_calls_per_engine"] = list(stats.calls_per_engine)
    ray_log = run.transcriber.log_path if run.transcriber is not None else None
    if ray_log is not None and ray_log.exists() and not quiet:
        console.print(f"[dim]Ray's own messages: {escape(str(ray_log))}[/dim]")
    console.print(summary_line(summary))
    if settings.report_path is not None:
        try:
            written = write_report(settings.report_path, summary)
            if written != settings.report_path and not quiet:  # a folder was named: say which page is this run's
                console.print(f"[dim]report: {escape(str(written))}[/dim]")
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
    # not at import: `carevoice --help` and `health` start in 0.08 s (0.15 s with these at the top)
    from carevoice.engine.devices import DeviceChoice
    from carevoice.engine.gpu_stats import GpuSampler
    from carevoice.engine.nvml import unavailable_message
    from carevoice.render.progress import gpu_live_text

    if run.transcriber is None or run.transcriber.engine.device != "cuda" or not isinstance(run.placement, DeviceChoice):
        return None
    sampler = GpuSampler(on_sample=lambda reading: view.refresh(gpu_live_text(reading)), cuda_indices=run.placement.gpus, origin=origin).start()
    if not sampler.available and not quiet:
        console.print(f"[dim]{escape(unavailable_message(sampler.reason))}: GPU utilisation not reported[/dim]")
    return sampler
