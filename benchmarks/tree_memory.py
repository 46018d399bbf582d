"""Peak memory of a command and every process it starts (issue 24 §1): the CLI with its decode workers
or ffmpeg programs, sampled while it runs.

    python benchmarks/tree_memory.py -- carevoice transcribe $(cat clips.txt) -o out -f txt,srt,json -m base --device cpu

Prints one JSON line: wall and CPU seconds (sys apart), the command's own peak RSS (``peak_main_mb``), the
peak of its RSS summed with every descendant's (``peak_tree_mb``; pages two processes share count
twice) and the peak of the tree's PSS (``peak_tree_pss_mb``; shared pages split between their
processes: what the tree really holds). RSS every 20 ms, PSS every 200 ms (/proc/PID/smaps_rollup costs
more). A thread's children are listed under its own task, so every task of every process is asked.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

RSS_EVERY_S = 0.02
PSS_EVERY = 10  # samples


def _field_kib(path: str, name: str) -> int:
    try:
        with open(path, encoding="ascii") as status:
            for line in status:
                if line.startswith(name):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """pid and every process below it, children of any of its threads included."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children", encoding="ascii") as children:
                    todo.extend(int(child) for child in children.read().split())
            except OSError:
                pass
    return found


def main() -> None:
    argv = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:]
    if not argv:
        raise SystemExit(__doc__)
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_main = peak_tree = peak_pss = samples = 0
    while proc.poll() is None:
        tree = descendants(proc.pid)
        rss = [_field_kib(f"/proc/{pid}/status", "VmRSS:") for pid in tree]
        peak_main, peak_tree = max(peak_main, rss[0]), max(peak_tree, sum(rss))
        samples += 1
        if samples % PSS_EVERY == 0:
            peak_pss = max(peak_pss, sum(_field_kib(f"/proc/{pid}/smaps_rollup", "Pss:") for pid in tree))
        time.sleep(RSS_EVERY_S)
    errors = proc.stderr.read().decode(errors="replace")[-500:] if proc.stderr else ""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({
        "rc": proc.returncode, "wall_s": round(time.monotonic() - started, 1),
        "cpu_s": round(used.ru_utime + used.ru_stime, 1), "sys_s": round(used.ru_stime, 1),
        "peak_main_mb": peak_main // 1024, "peak_tree_mb": peak_tree // 1024, "peak_tree_pss_mb": peak_pss // 1024,
        "errors": errors if proc.returncode else "",
    }))  # fmt: skip


if __name__ == "__main__":
    main()
