"""The runner's side of the capacity search (costtax/load/search.py decides, this reads what was run):
which (cell, level, cell repeat, probe) unit to run next, from the rows written so far, read
through the one reader; units already recorded are skipped, so a resume reruns nothing."""
from __future__ import annotations

from typing import Any

from ..load.levels import LoadLevel
from ..load.search import _capacity, _probe, replay, reprobes_wanted, SearchSpec, verdicts


class SearchUnits:
    """The runner's side: yields (cell spec, level, cell repeat) units round by round, every
    cell's next probe in turn (plain first; repeats interleaved as for fixed levels), reading
    the rows written so far to decide; skips units already recorded (resume)."""

    def __init__(self, run_dir, config, spec: SearchSpec):
        self.run_dir, self.config, self.spec = run_dir, config, spec
        self.probed: dict[str, list[str]] = {c.cell: [] for c in config.cells}

    def _rows(self):
        """cells.jsonl and answers.jsonl read through the one reader, as the report's flat rows."""
        from ..store.rundata import Answer, Unit, as_row, read_file

        return [as_row(u) for u in read_file(Unit, self.run_dir)], [as_row(a) for a in read_file(Answer, self.run_dir)]

    def _recorded(self) -> set[tuple[str, str, int, int]]:
        from ..store.rundata import Unit, read_file

        return {(u.cell, u.load.label, u.cell_repeat, u.probe) for u in read_file(Unit, self.run_dir)}

    def _round(self) -> list[tuple[Any, LoadLevel, int]]:
        cell_rows, answers = self._rows()
        recorded = {(r["cell"], r.get("load"), int(r.get("cell_repeat", 0)), _probe(r)) for r in cell_rows}
        todo = []
        for c in self.config.cells:
            seq, nxt = replay(self.spec, verdicts(self.spec, c.cell, cell_rows, answers, self.config.cell_repeats))
            self.probed[c.cell] = [self.spec.level(v.value).label for v, _ in seq]
            if nxt is not None:
                todo.append((c, self.spec.level(nxt[0]), 0))
                continue
            for v, p in reprobes_wanted(self.spec, _capacity(self.spec, seq), self.config.cell_repeats):
                lvl = self.spec.level(v)
                if any((c.cell, lvl.label, k, p) not in recorded for k in range(self.config.cell_repeats)):
                    todo.append((c, lvl, p))
        return todo

    def __bool__(self) -> bool:
        return bool(self._round())

    def __iter__(self):
        while True:
            todo = self._round()
            if not todo:
                return
            recorded = self._recorded()
            yielded = []
            for k in range(self.config.cell_repeats):
                for spec, level, p in todo:
                    if (spec.cell, level.label, k, p) not in recorded:
                        yielded.append((spec.cell, level.label, k, p))
                        yield spec, level, k, p
            recorded = self._recorded()
            missing = [u for u in yielded if u not in recorded]
            if missing or not yielded:
                raise RuntimeError(f"search: probe units left no record: {missing or todo}")

    def units_of(self, cell: str) -> list[tuple[str, str, int]]:
        self._round()
        return [(cell, LoadLevel.from_label(label), k) for label in self.probed.get(cell, []) for k in range(self.config.cell_repeats)]
