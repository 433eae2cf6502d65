"""Phases of a run that take more than a moment, announced through profile()'s event callback.

    with phase(emit, "loading reward model judge") as ph:
        ...
        ph.update(done, total)        # optional: a count (pairs scored, answers judged)

emits ``phase_start`` {phase, id, total, unit, log}, ``phase_progress`` {id, done, total} and
``phase_end`` {id, phase, wall_s, ok}. costtax/console/display.py's RunDisplay shows a spinner with the
elapsed time (a bar when there is a count, the last line of ``log`` when one is named) on a
terminal, and one line at the start and one at the end (with the duration) off a terminal.
The block runs on the caller's thread (engine and server starts stay on the main thread);
the display refreshes from its own. Stdlib only.
"""
from __future__ import annotations

import itertools
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

Event = Callable[[str, dict], None]
_ids = itertools.count(1)
ENGINE_LOG = "engine"  # phase(log=...): the run's engine.log, wherever the display keeps it


class Phase:
    def __init__(self, emit: Event, pid: int, total: int | None):
        self._emit = emit
        self.id = pid
        self.total = total
        self.done = 0

    def update(self, done: int, total: int | None = None) -> None:
        """`done` of `total` (the phase's total when not given) items finished so far."""
        if total is not None:
            self.total = total
        self.done = done
        self._emit("phase_progress", {"id": self.id, "done": done, "total": self.total})

    def advance(self, k: int = 1) -> None:
        self.update(self.done + k)


@contextmanager
def phase(emit: Event | None, name: str, *, total: int | None = None, unit: str = "", log: str | None = None,
          hint: str | None = None) -> Iterator[Phase]:
    """`log`: a log file whose newest line names the stage (ENGINE_LOG: the run's engine.log);
    `hint`: what to show until that log has a new line."""
    emit = emit or (lambda kind, data: None)
    ph = Phase(emit, next(_ids), total)
    emit("phase_start", {"phase": name, "id": ph.id, "total": total, "unit": unit, "log": log, "hint": hint})
    t0 = time.monotonic()
    ok = False
    try:
        yield ph
        ok = True
    finally:
        emit("phase_end", {"phase": name, "id": ph.id, "wall_s": time.monotonic() - t0, "ok": ok})


def counter(ph: Phase) -> Callable[[int], Any]:
    """A callback adding k items to `ph` (for scoring loops that report batches)."""
    return ph.advance
