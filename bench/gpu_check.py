#!/usr/bin/env python
"""One-shot GPU check of costtax.kernels, bounded by a time budget.

    PYTHONPATH=. python bench/gpu_check.py --out DIR [--budget-s 300] [--dry] [--no-hf] [--skip checks,hf_]

Steps, in order (each appends JSON lines to ``DIR/gpu_check.jsonl`` and flushes them the
moment it finishes, so a run killed at any point leaves everything measured until then):

1. ``env``: card, versions, git commit, arguments;
2. ``checks:<op>``: kernels vs torch references vs independent naive computations
   (bench/gpu_check_correct.py);
3. ``bandwidth``: device copy bandwidth, for the byte floors;
4. ``timing:<shape>``: every kernel vs the best plain-torch expression, GPU time and host
   cost per call, with a visible ``LOSS`` verdict (bench/gpu_check_timing.py);
5. ``crossover``: the threshold the forced-kernel losses suggest for kernels/_crossover.py;
6. ``hf_scoring`` and ``hf_engine``: random-weight models through transformers and through
   costtax's HF engine (bench/gpu_check_hf.py);
7. ``summary``; then ``DIR/gpu_check.json`` holds every record in one document.

Budget: the clock starts before torch is imported. Before each step the remaining budget is
compared with the step's estimate (``STEP_ESTIMATE_S``); a step that does not fit is skipped
and recorded as ``{"step": ..., "skipped": ...}``. A watchdog alarm fires ``WATCHDOG_MARGIN_S``
before the budget ends: the step in flight is recorded as cut and the run ends there.

Exit status: 0 all good; 1 a correctness check failed; 3 a kernel loses to the best torch
expression at some shape (GPU only; the "never lose" target of issue 9); 4 the budget
watchdog cut the run. ``--dry`` (or no CUDA) runs everything on CPU at tiny sizes: kernels in
the Triton interpreter when TRITON_INTERPRET=1 is set before start; its timings and
verdicts say nothing about GPU performance and do not set the exit status.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import os
import platform
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
for _p in (str(REPO), str(BENCH)):  # costtax from this checkout; sibling gpu_check_* modules
    if _p not in sys.path:
        sys.path.insert(0, _p)

# Seconds each step may take, (GPU, dry). GPU figures from the H100/H200 runs of 2026-11-27
# (checks with Triton compiles ~20-40 s each; the HF scoring model ~30 s; the HF engine ~20 s)
# rounded up; dry figures from this 2-core CPU under contention.
STEP_ESTIMATE_S = {
    "checks:reward_head": (40, 20), "checks:judge_head": (60, 30), "checks:group_select": (30, 10),
    "bandwidth": (5, 2), "timing": (15, 15), "crossover": (1, 1), "hf_scoring": (45, 15), "hf_engine": (40, 30),
}
WATCHDOG_MARGIN_S = 3.0
EXIT_CHECK_FAILED, EXIT_KERNEL_LOSES, EXIT_WATCHDOG = 1, 3, 4


class BudgetExceeded(BaseException):
    """Raised by the watchdog alarm; a BaseException so step code cannot swallow it."""


class Recorder:
    """Appends one JSON object per line and flushes (and fsyncs) each one."""

    def __init__(self, path: Path, t0: float, budget_s: float, dry: bool):
        self.path, self.t0, self.deadline, self.dry = path, t0, t0 + budget_s, dry
        self.records: list[dict] = []
        self.current: str | None = None
        self.skip: tuple[str, ...] = ()  # step-name prefixes not to run (--skip)
        self._f = open(path, "a", encoding="utf-8")

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def write(self, rec: dict) -> dict:
        rec = {"t_s": round(self.elapsed(), 3), **rec}
        self._f.write(json.dumps(rec, default=str) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        self.records.append(rec)
        return rec

    def estimate(self, name: str) -> float:
        gpu, dry = STEP_ESTIMATE_S[name.split(":")[0] if name.startswith("timing") else name]
        return dry if self.dry else gpu

    def step(self, name: str, fn: Callable[[], Any], estimate_s: float | None = None) -> list[dict] | None:
        """Run ``fn`` when its estimate fits the remaining budget; record its records (a dict
        or a list of dicts), an error, or the skip."""
        if name.startswith(self.skip):
            self.write({"step": name, "skipped": "--skip"})
            return None
        est = self.estimate(name) if estimate_s is None else estimate_s
        left = self.remaining() - WATCHDOG_MARGIN_S
        if est > left:
            self.write({"step": name, "skipped": f"needs ~{est:.0f} s, {max(left, 0):.0f} s of budget left"})
            return None
        self.current = name
        t = time.monotonic()
        try:
            out = fn()
        except BudgetExceeded:
            raise  # self.current still names the step that was cut
        except Exception as e:
            self.current = None
            self.write({"step": name, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=5),
                        "step_s": round(time.monotonic() - t, 3)})
            return None
        self.current = None
        recs = out if isinstance(out, list) else [out]
        step_s = round(time.monotonic() - t, 3)
        return [self.write({"step": name, "step_s": step_s, **r}) for r in recs]

    def close(self) -> None:
        self._f.close()


def import_kernels():
    """costtax.kernels through costtax's own mapping (installed, or kernels/ of this checkout)."""
    importlib.import_module("costtax")
    return importlib.import_module("costtax.kernels")


def env_info(device) -> dict:
    import torch

    from costtax.provenance import git_commit, versions

    kernels = import_kernels()

    info: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(), "versions": versions(),
        "cuda": torch.version.cuda, "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET"),
        "git_commit": git_commit(REPO), "kernel_path": kernels.kernel_path(torch.empty(0, device=device)),
    }
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(card=torch.cuda.get_device_name(device), sm_count=p.multi_processor_count,
                    memory_gib=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}")
    else:
        info["card"] = platform.processor() or platform.machine() or "cpu"
    return info


def copy_bandwidth(device, dry: bool) -> dict:
    import torch

    n = 16 * 2**20 if dry else 1 << 30
    x = torch.empty(n, dtype=torch.uint8, device=device).fill_(7)
    y = torch.empty_like(x)
    for _ in range(2):
        y.copy_(x)
    times = []
    for _ in range(5 if dry else 20):
        if device.type == "cuda":
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            y.copy_(x)
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e) / 1e3)
        else:
            t = time.perf_counter()
            y.copy_(x)
            times.append(time.perf_counter() - t)
    sec = sorted(times)[len(times) // 2]
    return {"bytes": 2 * n, "seconds": sec, "bytes_per_s": 2 * n / sec, "method": "copy_ of a uint8 buffer, read+write"}


def _fmt_loss(rec: dict, key: str) -> str:
    v = rec[key]
    tag = "ok" if v["never_lose_ok"] else "LOSS"
    return (f"{key} {tag}: gpu {rec['impls'][key.replace('kernel_forced', 'kernel')]['gpu_us']:.1f} vs "
            f"{v['best_torch_gpu']} {v['best_torch_gpu_us']:.1f} us, host "
            f"{rec['impls'][key.replace('kernel_forced', 'kernel')]['host_us']:.1f} vs "
            f"{v['best_torch_host']} {v['best_torch_host_us']:.1f} us")


def summarize(rec: Recorder, dry: bool) -> dict:
    rs = rec.records
    checks = [r for r in rs if r.get("step", "").startswith("checks:") and "passed" in r]
    timings = [r for r in rs if r.get("step", "").startswith("timing:") and "op_auto" in r]
    # The public op is what must never lose: unvalidated, and validated where timed (CUDA).
    losses = [f"{r['op']}@{r['shape']}" + ("" if key == "op_auto" else f"({key})")
              for r in timings for key in ("op_auto", "op_auto_validated")
              if key in r and not r[key]["never_lose_ok"]]
    lines = [f"costtax gpu_check dry_run={dry} elapsed {rec.elapsed():.1f}s"]
    for op in ("reward_head", "judge_head", "group_select"):
        mine = [c for c in checks if c["op"] == op]
        if mine:
            worst = max(c["kernel_vs_reference"]["max_abs_err"] for c in mine)
            lines.append(f"checks {op:13s}: {sum(c['passed'] for c in mine)}/{len(mine)} passed (max |kernel-ref| {worst:.2e})")
    for r in timings:
        lines.append(f"{r['op']:13s} {r['shape']:14s} " + _fmt_loss(r, "op_auto"))
        if "op_auto_validated" in r:
            lines.append(f"{'':28s} " + _fmt_loss(r, "op_auto_validated"))
        if "kernel_forced" in r:
            lines.append(f"{'':28s} " + _fmt_loss(r, "kernel_forced"))
        if r.get("dispatch_vs_kernel", {}).get("hurts"):
            d = r["dispatch_vs_kernel"]
            lines.append(f"{'':28s} DISPATCH HURTS: auto/kernel gpu x{d['auto_over_kernel_gpu']}, "
                         f"host x{d['auto_over_kernel_host']} (review kernels/_crossover.py)")
    for r in rs:
        if "skipped" in r:
            lines.append(f"SKIPPED {r['step']}: {r['skipped']}")
        if "error" in r and r.get("step"):
            lines.append(f"ERROR {r['step']}: {r['error']}")
    checks_ok = all(c["passed"] for c in checks)  # of those that ran; checks_run says how many
    lines.append(f"all checks passed: {checks_ok} ({len(checks)} run)")
    if losses:
        lines.append(("(dry run, meaningless) " if dry else "FAIL ") + "kernel loses to torch at: " + ", ".join(losses))
    else:
        lines.append(f"never-lose target: {'met' if timings else 'not measured'} at {len(timings)} op x shape")
    return {"summary": lines, "all_checks_passed": checks_ok, "checks_run": len(checks),
            "kernel_losses": losses, "timings_run": len(timings),
            "skipped_steps": [r["step"] for r in rs if "skipped" in r]}


def run(args: argparse.Namespace, t_start: float) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    cuda = torch.cuda.is_available() and not args.dry
    dry = not cuda
    device = torch.device("cuda" if cuda else "cpu")
    rec = Recorder(args.out / "gpu_check.jsonl", t_start, args.budget_s, dry)
    rec.skip = tuple(p.strip() for p in args.skip.split(",") if p.strip())
    import_kernels()  # first: a broken kernels mapping fails here, before the watchdog starts

    def on_alarm(signum, frame):
        raise BudgetExceeded()

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(args.budget_s - WATCHDOG_MARGIN_S - rec.elapsed(), 0.01))
    cut = None
    try:
        date = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        env = env_info(device)
        rec.write({"step": "env", "dry_run": dry, "date": date, "device": str(device), "budget_s": args.budget_s,
                   "argv": sys.argv[1:], **env})

        import gpu_check_correct as correct
        import gpu_check_timing as timing

        for op, fn in correct.CHECKS.items():
            rec.step(f"checks:{op}", lambda fn=fn: fn(device, dry))
        bw = rec.step("bandwidth", lambda: copy_bandwidth(device, dry))
        bw_bytes_per_s = bw[0]["bytes_per_s"] if bw else 1e12
        clock = timing.Clock(device, dry)
        heads = timing.DRY_HEAD_SHAPES if dry else timing.GPU_HEAD_SHAPES
        groups = timing.DRY_GROUP_SHAPES if dry else timing.GPU_GROUP_SHAPES
        for shp in heads:
            rec.step(f"timing:{shp['name']}", lambda shp=shp: timing.time_head_shape(shp, device, dry, clock, bw_bytes_per_s))
            if cuda:
                torch.cuda.empty_cache()
        for shp in groups:
            rec.step(f"timing:{shp['name']}", lambda shp=shp: timing.time_group_shape(shp, device, dry, clock))
        rec.step("crossover", lambda: timing.propose_crossover(rec.records, env["card"], date[:10]))
        if args.no_hf:
            rec.write({"step": "hf_scoring", "skipped": "--no-hf"})
            rec.write({"step": "hf_engine", "skipped": "--no-hf"})
        else:
            import gpu_check_hf as hf

            rec.step("hf_scoring", lambda: hf.hf_scoring(device, dry, clock))
            if cuda:
                torch.cuda.empty_cache()
            rec.step("hf_engine", lambda: hf.hf_engine(device, dry))
    except BudgetExceeded:
        cut = rec.current or "between steps"
        rec.write({"step": cut, "cut_by_watchdog": True,
                   "budget_exceeded": f"--budget-s {args.budget_s:g} reached during this step"})
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

    summary = summarize(rec, dry)
    rec.write({"step": "summary", **summary})
    rec.close()
    report = {"tool": "costtax bench/gpu_check.py", "dry_run": dry, "budget_s": args.budget_s,
              "elapsed_s": round(rec.elapsed(), 3), "cut_by_watchdog": cut, "records": rec.records, **summary}
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    print("\n".join(summary["summary"]))
    print(f"wrote {args.out / 'gpu_check.jsonl'} and gpu_check.json")
    if not summary["all_checks_passed"]:
        return EXIT_CHECK_FAILED
    if cut is not None:
        return EXIT_WATCHDOG
    if summary["kernel_losses"] and not dry:
        return EXIT_KERNEL_LOSES
    return 0


def main(argv: list[str] | None = None) -> int:
    t_start = time.monotonic()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="directory for gpu_check.jsonl and gpu_check.json")
    ap.add_argument("--dry", action="store_true", help="CPU at tiny sizes (also the default without CUDA)")
    ap.add_argument("--budget-s", type=float, default=300.0,
                    help="hard limit for the whole run in seconds: steps that do not fit are skipped")
    ap.add_argument("--no-hf", action="store_true", help="skip the transformers / HF engine steps")
    ap.add_argument("--skip", default="", metavar="PREFIXES",
                    help="comma-separated step-name prefixes not to run, e.g. 'checks,hf_' (recorded as skipped)")
    args = ap.parse_args(argv)
    if args.budget_s <= WATCHDOG_MARGIN_S:
        print(f"--budget-s must be > {WATCHDOG_MARGIN_S:g} seconds, got {args.budget_s:g}", file=sys.stderr)
        return 2
    return run(args, t_start)


if __name__ == "__main__":
    sys.exit(main())
