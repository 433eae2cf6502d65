"""PID 1 inside the sandbox (bwrap ``--as-pid-1``; run as ``python -I -S -c <this file's text>``).

Standard library only; never imported. It talks to costtax only through descriptors it was
handed: fd 0 (config, driver and program from costtax), fd 1 (JSON lines to costtax:
``{"setup_error": ...}`` or ``{"ready": ...}`` then ``{"result": ...}``), fd 2 (its own errors), and
the write ends of the sample's stdout and stderr pipes, which costtax reads directly. It opens no
path the sample could touch (no work-dir file, not even /dev/null: the sample's stdin is an empty
pipe); it reads only /proc (the sample's status, the list of survivors). It is not dumpable (the
sample, the same uid inside, cannot open /proc/1/fd or ptrace it) and, as PID 1 of the namespace,
ignores every signal it has no handler for, so the sample can neither kill nor silence it.

It forks the sample: fds 1/2 to the output pipes, 3 the report pipe, 4 the marker pipe (marker,
check call, then the program, then EOF), 5 a close-on-exec pipe for set-up failures; rlimits; then
exec ``python -I -B -c <driver>``. It waits with a wall limit of its own, reaps orphans as they
exit, and reports exit status or signal, CPU and max RSS from wait4, and what outlived the sample.
"""


def main():  # noqa: C901 - one linear sequence reads best in one place
    import ctypes
    import fcntl
    import json
    import os
    import resource
    import select
    import signal
    import sys
    import time

    signal.signal(signal.SIGINT, signal.SIG_DFL)  # no handler: the sample cannot signal PID 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0

    def emit(obj):
        data = (json.dumps(obj) + "\n").encode()
        while data:
            data = data[os.write(1, data):]

    def die(msg):
        emit({"setup_error": msg})
        os._exit(0)

    if os.getpid() != 1:
        die("the init is not PID 1 of a new PID namespace (run it only under bwrap --unshare-pid --as-pid-1)")
    head = b""
    while not head.endswith(b"\n"):
        chunk = os.read(0, 1)
        if not chunk:
            die("no configuration on stdin")
        head += chunk
    cfg = json.loads(head)
    program = b""
    while True:
        chunk = os.read(0, 1 << 16)
        if not chunk:
            break
        program += chunk
    os.close(0)

    def high(fd):  # out of the way of the numbers the child dup2s onto (0..5)
        new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 32)
        os.close(fd)
        return new

    def pipe():
        return tuple(high(fd) for fd in os.pipe())

    out_fd, err_fd = high(cfg["out_fd"]), high(cfg["err_fd"])

    rep_r, rep_w = pipe()  # sample -> here: the driver's report
    mk_r, mk_w = pipe()  # here -> sample: marker, check call, program, EOF
    er_r, er_w = pipe()  # child -> here (close-on-exec): why the set-up failed
    in_r, in_w = pipe()  # the sample's stdin: empty
    os.close(in_w)
    marker = os.urandom(16).hex()
    env = {"PATH": "/usr/bin:/bin", "HOME": cfg["work"], "TMPDIR": cfg["work"], "LANG": "C.UTF-8"}
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            for src, dst in ((in_r, 0), (out_fd, 1), (err_fd, 2), (rep_w, 3), (mk_r, 4)):
                os.dup2(src, dst)
            os.dup2(er_w, 5, inheritable=False)
            os.closerange(6, 1 << 16)
            if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS (bwrap set it already)
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
            lim = [(resource.RLIMIT_CPU, cfg["cpu_s"], cfg["cpu_s"] + 1),
                   (resource.RLIMIT_AS, cfg["memory_bytes"], cfg["memory_bytes"]),
                   (resource.RLIMIT_NPROC, cfg["max_processes"], cfg["max_processes"]),
                   (resource.RLIMIT_FSIZE, cfg["max_file_bytes"], cfg["max_file_bytes"]),
                   (resource.RLIMIT_NOFILE, cfg["max_open_files"], cfg["max_open_files"]),
                   (resource.RLIMIT_CORE, 0, 0), (resource.RLIMIT_MEMLOCK, 0, 0)]
            for which, soft, hard in lim:
                resource.setrlimit(which, (soft, hard))
            status = dict(ln.split(":", 1) for ln in open("/proc/self/status").read().splitlines() if ":" in ln)
            for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
                if int(status[key].strip(), 16) != 0:
                    raise OSError("capabilities left: %s %s" % (key, status[key].strip()))
            if status["NoNewPrivs"].strip() != "1" or status.get("Seccomp", "").strip() != "2":
                raise OSError("no_new_privs or the seccomp filter is missing")
            os.chdir(cfg["work"])
            os.execve(cfg["python"], [cfg["python"], "-I", "-B", "-c", cfg["driver"]], env)
        except BaseException as exc:
            try:
                os.write(5, str(exc).encode("utf-8", "replace")[:2000])
            finally:
                os._exit(127)

    for fd in (in_r, out_fd, err_fd, rep_w, mk_r, er_w):
        os.close(fd)
    try:
        data = json.dumps({"marker": marker, "check_call": cfg["check_call"]}).encode() + b"\n" + program
        while data:
            data = data[os.write(mk_w, data):]
    except BrokenPipeError:  # the child died before reading (its exec failed): why is on er_r
        pass
    os.close(mk_w)
    why = b""
    while True:  # EOF at the child's exec (close-on-exec) or exit
        chunk = os.read(er_r, 4096)
        if not chunk:
            break
        why += chunk
    os.close(er_r)
    if why:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        die("sandbox set-up failed in the sample's process: " + why.decode("utf-8", "replace"))
    facts = {}
    try:  # what the sample holds, read by the kernel's /proc right after its exec
        st = dict(ln.split(":", 1) for ln in open("/proc/%d/status" % pid).read().splitlines() if ":" in ln)
        facts = {k: st.get(k, "").strip() for k in ("Uid", "Gid", "CapEff", "CapPrm", "CapBnd", "CapAmb", "NoNewPrivs",
                                                      "Seccomp", "Groups")}
        facts.update(uid=int(facts["Uid"].split()[0]), uid_map=" ".join(open("/proc/%d/uid_map" % pid).read().split()))
    except (OSError, ValueError, IndexError):
        pass
    emit({"ready": True, "facts": facts})

    deadline = t0 + cfg["timeout_s"]
    status = ru = None
    timed_out = False
    pfd = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(pfd, select.POLLIN)
    while status is None:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            os.kill(-1, signal.SIGKILL)  # every process of this namespace but PID 1
            _, status, ru = os.wait4(pid, 0)
            break
        poller.poll(min(left, 0.25) * 1000)
        while True:  # reap whatever exited: the sample (keep its rusage) and orphans
            try:
                wpid, st, r = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if wpid == 0:
                break
            if wpid == pid:
                status, ru = st, r
    os.close(pfd)
    left = [p for p in os.listdir("/proc") if p.isdigit() and p != "1"]
    if left:
        os.kill(-1, signal.SIGKILL)
    while True:
        try:
            os.wait()
        except ChildProcessError:
            break
    report, chunk = b"", b"x"
    while chunk and len(report) < (1 << 20):  # every writer is gone: this ends
        chunk = os.read(rep_r, 65536)
        report += chunk
    sfacts, events, completed, foreign_done = {}, [], False, False
    for line in report.decode("utf-8", "replace").splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if not isinstance(msg, dict):
            continue
        if "containment" in msg and not sfacts and isinstance(msg["containment"], dict):
            sfacts = msg["containment"]
        elif "done" in msg:
            if msg.get("done") == marker and msg.get("pid") == pid:
                completed = True
            elif msg.get("done") == marker:  # a forked copy ran the tests after the sample exited
                foreign_done = True
        else:
            events.append(msg)
    emit({"result": {
        "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "timed_out": timed_out, "cpu_s": ru.ru_utime + ru.ru_stime, "max_rss_kb": ru.ru_maxrss,
        "completed": completed, "foreign_done": foreign_done, "processes_left": len(left),
        "containment": sfacts, "events": events[:20],
    }})
    sys.stdout.flush()


if __name__ == "__main__":
    main()
