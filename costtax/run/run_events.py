"""Warnings raised during a run, recorded as run.json events.

The terminal stays quiet during `costtax profile` (engine and library output goes to
RUN_DIR/engine.log), so a warning that matters (a summary that could not be rebuilt, a reward
model that fell back to fp32, a library deprecation) must be findable without reading the log:
every Python warning raised in the profiling process while a run is open, and every WARNING or
worse logged by vLLM, transformers, torch or costtax's own loggers in that process, becomes one
``{"event": "warning", ...}`` entry in run.json's ``events``. Repeats of the same warning from
the same place add to that entry's ``count`` instead of adding entries, and at most
``MAX_WARNING_EVENTS`` distinct warnings are kept per session (the rest are counted in
``warnings_dropped``). The warning still reaches engine.log as before.

Not captured: what vLLM's spawned engine-core processes print (other processes; their lines
are in engine.log only).

Stdlib only (no torch/vllm imports).
"""
from __future__ import annotations

import logging
import re
import threading
import warnings
from pathlib import Path
from typing import Any, Callable

MAX_WARNING_EVENTS = 50
MAX_MESSAGE_CHARS = 500
LOGGERS = ("vllm", "transformers", "torch", "costtax")


class WarningEvents:
    """Context manager: while open, warnings are appended to ``events`` (run.json's list).

    ``ignore`` holds message prefixes that are dropped entirely (neither recorded nor shown),
    e.g. the NVML warning a CPU machine would repeat for every cell, which the CLI states once in
    words. Python's warning filters are restored on exit (warnings.catch_warnings), so a library
    caller's own filters are untouched after the run."""

    def __init__(self, events: list[dict[str, Any]], *, now: Callable[[], str], session: str | None = None,
                 ignore: tuple[str, ...] = ()):
        self.events = events
        self.now = now
        self.session = session
        self.ignore = ignore
        self._by_key: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._catch: warnings.catch_warnings | None = None
        self._handler: logging.Handler | None = None
        self._dropped: dict[str, Any] | None = None  # the warnings_dropped event, once there is one

    # -- recording --------------------------------------------------------------------------------
    def record(self, source: str, category: str, message: str, where: str) -> None:
        if any(message.startswith(p) for p in self.ignore):
            return
        message = message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 1] + "…"
        key = (category, message, where)
        with self._lock:
            ev = self._by_key.get(key)
            if ev is not None:
                ev["count"] += 1
                ev["last_t"] = self.now()
                return
            if len(self._by_key) >= MAX_WARNING_EVENTS:
                if self._dropped is None:
                    self._dropped = {"t": self.now(), "event": "warnings_dropped", "session": self.session, "count": 0,
                                     "limit": MAX_WARNING_EVENTS}
                    self.events.append(self._dropped)
                self._dropped["count"] += 1
                return
            ev = {"t": self.now(), "event": "warning", "source": source, "category": category, "message": message,
                  "where": where, "count": 1}
            if self.session is not None:
                ev["session"] = self.session
            self._by_key[key] = ev
            self.events.append(ev)

    # -- hooks ------------------------------------------------------------------------------------
    def __enter__(self) -> "WarningEvents":
        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        for prefix in self.ignore:
            warnings.filterwarnings("ignore", message=re.escape(prefix))
        shown = warnings.showwarning

        def showwarning(message, category, filename, lineno, file=None, line=None):
            self.record("python", category.__name__, str(message), f"{_short(filename)}:{lineno}")
            shown(message, category, filename, lineno, file, line)

        warnings.showwarning = showwarning
        self._handler = _EventHandler(self)
        for name in LOGGERS:
            logging.getLogger(name).addHandler(self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self._handler is not None:
            for name in LOGGERS:
                logging.getLogger(name).removeHandler(self._handler)
            self._handler = None
        if self._catch is not None:
            self._catch.__exit__(*exc)  # restores filters and showwarning
            self._catch = None


class _EventHandler(logging.Handler):
    def __init__(self, sink: WarningEvents):
        super().__init__(level=logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = record.getMessage()
        except Exception:  # a malformed log call must never break the run
            msg = str(record.msg)
        self.sink.record(f"logging:{record.name}", record.levelname, msg, f"{_short(record.pathname)}:{record.lineno}")


def _short(path: str) -> str:
    """site-packages/vllm/x.py -> vllm/x.py; a path inside this checkout -> relative to it."""
    p = str(path)
    for marker in ("site-packages/", "dist-packages/"):
        i = p.rfind(marker)
        if i >= 0:
            return p[i + len(marker):]
    root = str(Path(__file__).resolve().parents[2]) + "/"
    return p[len(root):] if p.startswith(root) else p

