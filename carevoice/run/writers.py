"""Render a Transcript as txt / srt / vtt / json / tsv (pure functions) and write them atomically.

Every file goes to a temporary name in the same folder, is fsynced and then renamed over the
final name, so a crash never leaves a truncated output. The hidden record per input
(carevoice.run.records) is written here too, around the outputs it lists: what CareVoice wrote, for
which recording, with which model and options. It makes reruns exact and lets CareVoice refuse to
overwrite a file it did not write (or one the user has since edited). A person's file that has to
make way (its recording was replaced, or --overwrite) is kept aside under a conflict copy name,
``visit (edited 2026-12-06 0824, conflict).txt``, never overwriting anything.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import os
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from carevoice import __version__, interrupts
from carevoice.errors import Cause, OutputError
from carevoice.files import pid_alive, rename_noreplace, sha256_of
from carevoice.run.names import NAME_MAX_BYTES, hidden_name, name_bytes
from carevoice.run.records import Identity, OutputEntry, Provenance, Record, record_path
from carevoice.run.rules import IN_THE_WAY_HINT
from carevoice.settings import OutputFormat
from carevoice.transcript import Segment, Transcript, Word

MAX_CUE_S = 7.0
MAX_CUE_CHARS = 84
MAX_LINE_CHARS = 42
TEMP_SUFFIX = ".carevoice-tmp"
# Temporary names carry "<pid>@<host tag>": shards and Ray workers on other machines (or in other
# containers, whose pids overlap ours) write into the same shared folders, and their pids say
# nothing here. Such a file is only taken for abandoned once it is this old (a write takes ms).
HOST_TAG = hashlib.sha256(socket.gethostname().encode("utf-8", "surrogateescape")).hexdigest()[:8]
FOREIGN_TEMP_AGE_S = 3600.0


def current_umask() -> int:
    """This process's umask, read without changing it where Linux says it (/proc/self/status)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and put back at once (only the main thread writes outputs)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode an ordinary new file gets (0666 & ~umask): mkstemp makes its files 0600, and in a
    folder a group shares, outputs and records must stay writable by the group when the umask says so."""
    return 0o666 & ~current_umask()


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


def transcript_from_json(data: bytes) -> Transcript:
    """The Transcript a JSON output holds (render_json's inverse: rendering it again gives the
    same bytes), so that a missing format can be written without transcribing again.

    Raises:
        ValueError: not a CareVoice JSON output.
    """
    doc = json.loads(data.decode("utf-8"))
    try:
        segments = tuple(
            Segment(
                s["id"], s["start"], s["end"], s["text"], s["avg_logprob"], s["no_speech_prob"], s["compression_ratio"],
                tuple(Word(w["start"], w["end"], w["word"], w["probability"]) for w in s["words"]), s["language"],
            )
            for s in doc["segments"]
        )  # fmt: skip
        return Transcript(
            doc["language"], doc["language_probability"], doc["duration"], segments, doc["speech_detected"], doc["model"], doc["options"]
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a CareVoice transcript ({type(exc).__name__})") from None


def atomic_write(path: Path, data: bytes) -> None:
    """Write data under a temporary name in the same folder, fsync, then rename over path.

    Raises:
        OSError: the write failed; path is untouched and the temporary file removed.
    """
    reserve = len(f".{os.getpid()}@{HOST_TAG}.") + 8 + len(TEMP_SUFFIX)  # mkstemp adds 8 random characters
    prefix = hidden_name(path.name, "", reserve) + f".{os.getpid()}@{HOST_TAG}."
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), file_mode())
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


# What a folder may stop refusing without the recording changing: space freed, a mount made writable again.
PASSING_WRITE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO})


def write_error(folder: Path, exc: OSError) -> OutputError:
    """The one-line error for a folder CareVoice cannot write its outputs (or their lock) in."""
    return OutputError(
        f"cannot write outputs in {folder} ({exc.strerror or type(exc).__name__})",
        "check free disk space and that the folder is writable, then rerun (finished files are kept)",
        cause=Cause.FOLDER if exc.errno in PASSING_WRITE_ERRORS else None,
    )


def conflict_name(name: str, edited_at_s: float, number: int = 1) -> str:
    """The name a person's file is kept under when it has to make way: ``visit (edited 2026-12-06
    0824, conflict).txt`` — when it was last saved (local time), then ``conflict 2``, ``3`` … for
    the next free one. Its extension stays (it opens as before) and is never a recording's, so
    discovery never takes it for one; a name that would be too long keeps the end of the stem."""
    stem, _, extension = name.rpartition(".")
    stamp = datetime.fromtimestamp(edited_at_s).strftime("%Y-%m-%d %H%M")
    tag = f" (edited {stamp}, conflict{'' if number == 1 else f' {number}'}).{extension}"
    room = NAME_MAX_BYTES - name_bytes(tag)
    if name_bytes(stem) > room:
        stem = os.fsencode(stem)[:room].decode("utf-8", "ignore")  # whole characters only
    return stem + tag


def keep_aside(path: Path) -> Path:
    """Move a person's file to the first free :func:`conflict_name` beside it, bytes and times as
    they are, and return where. Never replaces a file, and never lets go of a save made meanwhile:
    Linux moves it in one step that refuses a taken name (renameat2 RENAME_NOREPLACE); elsewhere
    the copy is made with link(2) (or, without hard links, created exclusively), and the original
    name is let go only while it still holds what was copied (a newer save is kept aside too).

    Raises:
        OSError: it could not be kept aside; it is still where it was.
    """
    st = os.lstat(path)
    for number in itertools.count(1):
        target = path.with_name(conflict_name(path.name, st.st_mtime, number))
        try:
            if rename_noreplace(path, target):
                return target
            _copy_exclusively(path, target, st)
        except FileExistsError:
            continue
        now = os.lstat(path)
        if (now.st_ino, now.st_size, now.st_mtime_ns) != (st.st_ino, st.st_size, st.st_mtime_ns):
            return keep_aside(path)  # saved again meanwhile: that save goes aside too (and the copy made stays)
        os.unlink(path)
        return target
    raise AssertionError("unreachable: itertools.count never ends")


def _copy_exclusively(path: Path, target: Path, st: os.stat_result) -> None:
    """``target`` becomes the same file as ``path``; FileExistsError when the name is taken."""
    try:
        os.link(path, target, follow_symlinks=False)
        return
    except FileExistsError:
        raise
    except OSError:
        if not stat.S_ISREG(st.st_mode):
            raise
    # No hard links here (SMB, FAT, some FUSE mounts): a new file, created only if the name is free.
    with open(path, "rb") as source, open(target, "xb") as copy:
        try:
            while block := source.read(1 << 20):
                copy.write(block)
            copy.flush()
            os.fsync(copy.fileno())
        except BaseException:
            os.unlink(target)
            raise
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))


@dataclass(frozen=True)
class Written:
    """What :func:`write_outputs` did: the outputs written, and where a person's files were kept aside."""

    outputs: tuple[Path, ...]
    aside: tuple[Path, ...] = ()


def _current_sha256(path: Path) -> str | None:
    try:
        return sha256_of(path)
    except OSError:
        return None


def write_outputs(
    stem: Path,
    formats: Sequence[OutputFormat],
    transcript: Transcript,
    provenance: Provenance,
    *,
    remove: Sequence[OutputFormat] = (),
    keep: Sequence[OutputFormat] = (),
    aside: Sequence[OutputFormat] = (),
    old: Record | None = None,
    overwrite: bool = False,
    in_the_way_hint: str = IN_THE_WAY_HINT[True],
) -> Written:
    """Render and atomically write ``formats``, delete ``remove`` (outputs of an old transcript),
    keep a person's files in ``aside`` under a conflict copy name (:func:`keep_aside`), and record
    the outputs, with those of ``old`` listed in ``keep``, as one complete record.

    What is on disk is checked again here, at the last moment (a file can wait minutes between
    its plan and its writing): an output to replace must still be CareVoice's (``old`` says what
    it wrote), unless it is to be kept aside or ``overwrite`` (then it is kept aside too: a
    person's file is never lost); one to remove is removed only while it is, and one to keep stays
    listed only while it is. Files are kept aside first, then the record is written (complete:
    false, with the new hashes, the hashes of the files being replaced, and the files to remove), so
    a crash part-way still lets the next run recognise every file as CareVoice's own and redo the input.

    Args:
        in_the_way_hint: What to do about an output that became a person's since the plan, as
            the command that runs this can do it (carevoice.run.rules.IN_THE_WAY_HINT).

    Raises:
        OutputError: a folder or file could not be written, or an output became a person's since
            the plan; files already there stay intact.
    """
    rendered = {fmt: RENDERERS[fmt](transcript).encode("utf-8") for fmt in formats}

    def still_ours(fmt: OutputFormat) -> bool:
        return old is not None and old.ours(fmt.value, _current_sha256(output_path(stem, fmt)))

    def in_the_way(fmt: OutputFormat) -> bool:  # a file CareVoice did not write (or one edited since) is there
        return os.path.lexists(output_path(stem, fmt)) and not still_ours(fmt)

    writing = {}
    moving = [fmt for fmt in aside if fmt not in rendered and in_the_way(fmt)]
    for fmt, data in rendered.items():
        path = output_path(stem, fmt)
        previous = _current_sha256(path)
        ours = old is not None and old.ours(fmt.value, previous)
        if os.path.lexists(path) and not ours:
            if fmt not in aside and not overwrite:
                # Cause.FOLDER: what lies beside the recording, not in it; a watcher looks again once the folder changes.
                raise OutputError(
                    f"{path.name} exists and was not written by CareVoice (or was edited)", in_the_way_hint, cause=Cause.FOLDER
                )
            moving.append(fmt)
        writing[fmt.value] = OutputEntry(path.name, hashlib.sha256(data).hexdigest(), previous if ours else None, None, provenance.words)

    moving.sort(key=lambda fmt: aside.index(fmt) if fmt in aside else len(aside))  # as planned, then what --overwrite found since
    kept = {fmt.value: old.outputs[fmt.value] for fmt in keep if old is not None and fmt.value in old.outputs and still_ours(fmt)}
    # An output planned aside that is CareVoice's again (the edit was undone) describes the old transcript: it goes.
    gone = [*remove, *(fmt for fmt in aside if fmt not in rendered and fmt not in moving)]
    doomed = {fmt.value: old.outputs[fmt.value] for fmt in gone if old is not None and fmt.value in old.outputs and still_ours(fmt)}
    pending = Record.made(provenance, {**kept, **doomed, **writing}, complete=False, duration_s=round(transcript.duration_s, 3))
    # Ctrl-C and SIGTERM wait until this file's outputs are all written (a few fsyncs), so an
    # interrupted run leaves each file's outputs whole or absent.
    try:
        with interrupts.deferred():
            stem.parent.mkdir(parents=True, exist_ok=True)
            moved = tuple(keep_aside(output_path(stem, fmt)) for fmt in moving)
            atomic_write(record_path(stem), pending.to_json())
            for fmt, data in rendered.items():
                path = output_path(stem, fmt)
                atomic_write(path, data)
                entry = writing[fmt.value]
                writing[fmt.value] = replace(entry, identity=Identity.from_stat(os.stat(path), entry.sha256))
            for fmt_value in doomed:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(output_path(stem, OutputFormat(fmt_value)))
            for fmt_value, entry in kept.items():  # its current stat (a touch) saves a read next time
                with contextlib.suppress(OSError):
                    kept[fmt_value] = replace(
                        entry, identity=Identity.from_stat(os.stat(output_path(stem, OutputFormat(fmt_value))), entry.sha256)
                    )
            atomic_write(record_path(stem), Record.made(provenance, {**kept, **writing}, complete=True, duration_s=pending.duration_s).to_json())
    except OSError as exc:
        raise write_error(stem.parent, exc) from None
    return Written(tuple(output_path(stem, fmt) for fmt in formats), moved)


def retire_outputs(stem: Path, old: Record) -> tuple[Path, ...]:
    """Take away the outputs of a recording that was replaced by one that could not be transcribed:
    what CareVoice wrote (and nobody edited since) is removed, a person's edit is kept aside
    (:func:`keep_aside`), and the record goes last, so nothing under ``stem`` describes the old
    recording. Returns where edits were kept.

    Raises:
        OutputError: the folder refuses it (what was done stays done; the next run finishes it).
    """
    aside = []
    try:
        for fmt_value in old.outputs:
            path = output_path(stem, OutputFormat(fmt_value))
            if not os.path.lexists(path):
                continue
            if old.ours(fmt_value, _current_sha256(path)):
                os.unlink(path)
            else:
                aside.append(keep_aside(path))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(record_path(stem))
    except OSError as exc:
        raise write_error(stem.parent, exc) from None
    return tuple(aside)


def refresh_record(stem: Path, record: Record, input_identity: Identity) -> None:
    """Record the recording's new stat after a check found its bytes unchanged (a ``touch``, a copy),
    so the next run needs no read. Best effort: a record that cannot be written costs a read next time."""
    with contextlib.suppress(OSError):
        atomic_write(record_path(stem), replace(record, input=input_identity).to_json())


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
