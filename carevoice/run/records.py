"""The hidden record next to each recording's outputs (``.<name>.carevoice.json``): what was
transcribed, with what, and what CareVoice wrote.

A record holds the recording's identity (size, mtime, ctime, inode and SHA-256 of its bytes), the
model's (its name and the SHA-256 of its weights), CareVoice's version and engine revision, the
options that shape the text, and each output CareVoice wrote: its name, SHA-256, its own stat, and
whether its times come from aligned words. A rerun compares a file's stat with the record first and
reads the file only when they differ (as git's index does), so an unchanged folder costs one small
read per recording, from any host. ``run_id`` says which run wrote it. Only carevoice.run.writers
writes records.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from carevoice import __version__, files
from carevoice.run.names import hidden_name
from carevoice.settings import OutputFormat

RECORD_VERSION = 2
RECORD_SUFFIX = ".carevoice.json"


def record_path(stem: Path) -> Path:
    """Where the record for the outputs ``<stem>.*`` lives."""
    return stem.with_name(hidden_name(stem.name, RECORD_SUFFIX))


class ChangedWhileReading(OSError):
    """The file changed while it was hashed (still being written)."""


def stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    """What of a file's stat says it is unchanged: size, mtime, ctime and inode (not the device: see Identity)."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


@dataclass(frozen=True)
class Identity:
    """A file's identity: its stat, checked first, and the SHA-256 of its bytes, which decides.

    ``device`` is the device number of the host that wrote it, kept for CareVoice before issue 22
    (which reads an identity only when it names one) and never compared: each NFS or CephFS client
    numbers a share itself, so another host would find every file changed (git's index check leaves
    it out too, unless git is built with USE_STDEV).
    """

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int
    sha256: str

    def same_stat(self, st: os.stat_result) -> bool:
        """True when nothing about the file can have changed: a rewrite or replacement changes
        ctime (and usually the inode), even when size and mtime are made to match."""
        return (self.size, self.mtime_ns, self.ctime_ns, self.inode) == stat_key(st)

    def with_stat(self, st: os.stat_result) -> Identity:
        return Identity.from_stat(st, self.sha256)

    @classmethod
    def from_stat(cls, st: os.stat_result, sha256: str) -> Identity:
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev, sha256)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: Any) -> Identity | None:
        """An identity read back from a record (with or without a device); None when the data is not one."""
        try:
            return cls(*(data[k] for k in ("size", "mtime_ns", "ctime_ns", "inode")), data.get("device", 0), str(data["sha256"]))
        except (KeyError, TypeError):
            return None


def identify(path: Path) -> Identity:
    """The identity of a file as it is now: stat, hash, stat again.

    Raises:
        ChangedWhileReading: the file changed while it was read (an upload still in progress).
        OSError: it cannot be read.
    """
    before = os.stat(path)
    sha256 = files.sha256_of(path)
    after = os.stat(path)
    identity = Identity.from_stat(before, sha256)
    if not identity.same_stat(after):
        raise ChangedWhileReading(f"{path} changed while it was read")
    return identity


@dataclass(frozen=True)
class OutputEntry:
    """One output CareVoice wrote.

    Attributes:
        name: Its file name.
        sha256: Its content's hash.
        previous_sha256: The file it replaced (set while it is being written, so that after a crash
            either version is known as CareVoice's).
        identity: Its stat once written (None in a record written before the output).
        words: Whether its times come from aligned words (a transcript made without them has
            coarser segment times, and no words in JSON or subtitles).
    """

    name: str
    sha256: str
    previous_sha256: str | None = None
    identity: Identity | None = None
    words: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "previous_sha256": self.previous_sha256,
            "stat": None if self.identity is None else {k: v for k, v in self.identity.to_dict().items() if k != "sha256"},
            "words": self.words,
        }

    @classmethod
    def from_dict(cls, data: Any, words: bool) -> OutputEntry | None:
        """An entry read back from a record (``words``: what to assume when it does not say, as
        version 1 records do not); None when the data is not one."""
        if not isinstance(data, dict) or not isinstance(data.get("name"), str) or not isinstance(data.get("sha256"), str):
            return None
        stat = data.get("stat")
        identity = Identity.from_dict({**stat, "sha256": data["sha256"]}) if isinstance(stat, dict) else None
        return cls(data["name"], data["sha256"], data.get("previous_sha256"), identity, bool(data.get("words", words)))


@dataclass(frozen=True)
class Provenance:
    """What a transcript was made from and with: everything a record says besides its outputs.

    Attributes:
        run_id: The run that made it (two runs, or a run and its retried Ray task, tell each other apart by it).
        model: The model's name (ModelRef.model_id).
        model_sha256: The SHA-256 of its weights (None: not known).
        engine_revision: carevoice.engine.policy.ENGINE_REVISION.
        text: The options that shape the text (DecodeSettings.text_options).
        input: The recording's identity.
        words: Whether word timestamps were on.
        build: What else shaped the words (carevoice.engine.build.words_build: library versions,
            ffmpeg, each engine's device, compute type and instruction set or GPU). Recorded, not
            compared: an upgrade or another machine does not redo finished files (docs/reruns.md).
        heard: False when no speech was heard in sound (FileStatus.NO_SPEECH): a rerun that skips
            the file still says a person should listen to it.
    """

    run_id: str
    model: str
    model_sha256: str | None
    engine_revision: int
    text: dict[str, Any]
    input: Identity | None
    words: bool
    build: dict[str, Any] = field(default_factory=dict)
    heard: bool = True


@dataclass(frozen=True)
class Record:
    """What one recording's outputs were made from (see the module docstring).

    ``version`` 1 records (CareVoice before the recording's identity was kept) read back with no
    input identity, engine revision 0 and their outputs: they are CareVoice's, and out of date.
    ``duration_s`` is the recording's length as decoded, for the report of a run that skips it
    (None: written before CareVoice kept it).
    """

    complete: bool
    run_id: str
    carevoice: str
    engine_revision: int
    model: str
    model_sha256: str | None
    text: dict[str, Any]
    input: Identity | None
    outputs: dict[str, OutputEntry] = field(default_factory=dict)
    version: int = RECORD_VERSION
    build: dict[str, Any] = field(default_factory=dict)
    heard: bool = True  # False: no speech heard in sound (Provenance.heard)
    duration_s: float | None = None

    def to_json(self) -> bytes:
        """ASCII JSON: a file name that is not valid UTF-8 is kept as \\udcXX escapes."""
        return json.dumps(
            {
                "version": self.version,
                "complete": self.complete,
                "run_id": self.run_id,
                "carevoice": self.carevoice,
                "engine_revision": self.engine_revision,
                "model": {"id": self.model, "sha256": self.model_sha256},
                "text": self.text,
                "build": self.build,
                "input": None if self.input is None else self.input.to_dict(),
                "duration_s": self.duration_s,
                "outputs": {fmt: entry.to_dict() for fmt, entry in self.outputs.items()},
                **({} if self.heard else {"no_speech_heard": True}),
            },
            indent=1,
        ).encode("ascii")

    @classmethod
    def made(cls, provenance: Provenance, outputs: dict[str, OutputEntry], *, complete: bool, duration_s: float | None = None) -> Record:
        """The record of outputs made as ``provenance`` says, of a recording ``duration_s`` long;
        ``complete`` is False while they are being written (a crash then leaves a record that says so)."""
        p = provenance
        return cls(
            complete, p.run_id, __version__, p.engine_revision, p.model, p.model_sha256, dict(p.text), p.input, outputs,
            build=dict(p.build), heard=p.heard, duration_s=duration_s,
        )  # fmt: skip

    @property
    def formats(self) -> set[OutputFormat]:
        """The formats it lists outputs of (names of formats this CareVoice does not know are left out)."""
        known = {f.value: f for f in OutputFormat}
        return {known[f] for f in self.outputs if f in known}

    def ours(self, fmt: str, sha256: str | None) -> bool:
        """True when a file with this hash, at this format's output path, is one CareVoice wrote."""
        entry = self.outputs.get(fmt)
        return entry is not None and sha256 is not None and sha256 in {entry.sha256, entry.previous_sha256}


def read_record(stem: Path) -> Record | None:
    """The record for ``<stem>.*``, or None when there is none, or it cannot be read or makes no
    sense (then no output there counts as CareVoice's)."""
    try:
        return _parse_record(json.loads(record_path(stem).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def _parse_record(data: Any) -> Record | None:
    if not isinstance(data, dict) or not isinstance(data.get("outputs"), dict):
        return None
    if data.get("version") == 1:
        fingerprint = data.get("fingerprint") if isinstance(data.get("fingerprint"), dict) else {}
        words = bool(fingerprint.get("word_timestamps", True))
        outputs = {fmt: e for fmt, raw in data["outputs"].items() if (e := OutputEntry.from_dict(raw, words)) is not None}
        text = {k: v for k, v in fingerprint.items() if k not in ("model", "word_timestamps")}
        return Record(bool(data.get("complete")), "", "", 0, str(fingerprint.get("model", "")), None, text, None, outputs, version=1)
    if data.get("version") != RECORD_VERSION:
        return None
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    outputs = {fmt: e for fmt, raw in data["outputs"].items() if (e := OutputEntry.from_dict(raw, True)) is not None}
    return Record(
        complete=bool(data.get("complete")),
        run_id=str(data.get("run_id", "")),
        carevoice=str(data.get("carevoice", "")),
        engine_revision=int(data.get("engine_revision", 0) or 0),
        model=str(model.get("id", "")),
        model_sha256=model.get("sha256") if isinstance(model.get("sha256"), str) else None,
        text=data.get("text") if isinstance(data.get("text"), dict) else {},
        input=Identity.from_dict(data.get("input")),
        outputs=outputs,
        build=data.get("build") if isinstance(data.get("build"), dict) else {},
        heard=data.get("no_speech_heard") is not True,
        duration_s=float(data["duration_s"]) if isinstance(data.get("duration_s"), (int, float)) else None,
    )
