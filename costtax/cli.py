"""The typer CLI: parse flags, build a RunConfig, call one function. No torch/vllm imports here."""
from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import List, Optional

import typer

from .config import DEFAULT_TECHNIQUES, RunConfig
from .errors import CosttaxError
from .models import DEFAULT_MODEL

app = typer.Typer(
    add_completion=False,
    no_args_is_help=False,
    help="costtax: what inference-time alignment (best-of-N, Constitutional AI) costs, and what it buys.",
)
_state = {"debug": False}


def _err(msg: str) -> None:
    typer.echo(f"costtax: error: {msg}", err=True)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="show tracebacks")):
    _state["debug"] = debug


@app.command()
def profile(
    ctx: typer.Context,
    model: str = typer.Option(DEFAULT_MODEL, "--model", help="local HF causal-LM directory or embedded alias"),
    engine: str = typer.Option("vllm", "--engine", help="vllm | hf"),
    technique: Optional[List[str]] = typer.Option(
        None, "--technique", "-t", help="repeatable spec with sweeps, e.g. bon:n=1,4,16 (default: plain, bon:n=4, cai:rounds=1)"
    ),
    prompts: Optional[List[str]] = typer.Option(None, "--prompts", "-p", help="repeatable: helpful | harmful | arith | FILE.jsonl"),
    limit: Optional[int] = typer.Option(8, "--limit", help="first K prompts of each source"),
    max_tokens: int = typer.Option(64, "--max-tokens", help="new tokens per generation"),
    temperature: float = typer.Option(0.7, "--temperature"),
    top_p: float = typer.Option(1.0, "--top-p"),
    seed: int = typer.Option(0, "--seed"),
    repeats: int = typer.Option(1, "--repeats", help="final answers per prompt (diversity across repeats)"),
    out: Optional[str] = typer.Option(None, "--out", help="run directory (default runs/<run_id>)"),
    resume: Optional[str] = typer.Option(None, "--resume", help="finish an interrupted run directory"),
    reward_model: str = typer.Option("judge", "--reward-model", help="judge | judge:MODEL | scalar:DIR | DIR"),
    eval_reward_model: Optional[str] = typer.Option(
        None, "--eval-reward-model", help="separate evaluation reward (default: the reward model, labelled proxy; 'none' to skip)"
    ),
    constitution: Optional[str] = typer.Option(None, "--constitution", help="YAML/JSON constitution file for cai"),
    prefix_caching: bool = typer.Option(True, "--prefix-caching/--no-prefix-caching"),
    max_model_len: int = typer.Option(2048, "--max-model-len"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="allow model repos' own code (off by default)"),
    judge_calibration: bool = typer.Option(True, "--judge-calibration/--no-judge-calibration"),
):
    """Profile techniques against plain decoding; writes a run directory and prints the tax table."""
    from .profile import config_from_run, profile as run_profile

    if resume and not (Path(resume) / "run.json").is_file():
        raise CosttaxError(f"--resume: bad value {resume!r}: not a costtax run directory (no run.json)")
    if resume:
        # Resume with the run's own config; any flag given explicitly must agree with it
        # (profile() refuses the run and shows the difference otherwise).
        import dataclasses

        stored = config_from_run(Path(resume))
        given = {k: v for k, v in ctx.params.items() if k not in ("resume", "ctx") and _from_cli(ctx, k)}
        if "technique" in given:
            given["techniques"] = tuple(given.pop("technique"))
        if "prompts" in given:
            given["prompts"] = tuple(given["prompts"])
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
        )

    def on_event(kind: str, data: dict) -> None:
        if kind == "run_dir":
            typer.echo(f"costtax: run directory {data['run_dir']}", err=True)
        elif kind == "status":
            typer.echo(f"costtax: {data['msg']}", err=True)
        elif kind == "cell_start":
            typer.echo(f"costtax: cell {data['cell']} ...", err=True)
        elif kind == "cell_done":
            typer.echo(f"costtax: cell {data['cell']} done: {data['answers']} answers in {data['wall_s']:.1f}s", err=True)
        elif kind == "cell_failed":
            typer.echo(f"costtax: cell {data['cell']} FAILED: {data['error']}", err=True)

    result = run_profile(config, resume=resume, on_event=on_event)
    _print_table(result.run_dir)
    if result.cells_failed:
        typer.echo(f"costtax: {len(result.cells_failed)} cell(s) failed: {', '.join(result.cells_failed)} (see run.json)", err=True)
        raise typer.Exit(1)


def _from_cli(ctx: typer.Context, name: str) -> bool:
    src = ctx.get_parameter_source(name)
    return src is not None and src.name == "COMMANDLINE"


def _print_table(run_dir: Path, df=None) -> None:
    """Print the tax table from `df`, or from the summary.csv the run already wrote (rebuilding
    it here would recompute every metric, self-BLEU included, a second time)."""
    from rich.console import Console
    from rich.table import Table

    from .report import headline_rows, load_summary

    if df is None:
        df = load_summary(run_dir)
    header, rows = headline_rows(df)
    table = Table(title=f"alignment tax vs plain — {run_dir}", title_justify="left")
    for h in header:
        table.add_column(h, justify="left" if h == "cell" else "right")
    for r in rows:
        table.add_row(*r)
    console = Console(width=200)
    console.print(table)
    notes = sorted({n for n in df.get("noise_note", []) if isinstance(n, str) and n})
    for n in notes:
        console.print(f"note: {n} (see *_ci95_* columns in summary.csv)")
    src = df["eval_reward_source"].iloc[0] if "eval_reward_source" in df and len(df) else None
    if src == "proxy":
        console.print("note: reward and win-rate use the selection reward model (proxy); pass --eval-reward-model for an independent judge")
    console.print(f"summary: {run_dir / 'summary.csv'}")


@app.command()
def report(run_dir: str = typer.Argument(..., help="a run directory")):
    """Rebuild summary.csv from a run directory and print the tax table."""
    p = Path(run_dir)
    if not (p / "run.json").is_file():
        raise CosttaxError(f"RUN_DIR: bad value {run_dir!r}: not a costtax run directory (no run.json)")
    from .report import write_summary

    from .report import write_plots

    df = write_summary(p)
    for f in write_plots(p, df):
        typer.echo(f"plot: {f}", err=True)
    _print_table(p, df)


@app.command()
def plan(
    run_dir: str = typer.Argument(..., help="a run directory"),
    qps: float = typer.Option(..., "--qps", help="target final answers per second"),
    slo_p95_s: float = typer.Option(..., "--slo-p95-s", help="latency SLO on p95 per final answer (s)"),
    usd_per_device_hour: Optional[float] = typer.Option(None, "--usd-per-device-hour", help="price of one device (GPU, or this CPU machine) per hour"),
):
    """Capacity plan: devices for a target QPS under a p95 SLO, $ and joules per answer, per cell."""
    p = Path(run_dir)
    if not (p / "run.json").is_file():
        raise CosttaxError(f"RUN_DIR: bad value {run_dir!r}: not a costtax run directory (no run.json)")
    if qps <= 0:
        raise CosttaxError(f"--qps: bad value {qps!r}: use a positive number of answers per second")
    if slo_p95_s <= 0:
        raise CosttaxError(f"--slo-p95-s: bad value {slo_p95_s!r}: use a positive number of seconds")
    if usd_per_device_hour is not None and usd_per_device_hour < 0:
        raise CosttaxError(f"--usd-per-device-hour: bad value {usd_per_device_hour!r}: use a price >= 0")
    from rich.console import Console
    from rich.table import Table

    from .report import capacity_plan

    df = capacity_plan(p, qps=qps, slo_p95_s=slo_p95_s, usd_per_device_hour=usd_per_device_hour)
    out = p / "plan.csv"
    df.to_csv(out, index=False)
    t = Table(title=f"capacity plan: {qps:g} answers/s, p95 <= {slo_p95_s:g}s", title_justify="left")
    for h in ("cell", "p95 s", "ans/s/device", "feasible", "devices", "× plain", "$/1k answers", "J/answer"):
        t.add_column(h, justify="left" if h == "cell" else "right")

    def f(v, fmt):
        return "—" if v is None or v != v else fmt.format(v)

    for _, r in df.iterrows():
        t.add_row(r["cell"], f(r["measured_p95_s"], "{:.2f}"), f(r["answers_per_s_per_device"], "{:.2f}"),
                  "yes" if r["feasible"] else "NO", f(r["devices_needed"], "{:.0f}"), f(r["devices_x_plain"], "{:.2f}"),
                  f(r["usd_per_1k_answers"], "{:.3f}"), f(r["energy_j_per_answer"], "{:.1f}"))
    console = Console(width=160)
    console.print(t)
    console.print(f"device: {df['device'].iloc[0] if len(df) else '?'}; model: {df['model'].iloc[0] if len(df) else ''}")
    console.print(f"plan: {out}")


@app.command()
def compare(
    old: str = typer.Argument(..., help="baseline: a run directory or a pytest-benchmark JSON file"),
    new: str = typer.Argument(..., help="candidate: same kind as OLD"),
    max_slowdown: str = typer.Option("15%", "--max-slowdown", help="latency p50/p95 per answer, answers/s, benchmark round time"),
    max_tokens_increase: str = typer.Option("5%", "--max-tokens-increase", help="output tokens per answer"),
    max_quality_drop: float = typer.Option(0.03, "--max-quality-drop", help="absolute drop in win-rate vs plain or accuracy"),
    max_memory_increase: Optional[str] = typer.Option(None, "--max-memory-increase", help="peak memory (default: reported only)"),
    max_energy_increase: Optional[str] = typer.Option(None, "--max-energy-increase", help="energy per answer (default: reported only)"),
):
    """Per-cell deltas with CIs; exit 1 on a regression beyond the limits and beyond noise."""
    from .compare import CompareConfig, parse_fraction, run_compare

    config = CompareConfig(
        old=old,
        new=new,
        max_slowdown=parse_fraction(max_slowdown, "--max-slowdown"),
        max_tokens_increase=parse_fraction(max_tokens_increase, "--max-tokens-increase"),
        max_quality_drop=max_quality_drop,
        max_memory_increase=parse_fraction(max_memory_increase, "--max-memory-increase"),
        max_energy_increase=parse_fraction(max_energy_increase, "--max-energy-increase"),
    )
    if run_compare(config).regressions:
        # SystemExit, not typer.Exit: main() runs typer with standalone_mode=False, where a
        # typer.Exit is returned as a value and main() drops it (the exit code would be 0).
        sys.exit(1)


@app.command()
def models():
    """List embedded model aliases and where their weights come from."""
    from .models import list_models

    for m in list_models():
        state = "converted" if m["converted"] else ("installed" if m["installed"] else "NOT INSTALLED")
        typer.echo(f"{m['alias']}\t{state}\t{m['source']}\t{m['cache_dir']}\t{m['license']}\n  {m['description']}")


@app.command()
def doctor():
    """Report what is installed and what each missing piece disables."""
    from .doctor import run_doctor

    for line in run_doctor():
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
        app(args=args, standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        _err("interrupted")
        sys.exit(130)
    except CosttaxError as exc:
        if debug:
            traceback.print_exc()
        _err(str(exc))
        sys.exit(130 if type(exc).__name__ == "RunInterrupted" else 2)
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
