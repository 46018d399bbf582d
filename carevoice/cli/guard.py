"""The one wrapper every command runs in: signals become exceptions, and each expected failure
becomes one clean line on stderr and an exit code (tracebacks only with --traceback, or always,
and kept in a file, for a service that crashes).
"""

from __future__ import annotations

import os
import sys
import traceback as tb
from datetime import datetime
from pathlib import Path

from rich.markup import escape

from carevoice import __version__, interrupts
from carevoice.errors import CareVoiceError, ExitCode, Interrupted


def run_guarded(  # type: ignore[no-untyped-def]
    body, show_traceback: bool, interrupted_hint: str = Interrupted.hint, crash_log: Path | None = None
) -> int:
    """Run a command body, mapping every expected failure to one clean line and an exit code.

    ``interrupted_hint``: what the command's user can do after Ctrl-C (transcribe's: rerun to finish).
    ``crash_log``: a service's, which nobody reruns with --traceback: an unexpected exception's
    traceback goes to stderr (the journal, ``docker logs``) and into this file, and the exit is 1.
    """
    # SIGINT -> KeyboardInterrupt, SIGTERM -> Interrupted; both held while a file's outputs are written.
    restore_signals = interrupts.install()
    try:
        # imports rich's rendering: long enough to be interrupted
        from carevoice.render.words import stderr_console

        console = stderr_console()
    except (Interrupted, KeyboardInterrupt) as exc:  # nothing has started yet
        restore_signals()
        print(f"interrupted: {interrupted_hint}", file=sys.stderr)
        return int(exc.exit_code if isinstance(exc, Interrupted) else ExitCode.INTERRUPTED)
    except BaseException:
        restore_signals()
        raise
    try:
        return int(body(console))
    except (Interrupted, KeyboardInterrupt) as exc:
        # Only interrupts outside the per-file loop get here (that loop prints its own summary).
        console.print(f"[yellow]interrupted[/yellow]: {escape(interrupted_hint)}", highlight=False)
        return int(exc.exit_code if isinstance(exc, Interrupted) else ExitCode.INTERRUPTED)
    except CareVoiceError as exc:
        if show_traceback:
            console.print(tb.format_exc(), markup=False)
        console.print(f"[red]error[/red]: {escape(exc.message)}", highlight=False)
        if exc.hint:
            console.print(f"  → {exc.hint}", markup=False)
        return int(exc.exit_code)
    except Exception as exc:  # a bug: say so without dumping locals (they may hold speech)
        if crash_log is not None:
            report_crash(console, exc, crash_log)
            return 1
        if show_traceback:
            console.print(tb.format_exc(), markup=False)
        console.print(
            f"[red]internal error[/red]: {type(exc).__name__} — rerun with --traceback and report it", highlight=False
        )
        return 1
    finally:
        restore_signals()


def report_crash(console, exc: Exception, crash_log: Path) -> None:  # type: ignore[no-untyped-def]
    """The traceback of the exception being handled on stderr and in ``crash_log``, then one line
    naming both. A traceback holds code lines and exception messages, never the values of locals
    (they may hold speech); CareVoice's own messages never carry transcript text."""
    # not at import: only a crash needs it, and it loads the run's writers
    from carevoice.run.writers import atomic_write

    trace = tb.format_exc().rstrip()
    console.print(trace, markup=False, highlight=False)
    stamp = datetime.now().astimezone().isoformat(timespec="seconds")
    try:
        crash_log.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(crash_log, f"carevoice {__version__} (pid {os.getpid()}) crashed at {stamp}:\n{trace}\n".encode())
        where = f"its traceback is above and in {crash_log}"
    except OSError as failure:
        where = f"its traceback is above (cannot write {crash_log}: {failure.strerror})"
    console.print(f"[red]internal error[/red]: {type(exc).__name__} — {escape(where)}; report it", highlight=False)
