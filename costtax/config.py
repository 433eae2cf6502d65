"""RunConfig and technique-spec parsing. Validation only: no file-system access, no heavy imports
(file checks live in costtax.run.preflight).

Spec grammar: `name[:key=v[,v...][,key=v...]]`. A comma followed by `key=` starts a new key;
bare values extend the previous key's list. Several swept keys form a Cartesian product; each
combination is one cell, named by its canonical string: the technique's parameters in declared
order, required ones always shown, optional ones only when they differ from the default
(`bon:n=4,share_prefix=false`).
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from .engines import ENGINES as ENGINE_NAMES  # light: the engine modules load only in make_engine
from .errors import ConfigError
from .load.levels import CLOSED_LOOP, DEFAULT_LABEL, LoadLevel, parse_load, parse_search
from .model_files import DEFAULT_MODEL

_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class TechniqueSpec:
    name: str
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def param_dict(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def cell(self) -> str:
        from .techniques import get_technique

        shown = []
        for p in get_technique(self.name).params:
            value = self.param_dict.get(p.name, p.default)
            if p.required or value != p.default:
                shown.append(f"{p.name}={p.format(value)}")
        return self.name + (":" + ",".join(shown) if shown else "")

    def build(self):
        from .techniques import get_technique

        return get_technique(self.name)(**self.param_dict)


def parse_technique_spec(text: str, field: str = "--technique") -> list[TechniqueSpec]:
    """Expand one spec string into its cells (validated against the technique's parameters)."""
    from .techniques import REGISTRY, get_technique

    if not isinstance(text, str) or not text.strip():
        raise ConfigError(field, text, f"empty technique spec; use one of: {', '.join(REGISTRY)}")
    name, _, rest = text.strip().partition(":")
    name = name.strip()
    try:
        cls = get_technique(name)
    except KeyError as exc:
        raise ConfigError(field, text, exc.args[0]) from None
    schema = {p.name: p for p in cls.params}
    lists: dict[str, list[str]] = {}
    current: str | None = None
    if rest.strip():
        for part in rest.split(","):
            part = part.strip()
            if not part:
                raise ConfigError(field, text, "empty value between commas; write name:key=v1,v2")
            if "=" in part:
                key, _, value = part.partition("=")
                key = key.strip()
                if not _KEY_RE.match(key):
                    raise ConfigError(field, text, f"bad key {key!r}; write name:key=value")
                if key not in schema:
                    valid = ", ".join(schema) or "(none)"
                    raise ConfigError(field, text, f"unknown key {key!r} for {name}; valid keys: {valid}")
                if key in lists:
                    raise ConfigError(field, text, f"key {key!r} given twice; list its values once: {key}=a,b")
                lists[key] = [value]
                current = key
            else:
                if current is None:
                    raise ConfigError(field, text, f"value {part!r} has no key; write {name}:key={part}")
                lists[current].append(part)
    parsed: dict[str, list[Any]] = {}
    for key, values in lists.items():
        out = []
        for raw in values:
            try:
                value = schema[key].parse(raw)
            except ValueError as exc:
                raise ConfigError(field, text, f"{name}:{key} {exc}") from None
            if value not in out:
                out.append(value)
        parsed[key] = out
    missing = [p.name for p in cls.params if p.required and p.name not in parsed and p.default is None]
    if missing:
        raise ConfigError(field, text, f"{name} needs {', '.join(missing)}; e.g. {name}:{missing[0]}=4")
    keys = list(parsed)
    specs = []
    for combo in itertools.product(*(parsed[k] for k in keys)):
        params = {p.name: p.default for p in cls.params}
        params.update(zip(keys, combo))
        specs.append(TechniqueSpec(name, tuple((p.name, params[p.name]) for p in cls.params)))
    return specs


def expand_techniques(specs: tuple[str, ...] | list[str], field: str = "--technique") -> tuple[TechniqueSpec, ...]:
    """All cells, de-duplicated by canonical string, with a `plain` baseline added when absent."""
    cells: dict[str, TechniqueSpec] = {}
    for text in specs:
        for spec in parse_technique_spec(text, field):
            cells.setdefault(spec.cell, spec)
    if "plain" not in cells:
        cells = {"plain": TechniqueSpec("plain"), **cells}
    else:  # the baseline runs first so its numbers never depend on cell order
        cells = {"plain": cells.pop("plain"), **cells}
    return tuple(cells.values())


WARMUP_CAP = 64  # the automatic warm-up never runs more answers than this
DEFAULT_TECHNIQUES = ("plain", "bon:n=4", "cai:rounds=1")


@dataclass(frozen=True)
class RunConfig:
    """Everything one profile run needs; validated here, touched on disk only by preflight."""

    model: str = DEFAULT_MODEL
    engine: str = "vllm"
    techniques: tuple[str, ...] = DEFAULT_TECHNIQUES
    prompts: tuple[str, ...] = ("helpful",)
    # Prompts per source. K: the first K rows of every source. None (the default, as with no
    # --limit): shipped sets keep the demo's first prompts.SHIPPED_DEFAULT_LIMIT (8), a user's
    # JSONL file runs whole. The count each source actually used is written to run.json
    # (prompts.sources) and a resume or a report reads it from there.
    limit: int | None = None
    max_tokens: int = 64
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int = 0
    repeats: int = 1  # final answers per prompt inside a cell (--repeats); each answer's `repeat` index
    out: str | None = None
    reward_model: str = "judge"
    eval_reward_model: str | None = None
    constitution: str | None = None
    prefix_caching: bool = True
    trust_remote_code: bool = False
    max_model_len: int = 2048
    judge_calibration: bool = True
    # Steady state (see README "Measurement choices"): whole cells run `cell_repeats` times,
    # interleaved (plain, bon, cai, plain, bon, cai, ...); before the first repeat of each
    # (cell, load level) up to `warmup_answers` answers of the cell's own prompts run through the
    # same technique and load pattern, rows discarded (recorded as warm-up in cells.jsonl).
    cell_repeats: int = 1  # whole-cell reruns (--cell-repeats); each record's `cell_repeat` index
    warmup_answers: int | None = None  # None: one real batch's worth (see warmup_count)
    # Load levels (costtax.load.levels): batch | concurrency=C,... | rate=R,...; each (cell x level) is
    # one summary row. `level_timeout_s` caps one unit (cell x level x repeat). `load` holds the
    # specs as given (run.json's config.load); `load_levels` the LoadLevels parsed from them once.
    load: tuple[str, ...] = (DEFAULT_LABEL,)
    level_timeout_s: float | None = None
    slo_p95_s: float | None = None
    # --load search (costtax.load.search): cap, start, probe budget, answers per probe (k x C, at
    # least the minimum); oversaturation_stop: stop a loaded level whose signal keeps rising
    # (costtax.load.oversaturation). A search has no fixed levels: `load_levels` is then ().
    search_max: float | None = None
    search_start: float | None = None
    search_probes: int = 10
    search_answers_per_slot: int = 4
    search_min_answers: int = 16
    search_reprobes: int = 2  # re-measure the bracketing levels this many more times (costtax.load.search)
    oversaturation_stop: bool = True
    ignore_eos: bool = False
    # Reward micro-batcher under load: max prompt/response pairs per reward-model pass, and how
    # long the first score call of a batch waits for others.
    score_max_pairs: int = 64
    score_max_wait_ms: float = 5.0
    # gather policy: hold a reward pass up to this long for the answers still in flight (0: greedy,
    # the 5 ms micro-batch). 3000 ms: on vLLM-CPU the greedy passes split best-of-4 into cohorts that
    # alternate on the reward model; gathering kept every pass full and raised capacity
    # (docs/load-and-capacity.md, bench/results/capacity-search-repeats-cpu-2026-12-06)
    score_gather_ms: float = 3000.0
    # Served engines: `openai` drives any OpenAI-compatible server at base_url; serve=True starts
    # vLLM's OpenAI server for `model` on a free loopback port and profiles through `openai`.
    base_url: str | None = None
    serve: bool = False
    server_timeout_s: float = 600.0
    # --serve-arg: arguments for the server --serve starts (costtax.engines.serve_args says
    # which of costtax's own it may override and refuses the rest)
    serve_args: tuple[str, ...] = ()
    # --client-workers: a loaded level's answers sent from this many worker processes, each with
    # its own event loop and connection pool (costtax/run/client_workers.py); served engines only.
    client_workers: int = 1
    cells: tuple[TechniqueSpec, ...] = field(default=(), compare=False)
    load_levels: tuple[LoadLevel, ...] = field(default=(), init=False, compare=False)

    def __post_init__(self):
        if self.engine not in ENGINE_NAMES:
            raise ConfigError("--engine", self.engine, f"use one of: {', '.join(ENGINE_NAMES)}")
        if not self.techniques:
            raise ConfigError("--technique", "", "give at least one technique, e.g. --technique plain")
        if not self.prompts:
            raise ConfigError("--prompts", "", "give a prompt set name or a JSONL file")
        if self.limit is not None and not 1 <= self.limit <= 100_000:
            raise ConfigError("--limit", self.limit, "use an integer between 1 and 100000")
        if not 1 <= self.max_tokens <= 32_768:
            raise ConfigError("--max-tokens", self.max_tokens, "use an integer between 1 and 32768")
        # vLLM (SamplingParams) and OpenAI-compatible servers reject temperatures above 2: refused
        # here, before any model loads, instead of failing every cell.
        if not 0 <= self.temperature <= 2:
            raise ConfigError("--temperature", self.temperature, "use a number between 0 and 2")
        if not 0 < self.top_p <= 1:
            raise ConfigError("--top-p", self.top_p, "use a number in (0, 1]")
        if not 0 <= self.seed < 2**32:
            raise ConfigError("--seed", self.seed, "use an integer between 0 and 2**32-1")
        if not 1 <= self.repeats <= 100:
            raise ConfigError("--repeats", self.repeats, "use an integer between 1 and 100")
        if not 64 <= self.max_model_len <= 1_048_576:
            raise ConfigError("--max-model-len", self.max_model_len, "use an integer between 64 and 1048576")
        if self.max_tokens >= self.max_model_len:
            raise ConfigError("--max-tokens", self.max_tokens, f"must be below --max-model-len ({self.max_model_len})")
        if not 1 <= self.cell_repeats <= 50:
            raise ConfigError("--cell-repeats", self.cell_repeats, "use an integer between 1 and 50")
        if self.warmup_answers is not None and not 0 <= self.warmup_answers <= 10_000:
            raise ConfigError("--warmup-answers", self.warmup_answers, "use an integer >= 0 (0 disables warm-up)")
        if self.level_timeout_s is not None and not self.level_timeout_s > 0:
            raise ConfigError("--level-timeout-s", self.level_timeout_s, "use a number of seconds > 0")
        if self.slo_p95_s is not None and not self.slo_p95_s > 0:
            raise ConfigError("--slo-p95-s", self.slo_p95_s, "use a number of seconds > 0")
        if not 1 <= self.score_max_pairs <= 100_000:
            raise ConfigError("--score-max-pairs", self.score_max_pairs, "use an integer >= 1")
        if not 0 <= self.score_max_wait_ms <= 60_000:
            raise ConfigError("--score-max-wait-ms", self.score_max_wait_ms, "use milliseconds between 0 and 60000")
        if not 0 <= self.score_gather_ms <= 600_000:
            raise ConfigError("--score-gather-ms", self.score_gather_ms, "use milliseconds between 0 (off) and 600000")
        if self.serve and self.engine not in ("vllm", "openai"):
            raise ConfigError("--serve", "true", f"--serve starts vLLM's OpenAI server; it cannot be combined with --engine {self.engine}")
        if self.serve and self.base_url:
            raise ConfigError("--base-url", self.base_url, "give either --serve (costtax starts the server) or --base-url (an existing one), not both")
        if self.engine == "openai" and not self.serve and not self.base_url:
            raise ConfigError("--base-url", "", "--engine openai needs the server's URL, e.g. --base-url http://127.0.0.1:8000/v1 (or --serve)")
        if self.base_url and not str(self.base_url).startswith(("http://", "https://")):
            raise ConfigError("--base-url", self.base_url, "use an http(s) URL, e.g. http://127.0.0.1:8000/v1")
        if self.base_url and self.engine != "openai":
            raise ConfigError("--base-url", self.base_url, "only the openai engine talks to a server; add --engine openai")
        if isinstance(self.client_workers, bool) or not isinstance(self.client_workers, int) or not 1 <= self.client_workers <= 64:
            raise ConfigError("--client-workers", self.client_workers, "use an integer between 1 and 64")
        if self.client_workers > 1 and self.engine_kind != "openai":
            raise ConfigError("--client-workers", self.client_workers,
                              f"worker processes drive a served engine only (--engine openai or --serve), not the in-process {self.engine} engine")
        if not self.server_timeout_s > 0:
            raise ConfigError("--server-timeout-s", self.server_timeout_s, "use a number of seconds > 0")
        from .rewards.server_spec import check_served_config

        check_served_config(self.reward_model, "--reward-model", served_policy=self.engine_kind == "openai")
        check_served_config(self.eval_reward_model, "--eval-reward-model", served_policy=self.engine_kind == "openai")
        from .engines.serve_args import validate_serve_args

        object.__setattr__(self, "serve_args", validate_serve_args(self.serve_args, serve=self.serve))
        object.__setattr__(self, "load", tuple(self.load))
        search = parse_search(self.load)
        object.__setattr__(self, "load_levels", () if search else parse_load(self.load))
        self._check_search(search)
        object.__setattr__(self, "cells", expand_techniques(self.techniques))

    def _check_search(self, search: str | None) -> None:
        given = [(f, v) for f, v, d in (("--search-max", self.search_max, None), ("--search-start", self.search_start, None),
                                        ("--search-probes", self.search_probes, 10),
                                        ("--search-answers-per-slot", self.search_answers_per_slot, 4),
                                        ("--search-min-answers", self.search_min_answers, 16),
                                        ("--search-reprobes", self.search_reprobes, 2)) if v != d]
        if search is None:
            if given:
                raise ConfigError(given[0][0], given[0][1], "applies only to --load search (or search=rate); add it or drop this flag")
            return
        if self.slo_p95_s is None:
            raise ConfigError("--slo-p95-s", "", "--load search needs the p95 SLO it searches for, e.g. --slo-p95-s 10")
        whole = search == CLOSED_LOOP
        for flag, v in (("--search-max", self.search_max), ("--search-start", self.search_start)):
            if v is None:
                continue
            if not v > 0 or (whole and (v < 1 or int(v) != v)):
                raise ConfigError(flag, v, "use an integer >= 1 (answers in flight)" if whole else "use answers/s > 0")
        if self.search_max is not None and self.search_start is not None and self.search_start > self.search_max:
            raise ConfigError("--search-start", self.search_start, f"must not exceed --search-max ({self.search_max:g})")
        if self.search_max is None and self.search_start is not None and self.search_start > 64:
            raise ConfigError("--search-start", self.search_start, "above the default cap 64; give --search-max too")
        if not 1 <= self.search_probes <= 100:
            raise ConfigError("--search-probes", self.search_probes, "use an integer between 1 and 100")
        if not 1 <= self.search_answers_per_slot <= 1000:
            raise ConfigError("--search-answers-per-slot", self.search_answers_per_slot, "use an integer between 1 and 1000")
        if not 1 <= self.search_min_answers <= 100_000:
            raise ConfigError("--search-min-answers", self.search_min_answers, "use an integer between 1 and 100000")
        if not 0 <= self.search_reprobes <= 20:
            raise ConfigError("--search-reprobes", self.search_reprobes, "use an integer between 0 and 20 (2 or more for a drift-aware interval)")

    @property
    def search(self):
        """The SearchSpec of --load search, or None."""
        from .load.search import SearchSpec

        return SearchSpec.from_config(self)

    def warmup_count(self, level: LoadLevel, answers: int) -> int:
        """Answers the warm-up runs before the first repeat of a (cell, level): --warmup-answers
        when given, else the shape of the unit's first real engine batch (LoadLevel.warmup_count),
        at most WARMUP_CAP."""
        if self.warmup_answers is not None:
            return min(self.warmup_answers, answers)
        return level.warmup_count(answers, WARMUP_CAP)

    @property
    def engine_kind(self) -> str:
        """The engine actually driven: --serve profiles through the openai engine."""
        return "openai" if self.serve else self.engine

    def sampling_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens, "seed": self.seed, "ignore_eos": self.ignore_eos}

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("cells", "load_levels")}
        d["techniques"] = list(self.techniques)
        d["prompts"] = list(self.prompts)
        d["load"] = list(self.load)
        d["serve_args"] = list(self.serve_args)
        d["cells"] = [c.cell for c in self.cells]
        return d
