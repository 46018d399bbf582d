"""What a watcher pays per arrival and per walk as its folder grows (issue 22, fault 7).

Builds a drop folder of N transcribed recordings (each a small WAV with its .txt, .json and hidden
record beside it: a folder of 4 N entries), then times, with CareVoice's own functions as the watcher
calls them:
- a walk of the folder once every recording is known (what a polled folder pays every --poll);
- one new arrival's preparation before decoding: its collision check, its plan and the tidying of
  its folder (what each set of files pays before the first byte is decoded).

    python benchmarks/watch_cost.py --files 20000 [--out cost.json]

Runs on any checkout (before and after a change): it asks the functions it calls what they take.
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import tempfile
import time
from pathlib import Path

from carevoice.run.discovery import find_jobs_among
from carevoice.run.planning import plan_files, run_facts
from carevoice.run.tidying import tidy
from carevoice.settings import OutputFormat, TranscribeSettings
from carevoice.watch.arrivals import Arrivals
from carevoice.watch.changes import Changes

WAV_HEADER = bytes.fromhex("524946462400000057415645666d74201000000001000100803e0000007d0000020010006461746100000000")  # 16 kHz mono, no samples


def build(folder: Path, files: int) -> None:
    for index in range(files):
        stem = folder / f"visit-{index:06d}"
        stem.with_suffix(".wav").write_bytes(WAV_HEADER)
        stem.with_suffix(".txt").write_text("x\n")
        stem.with_suffix(".json").write_text("{}\n")
        (folder / f".visit-{index:06d}.carevoice.json").write_text("{}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        inbox = Path(temp) / "inbox"
        inbox.mkdir()
        build(inbox, args.files)
        roots = (inbox,)
        arrivals = Arrivals(settle_s=0.0, incomplete_wait_s=600.0, clock=time.monotonic)
        changes = Changes(roots, True, arrivals, lambda text: None, time.monotonic, poll_s=5.0)
        changes.walk()
        ready, _ = arrivals.due()
        for path in ready:
            arrivals.take(path)  # every recording known and handled, as after the watcher's first set
        walks = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            changes.walk()
            walks.append(time.perf_counter() - started)
        settings = TranscribeSettings(inputs=roots, formats=(OutputFormat.TXT, OutputFormat.JSON))
        facts = run_facts(settings, "tiny.en", None, 0)
        named = {"named": arrivals.siblings} if "named" in inspect.signature(find_jobs_among).parameters else {}
        cleared: dict[Path, float] = {}
        arrival_s = []
        for index in range(args.repeat):
            new = inbox / f"new-{index}.wav"
            new.write_bytes(WAV_HEADER)
            arrivals.observe(new)
            started = time.perf_counter()
            found = find_jobs_among([new], roots, None, **named)
            planned = plan_files(found.jobs, settings, facts)
            if "cleared" in inspect.signature(tidy).parameters:
                cleared.update(dict.fromkeys(tidy(planned, cleared=cleared), 0.0))
            else:
                tidy(planned)
            arrival_s.append(time.perf_counter() - started)
        result = {
            "recordings": args.files,
            "folder_entries": args.files * 4,
            "walk_s_median": round(statistics.median(walks), 4),
            "walk_us_per_recording": round(statistics.median(walks) / args.files * 1e6, 2),
            "arrival_s_first": round(arrival_s[0], 4),
            "arrival_s_median_after_first": round(statistics.median(arrival_s[1:]), 4) if len(arrival_s) > 1 else None,
        }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
