"""`carevoice health`: is the watcher beating? (a container's HEALTHCHECK; cheap: no model, no numpy).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from carevoice.settings import (
    DEFAULT_HEALTH_MAX_AGE_S,
    ENV_HEARTBEAT,
    default_heartbeat,
)


def health(
    heartbeat: Annotated[
        Optional[Path], typer.Option("--heartbeat", envvar=ENV_HEARTBEAT, help="The watcher's heartbeat file (as given to carevoice watch).")
    ] = None,
    max_age: Annotated[
        float,
        typer.Option("--max-age", help="Seconds without a beat after which the watcher counts as stuck (it beats while it plans, decodes and transcribes too)."),
    ] = DEFAULT_HEALTH_MAX_AGE_S,
) -> None:
    """Tell whether a `carevoice watch` is alive and working (for a container's HEALTHCHECK).

    Exit 0 and one line when it beats, 1 and the reason when it is stuck, stopped or not running
    (killed: where its process can be looked for, on the same host and in the same pid namespace).
    """
    # not at import: `carevoice --help` and `health` start in 0.08 s (0.15 s with these at the top)
    from carevoice.watch.heartbeat import health as judge
    from carevoice.watch.heartbeat import read_beat, writer_alive

    beat = read_beat(heartbeat or default_heartbeat())
    ok, line = judge(beat, time.time(), max_age, alive=writer_alive(beat))
    typer.echo(line, err=not ok)
    raise typer.Exit(0 if ok else 1)
