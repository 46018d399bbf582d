"""engine/cpus.py: threads and workers are sized from what the process may really use (its affinity,
its container's cgroup CPU limit), not the host's CPU count (issue 24, section 3)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from carevoice.engine.cpus import CpuBudget, CpuFacts, CpuLimit, cpu_budget, parse_cpu_list, quiet_blas_environment, read_cpu_facts

V2 = CpuLimit(400000, 100000, "cpu.max")
V1 = CpuLimit(250000, 100000, "cpu.cfs_quota_us/cpu.cfs_period_us")


@pytest.mark.parametrize(
    ("facts", "budget"),
    [
        (CpuFacts(64), CpuBudget(64, "64 CPUs")),
        (CpuFacts(64, affinity_cpus=64), CpuBudget(64, "64 CPUs")),
        (CpuFacts(64, limit=V2), CpuBudget(4, "4 CPUs (container limit cpu.max 400000/100000 of 64)")),  # docker --cpus 4
        (CpuFacts(64, affinity_cpus=8, limit=V2), CpuBudget(4, "4 CPUs (container limit cpu.max 400000/100000 of 64)")),
        (CpuFacts(64, affinity_cpus=2, limit=V2), CpuBudget(2, "2 CPUs (affinity 2 of 64)")),  # taskset -c 0,1 in it
        (CpuFacts(64, limit=V1), CpuBudget(2, "2 CPUs (container limit cpu.cfs_quota_us/cpu.cfs_period_us 250000/100000 of 64)")),
        (CpuFacts(64, limit=CpuLimit(50000, 100000, "cpu.max")), CpuBudget(1, "1 CPUs (container limit cpu.max 50000/100000 of 64)")),
        (CpuFacts(2, limit=CpuLimit(800000, 100000, "cpu.max")), CpuBudget(2, "2 CPUs")),  # a limit above the host is no limit
        (CpuFacts(0), CpuBudget(1, "1 CPUs")),  # os.cpu_count() said nothing
    ],
)
def test_the_cpu_budget_is_the_fewest_of_host_affinity_and_quota(facts: CpuFacts, budget: CpuBudget) -> None:
    assert cpu_budget(facts) == budget


@pytest.mark.parametrize(("text", "count"), [("0-3", 4), ("0-3,8,10-11\n", 7), ("5", 1), ("", None), ("x", None)])
def test_a_kernel_cpu_list_is_counted(text: str, count: int | None) -> None:
    assert parse_cpu_list(text) == count


def fake_tree(root: Path, cgroup: str, mountinfo: str, files: dict[str, str], allowed: str = "0-63") -> Path:
    """A /proc/self and /sys/fs/cgroup under ``root``."""
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(cgroup)
    (root / "proc/self/mountinfo").write_text(mountinfo)
    (root / "proc/self/status").write_text(f"Name:\tcarevoice\nCpus_allowed_list:\t{allowed}\n")
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


V2_MOUNT = "31 23 0:28 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
HYBRID_MOUNTS = (  # this CI's machine: cgroup v1 controllers and an empty v2 hierarchy
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
)


def test_a_docker_container_with_cpus_4_gets_4(tmp_path: Path) -> None:
    root = fake_tree(tmp_path, "0::/\n", V2_MOUNT, {"sys/fs/cgroup/cpu.max": "400000 100000\n"})
    facts = read_cpu_facts(root, host_cpus=64)
    assert facts == CpuFacts(64, affinity_cpus=64, limit=V2)
    assert cpu_budget(facts).reason == "4 CPUs (container limit cpu.max 400000/100000 of 64)"


def test_the_tightest_limit_on_the_way_up_the_process_cgroup_wins(tmp_path: Path) -> None:
    """A systemd slice or Kubernetes pod limits a parent; the process's own cgroup may say "max"."""
    files = {
        "sys/fs/cgroup/kubepods/cpu.max": "300000 100000\n",
        "sys/fs/cgroup/kubepods/pod1/cpu.max": "max 100000\n",
        "sys/fs/cgroup/kubepods/pod1/box/cpu.max": "600000 100000\n",
        "sys/fs/cgroup/cpu.max": "max 100000\n",
    }
    root = fake_tree(tmp_path, "0::/kubepods/pod1/box\n", V2_MOUNT, files)
    assert read_cpu_facts(root, host_cpus=64).limit == CpuLimit(300000, 100000, "cpu.max")


def test_no_limit_is_no_limit(tmp_path: Path) -> None:
    root = fake_tree(tmp_path, "0::/\n", V2_MOUNT, {"sys/fs/cgroup/cpu.max": "max 100000\n"}, allowed="0-3")
    assert cpu_budget(read_cpu_facts(root, host_cpus=64)) == CpuBudget(4, "4 CPUs (affinity 4 of 64)")


def test_a_cgroup_v1_quota_is_read_and_minus_one_is_no_limit(tmp_path: Path) -> None:
    cgroup = "4:memory:/x\n1:cpu,cpuacct:/docker/abc\n0::/\n"
    mounts = HYBRID_MOUNTS.replace("rw,cpu\n", "rw,cpu,cpuacct\n")
    files = {"sys/fs/cgroup/cpu/docker/abc/cpu.cfs_quota_us": "250000\n", "sys/fs/cgroup/cpu/docker/abc/cpu.cfs_period_us": "100000\n"}
    root = fake_tree(tmp_path, cgroup, mounts, files)
    assert read_cpu_facts(root, host_cpus=64).limit == V1
    (root / "sys/fs/cgroup/cpu/docker/abc/cpu.cfs_quota_us").write_text("-1\n")
    assert read_cpu_facts(root, host_cpus=64).limit is None


def test_a_hybrid_host_without_limits_uses_its_cpus(tmp_path: Path) -> None:
    files = {"sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1\n", "sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n"}
    root = fake_tree(tmp_path, "1:cpu:/\n2:cpuacct:/\n0::/\n", HYBRID_MOUNTS, files, allowed="0-1")
    assert cpu_budget(read_cpu_facts(root, host_cpus=2)) == CpuBudget(2, "2 CPUs")


def test_without_proc_the_usual_v2_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "sys/fs/cgroup").mkdir(parents=True)
    (tmp_path / "sys/fs/cgroup/cpu.max").write_text("200000 100000\n")
    assert read_cpu_facts(tmp_path, host_cpus=64) == CpuFacts(64, None, CpuLimit(200000, 100000, "cpu.max"))


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to leave one out")
def test_a_process_pinned_to_one_cpu_sizes_its_decode_pool_and_ray_threads_by_one() -> None:
    """Through the public seams, in a child pinned to one CPU: the decode pool, the threads Ray's actors
    get, and the run header's CPU count. (Before: the host's count.)"""
    script = textwrap.dedent(
        """
        import os
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        from carevoice.engine.cpus import cpu_budget_here
        from carevoice.run.distributed import thread_environment
        from carevoice.run.pipeline import default_decode_workers
        print(default_decode_workers(), thread_environment()["OMP_NUM_THREADS"], cpu_budget_here().cpus)
        """
    )
    env = {name: value for name, value in os.environ.items() if name not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1", "1", "1"]


def test_openblas_helpers_are_two_and_told_to_sleep_soon_unless_the_user_said_otherwise() -> None:
    assert quiet_blas_environment({}) == {"OPENBLAS_THREAD_TIMEOUT": "4", "OPENBLAS_NUM_THREADS": "2"}
    assert quiet_blas_environment({"OPENBLAS_THREAD_TIMEOUT": "28", "OPENBLAS_NUM_THREADS": "16"}) == {}
    assert quiet_blas_environment({"OPENBLAS_THREAD_TIMEOUT": "", "OPENBLAS_NUM_THREADS": "1"}) == {"OPENBLAS_THREAD_TIMEOUT": "4"}


def test_the_console_entry_sets_it_before_numpy_loads() -> None:
    """OpenBLAS reads it once, when numpy loads it: the entry point must come first."""
    script = (
        "import os, sys\nfrom carevoice.cli.app import main\nloaded = 'numpy' in sys.modules\nsys.argv = ['carevoice', '--version']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\nprint(loaded, os.environ.get('OPENBLAS_THREAD_TIMEOUT'), os.environ.get('OPENBLAS_NUM_THREADS'))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_THREAD_TIMEOUT", "OPENBLAS_NUM_THREADS")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120, check=True)
    assert done.stdout.splitlines()[-1] == "False 4 2"
