"""What `costtax profile` shows on the terminal, and where everything else goes.

* EngineLog: for the length of a run, file descriptors 1 and 2 point at RUN_DIR/engine.log, so
  vLLM's INFO lines, library warnings and the chatter of vLLM's *spawned* engine processes
  (which inherit the descriptors) land in the log, not on the terminal. Redirecting at the
  descriptor level is the only way to reach those child processes; Python-level redirection
  (sys.stdout) would not.
* RunDisplay: turns profile()'s events into one line per phase and, on a terminal, a progress
  bar per cell (answers done / total, elapsed, ETA). Off a terminal (CI, pipes) it prints plain
  lines only: one per phase, one per cell start and end.

No torch/vllm imports here; rich is a core dependency.
"""
from __future__ import annotations

import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

from ..errors import CosttaxError
from .live_line import SHORT_PHASE_S, file_size, log_stage  # noqa: F401  (log_stage: re-exported)
from ..load.levels import DEFAULT_LABEL

ENGINE_LOG = "engine.log"
NO_GPU_NOTE = "no NVIDIA GPU: GPU memory and energy columns are empty"


def terminal_width(stream: IO[str] | None) -> int | None:
    """Columns of the terminal `stream` writes to; None off a terminal (a pipe, a file, CI).

    Asked of the stream's own descriptor, so it holds while fds 1/2 point at engine.log
    (`costtax profile`): rich would fall back to stdin or 80 columns there."""
    try:
        if stream is None or not stream.isatty():
            return None
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return None


def _terminal_stream(stream: IO[str]) -> tuple[IO[str], bool]:
    """A stream that keeps reaching what `stream` reaches now, after fds 1/2 are redirected.

    A real stdout/stderr (fd 1 or 2) gets a private duplicate of its descriptor; anything else
    (pytest's or click's capture objects, a StringIO) is not behind fd 1/2 and is kept as is."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return stream, False
    if fd not in (1, 2):
        return stream, False
    stream.flush()
    dup = os.fdopen(os.dup(fd), "w", buffering=1, encoding=getattr(stream, "encoding", None) or "utf-8", errors="replace")
    return dup, True


class EngineLog:
    """Context manager: fds 1 and 2 -> a log file until exit; `terminal_out`/`terminal_err` still
    reach the terminal. The log starts in a temporary file (the run directory is not known
    until profile() has checked the flags) and moves into RUN_DIR/engine.log on `move_to`.
    With `echo`, new log lines are also written to the terminal (`-v/--verbose`)."""

    def __init__(self, *, echo: bool = False, out: IO[str] | None = None, err: IO[str] | None = None):
        self.echo = echo
        self._out_src = out or sys.stdout
        self._err_src = err or sys.stderr
        self.path: Path | None = None
        self._saved: list[int] = []
        self._lock = threading.Lock()
        self._tail_pos = 0
        self._stop = threading.Event()
        self._tailer: threading.Thread | None = None
        self._echo_write = None

    # -- descriptors ---------------------------------------------------------------------------
    @staticmethod
    def _flush() -> None:
        for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                s.flush()
            except Exception:
                pass

    def _point_fds_at(self, fd: int) -> None:
        self._flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)

    def __enter__(self) -> "EngineLog":
        self.terminal_out, self._own_out = _terminal_stream(self._out_src)
        self.terminal_err, self._own_err = _terminal_stream(self._err_src)
        fd, name = tempfile.mkstemp(prefix="costtax-engine-", suffix=".log")
        self.path = Path(name)
        self._flush()
        self._saved = [os.dup(1), os.dup(2)]
        self._point_fds_at(fd)
        os.close(fd)
        if self.echo:
            self._tailer = threading.Thread(target=self._tail, name="costtax-engine-log-echo", daemon=True)
            self._tailer.start()
        return self

    def move_to(self, run_dir: str | Path) -> Path:
        """Continue the log in RUN_DIR/engine.log (appended: a resumed run keeps earlier sessions')."""
        target = Path(run_dir) / ENGINE_LOG
        if self.path == target:
            return target
        with self._lock:
            self._flush()
            old = self.path
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            if old is not None and old.exists():
                data = old.read_bytes()
                os.write(fd, data)
                self._drain(old)  # echo what the old file still held before switching
                old.unlink()
            self._point_fds_at(fd)
            os.close(fd)
            self.path = target
            self._tail_pos = target.stat().st_size
        return target

    def __exit__(self, exc_type, exc, tb) -> None:
        self._flush()
        if self._saved:
            os.dup2(self._saved[0], 1)
            os.dup2(self._saved[1], 2)
            for fd in self._saved:
                os.close(fd)
            self._saved = []
        if self._tailer is not None:
            self._stop.set()
            self._tailer.join(timeout=2)
            with self._lock:
                self._drain(self.path)
        # A run that stopped before it had a directory: bad input (a CosttaxError, reported in
        # one line) or an empty log leaves nothing behind; any other error keeps the log where
        # it is (the CLI names it).
        if self.path is not None and self.path.name != ENGINE_LOG and self.path.exists():
            bad_input = exc_type is not None and issubclass(exc_type, CosttaxError)
            if bad_input or self.path.stat().st_size == 0:
                self.path.unlink()
                self.path = None
        for own, s in ((self._own_out, self.terminal_out), (self._own_err, self.terminal_err)):
            if own:
                try:
                    s.close()
                except Exception:
                    pass

    # -- --verbose echo -------------------------------------------------------------------------
    def set_echo_writer(self, write) -> None:
        """Where echoed log text goes (the progress display's console); default terminal_err."""
        self._echo_write = write

    def _drain(self, path: Path | None) -> None:
        if not self.echo or path is None or not path.exists():
            return
        with open(path, "rb") as f:
            f.seek(self._tail_pos)
            data = f.read()
        if not data:
            return
        # only whole lines; the rest waits for its newline (or for exit)
        cut = data.rfind(b"\n") + 1 if not self._stop.is_set() else len(data)
        if cut == 0:
            return
        self._tail_pos += cut
        text = data[:cut].decode("utf-8", errors="replace")
        try:
            (self._echo_write or self.terminal_err.write)(text)
        except Exception:
            pass

    def _tail(self) -> None:
        while not self._stop.wait(0.2):
            with self._lock:
                self._drain(self.path)


def _line_column(display: "RunDisplay"):
    from rich.progress import ProgressColumn

    from .live_line import progress_line
    from rich.text import Text

    class LineColumn(ProgressColumn):
        max_refresh = None

        def render(self, task):
            path = display._log_path(task.fields.get("log"))
            return Text(progress_line(task, display.width - 1, path, task.fields.get("log_since") or 0), no_wrap=True, overflow="crop")

    return LineColumn()


class RunDisplay:
    """profile() events -> terminal. Events used: run_dir, status, cell_start, unit_start
    {cell, total, done}, answer_done {cell, done, total}, cell_done, cell_failed, and the phase
    events of costtax/phases.py (phase_start/phase_progress/phase_end); unknown events are
    ignored. At run_dir it also prints the prompts used per source (from run.json) and, without
    an NVIDIA GPU, says so once.

    On a terminal: one live line per running phase or cell (spinner, bar or count, elapsed,
    ETA or the engine log's last line), refreshed 8 times a second from rich's own thread, so
    a phase that blocks the main thread (engine start) still moves; a finished phase leaves
    one line with its duration. Off a terminal: a line when a phase starts and one when it
    ends, with its duration; per-answer events print nothing. The width is the stream's own
    terminal's (fds 1/2 may point at engine.log meanwhile)."""

    def __init__(self, stream: IO[str], *, tty: bool | None = None, log: EngineLog | None = None, gpu_check: bool = True,
                 width: int | None = None):
        from rich.console import Console

        self.tty = stream.isatty() if tty is None else tty
        self.width = width or terminal_width(stream) or 80
        self.console = Console(file=stream, force_terminal=self.tty, no_color=not self.tty, width=self.width if self.tty else 1000,
                               highlight=False, soft_wrap=not self.tty)
        self.log = log
        self.gpu_check = gpu_check
        self.progress = None
        self.tasks: dict[str, Any] = {}
        self.phases: dict[int, Any] = {}  # phase id -> task id (terminal) or start data (off one)
        self.lines = 0  # plain lines printed (the progress bars aside)
        if log is not None and log.echo:
            log.set_echo_writer(lambda text: self._print(text.rstrip("\n"), count=False))

    def _print(self, msg: str, *, count: bool = True) -> None:
        target = self.progress.console if self.progress is not None else self.console
        target.print(msg, markup=False, highlight=False)
        if count:
            self.lines += 1

    def line(self, msg: str) -> None:
        self._print(f"costtax: {msg}")

    def say(self, msg: str) -> None:
        """A line without the costtax: prefix (wrapped at the terminal's width like the others)."""
        self._print(msg)

    def _ensure_progress(self):
        if self.progress is None and self.tty:
            from rich.progress import Progress

            # redirect_*=False: sys.stdout/err must keep going to the engine log, not to the bars
            self.progress = Progress(_line_column(self), console=self.console, redirect_stdout=False, redirect_stderr=False,
                                     refresh_per_second=8)
            self.progress.start()
        return self.progress

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def _cell_task(self, data: dict, total=None, done: int = 0):
        cell = _unit(data)
        task = self.tasks.get(cell)
        if task is None and self._ensure_progress() is not None:
            task = self.tasks[cell] = self.progress.add_task(cell, total=total, completed=done, unit="answers")
        return task

    def _settle(self, task_id) -> None:
        """A finished cell's bar becomes a printed line: the live area keeps only what runs."""
        from .live_line import progress_line

        line = progress_line(self._task(task_id), self.width - 1, None)
        self.progress.remove_task(task_id)
        self._print(line, count=False)
        self._idle()

    def _idle(self) -> None:
        """Nothing left to animate: the live display stops (and restarts with the next task), so
        what the command prints next (a table on stdout) never meets a redraw."""
        if self.progress is not None and not self.progress.tasks:
            self.close()

    def _log_path(self, log):
        """phase(log=...): "engine" is this run's engine.log (wherever EngineLog keeps it now)."""
        if log == "engine":
            return self.log.path if self.log is not None else None
        return log

    def _task(self, task_id):
        return next(t for t in self.progress.tasks if t.id == task_id)

    def __call__(self, kind: str, data: dict) -> None:
        """A display problem never stops a run: it is reported once and the display goes on."""
        try:
            self._handle(kind, data)
        except Exception as exc:  # noqa: BLE001
            if not getattr(self, "_display_error", False):
                self._display_error = True
                try:
                    self.line(f"progress display error (the run goes on): {type(exc).__name__}: {exc}")
                except Exception:  # noqa: BLE001
                    pass

    def _handle(self, kind: str, data: dict) -> None:
        if kind == "run_dir":
            # The flags passed preflight: from here on the run has a directory and a log.
            if self.log is not None:
                path = self.log.move_to(data["run_dir"])
                self.line(f"run directory {data['run_dir']} (engine log: {path.name})")
            else:
                self.line(f"run directory {data['run_dir']}")
            sources = _recorded_sources(data["run_dir"])
            if sources:
                self.line(prompts_line(sources))
            if self.gpu_check:
                note = gpu_note()
                if note:
                    self.line(note)
        elif kind == "status":
            self.line(data["msg"])
        elif kind in ("phase_start", "phase_progress", "phase_end"):
            self._phase(kind, data)
        elif kind == "cell_start":
            # on a terminal the cell's bar appears with its total (unit_start), after its warm-up
            if not self.tty:
                self.line(f"cell {_unit(data)} ...")
        elif kind == "unit_start":
            task = self._cell_task(data, data.get("total"), data.get("done") or 0)
            if task is not None:
                self.progress.update(task, total=data.get("total"), completed=data.get("done") or 0)
        elif kind == "answer_done":
            task = self._cell_task(data, data.get("total"))
            if task is not None:
                self.progress.update(task, completed=data.get("done", 0), total=data.get("total"))
        elif kind == "cell_done":
            cell = _unit(data)
            task = self.tasks.pop(cell, None)
            if task is not None and self.progress is not None:
                total = self._task(task).total or data.get("answers") or 0
                self.progress.update(task, completed=total, total=total)
                self.progress.stop_task(task)
                self._settle(task)
            else:
                self.line(f"cell {cell}: {data['answers']} answers in {data['wall_s']:.1f} s")
        elif kind == "cell_failed":
            task = self.tasks.pop(_unit(data), None)
            if task is not None and self.progress is not None:
                self.progress.update(task, description=f"{_unit(data)} FAILED")
                self.progress.stop_task(task)
                self._settle(task)
            self.line(f"cell {_unit(data)} FAILED: {data['error']}")

    def _phase(self, kind: str, data: dict) -> None:
        pid = data.get("id")
        if kind == "phase_start":
            if self._ensure_progress() is not None:
                self.phases[pid] = self.progress.add_task(data["phase"], total=data.get("total"), unit=data.get("unit") or "",
                                                          log=data.get("log"), log_since=file_size(self._log_path(data.get("log"))),
                                                          hint=data.get("hint"))
            else:
                self.phases[pid] = data
                self.line(f"{data['phase']} ...")
        elif kind == "phase_progress":
            task = self.phases.get(pid)
            if task is not None and self.progress is not None:
                self.progress.update(task, completed=data.get("done") or 0, total=data.get("total"))
        elif kind == "phase_end":
            task = self.phases.pop(pid, None)
            if self.progress is not None and task is not None:
                self.progress.remove_task(task)
                self._idle()
            how = "done" if data.get("ok", True) else "stopped"
            # on a terminal a phase too short to notice leaves no line; off one, every phase ends in one
            if not self.tty or not data.get("ok", True) or (data.get("wall_s") or 0) >= SHORT_PHASE_S:
                self.line(f"{data['phase']}: {how} in {data.get('wall_s', 0):.1f} s")


def _unit(data: dict) -> str:
    """A cell's display name; load level and repeat shown where the run has more than one."""
    load, k = data.get("load", DEFAULT_LABEL), int(data.get("cell_repeat") or 0)
    if load == DEFAULT_LABEL and k == 0:
        return str(data.get("cell"))
    return f"{data.get('cell')} [{load}, repeat {k + 1}]"


def prompts_line(sources: list[dict]) -> str:
    """'18 prompts: helpful 8 of 50, my.jsonl 10 of 10' from run.json's prompts.sources."""
    used = sum(int(s.get("used") or 0) for s in sources)
    parts = [f"{Path(str(s.get('source'))).name} {s.get('used')} of {s.get('available')}" for s in sources]
    return f"{used} prompts: " + ", ".join(parts)


def _recorded_sources(run_dir) -> list[dict] | None:
    import json

    from ..store.records import RUN_JSON

    try:
        return json.loads((Path(run_dir) / RUN_JSON).read_text(encoding="utf-8"))["prompts"]["sources"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def warnings_line(run_dir) -> str | None:
    """'2 warnings recorded (...)' from run.json's warning events, or None when there were none."""
    import json

    from ..store.records import RUN_JSON

    try:
        events = json.loads((Path(run_dir) / RUN_JSON).read_text(encoding="utf-8")).get("events") or []
    except (OSError, ValueError, AttributeError):
        return None
    warns = [e for e in events if isinstance(e, dict) and e.get("event") == "warning"]
    if not warns:
        return None
    total = sum(int(e.get("count") or 1) for e in warns)
    first = warns[0].get("message", "").splitlines()[0][:100] if warns[0].get("message") else ""
    count = f"{len(warns)} warning{'s' if len(warns) > 1 else ''}" + (f" ({total} occurrences)" if total > len(warns) else "")
    return f"{count} during the run (run.json events; engine.log has the context); first: {first}"


def gpu_note() -> str | None:
    """The one line a CPU machine gets instead of NVML's warning (NVML only; never imports torch)."""
    from ..provenance import gpu_names

    return None if gpu_names() else NO_GPU_NOTE

