"""What a stat cannot tell about a file that has stopped changing: whether a local process still
holds it open for writing (:func:`writers_of_each`, from /proc), and whether its container states
how long the recording is (:func:`states_length`, from its first few KB), which decides whether a
copy cut short is caught by decoding it (carevoice.run.audio) or only by waiting. :func:`hold_back`
is the rule, :func:`holds` the check the watcher's arrivals run on files that look settled. Nothing
here prints.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from carevoice.run.audio import wav_stated_end
from carevoice.run.signatures import not_a_recording, starts_like_mp4
from carevoice.watch.arrivals import Hold

HEAD_BYTES = 8192  # what states_length reads (and as much again after an ID3 tag)
# A file held by a local writer is looked at again a settle time later, but never more often than this.
MIN_RECHECK_S = 1.0


@dataclass(frozen=True)
class Writer:
    """A local process that holds a file open for writing."""

    pid: int
    name: str  # its command name (/proc/PID/comm)


def writers_of(path: Path) -> list[Writer]:
    """The local processes that hold ``path`` open for writing (see :func:`writers_of_each`)."""
    return writers_of_each([path]).get(path, [])


def writers_of_each(paths: Iterable[Path], proc: str = "/proc") -> dict[Path, list[Writer]]:
    """The local processes that hold each of ``paths`` open for writing, in one pass over /proc.

    A process counts when one of its file descriptors is the same file (device and inode) and was
    opened write-only or read-write (``flags`` in /proc/PID/fdinfo/FD). Only descriptors whose link
    names a file of the same name are looked at closely, so the pass costs one readlink per open
    descriptor on the machine. What it cannot see, and so never waits for: processes of other users
    (their /proc/PID/fd is readable by root only; skipped), a writer on another host (an NFS or SMB
    client, a file server's own daemon) or outside this container's pid namespace, and a writer
    that reaches the file by another name (a hard link).

    Returns:
        The paths that have writers (a path without any is left out), each with its writers by pid.
    """
    wanted: dict[tuple[int, int], Path] = {}
    names: set[str] = set()
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        wanted[(st.st_dev, st.st_ino)] = path
        names.add(os.path.basename(os.path.realpath(path)))
    found: dict[Path, list[Writer]] = {}
    if not wanted:
        return found
    try:
        pids = [int(name) for name in os.listdir(proc) if name.isdigit()]
    except OSError:
        return found
    for pid in pids:
        for path in _written_by(f"{proc}/{pid}", wanted, names):
            found.setdefault(path, []).append(Writer(pid, _command(f"{proc}/{pid}")))
    return found


def _written_by(process: str, wanted: Mapping[tuple[int, int], Path], names: set[str]) -> set[Path]:
    """Which of the wanted files one process holds open for writing (none when its /proc cannot be read)."""
    try:
        fds = os.listdir(f"{process}/fd")
    except OSError:  # gone meanwhile, or another user's
        return set()
    held: set[Path] = set()
    for fd in fds:
        link = f"{process}/fd/{fd}"
        try:
            if os.path.basename(os.readlink(link).removesuffix(" (deleted)")) not in names:
                continue
            st = os.stat(link)
            path = wanted.get((st.st_dev, st.st_ino))
            if path is not None and _opened_for_writing(f"{process}/fdinfo/{fd}"):
                held.add(path)
        except OSError:  # closed meanwhile
            continue
    return held


def _opened_for_writing(fdinfo: str) -> bool:
    with open(fdinfo, encoding="ascii") as lines:
        for line in lines:
            if line.startswith("flags:"):
                return int(line.split()[1], 8) & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)
    return False


def _command(process: str) -> str:
    try:
        with open(f"{process}/comm", encoding="utf-8", errors="replace") as comm:
            return comm.read().strip()
    except OSError:
        return "?"


def states_length(path: Path) -> bool:
    """Whether the file's container says how long the recording is, so that decoding a copy cut
    short finds it short (carevoice.run.audio.truncation). Reads the first few KB.

    True for: a WAV whose data chunk states its length (within the first 8 KB); an MP3 whose first
    frame is a Xing/Info or VBRI header with a frame count; an MP4/M4A/MOV that is not fragmented
    (its index, moov, gives the length, or is missing from a cut copy); a FLAC whose STREAMINFO
    gives the total of samples; a Matroska/WebM whose Info gives a Duration; and a file that is no
    recording at all (a PDF, a picture, text: carevoice.run.signatures), as waiting changes nothing
    for it. False for everything
    else, among them a streamed WAV (length 0 or 0xFFFFFFFF), an MP3 without such a header (CBR, or
    VBR from some encoders), Ogg (Opus, Vorbis: a copy cut between two pages decodes as a whole
    shorter one), a WebM as browsers record it (no Duration), a fragmented MP4, a streamed FLAC,
    AAC (ADTS), AMR and any file that cannot be read.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(HEAD_BYTES)
            if head[:3] == b"ID3" and len(head) >= 10:  # a tag before the audio (MP3, sometimes FLAC): skip it
                handle.seek(_id3_bytes(head))
                head = handle.read(HEAD_BYTES)
    except OSError:
        return False
    for sign, stated in _SIGNS:
        if sign(head):
            try:
                return stated(head)
            except (IndexError, ValueError):
                return False  # a header cut short states nothing (and must never stop the watcher)
    return False


def _id3_bytes(head: bytes) -> int:
    """The length of an ID3v2 tag (its size is 'synchsafe': 7 bits a byte), with its header and footer."""
    size = 0
    for byte in head[6:10]:
        size = size << 7 | byte & 0x7F
    return 10 + size + (10 if head[5] & 0x10 else 0)


def _wav_states_length(head: bytes) -> bool:
    return wav_stated_end(head) is not None


def _mp3_frame(head: bytes) -> int | None:
    """Where the first MPEG layer III frame starts (an ID3 tag's padding may come first)."""
    at = head.find(b"\xff")
    while 0 <= at < len(head) - 4:
        layer3 = head[at + 1] & 0xE0 == 0xE0 and (head[at + 1] >> 1) & 3 == 1
        if layer3 and head[at + 2] >> 4 not in (0, 15) and (head[at + 2] >> 2) & 3 != 3:  # a bitrate and a sample rate
            return at
        at = head.find(b"\xff", at + 1)
    return None


def _mp3_states_length(head: bytes) -> bool:
    at = _mp3_frame(head)
    if at is None:
        return False
    mpeg1, mono = (head[at + 1] >> 3) & 3 == 3, (head[at + 3] >> 6) & 3 == 3
    side_info = (17 if mono else 32) if mpeg1 else (9 if mono else 17)
    xing = at + 4 + side_info
    if head[xing : xing + 4] in (b"Xing", b"Info"):  # flags, then the frame count if flag 1 is set
        return bool(head[xing + 7] & 1) and int.from_bytes(head[xing + 8 : xing + 12], "big") > 0
    vbri = at + 36
    return head[vbri : vbri + 4] == b"VBRI" and int.from_bytes(head[vbri + 14 : vbri + 18], "big") > 0


def _boxes(data: bytes, start: int, end: int) -> Iterable[tuple[bytes, int, int]]:
    """MP4 boxes between ``start`` and ``end``: (type, where its content starts, where it ends)."""
    at = start
    while at + 8 <= end:
        size, kind, content = int.from_bytes(data[at : at + 4], "big"), data[at + 4 : at + 8], at + 8
        if size == 1:
            size, content = int.from_bytes(data[at + 8 : at + 16], "big"), at + 16
        elif size == 0:
            size = end - at  # to the end of the file
        if size < content - at:
            return
        yield kind, content, at + size
        at += size


def _mp4_states_length(head: bytes) -> bool:
    for kind, content, end in _boxes(head, 0, len(head)):
        if kind == b"moov":  # its sample tables give the length, unless they are empty: a fragmented file (mvex)
            return all(child != b"mvex" for child, _, _ in _boxes(head, content, min(end, len(head))))
        if kind == b"mdat":  # the index comes after the data: a cut copy has none, which the decode reports
            return True
        if kind == b"moof":
            return False
    return True  # not even the first data yet: a copy this short has no index either


def _ebml_number(data: bytes, at: int, marker: bool) -> tuple[int, int] | None:
    """An EBML variable-length number at ``at`` (an element ID keeps its length ``marker``) and where it ends."""
    if at >= len(data) or data[at] == 0:
        return None
    length = 9 - data[at].bit_length()
    if at + length > len(data):
        return None
    value = int.from_bytes(data[at : at + length], "big")
    return (value if marker else value & ((1 << 7 * length) - 1)), at + length


def _ebml_elements(data: bytes, at: int, end: int) -> Iterable[tuple[int, int, int]]:
    """EBML elements between ``at`` and ``end``: (ID, where its content starts, where it ends; an
    element of unknown size ends at ``end``)."""
    while (element := _ebml_number(data, at, marker=True)) and (size := _ebml_number(data, element[1], marker=False)):
        (ident, _), (length, content) = element, size
        unknown = length == (1 << 7 * (content - element[1])) - 1
        yield ident, content, end if unknown else content + length
        if unknown:
            return
        at = content + length


MATROSKA_SEGMENT, MATROSKA_INFO, MATROSKA_DURATION, MATROSKA_CLUSTER = 0x18538067, 0x1549A966, 0x4489, 0x1F43B675


def _matroska_states_length(head: bytes) -> bool:
    for ident, content, end in _ebml_elements(head, 0, len(head)):
        if ident != MATROSKA_SEGMENT:
            continue
        for child, child_content, child_end in _ebml_elements(head, content, end):
            if child == MATROSKA_INFO:
                return any(
                    field == MATROSKA_DURATION and any(head[value:value_end])
                    for field, value, value_end in _ebml_elements(head, child_content, min(child_end, len(head)))
                )
            if child == MATROSKA_CLUSTER:
                return False
    return False


def _flac_states_length(head: bytes) -> bool:
    streaminfo = head[8:42]  # after "fLaC" and the block's header; the total is its 36 bits from bit 108
    return head[4] & 0x7F == 0 and len(streaminfo) == 34 and int.from_bytes(streaminfo[10:18], "big") & ((1 << 36) - 1) > 0


# How each container is recognised by its first bytes, and how it states its length. A file that is
# no recording (a PDF saved as .m4a) needs no wait: more of it is no recording either, and decoding
# it says what it is at once.
_SIGNS: tuple[tuple[Callable[[bytes], bool], Callable[[bytes], bool]], ...] = (
    (lambda head: not_a_recording(head) is not None, lambda head: True),
    (lambda head: head[:4] == b"RIFF" and head[8:12] == b"WAVE", _wav_states_length),
    (lambda head: head[:4] == b"fLaC", _flac_states_length),
    (lambda head: head[:4] == b"OggS", lambda head: False),  # its length is its last page's: a copy cut between pages looks whole
    (lambda head: head[:4] == b"\x1a\x45\xdf\xa3", _matroska_states_length),
    (starts_like_mp4, _mp4_states_length),
    (lambda head: _mp3_frame(head[:4096]) is not None, _mp3_states_length),
)


def hold_back(writers: list[Writer], sized: bool, unchanged_s: float, settle_s: float, settle_unsized_s: float) -> Hold | None:
    """Whether a file that has been unchanged for ``settle_s`` or more must wait yet (the rule, as data).

    Args:
        writers: Local processes that hold it open for writing: it waits while there are any.
        sized: Its container states its length (:func:`states_length`); else it waits until it
            has been unchanged for ``settle_unsized_s``, as nothing else tells a stalled copy from a whole one.
        unchanged_s: How long it has been unchanged.
        settle_s: --settle.
        settle_unsized_s: --settle-unsized.
    """
    if writers:
        more = f" and {len(writers) - 1} more" if len(writers) > 1 else ""
        wait_s = max(settle_s, MIN_RECHECK_S)
        return Hold(f"still open for writing by pid {writers[0].pid} ({writers[0].name}){more}; looked at again every {wait_s:g} s", wait_s)
    if not sized and unchanged_s < settle_unsized_s:
        return Hold(
            f"its format does not state its length, so a copy cut short would look whole: "
            f"taken once unchanged for {settle_unsized_s:g} s (--settle-unsized)",
            settle_unsized_s - unchanged_s,
        )
    return None


def holds(unchanged_s: Mapping[Path, float], settle_s: float, settle_unsized_s: float) -> dict[Path, Hold]:
    """The files of ``unchanged_s`` (path: seconds unchanged) that must wait yet, and why (:func:`hold_back`):
    one pass over /proc for all of them; a file's first bytes are read only while its wait may depend on them."""
    writing = writers_of_each(unchanged_s)
    held = {}
    for path, alike_s in unchanged_s.items():
        sized = alike_s >= settle_unsized_s or states_length(path)
        if (hold := hold_back(writing.get(path, []), sized, alike_s, settle_s, settle_unsized_s)) is not None:
            held[path] = hold
    return held
