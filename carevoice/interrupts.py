"""Ctrl-C (SIGINT) and SIGTERM become exceptions in the main thread, but never inside a critical section.

The CLI installs the handlers for the length of a command (:func:`install`). The writers wrap the
outputs of one file in :func:`deferred`, so a signal lands before or after a file's set of outputs,
never between two of them: an interrupted run leaves every file either whole or untouched. Without
the handlers installed (a library caller), ``deferred`` and :func:`check` change nothing.

A loop whose work cannot be cut short (the batch runner: a batch on an engine ends on its own)
runs after :func:`start_draining`: there the first signal only takes note, the loop sees it
(:func:`requested`), finishes what it started and then raises it with :func:`check`; a second
signal raises as usual.

A stop signal is also remembered, for :func:`check`: the handler raises in whatever Python code the
main thread is running, and that may be a finalizer (an object's ``__del__`` or a weakref callback,
run by the garbage collector), where Python prints the exception as "Exception ignored" and drops
it. The loops of every command call :func:`check` at each turn (the watch loop, the batch runner,
the Ray driver, doctor's checks, the bench's runs), so no signal is lost.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from carevoice.errors import ExitCode, Interrupted

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
STOP_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}  # as the lines a user reads name them

_depth = 0  # nesting of deferred() sections in the main thread
_draining = 0  # loops that drain (start_draining): a first signal is then noted, not raised
_pending: int | None = None  # a signal that arrived inside one
_requested: int | None = None  # the signal that asked the command to stop (kept once raised)


def _raise_for(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Interrupted(ExitCode.TERMINATED)


def _handler(signum: int, frame: FrameType | None) -> None:
    global _pending, _requested
    first, _requested = _requested is None, signum
    if first and _draining > 0:
        return  # the draining loop sees it (requested()), finishes what it started, then raises it
    if _depth > 0:
        _pending = signum
        return
    _raise_for(signum)


def install() -> Callable[[], None]:
    """Route SIGINT and SIGTERM through the deferring handler; returns a function that restores the old ones.

    SIGINT raises KeyboardInterrupt and SIGTERM raises ``Interrupted(TERMINATED)``, as before, only later
    when they arrive inside :func:`deferred`. Such an exception dropped in a finalizer is not printed
    (``sys.unraisablehook``): :func:`check` raises it again. Must be called from the main thread.
    """
    global _requested
    _requested = None
    previous = {signum: signal.signal(signum, _handler) for signum in HANDLED_SIGNALS}
    previous_hook = sys.unraisablehook

    def hook(unraisable: sys.UnraisableHookArgs) -> None:
        # Our own exception, dropped in a finalizer: check() raises it again, so it is no error to print.
        if _requested is None or not issubclass(unraisable.exc_type, (Interrupted, KeyboardInterrupt)):
            previous_hook(unraisable)

    sys.unraisablehook = hook

    def restore() -> None:
        global _requested
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        sys.unraisablehook = previous_hook
        _requested = None

    return restore


def check() -> None:
    """Raise for the stop signal that came, if one did (Ctrl-C: KeyboardInterrupt, SIGTERM: Interrupted).

    Once a signal has asked the command to stop, every check raises, also after the handler's own
    exception was raised (and perhaps dropped in a finalizer); so only loops that never run again
    after a stop call it. Inside :func:`deferred` it waits, as the handler does, for the section's end.
    """
    if _requested is not None and _depth == 0 and threading.current_thread() is threading.main_thread():
        _raise_for(_requested)


def requested() -> str | None:
    """What asked the command to stop ("Ctrl-C", "SIGTERM"), if a signal did."""
    return None if _requested is None else STOP_NAMES.get(_requested, f"signal {_requested}")


def start_draining() -> Callable[[], None]:
    """From now on a first SIGINT/SIGTERM is only noted: the caller's loop polls :func:`requested`,
    finishes what it has started, and raises it with :func:`check`; a second one raises as usual.
    Returns the function that ends this (call it in a ``finally``)."""
    global _draining
    _draining += 1

    def end() -> None:
        global _draining
        _draining -= 1

    return end


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
