"""One line of the live display per running phase or cell (costtax/console/display.py's RunDisplay).

    ⠹ starting vllm engine (cold st…  ━━━      0:00:12  Loading weights took 0.52 seconds
    ⠼ bon:n=4                         ━━━━━━╺   5/8 answers 0:00:31  ETA 0:00:18

Spinner (a tick when done), label in a fixed-width column (the bars line up), a bar when there is
a count (a short sweeping segment when not), done/total, elapsed, and the ETA or, for a start,
the newest line its log gained since the phase began. Never wider than the given width.
Stdlib only; the task is a rich.progress.Task (duck-typed).
"""
from __future__ import annotations

import os

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
SHORT_PHASE_S = 0.5


def _clock(seconds: float | None) -> str:
    s = int(seconds or 0)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def log_stage(path, since: int = 0) -> str:
    """The last line of a log (vLLM's engine or server log) written after byte `since`, minus its
    level/time/source prefix: names the stage a start is in ("Loading weights took 0.52
    seconds"). '' when unreadable or nothing new."""
    import re

    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(since, f.tell() - 4096))
            tail = f.read().decode("utf-8", errors="replace")
    except (OSError, TypeError):
        return ""
    lines = [line.strip() for line in tail.replace("\r", "\n").splitlines() if line.strip()]
    if not lines:
        return ""
    line = re.sub(r"\x1b\[[0-9;]*m", "", lines[-1])
    # "(EngineCore pid=12) INFO 12-02 09:40:01 [core.py:123] text" -> "text"
    line = re.sub(r"^(\(\w+ pid=\d+\)\s*)?(INFO|WARNING|DEBUG|ERROR)\s+\S+\s+\S+\s+\[[^\]]*\]\s*", "", line)
    return line


def file_size(path) -> int:
    try:
        return os.path.getsize(path) if path else 0
    except OSError:
        return 0


def progress_line(task, width: int, log_path=None, log_since: int = 0) -> str:
    """One task of the live display as one line of at most `width` columns: spinner (a tick when
    done), label, bar (a count) or a moving segment (no count), done/total unit, elapsed, and
    ETA (a count) or the log's last line (a start)."""
    import time as _t

    f = task.fields
    done_mark = "✓" if task.finished else SPINNER[int(_t.monotonic() * 8) % len(SPINNER)]
    label = task.description
    label_w = max(12, min(34, width // 3))  # one width for every line: the bars line up
    if len(label) > label_w:
        label = label[: label_w - 1] + "…"
    parts = [done_mark, label.ljust(label_w)]
    count = ""
    if task.total is not None:
        count = f"{int(task.completed)}/{int(task.total)} {f.get('unit', '')}".rstrip()
    elapsed = _clock(task.finished_time if task.finished else task.elapsed)
    tail = ""
    if task.total is not None and not task.finished and log_path is None:
        left = task.time_remaining if task.completed else None
        tail = f"ETA {_clock(left)}" if left is not None else "ETA -:--:--"
    elif log_path is not None and not task.finished:
        tail = log_stage(log_path, log_since) or task.fields.get("hint") or ""
    fixed = sum(len(x) + 1 for x in parts) + (len(count) + 1 if count else 0) + len(elapsed)
    if log_path is not None:  # a start: the log's stage is the news, a short sweep says "alive"
        bar_w = 8
    else:
        bar_w = max(6, min(30, width - fixed - 1 - (len(tail) + 2 if tail else 0)))
    if task.total:
        filled = int(bar_w * min(task.completed, task.total) / task.total)
        bar = "━" * filled + "╺" * (filled < bar_w) + " " * max(0, bar_w - filled - 1)
    else:  # alive, no count: a segment sweeping the bar
        pos = int(_t.monotonic() * 8) % (2 * bar_w - 6 if bar_w > 6 else 1)
        pos = pos if pos <= bar_w - 3 else 2 * bar_w - 6 - pos
        bar = " " * pos + "━━━" + " " * max(0, bar_w - pos - 3)
        if task.finished:
            bar = "━" * bar_w
    line = " ".join(parts + [bar[:bar_w]] + ([count] if count else []) + [elapsed])
    if tail and len(line) + 2 < width:
        line += "  " + tail[: width - len(line) - 2]
    return line[:width]


