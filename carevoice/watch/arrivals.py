"""Which recordings in a watched folder are ready to transcribe (``carevoice watch``).

A file still being written must never be transcribed. :func:`settle` is the pure rule: a file is
ready once its size, modification time and inode have stayed the same for the settle time, as
this process's own clock measures it (a network file system's clock may be off, so a file's mtime
alone proves nothing). :class:`Arrivals` is the book that applies it to every file it is told
about, remembers what was handled at which state (a handled file comes back only when it
changes), holds files found incomplete (truncated, empty) until they change again, and brings
back after a while, unchanged, files that failed for a cause outside the recording (the engine, a
full disk). It stats files and nothing more: it reads no bytes and prints nothing. What a stat cannot
tell (a local process still writing, a format that does not state its length) it asks a ``hold``
it is given (carevoice.watch.uploads).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Sighting:
    """What a stat says about a file: what changes while it is written, or replaced."""

    size: int
    mtime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, st: os.stat_result) -> Sighting:
        return cls(st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)


# A file back for another try (a retry, or what blocked it may have gone) was found settled and
# whole at this very state before: it has been unchanged "since ever", ready at once, held by nothing
# but a writer that opened it since.
HANDLED_BEFORE = float("-inf")


@dataclass(frozen=True)
class Watched:
    """A file waiting to settle: how it looked, and since when (monotonic seconds) it looks so; when
    a hold kept it back though it had settled, why, and when it is looked at again."""

    sighting: Sighting
    since_s: float
    held: str = ""
    held_until_s: float = float("-inf")


class Siblings:
    """The audio files seen in each folder, by their name without extension: called with a folder
    and such a name, the names of those that would write the same outputs (a watcher checks an
    arrival for collisions from its book, without listing the folder)."""

    def __init__(self) -> None:
        self.names: dict[tuple[Path, str], set[str]] = {}

    def add(self, path: Path) -> None:
        self.names.setdefault((path.parent, path.stem), set()).add(path.name)

    def discard(self, path: Path) -> None:
        if (names := self.names.get((path.parent, path.stem))) is not None:
            names.discard(path.name)
            if not names:
                del self.names[(path.parent, path.stem)]

    def __call__(self, folder: Path, stem: str) -> list[str]:
        return sorted(self.names.get((folder, stem), ()))


@dataclass(frozen=True)
class Blocked:
    """Why a file failed for what lies beside it, and the stat of the folders where a change may
    lift it (modification and change times: an entry added, removed or renamed, a mode changed)."""

    why: str
    folders: tuple[Path, ...]
    stats: tuple[tuple[int, int] | None, ...]


def _folder_stats(folders: tuple[Path, ...]) -> tuple[tuple[int, int] | None, ...]:
    stats: list[tuple[int, int] | None] = []
    for folder in folders:
        try:
            st = os.stat(folder)
            stats.append((st.st_mtime_ns, st.st_ctime_ns))
        except OSError:
            stats.append(None)
    return tuple(stats)


@dataclass(frozen=True)
class Hold:
    """Why a file that has settled must wait yet, and how much longer at least (more than 0 s)."""

    reason: str
    wait_s: float


class State(str, Enum):
    SETTLING = "settling"
    READY = "ready"
    GONE = "gone"


@dataclass(frozen=True)
class Verdict:
    """What to do with a file now, and why.

    Attributes:
        state: Settling (look again at ``check_at_s``), ready, or gone.
        reason: For the log: ``changed 0.4 s ago``.
        watched: The file's entry from now on (None when it is gone).
        check_at_s: When it may be ready, if nothing changes (monotonic seconds).
    """

    state: State
    reason: str
    watched: Watched | None = None
    check_at_s: float | None = None


def settle(previous: Watched | None, now: Sighting | None, now_s: float, settle_s: float) -> Verdict:
    """Whether a file is ready: unchanged (size, mtime, inode) for ``settle_s`` of this clock.

    Args:
        previous: How it looked when last seen, and since when (None: first seen now).
        now: How it looks now (None: it is gone).
        now_s: The time now (monotonic seconds).
        settle_s: How long it must stay the same.
    """
    if now is None:
        return Verdict(State.GONE, "removed before it settled" if previous else "gone")
    if previous is None or previous.sighting != now:
        watched = Watched(now, now_s)
        if settle_s <= 0:
            return Verdict(State.READY, "settle time 0", watched)
        return Verdict(State.SETTLING, "new" if previous is None else "still changing", watched, now_s + settle_s)
    unchanged_s = now_s - previous.since_s
    if unchanged_s >= settle_s:
        return Verdict(State.READY, f"unchanged for {unchanged_s:.1f} s", previous)
    return Verdict(State.SETTLING, f"unchanged for only {unchanged_s:.1f} s", previous, previous.since_s + settle_s)


@dataclass(frozen=True)
class Retry:
    """What becomes of a file that failed for a cause that may pass (:meth:`Arrivals.retry_later`).

    Attributes:
        after_s: It is tried again at the latest this much later (None: not until it changes).
        note: For the log: when and which try, or why not.
    """

    after_s: float | None
    note: str


@dataclass(frozen=True)
class GaveUp:
    """A file that stayed incomplete too long: reported once as failed."""

    path: Path
    error: str


def _stat(path: Path) -> Sighting | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return Sighting.of(st)


class Arrivals:
    """The watched folders' files between arrival and transcription.

    Args:
        settle_s: See :func:`settle`.
        incomplete_wait_s: A file found incomplete and unchanged this long is given up (reported once).
        clock: Monotonic seconds (tests pass their own).
        stat: How a path is looked at (None: gone).
        retry_after_s: How long a file that failed for a passing cause waits before each new try
            (:meth:`retry_later`); once they are used up it waits for a change.
        hold: Asked about the files that have settled (path: seconds unchanged): those that must
            wait yet, and why (see :meth:`newly_held`).
    """

    def __init__(
        self,
        settle_s: float,
        incomplete_wait_s: float,
        clock: Callable[[], float],
        stat: Callable[[Path], Sighting | None] = _stat,
        retry_after_s: tuple[float, ...] = (),
        hold: Callable[[dict[Path, float]], dict[Path, Hold]] = lambda unchanged_s: {},
    ) -> None:
        self.settle_s = settle_s
        self.incomplete_wait_s = incomplete_wait_s
        self.clock = clock
        self.stat = stat
        self.settling: dict[Path, Watched] = {}
        self.handled: dict[Path, Sighting] = {}  # done, skipped or failed at this state
        self.incomplete: dict[Path, tuple[Sighting, float, str]] = {}  # as found, when, why
        self.retry_after_s = retry_after_s
        self.retrying: dict[Path, tuple[Sighting, float]] = {}  # as it failed, when to try again
        self.tries: dict[Path, int] = {}  # failed tries of an unchanged file (for retry_after_s)
        self.blocked: dict[Path, Blocked] = {}  # failed by what lies beside it (a sibling, an output, the folder)
        self.siblings = Siblings()  # the names of the files seen in each folder, by name without extension
        self.hold = hold
        self.to_tell: list[tuple[Path, str]] = []  # held since newly_held() was last asked, and why

    def observe(self, path: Path) -> None:
        """A file may have appeared or changed (an event, or a walk found it)."""
        sighting = self.stat(path)
        if sighting is None:
            self.forget(path)
            return
        if self.handled.get(path) == sighting:
            return  # handled as it is now: a walk seeing it again, or an event about its metadata
        if path in self.incomplete and self.incomplete[path][0] == sighting:
            return  # still as incomplete as it was
        if path in self.retrying and self.retrying[path][0] == sighting:
            return  # waiting for its next try
        self.siblings.add(path)
        self.handled.pop(path, None)
        self.incomplete.pop(path, None)
        self.retrying.pop(path, None)
        self.tries.pop(path, None)  # a new version: its tries start again
        self.blocked.pop(path, None)  # and what blocks it is said again
        watched = self.settling.get(path)
        if watched is None or watched.sighting != sighting:  # its settle time counts from this change
            self.settling[path] = Watched(sighting, self.clock())

    def forget(self, path: Path) -> None:
        """A file was removed (or renamed away)."""
        for book in self._books():
            book.pop(path, None)
        self.siblings.discard(path)

    def _books(self) -> tuple[dict[Path, Any], ...]:
        return (self.settling, self.handled, self.incomplete, self.retrying, self.tries, self.blocked)

    def keep_only(self, present: set[Path]) -> None:
        """After a whole walk: forget every file that is no longer there (the book stays as big as the folders)."""
        for path in {p for book in self._books() for p in book if p not in present}:
            self.forget(path)

    def due(self) -> tuple[list[Path], list[GaveUp]]:
        """Files ready now (in name order), and files given up as incomplete."""
        now_s = self.clock()
        for path, (sighting, at_s) in list(self.retrying.items()):
            if at_s <= now_s:  # its time has come: ready at once, as it failed (a change would have settled it)
                del self.retrying[path]
                self.handled.pop(path, None)
                self.settling[path] = Watched(sighting, HANDLED_BEFORE)
        ready = []
        for path, watched in list(self.settling.items()):
            if self._due_s(watched) > now_s:
                continue
            verdict = settle(watched, self.stat(path), now_s, self.settle_s)
            if verdict.state is State.GONE:
                self.forget(path)  # every book, and its name among its folder's
            elif verdict.state is State.READY:
                ready.append(path)
            else:
                self.settling[path] = verdict.watched  # type: ignore[assignment]
        held = self.hold({path: now_s - self.settling[path].since_s for path in ready}) if ready else {}
        for path, hold in held.items():
            watched = self.settling[path]
            if hold.reason != watched.held:
                self.to_tell.append((path, hold.reason))
            self.settling[path] = replace(watched, held=hold.reason, held_until_s=now_s + hold.wait_s)
        ready = [path for path in ready if path not in held]
        gave_up = []
        for path, (sighting, since_s, error) in list(self.incomplete.items()):
            if now_s - since_s >= self.incomplete_wait_s:
                del self.incomplete[path]
                self.handled[path] = sighting
                gave_up.append(GaveUp(path, error))
        return sorted(ready, key=str), gave_up

    def next_check_s(self, ready: Collection[Path] = ()) -> float | None:
        """When the next file may be ready, or be given up (monotonic seconds); None when nothing is
        to come. ``ready``: files :meth:`due` found ready that wait for the caller (a gather window):
        nothing is to come of them, and counting them made the caller's loop spin."""
        times = [self._due_s(w) for path, w in self.settling.items() if path not in ready]
        times += [since_s + self.incomplete_wait_s for _, since_s, _ in self.incomplete.values()]
        times += [at_s for _, at_s in self.retrying.values()]
        return min(times, default=None)

    def _due_s(self, watched: Watched) -> float:
        """When a settling file may be ready: a settle time after its last change, and not while held."""
        return max(watched.since_s + self.settle_s, watched.held_until_s)

    def newly_held(self) -> list[tuple[Path, str]]:
        """The files held back (path, why) since this was last asked: each once, until it changes or the reason does."""
        told, self.to_tell = self.to_tell, []
        return told

    def take(self, path: Path) -> bool:
        """A ready file goes to be transcribed: it is handled as it is now. False (and it settles
        again) when it changed since it was found ready."""
        watched = self.settling.pop(path, None)
        self.incomplete.pop(path, None)
        if watched is None:
            return False
        now = self.stat(path)
        if now != watched.sighting:
            if now is None:
                self.forget(path)
            else:
                self.settling[path] = Watched(now, self.clock())
            return False
        self.handled[path] = now
        return True

    def block(self, path: Path, why: str, folders: tuple[Path, ...] = ()) -> bool:
        """The file failed for what lies beside it, not in it: another recording with its name, an
        output a person wrote, a folder it cannot write to. It is looked at again when something
        changes in its folder (:meth:`look_again`). ``folders``: where such a change would show
        (its own and its outputs' folders). False when it was blocked so already: nothing new to say."""
        said = path in self.blocked and self.blocked[path].why == why
        self.blocked[path] = Blocked(why, folders, _folder_stats(folders))
        return not said

    def unblock(self, path: Path) -> None:
        """The file is no longer blocked (it is being transcribed, or was settled otherwise)."""
        self.blocked.pop(path, None)

    def look_again(self, folders: set[Path] | None = None) -> int:
        """Blocked files are ready again, as they are, to be planned again (a sibling removed, an
        output moved away, a permission fixed may have unblocked them): those in ``folders``, where
        an event said something changed, or (None: a walk) those whose folders changed since they
        were blocked, by their stat: a walk every 5 s must not plan (and maybe hash) every blocked
        file again. Only files handled as they are now come back. Returns how many."""

        def changed(path: Path) -> bool:
            entry = self.blocked[path]
            if folders is not None:
                return path.parent in folders or any(f in folders for f in entry.folders)
            return _folder_stats(entry.folders) != entry.stats

        again = [p for p in self.blocked if p in self.handled and changed(p)]
        for path in again:
            self.settling[path] = Watched(self.handled.pop(path), HANDLED_BEFORE)
        return len(again)

    def knows(self, path: Path) -> bool:
        """Whether the file is in the book (seen, and not gone since)."""
        return any(path in book for book in self._books())

    def found_incomplete(self, path: Path, error: str) -> None:
        """Transcribing found the file not whole (an upload that stalled): wait until it changes.
        A file seen changing meanwhile is settling again already: nothing to wait for."""
        if path in self.settling:
            return
        sighting = self.handled.pop(path, None) or self.stat(path)
        if sighting is not None:
            self.incomplete[path] = (sighting, self.clock(), error)

    def retry_later(self, path: Path) -> Retry:
        """A file failed for a cause that may pass (carevoice.errors.Cause): it comes back, as it is,
        after the next of ``retry_after_s``; once they are used up it waits, as any failed file,
        for a change. A file changed meanwhile is settling again already."""
        most = len(self.retry_after_s)
        if path in self.settling:
            return Retry(self.settle_s, "changed meanwhile: tried again once it settles")
        tries = self.tries.get(path, 0)
        sighting = self.handled.get(path) or self.stat(path)
        if sighting is None:
            return Retry(None, "removed meanwhile: not tried again")
        if tries >= most:
            times = f" {most + 1} times" if most else ""
            return Retry(None, f"failed{times}: tried again once it changes, or at a restart")
        self.tries[path] = tries + 1
        wait_s = self.retry_after_s[tries]
        self.retrying[path] = (sighting, self.clock() + wait_s)
        return Retry(wait_s, f"tried again in {wait_s:g} s, unchanged (try {tries + 2} of {most + 1})")

    @property
    def waiting(self) -> int:
        """Files settling, incomplete, or waiting to be tried again."""
        return len(self.settling) + len(self.incomplete) + len(self.retrying)
