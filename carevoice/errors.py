"""The CareVoice exception hierarchy and the process exit codes it maps to.

Core modules raise these; only `cli` turns them into messages and exit codes.
Messages never contain transcript text: they name a file, what happened and what to do.
"""

from __future__ import annotations

from enum import Enum, IntEnum


class ExitCode(IntEnum):
    """Process exit status of every `carevoice` command."""

    OK = 0
    FAILED = 1  # some files (or checks) failed; the rest finished
    USAGE = 2  # bad options, or nothing to do
    SETUP = 3  # ffmpeg, the model or CUDA is unusable
    INTERRUPTED = 130  # SIGINT (Ctrl-C)
    TERMINATED = 143  # SIGTERM


class Cause(str, Enum):
    """Why a file failed when the fault may lie outside the recording, so that the same file may
    succeed later (``carevoice watch`` tries it again: see carevoice.watch.arrivals)."""

    INCOMPLETE = "incomplete"  # not whole yet (an upload under way): tried again once it changes
    ENGINE = "engine"  # inference failed (the device, its memory): tried again after a while
    FOLDER = "folder"  # the folder refused the outputs (full, read-only): tried again after a while


class CareVoiceError(Exception):
    """Base class: a failure CareVoice expected and can explain in one line.

    Args:
        message: What happened (no transcript text).
        hint: What the user should do about it.
    """

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message


class UsageError(CareVoiceError):
    """The command line itself is wrong (exit 2)."""

    exit_code = ExitCode.USAGE


class SetupError(CareVoiceError):
    """The environment cannot run CareVoice: ffmpeg, model, CUDA (exit 3)."""

    exit_code = ExitCode.SETUP


class FileError(CareVoiceError):
    """One input file failed; the batch goes on (exit 1 at the end).

    Args:
        cause: Why, when the fault may pass (default: the class's); None when the recording itself,
            or a bug, is at fault: it fails the same way until it changes.
    """

    cause: Cause | None = None

    def __init__(self, message: str, hint: str = "", cause: Cause | None = None) -> None:
        super().__init__(message, hint)
        if cause is not None:
            self.cause = cause


class AudioDecodeError(FileError):
    """ffmpeg could not turn the file into audio samples."""


class IncompleteFileError(AudioDecodeError):
    """The file is not whole (yet): empty, or truncated. ``transcribe`` fails it; ``watch`` waits
    for the rest of an upload and tries again once the file changes."""

    cause = Cause.INCOMPLETE


class OutputError(FileError):
    """An output file could not be written safely."""


class EngineError(FileError):
    """Inference failed for the chunks of one file (e.g. out of memory after retries); ``cause``
    ENGINE when the device failed (it may recover), None for a bug."""


class Interrupted(BaseException):
    """The run was stopped by SIGTERM (Ctrl-C raises KeyboardInterrupt); what finished is kept.

    Like KeyboardInterrupt it is not an Exception, so no ``except Exception`` that keeps a batch
    going past one bad file can swallow it.
    """

    message = "interrupted"
    hint = "rerun the same command to finish the missing files"

    def __init__(self, exit_code: ExitCode) -> None:
        super().__init__(self.message)
        self.exit_code = exit_code
