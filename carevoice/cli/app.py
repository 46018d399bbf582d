"""The Typer app: the root options and one command per module (carevoice.cli.transcribe, watch,
health, doctor, bench, models), each parse -> settings -> call -> render -> exit code.

Importing this module must stay cheap: faster_whisper and ctranslate2 load only when a command
needs a model, so `--help` is instant and `doctor` works when they are broken.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from carevoice import __version__
from carevoice.cli.bench import bench
from carevoice.cli.doctor import doctor
from carevoice.cli.health import health
from carevoice.cli.models import models_app
from carevoice.cli.transcribe import transcribe
from carevoice.cli.watch import watch
from carevoice.engine.cpus import quiet_blas_environment

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
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")] = False,
) -> None:
    """CareVoice command-line tool."""
    # Before anything starts CUDA: number GPUs in PCI order, as NVML and nvidia-smi do, so that
    # "GPU 1" in a report is the GPU CUDA calls 1 (carevoice.engine.nvml.visible_gpus). A user's own
    # setting is kept.
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")


BENCH_INTERRUPTED_HINT = "the bench stopped before its table; nothing was written — rerun it (--runs 1 or fewer files take less time)"
DOCTOR_INTERRUPTED_HINT = "the checks stopped; nothing was changed — rerun carevoice doctor"


app.command()(transcribe)
app.command()(watch)
app.command()(health)
app.command()(doctor)
app.command()(bench)
app.add_typer(models_app, name="models")


def main() -> None:
    """Console-script entry point."""
    os.environ.update(quiet_blas_environment(os.environ))  # before any command loads numpy (nothing above does)
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
