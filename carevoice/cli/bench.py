"""`carevoice bench`: time the user's files per device and runner, show the table (and a plot).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from carevoice.cli.guard import run_guarded
from carevoice.errors import ExitCode
from carevoice.languages import resolve_language
from carevoice.settings import (
    DEFAULT_BEAM_SIZE,
    DEFAULT_GPU_PROBE_TIMEOUT_S,
    DEFAULT_MODEL,
    ENV_MODEL,
    BenchSettings,
    DecodeSettings,
    EngineSettings,
    parse_devices,
)

BENCH_INTERRUPTED_HINT = "the bench stopped before its table; nothing was written — rerun it (--runs 1 or fewer files take less time)"


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
    # not at import: `carevoice --help` and `health` start in 0.08 s (0.15 s with these at the top)
    from carevoice.render.bench_tables import bench_to_json, print_bench

    def body(console):  # type: ignore[no-untyped-def]
        # not at import: it loads numpy and most of carevoice (0.1-0.2 s); --help starts in 0.08 s
        from carevoice.commands.bench import run_bench

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
            # not at import: matplotlib, the plot extra, only for --plot
            from carevoice.render.bench_plot import check_plot_path

            settings.validate()
            check_plot_path(plot)
        result = run_bench(settings, say=lambda line: console.print(f"[dim]{escape(line)}[/dim]"))
        print_bench(console, result)
        if json_out:
            typer.echo(bench_to_json(result))
        if plot is not None:  # after --json: a plot that cannot be written loses no timing
            # not at import: matplotlib, the plot extra, only for --plot
            from carevoice.render.bench_plot import write_bench_plot

            written = write_bench_plot(plot, result.to_dict())
            console.print(f"[dim]plot written to {escape(str(written.plot))}, its data to {escape(str(written.data))}[/dim]", soft_wrap=True)
        if not result.any_device_works:
            console.print("[red]error[/red]: no requested device could run the benchmark (see the table)")
            return ExitCode.SETUP
        return ExitCode.OK

    raise typer.Exit(run_guarded(body, show_traceback, BENCH_INTERRUPTED_HINT))
