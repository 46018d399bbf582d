"""Before a run acts on its plan: clear what killed runs left behind in the folders it writes (their
temporary files and locks), and give a record whose recording was only touched (a ``touch``, a
copy with the same bytes) the new stat, so the next run reads nothing. ``--dry-run`` skips this.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from pathlib import Path

from carevoice.run.locks import remove_stale_locks, try_lock
from carevoice.run.planning import FilePlan
from carevoice.run.records import read_record
from carevoice.run.rules import Action
from carevoice.run.writers import refresh_record, remove_stale_temp_files


def tidy(plans: Sequence[FilePlan], cleared: Container[Path] = ()) -> set[Path]:
    """Clear the leftovers of killed runs where these plans write, then refresh the records of
    skipped recordings whose stat alone changed. Best effort: what cannot be cleared stays.

    Args:
        plans: The run's plans.
        cleared: Folders cleared lately, left as they are (a watcher clears a folder when it first
            writes there and then once an hour, not for every file that arrives: a listing of a
            folder of 20,000 transcribed recordings costs more than the file).

    Returns:
        The folders cleared now.
    """
    folders = {folder for folder in {plan.job.output_stem.parent for plan in plans} if folder not in cleared}
    for folder in sorted(folders):
        remove_stale_temp_files(folder)
        remove_stale_locks(folder)
    for plan in plans:
        if plan.decision.action is Action.SKIP:
            refresh_stat(plan)
    return folders


def refresh_stat(entry: FilePlan) -> None:
    """Give a skipped file's record the recording's new stat when only the stat changed (a touch, a
    copy), so the next run reads nothing. Under the file's lock, and only while the record is the
    one planned with: another process may be writing the file right now. Best effort."""
    record, identity = entry.record, entry.input
    if record is None or identity is None or identity == record.input:
        return
    try:
        lock = try_lock(entry.job.output_stem)
    except OSError:
        return
    if lock is None:
        return
    try:
        now = read_record(entry.job.output_stem)
        if now is not None and now.complete and now.run_id == record.run_id and now.input == record.input:
            refresh_record(entry.job.output_stem, now, identity)
    finally:
        lock.release()
