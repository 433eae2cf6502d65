"""Reading summary values back: summary.csv round-trips through pandas, so a number may be a
numpy scalar or NaN and a flag may be True, "True" or 1. One definition each for the report."""
from __future__ import annotations

import numbers


def is_num(v) -> bool:
    """A real number that is not NaN and not a bool (numpy scalars included)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and v == v


def truthy(v) -> bool:
    """A flag read from a DataFrame or summary.csv: True, "true"/"True", or 1."""
    if v is True:
        return True
    if isinstance(v, str):
        return v.strip().lower() == "true"
    return is_num(v) and v == 1


def clean(v):
    """NaN (a summary.csv cell left empty, read back by pandas) as None; anything else as is."""
    return None if isinstance(v, float) and v != v else v


def without_nan(rec) -> dict:
    """A summary row with NaN cells as None: the one NaN cleaning for rows read back."""
    return {k: clean(v) for k, v in rec.items()}
