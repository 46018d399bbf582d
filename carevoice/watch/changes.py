"""Where the watcher hears of changes: file-system events where the folders send them (inotify),
else walks every ``--poll`` seconds; with events, a walk every RESCAN_S finds anything they missed.
Each path found goes to the watcher's :class:`~carevoice.watch.arrivals.Arrivals`, named as a walk
names it. Nothing here prints: lines go to the ``note`` it is given.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from carevoice.folders import FOLDER_FILE
from carevoice.run.discovery import find_audio_files, real_place
from carevoice.settings import RESCAN_S
from carevoice.watch.arrivals import Arrivals
from carevoice.watch.events import DEFAULT_POLL_S, Events, filesystem_type, without_events


class Changes:
    """The watched folders' changes, brought to the arrivals.

    Args:
        roots: The watched folders, as the user named them.
        recursive: Sub-folders too.
        arrivals: Where each path found goes.
        note: Where a line about how changes are seen goes.
        clock: Monotonic seconds.
        poll_s: --poll (None: events where the file system sends them).
    """

    def __init__(
        self,
        roots: tuple[Path, ...],
        recursive: bool,
        arrivals: Arrivals,
        note: Callable[[str], None],
        clock: Callable[[], float],
        poll_s: float | None,
    ) -> None:
        self.roots = roots
        self.absolute = tuple(Path(os.path.abspath(r)) for r in roots)
        self.recursive = recursive
        self.arrivals = arrivals
        self.note = note
        self.clock = clock
        self.poll_s = poll_s
        self.events: Events | None = None  # while file-system events are used
        self.walked_s = float("-inf")
        self.problems: dict[str, str] = {}  # what walks cannot look at now (folders, links), and why
        self.restart_events = False  # a folder without a watch (it could not be listed) can be now

    def choose(self) -> None:
        """Events where the file system sends them, else walks every --poll seconds."""
        if self.poll_s is not None:
            self.note(f"walking the folders every {self.poll_s:g} s (--poll); no file-system events")
            return
        for root in self.absolute:
            fstype = filesystem_type(root)
            if without_events(fstype):
                self.poll_s = DEFAULT_POLL_S
                self.note(
                    f"{root} is on {fstype}, which sends no file-system events for changes made elsewhere: "
                    f"walking the folders every {self.poll_s:g} s (set --poll to change)"
                )
                return
        events = Events(self.absolute, self.recursive).start()
        if not events.alive:
            self.poll_s = DEFAULT_POLL_S
            self.note(f"no file-system events ({events.failure}): walking the folders every {self.poll_s:g} s instead")
            return
        self.events = events
        self.note(f"listening for file-system events (and walking the folders every {RESCAN_S:g} s for any missed)")

    def stop(self) -> None:
        """Stop listening (a no-op when walking)."""
        if self.events is not None:
            self.events.stop()

    @property
    def walk_every_s(self) -> float:
        """How often the folders are walked: --poll (or its default) without events, RESCAN_S with them."""
        return RESCAN_S if self.events is not None else self.poll_s  # type: ignore[return-value]

    def next_walk_s(self) -> float:
        """When the next walk is due (monotonic seconds)."""
        return self.walked_s + self.walk_every_s

    def _as_given(self, path: Path) -> Path | None:
        """An absolute path from an event, named as a walk names it: below the folder as the user
        spelled it, its folder by its real place when a walk reaches it there (inotify may name a
        folder linked in from inside by the link: discovery.links_inside); None for one a walk
        would not find either (below a hidden folder, such as a report folder)."""
        for given, absolute in zip(self.roots, self.absolute):
            if not path.is_relative_to(absolute):
                continue
            if (place := real_place(path.parent, absolute)) is not None:
                return given / place / path.name
            below = path.relative_to(absolute)  # through a link to a folder elsewhere (or gone)
            return None if any(part.startswith(".") for part in below.parts) else given / below
        return None

    def walk(self, folder: Path | None = None) -> None:
        """Look at every audio file below the watched folders, or below one folder in them (all of
        them: also forget what is gone)."""
        within = None if folder is None else next(r for r in self.roots if folder.is_relative_to(r))
        found, problems = find_audio_files(self.roots if folder is None else (folder,), self.recursive, within)
        paths = set(found)
        self._say_problems({str(p.path): p.message for p in problems}, folder)
        if folder is None:
            self.arrivals.keep_only(paths)
            self.walked_s = self.clock()
        for path in sorted(paths, key=str):
            self.arrivals.observe(path)
        if folder is None:
            self.arrivals.look_again()  # what blocked a file may have gone without an event (none here, or one missed)

    def _say_problems(self, found: dict[str, str], below: Path | None) -> None:
        """Say each thing a walk could not look at (a folder it cannot list, a broken link) once, and
        again once it is back. ``below``: the folder walked (None: all of them); what lies outside it
        was not looked at."""
        for path, message in found.items():
            if self.problems.get(path) != message:
                unseen = "; nothing below it is watched until it can be" if message.startswith("cannot") else ""
                self.note(f"{path}: {message}{unseen}")
        walked = [p for p in self.problems if below is None or Path(p).is_relative_to(below)]
        for path in walked:
            if path not in found and self.problems.pop(path).startswith("cannot"):
                self.note(f"{path} can be read again: watched again")
                self.restart_events = True  # the kernel watches no folder it could not list: they are placed again
        self.problems.update(found)

    def pump(self, timeout_s: float = 0.0) -> None:
        """Take the changes that came (waiting up to ``timeout_s`` for one) and walk when it is time."""
        if self.events is not None and not self.events.alive:
            self.note(f"file-system events stopped ({self.events.failure}): walking the folders every {DEFAULT_POLL_S:g} s instead")
            self.events, self.poll_s = None, DEFAULT_POLL_S
        if self.clock() - self.walked_s >= self.walk_every_s:
            self.walk()
        if self.restart_events and self.events is not None:
            self.restart_events = False
            self.events.stop()
            self.events = Events(self.absolute, self.recursive).start()
            self.walk()  # once the new watches are in place: what changed between the two is found
        self.restart_events = False
        if self.events is not None:
            touched: set[Path] = set()
            for changed in self.events.take(timeout_s):
                path = self._as_given(changed)
                if path is None:
                    continue
                # The kind of change is not trusted: one batch may hold a removal and an addition of
                # the same name (a recording replaced) in any order. What a stat says now decides.
                if os.path.isdir(path):
                    touched.add(path)  # its permissions, or a folder moved in
                    if self.recursive:
                        self.walk(path)  # a folder moved in: its files may have come before its watch
                elif path.name == FOLDER_FILE:  # a folder's settings: the files they refused are looked at again (watch.groups.lifted_by)
                    touched.update((path.parent, path))
                else:
                    if not path.name.startswith("."):  # not the watcher's own temporary files, locks and records
                        touched.add(path.parent)  # a sibling removed, an output moved away
                    self.arrivals.observe(path)
            if touched:
                self.arrivals.look_again(touched)
        elif timeout_s > 0:
            time.sleep(timeout_s)
