"""Contention gauges for bench/fidelity.py on a shared machine: load average, CPU seconds of our
process tree, busy CPU seconds of the whole machine, and from them the share other tenants used;
the quiet-round filter and the wait for a quiet moment; the environment the child processes get.

No vLLM, no torch (bench/test_bench_fidelity.py checks it); psutil is imported where it is read.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

from fidelity_stats import QUIET_LIMIT


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    from costtax.metering.contention import our_cpus

    return len(our_cpus())


def loadavg() -> list[float] | None:
    """The 1, 5 and 15 min load averages, rounded; None where the OS has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def cpu_env() -> dict[str, str]:
    """The environment VllmEngine sets for itself, for the child processes; PYTHONPATH starts with
    this checkout, so `python -m costtax` in a child runs this costtax, not whichever one the
    virtual environment has installed (an editable install of another checkout, a worktree)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([repo] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != repo])
    for k, v in {
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "VLLM_CPU_OMP_THREADS_BIND": f"{min(cpus)}-{max(cpus)}",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }.items():
        env.setdefault(k, v)
    return env


def tree_cpu_s() -> float | None:
    """user+system CPU seconds of this process and its live descendants (the engine core and
    worker), read outside the timed windows: a contention-robust second view of the overhead."""
    try:
        import psutil

        me = psutil.Process()
        total = 0.0
        for p in [me] + me.children(recursive=True):
            try:
                ct = p.cpu_times()
                total += ct.user + ct.system
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return total
    except Exception:  # noqa: BLE001
        return None


def machine_busy_s() -> float | None:
    """Busy CPU seconds so far of the CPUs this process may run on (/proc/stat; costtax's own
    contention gauge, costtax/metering/contention.py, which every profiled cell records too).
    Minus our process tree's CPU over the same window it gives the CPU the other tenants used."""
    from costtax.metering.contention import busy_cpu_s, our_cpus

    return busy_cpu_s(our_cpus())


def foreign_share(busy_s: float | None, own_cpu_s: float | None, wall_s: float, ncpu: int) -> float | None:
    """Fraction of our CPUs' capacity over a window used by other processes (busy_s: a difference
    of machine_busy_s(); own_cpu_s: ours): costtax.metering.contention.foreign_share."""
    from costtax.metering.contention import foreign_share as share

    return share(busy_s, own_cpu_s, wall_s, ncpu)


def quiet_pairs(raw: Sequence[float], inst: Sequence[float], share_raw: Sequence[float | None], share_inst: Sequence[float | None], limit: float) -> list[int]:
    """Rounds in which neither arm saw other tenants use more than `limit` of the machine."""
    return [i for i, (a, b) in enumerate(zip(share_raw, share_inst)) if a is not None and b is not None and a <= limit and b <= limit]


def wait_for_quiet(max_wait_s: float, limit: float = QUIET_LIMIT, window_s: float = 1.0) -> dict[str, Any]:
    """Before a round: wait (at most max_wait_s) until other tenants use <= limit of the machine
    over a window. Waiting never favours one arm; it only buys more quiet rounds."""
    ncpu = cpu_count()
    t0 = time.perf_counter()
    share = None
    while True:
        b0, c0 = machine_busy_s(), tree_cpu_s()
        time.sleep(window_s)
        b1, c1 = machine_busy_s(), tree_cpu_s()
        if None in (b0, b1, c0, c1):
            return {"waited_s": time.perf_counter() - t0, "share": None}
        share = foreign_share(b1 - b0, c1 - c0, window_s, ncpu)
        waited = time.perf_counter() - t0
        if share <= limit or waited >= max_wait_s:
            return {"waited_s": waited, "share": share}
