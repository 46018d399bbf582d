"""Issue 22: one folder on a network share (NFS, CephFS, SMB) seen from several hosts. A rerun from
another host reads no recording and rewrites no record (each client numbers the share's device
itself); locks work where ``flock`` is emulated with POSIX locks (tests/doubles.py ``nfs_flock``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import invoke_cli, unprivileged
from doubles import nfs_flock

from carevoice import files
from carevoice.results import FileResult, FileStatus
from carevoice.run import locks
from carevoice.run.claims import BUSY_ELSEWHERE, claims_for
from carevoice.run.discovery import Job
from carevoice.run.locks import lock_path, remove_stale_locks
from carevoice.run.records import RECORD_SUFFIX, Identity, read_record
from carevoice.settings import TranscribeSettings

ENGINE = ("-m", "tiny.en", "--device", "cpu")
CALL = "hfdatasets__vctk_p225_001_mic1.flac"  # "Please call Stella."
ASK = "hfdatasets__vctk_p225_002_mic1.flac"  # "Ask her to bring these things with her from the store."


def everything(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and mtime_ns, hidden records included."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def as_another_host_sees_them(folder: Path) -> int:
    """Renumber the device in every record, as another NFS or CephFS client numbers the share; how many records."""
    records = sorted(folder.glob(f".*{RECORD_SUFFIX}"))
    for path in records:
        raw = json.loads(path.read_text(encoding="ascii"))
        raw["input"]["device"] += 7
        for entry in raw["outputs"].values():
            entry["stat"]["device"] += 7
        path.write_text(json.dumps(raw, indent=1), encoding="ascii")
    return len(records)


def test_a_rerun_from_another_host_reads_no_recording_and_rewrites_no_record(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "share"
    folder.mkdir()
    for name, source in (("a.flac", CALL), ("b.flac", ASK)):
        shutil.copyfile(data_dir / source, folder / name)
    assert invoke_cli("transcribe", folder, *ENGINE).exit_code == 0
    assert as_another_host_sees_them(folder) == 2
    before = everything(folder)
    hashed: list[str] = []
    real_sha256_of = files.sha256_of

    def counting_sha256_of(path: Path) -> str:
        hashed.append(Path(path).name)
        return real_sha256_of(path)

    monkeypatch.setattr(files, "sha256_of", counting_sha256_of)
    again = invoke_cli("transcribe", folder, *ENGINE)
    assert again.exit_code == 0, again.stderr
    for name in ("a.flac", "b.flac"):
        assert f"skipped {folder / name} (already transcribed with these options" in again.stderr
    assert hashed == []  # neither a recording nor an output was read
    assert everything(folder) == before  # no record rewritten (bytes and mtime)


@pytest.mark.parametrize("device", [7, None], ids=["recorded with a device", "recorded without one"])
def test_a_record_s_stat_matches_whatever_device_it_names(tmp_path: Path, device: int | None) -> None:
    """Records of earlier CareVoice name the device; a record without one reads too. Neither is compared."""
    path = tmp_path / "a.wav"
    path.write_bytes(b"RIFF")
    st = os.stat(path)
    data = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino, "sha256": "0" * 64}
    if device is not None:
        data["device"] = st.st_dev + device
    identity = Identity.from_dict(data)
    assert identity is not None and identity.same_stat(st)
    os.utime(path, ns=(1, 1))
    assert not identity.same_stat(os.stat(path))  # the rest still counts


def test_records_keep_naming_the_device_for_earlier_carevoice(tmp_path: Path) -> None:
    """CareVoice before issue 22 reads a record's input only when it names a device."""
    path = tmp_path / "a.wav"
    path.write_bytes(b"RIFF")
    st = os.stat(path)
    assert Identity.from_stat(st, "0" * 64).to_dict()["device"] == st.st_dev


# --- locks on NFS: flock is a POSIX lock there ---------------------------------------------------

HOLD = r"""
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.lockf(fd, fcntl.LOCK_EX)  # a colleague's live run on another host: NFS makes its flock this
os.fchmod(fd, 0o444)  # another user's lock file: this test's user may only read it
print("held", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def colleague_s_lock(open_folder: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """A folder every user writes in, and a live lock in it that this test's user can only read."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(lock_path(open_folder / "visit"))], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield open_folder, holder
    finally:
        holder.communicate(timeout=60)


def claim_as_another_user(folder: Path) -> FileResult | None:
    """What a run of another user makes of ``visit.wav`` (a claim: its lock, then its plan); the lock is let go."""
    (folder / "visit.wav").write_bytes(b"RIFF....WAVE")
    claims = claims_for(TranscribeSettings(inputs=(folder,)), "tiny.en")
    with unprivileged():
        try:
            return claims.claim(Job(folder / "visit.wav", folder / "visit", "visit.wav"))
        finally:
            claims.release_all()


def test_on_nfs_a_colleague_s_live_lock_means_skipped(
    colleague_s_lock: tuple[Path, subprocess.Popen[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, _ = colleague_s_lock
    monkeypatch.setattr(locks.fcntl, "flock", nfs_flock)
    result = claim_as_another_user(folder)
    assert result is not None and "check free disk space" not in str(result.error), result.error
    assert result == FileResult(folder / "visit.wav", FileStatus.SKIPPED, note=BUSY_ELSEWHERE)
    assert lock_path(folder / "visit").exists()  # the colleague's, left alone


def test_on_nfs_a_killed_run_s_lock_is_taken_over(open_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stale = lock_path(open_folder / "visit")
    stale.write_bytes(b"")
    stale.chmod(0o444)  # another user's: this test's user may only read it
    monkeypatch.setattr(locks.fcntl, "flock", nfs_flock)
    result = claim_as_another_user(open_folder)
    assert result is None, result.error  # ours to transcribe: no "check free disk space"
    assert not stale.exists()  # its own lock, let go, took the killed run's with it
    assert read_record(open_folder / "visit") is None


def test_on_nfs_tidying_clears_a_killed_run_s_lock_and_leaves_a_live_one(
    colleague_s_lock: tuple[Path, subprocess.Popen[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, _ = colleague_s_lock
    stale = lock_path(folder / "other")
    stale.write_bytes(b"")
    stale.chmod(0o444)
    monkeypatch.setattr(locks.fcntl, "flock", nfs_flock)
    with unprivileged():
        removed = remove_stale_locks(folder)
    assert (removed, stale.exists(), lock_path(folder / "visit").exists()) == (1, False, True)
