"""`carevoice bench --plot`: a real CPU bench drawn as PNG (through the CLI), SVG and HTML (from the same
record), the GPU panel from a made-up CUDA record, and the --plot errors that must come before any timing."""

from __future__ import annotations

import base64
import copy
import json
import re
import struct
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from conftest import DATA_DIR
from typer.testing import CliRunner

from carevoice.cli.app import app
from carevoice.engine import decoder
from carevoice.render.bench_plot import (
    PlotFormat,
    gpu_note,
    plot_data_path,
    render_bench_plot,
    short_reason,
    write_bench_plot,
)
from carevoice.render.charts import PLOT_EXTRA_HINT

CLIP = DATA_DIR / "lhotse__LJ002-0020.wav"
BENCH_ARGS = ["-m", "tiny.en", "--beam-size", "1", "--no-word-timestamps", "--runs", "1", "--devices", "cuda,cpu", "--compare"]
HAS_CUDA = decoder.cuda_device_count() > 0
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PROGRESS_MARK = "s of audio; model"  # run_bench's first line: the inputs are being timed


@pytest.fixture(scope="module")
def png_bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, dict[str, Any]]:
    """One real `carevoice bench ... --plot <tmp>/x.png --json` on a short clip (no GPU here)."""
    plot = tmp_path_factory.mktemp("plot") / "x.png"
    result = CliRunner().invoke(app, ["bench", str(CLIP), *BENCH_ARGS, "--plot", str(plot), "--json"], catch_exceptions=False)
    return result, plot, json.loads(result.stdout) if result.stdout.strip() else {}


def svg_text(svg: bytes) -> str:
    """Every text in an SVG (the charts keep text as text), one string; fails on invalid XML."""
    return "\n".join(ET.fromstring(svg).itertext())


def test_the_png_and_its_data_land_beside_each_other(png_bench) -> None:  # type: ignore[no-untyped-def]
    result, plot, record = png_bench
    assert result.exit_code == 0, result.stderr
    data = plot.with_name("x.data.json")
    assert plot_data_path(plot) == data
    assert f"plot written to {plot}, its data to {data}\n" in result.stderr
    assert sorted(p.name for p in plot.parent.iterdir()) == ["x.data.json", "x.png"]  # no temporary file left
    png = plot.read_bytes()
    assert png.startswith(PNG_SIGNATURE) and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert 600 <= width <= 4000 and 400 <= height <= 4000, (width, height)
    assert 10_000 < len(png) < 2_000_000
    assert json.loads(data.read_text(encoding="utf-8")) == record  # the --json record, the same dict
    assert data.read_text(encoding="utf-8") == result.stdout  # and the same text


def test_the_svg_names_the_model_rtfx_and_every_row(png_bench, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, _, record = png_bench
    written = write_bench_plot(tmp_path / "bench.svg", record)
    assert (written.plot, written.data) == (tmp_path / "bench.svg", tmp_path / "bench.data.json")
    text = svg_text(written.plot.read_bytes())
    assert "model tiny.en" in text and "RTFx: audio seconds per wall-clock second" in text
    assert "CareVoice · CPU" in text and "faster-whisper · CPU" in text and "CareVoice · CUDA" in text
    for row in record["rows"]:
        if row["available"]:
            assert f"{row['e2e']['rtfx']:.1f}" in text and f"{row['inference']['rtfx']:.1f}" in text
    for speedup in record["speedups"]:
        assert f"{speedup['ratio']:.2f}×" in text
    assert json.loads(written.data.read_text(encoding="utf-8")) == record


@pytest.mark.skipif(HAS_CUDA, reason="this machine has a CUDA device")
def test_the_missing_gpu_shows_as_rows_that_say_why(png_bench, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, _, record = png_bench
    text = svg_text(render_bench_plot(record, PlotFormat.SVG))
    lines = [line.strip() for line in text.splitlines()]
    assert lines.count("not available: CTranslate2 sees no CUDA device") == 2  # CareVoice and faster-whisper on CUDA
    assert "no GPU sampled: CUDA not available: CTranslate2 sees no CUDA device" in text
    assert "GPU/CPU: not measured (CUDA not available: CTranslate2 sees no CUDA device)" in text
    assert "GPU utilisation (%)" not in text


def test_the_html_page_is_self_contained_and_holds_the_numbers(png_bench, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, _, record = png_bench
    page = write_bench_plot(tmp_path / "bench.html", record).plot.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert "default-src 'none'" in page  # the browser is told to load nothing
    embedded = re.findall(r'<img [^>]*src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(embedded) == 1
    assert "RTFx" in svg_text(base64.b64decode(embedded[0]))
    checked = 0
    for row in record["rows"]:
        if row["available"]:
            for measure in ("e2e", "inference"):
                assert f"<td>{row[measure]['rtfx']:.1f}</td>" in page
            assert f"<td>{row['load_s']:.2f}</td>" in page
            checked += 1
    assert checked >= 2
    for speedup in record["speedups"]:
        assert f"<td>{speedup['ratio']:.2f}×</td>" in page
    assert "<code>bench.data.json</code>" in page


def test_html_text_is_escaped(png_bench, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, _, record = png_bench
    hostile = copy.deepcopy(record)
    hostile["rows"][0].update(available=False, reason='<img src="https://example.org/x.png"> & more')
    hostile["hardware"]["cpu"] = "<b>CPU</b>"
    page = write_bench_plot(tmp_path / "bench.html", hostile).plot.read_text(encoding="utf-8")
    assert "not available: &lt;img src=&quot;https://example.org/x.png&quot;&gt; &amp; more" in page
    assert "&lt;b&gt;CPU&lt;/b&gt;" in page
    assert "<img src=" not in page and "<b>" not in page


# --- the GPU panel, from a made-up bench on a GPU ---------------------------------------------------


def gpu_record() -> dict[str, Any]:
    """A --json record as a bench with --compare on an H200 would write it (two GPU series, one reading missing)."""
    t_s = [round(0.5 * i, 2) for i in range(40)]

    def row(mode: str, device: str, e2e_s: float, inference_s: float, util: float | None) -> dict[str, Any]:
        gpu = None
        if device == "cuda":
            series = {"index": 0, "t_s": t_s, "util_pct": [None if i == 3 else util for i in range(40)], "memory_used_mib": [2500.0 + i for i in range(40)]}
            device_stats = {"index": 0, "samples": 40, "util_mean_pct": util, "memory_used_peak_mib": 2539.0, "memory_total_mib": 143771.0}
            gpu = {"available": True, "reason": None, "interval_s": 0.5, "duration_s": 19.5, "devices": [device_stats], "series": [series]}
        timing = lambda s: {"runs_s": [s], "min_s": s, "median_s": s, "rtfx": round(600.0 / s, 3), "files_per_s": round(10 / s, 3)}  # noqa: E731
        return {
            "mode": mode, "device": device, "compute_type": "float16" if device == "cuda" else "int8",
            "batch_size": 16 if mode == "carevoice" else 1, "available": True, "reason": None, "load_s": 2.5, "warmup_s": 0.4,
            "e2e": timing(e2e_s), "inference": timing(inference_s), "segments": 120, "gpu": gpu,
        }  # fmt: skip

    return {
        "carevoice_version": "0.2.0",
        "created": "2026-01-01T00:00:00+00:00",
        "versions": {"python": "3.11.7", "ctranslate2": "4.8.5"},
        "hardware": {
            "platform": "Linux", "cpu": "Intel(R) Xeon(R) Platinum 8480+", "cpu_cores": 16, "cpu_cores_usable": 16, "memory_gib": 128.0,
            "gpus": ["NVIDIA H200"], "nvml": {"available": True, "reason": None, "driver_version": "570.86", "devices": []},
        },  # fmt: skip
        "settings": {"model_id": "large-v3", "beam_size": 5, "language": "en", "runs": 1, "warmup_audio_s": 5.0, "compute_type": None},
        "audio_s": 600.0,
        "files": [{"file": f"visit{i}.wav", "duration_s": 60.0} for i in range(10)],
        "skipped_files": [],
        "rows": [
            row("carevoice", "cuda", 8.0, 4.0, 85.0),
            row("faster-whisper", "cuda", 20.0, 16.0, 40.0),
            row("carevoice", "cpu", 100.0, 80.0, None),
            row("faster-whisper", "cpu", 150.0, 120.0, None),
        ],
        "speedups": [
            {"label": "GPU/CPU (carevoice)", "measure": "e2e", "faster": "carevoice/cuda", "slower": "carevoice/cpu", "ratio": 12.5},
            {"label": "GPU/CPU (carevoice)", "measure": "inference", "faster": "carevoice/cuda", "slower": "carevoice/cpu", "ratio": 20.0},
            {"label": "CareVoice/faster-whisper (cuda)", "measure": "e2e", "faster": "carevoice/cuda", "slower": "faster-whisper/cuda", "ratio": 2.5},
        ],
    }


def test_the_gpu_panel_shows_utilisation_and_memory_with_units() -> None:
    text = svg_text(render_bench_plot(gpu_record(), PlotFormat.SVG))
    assert "GPU utilisation (%)" in text and "GPU memory used (GiB)" in text
    assert "time since the row's timed runs began (s)" in text
    assert "CareVoice · CUDA (GPU 0, 140 GiB total)" in text and "faster-whisper · CUDA (GPU 0, 140 GiB total)" in text
    assert "inference only →" in text  # where each row's inference-only runs begin
    assert "no GPU sampled" not in text
    # the title: model, compute types, audio, hardware
    assert "model large-v3 · float16 on CUDA, int8 on CPU · beam 5 · 10 files, 600.0 s of audio · median of 1 run(s)" in text
    assert "CPU Intel(R) Xeon(R) Platinum 8480+ (16 cores) · GPU NVIDIA H200" in text
    # speedups and RTFx (600 s of audio in 8 s end to end = 75.0)
    assert "GPU/CPU (carevoice)" in text and "12.50×" in text and "20.00×" in text and "2.50×" in text
    assert "75.0" in text and "150.0" in text
    assert "GPU/CPU: not measured" not in text


def test_the_png_of_a_gpu_bench_is_taller_than_one_without_gpu_readings() -> None:
    with_gpu = render_bench_plot(gpu_record(), PlotFormat.PNG)
    without = gpu_record()
    for row in without["rows"]:
        row["gpu"] = None
    height = lambda png: struct.unpack(">II", png[16:24])[1]  # noqa: E731
    assert height(with_gpu) > height(render_bench_plot(without, PlotFormat.PNG)) + 200  # two GPU panels instead of one line


def _no_cuda_rows(record: dict[str, Any]) -> None:
    record["rows"] = [r for r in record["rows"] if r["device"] != "cuda"]


def _cuda_unavailable(record: dict[str, Any]) -> None:
    for r in record["rows"]:
        if r["device"] == "cuda":
            r.update(available=False, reason="the GPU test process was killed by SIGABRT: Library libcublas.so.12 is not found", gpu=None)


def _nvml_unavailable(record: dict[str, Any]) -> None:
    for r in record["rows"]:
        if r["device"] == "cuda":
            r["gpu"] = {"available": False, "reason": "NVML Shared Library Not Found", "devices": [], "series": []}


def _no_readings(record: dict[str, Any]) -> None:
    for r in record["rows"]:
        if r["device"] == "cuda":
            r["gpu"]["series"] = []


@pytest.mark.parametrize(
    ("change", "note"),
    [
        (lambda record: None, None),
        (_no_cuda_rows, "no GPU sampled: no CUDA rows in this bench (--devices)"),
        (_cuda_unavailable, "no GPU sampled: CUDA not available: the GPU test process was killed by SIGABRT: Library libcubl…"),
        (_nvml_unavailable, "no GPU sampled: NVML unavailable: NVML Shared Library Not Found"),
        (_no_readings, "no GPU sampled: no NVML reading during the timed runs"),
    ],
)
def test_without_gpu_readings_the_figure_says_why(change, note: str | None) -> None:  # type: ignore[no-untyped-def]
    record = gpu_record()
    change(record)
    assert gpu_note(record) == note
    text = svg_text(render_bench_plot(record, PlotFormat.SVG))
    assert ("GPU utilisation (%)" in text) is (note is None)
    if note is not None:
        assert note in text


def test_short_reason_keeps_one_short_line() -> None:
    assert short_reason("CTranslate2 sees no CUDA device") == "CTranslate2 sees no CUDA device"
    assert short_reason("  out of\tmemory \n Traceback (most recent call last):\n ...") == "out of memory"
    assert short_reason("x" * 100, limit=10) == "x" * 9 + "…"
    assert short_reason(None) == short_reason("") == "no reason recorded"


# --- errors before any timing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plot", "message"),
    [
        ("bench.pdf", "error: --plot bench.pdf: cannot draw a .pdf file — name a .png, .svg or .html file"),
        ("bench", "error: --plot bench: cannot draw a file without an extension — name a .png, .svg or .html file"),
        ("missing/bench.png", "error: --plot missing/bench.png: folder missing does not exist — create it or choose another path"),
    ],
)
def test_a_bad_plot_path_is_a_usage_error_before_the_bench(plot: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # short relative paths: the error line stays one line
    result = CliRunner().invoke(app, ["bench", str(CLIP), *BENCH_ARGS, "--plot", plot, "--json"], catch_exceptions=False)
    assert result.exit_code == 2
    assert result.stderr == message + "\n"
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_missing_matplotlib_is_a_setup_error_before_the_bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["bench", str(CLIP), *BENCH_ARGS, "--plot", "bench.png", "--json"], catch_exceptions=False)
    assert result.exit_code == 3
    assert result.stderr == f"error: --plot needs matplotlib, which is not installed\n  → install it: {PLOT_EXTRA_HINT}\n"
    assert PROGRESS_MARK not in result.stderr and result.stdout == ""
    assert list(tmp_path.iterdir()) == []
