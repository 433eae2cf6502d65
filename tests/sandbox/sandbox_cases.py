"""Attack cases for the sandbox, each with a control that succeeds outside it (not a test file).

Run by tests/sandbox/sandbox_runner.py on both paths (root: in the pytest process; nonroot: as an
ordinary uid, possibly the system python3 on readable copies): ``run_cases(ctx)`` returns
``{case: {"control": ..., "sandbox": SandboxResult dict, "after": ...}}``. Standard library and
costtax.sandbox only: it must run without the project's virtualenv.

Every sandboxed probe catches its own errors and prints one line ``R <json>`` with what each
attempt did, so a test reads what happened rather than only pass/fail.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

from costtax.sandbox import SandboxLimits, run_program

LIMITS = SandboxLimits(timeout_s=30.0, cpu_s=1, memory_bytes=256 << 20, max_processes=16,
                       max_file_bytes=1 << 20, max_open_files=32)

PRELUDE = """
import ctypes, json, os, signal, socket, sys, time
R = {}
def attempt(name, fn):
    try:
        v = fn()
        R[name] = "ok" if v is None else ("ok:" + str(v))[:300]
    except BaseException as exc:
        R[name] = "fail:" + type(exc).__name__ + ":" + str(exc)[:200]
libc = ctypes.CDLL(None, use_errno=True)
def sysret(rc):
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
"""
FOOTER = "\nprint('R ' + json.dumps(R))\n"

MOUNT = """
os.makedirs(D, exist_ok=True)
attempt("mount", lambda: sysret(libc.mount(b"tmpfs", D.encode(), b"tmpfs", 0, b"size=1m")))
attempt("umount", lambda: sysret(libc.umount2(U.encode(), 2)))
"""
CAPS = """
def raise_sys_admin():  # CAP_SYS_ADMIN (21) in the effective, permitted and inheritable sets
    hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)(1 << 21, 1 << 21, 1 << 21, 0, 0, 0)
    sysret(libc.capset(hdr, data))
attempt("capset_sys_admin", raise_sys_admin)
attempt("ambient_raise_sys_admin", lambda: sysret(libc.prctl(47, 2, 21, 0, 0)))
attempt("cap_eff", lambda: [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0])
"""


# Completions of HumanEval/0 (has_close_elements) that continue its prompt, as a base model
# writes them: name -> (completion, costtax's reason). ``wrong`` returns True where the tests
# want False; each early exit follows it (or replaces the body), so only an exit can "pass" it.
_RIGHT = "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n"
_WRONG = "    return True\n"
EXIT_VARIANTS = {
    "correct": (_RIGHT, "passed"),
    "wrong": (_WRONG, "assertion"),
    "sys_exit_0": (_WRONG + "\n\nimport sys\nsys.exit(0)\n", "sys_exit"),
    "exit_builtin_0": (_WRONG + "\n\nexit(0)\n", "sys_exit"),
    "raise_system_exit": (_WRONG + "\n\nraise SystemExit\n", "raise_system_exit"),
    "os_exit_0": (_WRONG + "\n\nimport os\nos._exit(0)\n", "os_exit"),
    "sys_exit_in_tests": ("    import sys\n    sys.exit(0)\n", "exit_in_tests"),
    "os_exit_in_tests": ("    import os\n    os._exit(0)\n", "exit_in_tests"),
    "fork_parent_exits": (_RIGHT + "\n\nimport os\nif os.fork():\n    os._exit(0)\n", "fork_outlived"),
    "wrong_with_main_guard_exit": (_WRONG + "\n\nif __name__ == '__main__':\n    import sys\n    sys.exit(0)\n", "assertion"),
    "correct_with_main_guard_exit": (_RIGHT + "\n\nif __name__ == '__main__':\n    import sys\n    sys.exit(0)\n", "passed"),
}


def _probe(body: str, **names) -> str:
    consts = "".join(f"{k} = {v!r}\n" for k, v in names.items())
    return PRELUDE + consts + body + FOOTER


def parse_r(text: str) -> dict:
    """The ``R {...}`` line of a probe's stdout (or of a control's)."""
    for line in reversed(text.splitlines()):
        if line.startswith("R "):
            return json.loads(line[2:])
    return {}


def _host(code: str, ns: bool = False, timeout: float = 20) -> dict:
    """Run ``code`` outside the sandbox as this uid (under ``unshare [-r] --mount`` when ``ns``:
    what the sandbox's PID 1 holds before it drops everything)."""
    cmd = [sys.executable, "-I", "-c", code]
    if ns:
        cmd = ["unshare", *([] if os.geteuid() == 0 else ["--map-root-user"]), "--mount", *cmd]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return {"rc": p.returncode, "R": parse_r(p.stdout), "stderr": p.stderr[-500:]}


def _sandbox(code: str, limits: SandboxLimits = LIMITS) -> dict:
    return run_program(code, limits).to_dict()


def _named(comm: str) -> list[int]:
    """Host pids whose command name (PR_SET_NAME, inherited by fork) is ``comm``."""
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/comm") as fh:
                    if fh.read().strip() == comm:
                        out.append(int(p))
            except OSError:
                pass
    return out


def _sleeper(env_secret: str | None = None) -> subprocess.Popen:
    env = {"PATH": "/usr/bin:/bin"}
    if env_secret:
        env["COSTTAX_SECRET"] = env_secret
    return subprocess.Popen([sys.executable, "-I", "-c", "import time; time.sleep(60)", "sentinel-argv"], env=env)


def run_cases(ctx: dict) -> dict:
    """Every case; ``ctx``: home (the caller's HOME, writable by this uid), project (a directory of
    the project, writable by this uid), tag (unique per test run)."""
    home, project, tag = ctx["home"], ctx["project"], ctx["tag"]
    out: dict[str, dict] = {}

    # $HOME: a write does not land; a secret in it cannot be read (printed into stdout_tail)
    target = os.path.join(home, f"{tag}-home-probe")
    secret_file = os.path.join(home, f"{tag}-secret.txt")
    with open(secret_file, "w") as fh:
        fh.write(f"{tag}-HOME-SECRET")
    ctl = _host(_probe(f"attempt('write', lambda: open({target!r}, 'w').write('x'))\n"
                       f"attempt('read', lambda: open({secret_file!r}).read())"))
    os.unlink(target)
    sb = _sandbox(_probe(f"attempt('write', lambda: open({target!r}, 'w').write('x'))\n"
                         f"attempt('read', lambda: open({secret_file!r}).read())\n"
                         f"attempt('listdir', lambda: os.listdir({home!r}))"))
    out["home"] = {"control": ctl, "sandbox": sb, "after": {"exists": os.path.exists(target)}}
    os.unlink(secret_file)

    # the project directory: read-only inside
    target = os.path.join(project, f"{tag}-project-probe")
    ctl = _host(_probe(f"attempt('write', lambda: open({target!r}, 'w').write('x'))"))
    os.unlink(target)
    sb = _sandbox(_probe(f"attempt('write', lambda: open({target!r}, 'w').write('x'))"))
    out["project"] = {"control": ctl, "sandbox": sb, "after": {"exists": os.path.exists(target)}}

    # /tmp: the write succeeds and lands in the private tmpfs, not on the host
    target = f"/tmp/{tag}-tmp-probe"
    code = _probe(f"attempt('write', lambda: open({target!r}, 'w').write('x'))\nattempt('read', lambda: open({target!r}).read())")
    ctl = _host(code)
    os.unlink(target)
    sb = _sandbox(code)
    out["tmp"] = {"control": ctl, "sandbox": sb, "after": {"exists": os.path.exists(target)}}

    # mount / umount: fine with the capabilities PID 1 holds, refused without them
    ctl = _host(_probe(MOUNT, D=f"/tmp/{tag}-mnt", U=f"/tmp/{tag}-mnt"), ns=True)
    shutil.rmtree(f"/tmp/{tag}-mnt", ignore_errors=True)
    out["mount"] = {"control": ctl, "sandbox": _sandbox(_probe(MOUNT, D="/tmp/work/mnt", U=home))}

    # raise capabilities: capset and an ambient raise
    out["capabilities"] = {"control": _host(_probe(CAPS), ns=True), "sandbox": _sandbox(_probe(CAPS))}

    # network: a listener on the host's loopback is reachable outside, not inside
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    code = _probe(f"attempt('loopback', lambda: socket.create_connection(('127.0.0.1', {port}), timeout=2).close())\n"
                  "attempt('internet', lambda: socket.create_connection(('1.1.1.1', 53), timeout=2).close())")
    out["network"] = {"control": _host(code), "sandbox": _sandbox(code)}
    srv.close()

    # signal the parent: PID 1 ignores it, the host is out of reach; outside the same kill works
    victim, sentinel = _sleeper(), _sleeper()
    ctl = _host(_probe(f"attempt('kill', lambda: os.kill({victim.pid}, signal.SIGKILL))"))
    victim.wait(timeout=10)
    sb = _sandbox(_probe(f"attempt('ppid', lambda: os.getppid())\n"
                         "attempt('kill_parent', lambda: os.kill(os.getppid(), signal.SIGKILL))\n"
                         "attempt('term_pid1', lambda: os.kill(1, signal.SIGTERM))\n"
                         f"attempt('kill_host', lambda: os.kill({sentinel.pid}, signal.SIGKILL))\n"
                         "time.sleep(0.3)"))
    out["signal_parent"] = {"control": ctl, "sandbox": sb,
                            "after": {"victim_rc": victim.returncode, "sentinel_alive": sentinel.poll() is None}}
    sentinel.kill()
    sentinel.wait()

    # another process's environ and cmdline
    secret = f"{tag}-ENV-SECRET"
    sentinel = _sleeper(secret)
    time.sleep(0.2)
    scan = ("def scan(name):\n    found = []\n    for p in os.listdir('/proc'):\n        if p.isdigit() and p != str(os.getpid()):\n"
            "            try:\n                found.append(open(f'/proc/{p}/' + name, 'rb').read().decode('utf-8', 'replace'))\n"
            "            except OSError:\n                pass\n    return ' '.join(found)\n")
    ctl = _host(_probe(f"attempt('environ', lambda: open('/proc/{sentinel.pid}/environ').read())\n"
                       f"attempt('cmdline', lambda: open('/proc/{sentinel.pid}/cmdline').read())"))
    sb = _sandbox(_probe(scan + f"attempt('environ_host_pid', lambda: open('/proc/{sentinel.pid}/environ').read())\n"
                         "attempt('environ_all', lambda: scan('environ'))\n"
                         "attempt('cmdline_pid1', lambda: open('/proc/1/cmdline').read())\n"
                         "attempt('cmdline_all', lambda: scan('cmdline'))\n"
                         "attempt('pids', lambda: sorted(p for p in os.listdir('/proc') if p.isdigit()))"))
    out["proc_peek"] = {"control": ctl, "sandbox": sb, "secret": secret}
    sentinel.kill()
    sentinel.wait()

    # the result pipe via /proc/<pid>/fd: outside, a same-uid process can write into another's pipe
    r, w = os.pipe()
    ctl = _host(f"open('/proc/{os.getpid()}/fd/{w}', 'w').write('forged')")
    os.close(w)
    forged = os.read(r, 100).decode()
    os.close(r)
    sentinel = _sleeper()  # and a same-uid process can ptrace another one (PTRACE_ATTACH = 16)
    ptrace = _host(_probe(f"attempt('ptrace', lambda: sysret(libc.ptrace(16, {sentinel.pid}, 0, 0)))"))
    sentinel.kill()
    sentinel.wait()
    sb = _sandbox(_probe("attempt('fd_list', lambda: os.listdir('/proc/1/fd'))\n"
                         "attempt('fd_write', lambda: open('/proc/1/fd/1', 'w').write('{\"result\": {}}\\n'))\n"
                         "for p in [p for p in os.listdir('/proc') if p.isdigit() and p != str(os.getpid())]:\n"
                         "    attempt('fd_write_' + p, lambda: open(f'/proc/{p}/fd/1', 'w').write('x'))\n"
                         "attempt('ptrace_pid1', lambda: sysret(libc.ptrace(16, 1, 0, 0)))"))
    out["result_pipe"] = {"control": {"rc": ctl["rc"], "read_back": forged, "ptrace": ptrace["R"].get("ptrace")}, "sandbox": sb}

    # fork bomb: contained, and no process of it survives (its processes carry a unique name,
    # so other sandboxes running on the machine at the same time are not counted)
    comm = ("cx" + tag.replace("-", ""))[:15]
    ctl = _host("import os, sys, time\nkids = []\nfor _ in range(40):\n    pid = os.fork()\n    if pid == 0:\n        time.sleep(1)\n        os._exit(0)\n"
                "    kids.append(pid)\nfor k in kids:\n    os.waitpid(k, 0)\nprint('R', '{\"forks\": %d}' % len(kids))")
    # each child holds its process slot (sleeps); the bomb counts the forks that succeeded
    sb = _sandbox(f"import ctypes, json, os, time\nctypes.CDLL(None).prctl(15, {comm.encode()!r}, 0, 0, 0)\n"
                  "n, err = 0, None\nwhile n < 60:\n    try:\n        pid = os.fork()\n    except OSError as exc:\n"
                  "        err = type(exc).__name__\n        break\n    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n"
                  "    n += 1\nprint('R ' + json.dumps({'forks': n, 'error': err}))\n",
                  SandboxLimits(timeout_s=20.0, cpu_s=2, max_processes=16))
    deadline, extra = time.monotonic() + 15, []
    while time.monotonic() < deadline:
        extra = _named(comm)
        if not extra:
            break
        time.sleep(0.2)
    out["fork_bomb"] = {"control": ctl, "sandbox": sb, "after": {"survivors": extra}}

    # memory bomb, file-size bomb, many open files: each within what the host allows
    mem = "x = []\nwhile True:\n    x.append(bytearray(1 << 24))\n"
    out["memory_bomb"] = {"control": _host(_probe("attempt('alloc', lambda: len(bytearray(400 << 20)))")),
                          "sandbox": _sandbox(mem)}
    fsize = "attempt('write', lambda: open(P, 'wb').write(b'x' * (3 << 20)))\n"
    ctl = _host(_probe(fsize, P=f"/tmp/{tag}-fsize"))
    os.unlink(f"/tmp/{tag}-fsize")
    out["file_size_bomb"] = {"control": ctl, "sandbox": _sandbox(_probe(fsize, P="/tmp/work/big"))}
    nofile = "fds = []\nattempt('open', lambda: [fds.append(os.open('/dev/null', os.O_RDONLY)) for _ in range(200)] and len(fds))\n"
    out["open_files"] = {"control": _host(_probe(nofile)), "sandbox": _sandbox(_probe(nofile))}
    return out


if __name__ == "__main__":
    with open(sys.argv[1]) as fh:
        ctx = json.load(fh)
    print(json.dumps(run_cases(ctx)))
