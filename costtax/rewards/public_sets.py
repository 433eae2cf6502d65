"""Public human-labelled responses for calibrating a reward model, read in place from a wheel.

The set: PyRIT's scorer-evaluation "objective" data (``pyrit==1.1.0``, MIT licence,
``pyrit/datasets/scorer_evals/objective/*.csv``). Each row is a harmful request (the
"objective"), one assistant response to it, and a human label ``human_score``: 1 when the
response carried out the harmful request, 0 when it did not (refused, deflected, gave only
safe information). 14 files (bias, exploits, privacy, violence, ...), 395 labelled rows in
1.1.0: 191 harmful, 204 not. A reward model should score the harmful ones LOWER.

Nothing is copied into costtax: the package is installed with ``pip install --no-deps
pyrit==1.1.0`` (scripts/setup_env.sh does; its own dependency tree is heavy and unused) and
the CSV files are located with ``importlib.util.find_spec`` without importing pyrit.

The set issue 13 keeps aside as an independent check of refusal detection
(``scorer_evals/refusal_scorer``) is not read here.

Split: by objective (the same request appears with several responses), so no request is in
both parts: ``dev`` (tune prompts and thresholds on it) and ``test`` (report only). The split
and the calibration subsets are fixed functions of the text (sha256), not of file order or a
random seed, so they do not move when the package reorders rows.
"""
from __future__ import annotations

import csv
import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

PACKAGE = "pyrit"
PINNED_VERSION = "1.1.0"
DATASET = "pyrit-scorer-evals-objective"
SUBDIR = ("datasets", "scorer_evals", "objective")
INSTALL = f"pip install --no-deps {PACKAGE}=={PINNED_VERSION}"
# Rows in pyrit 1.1.0 (checked by tests/rewards/test_public_sets.py against the installed files).
EXPECTED_ROWS = 395
EXPECTED_HARMFUL = 191
SPLITS = ("dev", "test")
# Calibration reads only responses up to this many characters: the judge costs ~1 s per pair
# on a 2-core CPU and grows with length (the longest response is 17k characters); costtax's
# own answers are short (64-512 tokens). 365 of the 395 rows qualify.
MAX_RESPONSE_CHARS = 2000


@dataclass(frozen=True)
class LabelledResponse:
    id: str  # "<file stem>:<row>" (row = 0-based data row in the file)
    category: str  # file stem: violence, privacy, ...
    prompt: str  # the harmful request
    response: str
    harmful: bool  # human label: the response carried out the request

    def __post_init__(self):
        if not self.prompt.strip() or not self.response.strip():
            raise ValueError(f"{self.id}: empty prompt or response")


def package_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "public calibration set", DATASET, f"package {PACKAGE} is not installed; run `{INSTALL}` (make setup does)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def package_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        return None


def data_dir() -> Path:
    d = package_dir().joinpath(*SUBDIR)
    if not d.is_dir():
        raise ConfigError(
            "public calibration set",
            DATASET,
            f"{d} not found in {PACKAGE} {package_version()}; install the version costtax reads: `{INSTALL}`",
        )
    return d


def _parse_label(value: str, where: str) -> bool:
    v = value.strip()
    if v in ("1", "1.0", "True", "true"):
        return True
    if v in ("0", "0.0", "False", "false"):
        return False
    raise ValueError(f"{where}: human_score {value!r} is not 0/1")


def load_objective_set(folder: Path | None = None) -> list[LabelledResponse]:
    """Every labelled row, files in name order, rows in file order.

    The CSVs start with a ``# dataset_version=...`` comment line, then a header with at least
    ``objective``, ``assistant_response``, ``human_score`` (column order differs by file);
    rows that are empty, or whose ``data_type`` is not text, are skipped."""
    folder = data_dir() if folder is None else Path(folder)
    out: list[LabelledResponse] = []
    for f in sorted(folder.glob("*.csv")):
        with f.open(encoding="utf-8", newline="") as fh:
            rows = [r for r in csv.reader(fh)]
        rows = [r for r in rows if any(c.strip() for c in r)]
        if rows and rows[0] and rows[0][0].lstrip().startswith("#"):
            rows = rows[1:]
        if not rows:
            continue
        header = [h.strip() for h in rows[0]]
        for need in ("objective", "assistant_response", "human_score"):
            if need not in header:
                raise ValueError(f"{f.name}: no {need!r} column (header {header})")
        for i, r in enumerate(rows[1:]):
            d = dict(zip(header, r))
            if d.get("data_type", "text").strip() not in ("", "text"):
                continue
            out.append(
                LabelledResponse(
                    id=f"{f.stem}:{i}",
                    category=f.stem,
                    prompt=d["objective"].strip(),
                    response=d["assistant_response"].strip(),
                    harmful=_parse_label(d["human_score"], f"{f.name} row {i}"),
                )
            )
    return out


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split_of(item: LabelledResponse) -> str:
    """'dev' or 'test', by the request's text (about half each)."""
    return "dev" if int(_sha(item.prompt)[:8], 16) % 2 == 0 else "test"


def calibration_subset(
    items: list[LabelledResponse], split: str, n: int, *, max_chars: int = MAX_RESPONSE_CHARS
) -> list[LabelledResponse]:
    """A fixed, label-balanced subset of one split: n // 2 harmful and n - n // 2 not (fewer
    when the split has fewer), responses up to ``max_chars``, picked in sha256(id) order."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    pool = sorted(
        (x for x in items if split_of(x) == split and len(x.response) <= max_chars), key=lambda x: _sha(x.id)
    )
    harmful = [x for x in pool if x.harmful][: n // 2]
    safe = [x for x in pool if not x.harmful][: n - n // 2]
    chosen = {x.id for x in harmful + safe}
    return [x for x in pool if x.id in chosen]


def describe() -> dict:
    """Where the data came from, for run.json."""
    return {
        "dataset": DATASET,
        "package": PACKAGE,
        "version": package_version(),
        "license": "MIT",
        "data_path": "/".join((PACKAGE, *SUBDIR)),
        "label": "human_score 1 = the response carried out the harmful request",
    }
