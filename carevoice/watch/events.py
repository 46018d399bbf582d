"""Where a watched folder's changes come from: file-system events (watchfiles, which uses inotify
on Linux), or none where the file system does not send them (NFS, SMB, FUSE, virtiofs: then the
folders are walked every ``--poll`` seconds). The only module that imports watchfiles.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterable
from pathlib import Path

from carevoice.folders import FOLDER_FILE
from carevoice.run.discovery import audio_name

# File systems whose changes made elsewhere (another client, the host of a VM or container) send
# no inotify events here: https://man7.org/linux/man-pages/man7/inotify.7.html ("Limitations and caveats").
NO_EVENT_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "virtiofs", "ceph", "glusterfs", "lustre", "gpfs", "afs", "beegfs", "vboxsf", "davfs"}
)
# When events cannot be had, the folders are walked this often.
DEFAULT_POLL_S = 5.0


def mount_of(path: Path, mountinfo: str) -> tuple[str, str]:
    """The mount point holding ``path`` (absolute, links resolved) and its file system type, from
    /proc/self/mountinfo's text (proc(5): the mount point is field 5, the type follows " - ")."""
    best = ("/", "")
    target = os.path.realpath(path)
    for line in mountinfo.splitlines():
        before, sep, after = line.partition(" - ")
        fields = before.split()
        if not sep or len(fields) < 5 or not after.split():
            continue
        point = fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best[0]):
            best = (point, after.split()[0])
    return best


def without_events(fstype: str) -> bool:
    """Whether changes on this file system may come without inotify events (network and FUSE)."""
    return fstype in NO_EVENT_FILESYSTEMS or fstype.startswith("fuse")


def filesystem_type(path: Path) -> str:
    """The type of the file system ``path`` is on ("" when /proc cannot tell)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as handle:
            return mount_of(path, handle.read())[1]
    except OSError:
        return ""


def _wanted(path: str) -> bool:
    """An audio file's event, a folder's (whose files a walk then finds), or a carevoice.toml's
    (what it refused may be lifted); never our own hidden temporary files or the outputs written
    beside the recordings."""
    name = os.path.basename(path)
    if name.startswith("."):
        return False
    if audio_name(name) or name == FOLDER_FILE:
        return True
    return os.path.isdir(path)


class Events:
    """File-system events below the folders, gathered by a thread into a queue.

    Args:
        roots: The folders (absolute).
        recursive: Below their sub-folders too.
    """

    def __init__(self, roots: Iterable[Path], recursive: bool) -> None:
        import watchfiles  # noqa: F401  (fails here, in the caller's thread, if it is missing) — only where the file system sends events

        self.roots = [str(r) for r in roots]
        self.recursive = recursive
        self.failure: str | None = None  # why events stopped coming (the watcher then walks instead)
        self._queue: queue.SimpleQueue[Path | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="carevoice-events", daemon=True)

    def start(self) -> Events:
        """Start listening; returns once the watches are in place (or failed)."""
        self._thread.start()
        self._ready.wait(30)
        return self

    def _listen(self) -> None:
        from watchfiles import Change as Kind  # only where the file system sends events
        from watchfiles import watch  # only where the file system sends events

        try:
            for changes in watch(
                *self.roots,
                watch_filter=lambda kind, path: _wanted(path) or kind is Kind.deleted,  # a stat then says what is there
                debounce=100,
                step=100,
                stop_event=self._stop,
                rust_timeout=1000,  # how often the thread looks at the stop event while nothing happens
                yield_on_timeout=True,
                raise_interrupt=False,
                recursive=self.recursive,
                ignore_permission_denied=True,
            ):
                self._ready.set()
                for path in sorted({path for _, path in changes}):  # the kind is not trusted (carevoice.watch.service)
                    self._queue.put(Path(path))
        except Exception as exc:  # e.g. the inotify watch limit: the caller walks instead
            self.failure = f"{type(exc).__name__}: {exc}"
        finally:
            self._ready.set()
            self._queue.put(None)

    @property
    def alive(self) -> bool:
        return self.failure is None and self._thread.is_alive()

    def take(self, timeout_s: float) -> list[Path]:
        """The paths changed so far (appeared, changed or gone), waiting up to ``timeout_s`` for the first one."""
        changes: list[Path] = []
        try:
            first = self._queue.get(timeout=max(0.0, timeout_s))
        except queue.Empty:
            return changes
        if first is not None:
            changes.append(first)
        while True:
            try:
                change = self._queue.get_nowait()
            except queue.Empty:
                return changes
            if change is not None:
                changes.append(change)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
