"""The typer CLI: parse flags, build a RunConfig, call one function. No torch/vllm imports here.

What `profile` prints (costtax/console/display.py): a live line per long phase and a bar per cell on a
terminal (start and end lines off one), then the table fitted to the terminal
(costtax/report/fit.py; --wide or off a terminal: complete); engine and library output goes to
RUN_DIR/engine.log (`-v` shows it too).
"""
from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import List, Optional

import typer

from .config import DEFAULT_TECHNIQUES, ENGINE_NAMES, RunConfig
from .errors import CosttaxError
from .load.levels import DEFAULT_LABEL
from .model_files import DEFAULT_MODEL
from .prompts import PUBLIC, SHIPPED

app = typer.Typer(
    add_completion=False,
    no_args_is_help=False,
    help="costtax: what inference-time alignment (best-of-N, Constitutional AI) costs, and what it buys.",
)
_WIDE_HELP = "every table column on one line, however wide (default: fit the terminal)"
# profile's flags that are not RunConfig fields
_NOT_CONFIG = ("resume", "verbose", "wide", "no_prefix_caching", "no_judge_calibration", "no_oversaturation_stop")


def _err(msg: str) -> None:
    typer.echo(f"costtax: error: {msg}", err=True)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="show tracebacks")):
    """--debug is read by main(), which prints the traceback of an error it reports."""


# `costtax profile --help` groups its options in these panels (typer rich_help_panel); a new
# option goes in the panel of its job. Each help is one short line; typer shows the default.
PANEL_MODEL = "Model & engine"
PANEL_TECHNIQUES = "Techniques & prompts"
PANEL_REWARDS = "Reward models"
PANEL_LOAD = "Load & SLO"
PANEL_SERVING = "Serving"
PANEL_OUTPUT = "Output & resume"
PANEL_MEASUREMENT = "Measurement"
# On/off flags whose default is on show only their --no- form (the other form still works,
# hidden): a "--x/--no-x" pair is wider than the 80-column help can spare.
_NEGATED = {"no_prefix_caching": "prefix_caching", "no_judge_calibration": "judge_calibration",
            "no_oversaturation_stop": "oversaturation_stop"}


def _examples(*lines: str) -> str:
    """A command's help epilog: two or three examples, one per line."""
    return "Examples:\n" + "\n".join(f"  {line}" for line in lines)


@app.command(epilog=_examples(
    "costtax profile                              # plain, bon:n=4, cai:rounds=1",
    "costtax profile -t plain -t bon:n=1,4,16 --limit 8",
    "costtax profile --serve --load concurrency=1,4",
))
def profile(
    ctx: typer.Context,
    model: str = typer.Option(DEFAULT_MODEL, "--model", metavar="MODEL", rich_help_panel=PANEL_MODEL,
                              help="HF model directory or embedded alias"),
    engine: str = typer.Option(ENGINE_NAMES[0], "--engine", metavar="NAME", rich_help_panel=PANEL_MODEL,
                               help=" | ".join(ENGINE_NAMES)),
    max_model_len: int = typer.Option(2048, "--max-model-len", metavar="N", rich_help_panel=PANEL_MODEL,
                                      help="context length the engine allocates"),
    no_prefix_caching: bool = typer.Option(False, "--no-prefix-caching", rich_help_panel=PANEL_MODEL,
                                           help="turn the engine's prefix cache off"),
    prefix_caching: Optional[bool] = typer.Option(None, "--prefix-caching", hidden=True),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", rich_help_panel=PANEL_MODEL,
                                           help="allow a model repo's own code"),
    technique: Optional[List[str]] = typer.Option(
        None, "--technique", "-t", metavar="SPEC", rich_help_panel=PANEL_TECHNIQUES,
        help="repeatable, e.g. bon:n=1,4,16 (default: plain, bon:n=4, cai:rounds=1)",
    ),
    prompts: Optional[List[str]] = typer.Option(
        None, "--prompts", "-p", metavar="SET", rich_help_panel=PANEL_TECHNIQUES,
        help=f"repeatable: {' | '.join(SHIPPED)} | {' | '.join(PUBLIC)} | FILE.jsonl (default: helpful)",
    ),
    limit: Optional[int] = typer.Option(None, "--limit", metavar="K", rich_help_panel=PANEL_TECHNIQUES,
                                        help="first K prompts of each source (default: 8 of a shipped set, a file whole)"),
    repeats: int = typer.Option(1, "--repeats", metavar="K", rich_help_panel=PANEL_TECHNIQUES,
                                help="final answers per prompt"),
    max_tokens: int = typer.Option(64, "--max-tokens", metavar="N", rich_help_panel=PANEL_TECHNIQUES,
                                   help="new tokens per generation"),
    temperature: float = typer.Option(0.7, "--temperature", metavar="T", rich_help_panel=PANEL_TECHNIQUES,
                                      help="sampling temperature, every technique"),
    top_p: float = typer.Option(1.0, "--top-p", metavar="P", rich_help_panel=PANEL_TECHNIQUES,
                                help="nucleus sampling, every technique"),
    seed: int = typer.Option(0, "--seed", metavar="N", rich_help_panel=PANEL_TECHNIQUES, help="sampling seed"),
    constitution: Optional[str] = typer.Option(None, "--constitution", metavar="FILE", rich_help_panel=PANEL_TECHNIQUES,
                                               help="YAML/JSON principles for cai"),
    reward_model: str = typer.Option("judge", "--reward-model", metavar="SPEC", rich_help_panel=PANEL_REWARDS,
                                     help="judge[:MODEL] | scalar:DIR | served | openai:URL[,kind=scalar]"),
    eval_reward_model: Optional[str] = typer.Option(
        None, "--eval-reward-model", metavar="SPEC", rich_help_panel=PANEL_REWARDS,
        help="independent scorer of final answers; none: skip (default: the reward model, as a proxy)",
    ),
    no_judge_calibration: bool = typer.Option(False, "--no-judge-calibration", rich_help_panel=PANEL_REWARDS,
                                              help="skip the judge's accuracy check at start"),
    judge_calibration: Optional[bool] = typer.Option(None, "--judge-calibration", hidden=True),
    score_max_pairs: int = typer.Option(64, "--score-max-pairs", metavar="N", rich_help_panel=PANEL_REWARDS,
                                        help="micro-batcher: most pairs per reward pass"),
    score_max_wait_ms: float = typer.Option(5.0, "--score-max-wait-ms", metavar="MS", rich_help_panel=PANEL_REWARDS,
                                            help="micro-batcher: longest wait for more calls"),
    score_gather_ms: float = typer.Option(3000.0, "--score-gather-ms", metavar="MS", rich_help_panel=PANEL_REWARDS,
                                          help="micro-batcher: hold a pass up to MS for every answer in flight (0: greedy)"),
    load: Optional[List[str]] = typer.Option(
        None, "--load", metavar="LEVELS", rich_help_panel=PANEL_LOAD,
        help="repeatable: batch | concurrency=1,2,4 | rate=0.5,1 | search[=rate] (default: batch)",
    ),
    slo_p95_s: Optional[float] = typer.Option(None, "--slo-p95-s", metavar="S", rich_help_panel=PANEL_LOAD,
                                              help="p95 latency SLO: goodput, and the target of --load search"),
    level_timeout_s: Optional[float] = typer.Option(None, "--level-timeout-s", metavar="S", rich_help_panel=PANEL_LOAD,
                                                    help="time cap per cell x load level (then: saturated)"),
    no_oversaturation_stop: bool = typer.Option(False, "--no-oversaturation-stop", rich_help_panel=PANEL_LOAD,
                                                help="never stop a level whose queue or latency keeps rising"),
    oversaturation_stop: Optional[bool] = typer.Option(None, "--oversaturation-stop", hidden=True),
    search_start: Optional[float] = typer.Option(None, "--search-start", metavar="X", rich_help_panel=PANEL_LOAD,
                                                 help="search: first level (default: concurrency 1, rate 0.25)"),
    search_max: Optional[float] = typer.Option(None, "--search-max", metavar="X", rich_help_panel=PANEL_LOAD,
                                               help="search: highest level probed (default: 64)"),
    search_probes: int = typer.Option(10, "--search-probes", metavar="N", rich_help_panel=PANEL_LOAD,
                                      help="search: probe budget per cell"),
    search_answers_per_slot: int = typer.Option(4, "--search-answers-per-slot", metavar="K", rich_help_panel=PANEL_LOAD,
                                                help="search: a probe at concurrency C runs K x C answers"),
    search_min_answers: int = typer.Option(16, "--search-min-answers", metavar="N", rich_help_panel=PANEL_LOAD,
                                           help="search: fewest answers per probe"),
    search_reprobes: int = typer.Option(2, "--search-reprobes", metavar="R", rich_help_panel=PANEL_LOAD,
                                        help="search: re-measure the bracketing levels R more times"),
    client_workers: int = typer.Option(1, "--client-workers", metavar="N", rich_help_panel=PANEL_LOAD,
                                       help="served engines: send each level from N client processes"),
    serve: bool = typer.Option(False, "--serve", rich_help_panel=PANEL_SERVING,
                               help="start vLLM's OpenAI server for --model, profile through it"),
    serve_arg: Optional[List[str]] = typer.Option(
        None, "--serve-arg", metavar="ARG", rich_help_panel=PANEL_SERVING,
        help="repeatable server argument, '=' form: --serve-arg=--max-num-seqs=64",
    ),
    server_timeout_s: float = typer.Option(600.0, "--server-timeout-s", metavar="S", rich_help_panel=PANEL_SERVING,
                                           help="--serve: wait this long for /health"),
    base_url: Optional[str] = typer.Option(None, "--base-url", metavar="URL", rich_help_panel=PANEL_SERVING,
                                           help="--engine openai: the server, e.g. http://host:8000/v1"),
    out: Optional[str] = typer.Option(None, "--out", metavar="DIR", rich_help_panel=PANEL_OUTPUT,
                                      help="run directory (default: runs/<run_id>)"),
    resume: Optional[str] = typer.Option(None, "--resume", metavar="DIR", rich_help_panel=PANEL_OUTPUT,
                                         help="finish an interrupted run directory"),
    verbose: bool = typer.Option(False, "--verbose", "-v", rich_help_panel=PANEL_OUTPUT,
                                 help="also stream RUN_DIR/engine.log to the terminal"),
    wide: bool = typer.Option(False, "--wide", rich_help_panel=PANEL_OUTPUT, help=_WIDE_HELP),
    cell_repeats: int = typer.Option(1, "--cell-repeats", metavar="R", rich_help_panel=PANEL_MEASUREMENT,
                                     help="run every cell R times, interleaved: median and spread"),
    warmup_answers: Optional[int] = typer.Option(
        None, "--warmup-answers", metavar="N", rich_help_panel=PANEL_MEASUREMENT,
        help="answers run and discarded before a cell (default: one batch, at most 64; 0: none)",
    ),
    ignore_eos: bool = typer.Option(False, "--ignore-eos", rich_help_panel=PANEL_MEASUREMENT,
                                    help="fixed length: every sample runs to --max-tokens"),
):
    """Profile techniques against plain decoding; writes a run directory and prints the tax table."""
    from .run.rundir import config_from_run

    # --no-x (shown) or --x (hidden): False, True, or None where neither was given
    switches = {pos: False if ctx.params[neg] else ctx.params[pos] for neg, pos in _NEGATED.items()}
    prefix_caching, judge_calibration, oversaturation_stop = (
        True if switches[k] is None else switches[k] for k in ("prefix_caching", "judge_calibration", "oversaturation_stop")
    )
    if resume and not (Path(resume) / "run.json").is_file():
        raise CosttaxError(f"--resume: bad value {resume!r}: not a costtax run directory (no run.json)")
    if resume:
        # Resume with the run's own config; any flag given explicitly must agree with it
        # (profile() refuses the run and shows the difference otherwise).
        import dataclasses

        stored = config_from_run(Path(resume))
        given = {k: v for k, v in ctx.params.items() if k not in _NOT_CONFIG and _from_cli(ctx, k)}
        given.update({k: v for k, v in switches.items() if v is not None})
        if "technique" in given:
            given["techniques"] = tuple(given.pop("technique"))
        if "prompts" in given:
            given["prompts"] = tuple(given["prompts"])
        if "load" in given:
            given["load"] = tuple(given["load"])
        if "serve_arg" in given:
            given["serve_args"] = tuple(given.pop("serve_arg"))
        config = dataclasses.replace(stored, **given)
    else:
        config = RunConfig(
            model=model,
            engine=engine,
            techniques=tuple(technique or DEFAULT_TECHNIQUES),
            prompts=tuple(prompts or ("helpful",)),
            limit=limit,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            repeats=repeats,
            out=out,
            reward_model=reward_model,
            eval_reward_model=eval_reward_model,
            constitution=constitution,
            prefix_caching=prefix_caching,
            trust_remote_code=trust_remote_code,
            max_model_len=max_model_len,
            judge_calibration=judge_calibration,
            cell_repeats=cell_repeats,
            warmup_answers=warmup_answers,
            load=tuple(load or (DEFAULT_LABEL,)),
            level_timeout_s=level_timeout_s,
            slo_p95_s=slo_p95_s,
            search_max=search_max,
            search_start=search_start,
            search_probes=search_probes,
            search_answers_per_slot=search_answers_per_slot,
            search_min_answers=search_min_answers,
            search_reprobes=search_reprobes,
            oversaturation_stop=oversaturation_stop,
            ignore_eos=ignore_eos,
            score_max_pairs=score_max_pairs,
            score_max_wait_ms=score_max_wait_ms,
            score_gather_ms=score_gather_ms,
            base_url=base_url,
            serve=serve,
            server_timeout_s=server_timeout_s,
            serve_args=tuple(serve_arg or ()),
            client_workers=client_workers,
        )

    result = _run_with_display(config, resume=resume, verbose=verbose)
    _print_table(result.run_dir, wide=wide)
    if result.cells_failed:
        typer.echo(f"costtax: {len(result.cells_failed)} cell(s) failed: {', '.join(result.cells_failed)} (see run.json)", err=True)
        raise typer.Exit(1)


def _run_with_display(config: RunConfig, *, resume: str | None, verbose: bool):
    """profile() with its output sorted: engine/library output (this process's and vLLM's
    spawned processes') to RUN_DIR/engine.log, phases and progress to the terminal."""
    from .console.display import EngineLog, RunDisplay, warnings_line
    from .run.profile import profile as run_profile

    with EngineLog(echo=verbose) as log:
        display = RunDisplay(log.terminal_err, log=log)
        try:
            result = run_profile(config, resume=resume, on_event=display)
            note = warnings_line(result.run_dir)
            if note:
                display.line(note)
            return result
        except CosttaxError:
            raise
        except BaseException:
            # the error line comes from main(); the detail is in the log
            if log.path is not None and log.path.exists() and log.path.stat().st_size:
                display.line(f"engine log: {log.path}")
            raise
        finally:
            display.close()


def _from_cli(ctx: typer.Context, name: str) -> bool:
    src = ctx.get_parameter_source(name)
    return src is not None and src.name == "COMMANDLINE"


def _print_table(run_dir: Path, df=None, *, width: int | None = None, wide: bool = False) -> None:
    """Print the tax table from `df`, or from the summary.csv the run already wrote (rebuilding
    it here would recompute every metric, self-BLEU included, a second time). Fitted to the
    terminal stdout is (`width`: that terminal's columns, measured before anything redirected
    it); complete off a terminal or with `wide` (costtax/report/fit.py)."""
    from .report import load_summary, reward_model_line, row_warnings
    from .report.fit import output_console, print_table, terminal_width
    from .report.table import tax_table

    if df is None:
        df = load_summary(run_dir)
    width = None if wide else (width or terminal_width(sys.stdout))
    console = output_console(sys.stdout, width)
    from .store.rundata import RunData

    try:
        line = reward_model_line(RunData.open(run_dir, records=False).meta)
    except CosttaxError:
        line = None
    if line:
        console.print(line, markup=False)
    print_table(console, tax_table(df, f"alignment tax vs plain — {run_dir}"), width)
    for w in row_warnings(df):
        console.print(w, markup=False)
    notes = sorted({n for n in df.get("noise_note", []) if isinstance(n, str) and n})
    for n in notes:
        console.print(f"note: {n} (see *_ci95_* columns in summary.csv)", markup=False)
    src = df["eval_reward_source"].iloc[0] if "eval_reward_source" in df and len(df) else None
    if src == "proxy":
        console.print("note: reward and win-rate use the selection reward model (proxy); pass --eval-reward-model for an independent judge")
    console.print(f"summary: {run_dir / 'summary.csv'}", markup=False)


@app.command(epilog=_examples(
    "costtax report runs/<run_id>",
    "costtax report runs/<run_id> --wide       # every column on one line",
))
def report(run_dir: str = typer.Argument(..., help="a run directory"),
           wide: bool = typer.Option(False, "--wide", help=_WIDE_HELP)):
    """Rebuild summary.csv from a run directory and print the tax table."""
    from .console.display import RunDisplay, warnings_line
    from .phases import phase
    from .store.rundata import RunData

    p = RunData.open(run_dir).path  # a bad directory: one line naming the file, exit 2
    from .report import write_plots, write_summary

    display = RunDisplay(sys.stderr, gpu_check=False)  # a spinner on a terminal; two lines off one
    try:
        with phase(display, "rebuilding summary.csv and plots"):
            df = write_summary(p)
            files = write_plots(p, df)
    finally:
        display.close()
    for f in files:
        display.say(f"plot: {f}")
    note = warnings_line(p)
    if note:
        display.line(note)
    _print_table(p, df, wide=wide)


@app.command(epilog=_examples(
    "costtax plan runs/<run_id> --qps 2 --slo-p95-s 10",
    "costtax plan runs/<run_id> --qps 20 --slo-p95-s 2 --usd-per-device-hour 4",
    "costtax plan runs/<run_id> --qps 2 --slo-p95-s 10 --min-win-rate 0.55",
))
def plan(
    run_dir: str = typer.Argument(..., help="a run directory"),
    qps: float = typer.Option(..., "--qps", help="target final answers per second"),
    slo_p95_s: float = typer.Option(..., "--slo-p95-s", help="latency SLO on p95 per final answer (s)"),
    usd_per_device_hour: Optional[float] = typer.Option(None, "--usd-per-device-hour", help="price of one replica (GPU, server, or this CPU machine) per hour"),
    min_reward: Optional[float] = typer.Option(None, "--min-reward", help="quality floor: lower 95% CI end of the mean reward"),
    min_accuracy: Optional[float] = typer.Option(None, "--min-accuracy", help="quality floor: lower 95% CI end of accuracy (0..1)"),
    min_win_rate: Optional[float] = typer.Option(None, "--min-win-rate", help="quality floor: lower 95% CI end of the win rate vs plain (0..1)"),
    wide: bool = typer.Option(False, "--wide", help=_WIDE_HELP),
):
    """Capacity plan from the measured latency-vs-throughput curve: replicas for a target QPS
    under a p95 SLO, $ and kWh per 1M answers, quality floors, the cheapest cell that holds them."""
    from .store.rundata import RunData

    p = RunData.open(run_dir, records=False).path  # a bad directory: one line naming the file, exit 2
    if qps <= 0:
        raise CosttaxError(f"--qps: bad value {qps!r}: use a positive number of answers per second")
    if slo_p95_s <= 0:
        raise CosttaxError(f"--slo-p95-s: bad value {slo_p95_s!r}: use a positive number of seconds")
    if usd_per_device_hour is not None and usd_per_device_hour < 0:
        raise CosttaxError(f"--usd-per-device-hour: bad value {usd_per_device_hour!r}: use a price >= 0")
    for flag, v in (("--min-accuracy", min_accuracy), ("--min-win-rate", min_win_rate)):
        if v is not None and not 0 <= v <= 1:
            raise CosttaxError(f"{flag}: bad value {v!r}: use a fraction between 0 and 1")
    from .report import capacity_plan

    from .console.display import RunDisplay
    from .phases import phase

    display = RunDisplay(sys.stderr, gpu_check=False)
    try:
        with phase(display if display.tty else None, "reading the latency-vs-throughput curve"):
            df = capacity_plan(p, qps=qps, slo_p95_s=slo_p95_s, usd_per_device_hour=usd_per_device_hour,
                               min_reward=min_reward, min_accuracy=min_accuracy, min_win_rate=min_win_rate)
    finally:
        display.close()
    out = p / "plan.csv"
    df.to_csv(out, index=False)
    from .report.plan_out import write_plan_outputs

    extra = write_plan_outputs(df, p, qps=qps, slo_p95_s=slo_p95_s)
    floors = any(v is not None for v in (min_reward, min_accuracy, min_win_rate))
    from .report.fit import output_console, print_table, terminal_width
    from .report.plan_table import plan_table

    width = None if wide else terminal_width(sys.stdout)
    console = output_console(sys.stdout, width)
    print_table(console, plan_table(df, f"capacity plan: {qps:g} answers/s, p95 <= {slo_p95_s:g}s", floors=floors), width)
    src = df["quality_source"].dropna().iloc[0] if "quality_source" in df and df["quality_source"].notna().any() else None
    if floors and src == "proxy":
        console.print("note: quality floors use the selection reward model as a proxy (no --eval-reward-model in this run)")
    from .report.table import CONTENTION_WARN_SHARE

    for _, r in df.iterrows():
        share = r.get("curve_foreign_cpu_share_max")
        if share is not None and share == share and share > CONTENTION_WARN_SHARE:
            console.print(f"note: {r['cell']} was measured while other processes kept up to {share:.0%} of the CPUs busy: "
                          "its capacity is understated; re-measure on a quiet machine", markup=False)
    console.print(f"replica: what ran the profile ({df['device'].dropna().iloc[0] if 'device' in df and df['device'].notna().any() else '?'}); model: {df['model'].dropna().iloc[0] if 'model' in df and df['model'].notna().any() else ''}", markup=False)
    console.print(f"plan: {out}" + "".join(f", {x}" for x in extra), markup=False)


@app.command(epilog=_examples(
    "costtax compare runs/old runs/new",
    "costtax compare OLD NEW --max-slowdown 10% --max-quality-drop 0.02",
    "costtax compare old.json new.json         # pytest-benchmark files",
))
def compare(
    old: str = typer.Argument(..., help="baseline: a run directory or a pytest-benchmark JSON file"),
    new: str = typer.Argument(..., help="candidate: same kind as OLD"),
    max_slowdown: str = typer.Option("15%", "--max-slowdown", help="latency p50/p95 per answer, answers/s, benchmark round time"),
    max_tokens_increase: str = typer.Option("5%", "--max-tokens-increase", help="output tokens per answer"),
    max_quality_drop: float = typer.Option(0.03, "--max-quality-drop", help="absolute drop in win-rate vs plain or accuracy"),
    max_memory_increase: Optional[str] = typer.Option(None, "--max-memory-increase", help="peak memory (default: reported only)"),
    max_energy_increase: Optional[str] = typer.Option(None, "--max-energy-increase", help="energy per answer (default: reported only)"),
    wide: bool = typer.Option(False, "--wide", help=_WIDE_HELP),
    record_noise: bool = typer.Option(False, "--record-noise", help="OLD and NEW are an A/A: record their spread as this machine's noise band"),
):
    """Per-cell deltas with CIs; exit 1 on a regression beyond the limits and beyond noise."""
    from .compare.verdicts import CompareConfig, parse_fraction, run_compare

    config = CompareConfig(
        old=old,
        new=new,
        max_slowdown=parse_fraction(max_slowdown, "--max-slowdown"),
        max_tokens_increase=parse_fraction(max_tokens_increase, "--max-tokens-increase"),
        max_quality_drop=max_quality_drop,
        max_memory_increase=parse_fraction(max_memory_increase, "--max-memory-increase"),
        max_energy_increase=parse_fraction(max_energy_increase, "--max-energy-increase"),
        record_noise=record_noise,
    )
    from .console.display import RunDisplay
    from .report.fit import output_console

    # a spinner while the CIs are bootstrapped, on a terminal only: off one, stderr keeps bad
    # input to its one line
    display = RunDisplay(sys.stderr, gpu_check=False)
    try:
        regressions = run_compare(config, output_console(sys.stdout, None) if wide else None,
                                  on_event=display if display.tty else None).regressions
    finally:
        display.close()
    if regressions:
        # SystemExit, not typer.Exit: main() runs typer with standalone_mode=False, where a
        # typer.Exit is returned as a value and main() drops it (the exit code would be 0).
        sys.exit(1)


@app.command(epilog=_examples(
    "costtax models",
    "costtax models | cut -f1,2                # alias and state only",
))
def models():
    """List embedded model aliases and where their weights come from."""
    from .model_files import list_models

    for m in list_models():
        state = "converted" if m["converted"] else ("installed" if m["installed"] else "NOT INSTALLED")
        typer.echo(f"{m['alias']}\t{state}\t{m['source']}\t{m['cache_dir']}\t{m['license']}\n  {m['description']}")


@app.command(epilog=_examples(
    "costtax doctor",
    "costtax doctor --stop-leftovers           # stop servers whose costtax is gone",
))
def doctor(
    stop_leftovers: bool = typer.Option(
        False, "--stop-leftovers", help="stop vLLM servers that --serve started for a costtax process that is gone"
    ),
):
    """Report what is installed and what each missing piece disables, and leftover servers."""
    from .doctor import run_doctor

    for line in run_doctor(stop_leftovers=stop_leftovers):
        typer.echo(line)


def _sigterm_as_interrupt() -> None:
    """SIGTERM (a job scheduler, `kill`) takes the Ctrl-C path: rows flushed, run.json marked
    interrupted, vLLM's spawned engine processes shut down instead of being orphaned."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (embedded use)
        pass


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    _sigterm_as_interrupt()
    debug = "--debug" in args
    try:
        # standalone_mode=False hands a command's `raise typer.Exit(n)` back as a return value:
        # pass it on, or a run with failed cells would exit 0.
        rc = app(args=args, standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        _err("interrupted")
        sys.exit(130)
    except CosttaxError as exc:
        if debug:
            traceback.print_exc()
        _err(str(exc))
        from .run.profile import RunInterrupted  # light: profile.py imports torch/vllm only when running

        sys.exit(130 if isinstance(exc, RunInterrupted) else 2)
    except Exception as exc:
        # click/typer usage errors (bad flag, bad type): one line naming the option, exit 2.
        # typer >= 0.20 vendors click, so match the interface rather than a class.
        if hasattr(exc, "format_message") and getattr(exc, "exit_code", None) == 2:
            if debug:
                traceback.print_exc()
            _err(exc.format_message().replace("\n", " "))
            sys.exit(2)
        raise


if __name__ == "__main__":  # pragma: no cover
    main()
