"""The watcher's heartbeat: a small JSON file it rewrites while it works, and the rule by which
``carevoice health`` (a container's HEALTHCHECK) tells a live watcher from a stuck, stopped or
killed one.

Only the watcher's main loop beats (while idle, and whenever a decode or a batch comes back), so a
loop stuck anywhere stops the beats. Cheap to import: no model, no numpy.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path

from carevoice.files import pid_alive, pid_space
from carevoice.run import writers


class Phase(str, Enum):
    STARTING = "starting"  # loading the model
    IDLE = "idle"  # waiting for files
    BUSY = "busy"  # transcribing
    STOPPED = "stopped"  # ended (asked to stop, or failed)


@dataclass(frozen=True)
class Beat:
    """One heartbeat. ``updated_unix``: wall-clock seconds (``health`` may run in another process).
    ``pid_space``: where ``pid`` names the watcher (:func:`carevoice.files.pid_space`; "" in beats
    written before it was kept, or where it cannot be told)."""

    pid: int
    phase: Phase
    updated_unix: float
    started_unix: float
    done: int = 0
    failed: int = 0
    waiting: int = 0
    folders: tuple[str, ...] = ()
    engine_failed: int = 0  # different files the engine failed since the last file transcribed
    pid_space: str = ""
    unreadable: int = 0  # folders (and links) below the watched folders that cannot be looked at now

    def to_json(self) -> bytes:
        data = asdict(self)
        data["phase"] = self.phase.value
        data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.updated_unix))
        return (json.dumps(data, ensure_ascii=False) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> Beat:
        """Raises: ValueError: not a heartbeat."""
        try:
            raw = json.loads(data)
            return cls(
                pid=int(raw["pid"]),
                phase=Phase(raw["phase"]),
                updated_unix=float(raw["updated_unix"]),
                started_unix=float(raw["started_unix"]),
                done=int(raw.get("done", 0)),
                failed=int(raw.get("failed", 0)),
                waiting=int(raw.get("waiting", 0)),
                folders=tuple(raw.get("folders", ())),
                engine_failed=int(raw.get("engine_failed", 0)),
                pid_space=str(raw.get("pid_space", "")),
                unreadable=int(raw.get("unreadable", 0)),
            )
        except (KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(str(exc)) from None


def write_beat(path: Path, beat: Beat) -> None:
    """Replace the heartbeat atomically (a reader never sees half of one)."""

    path.parent.mkdir(parents=True, exist_ok=True)
    writers.atomic_write(path, beat.to_json())


def read_beat(path: Path) -> Beat | None:
    """The heartbeat there, or None when there is none (or it is not one)."""
    try:
        return Beat.from_json(path.read_bytes())
    except (OSError, ValueError):
        return None


# Loading the model is one call that cannot beat: a first download of large-v3 (3 GB) may take this long.
STARTING_MAX_AGE_S = 1800.0
# The engine failed this many different files, none transcribed between: the watcher is unhealthy. A GPU
# in a bad state (an Xid error, a lost context) stays so until the process restarts, and a restart
# tries those files again.
ENGINE_FAILING_FILES = 5


def writer_alive(beat: Beat | None) -> bool | None:
    """Whether the watcher that wrote the beat is still a live carevoice process, where this process
    can tell: the beat names its pid space and it is this one (same host, boot and pid namespace).
    None where it cannot (a beat from another host or container, as on a mounted volume, or an
    older beat): then only the beat's age tells."""
    if beat is None or not beat.pid_space or beat.pid_space != pid_space():
        return None
    return beat.pid != os.getpid() and pid_alive(beat.pid, command=b"carevoice")


def health(beat: Beat | None, now_unix: float, max_age_s: float, alive: bool | None = None) -> tuple[bool, str]:
    """Whether a watcher is alive and working, and the one line that says so (or why not).
    While it starts (loads the model) it may go STARTING_MAX_AGE_S without a beat.

    Args:
        beat: The heartbeat, if there is one.
        now_unix: Wall-clock seconds now.
        max_age_s: How old a beat may be (--max-age).
        alive: Whether the beat's process still runs (:func:`writer_alive`); None: cannot be told.
    """
    if beat is None:
        return False, "no heartbeat: the watcher has not started, or writes its heartbeat elsewhere (--heartbeat)"
    age_s = now_unix - beat.updated_unix
    if beat.phase is Phase.STOPPED:
        return False, f"the watcher (pid {beat.pid}) stopped {age_s:.0f} s ago"
    if alive is False:  # killed (SIGKILL, the out-of-memory killer): its last beat looks as fresh as a live one's
        return False, (
            f"the watcher (pid {beat.pid}) is not running: it ended without stopping (killed, out of memory?) "
            f"after its last beat {age_s:.0f} s ago — see its log, and restart it"
        )
    limit_s = max(max_age_s, STARTING_MAX_AGE_S) if beat.phase is Phase.STARTING else max_age_s
    if age_s > limit_s:
        why = "its model has not loaded" if beat.phase is Phase.STARTING else "it cannot reach its folders or heartbeat (a hung network file system?)"
        return False, (
            f"the watcher (pid {beat.pid}) has not beaten for {age_s:.0f} s (limit {limit_s:.0f} s) while {beat.phase.value} — "
            f"it is stuck, or {why}"
        )
    if beat.engine_failed >= ENGINE_FAILING_FILES:
        return False, (
            f"the watcher (pid {beat.pid}) is running, but its engine failed {beat.engine_failed} different files in a row — "
            "restart it; if that does not help, run carevoice doctor (and nvidia-smi on a GPU)"
        )
    # A folder it cannot read is the operator's to fix (its log says which): a restart would not.
    unreadable = f"; {beat.unreadable} folder(s) or link(s) cannot be read — see its log" if beat.unreadable else ""
    return True, (
        f"watcher (pid {beat.pid}) {beat.phase.value}, beat {age_s:.0f} s ago: {beat.done} transcribed, "
        f"{beat.failed} failed, {beat.waiting} waiting{unreadable}"
    )


def beating_elsewhere(beat: Beat | None, now_unix: float, max_age_s: float) -> int | None:
    """The pid of another live watcher that writes this heartbeat, or None.

    A restarted container (same pid, or a stale file from a killed watcher) is not another one:
    the beat must be fresh, not stopped, and its process alive and a carevoice.
    """
    if beat is None or beat.pid == os.getpid() or beat.phase is Phase.STOPPED or now_unix - beat.updated_unix > max_age_s:
        return None
    return beat.pid if pid_alive(beat.pid, command=b"carevoice") else None
