"""Calibration results of a reward model, cached on disk: each costs minutes of CPU and changes
only when what it was measured on changes (the model, its template, the data, the settings).
The measurements themselves are in rewards/calibration.py; this module only keys, reads and
writes their cache files under model_files.cache_root()/calibration/."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from ..jsonio import write_json_atomic

Event = Callable[[str, dict], None]

PAIRS_FILE = Path(__file__).parent / "data" / "judge_pairs.jsonl"


def cached(path: Path, compute: Callable[[Any], dict[str, Any]], emit: Event, msg: str) -> dict[str, Any]:
    """A calibration result from its cache file, or computed (shown as a phase with pairs done /
    total: `compute(phase)`, costtax/phases.py) and cached."""
    from ..phases import phase

    if path.is_file():
        try:
            data = json.loads(path.read_text())
            data["cached"] = str(path)
            return data
        except ValueError:
            pass
    with phase(emit, msg, unit="pairs") as ph:
        data = compute(ph)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, data)
    return data


def pairs_accuracy(scorer, emit: Event) -> dict[str, Any]:
    """The reward model's accuracy on the shipped good/bad pairs, cached per (model, template,
    pairs file, code version)."""
    from ..model_files import cache_root
    from .calibration import judge_accuracy

    prov = scorer.provenance()
    keyed = {k: prov.get(k) for k in ("name", "kind", "model_dir", "model_source", "judge_template_sha", "answer_token_ids", "dtype")}
    keyed.update(code_version())
    h = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode())
    if PAIRS_FILE.exists():
        h.update(PAIRS_FILE.read_bytes())
    path = cache_root() / "calibration" / f"{h.hexdigest()[:16]}.json"
    return cached(path, lambda ph: judge_accuracy(scorer, progress=ph.update), emit, "measuring the reward model on the shipped good/bad pairs (cached afterwards)")


def _sha_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def code_version() -> dict[str, Any]:
    """What identifies the measuring code: the version constant (bump it on any change of
    method) and the sha256 of calibration.py itself (an edit there invalidates old results)."""
    from .calibration import PUBLIC_CALIBRATION_VERSION

    return {"calibration": PUBLIC_CALIBRATION_VERSION, "calibration_py_sha256": _sha_file(Path(__file__).with_name("calibration.py"))}


# provenance fields of the reward model that change a public-calibration result
PUBLIC_KEY_FIELDS = (
    "name", "kind", "model", "model_dir", "model_source", "judge_template_sha", "answer_token_ids", "dtype", "refusal_margin",
)


def public_calibration_key(prov: dict[str, Any]) -> dict[str, Any]:
    """Everything that changes a public-calibration result, as a JSON-able dict: the model (name,
    directory, source, dtype, answer tokens), the template (its sha), the refusal margin AND the
    refusal rule's phrases (their fingerprint), the data (package version and the sha256 of every
    CSV read), the calibration settings and the code version. Needs the data package installed."""
    from . import public_sets
    from .calibration import PUBLIC_N
    from .refusal_fingerprint import refusal_rule_fingerprint

    keyed: dict[str, Any] = {k: prov.get(k) for k in PUBLIC_KEY_FIELDS}
    keyed.update(
        refusal_rule_sha256=refusal_rule_fingerprint(),
        data=public_sets.DATASET,
        version=public_sets.package_version(),
        data_sha256={f.name: _sha_file(f) for f in sorted(public_sets.data_dir().glob("*.csv"))},
        n=PUBLIC_N,
        max_chars=public_sets.MAX_RESPONSE_CHARS,
        **code_version(),
    )
    return keyed


def key_path(keyed: dict[str, Any], prefix: str = "") -> Path:
    """The cache file for a key: model_files.cache_root()/calibration/<prefix><sha256[:16]>.json."""
    from ..model_files import cache_root

    h = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode())
    return cache_root() / "calibration" / f"{prefix}{h.hexdigest()[:16]}.json"


def public_calibration(scorer, emit: Event) -> dict[str, Any]:
    """The reward model on public human-labelled responses (calibration.public_calibration: AUC
    and accuracy on a held-out part of PyRIT's labelled responses to harmful requests), cached
    under :func:`public_calibration_key`. Without the data package: {"skipped": <why, with the
    pip command>}."""
    from . import public_sets
    from .calibration import public_calibration as measure

    try:
        public_sets.data_dir()
    except ConfigError as e:
        return {"skipped": str(e), "dataset": public_sets.DATASET}
    path = key_path(public_calibration_key(scorer.provenance()), "public-")
    return cached(path, lambda ph: measure(scorer, progress=ph.update), emit,
                  f"measuring the reward model on public human labels ({public_sets.DATASET}; cached afterwards)")
