"""`carevoice models` (the catalogue, what is cached, what to use here) and `carevoice models pull NAME`."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from carevoice.cli.guard import run_guarded
from carevoice.settings import default_cache_dir

PULL_INTERRUPTED_HINT = "the download stopped; run the same command again: it resumes where it stopped"

models_app = typer.Typer(
    help="The model catalogue: what each model needs, what is in the cache, and which to use here.",
    no_args_is_help=False,
    rich_markup_mode=None,
)


@models_app.callback(invoke_without_command=True)
def models(
    ctx: typer.Context,
    language: Annotated[
        str | None,
        typer.Option("-l", "--language", help="The language you will transcribe (zh-TW, en, ...): the recommendation depends on it."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the catalogue as JSON on stdout.")] = False,
    show_traceback: Annotated[bool, typer.Option("--traceback", help="Show the traceback of an unexpected error.")] = False,
) -> None:
    """List the model catalogue: languages, size on disk and in GPU memory, licence, whether it is in
    the cache, and the one recommended for this machine's GPU and the language asked for."""
    if ctx.invoked_subcommand is not None:
        return
    # not at import: `carevoice --help` stays instant (these load rich's tables and NVML)
    from carevoice.commands.models import catalogue_rows, hub_address, largest_gpu_mib, recommend
    from carevoice.render.models import models_to_dict, print_models
    from carevoice.render.words import stdout_console, widen

    def body(console):  # type: ignore[no-untyped-def]
        gpu_mib = largest_gpu_mib()
        recommended = recommend(gpu_mib, language)
        rows = catalogue_rows(default_cache_dir())
        if json_out:
            typer.echo(json.dumps(models_to_dict(rows, recommended, gpu_mib, hub_address()), ensure_ascii=False, indent=2))
            return 0
        out = stdout_console()
        widen(out)
        where = f"for {language} " if language else ""
        where += f"on this GPU ({gpu_mib / 1024:.0f} GiB)" if gpu_mib else "on this CPU (no NVIDIA GPU)"
        print_models(out, rows, recommended, where, hub_address())
        return 0

    raise typer.Exit(run_guarded(body, show_traceback))


@models_app.command("pull")
def pull(
    name: Annotated[str, typer.Argument(help="A catalogue name (see `carevoice models`), e.g. breeze-asr-25 or large-v3.")],
    show_traceback: Annotated[bool, typer.Option("--traceback", help="Show the traceback of an unexpected error.")] = False,
) -> None:
    """Download a model into the cache once, verified file by file against the hub's hashes; then
    `--model NAME` works offline. Resumes an interrupted download; HF_ENDPOINT names a mirror,
    https_proxy a proxy."""
    # not at import: `carevoice --help` stays instant
    from carevoice.commands.models import pull as pull_into
    from carevoice.render.models import PullBar

    def body(console):  # type: ignore[no-untyped-def]
        with PullBar(console) as bar:
            folder = pull_into(name, default_cache_dir(), bar)
        console.print(f"{name} is in {folder}: `--model {name}` now works offline", markup=False, highlight=False)
        return 0

    raise typer.Exit(run_guarded(body, show_traceback, PULL_INTERRUPTED_HINT))
