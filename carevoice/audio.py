"""The only module that runs ffmpeg: any container or codec -> float32 mono 16 kHz samples in memory.

Safety rules (see tests/test_audio.py): no shell; ``-nostdin``; the input is passed as an
absolute ``file:`` URL so a name like ``-rf.wav`` or ``http:x.wav`` is a local file; only the
``file`` protocol and a list of real audio/video demuxers are allowed, so playlists
(``.m3u8``, ``.ffconcat``) and ``concat:``/``subfile:`` tricks cannot open anything else; a
timeout proportional to the file size kills a hanging decode.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import ffmpeg  # ffmpeg-python: builds the argument list; we run it ourselves
import numpy as np

from carevoice.errors import AudioDecodeError, SetupError

SAMPLE_RATE_HZ = 16_000
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
        import imageio_ffmpeg

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
    """The exact argument vector for decoding one file (never passed through a shell)."""
    url = "file:" + os.path.abspath(path)
    stream = ffmpeg.input(url, protocol_whitelist="file", format_whitelist=ALLOWED_DEMUXERS)
    stream = stream.output("pipe:", format="f32le", acodec="pcm_f32le", ac=1, ar=SAMPLE_RATE_HZ, vn=None, sn=None, dn=None)
    # Global options go first: ffmpeg ignores options that trail the output name.
    return [binary, "-nostdin", "-hide_banner", "-loglevel", "error", *stream.compile(cmd=binary)[1:]]


def _last_meaningful_line(stderr: bytes, url: str) -> str:
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    for line in reversed(lines):
        for prefix in (url + ": ", url[len("file:") :] + ": "):
            line = line.replace(prefix, "")
        if line.lower().startswith(("error while decoding", "conversion failed")) and len(lines) > 1:
            continue
        return line[:200]
    return "ffmpeg failed without a message"


def decode_audio(path: Path, binary: Ffmpeg, timeout_s: float | None = None) -> np.ndarray:
    """Decode any audio or video file to mono 16 kHz float32 samples.

    Args:
        path: A local file.
        binary: The ffmpeg to run.
        timeout_s: Kill ffmpeg after this long (default: proportional to the file size).

    Returns:
        A 1-D float32 array (one copy of the audio; no temporary files).

    Raises:
        AudioDecodeError: ffmpeg failed, timed out, or found no audio.
    """
    command = build_decode_command(path, binary.path)
    url = "file:" + os.path.abspath(path)
    limit_s = decode_timeout_s(path) if timeout_s is None else timeout_s
    try:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise AudioDecodeError(f"cannot run ffmpeg ({exc.strerror})", "check `carevoice doctor`") from None
    stderr_chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: stderr_chunks.append(proc.stderr.read()), daemon=True)
    reader.start()
    timed_out = threading.Event()

    def _kill() -> None:
        timed_out.set()
        proc.kill()

    timer = threading.Timer(limit_s, _kill)
    timer.start()
    buffer = bytearray()
    try:
        assert proc.stdout is not None
        while chunk := proc.stdout.read(1 << 20):
            buffer += chunk
        proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        timer.cancel()
        reader.join(timeout=5)
    if timed_out.is_set():
        raise AudioDecodeError(
            f"ffmpeg did not finish within {limit_s:.0f} s and was stopped",
            "the file may be damaged; check that it plays in a media player",
        )
    if proc.returncode != 0:
        reason = _last_meaningful_line(b"".join(stderr_chunks), url)
        raise AudioDecodeError(f"cannot decode audio (ffmpeg: {reason})", "check that the file is a playable recording")
    usable = len(buffer) - len(buffer) % BYTES_PER_SAMPLE
    if usable == 0:
        raise AudioDecodeError("the file contains no audio", "check that the recording is not empty")
    del buffer[usable:]
    return np.frombuffer(buffer, dtype=np.float32)
