"""The fault soak of `carevoice watch` (issue 22): recordings arrive for a long time while every
fault a service meets in months is thrown at it, then every output is checked against what
`carevoice transcribe` writes for the same audio.

The watcher (``-m tiny.en --device cpu -f txt,json``) runs as a child process, as an unprivileged
user when this runs as root (``setpriv`` to nobody: root ignores folder modes), on a work folder of
its own. Every ``--every`` seconds an episode starts, drawn from a seeded generator (the same
``--seed`` gives the same episodes in the same order; how they interleave with the watcher's
batches depends on the machine):

- ``cp`` / ``mv``: a plain arrival, written in place in four pieces, or under a hidden name and
  renamed into place;
- ``gather-removed`` / ``gather-rewritten``: a file that settles and is removed, or rewritten with
  another recording, inside the ``--gather`` window;
- ``reexport``: ``N.mp3`` is transcribed, ``N.wav`` (another recording) arrives and collides with
  it, then ``N.mp3`` is removed: ``N.txt`` must become the wav's transcript;
- ``blocked-output``: a person's ``N.txt`` is in the way of ``N.wav``, then moved out of the folder;
- ``stall-open-wav``: a streaming WAV (header length 0xFFFFFFFF, as ``ffmpeg -f wav pipe:`` writes)
  written 40 % by a process of the watcher's user that keeps it open for writing longer than the
  settle time (longer than ``--settle-unsized`` too, where the watcher has it), then finished;
- ``stall-closed-mp3``: a CBR MP3 without a Xing header written 40 %, closed, left longer than
  ``--settle`` (but within ``--settle-unsized``, where the watcher has it), then finished;
- ``unwritable-folder`` / ``unenterable-folder``: a sub-folder made 0555 (or 0000) as its files
  arrive, and given back its 0755 a while later;

and on a timetable: restarts (SIGTERM or SIGKILL at a random moment, and the same heartbeat again;
some restarts walk with ``--poll 2s`` instead of events; all of them in the run's first
RESTARTS_UNTIL, so that the last watcher's memory can be judged over the rest), and idle windows
(no arrivals; the watcher's CPU time from /proc over IDLE_WINDOW_S, right after a gather window in
which the ready file was removed, right after one whose file was kept, or plainly idle). A watcher
that exits by itself is counted as a crash and started again, as systemd would.

At the end (after the episodes under way have finished and each file that was unblocked has had
its time) the watcher is stopped with SIGTERM and the checks run: each recording present has the
txt and json of its own audio; no output holds another recording's words, and none is there for a
recording that was gone before it was transcribed (a recording removed once transcribed keeps its
outputs: nothing asks the watcher to delete a transcript); no transcript was written from part of
an upload; each file unblocked by a removal, a moved output or a permission fixed was done without
a restart, within one walk (RESCAN_S with events, the --poll time without) and its batch; a file
held back (colliding, blocked, in a folder it cannot write or enter) was named by a line, or its
folder was; every failure line names a file; the watcher never crashed and stopped with 0; idle
CPU under IDLE_CPU_LIMIT of a core in every window; RSS flat (the last watcher's: mean of the last
sixth over the third sixth, as benchmarks/watch_soak.py measures it); the day report counts
recordings, not events (nothing failed at the end: its failed count must be 0); a person's file
in the way was not overwritten; and every kind of fault was met at least once.

Usage: python benchmarks/watch_faults.py --minutes 60 --out /tmp/faults
(writes faults.json, faults.md and watcher.log there; the work folder is kept where a check failed)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # this checkout's carevoice, as the watcher runs it

from common import REPO, corpus_clips
from watch_soak import RSS_GROWTH_LIMIT, rss_growth, rss_mib

from carevoice.settings import RESCAN_S, parse_duration

IDLE_CPU_LIMIT = 0.01  # of one core, in every idle window (issue 22)
IDLE_WINDOW_S = 20.0
POLL = "2s"
SETTLE_UNSIZED_OPTION = "--settle-unsized"  # where the watcher has it: the settle time of formats that do not state their length
SETTLE_UNSIZED_S = 20.0
RESTARTS_UNTIL = 0.3  # of the run: restarts happen before, the last watcher runs the rest
RESTART_EVERY_S = 150.0
IDLE_WINDOWS = 12  # in the run (at least one every IDLE_EVERY_MIN_S): each pauses the arrivals for 30-90 s
IDLE_EVERY_MIN_S = 120.0
STALL_FRACTION = 0.4
LINE_DEADLINE_S = 60.0  # for a line that names a file the watcher cannot do yet (then the episode goes on anyway)
WATCHER_USER = 65534  # nobody: the watcher's user when this runs as root
EPISODES = {  # kind -> weight of the draw
    "cp": 3, "mv": 3, "gather-removed": 1, "gather-rewritten": 1, "reexport": 1, "blocked-output": 1,
    "stall-open-wav": 1, "stall-closed-mp3": 1, "unwritable-folder": 1, "unenterable-folder": 0.5,
}  # fmt: skip
IDLE_KINDS = ("after-gather-removed", "after-gather-kept", "plain")
AUDIO = {".wav", ".flac", ".mp3"}
FAILURE = re.compile(r"\b(error|failed|traceback)\b", re.IGNORECASE)
STALL_WRITER = """import sys
source, target, cut = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open(source, "rb").read()
with open(target, "wb") as handle:
    handle.write(data[:cut])
    handle.flush()
    sys.stdin.readline()
    handle.write(data[cut:])
"""


# --- who the watcher runs as, and what it is checked against ---


@dataclass(frozen=True)
class Account:
    """The watcher's user: nobody when this runs as root (root ignores folder modes), else this user."""

    uid: int
    gid: int
    prefix: tuple[str, ...]

    @classmethod
    def choose(cls) -> Account:
        if os.geteuid() != 0:
            return cls(os.getuid(), os.getgid(), ())
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            sys.exit("running as root needs setpriv (util-linux) to run the watcher as an unprivileged user")
        return cls(WATCHER_USER, WATCHER_USER, (setpriv, f"--reuid={WATCHER_USER}", f"--regid={WATCHER_USER}", "--clear-groups"))

    def give(self, path: Path) -> Path:
        """The file or folder becomes the watcher's user's."""
        if os.geteuid() == 0:
            os.chown(path, self.uid, self.gid)
        return path

    def folder(self, path: Path) -> Path:
        """A new folder of the watcher's user."""
        path.mkdir()
        return self.give(path)


@dataclass(frozen=True)
class Material:
    """A recording that is uploaded, and what `carevoice transcribe` wrote for it."""

    path: Path
    text: str
    json_text: str
    duration_s: float

    @property
    def name(self) -> str:
        return self.path.name


def make_materials(folder: Path, account: Account, env: dict[str, str], rng: random.Random, model: str) -> dict[str, Material]:
    """Corpus clips (English, up to 20 s) and the two formats that do not state their length, made
    from other clips; each transcribed once by `carevoice transcribe` (the reference)."""
    clips = corpus_clips({"en"}, max_s=20)
    plain = rng.sample([c for c in clips if c.path.suffix in (".wav", ".flac")], 10)
    mp3 = [c for c in clips if c.path.suffix == ".mp3"]
    longer = rng.sample([c for c in clips if c.duration_s >= 8 and c not in plain and c.path.suffix != ".mp3"], 4)
    account.folder(folder)
    for clip in plain + mp3:
        shutil.copy(clip.path, folder / clip.path.name)
    ffmpeg = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i"]
    for clip in longer[:2]:  # streaming WAV: ffmpeg cannot seek back to write the lengths
        with open(folder / f"stream-{clip.path.stem}.wav", "wb") as out:
            subprocess.run([*ffmpeg, str(clip.path), "-f", "wav", "pipe:"], stdout=out, check=True)
    for clip in longer[2:]:
        subprocess.run(
            [*ffmpeg, str(clip.path), "-c:a", "libmp3lame", "-b:a", "64k", "-write_xing", "0", str(folder / f"cbr-{clip.path.stem}.mp3")],
            check=True,
        )
    for path in folder.iterdir():
        account.give(path)
    subprocess.run(
        [*account.prefix, sys.executable, "-m", "carevoice", "transcribe", str(folder), "-m", model, "--device", "cpu", "-f", "txt,json", "-q"],
        cwd=REPO, env=env, check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    materials: dict[str, Material] = {}
    texts: set[str] = set()
    for path in sorted(p for p in folder.iterdir() if p.suffix in AUDIO):
        text = path.with_suffix(".txt").read_text(encoding="utf-8")
        data = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        if text.strip() and text not in texts:  # two recordings with the same words could not be told apart
            texts.add(text)
            materials[path.name] = Material(path, text, data["text"], data["duration"])
    return materials


# --- the watcher in a child process ---


class Watcher:
    """One `carevoice watch` process; its stderr lines go to ``lines`` (driver clock, generation, text) and the log."""

    def __init__(self, generation: int, args: list[str], account: Account, env: dict[str, str], lines: list, log) -> None:  # type: ignore[no-untyped-def]
        self.generation = generation
        self.poll = "--poll" in args
        self.started_s = time.monotonic()
        self.watching = False  # it said so: the model is loaded, the folders are watched
        self.child = subprocess.Popen(
            [*account.prefix, sys.executable, "-m", "carevoice", "watch", *args],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        log.write(f"--- watcher {generation} (pid {self.child.pid}): {' '.join(args)}\n")
        log.flush()
        threading.Thread(target=self._read, args=(lines, log), daemon=True).start()

    def _read(self, lines: list, log) -> None:  # type: ignore[no-untyped-def]
        assert self.child.stderr is not None
        for line in self.child.stderr:
            lines.append((time.monotonic(), self.generation, line.rstrip("\n")))
            self.watching = self.watching or " watching " in line
            log.write(f"[{self.generation}] {line}")
            log.flush()

    def cpu_s(self) -> float | None:
        """User + system CPU seconds of the watcher process so far (/proc/PID/stat)."""
        try:
            fields = Path(f"/proc/{self.child.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- episodes: generators that yield a wait (seconds) or an Until, and are sent whether it came ---


@dataclass
class Until:
    ready: Callable[[], bool]
    timeout_s: float


Episode = Generator["float | Until", "bool | None", None]


@dataclass
class Unblock:
    """A file that a change should unblock: done within ``deadline_s`` of the driver's clock, by the same watcher."""

    path: Path
    material: Material
    why: str
    at_s: float
    generation: int
    deadline_s: float
    state: str = "pending"  # done, late, or restart (a restart came first: not judged)
    took_s: float | None = None


@dataclass
class Upload:
    """An upload that stalls: nothing may be written for it before ``complete_s``."""

    path: Path
    kind: str
    since_s: float
    complete_s: float | None = None
    half: str | None = None


@dataclass
class Record:
    """What happened, for the checks."""

    dropped: dict[str, int] = field(default_factory=dict)  # episodes by kind
    paths: set[Path] = field(default_factory=set)  # every recording ever dropped
    unblocks: list[Unblock] = field(default_factory=list)
    uploads: list[Upload] = field(default_factory=list)
    windows: list[dict] = field(default_factory=list)
    restarts: list[dict] = field(default_factory=list)
    crashes: list[dict] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)
    silent: list[dict] = field(default_factory=list)  # files held back without a line that names them (or their folder)
    kept: set[tuple[Path, str]] = field(default_factory=set)  # (folder, stem) of recordings removed once transcribed
    notes: list[str] = field(default_factory=list)
    rss: list[tuple[float, float, int]] = field(default_factory=list)  # (s since start, MiB, generation)


class Drive:
    """The folders, the watcher and what was written where; episodes act through it."""

    def __init__(self, args: argparse.Namespace, work: Path, account: Account, env: dict[str, str], materials: dict[str, Material]) -> None:
        self.args, self.work, self.account, self.env, self.materials = args, work, account, env, materials
        self.rng = random.Random(args.seed)
        self.inbox = account.folder(work / "inbox")
        self.moved = work / "moved"  # outputs a person moved out of the way
        self.moved.mkdir()
        self.wards = [account.folder(self.inbox / f"ward-{i}") for i in range(4)]
        self.settle_s = parse_duration(args.settle, "--settle")
        self.gather_s = parse_duration(args.gather, "--gather")
        self.poll_s = parse_duration(POLL, "--poll")
        self.expected: dict[Path, Material] = {}  # the recording at each path, as last written
        self.record = Record()
        self.lines: list[tuple[float, int, str]] = []
        self.log = open(args.out / "watcher.log", "w")  # noqa: SIM115  (written by the reader threads for the whole run)
        self.watcher: Watcher | None = None
        self.stopping = False
        self.started_s = time.monotonic()
        watch_help = [sys.executable, "-m", "carevoice", "watch", "--help"]
        help_text = subprocess.run(watch_help, cwd=REPO, env={**env, "COLUMNS": "300"}, capture_output=True, text=True, check=False).stdout
        self.settle_unsized = SETTLE_UNSIZED_OPTION in help_text

    def walk_s(self) -> float:
        """How long until the watcher is sure to look at every file: one walk."""
        return self.poll_s if self.watcher is not None and self.watcher.poll else RESCAN_S

    def start_watcher(self, poll: bool) -> None:
        args = [str(self.inbox), "-m", self.args.model, "--device", "cpu", "-f", "txt,json", "--settle", self.args.settle,
                "--gather", self.args.gather, "--report-dir", str(self.work / "reports"), "--heartbeat", str(self.work / "heartbeat.json")]  # fmt: skip
        if self.settle_unsized:
            args += [SETTLE_UNSIZED_OPTION, f"{SETTLE_UNSIZED_S:g}s"]
        if poll:
            args += ["--poll", POLL]
        generation = self.watcher.generation + 1 if self.watcher else 1
        self.watcher = Watcher(generation, args, self.account, self.env, self.lines, self.log)

    # what the watcher said, and wrote

    def said(self, pattern: str, since_s: float = 0.0) -> bool:
        return any(t >= since_s and re.search(pattern, text) for t, _, text in list(self.lines))

    def named(self, path: Path, since_s: float) -> bool:
        return self.said(re.escape(str(path)), since_s)

    def mark(self, text: str) -> None:
        """A line of the driver's own in the watchers' log, where what it did explains what they said."""
        self.log.write(f"[driver] {time.strftime('%H:%M:%S')} {text}\n")
        self.log.flush()

    def quiet_s(self) -> float:
        return time.monotonic() - (self.lines[-1][0] if self.lines else self.started_s)

    def problem(self, path: Path, material: Material) -> str | None:
        """Why the outputs at ``path`` are not ``material``'s transcript (None: they are)."""
        try:
            text = path.with_suffix(".txt").read_text(encoding="utf-8")
            data = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            return f"no {Path(exc.filename).suffix}"
        except (OSError, ValueError) as exc:
            return f"outputs unreadable ({type(exc).__name__})"
        if text != material.text:
            other = next((m.name for m in self.materials.values() if m.text == text), None)
            return f"txt is the transcript of another recording ({other})" if other else "txt differs from its recording's reference"
        if data.get("text") != material.json_text or abs(float(data.get("duration", 0)) - material.duration_s) > 0.05:
            return f"json differs from its recording's reference (duration {data.get('duration')} s, reference {material.duration_s} s)"
        return None

    # writing recordings the ways uploads arrive

    def pick(self, *suffixes: str, besides: Material | None = None) -> Material:
        return self.rng.choice(
            [
                m
                for m in self.materials.values()
                if m.path.suffix in suffixes and m is not besides and not m.name.startswith(("stream-", "cbr-"))
            ]
        )

    def ward(self, n: int) -> Path:
        return self.wards[n % len(self.wards)]

    def drop_pieces(self, path: Path, material: Material, pieces: int = 4) -> None:
        data = material.path.read_bytes()
        with open(path, "wb") as handle:
            for i in range(pieces):
                handle.write(data[i * len(data) // pieces : (i + 1) * len(data) // pieces])
                handle.flush()
                time.sleep(0.05)
        self._dropped(path, material)

    def drop_renamed(self, path: Path, material: Material) -> None:
        hidden = path.with_name(f".{path.name}.part")
        shutil.copyfile(material.path, hidden)
        os.rename(hidden, path)
        self._dropped(path, material)

    def _dropped(self, path: Path, material: Material) -> None:
        self.expected[path] = material
        self.record.paths.add(path)
        self.mark(f"wrote {path.relative_to(self.inbox)} ({material.name})")

    def remove(self, path: Path) -> None:
        """A person removes a recording: its outputs, if it had them by then, may stay (nothing asks the watcher to delete them)."""
        if path.with_suffix(".txt").exists() or path.with_suffix(".json").exists():
            self.record.kept.add((path.parent, path.stem))
        path.unlink()
        self.expected.pop(path, None)
        self.mark(f"removed {path.relative_to(self.inbox)}")

    def unsaid(self, path: Path, why: str) -> None:
        self.record.silent.append(
            {"file": str(path.relative_to(self.inbox)), "problem": f"no line named it within {LINE_DEADLINE_S:g} s: {why}"}
        )

    def unblock(self, path: Path, why: str) -> None:
        assert self.watcher is not None
        now = time.monotonic()
        deadline = now + self.walk_s() + self.settle_s + self.gather_s + 60.0  # one walk at most, then its batch
        self.record.unblocks.append(Unblock(path, self.expected[path], why, now, self.watcher.generation, deadline))
        self.mark(f"unblocked {path.relative_to(self.inbox)}: {why}")

    def look(self) -> None:
        """Judge the unblocked files and watch the stalled uploads (every second or so)."""
        now = time.monotonic()
        generation = self.watcher.generation if self.watcher else 0
        for unblock in self.record.unblocks:
            if unblock.state != "pending":
                continue
            if self.problem(unblock.path, unblock.material) is None:
                unblock.state, unblock.took_s = "done", round(now - unblock.at_s, 1)
            elif generation != unblock.generation:
                unblock.state = "restart"
            elif now > unblock.deadline_s:
                unblock.state = "late"
        for upload in self.record.uploads:
            if upload.complete_s is None and upload.half is None:
                if upload.path.with_suffix(".txt").exists() or upload.path.with_suffix(".json").exists():
                    upload.half = "an output was written while the upload was incomplete"
                elif self.said(rf"done {re.escape(str(upload.path))} \(", upload.since_s):
                    upload.half = "logged done while the upload was incomplete"


def plain_arrival(d: Drive, n: int, kind: str) -> Episode:
    material = d.pick(".wav", ".flac", ".mp3")
    path = d.ward(n) / f"{kind}-{n:05}{material.path.suffix}"
    (d.drop_pieces if kind == "cp" else d.drop_renamed)(path, material)
    yield 0.0


def gather_window(d: Drive, n: int, kind: str) -> Episode:
    """A file settles; inside the gather window it is removed, rewritten with another recording, or kept."""
    material = d.pick(".wav", ".flac")
    path = d.ward(n) / f"{kind}-{n:05}{material.path.suffix}"
    d.drop_renamed(path, material)
    if d.watcher and d.watcher.poll:
        # A walk finds it 0-2 s late (phase p), so it is ready at p + settle and its window ends 3 s
        # (--gather) later; a removal at settle + 2 s is ready-after and seen by the next walk, p + 4 s: inside.
        yield d.settle_s + d.poll_s
    else:
        yield d.settle_s + d.gather_s / 2  # events: seen at once, ready after settle; half way through its window
    if kind == "gather-removed":
        d.remove(path)
    elif kind == "gather-rewritten":
        with open(path, "wb") as handle:
            handle.write((again := d.pick(material.path.suffix, besides=material)).path.read_bytes())
        d._dropped(path, again)
    yield d.gather_s / 2  # the window is over


def reexport(d: Drive, n: int) -> Episode:
    """N.mp3 is transcribed; N.wav (another recording) collides with it; N.mp3 is removed."""
    mp3, wav = d.pick(".mp3"), d.pick(".wav")
    first, second = d.ward(n) / f"reexport-{n:05}.mp3", d.ward(n) / f"reexport-{n:05}.wav"
    d.drop_pieces(first, mp3)
    if not (yield Until(lambda: d.problem(first, mp3) is None, 180.0)):
        d.record.notes.append(f"{first.name}: not transcribed within 180 s (the re-export went on)")
    since = time.monotonic()
    d.drop_renamed(second, wav)
    if not (yield Until(lambda: d.named(second, since), LINE_DEADLINE_S)):
        d.unsaid(second, "it collides with another recording")
    yield d.rng.uniform(1.0, 8.0)
    d.remove(first)
    d.unblock(second, "the recording it collided with was removed")


def blocked_output(d: Drive, n: int) -> Episode:
    """A person's N.txt is in the way of N.wav; it is then moved out of the folder."""
    material = d.pick(".wav")
    path = d.ward(n) / f"blocked-{n:05}.wav"
    notes = path.with_suffix(".txt")
    words = f"Notes a person typed for visit {n}, not a transcript.\n"
    notes.write_text(words, encoding="utf-8")
    since = time.monotonic()
    d.drop_renamed(path, material)
    if not (yield Until(lambda: d.named(path, since), LINE_DEADLINE_S)):
        d.unsaid(path, "an output is in its way")
    yield d.rng.uniform(2.0, 10.0)
    moved = d.moved / notes.name
    os.rename(notes, moved)
    if moved.read_text(encoding="utf-8") != words:
        d.record.damaged.append(f"{notes}: a person's file in the way was overwritten")
    d.unblock(path, "the output in its way was moved away")


def stalled_upload(d: Drive, n: int, kind: str) -> Episode:
    """40 % of a recording that does not state its length, a stall longer than --settle, then the rest."""
    prefix = "stream-" if kind == "stall-open-wav" else "cbr-"
    material = d.rng.choice([m for m in d.materials.values() if m.name.startswith(prefix)])
    path = d.ward(n) / f"{kind}-{n:05}{material.path.suffix}"
    data = material.path.read_bytes()
    cut = int(len(data) * STALL_FRACTION)
    upload = Upload(path, kind, time.monotonic())
    d.record.uploads.append(upload)
    d._dropped(path, material)
    if kind == "stall-open-wav":  # a local writer of the watcher's user holds it open: what Linux can tell
        writer = subprocess.Popen([*d.account.prefix, sys.executable, "-c", STALL_WRITER, str(material.path), str(path), str(cut)],
                                  stdin=subprocess.PIPE, text=True)  # fmt: skip
        yield Until(lambda: path.exists() and path.stat().st_size >= cut, 30.0)
        yield (SETTLE_UNSIZED_S if d.settle_unsized else d.settle_s) + 5.0
        assert writer.stdin is not None
        writer.stdin.write("\n")
        writer.stdin.close()
        yield Until(lambda: writer.poll() is not None, 30.0)
    else:  # a writer on another host: closed, nothing to tell but the settle time
        path.write_bytes(data[:cut])
        yield max(d.settle_s * 3, d.settle_s + d.gather_s + 3.0)
        with open(path, "ab") as handle:
            handle.write(data[cut:])
    upload.complete_s = time.monotonic()
    d.mark(f"{path.relative_to(d.inbox)} complete")


def permission_flip(d: Drive, n: int, kind: str) -> Episode:
    """A sub-folder made 0555 (0000) as its files arrive; 0755 again a while later."""
    folder = d.account.folder(d.inbox / f"{kind}-{n:05}")
    mode = 0o555 if kind == "unwritable-folder" else 0o000
    since = time.monotonic()
    first = d.pick(".wav", ".flac")
    paths = [folder / f"{kind}-{n:05}-a{first.path.suffix}"]
    d.drop_renamed(paths[0], first)
    os.chmod(folder, mode)  # before it settles: the watcher meets the mode
    d.mark(f"{folder.name} made {mode:04o}")
    if os.geteuid() == 0:  # root can drop into the folder it cannot write
        second = d.pick(".wav", ".flac")
        paths.append(folder / f"{kind}-{n:05}-b{second.path.suffix}")
        d.drop_pieces(paths[1], second)
    folder_named = rf"{re.escape(str(folder))}(?![/\w-])"  # a line about the folder (one the watcher cannot list hides its files' names)
    if not (yield Until(lambda: all(d.named(p, since) for p in paths) or d.said(folder_named, since), LINE_DEADLINE_S)):
        for path in paths:
            d.unsaid(path, f"its folder is {mode:04o}")
    yield d.rng.uniform(5.0, 20.0)
    os.chmod(folder, 0o755)
    for path in paths:
        d.unblock(path, f"its folder's mode {mode:04o} was made 0755")


def restart(d: Drive, signum: int, poll: bool) -> Episode:
    """SIGTERM or SIGKILL, then the watcher again on the same heartbeat (events, or --poll)."""
    assert d.watcher is not None
    d.stopping = True
    old = d.watcher
    old.child.send_signal(signum)
    d.mark(f"{signal.Signals(signum).name} to watcher {old.generation}; the next {'polls' if poll else 'listens for events'}")
    since = time.monotonic()
    if not (yield Until(lambda: old.child.poll() is not None, 120.0)):
        d.record.crashes.append({"generation": old.generation, "what": f"did not stop within 120 s of {signal.Signals(signum).name}"})
        old.child.kill()
        old.child.wait()
    code = old.child.returncode
    d.record.restarts.append({"generation": old.generation, "signal": signal.Signals(signum).name, "exit": code,
                              "stop_s": round(time.monotonic() - since, 2), "next": "poll" if poll else "events"})  # fmt: skip
    if signum == signal.SIGTERM and code != 0:
        d.record.crashes.append({"generation": old.generation, "what": f"exit {code} after SIGTERM"})
    d.stopping = False
    d.start_watcher(poll)
    yield Until(lambda: d.watcher.watching, 180.0)  # type: ignore[union-attr]


def recover(d: Drive, backoff_s: float) -> Episode:
    """The watcher ended by itself: started again after a pause, as systemd would."""
    d.mark(f"watcher {d.watcher.generation if d.watcher else 0} ended by itself: started again in {backoff_s:g} s")
    yield backoff_s
    d.start_watcher(d.watcher.poll if d.watcher else False)
    yield Until(lambda: d.watcher.watching, 180.0)  # type: ignore[union-attr]


def idle_window(d: Drive, n: int, kind: str) -> Episode:
    """No arrivals for IDLE_WINDOW_S (after a gather window, where ``kind`` says so): the watcher's CPU."""
    assert d.watcher is not None
    if kind == "after-gather-removed":
        yield from gather_window(d, n, "gather-removed")
    elif kind == "after-gather-kept":
        material = d.pick(".wav", ".flac")
        path = d.ward(n) / f"gather-kept-{n:05}{material.path.suffix}"
        d.drop_renamed(path, material)
        yield Until(lambda: d.problem(path, material) is None, 120.0)
    else:
        yield 3.0
    watcher = d.watcher
    before, since = watcher.cpu_s(), time.monotonic()
    d.mark(f"idle window {n} ({kind}) starts")
    yield IDLE_WINDOW_S
    after, took = watcher.cpu_s(), time.monotonic() - since
    if before is None or after is None or d.watcher is not watcher:
        d.record.notes.append(f"idle window {n} ({kind}) not measured: the watcher changed")
        return
    d.record.windows.append({"kind": kind, "mode": "poll" if watcher.poll else "events", "generation": watcher.generation, "at_s": round(since - d.started_s),
                             "seconds": round(took, 1), "cpu_s": round(after - before, 2), "core_fraction": round((after - before) / took, 4)})  # fmt: skip
    d.mark(f"idle window {n} ({kind}) ends: {(after - before) / took:.4f} of a core")


def draw_episode(d: Drive, n: int, kind: str) -> Episode:
    if kind in ("cp", "mv"):
        return plain_arrival(d, n, kind)
    if kind.startswith("gather-"):
        return gather_window(d, n, kind)
    if kind == "reexport":
        return reexport(d, n)
    if kind == "blocked-output":
        return blocked_output(d, n)
    if kind.startswith("stall-"):
        return stalled_upload(d, n, kind)
    return permission_flip(d, n, kind)


class Scheduler:
    """Runs episodes side by side, and on a timetable restarts and idle windows (those alone: the
    arrivals pause, and a window starts once all else has finished and the watcher is quiet)."""

    def __init__(self, d: Drive, minutes: float) -> None:
        self.d = d
        self.running: list[tuple[Episode, float, Until | None, str]] = []  # (episode, wake at, its condition, kind)
        self.end_s = d.started_s + minutes * 60
        span = minutes * 60 * RESTARTS_UNTIL
        count = max(2, round(span / RESTART_EVERY_S))
        rng = d.rng
        signals = [signal.SIGTERM, signal.SIGKILL] * count
        rng.shuffle(signals)
        polls = [rng.random() < 0.4 for _ in range(count)]
        polls[rng.randrange(count - 1)] = True  # at least one polled watcher; the last one listens for events
        polls[-1] = False
        self.restarts = [(d.started_s + span * (i + rng.uniform(0.3, 0.9)) / count, signals[i], polls[i]) for i in range(count)]
        self.idle_every_s = max(IDLE_EVERY_MIN_S, minutes * 60 / IDLE_WINDOWS)
        self.next_idle_s = d.started_s + min(60.0, minutes * 60 / 3)
        self.idle_asked_s: float | None = None  # an idle window waits for the episodes under way since then
        self.idle_kinds = list(IDLE_KINDS)
        self.kinds = list(EPISODES)  # each kind once (in a drawn order), then by weight
        rng.shuffle(self.kinds)
        self.n = 0
        self.next_episode_s = d.started_s
        self.ended_s = d.started_s  # when an episode last finished

    def start(self, episode: Episode, kind: str) -> None:
        self._advance(episode, None, kind)

    def _advance(self, episode: Episode, value: bool | None, kind: str) -> None:
        try:
            step = episode.send(value)  # None starts it
        except StopIteration:
            self.ended_s = time.monotonic()
            return
        now = time.monotonic()
        if isinstance(step, Until):
            self.running.append((episode, now + step.timeout_s, step, kind))
        else:
            self.running.append((episode, now + step, None, kind))

    def step(self) -> None:
        now = time.monotonic()
        running, self.running = self.running, []
        for episode, wake_s, until, kind in running:
            if until is not None and until.ready():
                self._advance(episode, True, kind)
            elif now >= wake_s:
                self._advance(episode, until is None, kind)  # a wait is over, or a condition timed out
            else:
                self.running.append((episode, wake_s, until, kind))

    def busy(self, *kinds: str) -> bool:
        return any(kind in kinds for _, _, _, kind in self.running) if kinds else bool(self.running)

    def arrivals(self) -> None:
        """Start what is due: an idle window (once all else has finished), a restart, an episode."""
        d, now = self.d, time.monotonic()
        if self.busy("idle", "restart", "recover"):
            return
        if self.idle_asked_s is None and now >= self.next_idle_s:
            self.idle_asked_s = now
        if self.idle_asked_s is not None:
            # Quiet since the last episode's last act had its effect (a file it unblocked may be ready after settle + gather, or a walk).
            settled_s = d.settle_s + d.gather_s + (d.poll_s if d.watcher.poll else 0.0) + 2.0  # type: ignore[union-attr]
            quiet = d.quiet_s() >= 5.0 and now - self.ended_s >= settled_s
            if not self.busy() and (quiet or now - self.idle_asked_s > 180.0):
                if d.watcher.poll:  # type: ignore[union-attr]
                    kind = "after-gather-removed"  # a polled watcher's one window: the fault a network share meets
                else:
                    kind = self.idle_kinds.pop(0)
                    self.idle_kinds.append(kind)
                self.start(idle_window(d, self._number(), kind), "idle")
                self.idle_asked_s, self.next_idle_s = None, now + self.idle_every_s
            return
        if self.restarts and now >= self.restarts[0][0]:
            _, signum, poll = self.restarts.pop(0)
            self.start(restart(d, signum, poll), "restart")
            if poll:  # an idle window in each polled watcher's life
                self.idle_asked_s = now
            return
        if now >= self.next_episode_s:
            kind = self.kinds.pop(0) if self.kinds else d.rng.choices(list(EPISODES), weights=list(EPISODES.values()))[0]
            d.record.dropped[kind] = d.record.dropped.get(kind, 0) + 1
            self.start(draw_episode(d, self._number(), kind), kind)
            self.next_episode_s = now + d.args.every

    def _number(self) -> int:
        self.n += 1
        return self.n

    def run(self, arrivals: bool = True) -> None:
        """Arrivals until the end, then until every episode has finished and every unblocked file
        had its time, and every recording has its transcript (or a minute has passed)."""
        d = self.d
        looked_s = sampled_s = checked_s = 0.0
        backoff_s = 2.0
        drain_since: float | None = None
        while True:
            now = time.monotonic()
            if arrivals and now < self.end_s:
                self.arrivals()
            self.step()
            if now - looked_s >= 1.0:
                d.look()
                looked_s = now
            assert d.watcher is not None
            if now - sampled_s >= 10.0 and d.watcher.watching and (rss := rss_mib(d.watcher.child.pid)) is not None:
                d.record.rss.append((now - d.started_s, rss, d.watcher.generation))
                sampled_s = now
            if d.watcher.child.poll() is not None and not d.stopping and not self.busy("recover"):
                last = [text for _, g, text in d.lines if g == d.watcher.generation][-5:]
                d.record.crashes.append(
                    {"generation": d.watcher.generation, "what": f"exit {d.watcher.child.returncode} by itself", "last_lines": last}
                )
                self.start(recover(d, backoff_s), "recover")
                backoff_s = min(backoff_s * 2, 60.0)
            if (not arrivals or now >= self.end_s) and not self.running and not any(u.state == "pending" for u in d.record.unblocks):
                if not arrivals:
                    return
                drain_since = drain_since or now
                if now - drain_since > 60.0:
                    return
                if now - checked_s >= 5.0:  # reading every output: not on each turn
                    checked_s = now
                    if all(d.problem(p, m) is None for p, m in d.expected.items()):
                        return
            time.sleep(0.2)


# --- the checks, on what is on disk at the end and what was recorded on the way ---


def outcome(passed: bool, offending: list, **facts: object) -> dict:
    return {"passed": passed, "offending_count": len(offending), "offending": offending[:40], **facts}


def visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def judge(d: Drive, stop: dict) -> dict[str, dict]:
    """Every check: passed, and the files (or lines, windows) that failed it."""
    inbox, record = d.inbox, d.record
    rel = lambda path: str(path.relative_to(inbox))
    present = sorted(p for p in inbox.rglob("*") if p.suffix in AUDIO and p.is_file() and visible(p, inbox))
    wrong, another, halves = [], [], []
    for path in present:
        material = d.expected.get(path)
        why = "a recording the soak did not write" if material is None else d.problem(path, material)
        if why is not None:
            wrong.append({"file": rel(path), "recording": material.name if material else None, "problem": why})
            if "another recording" in why:
                another.append({"file": rel(path), "problem": why})
        if material is not None and path.with_suffix(".json").exists() and not (why and "another recording" in why):
            try:
                duration_s = float(json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))["duration"])
            except (OSError, ValueError, KeyError):
                continue
            if duration_s < material.duration_s - 0.5:
                halves.append({"file": rel(path), "problem": f"its transcript is of {duration_s:.1f} s of {material.duration_s:.1f} s"})
    stems = {(p.parent, p.stem) for p in present}
    outputs = [
        p for p in sorted(inbox.rglob("*")) if p.suffix in (".txt", ".json") and visible(p, inbox) and (p.parent, p.stem) not in stems
    ]
    gone = [
        {"file": rel(p), "problem": "an output of a recording that was gone before it was transcribed"}
        for p in outputs
        if (p.parent, p.stem) not in record.kept
    ]
    halves += [{"file": rel(u.path), "kind": u.kind, "problem": u.half} for u in record.uploads if u.half]
    for unblock in record.unblocks:
        if unblock.state == "pending":
            unblock.state = "late"
    late = [
        {"file": rel(u.path), "why": u.why, "problem": f"not done within {u.deadline_s - u.at_s:.0f} s"}
        for u in record.unblocks
        if u.state == "late"
    ]
    states = {state: sum(u.state == state for u in record.unblocks) for state in ("done", "late", "restart")}
    took = sorted(u.took_s for u in record.unblocks if u.took_s is not None)
    unnamed = [text for _, _, text in d.lines if FAILURE.search(text) and not re.search(r"\bstopped \(", text) and f"{inbox}/" not in text]
    crashes = record.crashes + (
        [{"generation": "last", "what": f"exit {stop['exit']} after SIGTERM ({stop['seconds']} s)"}] if stop["exit"] != 0 else []
    )
    windows = record.windows
    busy = [w for w in windows if w["core_fraction"] >= IDLE_CPU_LIMIT]
    last = [(t, r) for t, r, g in record.rss if g == d.watcher.generation]  # type: ignore[union-attr]
    growth = rss_growth([(t - last[0][0], r) for t, r in last]) if len(last) >= 12 else float("nan")
    flat = growth <= RSS_GROWTH_LIMIT
    counts = day_counts(d.work / "reports")
    counted = counts.get("failed", 0) == 0 and counts.get("done", 0) <= len(record.paths)  # each recording once, in its last state
    exercised = [kind for kind in EPISODES if not record.dropped.get(kind)]
    exercised += [f"a restart by {name}" for name in ("SIGTERM", "SIGKILL") if not any(r["signal"] == name for r in record.restarts)]
    exercised += ["a polled watcher"] if not any(r["next"] == "poll" for r in record.restarts) else []
    exercised += [f"an idle window {kind}" for kind in IDLE_KINDS if not any(w["kind"] == kind for w in windows)]
    exercised += ["an idle window of a polled watcher"] if not any(w["mode"] == "poll" for w in windows) else []
    return {
        "outputs_are_their_recordings": outcome(not wrong, wrong, recordings=len(present)),
        "no_stale_outputs": outcome(not gone and not another, gone + another, kept_of_removed=len(outputs) - len(gone)),
        "no_half_transcripts": outcome(not halves, halves, stalled_uploads=len(record.uploads)),
        "unblocked_without_a_restart": outcome(
            not late, late, **states, took_s_median=took[len(took) // 2] if took else None, took_s_max=took[-1] if took else None
        ),
        "held_back_files_are_named": outcome(not record.silent, record.silent),
        "failure_lines_name_a_file": outcome(not unnamed, unnamed, failure_lines=sum(bool(FAILURE.search(t)) for _, _, t in d.lines)),
        "no_crash_and_a_clean_stop": outcome(not crashes, crashes, stop=stop),
        "idle_cpu_under_1_percent": outcome(
            bool(windows) and not busy,
            busy,
            limit=IDLE_CPU_LIMIT,
            windows=len(windows),
            max=max((w["core_fraction"] for w in windows), default=None),
        ),
        "rss_flat": outcome(
            flat,
            [] if flat else [f"last sixth / third sixth {growth:.3f}"],
            limit=RSS_GROWTH_LIMIT,
            last_sixth_over_third_sixth=round(growth, 3),
            samples=len(last),
        ),
        "day_report_counts_recordings": outcome(
            counted,
            [] if counted else [f"report {counts}: {len(record.paths)} recordings dropped, none left failing"],
            report=counts,
            recordings=len(record.paths),
        ),
        "no_file_of_a_person_damaged": outcome(not record.damaged, record.damaged),
        "every_fault_met": outcome(not exercised, exercised),
    }


def day_counts(reports: Path) -> dict[str, int]:
    """The counts of the day reports, summed (a run over midnight has two)."""
    counts: dict[str, int] = {}
    for report in sorted(reports.glob("carevoice-watch-*.json")):
        for key, value in json.loads(report.read_text()).get("counts", {}).items():
            counts[key] = counts.get(key, 0) + int(value)
    return counts


def summary(result: dict) -> str:
    checks, c = result["checks"], result["counts"]
    lines = [
        f"# watch fault soak: {result['minutes']:g} min, seed {result['seed']}, {result['model']} on CPU, code {result['code']}",
        "",
        f"{c['episodes']} episodes ({', '.join(f'{k} {v}' for k, v in sorted(c['by_kind'].items()))}), {c['recordings']} recordings; "
        + f"{c['restarts']} restarts ({c['restarts_by']}), {c['crashes']} crashes; --settle {result['settle']}, --gather {result['gather']}, "
        + (f"{SETTLE_UNSIZED_OPTION} {SETTLE_UNSIZED_S:g}s" if result["settle_unsized"] else f"no {SETTLE_UNSIZED_OPTION} option"),
        "",
        "| check | result | offending |",
        "|---|---|---|",
    ]
    for name, check in checks.items():
        shown = "; ".join(str(o if not isinstance(o, dict) else o.get("file", o)) for o in check["offending"][:4])
        more = f" (+{check['offending_count'] - 4})" if check["offending_count"] > 4 else ""
        lines.append(f"| {name} | {'pass' if check['passed'] else '**FAIL**'} | {check['offending_count']}: {shown}{more} |" if check["offending_count"] else
                     f"| {name} | {'pass' if check['passed'] else '**FAIL**'} | |")  # fmt: skip
    cpu, rss, unblocked = checks["idle_cpu_under_1_percent"], checks["rss_flat"], checks["unblocked_without_a_restart"]
    lines += [
        "",
        f"- idle CPU: {cpu['windows']} windows of {IDLE_WINDOW_S:g} s, max {cpu['max']} of a core; "
        + ", ".join(f"{w['kind']}/{w['mode']} {w['core_fraction']:.4f}" for w in result["idle_windows"]),
        f"- RSS of the last watcher: {rss['samples']} samples, last sixth / third sixth {rss['last_sixth_over_third_sixth']}; "
        + f"first {result['rss_mib']['first']} MiB, max {result['rss_mib']['max']} MiB, last {result['rss_mib']['last']} MiB",
        f"- unblocked files: {unblocked['done']} done (median {unblocked['took_s_median']} s, max {unblocked['took_s_max']} s), "
        + f"{unblocked['late']} late, {unblocked['restart']} not judged (a restart came first)",
        f"- stop after SIGTERM: {result['stop']['seconds']} s, exit {result['stop']['exit']}",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0, help="of arrivals (the end waits for files unblocked late)")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between episodes")
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--settle", default="2s")
    parser.add_argument("--gather", default="3s")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--keep", action="store_true", help="keep the work folder even when every check passed")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    account = Account.choose()
    # In the system's temp folder, not under --out: the watcher's user must reach it (pytest's tmp_path is root's alone).
    work = account.give(Path(tempfile.mkdtemp(prefix="carevoice-faults-")))
    env = {**os.environ, "CAREVOICE_CACHE_DIR": str(account.folder(work / "cache")), "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    if account.prefix:  # the watcher's user has a home of its own (root's is not for it: onnxruntime warns on each start)
        env["HOME"] = str(account.folder(work / "home"))
    materials = make_materials(work / "materials", account, env, random.Random(args.seed), args.model)
    d = Drive(args, work, account, env, materials)
    d.start_watcher(poll=False)
    scheduler = Scheduler(d, args.minutes)
    scheduler.run()
    scheduler.start(idle_window(d, 0, "plain"), "idle")  # the last word on idle: after everything
    scheduler.run(arrivals=False)
    assert d.watcher is not None
    d.stopping = True
    since = time.monotonic()
    d.watcher.child.send_signal(signal.SIGTERM)
    try:
        code = d.watcher.child.wait(timeout=180)
    except subprocess.TimeoutExpired:
        d.watcher.child.kill()
        code = d.watcher.child.wait()
    stop = {"exit": code, "seconds": round(time.monotonic() - since, 2)}
    time.sleep(0.5)  # its last lines
    checks = judge(d, stop)
    passed = all(c["passed"] for c in checks.values())
    rss = [r for _, r, _ in d.record.rss]
    result = {
        "minutes": args.minutes, "seed": args.seed, "model": args.model, "settle": args.settle, "gather": args.gather,
        "settle_unsized": d.settle_unsized, "every_s": args.every, "code": code_version(),
        "passed": passed,
        "checks": checks,
        "counts": {
            "episodes": sum(d.record.dropped.values()), "by_kind": d.record.dropped, "recordings": len(d.record.paths),
            "restarts": len(d.record.restarts), "restarts_by": ", ".join(f"{r['signal']}->{r['next']}" for r in d.record.restarts),
            "crashes": len(d.record.crashes), "watcher_lines": len(d.lines),
        },
        "stop": stop,
        "restarts": d.record.restarts,
        "crashes": d.record.crashes,
        "idle_windows": d.record.windows,
        "rss_mib": {"first": rss[0] if rss else None, "max": max(rss, default=None), "last": rss[-1] if rss else None},
        "rss_series": [(round(t), round(r, 1), g) for t, r, g in d.record.rss],
        "notes": d.record.notes,
        "work": None if passed and not args.keep else str(work),
    }  # fmt: skip
    (args.out / "faults.json").write_text(json.dumps(result, indent=2, default=str))
    text = summary(result)
    (args.out / "faults.md").write_text(text)
    print(text)
    d.log.close()
    if passed and not args.keep:
        for folder in work.rglob("*"):  # the modes the episodes left are all 0755 again; still, be sure
            if folder.is_dir():
                os.chmod(folder, 0o755)
        shutil.rmtree(work)
    sys.exit(0 if passed else 1)


def code_version() -> str:
    """The commit the watcher ran (and whether the tree had changes)."""
    run = lambda *a: subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()
    return run("rev-parse", "--short", "HEAD") + (" (with changes)" if run("status", "--porcelain", "--untracked-files=no") else "")


if __name__ == "__main__":
    main()
