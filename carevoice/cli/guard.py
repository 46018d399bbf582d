"""The one wrapper every command runs in: signals become exceptions, and each expected failure
becomes one clean line on stderr and an exit code (tracebacks only with --traceback).
"""

from __future__ import annotations

import sys
import traceback as tb

from rich.markup import escape

from carevoice import interrupts
from carevoice.errors import CareVoiceError, ExitCode, Interrupted


def run_guarded(body, show_traceback: bool, interrupted_hint: str = Interrupted.hint) -> int:  # type: ignore[no-untyped-def]
    """Run a command body, mapping every expected failure to one clean line and an exit code.

    ``interrupted_hint``: what the command's user can do after Ctrl-C (transcribe's: rerun to finish).
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
        if show_traceback:
            console.print(tb.format_exc(), markup=False)
        console.print(
            f"[red]internal error[/red]: {type(exc).__name__} — rerun with --traceback and report it", highlight=False
        )
        return 1
    finally:
        restore_signals()
