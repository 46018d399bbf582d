"""Hidden names next to a recording's outputs (record, lock, temporary files), kept within the 255
bytes a file name may have.

``.<name>.carevoice.json`` adds 17 bytes to an output stem: a recording named with ~80 CJK
characters (240 bytes) would get a record name the file system refuses (ENAMETOOLONG). A hidden
name that would be too long keeps the start of the name and a hash of all of it instead, so it
stays unique and the same on every run. Visible output names are never shortened:
:func:`name_problem` says when one cannot exist.
"""

from __future__ import annotations

import hashlib
import os

NAME_MAX_BYTES = 255  # Linux, macOS and Windows file systems alike (ext4, XFS, APFS, NTFS)
HASH_CHARS = 16


def name_bytes(name: str) -> int:
    return len(os.fsencode(name))


def hidden_name(name: str, suffix: str, reserve: int = 0) -> str:
    """``.<name><suffix>``; when that and ``reserve`` more bytes would not fit in a file name, the
    start of ``name`` and a hash of all of it: ``.<start>~<hash><suffix>``."""
    full = f".{name}{suffix}"
    if name_bytes(full) + reserve <= NAME_MAX_BYTES:
        return full
    raw = os.fsencode(name)
    tag = hashlib.sha256(raw).hexdigest()[:HASH_CHARS]
    room = NAME_MAX_BYTES - reserve - name_bytes(suffix) - 2 - HASH_CHARS  # "." and "~"
    start = raw[: max(room, 0)].decode("utf-8", "ignore")  # whole characters only
    return f".{start}~{tag}{suffix}"


def name_problem(name: str) -> str | None:
    """Why a visible output name cannot exist (too long for a file name), or None."""
    size = name_bytes(name)
    if size <= NAME_MAX_BYTES:
        return None
    return (
        f"its output name {name} is {size} bytes, over the {NAME_MAX_BYTES} a file name may have — "
        "shorten the recording's name"
    )
