"""PID 1 of one sample's namespaces (run as ``python -I -S -c <this file's text>``; never imported).

Standard library only. Reads its configuration, the driver and the program from stdin (never from
argv or the environment, so nothing about the run is in any /proc/*/cmdline or environ), sets up
the containment, runs the sample, and writes JSON lines to stdout: ``{"setup_error": ...}`` (the
sandbox could not be set up: costtax refuses to run generated code), or ``{"ready": ...}`` and
then ``{"result": ...}``. stdout is costtax's pipe; the sample never holds it: its fds are closed
before exec, this process is not dumpable and /proc is mounted with hidepid, so /proc/1/fd is not
there for the sample to open.
"""


def main():  # noqa: C901 - one linear setup sequence reads best in one place
    import ctypes
    import fcntl
    import json
    import os
    import resource
    import signal
    import sys

    # PID 1 of a namespace ignores signals it has no handler for, from inside: keep it that way
    # (Python installs one for SIGINT), so the sample cannot kill the process that reports on it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    head = json.loads(sys.stdin.buffer.readline())
    cfg, driver = head["cfg"], head["driver"].encode()
    program = sys.stdin.buffer.read()
    libc = ctypes.CDLL(None, use_errno=True)

    def emit(obj):
        data = (json.dumps(obj) + "\n").encode()
        while data:
            data = data[os.write(1, data):]

    def die(msg):
        emit({"setup_error": msg})
        os._exit(0)

    def ok(rc, what):
        if rc != 0:
            die("%s: %s" % (what, os.strerror(ctypes.get_errno())))

    if os.getpid() != 1:  # never touch the mounts of a namespace this process did not make
        die("the bootstrap is not PID 1 of a new PID namespace (run it only under `unshare --pid --fork --mount`)")
    MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
    # 1. Not dumpable: without CAP_SYS_PTRACE nobody may ptrace this process or open /proc/1/fd.
    ok(libc.prctl(4, 0, 0, 0, 0), "prctl(PR_SET_DUMPABLE, 0)")

    # 2. Every inherited mount read-only, recursively (mount_setattr, Linux >= 5.12). The mount
    #    namespace is private (unshare's default propagation), so the host's mounts are untouched.
    class MountAttr(ctypes.Structure):
        _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                    ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]

    attr = MountAttr(1, 0, 0, 0)  # MOUNT_ATTR_RDONLY
    libc.syscall.restype = ctypes.c_long
    rc = libc.syscall(ctypes.c_long(442), ctypes.c_int(-100), b"/", ctypes.c_uint(0x8000),  # AT_FDCWD, AT_RECURSIVE
                      ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))
    ok(0 if rc == 0 else -1, "mount_setattr(/, AT_RECURSIVE, MOUNT_ATTR_RDONLY) (needs Linux >= 5.12)")

    # 3. Fresh tmpfs mounts: the only writable places. Then the homes masked by empty read-only ones.
    for target in cfg["tmpfs"]:
        if os.path.isdir(target):
            opts = ("size=%d,mode=1777" % cfg["tmpfs_bytes"]).encode()
            ok(libc.mount(b"tmpfs", target.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, opts), "mount tmpfs on " + target)
    for target in cfg["masks"]:
        if os.path.isdir(target):
            ok(libc.mount(b"tmpfs", target.encode(), b"tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                          b"size=4k,mode=755"), "mask " + target)

    # 4. A /proc of this PID namespace in which the sample sees only its own processes.
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    if libc.mount(b"proc", b"/proc", b"proc", flags, b"hidepid=invisible") != 0:
        ok(libc.mount(b"proc", b"/proc", b"proc", flags, b"hidepid=2"), "mount proc on /proc with hidepid")

    # 5. The working directory on the /tmp tmpfs.
    uid, gid, drop = cfg["uid"], cfg["gid"], cfg["drop_uid"]
    work = "/tmp/work"
    os.mkdir(work, 0o700)
    names = ("program.py", "driver.py", "stdout.txt", "stderr.txt")
    paths = {n: os.path.join(work, n) for n in names}
    for name, data in (("program.py", program), ("driver.py", driver)):
        with open(paths[name], "wb") as fh:
            fh.write(data)

    def high(fd, cloexec=True):  # out of the way of the numbers the child dup2s onto (0..5)
        new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC if cloexec else fcntl.F_DUPFD, 32)
        os.close(fd)
        return new

    out_fd = high(os.open(paths["stdout.txt"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    err_fd = high(os.open(paths["stderr.txt"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    null_fd = high(os.open("/dev/null", os.O_RDONLY))
    rep_r, rep_w = (high(fd) for fd in os.pipe())  # sample -> here: the driver's report
    mk_r, mk_w = (high(fd) for fd in os.pipe())  # here -> sample: the marker, then EOF
    er_r, er_w = (high(fd) for fd in os.pipe())  # child -> here, close-on-exec: why set-up failed
    if drop:
        for p in [work] + list(paths.values()):
            os.chown(p, uid, gid)
    env = {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8"}
    marker = os.urandom(16).hex()
    last_cap = int(open("/proc/sys/kernel/cap_last_cap").read())

    pid = os.fork()
    if pid == 0:
        try:
            for src, dst in ((null_fd, 0), (out_fd, 1), (err_fd, 2), (rep_w, 3), (mk_r, 4)):
                os.dup2(src, dst)
            os.dup2(er_w, 5, inheritable=False)
            os.closerange(6, 1 << 16)
            for cap in range(last_cap + 1):  # empty the bounding set: no exec can grant a capability
                if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                    raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP, %d)" % cap)
            if libc.prctl(47, 4, 0, 0, 0) != 0:  # PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL
                raise OSError(ctypes.get_errno(), "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")
            if drop:  # root: a real uid drop clears the permitted and effective sets
                os.setgroups([])
                os.setresgid(gid, gid, gid)
                os.setresuid(uid, uid, uid)
            else:  # user namespace: one uid mapped, so no drop; clear every set instead
                hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
                data = (ctypes.c_uint32 * 6)()
                if libc.capset(hdr, data) != 0:
                    raise OSError(ctypes.get_errno(), "capset(0)")
            if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS: setuid files grant nothing
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
            lim = [(resource.RLIMIT_CPU, cfg["cpu_s"], cfg["cpu_s"] + 1),
                   (resource.RLIMIT_AS, cfg["memory_bytes"], cfg["memory_bytes"]),
                   (resource.RLIMIT_NPROC, cfg["max_processes"], cfg["max_processes"]),
                   (resource.RLIMIT_FSIZE, cfg["max_file_bytes"], cfg["max_file_bytes"]),
                   (resource.RLIMIT_NOFILE, cfg["max_open_files"], cfg["max_open_files"]),
                   (resource.RLIMIT_CORE, 0, 0)]
            for which, soft, hard in lim:
                resource.setrlimit(which, (soft, hard))
            status = dict(ln.split(":", 1) for ln in open("/proc/self/status").read().splitlines() if ":" in ln)
            for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
                if int(status[key].strip(), 16) != 0:
                    raise OSError("capabilities left after the drop: %s %s" % (key, status[key].strip()))
            if status["NoNewPrivs"].strip() != "1":
                raise OSError("no_new_privs did not stick")
            os.chdir(work)
            last = None
            for exe in cfg["interpreters"]:
                try:
                    os.execve(exe, [exe, "-I", "-B", "driver.py"], env)
                except OSError as exc:  # masked, or not executable by this uid: try the next one
                    last = "%s: %s" % (exe, exc.strerror)
            raise OSError("no interpreter runs inside the sandbox (%s)" % last)
        except BaseException as exc:
            try:
                os.write(5, str(exc).encode("utf-8", "replace")[:2000])
            finally:
                os._exit(127)

    for fd in (out_fd, err_fd, null_fd, rep_w, mk_r, er_w):
        os.close(fd)
    os.write(mk_w, json.dumps({"marker": marker, "check_call": cfg["check_call"]}).encode())
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
    # What the sample holds, read from outside it right after its exec (kept even if it is killed
    # later by the wall-clock limit; the driver's own reading, from inside, replaces it).
    facts = {}
    try:
        st = dict(ln.split(":", 1) for ln in open("/proc/%d/status" % pid).read().splitlines() if ":" in ln)
        facts = {k: st.get(k, "").strip() for k in ("Uid", "Gid", "CapEff", "CapPrm", "CapBnd", "CapAmb", "NoNewPrivs")}
        facts.update(uid=int(facts["Uid"].split()[0]), uid_map=" ".join(open("/proc/%d/uid_map" % pid).read().split()))
    except (OSError, ValueError, IndexError):
        pass
    emit({"ready": True, "facts": facts})

    while True:  # PID 1 reaps every orphan; stop when the sample itself is gone
        wpid, status, ru = os.wait4(-1, 0)
        if wpid == pid:
            break
    while True:  # reap orphans that already exited, then count the ones still running
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break
    left = [p for p in os.listdir("/proc") if p.isdigit() and p != "1"]
    if left:
        os.kill(-1, signal.SIGKILL)  # every process of this namespace but this one
    while True:
        try:
            os.wait()
        except ChildProcessError:
            break
    report, chunk = b"", b"x"
    while chunk and len(report) < (1 << 20):  # every writer is gone: this ends
        chunk = os.read(rep_r, 65536)
        report += chunk
    facts, events, completed, foreign_done = {}, [], False, False
    for line in report.decode("utf-8", "replace").splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if not isinstance(msg, dict):
            continue
        if "containment" in msg and not facts and isinstance(msg["containment"], dict):
            facts = msg["containment"]
        elif "done" in msg:
            if msg.get("done") == marker and msg.get("pid") == pid:
                completed = True
            elif msg.get("done") == marker:  # a forked copy ran the tests after the sample exited
                foreign_done = True
        else:
            events.append(msg)

    def tail(name):
        with open(paths[name], "rb") as fh:
            fh.seek(0, 2)
            n = fh.tell()
            fh.seek(max(0, n - cfg["tail"] * 4))
            return fh.read().decode("utf-8", "replace")[-cfg["tail"]:]

    emit({"result": {
        "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "cpu_s": ru.ru_utime + ru.ru_stime, "max_rss_kb": ru.ru_maxrss,
        "stdout_tail": tail("stdout.txt"), "stderr_tail": tail("stderr.txt"),
        "completed": completed, "foreign_done": foreign_done, "processes_left": len(left),
        "containment": facts, "events": events[:20],
    }})


if __name__ == "__main__":
    main()
