"""The pytest plugin, run the way a user runs it: `pytest` in a directory outside the project, in a
subprocess, the plugin found through the `pytest11` entry point. The engine and reward model are
the fakes (via --costtax-engine-factory / --costtax-scorer-factory), so this stays fast; the
README example on the real engine is tests/test_plugin_readme.py."""
from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "costtax.pytest_plugin"


def _declared_entry_point() -> tuple[str, str]:
    import tomllib

    eps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["pytest11"]
    assert len(eps) == 1
    return next(iter(eps.items()))


def _installed_entry_point() -> bool:
    return any(ep.value == PLUGIN for ep in importlib.metadata.entry_points(group="pytest11"))


def plugin_env(tmp_path: Path, *, fakes: bool = True) -> dict[str, str]:
    """Environment for a `pytest` subprocess outside the project. Where the installed costtax
    predates the entry point (an editable install made before it was added), a dist-info with
    exactly pyproject.toml's entry point is put on the path, so discovery is still the one
    pytest does for an installed package (importlib.metadata), not `-p`."""
    paths = [str(ROOT)] + ([str(ROOT / "tests")] if fakes else [])
    if not _installed_entry_point():
        name, value = _declared_entry_point()
        dist = tmp_path / "_entry_point" / "costtax_pytest_entry-0.0.0.dist-info"
        dist.mkdir(parents=True, exist_ok=True)
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: costtax-pytest-entry\nVersion: 0.0.0\n")
        (dist / "entry_points.txt").write_text(f"[pytest11]\n{name} = {value}\n")
        paths.append(str(dist.parent))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "TRITON_INTERPRET")}
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    return env


def run_pytest(cwd: Path, args: list[str], env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )


def _fake_model(tmp_path: Path) -> Path:
    d = tmp_path / "fake-model"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    return d


FACTORY = '''
from pathlib import Path
from fakes import FakeEngine, FakeReward

LOG = Path(__file__).with_name("engine.log")


class LoggedEngine(FakeEngine):
    def start(self):  # profile() calls start() on every run; only a cold one is logged
        if not self.started:
            with LOG.open("a") as fh:
                fh.write("start\\n")
        return super().start()

    def close(self):
        with LOG.open("a") as fh:
            fh.write("close\\n")
        super().close()


def engine():
    return LoggedEngine(words_per_sample=10)


def scorer():
    return FakeReward()
'''

USER_TESTS = '''
import pytest
from costtax.pytest_plugin import assert_cost, assert_quality


def test_bon_passes(costtax_profile):
    r = costtax_profile(technique="bon:n=4", prompts="helpful", limit=4, max_tokens=16)
    assert r.cell == "bon:n=4" and r.row["technique"] == "bon"
    assert {x["cell"] for x in r.rows} == {"plain", "bon:n=4"}
    assert_cost(r, max_latency_p95_x=100, max_tokens_per_answer_x=100)
    assert_quality(r, min_win_rate=0.0)


def test_cai_same_prompts(costtax_profile):
    r = costtax_profile(technique="cai:rounds=1", prompts="helpful", limit=4, max_tokens=16)
    assert_cost(r, max_tokens_per_answer_x=100)


def test_other_limit(costtax_profile):
    costtax_profile(technique="bon:n=2", prompts="helpful", limit=3, max_tokens=16)


def test_cost_fails(costtax_profile):
    r = costtax_profile(technique="bon:n=4", prompts="helpful", limit=4, max_tokens=16)
    assert_cost(r, max_tokens_per_answer_x=1.05)


def test_quality_fails(costtax_profile):
    r = costtax_profile(technique="bon:n=4", prompts="helpful", limit=4, max_tokens=16)
    assert_quality(r, min_win_rate=0.0, min_reward_delta=100.0)


def test_accuracy_not_measured(costtax_profile):
    r = costtax_profile(technique="bon:n=4", prompts="helpful", limit=4, max_tokens=16)
    assert_quality(r, min_accuracy_delta=-0.02)


def test_bad_technique(costtax_profile):
    costtax_profile(technique="bestof:n=4", limit=2)


def test_negative_limit(costtax_profile):
    costtax_profile(technique="bon:n=4", limit=-3)


def test_sweep_refused(costtax_profile):
    costtax_profile(technique="bon:n=2,4", limit=2)


def test_benchmarked(costtax_profile, benchmark):
    r = costtax_profile(technique="bon:n=2", prompts="helpful", limit=4, max_tokens=16, benchmark=benchmark, rounds=2)
    assert benchmark.extra_info["costtax"]["cell"] == "bon:n=2"
'''


@pytest.fixture(scope="module")
def user_run(tmp_path_factory):
    """One pytest session in a user's directory: pass, fail, bad-argument and benchmark tests."""
    d = tmp_path_factory.mktemp("user-repo")
    (d / "costtax_factories.py").write_text(FACTORY)
    (d / "test_alignment.py").write_text(USER_TESTS)
    runs = d / "runs"
    args = [
        "test_alignment.py", f"--costtax-model={_fake_model(d)}", f"--costtax-runs={runs}",
        "--costtax-engine-factory=costtax_factories:engine", "--costtax-scorer-factory=costtax_factories:scorer",
        f"--benchmark-json={d / 'bench.json'}",
    ]
    proc = run_pytest(d, args, plugin_env(d))
    return d, proc


def _outcomes(stdout: str) -> dict[str, str]:
    return {m.group(2): m.group(1) for m in re.finditer(r"^(PASSED|FAILED|ERROR) test_alignment\.py::(\w+)", stdout, re.M)}


def test_outcomes_and_messages(user_run):
    d, proc = user_run
    out = proc.stdout + proc.stderr
    assert _outcomes(proc.stdout) == {
        "test_bon_passes": "PASSED", "test_cai_same_prompts": "PASSED", "test_other_limit": "PASSED",
        "test_cost_fails": "FAILED", "test_quality_fails": "FAILED", "test_accuracy_not_measured": "FAILED",
        "test_bad_technique": "FAILED", "test_negative_limit": "FAILED", "test_sweep_refused": "FAILED",
        "test_benchmarked": "PASSED",
    }, out[-3000:]
    assert proc.returncode == 1
    # cost failure: what, measured with CI, limit, cell, run directory
    m = re.search(r"costtax cost limit crossed in cell bon:n=4 \(run dir (\S+)\):\n.*output tokens per answer ×plain "
                  r"\[output_tokens_per_answer_x\] = [\d.]+ \(95% CI [\d.]+–[\d.]+, n=4\) > limit max_tokens_per_answer_x=1.05", out)
    assert m, out[-4000:]
    assert Path(m.group(1)).is_dir() and (Path(m.group(1)) / "summary.csv").is_file()
    assert re.search(r"costtax quality limit crossed in cell bon:n=4 \(run dir \S+\):\nE\s+eval reward Δ vs plain "
                     r"\[eval_reward_delta_vs_plain\] = [-\d.]+ \(95% CI [-\d.]+–[-\d.]+, n=4\) < limit min_reward_delta=100", out), out[-4000:]
    assert "not measured (the prompts have no reference answers" in out
    # bad arguments fail when the test runs, naming the test and the argument
    assert "test_alignment.py::test_bad_technique: costtax_profile: technique='bestof:n=4': unknown technique 'bestof'" in out
    assert "test_alignment.py::test_negative_limit: costtax_profile: limit=-3: use an integer between 1 and 100000" in out
    assert "expands to 2 cells (bon:n=2, bon:n=4)" in out
    assert "During handling" not in out


def test_one_engine_and_one_baseline_per_key(user_run):
    d, _ = user_run
    assert (d / "engine.log").read_text().split() == ["start", "close"]
    runs = sorted(p.name for p in (d / "runs").iterdir())
    baselines = [r for r in runs if r.endswith("baseline-plain")]
    # limit=4 and limit=3 (same sampling): two baselines, however many cells used them
    assert len(baselines) == 2, runs
    cell_runs = [r for r in runs if not r.endswith("baseline-plain")]
    assert len(cell_runs) >= 7
    # a cell's run directory holds the copied plain rows and the ×plain columns
    bon = d / "runs" / [r for r in cell_runs if "test_bon_passes" in r][0]
    meta = json.loads((bon / "run.json").read_text())
    assert meta["cells"] == ["plain", "bon:n=4"] and meta["baseline_from"]["run_dir"].endswith("baseline-plain")
    import csv

    with open(bon / "summary.csv") as fh:
        rows = {r["cell"]: r for r in csv.DictReader(fh)}
    assert float(rows["plain"]["latency_p50_x"]) == 1.0 and rows["bon:n=4"]["output_tokens_per_answer_x"]


def test_benchmark_json_carries_cost_and_quality(user_run):
    d, _ = user_run
    data = json.loads((d / "bench.json").read_text())
    [b] = [b for b in data["benchmarks"] if b["name"] == "test_benchmarked"]
    assert b["stats"]["rounds"] == 2
    info = b["extra_info"]
    for key in ("output_tokens_per_answer", "latency_p95_s", "eval_reward_mean", "proxy_win_rate_vs_plain", "peak_memory_bytes"):
        assert key in info, key
    m = info["costtax"]["metrics"]
    # an offline batch is one block: no within-run interval for its timing (costtax/load/blocks.py)
    assert m["latency_p95_s"]["ci95"] is None and m["latency_p95_s"]["ci_from"] == "blocks"
    assert m["output_tokens_per_answer"]["ci95"][0] <= m["output_tokens_per_answer"]["value"] <= m["output_tokens_per_answer"]["ci95"][1]
    assert m["output_tokens_per_answer"]["n"] == 4
    from costtax.cli import main

    try:
        main(["compare", str(d / "bench.json"), str(d / "bench.json")])
    except SystemExit as exc:
        assert exc.code == 0


@pytest.mark.parametrize(
    "how, expect",
    [
        (["--costtax-engine", "tgi"], "ERROR: costtax: --costtax-engine: bad value 'tgi': use one of: vllm, hf"),
        (["--costtax-model", "/no/such/model"], "ERROR: costtax: --costtax-model: bad value '/no/such/model': no such directory"),
        ("ini-engine", "ERROR: costtax: costtax_engine (ini): bad value 'tgi': use one of: vllm, hf"),
        ("ini-model", "ERROR: costtax: costtax_model (ini): bad value 'missing-dir'"),
        (["--costtax-engine-factory", "nomodule:make"], "ERROR: costtax: --costtax-engine-factory: bad value 'nomodule:make': cannot import it"),
    ],
)
def test_bad_settings_stop_collection_with_one_line(tmp_path, how, expect):
    (tmp_path / "test_a.py").write_text("def test_a(costtax_profile):\n    costtax_profile(technique='plain', limit=1)\n")
    args = ["test_a.py"]
    if how == "ini-engine":
        (tmp_path / "pytest.ini").write_text("[pytest]\ncosttax_engine = tgi\n")
    elif how == "ini-model":
        (tmp_path / "pytest.ini").write_text("[pytest]\ncosttax_model = missing-dir\n")
    else:
        args += how
    proc = run_pytest(tmp_path, args, plugin_env(tmp_path), timeout=120)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and errors[0].startswith(expect), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_sessions_without_costtax_fixtures_ignore_its_settings(tmp_path):
    (tmp_path / "test_b.py").write_text("def test_b():\n    assert True\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\ncosttax_engine = tgi\n")
    proc = run_pytest(tmp_path, ["test_b.py"], plugin_env(tmp_path), timeout=120)
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout + proc.stderr


def test_plugin_import_is_light_and_registered(tmp_path):
    name, value = _declared_entry_point()
    assert value == PLUGIN and name == PLUGIN
    code = textwrap.dedent(
        """
        import sys, importlib.metadata
        import costtax.pytest_plugin
        heavy = [m for m in ("torch", "vllm", "transformers", "pandas", "triton") if m in sys.modules]
        eps = [ep.value for ep in importlib.metadata.entry_points(group="pytest11")]
        print(heavy, "costtax.pytest_plugin" in eps)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], env=plugin_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "[] True", proc.stdout + proc.stderr
    # pytest itself lists the plugin with no -p flag
    proc = run_pytest(tmp_path, ["--co", "-q", "--trace-config"], plugin_env(tmp_path), timeout=120)
    assert "costtax.pytest_plugin" in proc.stdout, proc.stdout[-2000:]


def test_assertions_on_summary_rows():
    """assert_cost / assert_quality also take a plain summary row (no run directory: no CIs)."""
    from costtax.pytest_plugin import CosttaxLimitError, assert_cost, assert_quality

    row = {"cell": "bon:n=4", "latency_p95_x": 3.0, "output_tokens_per_answer_x": 4.0, "proxy_win_rate_vs_plain": 0.5,
           "win_rate_vs_plain": None, "eval_reward_source": "proxy", "accuracy_delta_vs_plain": float("nan")}
    assert_cost(row, max_latency_p95_x=3.0, max_tokens_per_answer_x=4.0)
    assert_quality(row, min_win_rate=0.5)
    with pytest.raises(CosttaxLimitError) as exc:
        assert_cost(row, max_latency_p95_x=2.5, max_tokens_per_answer_x=5)
    msg = str(exc.value)
    assert msg.splitlines()[0] == "costtax cost limit crossed in cell bon:n=4 (run dir ?):"
    assert "latency p95 ×plain [latency_p95_x] = 3 > limit max_latency_p95_x=2.5" in msg and "tokens" not in msg
    with pytest.raises(CosttaxLimitError) as exc:
        assert_quality(row, min_win_rate=0.6, min_accuracy_delta=-0.02)
    msg = str(exc.value)
    assert "win-rate vs plain (proxy: scored by the selection reward model) [win_rate_vs_plain] = 0.5 < limit min_win_rate=0.6" in msg
    assert "accuracy Δ vs plain [accuracy_delta_vs_plain]: not measured" in msg
    with pytest.raises(CosttaxLimitError) as exc:
        assert_cost({**row, "foreign_cpu_share": 0.4}, max_latency_p95_x=2.5)
    assert "other processes kept 40% of this machine's CPUs busy" in str(exc.value)
    with pytest.raises(CosttaxLimitError) as exc:
        assert_cost({**row, "foreign_cpu_share": 0.1}, max_latency_p95_x=2.5)
    assert "other processes" not in str(exc.value)
    with pytest.raises(TypeError, match="unknown limit"):
        from costtax.compare.assertions import _check, _COST_LIMITS

        _check("cost", row, {"max_latency": 1}, _COST_LIMITS)
