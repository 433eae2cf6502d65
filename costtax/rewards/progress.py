"""Progress of a long scoring call (calibration, evaluation scoring), without changing it.

    with batch_progress(model, total, callback):
        model.score(prompts, responses)      # one call: same batches, same recorded timing

`callback(done, total)` runs after every batch the model scores. Reward models built on
rewards/_hf.py report their batches through their ``on_batch_scored`` hook; any other model
reports once, when the block ends. Stdlib only.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

Progress = Callable[[int, int], Any]


def _hookable(model: Any) -> Any:
    """The object that owns the batch hook: the model itself or the one it wraps (RefusalJudge)."""
    for m in (model, getattr(model, "model", None)):
        if m is not None and hasattr(m, "on_batch_scored"):
            return m
    return None


@contextmanager
def batch_progress(model: Any, total: int, callback: Progress | None) -> Iterator[None]:
    if callback is None:
        yield
        return
    done = [0]

    def tick(k: int) -> None:
        done[0] = min(total, done[0] + int(k))
        callback(done[0], total)

    owner = _hookable(model)
    before = owner.on_batch_scored if owner is not None else None
    if owner is not None:
        owner.on_batch_scored = tick
    callback(0, total)
    try:
        yield
    finally:
        if owner is not None:
            owner.on_batch_scored = before
    callback(total, total)


class AnswerCount:
    """Answers evaluated so far (sandboxed programs finishing on worker threads, judged pairs),
    reported to ``progress(done)``; thread-safe, never above ``total``."""

    def __init__(self, total: int, progress: Callable[[int], Any] | None):
        import threading

        self.total, self.progress, self.done = total, progress, 0.0
        self._lock = threading.Lock()

    def set(self, done: float) -> None:
        with self._lock:
            self.done = min(self.total, done)
            if self.progress is not None:
                self.progress(int(self.done))

    def share(self, answers: int, programs: int) -> Callable[[], None]:
        """A callback advancing by answers/programs per finished program (candidates included)."""
        step = answers / programs if programs else 0
        return lambda: self.set(self.done + step)
