"""File and process facts every layer may ask for: a file's SHA-256, the folder that keeps this
user from a path, whether a process lives, and where a pid means that process.

A base module: it imports nothing of ours.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import os
import socket
import sys
from pathlib import Path


def sha256_of(path: Path) -> str:
    """SHA-256 of a file's bytes, read in blocks.

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def barred_folder(path: Path) -> Path | None:
    """The folder on the way to ``path`` that this user may not enter (no search permission: what
    systemd's ProtectHome=yes does to /home), links resolved; None when none bars the way (the path
    may still be missing, or unreadable itself)."""
    real = Path(os.path.realpath(path))
    for step in [*reversed(real.parents), real][1:]:
        try:
            os.stat(step)
        except PermissionError:
            return step.parent
        except OSError:
            return None  # missing, or not a folder: nothing bars it
    return None


def pid_alive(pid: int, command: bytes | None = None) -> bool:
    """True when a process with this pid exists (temporary names carry their writer's pid).

    Args:
        pid: The process id, as this pid namespace numbers it (see :func:`pid_space`).
        command: Also what its command line must hold where Linux's /proc shows it: a killed
            process not yet reaped (a zombie) has none, a pid taken again another program's. Where
            it cannot be read (another user's, /proc mounted with hidepid) the process counts as alive.
    """
    if pid <= 0:
        return False  # 0 and below name process groups, not a process
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        pass  # it exists, under another user
    if command is None:
        return True
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return command in handle.read()
    except OSError:
        return True  # it exists; what it runs cannot be told here


@functools.cache
def pid_space() -> str:
    """Where this process's pids name processes: the host's name, its boot (a pid is not kept
    across a reboot) and this pid namespace (a container's pids are its own), as Linux's /proc
    tells them, e.g. ``ward-pc boot 0b7e… pid:[4026531836]``; "" where they cannot be read.
    Two processes with the same pid space see the same process behind a pid."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as boot:
            boot_id = boot.read().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except (OSError, ValueError):
        return ""
    return f"{socket.gethostname()} boot {boot_id} {namespace}"


_RENAME_NOREPLACE = 1  # linux/fs.h
_AT_FDCWD = -100
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def rename_noreplace(path: Path, target: Path) -> bool:
    """Rename ``path`` to ``target`` unless ``target`` exists, in one step (Linux renameat2 with
    RENAME_NOREPLACE): True when done; False where the system or the file system cannot (then
    nothing happened).

    Raises:
        FileExistsError: ``target`` exists.
        OSError: the rename failed otherwise.
    """
    renameat2 = getattr(_LIBC, "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(path), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False  # an older kernel, or a file system without it (SMB, some FUSE mounts)
    if code == errno.EEXIST:
        raise FileExistsError(code, os.strerror(code), str(target))
    raise OSError(code, os.strerror(code), str(path))
