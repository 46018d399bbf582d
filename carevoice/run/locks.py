"""Per-output locks, so two CareVoice processes on one folder never transcribe the same file twice.

A lock is a hidden file next to the outputs (``.<name>.carevoice.lock``) held with ``flock``: the
kernel releases it when its process dies, even by SIGKILL, so a lock can never outlive its holder.
The holder unlinks the file *before* closing it, and a new holder checks that the file it locked is
still the one at the path; together these close the race where a process locks a file that another
has just unlinked. On NFS (and CIFS since Linux 5.5) the kernel emulates ``flock`` with a POSIX lock
on the whole file, which the server shares between hosts: see :func:`_flock`.
"""

from __future__ import annotations

import errno
import fcntl
import os
from enum import Enum
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


class Flock(Enum):
    """What asking for a lock file's ``flock`` found."""

    TAKEN = "taken"  # this process holds it now
    BUSY = "busy"  # another process holds it
    STALE = "stale"  # nobody holds it, but only another user could lock it: a killed run's to remove
    NO_LOCKS = "no locks"  # this file system has no locks


def _flock(fd: int) -> Flock:
    """Take an exclusive ``flock`` on an open lock file, without waiting.

    Raises:
        OSError: the kernel refused for another reason than a lock held elsewhere or none to be had.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return Flock.TAKEN
    except BlockingIOError:
        return Flock.BUSY
    except OSError as exc:
        if exc.errno in UNSUPPORTED:
            return Flock.NO_LOCKS
        if exc.errno != errno.EBADF:
            raise
    # On NFS (and CIFS) flock is a POSIX lock on the whole file, and an exclusive one needs a file
    # opened for writing (flock(2), "NFS details"; fcntl(2): F_WRLCK on a read-only descriptor is
    # EBADF): another user's lock file, opened read-only, cannot be locked. A shared POSIX lock can
    # (fcntl(2): F_RDLCK needs it open for reading), and conflicts with the exclusive one of a run
    # on any host: it tells a live lock from a killed run's.
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):  # fcntl(2): either, for a lock held elsewhere
            return Flock.BUSY
        if exc.errno in UNSUPPORTED:
            return Flock.NO_LOCKS
        raise
    return Flock.STALE


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
            found = _flock(fd)
            if found is Flock.STALE and _still_at(path, fd):
                # While the probe's shared lock keeps any run from locking it. Two users' runs that
                # find the same stale lock at the same moment may still both remove one (the second
                # maybe the first one's new lock): then both transcribe the file, each write atomic.
                os.unlink(path)
        except OSError:
            os.close(fd)
            raise
        if found is Flock.NO_LOCKS:
            return OutputLock(path, fd)  # no locks on this file system: work on, as without them
        if found is Flock.TAKEN and _still_at(path, fd):
            return OutputLock(path, fd)
        os.close(fd)
        if found is Flock.BUSY:
            return None
        # A killed run's lock is gone: take one of our own. Or the previous holder unlinked the file
        # between our open and flock: try the new one.
    return None


def _still_at(path: Path, fd: int) -> bool:
    """Whether the open lock file is still the one at ``path`` (its holder may have unlinked it)."""
    try:
        current = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino)


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
