"""Render a Transcript as txt / srt / vtt / json / tsv (pure functions) and write them atomically.

Every file goes to a temporary name in the same folder, is fsynced and then renamed over the
final name, so a crash never leaves a truncated output. A hidden record per input
(``.<name>.carevoice.json``) lists what CareVoice wrote, with hashes and the options used:
it makes resume exact (finished = recorded, same options, files unchanged) and lets CareVoice
refuse to overwrite a file it did not write (or one the user has since edited).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from carevoice import __version__, interrupts
from carevoice.errors import OutputError
from carevoice.locks import pid_alive
from carevoice.settings import OutputFormat
from carevoice.transcript import Segment, Transcript, Word

MAX_CUE_S = 7.0
MAX_CUE_CHARS = 84
MAX_LINE_CHARS = 42
TEMP_SUFFIX = ".carevoice-tmp"
RECORD_VERSION = 1
# Temporary names carry "<pid>@<host tag>": shards and Ray workers on other machines (or in other
# containers, whose pids overlap ours) write into the same shared folders, and their pids say
# nothing here. Such a file is only taken for abandoned once it is this old (a write takes ms).
HOST_TAG = hashlib.sha256(socket.gethostname().encode("utf-8", "surrogateescape")).hexdigest()[:8]
FOREIGN_TEMP_AGE_S = 3600.0


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files 0600; outputs get the mode an ordinary file would (0666 & ~umask).
FILE_MODE = 0o666 & ~_current_umask()


@dataclass(frozen=True)
class Cue:
    """One subtitle cue, in integer milliseconds."""

    start_ms: int
    end_ms: int
    text: str


@dataclass(frozen=True)
class SubtitleStyle:
    """The differences between SRT and VTT, as data."""

    header: str
    decimal_marker: str
    numbered: bool


SRT = SubtitleStyle(header="", decimal_marker=",", numbered=True)
VTT = SubtitleStyle(header="WEBVTT\n\n", decimal_marker=".", numbered=False)


def to_ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def format_timestamp(ms: int, decimal_marker: str) -> str:
    """``HH:MM:SS,mmm`` (always with hours, as both SRT and VTT players expect)."""
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    seconds, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{decimal_marker}{ms:03d}"


def _wrap(text: str) -> str:
    """Break a cue into at most two balanced lines of about MAX_LINE_CHARS."""
    if len(text) <= MAX_LINE_CHARS or " " not in text:
        return text
    middle = len(text) // 2
    spaces = [i for i, ch in enumerate(text) if ch == " "]
    cut = min(spaces, key=lambda i: abs(i - middle))
    return text[:cut].rstrip() + "\n" + text[cut + 1 :].lstrip()


def _cues_from_words(words: tuple[Word, ...]) -> list[Cue]:
    cues: list[Cue] = []
    current: list[Word] = []

    def close() -> None:
        text = "".join(w.text for w in current).strip()
        if text:
            cues.append(Cue(to_ms(current[0].start_s), to_ms(current[-1].end_s), text))
        current.clear()

    for word in words:
        if current:
            text = "".join(w.text for w in current + [word]).strip()
            if word.end_s - current[0].start_s > MAX_CUE_S or len(text) > MAX_CUE_CHARS:
                close()
        current.append(word)
    if current:
        close()
    return cues


def _cues_without_words(segment: Segment) -> list[Cue]:
    """Split a segment with no word timings, filling each cue up to the limits; time is shared in
    proportion to characters. Text is split at spaces, or between characters for scripts written
    without spaces (CJK); a lone ASCII word is never cut."""
    text = segment.text.strip()
    joiner = " " if " " in text or text.isascii() else ""
    tokens = text.split() if joiner else list(text)
    text = joiner.join(tokens)
    start_ms = to_ms(segment.start_s)
    ms_per_char = max(to_ms(segment.end_s) - start_ms, 0) / len(text)
    pieces: list[list[str]] = [[]]
    for token in tokens:
        shown = len(joiner.join([*pieces[-1], token]))
        # A separator's time belongs to the cue before it, so cues meet without gaps.
        if pieces[-1] and (shown > MAX_CUE_CHARS or (shown + len(joiner)) * ms_per_char > MAX_CUE_S * 1000):
            pieces.append([])
        pieces[-1].append(token)
    cues = []
    offset = 0  # characters before the piece, separators included
    for piece in pieces:
        part = joiner.join(piece)
        following = min(offset + len(part) + len(joiner), len(text))
        cues.append(Cue(start_ms + round(offset * ms_per_char), start_ms + round(following * ms_per_char), part))
        offset = following
    return cues


def subtitle_cues(transcript: Transcript) -> list[Cue]:
    """Subtitle-grade cues: none longer than MAX_CUE_S or MAX_CUE_CHARS, split at word timings."""
    cues: list[Cue] = []
    for segment in transcript.segments:
        if not segment.text.strip():
            continue
        cues.extend(_cues_from_words(segment.words) if segment.words else _cues_without_words(segment))
    # Overlaps confuse players: a cue ends no later than the next one starts. A single word or
    # token can still outlast MAX_CUE_S (an aligner stretching a word over a pause): cut it.
    fixed = []
    for cue, following in zip(cues, cues[1:] + [None]):
        end = min(cue.end_ms, following.start_ms) if following else cue.end_ms
        end = min(end, cue.start_ms + round(MAX_CUE_S * 1000))
        fixed.append(Cue(cue.start_ms, max(end, cue.start_ms + 1), cue.text))
    return fixed


def render_subtitles(transcript: Transcript, style: SubtitleStyle) -> str:
    blocks = []
    for index, cue in enumerate(subtitle_cues(transcript), start=1):
        timing = f"{format_timestamp(cue.start_ms, style.decimal_marker)} --> {format_timestamp(cue.end_ms, style.decimal_marker)}"
        number = f"{index}\n" if style.numbered else ""
        blocks.append(f"{number}{timing}\n{_wrap(cue.text)}\n")
    return style.header + "\n".join(blocks)


def render_srt(transcript: Transcript) -> str:
    return render_subtitles(transcript, SRT)


def render_vtt(transcript: Transcript) -> str:
    return render_subtitles(transcript, VTT)


def render_txt(transcript: Transcript) -> str:
    lines = [s.text.strip() for s in transcript.segments if s.text.strip()]
    return "\n".join(lines) + "\n" if lines else ""


def render_tsv(transcript: Transcript) -> str:
    rows = ["start\tend\ttext"]
    for s in transcript.segments:
        text = " ".join(s.text.split())  # no tabs or newlines inside a field
        if text:
            rows.append(f"{to_ms(s.start_s)}\t{to_ms(s.end_s)}\t{text}")
    return "\n".join(rows) + "\n"


def transcript_to_dict(transcript: Transcript) -> dict[str, Any]:
    return {
        "language": transcript.language,
        "language_probability": round(transcript.language_probability, 4),
        "duration": round(transcript.duration_s, 3),
        "speech_detected": transcript.speech_detected,
        "text": transcript.text,
        "segments": [
            {
                "id": s.id,
                "start": s.start_s,
                "end": s.end_s,
                "text": s.text,
                "avg_logprob": s.avg_logprob,
                "no_speech_prob": s.no_speech_prob,
                "compression_ratio": s.compression_ratio,
                "language": s.language,
                "words": [{"start": w.start_s, "end": w.end_s, "word": w.text, "probability": w.probability} for w in s.words],
            }
            for s in transcript.segments
        ],
        "model": transcript.model,
        "options": transcript.options,
        "carevoice_version": __version__,
    }


def render_json(transcript: Transcript) -> str:
    return json.dumps(transcript_to_dict(transcript), ensure_ascii=False, indent=2) + "\n"


RENDERERS: dict[OutputFormat, Callable[[Transcript], str]] = {
    OutputFormat.TXT: render_txt,
    OutputFormat.SRT: render_srt,
    OutputFormat.VTT: render_vtt,
    OutputFormat.JSON: render_json,
    OutputFormat.TSV: render_tsv,
}


def output_path(stem: Path, fmt: OutputFormat) -> Path:
    return stem.with_name(f"{stem.name}.{fmt.value}")


def record_path(stem: Path) -> Path:
    return stem.with_name(f".{stem.name}.carevoice.json")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: Path) -> str | None:
    try:
        return _sha256(path.read_bytes())
    except OSError:
        return None


def atomic_write(path: Path, data: bytes) -> None:
    """Write data under a temporary name in the same folder, fsync, then rename over path.

    Raises:
        OSError: the write failed; path is untouched and the temporary file removed.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}@{HOST_TAG}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), FILE_MODE)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_record(stem: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(record_path(stem).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("version") == RECORD_VERSION else None


def is_finished(stem: Path, formats: tuple[OutputFormat, ...], fingerprint: dict[str, Any]) -> bool:
    """True when every requested output exists exactly as CareVoice wrote it, with these options."""
    record = read_record(stem)
    if not record or not record.get("complete") or record.get("fingerprint") != fingerprint:
        return False
    outputs = record.get("outputs", {})
    for fmt in formats:
        entry = outputs.get(fmt.value)
        if not entry or _file_sha256(output_path(stem, fmt)) != entry.get("sha256"):
            return False
    return True


def foreign_outputs(stem: Path, formats: tuple[OutputFormat, ...]) -> list[Path]:
    """Existing output paths that CareVoice did not write (or that were edited since)."""
    record = read_record(stem) or {}
    outputs = record.get("outputs", {})
    foreign = []
    for fmt in formats:
        path = output_path(stem, fmt)
        if not os.path.lexists(path):
            continue
        entry = outputs.get(fmt.value, {})
        if _file_sha256(path) not in {entry.get("sha256"), entry.get("previous_sha256")} - {None}:
            foreign.append(path)
    return foreign


def write_error(folder: Path, exc: OSError) -> OutputError:
    """The one-line error for a folder CareVoice cannot write its outputs (or their lock) in."""
    return OutputError(
        f"cannot write outputs in {folder} ({exc.strerror or type(exc).__name__})",
        "check free disk space and that the folder is writable, then rerun (finished files are kept)",
    )


def write_outputs(
    stem: Path, formats: tuple[OutputFormat, ...], transcript: Transcript, fingerprint: dict[str, Any]
) -> tuple[Path, ...]:
    """Render and atomically write every requested format, then mark the record complete.

    The record is written first (complete: false, with the new hashes and the hashes of the
    files being replaced), so a crash part-way still lets the next run recognise every file
    as CareVoice's own and redo the input.

    Raises:
        OutputError: a folder or file could not be written; files already there stay intact.
    """
    rendered = {fmt: RENDERERS[fmt](transcript).encode("utf-8") for fmt in formats}
    old = (read_record(stem) or {}).get("outputs", {})
    outputs = {}
    for fmt, data in rendered.items():
        previous = _file_sha256(output_path(stem, fmt))
        ours = previous in {old.get(fmt.value, {}).get("sha256"), old.get(fmt.value, {}).get("previous_sha256")}
        outputs[fmt.value] = {
            "name": output_path(stem, fmt).name,
            "sha256": _sha256(data),
            "previous_sha256": previous if ours else None,
        }
    record = {"version": RECORD_VERSION, "complete": False, "fingerprint": fingerprint, "outputs": outputs}
    # ASCII JSON: a file name that is not valid UTF-8 is kept as \udcXX escapes instead of failing to encode.
    # Ctrl-C and SIGTERM wait until this file's outputs are all written (a few fsyncs), so an
    # interrupted run leaves each file's outputs whole or absent.
    try:
        with interrupts.deferred():
            stem.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(record_path(stem), json.dumps(record).encode("ascii"))
            for fmt, data in rendered.items():
                atomic_write(output_path(stem, fmt), data)
            record["complete"] = True
            atomic_write(record_path(stem), json.dumps(record).encode("ascii"))
    except OSError as exc:
        raise write_error(stem.parent, exc) from None
    return tuple(output_path(stem, fmt) for fmt in formats)


def remove_stale_temp_files(folder: Path) -> int:
    """Delete CareVoice temporary files left in folder by processes that no longer run."""
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if not (entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX)):
            continue
        parts = entry.name[: -len(TEMP_SUFFIX)].split(".")  # ., name..., pid@host, random
        pid, _, host = (parts[-2] if len(parts) >= 3 else "").partition("@")
        if pid.isdigit() and host and host != HOST_TAG:
            try:
                if time.time() - entry.stat(follow_symlinks=False).st_mtime < FOREIGN_TEMP_AGE_S:
                    continue
            except OSError:
                continue
        elif pid.isdigit() and pid_alive(int(pid)):
            continue
        try:
            os.unlink(entry.path)
            removed += 1
        except OSError:
            pass
    return removed

