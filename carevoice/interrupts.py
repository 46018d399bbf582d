"""Ctrl-C (SIGINT) and SIGTERM become exceptions in the main thread, but never inside a critical section.

The CLI installs the handlers for the length of a command (:func:`install`). The writers wrap the
outputs of one file in :func:`deferred`, so a signal lands before or after a file's set of outputs,
never between two of them: an interrupted run leaves every file either whole or untouched. Without
the handlers installed (a library caller), ``deferred`` changes nothing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from carevoice.errors import ExitCode, Interrupted

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_depth = 0  # nesting of deferred() sections in the main thread
_pending: int | None = None  # a signal that arrived inside one


def _raise_for(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Interrupted(ExitCode.TERMINATED)


def _handler(signum: int, frame: FrameType | None) -> None:
    global _pending
    if _depth > 0:
        _pending = signum
        return
    _raise_for(signum)


def install() -> Callable[[], None]:
    """Route SIGINT and SIGTERM through the deferring handler; returns a function that restores the old ones.

    SIGINT raises KeyboardInterrupt and SIGTERM raises ``Interrupted(TERMINATED)``, as before, only later
    when they arrive inside :func:`deferred`. Must be called from the main thread.
    """
    previous = {signum: signal.signal(signum, _handler) for signum in HANDLED_SIGNALS}

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    return restore


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends, then raise for the one that came (if any).

    Only the main thread runs signal handlers, so elsewhere this is a no-op.
    """
    global _depth, _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _pending is not None:
            signum, _pending = _pending, None
            _raise_for(signum)
