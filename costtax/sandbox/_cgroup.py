"""A per-sample cgroup (root only): a pids limit and a memory limit on the whole sandbox, bwrap
included, beside the rlimits. cgroup v2 where the unified hierarchy has both controllers, else
the v1 ``pids`` and ``memory`` hierarchies (this machine is a v1/v2 hybrid: pids and memory are
v1 controllers here). Created under costtax's own cgroup, joined by bwrap's launcher before it
execs bwrap (``join_command``), removed after the run. Where none can be made, the result says
``cgroup: none (why)``.
"""
from __future__ import annotations

import os
import signal
import time

_SHIM = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 97; shift; done; shift; exec "$@"'


def _mounts() -> dict[str, str]:
    """{"v2": mountpoint, "pids": v1 mountpoint, "memory": v1 mountpoint} as found."""
    out: dict[str, str] = {}
    with open("/proc/self/mounts") as fh:
        for line in fh:
            dev, mnt, typ, opts = line.split()[:4]
            if typ == "cgroup2":
                out.setdefault("v2", mnt)
            elif typ == "cgroup":
                for c in ("pids", "memory"):
                    if c in opts.split(","):
                        out.setdefault(c, mnt)
    return out


def _own(controller: str) -> str:
    """This process's cgroup path in a v1 hierarchy (``controller``) or in v2 (``""``)."""
    with open("/proc/self/cgroup") as fh:
        for line in fh:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            if (controller == "" and ctrls == "") or controller in ctrls.split(","):
                return path.lstrip("/")
    return ""


class Cgroup:
    def __init__(self, name: str, uid: int, pids_max: int, memory_max: int):
        self.dirs: list[str] = []
        self.version = None
        try:
            m = _mounts()
            v2 = m.get("v2")
            ctrls = open(os.path.join(v2, _own(""), "cgroup.controllers")).read().split() if v2 else []
            if {"pids", "memory"} <= set(ctrls):
                d = os.path.join(v2, _own(""), name)
                os.mkdir(d, 0o755)
                self.dirs, self.version = [d], "v2"
                self._write(d, "pids.max", pids_max)
                self._write(d, "memory.max", memory_max)
                self._write(d, "memory.swap.max", 0, optional=True)
            elif "pids" in m and "memory" in m:
                for c, f, v in (("pids", "pids.max", pids_max), ("memory", "memory.limit_in_bytes", memory_max)):
                    d = os.path.join(m[c], _own(c), name)
                    os.mkdir(d, 0o755)
                    self.dirs.append(d)
                    self._write(d, f, v)
                self.version = "v1"
            else:
                raise OSError("no pids and memory controllers mounted")
            for d in self.dirs:  # bwrap's launcher runs as the sample's uid: it may move itself in
                os.chown(os.path.join(d, "cgroup.procs"), uid, -1)
            self.why = None
        except OSError as exc:
            self.close()
            self.version, self.why = None, f"{type(exc).__name__}: {exc.strerror or exc}"
        self.limits = {"pids_max": pids_max, "memory_max": memory_max}

    @staticmethod
    def _write(d: str, name: str, value, optional: bool = False) -> None:
        try:
            with open(os.path.join(d, name), "w") as fh:
                fh.write(str(value))
        except OSError:
            if not optional:
                raise

    def join_command(self, cmd: list[str]) -> list[str]:
        if not self.version:
            return cmd
        return ["/bin/sh", "-c", _SHIM, "sh", *[os.path.join(d, "cgroup.procs") for d in self.dirs], "--", *cmd]

    def facts(self) -> dict:
        if not self.version:
            return {"cgroup": f"none ({self.why})"}
        out = {"cgroup": self.version, "cgroup_pids_max": self.limits["pids_max"], "cgroup_memory_max": self.limits["memory_max"]}
        for d in self.dirs:
            for f, key in (("memory.max_usage_in_bytes", "cgroup_memory_peak"), ("memory.peak", "cgroup_memory_peak"),
                           ("pids.peak", "cgroup_pids_peak")):
                try:
                    out[key] = int(open(os.path.join(d, f)).read())
                except (OSError, ValueError):
                    pass
        return out

    def close(self) -> None:
        """Kill whatever is left in it (there should be nothing) and remove it."""
        for d in self.dirs:
            for _ in range(50):
                try:
                    pids = [int(p) for p in open(os.path.join(d, "cgroup.procs")).read().split()]
                except OSError:
                    pids = []
                for p in pids:
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:  # busy until the last process is reaped
                    time.sleep(0.02)
        self.dirs = []
