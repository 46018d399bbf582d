"""The only module that runs ffmpeg: any container or codec -> float32 mono 16 kHz samples in memory.

Safety rules (see tests/run/test_audio.py, tests/run/test_hostile.py): no shell; ``-nostdin``; the input is
passed as an absolute ``file:`` URL so a name like ``-rf.wav`` or ``http:x.wav`` is a local file; only
the ``file`` protocol and a list of real audio/video demuxers are allowed, so playlists (``.m3u8``,
``.ffconcat``) and ``concat:``/``subfile:`` tricks cannot open anything else; a timeout proportional
to the file size kills a hanging decode (its whole process group, so a wrapper script's children
die too). A file that decodes but ends before its container says it should (an incomplete copy,
a recorder that died) is an error, not a silently half transcript.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from pathlib import Path

import ffmpeg  # ffmpeg-python: builds the argument list; we run it ourselves
import numpy as np

from carevoice.errors import AudioDecodeError, IncompleteFileError, SetupError
from carevoice.run.signatures import not_a_recording, read_head, starts_like_mp4, starts_like_wav
from carevoice.settings import SAMPLE_RATE_HZ

BYTES_PER_SAMPLE = 4  # float32

# Demuxers a recording can legitimately need. Deliberately absent: concat, hls, image2,
# playlist-like and network demuxers, which open further files or URLs.
ALLOWED_DEMUXERS = (
    "wav,w64,mp3,mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,ogg,flac,aac,amr,amrnb,amrwb,asf,caf,"
    "aiff,au,avi,mpeg,mpegts,wv,ape,tta,dsf,spdif,loas,latm,ac3,eac3,dts,truehd,mlp,"
    "s16le,f32le,gsm,voc,xwma,rm,flv,nut,ircam,sox,sln,mpc,mpc8,tak,wsaud"
)
DECODE_TIMEOUT_BASE_S = 60.0
DECODE_TIMEOUT_PER_MB_S = 4.0  # ffmpeg decodes compressed speech at >100x real time
# A decode shorter than the container's declared length by more than this is a truncated file.
# Declared lengths carry encoder delay and padding (tens of ms); 1 s + 2 % leaves room for them.
TRUNCATION_TOLERANCE_S = 1.0
TRUNCATION_TOLERANCE_RATIO = 0.02
# What ffmpeg's demuxers say when the data stops before the container's structure does.
TRUNCATION_MESSAGES = ("File ended prematurely", "partial file")
OGG_MAX_PAGE_BYTES = 27 + 255 + 255 * 255
WAV_HEAD_BYTES = 1 << 16  # a WAV's data chunk starts after fmt and any LIST/bext chunks
NOT_A_RECORDING_HINT = "check that the right file was saved under this name"
TRUNCATED_HINT = (
    "copy the complete file again from the recorder; if the rest is lost, keep what is left with "
    "`ffmpeg -i FILE -c copy NEW_FILE` and transcribe NEW_FILE"
)


class FfmpegSource(str, Enum):
    """Where the ffmpeg binary came from."""

    SYSTEM = "system"
    IMAGEIO = "imageio-ffmpeg"
    ENV = "CAREVOICE_FFMPEG"


@dataclass(frozen=True)
class Ffmpeg:
    """A usable ffmpeg binary."""

    path: str
    source: FfmpegSource


def find_ffmpeg() -> Ffmpeg:
    """Locate ffmpeg: $CAREVOICE_FFMPEG, then PATH, then imageio-ffmpeg's bundled binary.

    Raises:
        SetupError: none found.
    """
    override = os.environ.get("CAREVOICE_FFMPEG")
    if override:
        return Ffmpeg(override, FfmpegSource.ENV)
    system = shutil.which("ffmpeg")
    if system:
        return Ffmpeg(system, FfmpegSource.SYSTEM)
    try:
        import imageio_ffmpeg  # the ffmpeg extra: only without a system ffmpeg

        return Ffmpeg(imageio_ffmpeg.get_ffmpeg_exe(), FfmpegSource.IMAGEIO)
    except (ImportError, RuntimeError):
        pass
    raise SetupError(
        "ffmpeg not found",
        "install it (apt-get install ffmpeg / brew install ffmpeg) or pip install 'carevoice[ffmpeg]'",
    )


def decode_timeout_s(path: Path) -> float:
    """How long ffmpeg may take for this file before it is killed."""
    try:
        size_mb = path.stat().st_size / 1e6
    except OSError:
        size_mb = 0.0
    return DECODE_TIMEOUT_BASE_S + DECODE_TIMEOUT_PER_MB_S * size_mb


def build_decode_command(path: Path, binary: str) -> list[str]:
    """The exact argument vector for decoding one file (never passed through a shell).

    ffmpeg-python builds the arguments around a placeholder input; the real ``file:`` URL is put
    in afterwards, so a name that is not valid UTF-8 reaches ffmpeg byte for byte (subprocess
    encodes it with the file-system encoding) instead of going through the builder as text.
    """
    stream = ffmpeg.input(_URL_PLACEHOLDER, protocol_whitelist="file", format_whitelist=ALLOWED_DEMUXERS)
    stream = stream.output("pipe:", format="f32le", acodec="pcm_f32le", ac=1, ar=SAMPLE_RATE_HZ, vn=None, sn=None, dn=None)
    args = stream.compile(cmd=binary)[1:]
    url = "file:" + os.path.abspath(path)
    # Global options first: ffmpeg ignores options that trail the output name.
    # level+info: each line says its level; info carries the declared duration and format.
    head = [binary, "-nostdin", "-hide_banner", "-nostats", "-loglevel", "level+info"]
    return head + [url if arg == _URL_PLACEHOLDER else arg for arg in args]


_URL_PLACEHOLDER = "carevoice-input-placeholder"


_LOG_LINE = re.compile(r"^(?:\[(?P<component>[^\]@]+?) @ 0x[0-9a-f]+\] )?\[(?P<level>[a-z]+)\] ?(?P<text>.*)$")
_DURATION = re.compile(r"^\s*Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_INPUT_FORMAT = re.compile(r"^Input #0, (.+?), from ")
_VIDEO_STREAM = re.compile(r"^\s*Stream #0:\d+.*: Video: ")


@dataclass
class FfmpegLog:
    """What ffmpeg said about one decode (only ever read, never shown: info lines may hold tags)."""

    errors: list[tuple[str, str]]  # (component, text) of error and fatal lines
    warnings: list[str]
    declared_s: float | None = None  # the container's own length, when it states one
    estimated: bool = False  # ffmpeg guessed the length from the bitrate
    demuxer: str = ""  # e.g. "wav", "ogg", "matroska,webm"
    video: bool = False  # the input has a video stream (not just cover art)


def parse_ffmpeg_log(stderr: bytes, url: str) -> FfmpegLog:
    """Split ffmpeg's ``level+info`` log into errors, warnings and the input's declared duration."""
    log = FfmpegLog(errors=[], warnings=[])
    path = url[len("file:") :]
    for raw in stderr.decode("utf-8", "replace").splitlines():
        match = _LOG_LINE.match(raw.strip("\r"))
        if not match:
            continue
        level, text = match["level"], match["text"]
        if level in ("error", "fatal", "panic"):
            for prefix in (url + ": ", path + ": "):
                text = text.replace(prefix, "")
            log.errors.append(((match["component"] or "").strip(), text.strip()))
        elif level == "warning":
            log.warnings.append(text)
            if "Estimating duration from bitrate" in text:
                log.estimated = True
        elif level == "info":
            if log.declared_s is None and (duration := _DURATION.match(text)):
                hours, minutes, seconds = duration.groups()
                log.declared_s = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
            elif not log.demuxer and (fmt := _INPUT_FORMAT.match(text)):
                log.demuxer = fmt[1]
            elif _VIDEO_STREAM.match(text) and "(attached pic)" not in text:
                log.video = True
    return log


def _failure_reason(log: FfmpegLog) -> str:
    """One line for a failed decode: the cause ffmpeg gave, in words a user can act on."""
    for component, text in log.errors:
        if "not on whitelist" in text:
            return f"{component or 'this'} is not an audio or video format CareVoice reads"
        if "does not contain any stream" in text:
            return "no audio stream in the file"
    if any("misdetection possible" in text for text in log.warnings):
        return "not a recognisable recording (its format could only be guessed)"
    lines = [text for _, text in log.errors if text]
    for line in reversed(lines):
        if line.lower().startswith(("error while decoding", "conversion failed")) and len(lines) > 1:
            continue
        return line[:200]
    return "ffmpeg failed without a message"


def wav_stated_end(head: bytes) -> tuple[int, int] | None:
    """Where a RIFF/WAVE header says its audio ends (bytes from the file's start), and its bytes per
    second; None when ``head`` (the file's first bytes) is no such header or states no length: a
    streaming recorder (``ffmpeg -f wav pipe:``) writes 0 or 0xFFFFFFFF, as it cannot go back."""
    if not starts_like_wav(head):
        return None
    position, byte_rate = 12, 0
    while position + 8 <= len(head):
        chunk, length = head[position : position + 4], int.from_bytes(head[position + 4 : position + 8], "little")
        if chunk == b"fmt " and position + 20 <= len(head):
            byte_rate = int.from_bytes(head[position + 16 : position + 20], "little")
        if chunk == b"data":
            return None if length in (0, 0xFFFFFFFF) or byte_rate <= 0 else (position + 8 + length, byte_rate)
        position += 8 + length + (length & 1)
    return None


def wav_missing_s(path: Path) -> float:
    """Seconds of audio a RIFF/WAVE header promises beyond the end of the file (0 when it is whole,
    or when its header states no length).

    ffmpeg estimates a WAV's length from the file size when the header promises more, so a cut
    WAV looks complete to it; the header itself still says how long the recording was.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(WAV_HEAD_BYTES)
            size = os.fstat(handle.fileno()).st_size
    except OSError:
        return 0.0
    stated = wav_stated_end(head)
    if stated is None:
        return 0.0
    end, byte_rate = stated
    return max(0, end - size) / byte_rate


def ogg_ends_mid_page(path: Path) -> bool:
    """True when an Ogg file stops inside its last page (ffmpeg silently drops that page)."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            handle.seek(max(0, size - OGG_MAX_PAGE_BYTES))
            tail = handle.read()
    except OSError:
        return False
    start = tail.rfind(b"OggS\x00")
    if start < 0:
        return False
    if start + 27 > len(tail) or start + 27 + tail[start + 26] > len(tail):
        return True  # the page header itself is cut
    segments = tail[start + 26]
    page_bytes = 27 + segments + sum(tail[start + 27 : start + 27 + segments])
    return start + page_bytes > len(tail)


def truncation(path: Path, log: FfmpegLog, decoded_s: float) -> str | None:
    """Why a successfully decoded file is nonetheless cut short, or None when it is whole."""
    if any(sign in text for _, text in log.errors for sign in TRUNCATION_MESSAGES):
        return "its data stops before its container does"
    declared_s = log.declared_s
    # A video's declared length is the longest stream's: its audio may well end earlier (a screen
    # recording whose microphone stopped first), so only the signs above count for videos.
    tolerance_s = max(TRUNCATION_TOLERANCE_S, TRUNCATION_TOLERANCE_RATIO * (declared_s or 0.0))
    if declared_s is not None and not log.estimated and not log.video and declared_s - decoded_s > tolerance_s:
        return f"only {decoded_s:.1f} s of its declared {declared_s:.1f} s could be decoded"
    demuxers = log.demuxer.split(",")
    if "wav" in demuxers and (missing_s := wav_missing_s(path)) > TRUNCATION_TOLERANCE_S:
        return f"its header promises {missing_s:.1f} s more audio than the file holds"
    if "ogg" in demuxers and ogg_ends_mid_page(path):
        return "it stops in the middle of an Ogg page"
    return None


# ffmpeg processes running now, so an interrupted run can stop them at once (see stop_all_decodes).
_running: set[subprocess.Popen[bytes]] = set()
_running_lock = threading.Lock()


VERSION_TIMEOUT_S = 10.0


@lru_cache(maxsize=8)
def ffmpeg_version(binary: Ffmpeg) -> str:
    """Which ffmpeg decodes, for records and bench: ``5.1.6-0+deb12u1 (system)``, asked once per
    binary. A binary named by $CAREVOICE_FFMPEG is not run for this (it may be a wrapper): it is
    named by its path. Killed with its children when it does not answer within VERSION_TIMEOUT_S."""
    if binary.source is FfmpegSource.ENV:
        return f"{binary.path} ({FfmpegSource.ENV.value})"
    try:
        proc = subprocess.Popen(
            [binary.path, "-hide_banner", "-version"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError:
        return f"unknown ({binary.source.value})"
    try:
        out = proc.communicate(timeout=VERSION_TIMEOUT_S)[0].decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        kill_group(proc)
        proc.communicate()
        out = ""
    words = out.split()
    version = words[2] if len(words) > 2 and out.startswith("ffmpeg version") else "unknown"
    return f"{version} ({binary.source.value})"


def refuse_empty(path: Path) -> None:
    """A 0-byte file is no recording, whatever decodes it.

    Raises:
        IncompleteFileError: it is empty.
    """
    try:
        empty = os.stat(path).st_size == 0
    except OSError:
        empty = False  # the decoder says why it cannot open it
    if empty:
        raise IncompleteFileError("the file contains no audio (0 bytes)", "check that the recording was copied completely")


def timed_out(limit_s: float, decoder: str = "ffmpeg") -> AudioDecodeError:
    """The line for a decode that was killed for taking too long; ``decoder`` names what was killed."""
    return AudioDecodeError(
        f"{decoder} did not finish within {limit_s:.0f} s and was stopped", "the file may be damaged; check that it plays in a media player"
    )


@contextmanager
def stoppable(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    """While in the block, :func:`stop_all_decodes` kills ``proc`` (an ffmpeg, or a decode worker) and its group."""
    with _running_lock:
        _running.add(proc)
    try:
        yield
    finally:
        with _running_lock:
            _running.discard(proc)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill a process started in its own session and anything it started (a wrapper script's children hold the pipes open too)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # already gone


def stop_all_decodes() -> int:
    """Kill every ffmpeg this process is running; their decode_audio calls raise. Returns how many."""
    with _running_lock:
        procs = list(_running)
    for proc in procs:
        kill_group(proc)
    return len(procs)


def decode_audio(path: Path, binary: Ffmpeg, timeout_s: float | None = None) -> np.ndarray:
    """Decode any audio or video file to mono 16 kHz float32 samples.

    Args:
        path: A local file.
        binary: The ffmpeg to run.
        timeout_s: Kill ffmpeg after this long (default: proportional to the file size).

    Returns:
        A 1-D float32 array (one copy of the audio; no temporary files).

    Raises:
        AudioDecodeError: ffmpeg failed, timed out, found no audio, or the file is truncated.
    """
    refuse_empty(path)
    command = build_decode_command(path, binary.path)
    limit_s = decode_timeout_s(path) if timeout_s is None else timeout_s
    try:
        # Own session: the timeout (and an interrupt) kill the whole group; a terminal's Ctrl-C
        # reaches CareVoice, which stops these itself.
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    except OSError as exc:
        raise AudioDecodeError(f"cannot run ffmpeg ({exc.strerror})", "check `carevoice doctor`") from None
    with stoppable(proc):
        return _finish_decode(path, proc, limit_s)


def _finish_decode(path: Path, proc: subprocess.Popen[bytes], limit_s: float) -> np.ndarray:
    """Read a started ffmpeg's samples and judge its decode (see :func:`decode_audio`)."""
    url = "file:" + os.path.abspath(path)
    stderr_chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: stderr_chunks.append(proc.stderr.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    expired = threading.Event()

    def _kill() -> None:
        expired.set()
        kill_group(proc)

    timer = threading.Timer(limit_s, _kill)
    timer.start()
    buffer = bytearray()
    try:
        assert proc.stdout is not None
        while chunk := proc.stdout.read(1 << 20):
            buffer += chunk
        proc.wait()
    except BaseException:
        kill_group(proc)
        proc.wait()
        raise
    finally:
        timer.cancel()
        reader.join(timeout=5)
        proc.stdout.close()  # type: ignore[union-attr]
    if expired.is_set():
        raise timed_out(limit_s)
    log = parse_ffmpeg_log(b"".join(stderr_chunks), url)
    no_index = any("moov atom not found" in text for _, text in log.errors)
    if no_index or proc.returncode != 0:
        # Its content, not its name, says what it is: a PDF saved as .m4a is no recording cut short.
        head = read_head(path)
        if (kind := not_a_recording(head)) is not None:
            raise AudioDecodeError(f"not a recording: it is {kind}", NOT_A_RECORDING_HINT)
        if no_index and (starts_like_mp4(head) or not any(head)):  # zeros: space a copy made and never filled
            raise IncompleteFileError("the file is truncated: its index (moov atom) is missing", TRUNCATED_HINT)
    if no_index:
        raise AudioDecodeError("cannot decode audio (not a recognisable recording)", "check that the file is a playable recording")
    if proc.returncode != 0:
        reason = _failure_reason(log) if proc.returncode > 0 else "decoding was stopped"
        raise AudioDecodeError(f"cannot decode audio (ffmpeg: {reason})", "check that the file is a playable recording")
    usable = len(buffer) - len(buffer) % BYTES_PER_SAMPLE
    if usable == 0:
        raise AudioDecodeError("the file contains no audio", "check that the recording is not empty")
    del buffer[usable:]
    cut = truncation(path, log, usable / BYTES_PER_SAMPLE / SAMPLE_RATE_HZ)
    if cut is not None:
        raise IncompleteFileError(f"the file is truncated: {cut}", TRUNCATED_HINT)
    return np.frombuffer(buffer, dtype=np.float32)
