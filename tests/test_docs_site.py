"""The docs site builds with `mkdocs build --strict` (as `make test` runs it), has every page the
README's table names, copies the repository files its pages link to, and fails on a broken link
or anchor: the strictness `make test` relies on, shown on a copy of docs/ with one link broken."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
PAGES = [
    "index.md", "getting-started.md", "profile.md", "techniques-and-reward-models.md",
    "load-and-capacity.md", "served-deployments.md", "regression-suites.md", "public-benchmarks.md",
    "measurement-choices.md", "capacity-planning.md", "sandbox.md", "run-directory.md",
    "columns.md", "layout.md", "development.md",
]


def _mkdocs(root: Path, site: Path) -> subprocess.CompletedProcess:
    pytest.importorskip("mkdocs", reason="mkdocs is in the dev extra; make setup installs it")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )


def _copy_site_sources(tmp: Path) -> Path:
    root = tmp / "repo"
    root.mkdir()
    shutil.copy(ROOT / "mkdocs.yml", root / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", root / "docs")
    os.symlink(ROOT / "bench", root / "bench")
    return root


def test_site_builds_strict_with_every_page(tmp_path):
    run = _mkdocs(ROOT, tmp_path / "site")
    assert run.returncode == 0, run.stderr[-3000:]
    for page in PAGES:
        assert (tmp_path / "site" / page.replace(".md", ".html")).is_file(), page
    # a plot and a results table outside docs/ are copied in where the pages link to them
    assert (tmp_path / "site/bench/results/capacity-cpu-2026-11-27-quiet/load.png").is_file()
    assert (tmp_path / "site/bench/results/capacity-search-cpu-2026-12-02/probes.md").is_file()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"\]\(docs/([\w-]+\.md)\)", readme))
    assert named - {"index.md"} == set(PAGES) - {"index.md"}, "README's page table and the site disagree"
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert all(page in nav for page in PAGES)


@pytest.mark.parametrize(
    "broken",
    ["[x](profile.md#no-such-anchor)", "[x](no-such-page.md)", "[x](../bench/results/no-such-file.json)"],
)
def test_a_broken_link_or_anchor_fails_the_build(tmp_path, broken):
    root = _copy_site_sources(tmp_path)
    assert _mkdocs(root, tmp_path / "ok").returncode == 0  # the copy builds as it is
    page = root / "docs" / "index.md"
    page.write_text(page.read_text(encoding="utf-8") + "\n" + broken + "\n", encoding="utf-8")
    run = _mkdocs(root, tmp_path / "site")
    assert run.returncode != 0
    assert "WARNING" in run.stderr and "index.md" in run.stderr
