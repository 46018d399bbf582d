"""One long-lived decode worker process (started by carevoice.run.decode_pool): decodes the files
its parent names with PyAV's libav, in-process, and sends back what it found and the samples.

Run only by carevoice.run.decode_pool, which decides what the facts mean (carevoice.run.audio's
rules). The worker opens the named file as an absolute ``file:`` URL with the same protocol and
demuxer whitelists as the ffmpeg program, so it opens nothing else. It never prints.

Protocol on stdin/stdout: the worker first says what it is (``decoded_by``, or ``unavailable``: PyAV
cannot load, or it was not given the demuxer list, and it ends); a request is a 4-byte little-endian
length and the path's bytes; a reply is a 4-byte length, a JSON header (:func:`decode_file`'s facts,
with ``samples``: how many follow), then the samples as raw float32 bytes (native byte order: parent
and worker are one machine). The worker ends at end of input, or when its parent is gone.
"""

from __future__ import annotations

import functools
import json
import os
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from carevoice.run.signatures import read_head, starts_like_wav
from carevoice.settings import SAMPLE_RATE_HZ

ALLOWED_DEMUXERS_ENV = "CAREVOICE_ALLOWED_DEMUXERS"  # the parent passes audio.ALLOWED_DEMUXERS: one list, in one place
PARENT_CHECK_S = 1.0
LENGTH = struct.Struct("<I")
FLOAT32 = 4  # bytes a sample
# A WAV file's stream is all in its header; libav's stream analysis would read up to 5 s of PCM more
# (3.5 ms of a 7 s clip's 5 ms), for nothing. What is not PCM after all is opened again as usual.
WAV_MAGIC_BYTES = 12  # "RIFF", its size, "WAVE"
HEADER_ONLY = {"probesize": "32"}

Decode = Callable[[bytes], tuple[dict[str, Any], bytes | None]]


def decode_file(path: bytes) -> tuple[dict[str, Any], bytes | None]:
    """Decode one file to float32 mono 16 kHz as the ffmpeg program does (swresample, default
    settings). Returns the facts carevoice.run.audio judges a decode by and the samples as raw float32
    bytes (None when libav could not open or decode it: the facts say why, and the parent asks the
    ffmpeg program). No numpy here: a worker holds libav and little else."""
    name = os.path.abspath(os.fsdecode(path))
    url = "file:" + name
    if starts_like_wav(read_head(Path(name), WAV_MAGIC_BYTES)):  # unreadable: libav says what is wrong with it
        facts, samples = _decode(url, HEADER_ONLY, pcm_only=True)
        if facts.get("codec", "").startswith("pcm_"):
            return facts, samples
    return _decode(url, {})


@functools.cache
def _libav() -> Any:
    """PyAV, its log set up once for the worker's life."""
    import av  # the worker's own import: the parent never loads libav 8 beside the ffmpeg program's
    import av.logging  # with av: only in the worker

    av.logging.set_level(av.logging.WARNING)  # what Capture sees: errors, and "Estimating duration from bitrate"
    # Every line, each time: PyAV holds back a line that repeats the one before it (and says so with
    # the next different one), so a file opened twice, or one after another with the same warning,
    # lost its lines to the next file's facts — and with them its truncation check.
    av.logging.set_skip_repeated(False)
    return av


def _decode(url: str, extra: dict[str, str], pcm_only: bool = False) -> tuple[dict[str, Any], bytes | None]:
    """``pcm_only``: stop before decoding when the stream is not PCM (the caller opens it again as usual)."""
    av = _libav()
    facts: dict[str, Any] = {"errors": [], "warnings": []}
    options = {"protocol_whitelist": "file", "format_whitelist": os.environ[ALLOWED_DEMUXERS_ENV], **extra}  # serve checked it is set
    chunks: list[bytes] = []
    with av.logging.Capture() as logs:
        try:
            with av.open(url, options=options) as container:
                facts["demuxer"] = container.format.name
                facts["declared_s"] = None if container.duration is None else container.duration / av.time_base
                facts["video"] = any(
                    s.type == "video" and not s.disposition & av.stream.Disposition.attached_pic for s in container.streams
                )
                facts["audio_streams"] = len(container.streams.audio)  # more than one: the program picks which (decode_pool)
                if not container.streams.audio:
                    facts["failed"] = "no audio stream"
                    return facts, None
                stream = container.streams.audio[0]
                facts["codec"] = stream.codec_context.name
                if pcm_only and not facts["codec"].startswith("pcm_"):
                    return facts, None
                resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE_HZ)
                for frame in container.decode(stream):
                    chunks.extend(_samples(f) for f in resampler.resample(frame))
                chunks.extend(_samples(f) for f in resampler.resample(None))
        except Exception as exc:  # whatever libav refuses, the ffmpeg program is asked about (its words are the user's)
            facts["failed"] = type(exc).__name__
            return facts, None
        finally:
            for level, _, message in logs:
                if level <= av.logging.ERROR:
                    facts["errors"].append(message.strip())
                elif level <= av.logging.WARNING:
                    facts["warnings"].append(message.strip())
    return facts, b"".join(chunks)


def _samples(frame: Any) -> bytes:
    """A resampled (packed float32, mono) frame's samples; its plane may be padded past them."""
    return bytes(frame.planes[0])[: frame.samples * FLOAT32]


def library_version() -> str:
    """Which decoder this worker is: ``FFmpeg 8.1.2 (PyAV 18.1.0)``."""
    av = _libav()
    return f"FFmpeg {getattr(av, 'ffmpeg_version_info', 'unknown')} (PyAV {av.__version__})"


def _watch_parent(parent_pid: int) -> None:
    """End this worker when its parent is gone (its pipes may be held open by nobody else's reads)."""
    while True:
        time.sleep(PARENT_CHECK_S)
        if os.getppid() != parent_pid:
            os._exit(0)


def _read_exact(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    return data if data is not None and len(data) == size else None


def serve(decode: Decode = decode_file, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
    """Answer requests until the input ends (see the module docstring). Tests pass a ``decode`` that
    misbehaves, to show what the pool does with a worker that hangs or dies."""
    source = stdin or sys.stdin.buffer
    sink = stdout or sys.stdout.buffer
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    try:
        said = {"decoded_by": library_version()}
    except Exception as exc:  # PyAV missing or broken: the parent leaves every file to the ffmpeg program
        said = {"unavailable": type(exc).__name__}
    if not os.environ.get(ALLOWED_DEMUXERS_ENV):  # an empty format_whitelist lets libav open any demuxer: fail closed
        said = {"unavailable": f"{ALLOWED_DEMUXERS_ENV} is not set"}
    hello = json.dumps(said).encode()
    sink.write(LENGTH.pack(len(hello)) + hello)
    sink.flush()
    if "unavailable" in said:
        return
    while (head := _read_exact(source, LENGTH.size)) is not None:
        path = _read_exact(source, LENGTH.unpack(head)[0])
        if path is None:
            return
        facts, samples = decode(path)
        facts["samples"] = 0 if samples is None else len(samples) // FLOAT32
        header = json.dumps(facts).encode()
        sink.write(LENGTH.pack(len(header)) + header)
        if samples is not None:
            sink.write(samples)
        sink.flush()


if __name__ == "__main__":
    serve()
