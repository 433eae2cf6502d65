"""What a costtax plugin test gets back and the checks it runs on it: `CellResult` (one cell's
summary row, its run's rows and the estimates with CIs) and `assert_cost` / `assert_quality`,
which fail with `CosttaxLimitError` naming the metric, its CI, the limit, the cell and the run
directory. Light: standard library only; estimates load when a result is built.

    from costtax.pytest_plugin import assert_cost, assert_quality   # (re-exported from here)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping


@dataclass(frozen=True)
class CellResult:
    """What costtax_profile returns: the cell's summary row (dict), every row of its run, the run
    directory and the estimates (with CIs) the assertions judge."""

    cell: str
    run_dir: Path
    row: dict[str, Any]
    rows: tuple[dict[str, Any], ...]
    estimates: Mapping[str, Any]
    test: str = ""

    def __getitem__(self, key):
        return self.row[key]

    def extra_info(self) -> dict[str, Any]:
        """The fields recorded in pytest-benchmark's extra_info: flat scalars to read, and a
        `costtax` block with CIs that `costtax compare` judges."""
        from .estimates import flatten_for_extra_info

        flat = {}
        for k in ("latency_p50_s", "latency_p95_s", "answers_per_s", "output_tokens_per_answer", "eval_reward_mean",
                  "win_rate_vs_plain", "proxy_win_rate_vs_plain", "accuracy", "accuracy_delta_vs_plain", "peak_memory_bytes",
                  "energy_j_per_answer", "latency_p95_x", "output_tokens_per_answer_x", "cell_wall_s", "answers"):
            v = self.row.get(k)
            if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
                flat[k] = v
        return {
            **flat,
            "costtax": {
                "cell": self.cell,
                "run_dir": str(self.run_dir),
                "metrics": flatten_for_extra_info(self.estimates),
            },
        }


def _estimates(run_dir, cell, load=None) -> Mapping[str, Any]:
    """The cell's estimates at its load level; an unreadable run directory fails the test with
    RunData's one line (the file and what is wrong), not a traceback."""
    from .estimates import cell_estimates
    from ..store.rundata import RunDataError

    try:
        return cell_estimates(run_dir, load if isinstance(load, str) and load else None).get(cell, {})
    except RunDataError as exc:
        problem = str(exc)
    import pytest

    pytest.fail(f"costtax: {problem}", pytrace=False)


def cell_result(run_dir: Path, cell: str, test: str) -> CellResult:
    from ..report import summary_records

    rows = tuple(summary_records(run_dir))
    mine = [r for r in rows if r["cell"] == cell]
    if not mine:
        raise RuntimeError(f"cell {cell} has no row in {run_dir / 'summary.csv'}")
    row = {**mine[0], "run_dir": str(run_dir)}
    return CellResult(cell, run_dir, row, rows, _estimates(run_dir, cell), test)



# -- assertions ----------------------------------------------------------------------------------------
class CosttaxLimitError(AssertionError):
    """A cost or quality limit was crossed; the message says what, measured (CI), limit, cell, run dir."""


_COST_LIMITS = {  # keyword -> (estimate / summary column, label)
    "max_latency_p95_x": ("latency_p95_x", "latency p95 ×plain"),
    "max_latency_p50_x": ("latency_p50_x", "latency p50 ×plain"),
    "max_tokens_per_answer_x": ("output_tokens_per_answer_x", "output tokens per answer ×plain"),
    "max_peak_memory_x": ("peak_memory_x", "peak memory ×plain"),
    "max_energy_j_per_answer_x": ("energy_j_per_answer_x", "energy per answer ×plain"),
    "max_latency_p95_s": ("latency_p95_s", "latency p95 (s)"),
    "max_latency_p50_s": ("latency_p50_s", "latency p50 (s)"),
}
_QUALITY_LIMITS = {
    "min_win_rate": ("win_rate_vs_plain", "win-rate vs plain"),
    "min_accuracy_delta": ("accuracy_delta_vs_plain", "accuracy Δ vs plain"),
    "min_accuracy": ("accuracy", "accuracy"),
    "min_reward_delta": ("eval_reward_delta_vs_plain", "eval reward Δ vs plain"),
}
_NOT_MEASURED_HINT = {
    "accuracy_delta_vs_plain": "the prompts have no reference answers; use prompts='arith' or a JSONL with \"answer\"",
    "accuracy": "the prompts have no reference answers; use prompts='arith' or a JSONL with \"answer\"",
    "energy_j_per_answer_x": "energy needs an NVIDIA GPU with NVML",
    "peak_memory_x": "no memory reading in this run",
    "win_rate_vs_plain": "no evaluation reward (reward model off?)",
    "eval_reward_delta_vs_plain": "no evaluation reward (reward model off?)",
}


def _as_result(result) -> tuple[str, str, Mapping[str, Any], Mapping[str, Any]]:
    """(cell, run_dir, row, estimates) from a CellResult or a summary row dict (with run_dir)."""
    if isinstance(result, CellResult):
        return result.cell, str(result.run_dir), result.row, result.estimates
    if isinstance(result, Mapping):
        row = dict(result)
        est: Mapping[str, Any] = {}
        if row.get("run_dir"):
            est = _estimates(row["run_dir"], row.get("cell"), row.get("load"))
        return str(row.get("cell")), str(row.get("run_dir", "?")), row, est
    raise TypeError(f"expected costtax_profile's result or a summary row dict, got {type(result).__name__}")


def _measured(name: str, row: Mapping[str, Any], est: Mapping[str, Any]):
    from .estimates import Estimate

    e = est.get(name)
    if e is not None and e.value is not None:
        return e
    v = row.get(name)
    if v is None and name == "win_rate_vs_plain":
        v = row.get("proxy_win_rate_vs_plain")
    if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
        return Estimate(float(v))
    return e if e is not None else Estimate(None)


def _fmt_measured(e) -> str:
    s = f"{e.value:.3g}"
    if e.has_ci:
        s += f" (95% CI {e.lo:.3g}–{e.hi:.3g}"
        s += f", n={e.n})" if e.n else ")"
    elif e.n:
        s += f" (n={e.n}, no CI)"
    return s


def _check(kind: str, result, limits: Mapping[str, float | None], table: Mapping[str, tuple[str, str]]) -> None:
    __tracebackhide__ = True
    unknown = [k for k in limits if k not in table]
    if unknown:
        raise TypeError(f"assert_{kind}: unknown limit {unknown[0]!r}; valid: {', '.join(table)}")
    cell, run_dir, row, est = _as_result(result)
    lines = []
    for key, limit in limits.items():
        if limit is None:
            continue
        name, label = table[key]
        e = _measured(name, row, est)
        if name == "win_rate_vs_plain" and row.get("eval_reward_source") == "proxy":
            label += " (proxy: scored by the selection reward model)"
        if e.value is None:
            lines.append(f"  {label} [{name}]: not measured ({_NOT_MEASURED_HINT.get(name, 'null in summary.csv')}); limit {key}={limit:g}")
            continue
        upper = key.startswith("max_")
        crossed = e.value > limit if upper else e.value < limit
        if crossed:
            op = ">" if upper else "<"
            noise = ""
            if e.has_ci and (e.lo <= limit <= e.hi):
                noise = "; the CI contains the limit: possibly noise at this n"
            lines.append(f"  {label} [{name}] = {_fmt_measured(e)} {op} limit {key}={limit:g}{noise}")
            if name in ("latency_p50_s", "latency_p95_s"):
                lines.append(_machine_noise_note(run_dir, name, e.value, limit))
    share = row.get("foreign_cpu_share")
    if lines and kind == "cost" and isinstance(share, (int, float)) and share == share:
        from ..report.table import CONTENTION_WARN_SHARE

        if share > CONTENTION_WARN_SHARE:
            lines.append(f"  note: other processes kept {share:.0%} of this machine's CPUs busy during the cell "
                         "(foreign_cpu_share): a timing limit may have been crossed by neighbours, not by the code")
    if lines:
        what = "cost" if kind == "cost" else "quality"
        raise CosttaxLimitError(f"costtax {what} limit crossed in cell {cell} (run dir {run_dir}):\n" + "\n".join(lines))


def _machine_noise_note(run_dir, name: str, value: float, limit: float) -> str:
    """An absolute time limit is crossed: cite this machine's recorded A/A noise band for the
    metric (costtax/compare/noise.py), the drift between identical runs that no within-run CI sees."""
    from .noise import load_calibration
    from ..store.rundata import RunData, RunDataError

    try:
        prov = RunData.open(run_dir, records=False).meta.get("provenance") or {}
    except RunDataError:
        prov = {}
    cal = load_calibration(prov.get("machine"), (prov.get("versions") or {}).get("costtax"))
    band = (cal or {}).get("bands", {}).get(name)
    if isinstance(band, (int, float)):
        within = value <= limit * (1 + band)
        return (f"    machine noise band (A/A calibration {cal['path']}): identical runs differed by up to {band:.0%} on "
                f"{name}; {'within' if within else 'beyond'} it")
    from .noise import load_prior

    prior = load_prior()
    band = (prior or {}).get("bands", {}).get(name)
    if isinstance(band, (int, float)):
        within = value <= limit * (1 + band)
        return (f"    no A/A calibration of this machine for {name}; the reference machine's ({prior['path']}) saw identical "
                f"runs differ by up to {band:.0%}: {'within' if within else 'beyond'} it "
                "(record this machine's: `costtax compare A A2 --record-noise`)")
    return (f"    no A/A calibration of this machine for {name}: drift between identical runs is not in the CI "
            "(record one: `costtax compare A A2 --record-noise`)")


def assert_cost(
    result,
    *,
    max_latency_p95_x: float | None = None,
    max_latency_p50_x: float | None = None,
    max_tokens_per_answer_x: float | None = None,
    max_peak_memory_x: float | None = None,
    max_energy_j_per_answer_x: float | None = None,
    max_latency_p95_s: float | None = None,
    max_latency_p50_s: float | None = None,
) -> None:
    """Fail when a cost of the cell crosses its limit (multipliers are vs plain on the same prompts).

    The point estimate is judged; the message gives its bootstrap 95% CI so a reader sees when a
    failure may be noise at the run's n."""
    __tracebackhide__ = True
    _check("cost", result, dict(
        max_latency_p95_x=max_latency_p95_x, max_latency_p50_x=max_latency_p50_x, max_tokens_per_answer_x=max_tokens_per_answer_x,
        max_peak_memory_x=max_peak_memory_x, max_energy_j_per_answer_x=max_energy_j_per_answer_x,
        max_latency_p95_s=max_latency_p95_s, max_latency_p50_s=max_latency_p50_s,
    ), _COST_LIMITS)


def assert_quality(
    result,
    *,
    min_win_rate: float | None = None,
    min_accuracy_delta: float | None = None,
    min_accuracy: float | None = None,
    min_reward_delta: float | None = None,
) -> None:
    """Fail when the cell's quality falls below a limit: win-rate vs plain (eval or proxy), accuracy
    and its change vs plain (prompts with reference answers), mean eval-reward change vs plain."""
    __tracebackhide__ = True
    _check("quality", result, dict(
        min_win_rate=min_win_rate, min_accuracy_delta=min_accuracy_delta, min_accuracy=min_accuracy, min_reward_delta=min_reward_delta,
    ), _QUALITY_LIMITS)
