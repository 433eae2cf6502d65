"""Served judge vs in-process judge on this machine: same rewards? which is cheaper per scored pair?

    flock /tmp/costtax-heavy.lock env PYTHONPATH=$PWD .venv/bin/python bench/served_reward.py measure \
        bench/results/served-reward-cpu-DATE.json
    PYTHONPATH=$PWD .venv/bin/python bench/served_reward.py render bench/results/served-reward-cpu-DATE.json
    PYTHONPATH=$PWD .venv/bin/python bench/served_reward.py readme [--check]   # README's table from RESULT

`measure` starts vLLM's OpenAI server for the embedded judge model exactly as `--serve` does
(fp32, eager, block 32, prefix caching, 1 GiB KV cache), scores the workloads through
`--reward-model served` (costtax.rewards.served.ServedJudge), then loads the in-process judge
(`--reward-model judge`: transformers, instructions' KV cached at load, best-of-N group prefix
computed once) and scores the same workloads. Per workload and scorer: one untimed warm-up
call, then ROUNDS timed `score()` calls over all its pairs; wall seconds and CPU seconds (this
process plus, for the server, every process of its group, from /proc) per scored pair.

Workloads: `pairs`: the shipped good/bad pairs (32 prompts x 2 responses); `bon8`: 8 shipped
helpful prompts x 8 responses each (a best-of-8 batch). `render` prints the README table.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

ROUNDS = 3


def _group_cpu_s(pgid: int | None) -> float:
    """utime + stime of this process, plus of every live process of group `pgid`."""
    tick = os.sysconf("SC_CLK_TCK")
    total = sum(os.times()[:2])  # this process (user + system)
    if pgid is None:
        return total
    from costtax.engines.serve import group_stat_fields

    for f in group_stat_fields(pgid):
        total += (int(f[11]) + int(f[12])) / tick
    return total


def workloads() -> dict[str, tuple[list[str], list[str]]]:
    from costtax.rewards.calibration import load_judge_pairs

    pairs = load_judge_pairs()
    out = {"pairs": ([p["prompt"] for p in pairs] * 2, [p["good"] for p in pairs] + [p["bad"] for p in pairs])}
    helpful = [json.loads(x)["prompt"] for x in (Path(__file__).parents[1] / "costtax/prompts/data/helpful.jsonl").read_text().splitlines()[:8]]
    pool = [p["good"] for p in pairs] + [p["bad"] for p in pairs]
    prompts, responses = [], []
    for i, q in enumerate(helpful):
        for k in range(8):
            prompts.append(q)
            responses.append(pool[(8 * i + k) % len(pool)])
    out["bon8"] = (prompts, responses)
    return out


def _time(scorer, prompts, responses, pgid) -> dict:
    scorer.score(prompts, responses)  # warm-up (server: prefix cache; in-process: allocator)
    walls, cpus, batch = [], [], None
    for _ in range(ROUNDS):
        c0, t0 = _group_cpu_s(pgid), time.perf_counter()
        batch = scorer.score(prompts, responses)
        walls.append(time.perf_counter() - t0)
        cpus.append(_group_cpu_s(pgid) - c0)
    n = len(prompts)
    return {
        "pairs": n,
        "wall_s_per_pair_median": statistics.median(walls) / n,
        "wall_s_per_pair_min": min(walls) / n,
        "cpu_s_per_pair_median": statistics.median(cpus) / n,
        "tokens_per_pair": sum(batch.tokens) / n,
        "cached_tokens_per_pair": (sum(batch.cached_tokens) / n) if batch.cached_tokens else None,
        "rewards": list(batch.rewards),
    }


def measure(out: Path) -> dict:
    from costtax import provenance
    from costtax.engines.serve import ServedVllm
    from costtax.model_files import DEFAULT_MODEL, resolve_model
    from costtax.rewards import make_reward_model

    model_dir = resolve_model(DEFAULT_MODEL)
    work = workloads()
    result: dict = {"model": DEFAULT_MODEL, "model_dir": str(model_dir), "rounds": ROUNDS, "started_at": provenance.now_iso(),
                    "machine": provenance.machine(), "versions": provenance.versions(), "served": {}, "in_process": {}}
    log = out.with_suffix(".server.log")
    with ServedVllm(model_dir, log, seed=0, max_model_len=2048) as served:
        result["server_start_s"] = served.start_s
        result["server_command"] = served.command

        class Policy:
            base_url, model, tokenizer_dir = served.base_url, served.model_name, str(model_dir)

        judge = make_reward_model("served", policy=Policy())
        judge.load()
        for name, (p, r) in work.items():
            result["served"][name] = _time(judge, p, r, served.pgid)
            print(name, "served", {k: v for k, v in result["served"][name].items() if k != "rewards"}, flush=True)
        result["served_provenance"] = judge.provenance()
        judge.close()
    local = make_reward_model("judge")
    result["in_process_load_s"] = local.load()
    for name, (p, r) in work.items():
        result["in_process"][name] = _time(local, p, r, None)
        print(name, "in-process", {k: v for k, v in result["in_process"][name].items() if k != "rewards"}, flush=True)
    prov = local.provenance()
    result["in_process_provenance"] = {k: prov.get(k) for k in ("name", "dtype", "prefix_cache", "group_prefix", "kernel_path", "batching_mode")}
    local.close()
    result["agreement"] = agreement(result)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    return result


def agreement(result: dict) -> dict:
    """Largest |served - in-process| reward per workload, and pair verdicts on `pairs`."""
    out = {}
    for name in result["served"]:
        a, b = result["served"][name]["rewards"], result["in_process"][name]["rewards"]
        out[f"{name}_max_abs_diff"] = max(abs(x - y) for x, y in zip(a, b))
    a, b = result["served"]["pairs"]["rewards"], result["in_process"]["pairs"]["rewards"]
    n = len(a) // 2
    va = [a[i] > a[n + i] for i in range(n)]
    vb = [b[i] > b[n + i] for i in range(n)]
    out["pairs_n"] = n
    out["pair_verdicts_identical"] = va == vb
    out["pairs_accuracy_served"] = sum(va) / n
    out["pairs_accuracy_in_process"] = sum(vb) / n
    out["smallest_in_process_margin"] = min(abs(b[i] - b[n + i]) for i in range(n))
    return out


def render(result: dict) -> str:
    """The README table (markdown) from a measure() JSON."""
    ag = result["agreement"]
    lines = [
        "| workload | scorer | wall ms per pair (median of %d) | CPU ms per pair | tokens read per pair | of which cached |" % result["rounds"],
        "|---|---|---|---|---|---|",
    ]
    for name in result["served"]:
        for label, key in (("in-process (HF, shared prefix)", "in_process"), ("served (vLLM server)", "served")):
            r = result[key][name]
            cached = "—" if r["cached_tokens_per_pair"] is None else f"{r['cached_tokens_per_pair']:.0f}"
            lines.append(f"| {name} ({r['pairs']} pairs) | {label} | {1000 * r['wall_s_per_pair_median']:.1f} | "
                         f"{1000 * r['cpu_s_per_pair_median']:.1f} | {r['tokens_per_pair']:.0f} | {cached} |")
    lines.append("")
    for name in result["served"]:
        srv, loc = result["served"][name], result["in_process"][name]
        w, c = srv["wall_s_per_pair_median"] / loc["wall_s_per_pair_median"], srv["cpu_s_per_pair_median"] / loc["cpu_s_per_pair_median"]
        cheaper = "in-process" if c > 1 else "served"
        lines.append(f"- {name}: cheaper per scored pair: **{cheaper}** (served/in-process: {w:.2f}x wall, {c:.2f}x CPU).")
    lines.append("")
    lines.append(f"Largest reward difference served vs in-process: {ag['pairs_max_abs_diff']:.2g} (pairs), "
                 f"{ag['bon8_max_abs_diff']:.2g} (bon8) logits; pair verdicts identical: {ag['pair_verdicts_identical']} "
                 f"({ag['pairs_accuracy_served'] * ag['pairs_n']:.0f}/{ag['pairs_n']} served, {ag['pairs_accuracy_in_process'] * ag['pairs_n']:.0f}/{ag['pairs_n']} in-process; smallest in-process margin {ag['smallest_in_process_margin']:.2g}).")
    return "\n".join(lines)


ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench/results/served-reward-cpu-2026-12-02.json"
BEGIN = "<!-- served-reward: generated by bench/served_reward.py readme from bench/results/served-reward-cpu-2026-12-02.json -->"
END = "<!-- /served-reward -->"
PAGE = ROOT / "docs" / "techniques-and-reward-models.md"  # the page that holds the table (was README.md)


def readme_section(readme: str) -> str:
    return readme.partition(BEGIN)[2].partition(END)[0].strip("\n")


def readme(check: bool) -> int:
    path = PAGE
    old = path.read_text(encoding="utf-8")
    head, sep, rest = old.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        sys.exit(f"{PAGE} lacks the markers {BEGIN} ... {END}")
    new = head + BEGIN + "\n" + render(json.loads(RESULT.read_text())) + "\n" + END + tail
    if check:
        return int(new != old)
    path.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "readme":
        sys.exit(readme("--check" in sys.argv))
    path = Path(sys.argv[2])
    if cmd == "measure":
        measure(path)
        print(render(json.loads(path.read_text())))
    elif cmd == "render":
        print(render(json.loads(path.read_text())))
    else:
        sys.exit(f"usage: {sys.argv[0]} measure|render FILE.json")
