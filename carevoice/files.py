"""File and process facts every layer may ask for: a file's SHA-256, the folder that keeps this
user from a path, and whether a process lives.

A base module: it imports nothing of ours.
"""

from __future__ import annotations

import hashlib
import os
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


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (temporary names carry their writer's pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True
