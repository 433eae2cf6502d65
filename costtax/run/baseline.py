"""`profile(config, baseline_from=DIR)`: reuse the plain cell of an earlier run instead of
running plain again (the pytest plugin runs plain once per session and profiles each technique
against it).

The new run directory (config.out) starts with the baseline run's plain rows (calls, answers,
cells, scores of cell `plain` only; never its summary or plots) and a run.json of its own (new
run id, this config, `baseline_from: {run_dir, run_id}`); profile() then resumes it, so the
plain units count as done and only the other cells run. RunData accepts the copied rows because
run.json names the run they came from. The rows are read and written back through the one schema
(costtax.store.schema): a baseline written by an older layout is copied in the current one, fields this
costtax does not know included. The baseline must have been run with the same prompts and
sampling (the fields a resume compares), else the reuse is refused like a changed resume.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError
from ..store.records import RUN_JSON, SCHEMA_VERSION
from ..jsonio import write_json_atomic
from ..store.rundata import RunData, RunDataError, read_file
from ..store.schema import AnswerRecord, CallRecord, CellRecord, ScoreRecord, to_row
from .rundir import new_run_id

BASELINE_CELL = "plain"


def seed_from_baseline(config, baseline_dir: str | Path) -> Path:
    """Create config.out holding the baseline's plain rows and a run.json to resume; returns it."""
    if not config.out:
        raise ConfigError("baseline_from", str(baseline_dir), "give the new run an output directory (config.out)")
    try:
        base = RunData.open(baseline_dir, records=False)
    except RunDataError as exc:
        raise ConfigError("baseline_from", str(baseline_dir), str(exc)) from None
    if not any(u.cell == BASELINE_CELL and u.status == "ok" for u in read_file(CellRecord, base.path)):
        raise ConfigError("baseline_from", str(baseline_dir), "has no finished plain cell to reuse")
    out = Path(config.out)
    if (out / RUN_JSON).exists():
        raise ConfigError("--out", str(out), "already holds a run; give a new directory")
    out.mkdir(parents=True, exist_ok=True)
    for cls in (CallRecord, AnswerRecord, CellRecord, ScoreRecord):
        rows = [to_row(r) for r in read_file(cls, base.path) if r.cell == BASELINE_CELL]
        (out / cls.FILE).write_text("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows), encoding="utf-8")
    meta = dict(base.meta)
    meta["schema_version"] = SCHEMA_VERSION  # the rows above are written in this layout
    meta["baseline_from"] = {"run_dir": str(base.path), "run_id": base.run_id}
    meta["run_id"] = new_run_id()
    meta["config"] = config.to_dict()
    meta["cells"] = [c.cell for c in config.cells]
    write_json_atomic(out / RUN_JSON, meta)
    return out
