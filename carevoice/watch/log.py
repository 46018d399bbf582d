"""Where a watcher's lines go: the caller's callbacks (the CLI adds times and colours; tests keep
the lines). The service and its ledger never print.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from carevoice.engine.devices import DeviceChoice
from carevoice.engine.models import ModelRef
from carevoice.results import FileResult


@dataclass(frozen=True)
class WatchLog:
    """Where the service's lines go (the CLI adds times and colours).

    Attributes:
        note: A line about the service itself (start, mode, a batch of files, stop).
        result: A file finished: done, failed, or skipped for a reason worth a line.
        waiting: A file found incomplete (path, why): it is tried again once it changes.
        held: A file that has settled but must wait yet (path, why): a local process still writes
            it, or its format does not state its length (carevoice.watch.uploads).
        loaded: The model is loaded: what was loaded, the engines (``cpu (int8)``), and where
            it runs and why.
    """

    note: Callable[[str], None]
    result: Callable[[FileResult], None]
    waiting: Callable[[Path, str], None]
    loaded: Callable[[ModelRef, str, DeviceChoice], None]
    held: Callable[[Path, str], None] = lambda path, why: None
