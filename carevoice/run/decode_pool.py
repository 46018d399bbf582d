"""Decoding without a process per file: long-lived worker processes (carevoice.run.pyav_worker) decode
with PyAV's libav, and the ffmpeg program (carevoice.run.audio) decodes whatever they should not.

Why processes: a decode that hangs is killed with its worker (a new one starts for the next file), and
one that crashes a worker costs only that worker (the program decodes the file); an interrupt kills busy
workers (audio.stop_all_decodes).
Samples come back as raw float32 bytes on the worker's stdout, read once into the array the run uses.

Which decoder (:func:`program_needed`, decisions as data): a worker's samples are used only when the
file has one audio stream (of several, the program picks the default or the one with most channels), its
codec is one measured to decode bit for bit as the ffmpeg program does (benchmarks/feeding.py:
PCM, FLAC, MP3), and its decode was clean and whole by audio.py's rules. Anything else (another codec,
a libav error, a sign of truncation, a file libav will not open) is decoded by the ffmpeg program,
whose samples, and whose one-line error, are final: the messages and guarantees of audio.py hold
unchanged. A run whose ffmpeg is $CAREVOICE_FFMPEG uses only that program: it was asked for; so does
a pool whose worker cannot be started (a Python the user may not run again, as under setpriv), or
cannot load PyAV.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from carevoice.errors import AudioDecodeError
from carevoice.run import audio
from carevoice.run.audio import Ffmpeg, FfmpegLog, FfmpegSource, decode_audio, ffmpeg_version, truncation
from carevoice.run.pyav_worker import ALLOWED_DEMUXERS_ENV, LENGTH
from carevoice.settings import SAMPLE_RATE_HZ

# -I: the worker imports this very carevoice (named by path), never one from the working directory
# (a folder of recordings could hold anything) or from PYTHONPATH.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
WORKER_ARGV = (
    sys.executable,
    "-I",
    "-c",
    f"import sys; sys.path.insert(0, {_PACKAGE_ROOT!r}); import carevoice.run.pyav_worker as w; w.serve()",
)
# Codecs whose libav 8 samples equal the ffmpeg program's (5.1) bit for bit on every corpus clip and
# the synthetic formats of benchmarks/feeding.py. AAC, Opus and Vorbis differ by 1-2 float ulps (the
# decoders changed), and Opus in Matroska/WebM starts 5 ms off: those stay with the program.
IDENTICAL_CODECS = frozenset({"flac", "mp3float", "mp3"})
PCM = "pcm_"  # integers or floats as they are: only swresample's conversion, the same in both
PROGRAM_DEMUXERS = ("matroska",)
WORKER_START_TIMEOUT_S = 60.0  # to import PyAV and carevoice, and say what it is
BORROW_WAIT_S = 2.0  # a pool at its most waits this long for a worker to be given back, then starts one more
STOPPED = ("decoding was stopped", "check that the file is a playable recording")


@dataclass(frozen=True)
class Decoded:
    """A file's samples (float32 mono 16 kHz) and what decoded them (for its record)."""

    samples: np.ndarray
    decoded_by: str


def program_needed(facts: dict[str, Any], path: Path, samples: np.ndarray | None) -> str | None:
    """Why the ffmpeg program must decode this file after a worker tried, or None: the worker's samples stand."""
    codec, demuxer = facts.get("codec", ""), facts.get("demuxer", "")
    if samples is None:
        return f"libav could not decode it ({facts.get('failed', 'no samples')})"
    if (streams := facts.get("audio_streams", 1)) > 1:  # the program picks the default one, or the one with most channels
        return f"{streams} audio streams: the ffmpeg program picks which"
    if not (codec in IDENTICAL_CODECS or codec.startswith(PCM)) or demuxer.startswith(PROGRAM_DEMUXERS):
        return f"{codec} in {demuxer}: libav 8 and the ffmpeg program decode it differently"
    if facts["errors"] or len(samples) == 0:
        return "libav reported errors, or no audio"
    warnings = facts["warnings"]
    log = FfmpegLog(
        errors=[], warnings=warnings, declared_s=facts.get("declared_s"), estimated=any("Estimating duration" in w for w in warnings),
        demuxer=demuxer, video=bool(facts.get("video")),
    )  # fmt: skip
    if truncation(path, log, len(samples) / SAMPLE_RATE_HZ) is not None:
        return "it looks truncated"
    return None


class WorkerUnavailable(Exception):
    """A worker cannot decode at all (PyAV missing or broken)."""


class _Worker:
    """One worker process, in its own session (its group dies with it)."""

    def __init__(self, argv: Sequence[str]) -> None:
        env = {**os.environ, ALLOWED_DEMUXERS_ENV: audio.ALLOWED_DEMUXERS}
        self.proc = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, start_new_session=True
        )
        self.decoded_by = ""  # what it says it is, first thing (see hello)
        self._ending = threading.Lock()  # close() from the pool's and the busy thread's: one kill, before it is reaped

    def _reply(self) -> dict[str, Any]:
        head = self.proc.stdout.read(LENGTH.size)  # type: ignore[union-attr]
        if len(head) < LENGTH.size:
            raise EOFError
        return json.loads(self.proc.stdout.read(LENGTH.unpack(head)[0]))  # type: ignore[union-attr]

    def hello(self) -> None:
        """Read what the worker is. Raises WorkerUnavailable when it says it cannot decode, or ends first
        (it could not import numpy or carevoice: a PYTHONPATH, shiv or pex install, a frozen binary)."""
        try:
            hello = self._reply()
        except (EOFError, OSError, ValueError):
            raise WorkerUnavailable("it ended before it said what it is") from None
        if "decoded_by" not in hello:
            raise WorkerUnavailable(hello.get("unavailable", ""))
        self.decoded_by = str(hello["decoded_by"])

    def decode(self, path: Path) -> tuple[dict[str, Any], np.ndarray | None]:
        """Ask for one file. Raises EOFError (or OSError) when the worker died meanwhile."""
        name = os.fsencode(os.path.abspath(path))
        self.proc.stdin.write(LENGTH.pack(len(name)) + name)  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        facts = self._reply()
        count = int(facts["samples"])
        if count == 0:
            return facts, None
        samples = np.empty(count, dtype=np.float32)
        view, got = memoryview(samples).cast("B"), 0
        while got < len(view):
            read = self.proc.stdout.readinto(view[got:])  # type: ignore[union-attr]
            if not read:
                raise EOFError
            got += read
        return facts, samples

    def kill(self) -> None:
        """Kill its group, unless it was reaped (its pid may be another process's by now)."""
        with self._ending:
            if self.proc.returncode is None:
                audio.kill_group(self.proc)

    def close(self) -> None:
        """End it and reap it; again, from any thread, does nothing."""
        with self._ending:
            if self.proc.returncode is not None:
                return
            audio.kill_group(self.proc)
            for stream in (self.proc.stdin, self.proc.stdout):
                try:
                    stream.close()  # type: ignore[union-attr]
                except OSError:
                    pass  # a broken pipe to a worker already gone
            self.proc.wait()


class DecodePool:
    """Decodes files for many threads at once: each call borrows an idle worker, or starts one while
    there are fewer than ``most``, or waits for one to be given back. Thread-safe.

    Args:
        ffmpeg: The ffmpeg program, for what the workers should not decode.
        worker_argv: How to start a worker (tests start doubles that hang or crash).
        most: The most workers at once (0: one for each thread that ever decoded at the same time).
            Beside an engine on the CPU one is plenty (a decode takes milliseconds, a batch seconds),
            and each holds ~45 MB (20 MB of it its own).
        wait_s: How long a pool at its most waits for a worker to be given back before it starts one
            more (a hung decode keeps its worker until its time limit); the extra one ends when it is
            given back while ``most`` others wait idle.
    """

    def __init__(self, ffmpeg: Ffmpeg, worker_argv: Sequence[str] = WORKER_ARGV, most: int = 0, wait_s: float = BORROW_WAIT_S) -> None:
        self.ffmpeg = ffmpeg
        self.worker_argv = tuple(worker_argv)
        self.most = most
        self.wait_s = wait_s
        self.in_process = ffmpeg.source is not FfmpegSource.ENV
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._starting = 0  # workers being started: counted against ``most`` before they are in _all
        self._lock = threading.Lock()
        self._given_back = threading.Condition(self._lock)  # a worker is idle, gone, or the pool closed
        self._closed = False

    @property
    def worker_pids(self) -> list[int]:
        """The worker processes alive now (started, not yet ended)."""
        with self._lock:
            return [w.proc.pid for w in self._all]

    def decode(self, path: Path, timeout_s: float | None = None) -> Decoded:
        """Decode one file (see the module docstring for which decoder does).

        Raises:
            AudioDecodeError: as carevoice.run.audio.decode_audio; or the worker was stopped (close, an
                interrupt), or took longer than ``timeout_s`` (default: proportional to the file size) and was killed.
        """
        audio.refuse_empty(path)
        if self.in_process:
            limit_s = audio.decode_timeout_s(path) if timeout_s is None else timeout_s
            try:
                decoded = self._in_worker(path, limit_s)
            except WorkerUnavailable:  # no worker can decode here: the program decodes this file and every later one
                self.in_process = False
                decoded = None
            if decoded is not None:
                return decoded
        return Decoded(decode_audio(path, self.ffmpeg, timeout_s), ffmpeg_version(self.ffmpeg))

    def _in_worker(self, path: Path, limit_s: float) -> Decoded | None:
        """A worker's decode of ``path``, or None when the program must decode it (see program_needed; or libav crashed)."""
        worker = self._borrow()
        expired = threading.Event()

        def _kill() -> None:
            expired.set()
            worker.kill()

        timer = threading.Timer(limit_s, _kill)
        timer.start()
        try:
            with audio.stoppable(worker.proc):
                facts, samples = worker.decode(path)
        except (EOFError, OSError, ValueError):
            self._discard(worker)
            if expired.is_set():
                raise audio.timed_out(limit_s, "the PyAV decoder") from None
            if self._closed or worker.proc.returncode == -signal.SIGKILL:  # killed: close(), an interrupt, or the kernel short of memory
                raise AudioDecodeError(*STOPPED) from None
            return None  # libav crashed on it: the program decodes it (with its own time limit), and says what is wrong
        finally:
            self._stop(timer)
        if expired.is_set():  # it ran out after the samples came: they stand, the killed worker is not lent again
            self._discard(worker)
        else:
            self._give_back(worker)
        if program_needed(facts, path, samples) is None:
            assert samples is not None
            return Decoded(samples, worker.decoded_by)
        return None

    def _borrow(self) -> _Worker:
        """An idle worker, or a new one that said what it is. Raises WorkerUnavailable when none can be
        started here (this Python may not be run again, as under setpriv; or it ends or says it cannot decode)."""
        deadline = time.monotonic() + self.wait_s
        with self._lock:
            while not self._closed and not self._idle and self.most and len(self._all) + self._starting >= self.most:
                if not self._given_back.wait(max(0.0, deadline - time.monotonic())):
                    break  # all busy for long (a hung decode waits for its time limit): one more, for a while
            if self._closed:
                raise AudioDecodeError(*STOPPED)
            if self._idle:
                return self._idle.pop()
            self._starting += 1
        try:
            worker = _Worker(self.worker_argv)
        except BaseException as exc:
            with self._lock:
                self._starting -= 1
                self._given_back.notify()
            if isinstance(exc, OSError):
                raise WorkerUnavailable(str(exc)) from None
            raise
        with self._lock:
            self._starting -= 1
            self._all.add(worker)
        timer = threading.Timer(WORKER_START_TIMEOUT_S, worker.kill)
        timer.start()
        try:
            worker.hello()  # not stoppable: an interrupt stops decodes, and this is none yet
        except WorkerUnavailable:
            self._discard(worker)
            if self._closed:  # close() ended it while it started
                raise AudioDecodeError(*STOPPED) from None
            raise
        finally:
            self._stop(timer)
        if self._closed:  # closed while it started
            self._discard(worker)
            raise AudioDecodeError(*STOPPED)
        return worker

    @staticmethod
    def _stop(timer: threading.Timer) -> None:
        """Cancel a time limit, and wait out its kill if it already began (then its flag is set)."""
        timer.cancel()
        timer.join()

    def _give_back(self, worker: _Worker) -> None:
        with self._lock:
            # Past ``most`` (one started while another was stuck) a worker stays while the others are
            # busy, so a hung decode's time limit is not every next file's wait; then it ends.
            if not self._closed and not (self.most and len(self._idle) >= self.most):
                self._idle.append(worker)
                self._given_back.notify()
                return
        self._discard(worker)

    def _discard(self, worker: _Worker) -> None:
        worker.close()
        with self._lock:
            self._all.discard(worker)
            self._given_back.notify()  # room for a new one

    def close(self) -> None:
        """End every worker, busy or idle (a busy one's caller gets "decoding was stopped", and so does
        one waiting for a worker); no process is left."""
        with self._lock:
            self._closed = True
            workers, self._idle = list(self._all), []
            self._given_back.notify_all()
        for worker in workers:
            self._discard(worker)
