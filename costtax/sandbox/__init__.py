"""Run untrusted generated code (e.g. a HumanEval completion plus its tests) in a sandbox.

Generated code is never executed in the costtax process. Each sample runs as follows:

    costtax ──Popen──> unshare [--map-root-user] --net --pid --fork --kill-child --mount --ipc --uts
                           └─ python -I -S -c <_pid1.py>   (PID 1 of the new PID namespace)
                                 ├─ reads config, driver and program from stdin (not argv)
                                 ├─ not dumpable; every inherited mount read-only (recursive);
                                 │  fresh tmpfs on /tmp, /var/tmp, /dev/shm, /run/lock; the homes
                                 │  and /run/user masked by empty read-only tmpfs; /proc remounted
                                 │  for this PID namespace with hidepid=invisible
                                 └─ fork: bounding set emptied, ambient cleared, then (root) uid and
                                          gid 65534 or (user namespace) every capability set
                                          cleared; no_new_privs; rlimits; checks CapEff, CapPrm,
                                          CapBnd, CapAmb = 0 and NoNewPrivs = 1 or refuses; exec
                                          python -I -B _driver.py in a scrubbed environment

One containment for root and for an ordinary user. As root the sample is uid 65534; without root
it is root of a user namespace that maps only the caller's uid, so no uid drop is possible there
and the containment rests on what both paths share: no capabilities (bounding set empty,
no_new_privs), nothing writable but the private tmpfs mounts (a read-only mount refuses writes to
files the sample's uid owns), the home masked (its secrets cannot be read into ``stdout_tail``),
no network, a PID namespace whose PID 1 the sample can neither signal (PID 1 ignores signals it has
no handler for) nor see in /proc (hidepid + not dumpable: no /proc/1/fd, /proc/1/cmdline,
/proc/1/environ). Each result records the path that ran and the sample's own uid_map, CapEff,
CapBnd and NoNewPrivs, read by the sample's process after exec. bubblewrap is not used: one
built-in path that every CI run exercises, rather than a second one that runs only where it happens
to be installed.

Pass signal (threat model: accidental early exits are caught; a completion written to forge the
signal, which can read its own program and process memory, is out of scope, as in HumanEval):
PID 1 makes a random marker per run and hands it to the driver through a pipe; the driver writes
it back on its report pipe only after the check call returns. ``passed`` needs that line, from the
sample's own pid, and exit status 0, with no process of the sample left running.
``sys.exit``/``exit()``, ``raise SystemExit``, ``os._exit``, an exit inside the tests and a fork that
outlives the sample each fail with their own reason. Set-up failures reach costtax on PID 1's
stdout or through a close-on-exec pipe from the child, never through anything the sample writes.
Where containment cannot be established (no ``unshare``, namespaces refused, Linux < 5.12 for
mount_setattr, capabilities left after the drop), :class:`SandboxUnavailable` is raised with one
line saying why: costtax refuses to run generated code rather than fall back to something weaker.
"""
from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CosttaxError

SANDBOX_UID = 65534  # "nobody" on Debian/Ubuntu; owns no files
SANDBOX_GID = 65534
PATH_NAME = "unshare"  # which containment path ran (recorded in every result)
TMPFS_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
_HERE = Path(__file__).resolve().parent


class SandboxUnavailable(CosttaxError, RuntimeError):
    """Containment cannot be established here: generated code will not run."""


@dataclass(frozen=True)
class SandboxLimits:
    """Per-sample limits. Defaults fit one HumanEval problem (their tests take milliseconds)."""

    timeout_s: float = 10.0  # wall clock, from outside
    cpu_s: int = 5  # RLIMIT_CPU soft limit (SIGXCPU), hard = soft + 1 (SIGKILL)
    memory_bytes: int = 1 << 30  # RLIMIT_AS: address space, not RSS (Python reserves ~30 MB)
    max_processes: int = 32  # RLIMIT_NPROC (threads count too; see README for the non-root path)
    max_file_bytes: int = 8 << 20  # RLIMIT_FSIZE: largest file the sample may write
    max_open_files: int = 64  # RLIMIT_NOFILE
    tmpfs_bytes: int = 64 << 20  # size of each private tmpfs (working dir, /tmp, ...)
    output_tail_chars: int = 2000  # how much of stdout/stderr is kept in the result

    def __post_init__(self):
        if not self.timeout_s > 0:
            raise ValueError("timeout_s must be > 0")
        for name in ("cpu_s", "memory_bytes", "max_processes", "max_file_bytes", "max_open_files", "tmpfs_bytes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")


@dataclass(frozen=True)
class SandboxResult:
    """One sample's outcome. ``passed`` iff the program ran to its end (the check call returned
    and the driver wrote this run's marker), exited 0, within every limit, leaving no process.

    ``reason``: ``passed`` | ``timeout`` | ``cpu_time`` | ``memory`` | ``assertion`` | ``syntax`` |
    ``error:<ExceptionName>`` | ``signal:<NAME>`` | ``sys_exit`` (sys.exit/exit()/quit() before the
    tests) | ``raise_system_exit`` (a ``raise SystemExit`` before the tests) | ``os_exit`` (the
    process ended without an exception before the tests, e.g. ``os._exit``) | ``exit_in_tests`` (any
    exit while the check call ran) | ``fork_outlived`` (a process of the sample outlived it or
    finished the tests in its place) | ``no_marker`` (exit 0 without the marker) | ``exit:<code>``
    (nonzero exit after the marker) | ``sandbox_lost`` (PID 1 did not report).
    ``stage``: where the program stopped: ``program`` (module code), ``tests`` (the check call),
    ``done``, or None (the driver never ran). ``exit_via``: ``sys.exit`` | ``raise SystemExit`` |
    ``os._exit`` | None. ``containment``: the path, mode, and the sample's own uid, uid_map, CapEff,
    CapPrm, CapBnd, CapAmb, NoNewPrivs and interpreter.
    """

    passed: bool
    reason: str
    exit_code: int | None
    signal: str | None
    wall_s: float
    cpu_s: float | None
    max_rss_kb: int | None
    stdout_tail: str
    stderr_tail: str
    stage: str | None = None
    exit_via: str | None = None
    completed: bool = False
    processes_left: int = 0
    containment: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _interpreters() -> list[str]:
    """Pythons the sample may exec, in order: this one first; a system one when this one is
    masked (under a home) or not executable by uid 65534 (e.g. under /root/.pyenv, mode 700)."""
    out = []
    for p in (os.path.realpath(sys.executable), getattr(sys, "_base_executable", None), "/usr/bin/python3",
              "/usr/local/bin/python3", shutil.which("python3")):
        if p and os.path.isfile(p) and p not in out:
            out.append(p)
    return out


def _masks() -> list[str]:
    """Directories hidden under an empty read-only tmpfs: the caller's home (by $HOME and by the
    password database), root's, and the per-user runtime directories (agent and bus sockets)."""
    cands = [os.environ.get("HOME"), os.environ.get("XDG_RUNTIME_DIR"), "/run/user"]
    try:
        cands.append(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:
        pass
    if os.geteuid() == 0:
        cands.append("/root")
    out: list[str] = []
    for c in cands:
        if not c:
            continue
        p = os.path.realpath(c)
        # never "/" or a directory holding a tmpfs target (masking /tmp would hide the work dir)
        if p == "/" or any(t == p or t.startswith(p.rstrip("/") + "/") for t in TMPFS_DIRS) or p in out:
            continue
        if os.path.isdir(p):
            out.append(p)
    return out


def _command() -> list[str]:
    unshare = shutil.which("unshare")
    if unshare is None:
        raise SandboxUnavailable(
            "sandbox: the `unshare` tool (util-linux) is not installed; install util-linux to run generated code "
            "(costtax will not run it without network, PID and mount namespaces)"
        )
    flags = ["--net", "--pid", "--fork", "--kill-child", "--mount", "--propagation", "private", "--ipc", "--uts"]
    if os.geteuid() != 0:
        flags.insert(0, "--map-root-user")  # a user namespace lets an ordinary user make the others
    return [unshare, *flags, "--", sys.executable, "-I", "-S", "-c", (_HERE / "_pid1.py").read_text()]


_ERROR_REASONS = {"AssertionError": "assertion", "MemoryError": "memory", "SyntaxError": "syntax",
                  "IndentationError": "syntax", "TabError": "syntax"}


def _signal_reason(sig: int, cpu_s: float | None, cpu_limit: int) -> str:
    # SIGXCPU at the soft RLIMIT_CPU; SIGKILL at the hard one (soft + 1 s) if SIGXCPU was handled
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_s is not None and cpu_s >= cpu_limit):
        return "cpu_time"
    try:
        return f"signal:{signal.Signals(sig).name}"
    except ValueError:
        return f"signal:{sig}"


def _stderr_reason(exit_code: int | None, stderr: str) -> str:
    """Fallback when the driver could not report (it never started, or ran out of memory)."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    m = re.match(r"^([A-Za-z_][\w.]*)(?::|$)", lines[-1]) if lines else None
    if m and (m.group(1).endswith(("Error", "Exception", "Exit", "Interrupt")) or m.group(1) == "KeyboardInterrupt"):
        name = m.group(1).rsplit(".", 1)[-1]
        return _ERROR_REASONS.get(name, f"error:{name}")
    return f"exit:{exit_code}"


def _outcome(rep: dict, cpu_limit: int) -> tuple[str, str | None, str | None]:
    """(reason, stage, exit_via) from PID 1's result; reason ``passed`` only with the marker."""
    events = [e for e in rep.get("events", []) if isinstance(e, dict)]
    stages = [e["stage"] for e in events if e.get("stage") in ("program", "tests")]
    stage = "done" if rep["completed"] else (stages[-1] if stages else None)
    exits = [e for e in events if "system_exit" in e]
    errors = [e for e in events if isinstance(e.get("error"), str)]
    code, sig = rep["exit_code"], rep["signal"]
    via, fallback = None, _stderr_reason(code, rep["stderr_tail"])
    if exits:
        via = "raise SystemExit" if exits[0]["system_exit"] == "raise" else "sys.exit"
    elif stage in ("program", "tests") and not errors and sig is None and fallback.startswith("exit:"):
        # neither an exception (reported, or printed by Python when the report could not be
        # written, e.g. out of memory) nor the marker: the process ended without unwinding
        via = "os._exit"
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
    return fallback, stage, None  # the driver could not report (it never started, or no memory)


def run_program(source: str, limits: SandboxLimits = SandboxLimits(), *, check_call: str | None = None) -> SandboxResult:
    """Run ``source`` (a complete Python program) in the sandbox; never raises for anything the
    program does. Raises SandboxUnavailable when the sandbox itself cannot be set up.

    ``check_call`` (e.g. ``"check(has_close_elements)"``): ``source`` must end with that line; the
    program before it runs as HumanEval's harness runs it, then the call as the ``tests`` stage."""
    if check_call is not None:
        body = source.rstrip()
        if not check_call.strip() or not body.endswith(check_call.strip()):
            raise ValueError(f"check_call {check_call!r} is not the last line of the program")
        source = body[: -len(check_call.strip())]
    cfg = {
        "uid": SANDBOX_UID, "gid": SANDBOX_GID, "drop_uid": os.geteuid() == 0,
        "cpu_s": limits.cpu_s, "memory_bytes": limits.memory_bytes, "max_processes": limits.max_processes,
        "max_file_bytes": limits.max_file_bytes, "max_open_files": limits.max_open_files,
        "tmpfs_bytes": limits.tmpfs_bytes, "tail": limits.output_tail_chars, "interpreters": _interpreters(),
        "tmpfs": list(TMPFS_DIRS), "masks": _masks(), "check_call": check_call.strip() if check_call else None,
    }
    head = json.dumps({"cfg": cfg, "driver": (_HERE / "_driver.py").read_text()}) + "\n"
    cmd = _command()
    t0 = time.perf_counter()
    # A new session: on timeout the whole group (unshare and, through --kill-child, the namespace's
    # PID 1 and so every process in the namespace) is killed at once.
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"},
    )
    timed_out = False
    try:
        out, err = proc.communicate(head.encode() + source.encode("utf-8"), timeout=limits.timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        timed_out = True
    wall = time.perf_counter() - t0
    msgs: dict[str, Any] = {}
    for line in out.decode("utf-8", "replace").splitlines():
        try:
            m = json.loads(line)
        except ValueError:
            continue
        if isinstance(m, dict):
            msgs.update(m)
    if "setup_error" in msgs or ("ready" not in msgs and not timed_out):
        detail = msgs.get("setup_error") or err.decode("utf-8", "replace").strip()[-300:] or f"unshare exit {proc.returncode}"
        raise SandboxUnavailable(
            f"sandbox: cannot establish containment here ({' '.join(detail.split())}); costtax will not run generated "
            "code without it (it needs unshare, user or root namespaces, and Linux >= 5.12)"
        )
    mode = "root" if cfg["drop_uid"] else "userns"
    containment = {"path": PATH_NAME, "mode": mode, "masked": cfg["masks"], **(msgs.get("facts") or {})}
    if timed_out or "result" not in msgs:
        return SandboxResult(False, "timeout" if timed_out else "sandbox_lost", None, None, wall, None, None, "", "",
                             containment=containment)
    rep = msgs["result"]
    reason, stage, via = _outcome(rep, limits.cpu_s)
    sig = rep["signal"]
    sig_name = None
    if sig is not None:
        try:
            sig_name = signal.Signals(sig).name
        except ValueError:
            sig_name = str(sig)
    containment.update(rep.get("containment") or {})
    return SandboxResult(
        reason == "passed", reason, rep["exit_code"], sig_name, wall, rep["cpu_s"], rep["max_rss_kb"],
        rep["stdout_tail"], rep["stderr_tail"], stage, via, bool(rep["completed"]), int(rep["processes_left"]),
        containment,
    )


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


_checked: dict[tuple, str] = {}
_facts: dict[tuple, dict] = {}


def check_sandbox(limits: SandboxLimits | None = None) -> str:
    """Run a trivial program in the sandbox once (cached); returns the interpreter the sample
    got. Raises SandboxUnavailable with the reason when containment cannot be established. Call
    it before a run that will execute generated code, so the run fails at the start."""
    key = (os.geteuid(), shutil.which("unshare"))
    if key not in _checked:
        res = run_program("import sys; print(sys.executable)", limits or SandboxLimits(timeout_s=30.0))
        if not res.passed:
            raise SandboxUnavailable(f"sandbox: a trivial program failed ({res.reason}): {res.stderr_tail.strip()[-300:]}")
        c = res.containment
        if any(int(c.get(k) or "1", 16) for k in ("CapEff", "CapPrm", "CapBnd")) or c.get("NoNewPrivs") != "1":
            raise SandboxUnavailable(f"sandbox: the sample kept privileges ({c}); costtax will not run generated code")
        _checked[key] = res.stdout_tail.strip()
        _facts[key] = dict(c)
    return _checked[key]


def sandbox_facts() -> dict:
    """The containment :func:`check_sandbox` found here (path, mode, the sample's uid_map,
    CapEff, CapBnd, NoNewPrivs, ...), for run.json; runs the check if it has not run yet."""
    check_sandbox()
    return dict(_facts.get((os.geteuid(), shutil.which("unshare")), {}))
