"""Run untrusted generated code (e.g. a HumanEval completion plus its tests) in a sandbox.

Generated code is never executed in the costtax process. Each sample runs as follows:

    costtax ──Popen──> unshare --net --pid --fork --kill-child --mount --mount-proc
                           └─ python -I -S -c BOOTSTRAP     (root, PID 1 of a new PID namespace)
                                 ├─ tmpfs over /tmp, /var/tmp, /dev/shm, /run/lock (private mounts)
                                 ├─ writes the program to /tmp/work (on that tmpfs), owned by 65534
                                 └─ fork: setgroups([]), setresgid/setresuid(65534), no_new_privs,
                                          rlimits (CPU, address space, processes, file size, core,
                                          open files), chdir /tmp/work, scrubbed env, exec python -I

What that gives, and why each piece is there (these machines run everything as root, where
RLIMIT_NPROC does not hold and /proc of the parent and $HOME are readable and writable):

* no network: a new network namespace has only a loopback device, down;
* PID namespace + fresh /proc: the sample sees only its own processes (no /proc/<costtax>/environ),
  its parent is the bootstrap (PID 1, root: the sample may not signal it), and when the
  bootstrap exits or is killed every process left in the namespace is killed by the kernel (so a
  fork bomb or a daemonised child cannot outlive the sample);
* uid/gid 65534 with every capability dropped: RLIMIT_NPROC applies, $HOME (/root) and the
  repository are not writable, root's files are not readable;
* the working directory and every world-writable directory are fresh tmpfs mounts in a private
  mount namespace: nothing the sample writes survives it or reaches the host's disk;
* environment: only PATH, HOME (= the working dir), TMPDIR, LANG; ``python -I`` ignores PYTHON*
  variables and the user site; stdin is /dev/null;
* limits: wall-clock timeout (enforced from outside: the process group, and with it the
  namespace, is killed), RLIMIT_CPU, RLIMIT_AS, RLIMIT_NPROC, RLIMIT_FSIZE, RLIMIT_NOFILE, no core.

Without root the same runs inside a user namespace (``unshare --map-root-user``), where the
sample keeps the caller's uid outside the namespace. Where namespaces cannot be created (no
``unshare``, a container without the privilege, seccomp), :func:`check_sandbox` raises
:class:`SandboxUnavailable`: costtax refuses to run generated code rather than fall back to a
weaker sandbox.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

from .errors import CosttaxError

SANDBOX_UID = 65534  # "nobody" on Debian/Ubuntu; owns no files
SANDBOX_GID = 65534


class SandboxUnavailable(CosttaxError, RuntimeError):
    """Namespaces (or the tools to make them) are not available: generated code will not run."""


@dataclass(frozen=True)
class SandboxLimits:
    """Per-sample limits. Defaults fit one HumanEval problem (their tests take milliseconds)."""

    timeout_s: float = 10.0  # wall clock, from outside
    cpu_s: int = 5  # RLIMIT_CPU soft limit (SIGXCPU), hard = soft + 1 (SIGKILL)
    memory_bytes: int = 1 << 30  # RLIMIT_AS: address space, not RSS (Python reserves ~30 MB)
    max_processes: int = 32  # RLIMIT_NPROC for uid 65534 (threads count too)
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
    """One sample's outcome. ``passed`` iff the program exited 0 within every limit.

    ``reason``: ``passed`` | ``timeout`` | ``cpu_time`` | ``memory`` | ``assertion`` |
    ``syntax`` | ``exit:<code>`` | ``signal:<NAME>`` | ``error:<ExceptionName>``.
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

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# The bootstrap: PID 1 of the sample's namespaces. Standard library only (runs with -I -S).
_BOOTSTRAP = r'''
import ctypes, json, os, resource, signal, sys
cfg = json.loads(sys.argv[1])
program = sys.stdin.buffer.read()
libc = ctypes.CDLL(None, use_errno=True)
MS_NOSUID, MS_NODEV = 2, 4
def die(msg):
    sys.stdout.write(json.dumps({"setup_error": msg})); sys.stdout.flush(); os._exit(0)
for target in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock"):
    if os.path.isdir(target):
        opts = ("size=%d,mode=1777" % cfg["tmpfs_bytes"]).encode()
        if libc.mount(b"tmpfs", target.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, opts) != 0:
            die("mount tmpfs on %s: %s" % (target, os.strerror(ctypes.get_errno())))
uid, gid, drop = cfg["uid"], cfg["gid"], cfg["drop"]
work = "/tmp/work"
os.mkdir(work, 0o700)
paths = {n: os.path.join(work, n) for n in ("program.py", "stdout.txt", "stderr.txt")}
with open(paths["program.py"], "wb") as fh:
    fh.write(program)
fds = {n: os.open(paths[n], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600) for n in ("stdout.txt", "stderr.txt")}
if drop:
    for p in [work] + list(paths.values()):
        os.chown(p, uid, gid)
env = {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8"}
pid = os.fork()
if pid == 0:
    try:
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0); os.dup2(fds["stdout.txt"], 1); os.dup2(fds["stderr.txt"], 2)
        os.closerange(3, 1 << 16)
        if drop:
            os.setgroups([]); os.setresgid(gid, gid, gid); os.setresuid(uid, uid, uid)
        if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS: setuid binaries cannot regain root
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        lim = [(resource.RLIMIT_CPU, cfg["cpu_s"], cfg["cpu_s"] + 1),
               (resource.RLIMIT_AS, cfg["memory_bytes"], cfg["memory_bytes"]),
               (resource.RLIMIT_NPROC, cfg["max_processes"], cfg["max_processes"]),
               (resource.RLIMIT_FSIZE, cfg["max_file_bytes"], cfg["max_file_bytes"]),
               (resource.RLIMIT_NOFILE, cfg["max_open_files"], cfg["max_open_files"]),
               (resource.RLIMIT_CORE, 0, 0)]
        for which, soft, hard in lim:
            resource.setrlimit(which, (soft, hard))
        os.chdir(work)
        last = None
        for exe in cfg["interpreters"]:
            try:
                os.execve(exe, [exe, "-I", "-B", "program.py"], env)
            except OSError as exc:  # not executable for this uid: try the next one
                last = exc
        raise OSError("no interpreter runs as the sandbox user: %s" % last)
    except BaseException as exc:
        os.write(2, ("sandbox setup failed: %r\n" % (exc,)).encode())
        os._exit(125)
for fd in fds.values():
    os.close(fd)
while True:  # PID 1 reaps every orphan; stop when the sample itself is gone
    wpid, status, ru = os.wait4(-1, 0)
    if wpid == pid:
        break
def tail(name):
    with open(paths[name], "rb") as fh:
        fh.seek(0, 2); n = fh.tell(); fh.seek(max(0, n - cfg["tail"] * 4))
        return fh.read().decode("utf-8", "replace")[-cfg["tail"]:]
out = {"exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
       "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
       "cpu_s": ru.ru_utime + ru.ru_stime, "max_rss_kb": ru.ru_maxrss,
       "stdout_tail": tail("stdout.txt"), "stderr_tail": tail("stderr.txt")}
sys.stdout.write(json.dumps(out)); sys.stdout.flush()
'''

_UNSHARE_FLAGS = ("--net", "--pid", "--fork", "--kill-child", "--mount", "--mount-proc")
_checked: dict[tuple, str] = {}


def _interpreters() -> list[str]:
    """Pythons the sample may exec, in order: this one first; a system one when this one lives
    where uid 65534 cannot reach (e.g. under /root/.pyenv, mode 700)."""
    out = []
    for p in (os.path.realpath(sys.executable), getattr(sys, "_base_executable", None), "/usr/bin/python3",
              "/usr/local/bin/python3", shutil.which("python3")):
        if p and os.path.isfile(p) and p not in out:
            out.append(p)
    return out


def _command() -> list[str]:
    unshare = shutil.which("unshare")
    if unshare is None:
        raise SandboxUnavailable(
            "sandbox: the `unshare` tool (util-linux) is not installed; install util-linux to run generated code "
            "(costtax will not run it without network and PID namespaces)"
        )
    flags = list(_UNSHARE_FLAGS)
    if os.geteuid() != 0:
        flags.insert(0, "--map-root-user")  # a user namespace lets an ordinary user make the others
    return [unshare, *flags, "--", sys.executable, "-I", "-S", "-c", _BOOTSTRAP]


def _fail_reason(exit_code: int | None, sig: int | None, stderr: str, cpu_s: float | None, cpu_limit: int) -> str:
    if sig is not None:
        # SIGXCPU at the soft RLIMIT_CPU; SIGKILL at the hard one (soft + 1 s) if SIGXCPU was handled
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_s is not None and cpu_s >= cpu_limit):
            return "cpu_time"
        try:
            return f"signal:{signal.Signals(sig).name}"
        except ValueError:
            return f"signal:{sig}"
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    m = re.match(r"^([A-Za-z_][\w.]*)(?::|$)", lines[-1]) if lines else None
    if m and (m.group(1).endswith(("Error", "Exception", "Exit", "Interrupt")) or m.group(1) == "KeyboardInterrupt"):
        name = m.group(1).rsplit(".", 1)[-1]
        if name == "AssertionError":
            return "assertion"
        if name == "MemoryError":
            return "memory"
        if name in ("SyntaxError", "IndentationError", "TabError"):
            return "syntax"
        return f"error:{name}"
    return f"exit:{exit_code}"


def run_program(source: str, limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run ``source`` (a complete Python program) in the sandbox; never raises for anything the
    program does. Raises SandboxUnavailable when the sandbox itself cannot be set up."""
    cfg = {
        "uid": SANDBOX_UID, "gid": SANDBOX_GID, "drop": os.geteuid() == 0,
        "cpu_s": limits.cpu_s, "memory_bytes": limits.memory_bytes, "max_processes": limits.max_processes,
        "max_file_bytes": limits.max_file_bytes, "max_open_files": limits.max_open_files,
        "tmpfs_bytes": limits.tmpfs_bytes, "tail": limits.output_tail_chars, "interpreters": _interpreters(),
    }
    cmd = _command() + [json.dumps(cfg)]
    t0 = time.perf_counter()
    # A new session: on timeout the whole group (unshare and, through --kill-child, the namespace's
    # PID 1 and so every process in the namespace) is killed at once.
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"},
    )
    try:
        out, err = proc.communicate(source.encode("utf-8"), timeout=limits.timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        return SandboxResult(False, "timeout", None, None, time.perf_counter() - t0, None, None, "", "")
    wall = time.perf_counter() - t0
    try:
        rep = json.loads(out.decode("utf-8", "replace") or "null")
    except ValueError:
        rep = None
    if not isinstance(rep, dict) or "setup_error" in rep:
        detail = rep["setup_error"] if isinstance(rep, dict) else err.decode("utf-8", "replace").strip()[-300:]
        raise SandboxUnavailable(
            f"sandbox: cannot create network/PID/mount namespaces here ({detail or f'unshare exit {proc.returncode}'}); "
            "costtax will not run generated code without them (run as root or where user namespaces are allowed)"
        )
    exit_code, sig = rep["exit_code"], rep["signal"]
    if exit_code == 125 and "sandbox setup failed" in rep["stderr_tail"]:
        raise SandboxUnavailable(rep["stderr_tail"].strip().splitlines()[-1])
    passed = exit_code == 0 and sig is None
    reason = "passed" if passed else _fail_reason(exit_code, sig, rep["stderr_tail"], rep["cpu_s"], limits.cpu_s)
    sig_name = None
    if sig is not None:
        try:
            sig_name = signal.Signals(sig).name
        except ValueError:
            sig_name = str(sig)
    return SandboxResult(
        passed, reason, exit_code, sig_name, wall, rep["cpu_s"], rep["max_rss_kb"], rep["stdout_tail"], rep["stderr_tail"]
    )


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def check_sandbox(limits: SandboxLimits | None = None) -> str:
    """Run a trivial program in the sandbox once (cached); returns the interpreter the sample
    got. Raises SandboxUnavailable with the reason when namespaces cannot be had. Call it before
    a run that will execute generated code, so the run fails at the start, not after generation."""
    key = (os.geteuid(), shutil.which("unshare"))
    if key not in _checked:
        res = run_program("import sys; print(sys.executable)", limits or SandboxLimits(timeout_s=30.0))
        if not res.passed:
            raise SandboxUnavailable(f"sandbox: a trivial program failed ({res.reason}): {res.stderr_tail.strip()[-300:]}")
        _checked[key] = res.stdout_tail.strip()
    return _checked[key]
