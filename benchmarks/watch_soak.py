"""A soak of `carevoice watch`: recordings arrive for a long time, the way a care app uploads them;
the watcher's memory (RSS) is sampled and each file's latency measured.

Arrivals: every ``--every`` seconds a burst of 1…8 files (cycling), English corpus clips under
new names in one folder per hour of the day; half are written under a hidden name and renamed into
place, half written in place in four pieces. A file's latency is from the moment its upload is
complete (renamed, or its last piece written) to the moment its JSON output exists, measured by this
driver (looking every 0.1 s). RSS is the watcher's VmRSS from /proc, every 10 s. At the end the
watcher is stopped with SIGTERM, and its day report and every output are checked: each file
transcribed exactly once, nothing failed.

Usage: python benchmarks/watch_soak.py --minutes 60 --out /tmp/soak   (writes soak.json and soak.md there)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import corpus_clips

# Mean RSS of the last sixth over the third sixth that a soak allows (tests/watch/test_watch_soak.py):
# measured 1.056 (an hour, before malloc_trim), 1.139 (40 min, with it, the machine busy with other
# work for a part).
RSS_GROWTH_LIMIT = 1.25


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def slope_mib_per_h(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of RSS over time."""
    if len(samples) < 2:
        return 0.0
    xs, ys = [t / 3600 for t, _ in samples], [r for _, r in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def rss_growth(samples: list[tuple[float, float]]) -> float:
    """Mean RSS of the last sixth of the span over that of its third sixth (warm by then): 1.0 is flat.

    Args:
        samples: (seconds since the watcher started, MiB), in time order.
    """
    span = samples[-1][0] if samples else 0.0
    third = [r for t, r in samples if span * 2 / 6 <= t < span * 3 / 6]
    last = [r for t, r in samples if t >= span * 5 / 6]
    return statistics.fmean(last) / statistics.fmean(third) if third and last else float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--every", type=float, default=8.0, help="seconds between bursts")
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--settle", default="2s")
    parser.add_argument("--gather", default="1s")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    clips = corpus_clips({"en"}, max_s=30)
    work = Path(tempfile.mkdtemp(prefix="carevoice-soak-", dir=args.out))
    inbox, reports = work / "inbox", work / "reports"
    inbox.mkdir()
    log = open(args.out / "watcher.log", "w")  # noqa: SIM115  (the watcher writes it until the end)
    watcher = subprocess.Popen(
        [sys.executable, "-m", "carevoice", "watch", str(inbox), "-m", args.model, "--device", "cpu", "-f", "txt,json",
         "--settle", args.settle, "--gather", args.gather, "--report-dir", str(reports), "--heartbeat", str(work / "heartbeat.json")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
    )  # fmt: skip
    started = time.monotonic()
    rss: list[tuple[float, float]] = []
    stop_sampling = threading.Event()

    def sample() -> None:
        while not stop_sampling.wait(10.0):
            if (value := rss_mib(watcher.pid)) is not None:
                rss.append((time.monotonic() - started, value))

    threading.Thread(target=sample, daemon=True).start()
    time.sleep(15)  # the model loads
    latencies: list[tuple[float, int]] = []
    pending: dict[Path, tuple[float, int]] = {}
    end = time.monotonic() + args.minutes * 60
    burst_sizes, n, next_burst = [1, 2, 4, 8, 1, 3, 1, 6], 0, time.monotonic()
    while time.monotonic() < end or pending:
        now = time.monotonic()
        if now >= next_burst and now < end:
            size = burst_sizes[(n // 1) % len(burst_sizes)]
            folder = inbox / f"hour-{int((now - started) // 3600):02}"
            folder.mkdir(exist_ok=True)
            for _ in range(size):
                clip = clips[n % len(clips)]
                target = folder / f"visit-{n:05}{clip.path.suffix}"
                data = clip.path.read_bytes()
                if n % 2:
                    hidden = folder / f".{target.name}.part"
                    hidden.write_bytes(data)
                    os.rename(hidden, target)
                else:
                    with open(target, "wb") as handle:
                        for i in range(4):
                            handle.write(data[i * len(data) // 4 : (i + 1) * len(data) // 4])
                            handle.flush()
                            time.sleep(0.05)
                pending[target.with_suffix(".json")] = (time.monotonic(), size)
                n += 1
            next_burst = now + args.every
        for output in [p for p in pending if p.exists()]:
            at, size = pending.pop(output)
            latencies.append((time.monotonic() - at, size))
        if watcher.poll() is not None:
            break
        if time.monotonic() > end + 600:
            break  # files that never came: reported below
        time.sleep(0.1)
    stop_sampling.set()
    stopping = time.monotonic()
    watcher.send_signal(signal.SIGTERM)
    code = watcher.wait(timeout=120)
    stop_s = time.monotonic() - stopping
    day_reports = sorted(reports.glob("carevoice-watch-*.json"))
    done = failed = 0
    files: dict[str, int] = {}
    for report in day_reports:
        data = json.loads(report.read_text())
        done += data["counts"]["done"]
        failed += data["counts"]["failed"] + data["counts"].get("tried_again", 0)  # not even a failure tried again later
        for line in (reports / data["files"]).read_text().splitlines():
            entry = json.loads(line)
            files[entry["file"]] = files.get(entry["file"], 0) + 1
    warm = [r for t, r in rss if t >= 300] or [r for _, r in rss]
    growth = rss_growth(rss)
    half = [(t, r) for t, r in rss if t >= (rss[-1][0] / 2 if rss else 0)]
    lat = [s for s, _ in latencies]
    lat_alone = [s for s, size in latencies if size == 1]
    lat_burst = [s for s, size in latencies if size >= 6]
    result = {
        "minutes": args.minutes,
        "files_uploaded": n,
        "files_done": done,
        "files_failed": failed,
        "files_done_twice": sum(c > 1 for c in files.values()),
        "files_never_done": len(pending),
        "watcher_exit": code,
        "stop_after_sigterm_s": round(stop_s, 2),
        "settle": args.settle,
        "gather": args.gather,
        "latency_s": {
            "p50": round(percentile(lat, 0.5), 2),
            "p95": round(percentile(lat, 0.95), 2),
            "max": round(max(lat, default=float("nan")), 2),
        },
        "latency_alone_s": {"p50": round(percentile(lat_alone, 0.5), 2), "p95": round(percentile(lat_alone, 0.95), 2)},
        "latency_burst_6_8_s": {"p50": round(percentile(lat_burst, 0.5), 2), "p95": round(percentile(lat_burst, 0.95), 2)},
        "rss_mib": {
            "first": round(rss[0][1], 1) if rss else None,
            "after_5_min": round(warm[0], 1) if warm else None,
            "last": round(rss[-1][1], 1) if rss else None,
            "max": round(max(r for _, r in rss), 1) if rss else None,
            "slope_second_half_mib_per_h": round(slope_mib_per_h(half), 1),
            "last_sixth_over_third_sixth": round(growth, 3),
            "limit": RSS_GROWTH_LIMIT,
            "samples": len(rss),
        },
        "rss_series": [(round(t), round(r, 1)) for t, r in rss],
    }
    (args.out / "soak.json").write_text(json.dumps(result, indent=2))
    md = [
        f"# watch soak: {args.minutes:g} min, {n} files, {args.model} on CPU",
        "",
        f"- transcribed {done}, failed {failed}, twice {result['files_done_twice']}, never {len(pending)}; exit {code}, stopped {stop_s:.2f} s after SIGTERM",
        (
            f"- latency (upload complete → JSON written), settle {args.settle}, gather {args.gather}: p50 {result['latency_s']['p50']} s, "
            f"p95 {result['latency_s']['p95']} s, max {result['latency_s']['max']} s; a file alone p50 {result['latency_alone_s']['p50']} s; "
            f"in bursts of 6–8 p50 {result['latency_burst_6_8_s']['p50']} s"
        ),
        (
            f"- RSS: {result['rss_mib']['first']} MiB at first, {result['rss_mib']['after_5_min']} MiB after 5 min, "
            f"{result['rss_mib']['last']} MiB at the end (max {result['rss_mib']['max']}); second-half slope "
            f"{result['rss_mib']['slope_second_half_mib_per_h']} MiB/h over {len(rss)} samples; mean of the last sixth / the third "
            f"sixth {result['rss_mib']['last_sixth_over_third_sixth']}"
        ),
    ]
    (args.out / "soak.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
