"""Cross-file batching: a folder of short clips runs in fewer engine calls than files, and every
file comes out as it does when transcribed alone (same words, times within 0.2 s). Plus the
scheduler's bucketing rules, which make results independent of batch composition."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import (
    DATA_DIR,
    CliResult,
    invoke_cli,
    normalised_words,
    read_manifest,
    word_error_rate,
)

from carevoice.engine.policy import window_frames
from carevoice.engine.whisper import Engine
from carevoice.run.scheduler import BatchScheduler

# The 12 shortest English clips in tests/data (1.5-5.3 s): every one is a single chunk.
CLIPS = sorted(
    (row for row in read_manifest(DATA_DIR / "manifest.tsv") if row["language"] == "en"),
    key=lambda row: float(row["duration_s"]),
)[:12]
TIME_TOLERANCE_S = 0.2


@dataclass
class BatchRun:
    out: Path
    result: CliResult
    batch_sizes: list[int] = field(default_factory=list)

    @property
    def record(self) -> dict:  # type: ignore[type-arg]
        return json.loads(self.result.stdout)

    def transcript(self, clip: dict[str, str]) -> dict:  # type: ignore[type-arg]
        return json.loads((self.out / Path(clip["file"]).with_suffix(".json").name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def clips_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert len(CLIPS) == 12 and all(float(c["duration_s"]) < 10 for c in CLIPS)
    folder = tmp_path_factory.mktemp("batching") / "clips"
    folder.mkdir()
    for clip in CLIPS:
        shutil.copy(DATA_DIR / clip["file"], folder / clip["file"])
    return folder


def transcribe_counting_batches(clips: Path, out: Path, batch_size: int) -> BatchRun:
    """One real CLI run; a spy on Engine.run_batch records how many chunks each engine call got."""
    run = BatchRun(out, CliResult(-1, "", ""))
    real_run_batch = Engine.run_batch

    def counting(self: Engine, items, options):  # type: ignore[no-untyped-def]
        run.batch_sizes.append(len(items))
        return real_run_batch(self, items, options)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Engine, "run_batch", counting)
        run.result = invoke_cli(
            "transcribe", clips, "-o", out, "-m", "tiny.en", "--device", "cpu", "-f", "json",
            "--batch-size", batch_size, "--json",
        )  # fmt: skip
    return run


@pytest.fixture(scope="module")
def batched(clips_dir: Path) -> BatchRun:
    return transcribe_counting_batches(clips_dir, clips_dir.parent / "batched", batch_size=8)


@pytest.fixture(scope="module")
def alone(clips_dir: Path) -> BatchRun:
    """Every file in an engine call of its own: what transcribing it alone gives."""
    return transcribe_counting_batches(clips_dir, clips_dir.parent / "alone", batch_size=1)


def test_a_folder_of_short_clips_takes_fewer_engine_calls_than_files(batched: BatchRun, clips_dir: Path) -> None:
    assert batched.result.exit_code == 0, batched.result.stderr
    assert batched.result.stderr.splitlines()[-1].startswith("12 transcribed · ")
    record = batched.record
    assert record["counts"] == {"done": 12, "no_speech": 0, "skipped": 0, "failed": 0}
    assert record["chunks"] == 12 == sum(batched.batch_sizes)
    assert record["engine_calls"] == len(batched.batch_sizes)
    assert record["engine_calls"] < 12
    assert max(batched.batch_sizes) == 8  # one call held the chunks of 8 different files
    assert sorted(p.name for p in batched.out.iterdir() if not p.name.startswith(".")) == sorted(
        Path(c["file"]).with_suffix(".json").name for c in CLIPS
    )


def test_alone_means_one_file_per_engine_call(alone: BatchRun) -> None:
    assert alone.result.exit_code == 0, alone.result.stderr
    assert alone.batch_sizes == [1] * 12
    assert alone.record["engine_calls"] == 12


@pytest.mark.parametrize("clip", CLIPS, ids=[c["file"] for c in CLIPS])
def test_batched_file_matches_the_file_alone(batched: BatchRun, alone: BatchRun, clip: dict[str, str]) -> None:
    together, single = batched.transcript(clip), alone.transcript(clip)
    assert normalised_words(together["text"]), "no words at all"
    assert normalised_words(together["text"]) == normalised_words(single["text"])
    assert together["language"] == single["language"] == "en"
    assert len(together["segments"]) == len(single["segments"])
    for mine, theirs in zip(together["segments"], single["segments"]):
        assert mine["start"] == pytest.approx(theirs["start"], abs=TIME_TOLERANCE_S)
        assert mine["end"] == pytest.approx(theirs["end"], abs=TIME_TOLERANCE_S)
        assert 0 <= mine["start"] <= mine["end"] <= together["duration"] + 0.05
        assert [w["word"] for w in mine["words"]] == [w["word"] for w in theirs["words"]]
        for a, b in zip(mine["words"], theirs["words"]):
            assert (a["start"], a["end"]) == pytest.approx((b["start"], b["end"]), abs=TIME_TOLERANCE_S)


def test_batched_text_is_accurate(batched: BatchRun) -> None:
    references = " ".join(c["reference_text"] for c in CLIPS)
    hypotheses = " ".join(batched.transcript(c)["text"] for c in CLIPS)
    # tiny.en writes numbers as digits ("In 1813.") where the references spell them out.
    assert word_error_rate(references, hypotheses) <= 0.2


# --- the scheduler --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "duration_s, frames",
    [(0.5, 1000), (5.0, 1000), (9.0, 1000), (9.01, 1500), (14.0, 1500), (18.99, 2000), (19.01, 3000), (29.5, 3000), (45.0, 3000)],
)
def test_window_is_the_smallest_bucket_that_holds_the_chunk_and_a_second_of_silence(duration_s: float, frames: int) -> None:
    assert window_frames(duration_s) == frames


@pytest.mark.parametrize("duration_s", [0.5, 5.0, 29.9, 30.0, 45.0])
def test_full_window_buckets_give_every_chunk_whispers_30_s(duration_s: float) -> None:
    assert window_frames(duration_s, (30.0,)) == 3000


def drain(batches: Iterator[list[str]]) -> list[list[str]]:
    return [list(batch) for batch in batches]


def test_full_buckets_run_and_buckets_never_mix() -> None:
    scheduler: BatchScheduler[str] = BatchScheduler(batch_size=3)
    for i, frames in enumerate([1000, 1500, 1000, 1500, 1000, 1000]):
        scheduler.add(frames, f"c{i}")
    assert drain(scheduler.ready()) == [["c0", "c2", "c4"]]
    assert scheduler.pending == 3
    assert drain(scheduler.ready()) == []
    assert drain(scheduler.flush()) == [["c1", "c3"], ["c5"]]  # oldest bucket first
    assert scheduler.pending == 0


def test_too_many_waiting_chunks_flush_the_oldest_bucket() -> None:
    scheduler: BatchScheduler[str] = BatchScheduler(batch_size=4, max_pending=3)
    for i, frames in enumerate([2000, 1000, 1500, 3000]):
        scheduler.add(frames, f"c{i}")
    assert drain(scheduler.ready()) == [["c0"]]
    assert scheduler.pending == 3
