"""The GPU acceptance run: one command that proves CareVoice's CUDA path on a machine with an NVIDIA
GPU, offline, and writes what it measured as one JSON and one markdown summary.

Steps, each in a process of its own with a time limit, each passed, failed or skipped with a reason:
  1. doctor          `carevoice doctor --json`: every GPU check must pass
  2. pytest -m gpu   the suite's GPU tests
  3. transcribe      the audio with --report: real-time factor, and NVML utilisation per GPU
  4. bench           `carevoice bench --devices cuda,cpu --compare --runs 1`
  5. throughput      plain faster-whisper on the same files and device, one file at a time:
                     WhisperModel.transcribe, and BatchedInferencePipeline at batch 8/16/32/64,
                     against CareVoice (step 3): the goal is >= 10x plain per file on short clips,
                     and >= 80 % GPU utilisation during inference
On a machine without a GPU, `--device cpu` runs the same steps on the CPU (the GPU-only ones are
reported as skipped): CI does this with tiny.en, so the script cannot rot.

Usage (on the GPU machine, after ../shared/tools/gpu-payload's setup; see ../shared/notes/gpu-machine.md):
  python3 benchmarks/gpu_acceptance.py --model $CAREVOICE_GPU_MODEL --audio .devpayload/2/audio --out $OUT
  python3 benchmarks/gpu_acceptance.py --model tiny.en --audio tests/data --device cpu --out /tmp/acc   # the CPU form
Options: --wheels DIR installs wheels from DIR first (pip --no-index --target, for offline machines).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".webm"}
GOAL_X_PLAIN = 10.0
GOAL_GPU_UTIL_PCT = 80.0


@dataclass
class Step:
    """One step of the run: what happened, how long it took, and what it measured."""

    name: str
    status: str = "skipped"  # passed, failed, skipped
    seconds: float = 0.0
    detail: str = ""
    numbers: dict[str, Any] = field(default_factory=dict)


def run(command: list[str], env: dict[str, str], timeout_s: float) -> tuple[int, str, str, float]:
    started = time.monotonic()
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout_s, cwd=REPO)
    except subprocess.TimeoutExpired as exc:
        return 124, exc.stdout or "" if isinstance(exc.stdout, str) else "", f"timed out after {timeout_s:.0f} s", time.monotonic() - started
    return done.returncode, done.stdout, done.stderr, time.monotonic() - started


def last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def step_doctor(args: argparse.Namespace, env: dict[str, str]) -> Step:
    step = Step("doctor")
    code, out, err, step.seconds = run([sys.executable, "-m", "carevoice", "doctor", str(args.out), "-m", args.model, "--json"], env, 300)
    try:
        checks = {c["name"]: c for c in json.loads(out)["checks"]}
    except (ValueError, KeyError):
        step.status, step.detail = "failed", f"no JSON (exit {code}): {last_line(err)}"
        return step
    gpu_checks = ("NVIDIA GPU", "CUDA (ctranslate2)", "GPU inference")
    step.numbers = {name: {"status": c["status"], "detail": c["detail"]} for name, c in checks.items()}
    if args.device == "cpu":
        failed = [n for n, c in checks.items() if c["status"] == "fail" and n not in gpu_checks]
        step.status = "failed" if failed else "passed"
        step.detail = f"CPU form: GPU checks not required; failed: {', '.join(failed) or 'none'}"
    else:
        not_passed = [n for n in gpu_checks if checks.get(n, {}).get("status") != "pass"]
        step.status = "failed" if not_passed or code != 0 else "passed"
        step.detail = f"GPU checks not passing: {', '.join(not_passed)}" if not_passed else "every GPU check passed"
    return step


def step_pytest(args: argparse.Namespace, env: dict[str, str]) -> Step:
    step = Step("pytest -m gpu")
    code, out, err, step.seconds = run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"], env, 600)
    summary = last_line(out)
    step.detail = summary
    if code == 0 and " passed" in summary:
        step.status = "passed"
    elif code == 0 or code == 5:
        step.status, step.detail = "skipped", f"no GPU test ran here ({summary or 'none collected'})"
    else:
        step.status = "failed"
    return step


def step_transcribe(args: argparse.Namespace, env: dict[str, str], workdir: Path) -> Step:
    step = Step("transcribe")
    report = workdir / "transcribe.json"
    command = [sys.executable, "-m", "carevoice", "transcribe", *map(str, args.files), "-o", str(workdir / "out"),
               "-m", args.model, "--device", args.device, "--report", str(report), "-q"]  # fmt: skip
    code, _, err, step.seconds = run(command, env, 600)
    if code != 0 or not report.is_file():
        step.status, step.detail = "failed", f"exit {code}: {last_line(err)}"
        return step
    record = json.loads(report.read_text(encoding="utf-8"))
    step.numbers = {k: record.get(k) for k in ("device", "audio_s", "wall_s", "rtfx", "files_per_s", "engine_calls", "counts")}
    step.numbers["gpu"] = record.get("gpu")
    step.status = "passed" if record["counts"]["failed"] == 0 else "failed"
    gpus = (record.get("gpu") or {}).get("devices") or []
    util = ", ".join(f"GPU{d['index']} {d['util_mean_pct']}%" for d in gpus) or "no NVML utilisation (no GPU)"
    step.detail = f"{record['counts']['done']} done, RTFx {record['rtfx']:.1f} on {record['device']}; {util}"
    return step


def step_bench(args: argparse.Namespace, env: dict[str, str]) -> Step:
    step = Step("bench")
    devices = "cpu" if args.device == "cpu" else "cuda,cpu"
    command = [sys.executable, "-m", "carevoice", "bench", *map(str, args.files), "-m", args.model, "--devices", devices,
               "--compare", "--runs", "1", "--json"]  # fmt: skip
    code, out, err, step.seconds = run(command, env, 900)
    try:
        record = json.loads(out)
    except ValueError:
        step.status, step.detail = "failed", f"exit {code}: {last_line(err)}"
        return step
    step.numbers = {"rows": [{k: r[k] for k in ("mode", "device", "available", "reason", "e2e", "inference")} for r in record["rows"]],
                    "speedups": record["speedups"]}  # fmt: skip
    step.status = "passed" if code == 0 else "failed"
    step.detail = "; ".join(f"{s['label']} {s['measure']} {s['ratio']:.2f}x" for s in record["speedups"]) or "no speedup measured"
    return step


PLAIN_SCRIPT = r"""
import json, sys, time
from faster_whisper import BatchedInferencePipeline, WhisperModel
from carevoice.engine.models import resolve_model
from carevoice.settings import default_cache_dir
model_name, device, sizes, *files = sys.argv[1:]
ref = resolve_model(model_name, default_cache_dir())
model = WhisperModel(ref.load_from, device=device, compute_type="float16" if device == "cuda" else "int8")
def timed(transcribe):
    started = time.perf_counter()
    for f in files:
        segments, info = transcribe(f)
        list(segments)  # the lazy generator is where the work happens
    return time.perf_counter() - started
timed(lambda f: model.transcribe(f, beam_size=5))  # warm-up
rows = {"seq": timed(lambda f: model.transcribe(f, beam_size=5))}
pipeline = BatchedInferencePipeline(model)
for size in map(int, sizes.split(",")):
    rows[f"batched-{size}"] = timed(lambda f: pipeline.transcribe(f, beam_size=5, batch_size=size))
print(json.dumps(rows))
"""


def step_throughput(args: argparse.Namespace, env: dict[str, str], transcribe: Step) -> Step:
    step = Step("throughput vs plain faster-whisper")
    if transcribe.status != "passed":
        step.detail = "transcribe failed: nothing to compare"
        return step
    sizes = "8" if args.device == "cpu" else "8,16,32,64"
    code, out, err, step.seconds = run([sys.executable, "-c", PLAIN_SCRIPT, args.model, args.device, sizes, *map(str, args.files)], env, 900)
    try:
        plain = json.loads(last_line(out))
    except ValueError:
        step.status, step.detail = "failed", f"exit {code}: {last_line(err)}"
        return step
    audio_s, ours = transcribe.numbers["audio_s"], transcribe.numbers["wall_s"]
    rows = {name: {"wall_s": round(s, 3), "rtfx": round(audio_s / s, 2), "carevoice_x": round(s / ours, 2)} for name, s in plain.items()}
    best = min(plain, key=plain.get)  # type: ignore[arg-type]
    step.numbers = {"audio_s": audio_s, "carevoice_wall_s": ours, "plain": rows, "best_plain": best}
    util = [d["util_mean_pct"] for d in ((transcribe.numbers.get("gpu") or {}).get("devices") or []) if d["util_mean_pct"] is not None]
    goals = [f"{rows['seq']['carevoice_x']:.1f}x plain per file (goal {GOAL_X_PLAIN:.0f}x)", f"{rows[best]['carevoice_x']:.2f}x the best plain ({best})"]
    if args.device == "cuda":
        goals.append(f"GPU utilisation {max(util):.0f} % (goal {GOAL_GPU_UTIL_PCT:.0f} %)" if util else "no GPU utilisation reported")
    step.status, step.detail = "passed", "; ".join(goals)  # a measurement: the goals are reported, not enforced
    return step


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# CareVoice GPU acceptance — {result['device']}, model {result['model']}", "",
             f"{result['files']} file(s), {result['started']}; {result['verdict']}", "",
             "| step | status | seconds | detail |", "|---|---|---|---|"]  # fmt: skip
    for s in result["steps"]:
        lines.append(f"| {s['name']} | {s['status']} | {s['seconds']:.1f} | {s['detail'].replace('|', '/')} |")
    plain = next((s["numbers"] for s in result["steps"] if s["name"].startswith("throughput") and s["numbers"]), None)
    if plain:
        lines += ["", f"CareVoice (the CLI, step 3; start-up and model load included): {plain['carevoice_wall_s']:.1f} s for "
                  f"{plain['audio_s']:.1f} s of audio. Plain faster-whisper: the model loaded and warmed up before timing.", "",
                  "| plain faster-whisper | wall s | RTFx | CareVoice × |", "|---|---|---|---|"]  # fmt: skip
        lines += [f"| {name} | {r['wall_s']} | {r['rtfx']} | {r['carevoice_x']} |" for name, r in plain["plain"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a model folder (or tiny.en / base)")
    parser.add_argument("--audio", type=Path, required=True, help="a folder of recordings (short clips)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-acceptance")))
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--wheels", type=Path, help="install the wheels in this folder first (offline)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N files")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.files = sorted(p for p in args.audio.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if args.limit:
        args.files = args.files[: args.limit]
    if not args.files:
        raise SystemExit(f"no recordings under {args.audio}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    with tempfile.TemporaryDirectory(prefix="carevoice-acceptance-") as tmp:
        workdir = Path(tmp)
        if args.wheels:
            site = workdir / "site"
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(site),
                            *map(str, sorted(args.wheels.glob("*.whl")))], check=True)  # fmt: skip
            env["PYTHONPATH"] = os.pathsep.join([str(site), env["PYTHONPATH"]])
        steps = [step_doctor(args, env), step_pytest(args, env)]
        transcribe = step_transcribe(args, env, workdir)
        steps += [transcribe, step_bench(args, env), step_throughput(args, env, transcribe)]
    failed = [s.name for s in steps if s.status == "failed"]
    result = {
        "device": args.device, "model": args.model, "files": len(args.files), "started": started,
        "verdict": f"FAILED: {', '.join(failed)}" if failed else "every step passed or was skipped",
        "steps": [asdict(s) for s in steps],
    }  # fmt: skip
    (args.out / "gpu_acceptance.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    (args.out / "gpu_acceptance.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
