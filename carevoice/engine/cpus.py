"""How many CPUs this process may really use: its affinity and its container's CPU limit (cgroup v2
``cpu.max``, v1 ``cpu.cfs_quota_us``), not the host's count. CTranslate2's threads, the decode
pool and Ray's actors are sized from it; on a 64-core host a container run with ``--cpus 4`` would
otherwise start 16 times the threads it may run. Nothing here prints.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


@dataclass(frozen=True)
class CpuLimit:
    """A cgroup's CPU bandwidth limit: ``quota_us`` of CPU time every ``period_us``, read from ``source``."""

    quota_us: int
    period_us: int
    source: str

    @property
    def cpus(self) -> float:
        return self.quota_us / self.period_us


@dataclass(frozen=True)
class CpuFacts:
    """What decides the budget: the host's CPUs, those the process may run on, its tightest cgroup limit."""

    host_cpus: int
    affinity_cpus: int | None = None
    limit: CpuLimit | None = None


@dataclass(frozen=True)
class CpuBudget:
    """How many CPUs to size threads and workers by, and why (for the run header)."""

    cpus: int
    reason: str


def cpu_budget(facts: CpuFacts) -> CpuBudget:
    """The CPUs a process may really use: the fewest of host, affinity and cgroup quota (whole CPUs,
    rounded down as Go's automaxprocs does, at least one: threads beyond the quota are throttled)."""
    host = max(1, facts.host_cpus)
    budget = CpuBudget(host, f"{host} CPUs")
    if facts.affinity_cpus is not None and facts.affinity_cpus < budget.cpus:
        budget = CpuBudget(max(1, facts.affinity_cpus), f"{max(1, facts.affinity_cpus)} CPUs (affinity {facts.affinity_cpus} of {host})")
    if facts.limit is not None and facts.limit.quota_us > 0 and facts.limit.period_us > 0:
        quota_cpus = max(1, int(facts.limit.cpus))
        if quota_cpus < budget.cpus:
            limit = facts.limit
            budget = CpuBudget(
                quota_cpus, f"{quota_cpus} CPUs (container limit {limit.source} {limit.quota_us}/{limit.period_us} of {host})"
            )
    return budget


def parse_cpu_list(text: str) -> int | None:
    """How many CPUs a kernel CPU list names (``0-3,8`` -> 5); None when it cannot be read."""
    count = 0
    try:
        for part in text.strip().split(","):
            first, _, last = part.partition("-")
            count += int(last or first) - int(first) + 1
    except ValueError:
        return None
    return count or None


def parse_cpu_max(text: str, source: str = "cpu.max") -> CpuLimit | None:
    """cgroup v2 ``cpu.max`` (``400000 100000``; ``max 100000`` is no limit)."""
    fields = text.split()
    if len(fields) != 2 or not fields[0].isdigit() or not fields[1].isdigit():
        return None
    return CpuLimit(int(fields[0]), int(fields[1]), source)


def read_cpu_facts(root: Path = Path("/"), host_cpus: int | None = None) -> CpuFacts:
    """Read the facts from ``root``'s /proc and /sys (a fake tree in tests).

    Args:
        root: Where /proc and /sys are.
        host_cpus: The host's CPU count (default: os.cpu_count()).
    """
    status = _read(root / "proc/self/status")
    allowed = [line.split(":", 1)[1] for line in status.splitlines() if line.startswith("Cpus_allowed_list:")]
    limits = [limit for limit in _cgroup_limits(root) if limit.quota_us > 0 and limit.period_us > 0]
    return CpuFacts(
        host_cpus=host_cpus if host_cpus is not None else os.cpu_count() or 1,
        affinity_cpus=parse_cpu_list(allowed[0]) if allowed else None,
        limit=min(limits, key=lambda limit: limit.cpus, default=None),
    )


@functools.cache
def cpu_budget_here() -> CpuBudget:
    """This process's budget, read once (limits do not change under a running process often enough
    to re-read /proc for every engine)."""
    return cpu_budget(read_cpu_facts())


# OpenBLAS's idle helper threads spin 2**n cycles after each matrix product before they sleep (n = 28
# unless told). The log-mel features are many tiny products from several decode threads, and at 28
# the spinning costs 6 times the products themselves; 4, its least, leaves every bit of them as it
# was (benchmarks/README.md, tenth session).
BLAS_THREAD_TIMEOUT = "4"
# Unset, OpenBLAS splits each product over every CPU, and the features' last bits differ with every
# thread count (1, 2, 3, 4, 8 and 16 threads: six different results, eleventh session) — so a 16-core
# host's words differed from a 2-core one's, and 16 threads spun for each product of a few hundred
# microseconds. Two threads: one result on every host with two CPUs or more, the same as unset on
# two (CI, this project's benchmarks); the CPU side's parallelism is its decode threads.
BLAS_THREADS = "2"


def quiet_blas_environment(env: Mapping[str, str]) -> dict[str, str]:
    """What to add to the environment before numpy loads OpenBLAS: ``OPENBLAS_THREAD_TIMEOUT`` and
    ``OPENBLAS_NUM_THREADS``, each unless it is set."""
    wanted = {"OPENBLAS_THREAD_TIMEOUT": BLAS_THREAD_TIMEOUT, "OPENBLAS_NUM_THREADS": BLAS_THREADS}
    return {name: value for name, value in wanted.items() if not env.get(name)}


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def _cgroup_limits(root: Path) -> list[CpuLimit]:
    """Every CPU limit on the process's cgroup and its ancestors, v2 and v1, else the usual v2 file."""
    cgroups = [line.split(":", 2) for line in _read(root / "proc/self/cgroup").splitlines() if line.count(":") >= 2]
    limits: list[CpuLimit] = []
    for mount_root, mount_point, fstype, options in _cgroup_mounts(root):
        for _, controllers, path in cgroups:
            if fstype == "cgroup2" and controllers == "":
                names = ("cpu.max",)
            elif fstype == "cgroup" and "cpu" in controllers.split(",") and "cpu" in options:
                names = ("cpu.cfs_quota_us", "cpu.cfs_period_us")
            else:
                continue
            for folder in _folders(root, mount_root, mount_point, path):
                limits.extend(_limit_in(folder, names))
    if not cgroups or not limits:
        limits.extend(_limit_in(root / "sys/fs/cgroup", ("cpu.max",)))
    return limits


def _cgroup_mounts(root: Path) -> list[tuple[str, str, str, set[str]]]:
    """(mount root, mount point, fs type, super options) of each cgroup mount in mountinfo."""
    mounts = []
    for line in _read(root / "proc/self/mountinfo").splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
            mounts.append((fields[3], fields[4], tail[0], set(tail[2].split(","))))
    return mounts


def _folders(root: Path, mount_root: str, mount_point: str, cgroup_path: str) -> list[Path]:
    """The process's cgroup folder under a mount, then each ancestor up to the mount point."""
    inside = PurePosixPath(cgroup_path)
    try:
        relative = inside.relative_to(mount_root)
    except ValueError:  # a cgroup outside what this mount shows (another namespace)
        relative = PurePosixPath(".")
    base = root / mount_point.lstrip("/")
    parts = [part for part in relative.parts if part not in ("/", ".")]
    return [base.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def _limit_in(folder: Path, names: tuple[str, ...]) -> list[CpuLimit]:
    if names == ("cpu.max",):
        limit = parse_cpu_max(_read(folder / "cpu.max"))
        return [limit] if limit else []
    quota, period = (_read(folder / name).strip() for name in names)
    if quota.isdigit() and period.isdigit():  # -1 is no limit
        return [CpuLimit(int(quota), int(period), "cpu.cfs_quota_us/cpu.cfs_period_us")]
    return []
