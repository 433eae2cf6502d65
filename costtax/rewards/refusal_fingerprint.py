"""A fingerprint of the phrase-based refusal rule (costtax.rewards.refusal_rule.is_refusal).

Anything that changes which responses count as refusals changes calibration results that use
the rule (judge + rule, rule alone), so the calibration cache key and the calibration data
file's provenance both carry this hash. The phrases are read at call time from the module that
defines them, so a changed (or monkeypatched) phrase changes the fingerprint.
"""
from __future__ import annotations

import hashlib
import json

# The names that define the rule (costtax/rewards/refusal_rule.py).
RULE_FIELDS = (
    "REFUSAL_PATTERNS",
    "SOFT_REFUSAL_PATTERNS",
    "PARTIAL_COMPLIANCE_PATTERN",
    "NOT_REFUSAL_IDIOMS",
    "REFUSAL_WINDOW_CHARS",
)


def refusal_rule_fields() -> dict:
    """{name: value} for every field of the rule, read from costtax.rewards.refusal_rule (the
    module that defines it; missing ones as None)."""
    from . import refusal_rule

    return {name: getattr(refusal_rule, name, None) for name in RULE_FIELDS}


def refusal_rule_fingerprint() -> str:
    """sha256 of the rule's phrases, patterns and window, as JSON."""
    blob = json.dumps(refusal_rule_fields(), sort_keys=True, default=list)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()
