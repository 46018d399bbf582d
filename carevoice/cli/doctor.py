"""`carevoice doctor`: run the checks, show their table, exit 1 when one failed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from carevoice.cli.guard import run_guarded
from carevoice.settings import (
    DEFAULT_GPU_PROBE_TIMEOUT_S,
    DEFAULT_MODEL,
    ENV_MODEL,
    DoctorSettings,
    EngineSettings,
)

DOCTOR_INTERRUPTED_HINT = "the checks stopped; nothing was changed — rerun carevoice doctor"


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
    # not at import: `carevoice --help` and `health` start in 0.08 s (0.15 s with every command's
    # collaborators at the top); doctor's checks import what they check themselves
    from carevoice.commands.doctor import exit_status, run_checks
    from carevoice.render.checks import checks_to_dict, print_checks

    def body(console):  # type: ignore[no-untyped-def]

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
