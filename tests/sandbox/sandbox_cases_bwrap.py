"""Issue 26's attacks on the sandbox, each with a control that succeeds outside it (not a test file).

Run by tests/sandbox/sandbox_runner.py on both paths; ``run_cases(ctx)`` makes its own sockets, pty, token
file and processes (ctx: ``tag``, ``fixtures`` (a directory outside any home and outside /tmp,
owned by this uid), ``secret`` (root-only, or mode 000 of this uid), ``extra_gid`` (a supplementary
group of this uid, or absent)) and removes them. Standard library and costtax.sandbox only.
"""
from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from costtax.sandbox import SandboxLimits, run_program
from sandbox_cases import LIMITS, _host, _named, _probe, _sandbox, parse_r

SYSCALLS = {  # x86-64 numbers; called with arguments that fail harmlessly where they are allowed
    "io_uring_setup": (425, 0, 0), "io_uring_enter": (426, -1, 0, 0, 0, 0, 0), "io_uring_register": (427, -1, 0, 0, 0),
    "userfaultfd": (323, 1), "perf_event_open": (298, 0, 0, -1, -1, 0), "bpf": (321, 0, 0, 0),
    "keyctl": (250, 0, -2, 1), "add_key": (248, 0, 0, 0, 0, -2), "request_key": (249, 0, 0, 0, -2),
    "unshare_newuser": (272, 0x10000000), "setns": (308, -1, 0), "clone3": (435, 0, 0), "memfd_secret": (447, 0),
    "ptrace": (101, 2, 999999999, 0, 0), "process_vm_readv": (310, 999999999, 0, 1, 0, 1, 0),
    "personality": (135, 0xFFFFFFFF), "memfd_create": (319, 0, 0), "mount_setattr": (442, -1, 0, 0, 0, 0),
    "pidfd_getfd": (438, -1, 0, 0), "kcmp": (312, 1, 1, 0, 0, 0),
}
SURFACE = """
libc.syscall.restype = ctypes.c_long
def sc(nr, *args):
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return "ok" if r >= 0 else "errno:" + str(ctypes.get_errno())
for name, call in CALLS.items():
    R[name] = sc(*call)
R["clone_newuser"] = sc(56, 0x10000000 | 17, 0, 0, 0, 0) if INSIDE else "not tried outside"
import threading
t = threading.Thread(target=lambda: None)
attempt("thread", lambda: (t.start(), t.join()) and None)
def abi(code):  # run machine code in a child; report how the child ended
    import mmap
    pid = os.fork()
    if pid == 0:
        m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        m.write(code)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
        ctypes.CFUNCTYPE(ctypes.c_long)(addr)()
        os._exit(0)
    _, st = os.waitpid(pid, 0)
    return "signal:%d" % os.WTERMSIG(st) if os.WIFSIGNALED(st) else "exit:%d" % os.WEXITSTATUS(st)
R["int80_getpid"] = abi(bytes.fromhex("b814000000cd80c3"))  # mov eax, 20; int 0x80; ret
R["x32_getpid"] = abi(bytes.fromhex("b8270000400f05c3"))  # mov eax, 0x40000027; syscall; ret
"""
OUTPUT_NAMES = """
for name in ("stdout.txt", "stderr.txt", "program.py", "driver.py"):
    attempt("symlink_" + name, lambda: os.symlink(SECRET, name))
attempt("fifo", lambda: (os.unlink("stderr.txt"), os.mkfifo("stderr.txt")))
attempt("dir", lambda: (os.unlink("stdout.txt"), os.mkdir("stdout.txt")))
attempt("read_secret", lambda: open(SECRET).read())
print("done writing")
"""


def _listener(path: str, mode: int, gid: int | None) -> tuple[socket.socket, list]:
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    if gid is not None:
        os.chown(path, -1, gid)
    os.chmod(path, mode)
    srv.listen(8)
    srv.settimeout(0.2)
    got: list[bytes] = []

    def serve():
        while srv.fileno() != -1:
            try:
                conn, _ = srv.accept()
            except (socket.timeout, OSError):
                continue
            with conn:
                conn.settimeout(2)
                try:
                    got.append(conn.recv(200))
                except OSError:
                    pass

    threading.Thread(target=serve, daemon=True).start()
    return srv, got


def _child_env() -> dict:
    return {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "LANG": "C.UTF-8"}


def _sleeper_program(comm: str) -> str:
    return f"import ctypes, time\nctypes.CDLL(None).prctl(15, {comm.encode()!r}, 0, 0, 0)\ntime.sleep(120)\n"


def _gone(comm: str, within_s: float) -> list[int]:
    deadline, left = time.monotonic() + within_s, _named(comm)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = _named(comm)
    return left


def _die_with_parent(tag: str, how: int, contained: bool) -> dict:
    """A costtax-like parent starts a sleeping sample, then gets ``how``: does the sample die?"""
    comm = (("cw" if contained else "cu") + tag.replace("-", "") + str(how))[:15]
    if contained:
        code = ("from costtax.sandbox import SandboxLimits, run_program\n"
                f"run_program({_sleeper_program(comm)!r}, SandboxLimits(timeout_s=120, cpu_s=5))\n")
    else:  # the control: a plain child process in its own session
        code = f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {_sleeper_program(comm)!r}], start_new_session=True)\ntime.sleep(120)\n"
    # Ctrl-C reaches a costtax run in a terminal with SIGINT's default action; a suite started in
    # the background by a non-interactive shell inherits SIGINT ignored, and the parent would
    # shrug off the signal this case sends: give it the terminal's disposition
    code = "import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n" + code
    parent = subprocess.Popen([sys.executable, "-c", code], env=_child_env())
    deadline = time.monotonic() + 30
    while not _named(comm) and time.monotonic() < deadline:
        time.sleep(0.1)
    started = bool(_named(comm))
    parent.send_signal(how)
    parent.wait(timeout=30)
    left = _gone(comm, 10)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return {"started": started, "survivors": len(left)}


def run_cases(ctx: dict) -> dict:
    tag, fix, secret = ctx["tag"], ctx["fixtures"], ctx["secret"]
    out: dict[str, dict] = {}

    # 1, 11: names in the work dir turned into symlinks to a secret, a FIFO, a directory
    ctl = _host(_probe(f"attempt('read', lambda: open({secret!r}).read())"), ns=ctx["secret_owner"] == "self")
    sb = _sandbox(_probe(OUTPUT_NAMES, SECRET=secret))
    out["output_names"] = {"control": ctl, "sandbox": sb}

    # 2, 3: unix sockets on the host, mode 666 and group 660 (a group this uid holds)
    sdir = os.path.join(fix, "socks")
    os.mkdir(sdir, 0o755)
    paths = {"s666": os.path.join(sdir, "open.sock"), "g660": os.path.join(sdir, "group.sock")}
    s666, got666 = _listener(paths["s666"], 0o666, None)
    g660, got660 = _listener(paths["g660"], 0o660, ctx.get("extra_gid", os.getgid()))
    conn = "".join(f"def c_{k}():\n    s = socket.socket(socket.AF_UNIX)\n    s.connect({p!r})\n    s.sendall(b'line from ' + socket.gethostname().encode())\n    s.close()\nattempt({k!r}, c_{k})\n"
                   for k, p in paths.items())
    ctl = _host(_probe(conn))
    time.sleep(0.5)
    ctl_got = {"s666": len(got666), "g660": len(got660)}
    sb = _sandbox(_probe(conn + "".join(f"attempt('exists_{k}', lambda: os.path.exists({p!r}))\n" for k, p in paths.items())))
    time.sleep(0.5)
    out["unix_sockets"] = {"control": ctl, "sandbox": sb, "after": {"control_got": ctl_got,
                           "sandbox_got": {"s666": len(got666) - ctl_got["s666"], "g660": len(got660) - ctl_got["g660"]}}}
    s666.close()
    g660.close()

    # 4: the caller's terminal: a pty opened by this test; and the sample's own controlling terminal
    master, slave = pty.openpty()
    tty = os.ttyname(slave)
    os.set_blocking(master, False)
    probe = (f"attempt('open_pty', lambda: os.write(os.open({tty!r}, os.O_RDWR), b'INJECTED'))\n"
             "attempt('dev_tty', lambda: os.open('/dev/tty', os.O_RDWR))\n"
             "import fcntl, termios\n"
             "attempt('tiocsti', lambda: libc.ioctl(0, ctypes.c_ulong(termios.TIOCSTI), ctypes.c_char_p(b'x')) == 0 or ctypes.get_errno())\n"
             "attempt('tiocsti_high', lambda: libc.ioctl(0, ctypes.c_ulong(0xFFFFFFFF00000000 | termios.TIOCSTI), ctypes.c_char_p(b'x')) == 0 or ctypes.get_errno())\n")
    ctl = _host(_probe(probe))

    def drain():
        try:
            return os.read(master, 4096).decode("utf-8", "replace")
        except BlockingIOError:
            return ""

    ctl_seen = drain()
    helper = ("import fcntl, json, os, sys, termios\nos.setsid()\nfcntl.ioctl(0, termios.TIOCSCTTY, 0)\n"
              "from costtax.sandbox import run_program, SandboxLimits\n"
              "ctl = 'ok' if os.open('/dev/tty', os.O_RDWR) >= 0 else 'fail'\n"
              f"r = run_program({_probe(probe)!r}, SandboxLimits(timeout_s=30, cpu_s=2, memory_bytes=256 << 20))\n"
              "sys.stderr.write(json.dumps({'ctl_dev_tty': ctl, 'sandbox': r.to_dict()}))\n")
    p = subprocess.run([sys.executable, "-c", helper], stdin=slave, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       env=_child_env(), timeout=60)
    try:
        in_session = json.loads(p.stderr.decode())
    except ValueError:
        in_session = {"error": p.stderr.decode()[-1000:]}
    out["terminal"] = {"control": ctl, "sandbox": in_session.get("sandbox"), "ctl_dev_tty": in_session.get("ctl_dev_tty"),
                       "error": in_session.get("error"), "after": {"control_seen": ctl_seen, "sandbox_seen": drain()}}
    os.close(master)
    os.close(slave)

    # 5, 6, 7, 12: the kernel surface (keyring, memfd, vsock, io_uring, userfaultfd, perf, nested
    # namespaces, ptrace, other ABIs): each call's errno outside and inside
    out["kernel_surface"] = {"control": _host(_probe(SURFACE, CALLS=SYSCALLS, INSIDE=False)),
                             "sandbox": _sandbox(_probe(SURFACE, CALLS=SYSCALLS, INSIDE=True))}
    fams = "for fam in (socket.AF_VSOCK, socket.AF_NETLINK, socket.AF_INET6, socket.AF_PACKET, socket.AF_UNIX):\n" \
           "    attempt(fam.name, lambda: socket.socket(fam, socket.SOCK_DGRAM if fam == socket.AF_NETLINK else socket.SOCK_STREAM).close())\n" \
           "attempt('socketpair_unix', lambda: [s.close() for s in socket.socketpair(socket.AF_UNIX)] and None)\n"
    out["socket_families"] = {"control": _host(_probe(fams)), "sandbox": _sandbox(_probe(fams))}

    # 6: memory beyond RLIMIT_AS: memfd, tmpfs mounts, bwrap's own / and /dev
    lim = SandboxLimits(timeout_s=60, cpu_s=10, memory_bytes=96 << 20, tmpfs_bytes=16 << 20, max_file_bytes=64 << 20)
    fill = ("def fill(d):\n    n = 0\n    fh = open(d + '/fill', 'wb', buffering=0)\n    try:\n        while n < (256 << 20):\n"
            "            fh.write(b'x' * (1 << 20))\n            n += 1 << 20\n    except OSError:\n        pass\n"
            "    fh.close()\n    return os.path.getsize(d + '/fill')\n"
            "attempt('tmp', lambda: fill('/tmp'))\nattempt('shm', lambda: fill('/dev/shm'))\n"
            "attempt('root', lambda: fill(''))\nattempt('dev', lambda: fill('/dev'))\n"
            "attempt('memfd', lambda: os.memfd_create('x'))\n"
            "held = []\ntry:\n    while True:\n        held.append(bytearray(4 << 20))\nexcept MemoryError:\n    pass\n"
            "R['heap'] = len(held) * (4 << 20)\n")
    ctl = _host("import os, resource\nresource.setrlimit(resource.RLIMIT_AS, (96 << 20, 96 << 20))\n"
                "fd = os.memfd_create('x')\nfor _ in range(128):\n    os.write(fd, b'x' * (1 << 20))\n"
                "print('R', '{\"memfd_bytes\": %d}' % os.fstat(fd).st_size)\n")
    out["memory"] = {"control": ctl, "sandbox": _sandbox(_probe(fill), lim),
                     "limits": {"memory_bytes": lim.memory_bytes, "tmpfs_bytes": lim.tmpfs_bytes}}

    # 8: a world-readable token outside the home; other users' homes; the host's /etc, /run, /var
    tok = os.path.join(fix, "hf-home", "token")
    os.makedirs(os.path.dirname(tok), mode=0o755)
    with open(tok, "w") as fh:
        fh.write(f"hf_{tag}_TOKEN")
    os.chmod(tok, 0o644)
    look = (f"attempt('token', lambda: open({tok!r}).read())\n"
            "for d in ('/home', '/root', '/etc', '/run', '/var', '/opt', '/srv', '/mnt', '/media', '/work'):\n"
            "    attempt('ls' + d, lambda: os.listdir(d))\nattempt('top', lambda: sorted(os.listdir('/')))\n"
            "attempt('hostname', lambda: socket.gethostname())\n")
    out["token_and_homes"] = {"control": _host(_probe(look)), "sandbox": _sandbox(_probe(look))}

    # 9: the parent (costtax) is interrupted or killed while a sample sleeps
    out["die_with_parent"] = {
        "control": {"sigkill": _die_with_parent(tag, signal.SIGKILL, False)},
        "sandbox": {"sigint": _die_with_parent(tag, signal.SIGINT, True), "sigkill": _die_with_parent(tag, signal.SIGKILL, True)},
    }

    # 12 (root): /proc/sys is read-only; the sample is not uid 0 on the host
    core = "attempt('core_pattern_w', lambda: os.close(os.open('/proc/sys/kernel/core_pattern', os.O_WRONLY)))\n"
    out["proc_sys"] = {"control": _host(_probe(core)), "sandbox": _sandbox(_probe(core))}
    shutil.rmtree(sdir, ignore_errors=True)
    shutil.rmtree(os.path.dirname(tok), ignore_errors=True)
    return out


def concurrent_uids(max_processes: int = 8) -> dict:
    """Root path: a sample holding its whole process limit does not stop another one forking."""
    hold = ("import json, os, time\nn = 0\nwhile True:\n    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
            "    if pid == 0:\n        time.sleep(6)\n        os._exit(0)\n    n += 1\nprint('R ' + json.dumps({'held': n}))\ntime.sleep(6)\n")
    forks = ("import json, os\nok = 0\nfor _ in range(4):\n    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
             "    if pid == 0:\n        os._exit(0)\n    os.waitpid(pid, 0)\n    ok += 1\nprint('R ' + json.dumps({'forks': ok}))\n")
    lim = SandboxLimits(timeout_s=30, cpu_s=5, max_processes=max_processes)
    res: dict = {}
    t = threading.Thread(target=lambda: res.__setitem__("a", run_program(hold, lim).to_dict()))
    t.start()
    time.sleep(3)
    res["b"] = run_program(forks, lim).to_dict()
    t.join()
    uid = 1_600_009_998  # the control: two host processes of one unprivileged uid, same limit
    both = (f"import os, resource, time\nresource.setrlimit(resource.RLIMIT_NPROC, ({max_processes}, {max_processes}))\n"
            "kids = []\nwhile True:\n    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
            "    if pid == 0:\n        time.sleep(3)\n        os._exit(0)\n    kids.append(pid)\n"
            "try:\n    pid = os.fork()\n    if pid == 0:\n        os._exit(0)\n    r = 'ok'\nexcept OSError as exc:\n    r = type(exc).__name__\n"
            "print('R', '{\"held\": %d, \"other\": \"%s\"}' % (len(kids), r))\n")
    p = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "/usr/bin/python3", "-I", "-c", both],
                       capture_output=True, text=True, timeout=60, cwd="/")
    return {"a": res["a"], "b": res["b"], "control": parse_r(p.stdout), "limits": {"max_processes": max_processes}}
