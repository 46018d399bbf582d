"""Per-output locks, so two CareVoice processes on one folder never transcribe the same file twice.

A lock is a hidden file next to the outputs (``.<name>.carevoice.lock``) held with ``flock``: the
kernel releases it when its process dies, even by SIGKILL, so a lock can never outlive its holder.
The holder unlinks the file *before* closing it, and a new holder checks that the file it locked is
still the one at the path; together these close the race where a process locks a file that another
has just unlinked.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from carevoice.run.names import hidden_name

LOCK_SUFFIX = ".carevoice.lock"
# flock errors of file systems that have no locks (some FUSE mounts): not a reason to fail a file.
UNSUPPORTED = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})
_ATTEMPTS = 5  # each failed attempt means another process released the lock at that very moment


def lock_path(stem: Path) -> Path:
    """Where the lock for the outputs ``<stem>.*`` lives."""
    return stem.with_name(hidden_name(stem.name, LOCK_SUFFIX))


def _open_lock(path: Path) -> int:
    """Open (or create) a lock file. Its mode follows the umask, as the outputs' do, so that in a
    folder shared by a group another member's run can take a lock a killed run left behind; a lock
    file this user cannot write (another user's, 0644) still locks when opened for reading.

    Raises:
        PermissionError: this user cannot even read it (another user's lock made with umask 077).
    """
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o666)
    except PermissionError:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)


def held_elsewhere(path: Path) -> bool | None:
    """Whether some process holds a flock on this file, read from /proc/locks (Linux), for a lock
    file this user cannot open; None where the kernel does not say (then it counts as held)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    try:
        with open("/proc/locks", "rb") as handle:
            lines = handle.read().decode("ascii", "replace").splitlines()
    except OSError:
        return None
    # "1: FLOCK  ADVISORY  WRITE 4242 08:01:1234567 0 EOF": the inode decides, not the device, whose
    # numbers there can differ from stat's (btrfs subvolumes, overlayfs). Another file with the same
    # inode on another device makes this say "held": busy, the safe side.
    for line in lines:
        for field in line.split():
            parts = field.split(":")
            if len(parts) == 3 and parts[2] == str(st.st_ino):
                return True
    return False


class OutputLock:
    """A held lock; :meth:`release` it once the outputs are written (or the file failed)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        """Unlink the lock file while still holding it, then let go. Safe to call twice."""
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass  # a read-only folder cannot lose it; it is released all the same
        os.close(self._fd)
        self._fd = None


def try_lock(stem: Path) -> OutputLock | None:
    """Take the lock for ``<stem>.*`` without waiting; creates the output folder if needed.

    Returns:
        The held lock, or None when another process holds it.

    Raises:
        OSError: the folder or the lock file cannot be created (read-only, full, not a folder).
    """
    path = lock_path(stem)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(_ATTEMPTS):
        try:
            fd = _open_lock(path)
        except PermissionError:
            # Another user's lock file that this user cannot open: held means busy; unheld means a
            # killed run left it, and in a folder this user may write in it can go (its name is free).
            if held_elsewhere(path) is not False:
                return None
            os.unlink(path)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError as exc:
            if exc.errno in UNSUPPORTED:
                return OutputLock(path, fd)  # no locks on this file system: work on, as without them
            os.close(fd)
            raise
        try:
            current = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            current = None
        held = os.fstat(fd)
        if current is not None and (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
            return OutputLock(path, fd)
        os.close(fd)  # the previous holder unlinked it between our open and flock: try the new one
    return None


def remove_stale_locks(folder: Path) -> int:
    """Delete lock files in folder that no process holds (left by a killed run). Returns how many."""
    removed = 0
    try:
        entries = [e for e in os.scandir(folder) if e.name.startswith(".") and e.name.endswith(LOCK_SUFFIX)]
    except OSError:
        return 0
    for entry in entries:
        stem = Path(folder) / entry.name[1 : -len(LOCK_SUFFIX)]
        try:
            lock = try_lock(stem)
        except OSError:
            continue
        if lock is not None:
            lock.release()
            removed += 1
    return removed
