"""What a file's first bytes say it is, whatever its name: the start of an MP4/M4A/MOV, or something
that is no recording at all (a PDF, a picture, an office document, a web page, text). A failed
decode says which (carevoice.run.audio), a transcript named as an input is told to be one
(carevoice.run.discovery), and the watcher does not wait for more of a file that is no recording
(carevoice.watch.uploads). Only :func:`read_head` reads; nothing here prints.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path

HEAD_BYTES = 4096  # enough for every signature here, and to tell text from binary

# The boxes an MP4/M4A/MOV may start with: a file cut short still starts with one of them.
MP4_FIRST_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")
# MP4 brands of still pictures (a phone's HEIC photo is an MP4-like file).
_PICTURE_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis")

# Signatures of files that are no recording, and what to call them.
_NOT_RECORDINGS: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "a PDF document"),
    (b"\xff\xd8\xff", "a JPEG picture"),
    (b"\x89PNG\r\n\x1a\n", "a PNG picture"),
    (b"GIF87a", "a GIF picture"),
    (b"GIF89a", "a GIF picture"),
    (b"II*\x00", "a TIFF picture"),
    (b"MM\x00*", "a TIFF picture"),
    (b"PK\x03\x04", "a ZIP archive or office document (.docx, .xlsx, .odt)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an office document (.doc, .xls, .msg)"),
    (b"{\\rtf", "a rich-text document"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\x1f\x8b\x08", "a gzip archive"),
)
# Recordings whose signature is printable: a copy cut right after it is an upload under way, not text.
_RECORDING_STARTS = (
    b"fLaC",
    b"OggS",
    b"RIFF",
    b"RF64",
    b"ID3",
    b"#!AMR",
    b"FORM",
    b".snd",
    b"caff",
    b"wvpk",
    b"MAC ",
    b"TTA1",
    b"MPCK",
    b"MP+",
)
# Less than this is too little to call text: a recording's first bytes may all be printable.
MIN_TEXT_BYTES = 64
_WEB_PAGE = re.compile(r"\s*<(?:!doctype\s+html|html)[\s>]", re.IGNORECASE)
# Characters text holds; any other control character means binary data.
_CONTROL = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f]")


def read_head(path: Path, size: int = HEAD_BYTES) -> bytes:
    """The file's first ``size`` bytes (fewer when it is shorter; none when it cannot be read)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except OSError:
        return b""


def starts_like_mp4(head: bytes) -> bool:
    """Whether the bytes start as an MP4/M4A/MOV does (a copy cut short still does)."""
    return head[4:8] in MP4_FIRST_BOXES and not (head[4:8] == b"ftyp" and head[8:12] in _PICTURE_BRANDS)


def starts_like_wav(head: bytes) -> bool:
    """Whether the bytes start as a RIFF/WAVE file does."""
    return head[:4] == b"RIFF" and head[8:12] == b"WAVE"


def not_a_recording(head: bytes) -> str | None:
    """What a file whose first bytes are ``head`` is when it is surely no recording (``a PDF
    document``, ``a web page``, ``a text file``); None when it may be one."""
    for signature, kind in _NOT_RECORDINGS:
        if head.startswith(signature):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP picture"
    if head[4:8] == b"ftyp" and head[8:12] in _PICTURE_BRANDS:
        return "a HEIC picture"
    text = _as_text(head, MIN_TEXT_BYTES)
    if text is None:
        return None
    return "a web page" if _WEB_PAGE.match(text) else "a text file"


def holds_text(head: bytes) -> bool:
    """Whether the bytes are text however few they are (a file named as a transcript is one when
    they are: see carevoice.run.discovery); never the start of a recording."""
    return _as_text(head, 1) is not None


def _as_text(head: bytes, min_bytes: int) -> str | None:
    """The bytes as UTF-8 text (a character cut at the end is fine), or None: binary, fewer than
    ``min_bytes``, or the start of a recording."""
    if len(head) < min_bytes or head.startswith(_RECORDING_STARTS):
        return None
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head.removeprefix(codecs.BOM_UTF8), final=False)
    except UnicodeDecodeError:
        return None
    return text if text.strip() and not _CONTROL.search(text) else None
