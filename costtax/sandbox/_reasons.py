"""Why a sample failed, from what its PID 1 reported (pure functions; no I/O).

``passed`` needs this run's marker, written by the sample's own process after the check call
returned, exit status 0 and no process of the sample left. Every other outcome has its reason:
see :class:`costtax.sandbox.SandboxResult`.
"""
from __future__ import annotations

import re
import signal

NO_MARKER_EXIT = 121  # the driver's exit status when the program ended but the marker could not be written
_ERROR_REASONS = {"AssertionError": "assertion", "MemoryError": "memory", "SyntaxError": "syntax",
                  "IndentationError": "syntax", "TabError": "syntax"}


def signal_name(sig: int | None) -> str | None:
    if sig is None:
        return None
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


def _signal_reason(sig: int, cpu_s: float | None, cpu_limit: int) -> str:
    # SIGXCPU at the soft RLIMIT_CPU; SIGKILL at the hard one (soft + 1 s) if SIGXCPU was handled
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_s is not None and cpu_s >= cpu_limit):
        return "cpu_time"
    return f"signal:{signal_name(sig)}"


def _stderr_reason(exit_code: int | None, stderr: str) -> str:
    """Fallback when the driver could not report (it never started, or ran out of memory)."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    m = re.match(r"^([A-Za-z_][\w.]*)(?::|$)", lines[-1]) if lines else None
    if m and (m.group(1).endswith(("Error", "Exception", "Exit", "Interrupt")) or m.group(1) == "KeyboardInterrupt"):
        name = m.group(1).rsplit(".", 1)[-1]
        return _ERROR_REASONS.get(name, f"error:{name}")
    return f"exit:{exit_code}"


def outcome(rep: dict, stderr_tail: str, cpu_limit: int) -> tuple[str, str | None, str | None]:
    """(reason, stage, exit_via) from PID 1's result; reason ``passed`` only with the marker."""
    events = [e for e in rep.get("events", []) if isinstance(e, dict)]
    stages = [e["stage"] for e in events if e.get("stage") in ("program", "tests")]
    stage = "done" if rep["completed"] else (stages[-1] if stages else None)
    exits = [e for e in events if "system_exit" in e]
    errors = [e for e in events if isinstance(e.get("error"), str)]
    code, sig = rep["exit_code"], rep["signal"]
    via, fallback = None, _stderr_reason(code, stderr_tail)
    if exits:
        via = "raise SystemExit" if exits[0]["system_exit"] == "raise" else "sys.exit"
    elif stage in ("program", "tests") and not errors and sig is None and fallback.startswith("exit:"):
        # neither an exception (reported, or printed by Python when the report could not be
        # written, e.g. out of memory) nor the marker: the process ended without unwinding
        via = "os._exit"
    if code == NO_MARKER_EXIT and sig is None and not exits and not errors and not rep["completed"]:
        return "no_marker", stage, None  # the program ran to its end, but its report pipe was unusable
    if rep.get("timed_out"):
        return "timeout", stage, None
    if sig is not None:
        return _signal_reason(sig, rep["cpu_s"], cpu_limit), stage, None
    if rep["processes_left"] or rep.get("foreign_done"):
        return "fork_outlived", stage, via
    if exits or via == "os._exit":
        if stage == "tests":
            return "exit_in_tests", stage, via
        return {"sys.exit": "sys_exit", "raise SystemExit": "raise_system_exit"}.get(via, "os_exit"), stage, via
    if errors:
        name = errors[0]["error"]
        return _ERROR_REASONS.get(name, f"error:{name}"), stage, None
    if rep["completed"]:
        return ("passed" if code == 0 else f"exit:{code}"), stage, None
    return fallback, stage, None  # the driver could not report: it never started, no memory, or no pipe
