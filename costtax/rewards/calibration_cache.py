"""Calibration results of a reward model, cached on disk: each costs minutes of CPU and changes
only when what it was measured on changes (the model, its template, the data, the settings).
The measurements themselves are in rewards/calibration.py; this module only keys, reads and
writes their cache files under models.cache_root()/calibration/."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from ..records import write_json_atomic

Event = Callable[[str, dict], None]

PAIRS_FILE = Path(__file__).parent / "data" / "judge_pairs.jsonl"


def cached(path: Path, compute: Callable[[], dict[str, Any]], emit: Event, msg: str) -> dict[str, Any]:
    """A calibration result from its cache file, or computed (announced) and cached."""
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            data["cached"] = str(path)
            return data
        except ValueError:
            pass
    emit("status", {"msg": msg})
    data = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, data)
    return data


def pairs_accuracy(scorer, emit: Event) -> dict[str, Any]:
    """The reward model's accuracy on the shipped good/bad pairs, cached per (model, template,
    pairs file)."""
    from ..model_files import cache_root
    from .calibration import judge_accuracy

    prov = scorer.provenance()
    keyed = {k: prov.get(k) for k in ("name", "kind", "model_dir", "model_source", "judge_template_sha", "answer_token_ids", "dtype")}
    h = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode())
    if PAIRS_FILE.exists():
        h.update(PAIRS_FILE.read_bytes())
    path = cache_root() / "calibration" / f"{h.hexdigest()[:16]}.json"
    return cached(path, lambda: judge_accuracy(scorer), emit, "measuring the reward model on the shipped good/bad pairs (cached afterwards)")


def public_calibration(scorer, emit: Event) -> dict[str, Any]:
    """The reward model on public human-labelled responses (calibration.public_calibration: AUC
    and accuracy on a held-out part of PyRIT's labelled responses to harmful requests), cached per
    (model, template, data package version, calibration settings) like pairs_accuracy. Without
    the data package: {"skipped": <why, with the pip command>}."""
    from ..model_files import cache_root
    from . import public_sets
    from .calibration import PUBLIC_CALIBRATION_VERSION, PUBLIC_N
    from .calibration import public_calibration as measure

    try:
        public_sets.data_dir()
    except ConfigError as e:
        return {"skipped": str(e), "dataset": public_sets.DATASET}
    prov = scorer.provenance()
    fields = ("name", "kind", "model_dir", "model_source", "judge_template_sha", "answer_token_ids", "dtype", "refusal_margin")
    keyed = {k: prov.get(k) for k in fields}
    keyed.update(
        data=public_sets.DATASET,
        version=public_sets.package_version(),
        n=PUBLIC_N,
        max_chars=public_sets.MAX_RESPONSE_CHARS,
        calibration=PUBLIC_CALIBRATION_VERSION,
    )
    h = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode())
    path = cache_root() / "calibration" / f"public-{h.hexdigest()[:16]}.json"
    return cached(path, lambda: measure(scorer), emit,
                  f"measuring the reward model on public human labels ({public_sets.DATASET}; cached afterwards)")
