"""A served engine never outlives costtax: a watchdog process per server.

costtax starts vLLM's server in a session (process group) of its own; vLLM's engine core is a
child in that group. A parent-death signal on the server is not enough (it is not inherited by
the engine core, fires when the starting *thread* exits, and the engine core does not watch its
parent), and `atexit`/signal handlers do not run on SIGKILL. So, right after the server process
starts, costtax starts this watchdog:

* in a session of its own (Ctrl-C at the terminal, a kill of costtax's process group or of
  costtax's session do not reach it), with stdin/stdout on /dev/null;
* blocked reading a pipe whose write end only costtax holds (the fd is non-inheritable, so
  neither the server nor anything else costtax starts gets a copy);
* when the pipe closes without the disarm byte (costtax exited, however it died), it sends
  SIGTERM to the server's process group, waits `grace_s` for the group to empty, then SIGKILL.
* When costtax stops the server itself, it writes the disarm byte first: the watchdog exits
  without signalling anything (the group id may be reused after that).

The group is signalled only while its leader is the recorded process (pid == pgid with the
recorded start time) or gone with members left (Linux does not hand out a pid that is still a
process group id), so a pid reused by an unrelated process is never signalled.

This file runs as a script (`python -I watchdog.py PGID START_TICKS GRACE_S FD`): stdlib only,
no costtax import, so it starts in tens of milliseconds.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

DISARM = b"d"


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state is [0], pgrp [2], starttime [19])."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()


def group_members(pgid: int, leader_ticks: int | None) -> list[int]:
    """Live (non-zombie) pids in process group `pgid`, or [] when the group is not ours: its
    leader (pid == pgid) is alive with another start time than `leader_ticks`."""
    lead = _stat_fields(pgid)
    if lead is not None and leader_ticks is not None and lead[0] not in ("Z", "X"):
        if len(lead) > 19 and int(lead[19]) != leader_ticks:
            return []
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        f = _stat_fields(int(entry.name))
        if f and len(f) > 19 and int(f[2]) == pgid and f[0] not in ("Z", "X"):
            if leader_ticks is None or int(f[19]) >= leader_ticks:
                out.append(int(entry.name))
    return out


def stop_group(pgid: int, leader_ticks: int | None, grace_s: float) -> str:
    """SIGTERM to the group, up to `grace_s` for it to empty, then SIGKILL. Returns what
    happened: gone | terminated | killed | survived."""
    if not group_members(pgid, leader_ticks):
        return "gone"
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return "gone"
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not group_members(pgid, leader_ticks):
            return "terminated"
        time.sleep(0.05)
    if not group_members(pgid, leader_ticks):
        return "terminated"
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return "terminated"
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        if not group_members(pgid, leader_ticks):
            return "killed"
        time.sleep(0.05)
    return "survived"


def spawn(pgid: int, leader_ticks: int | None, grace_s: float) -> tuple[subprocess.Popen, int]:
    """Start a watchdog for group `pgid`; returns (its process, the write end of its pipe).
    Close the write end to fire it; write DISARM and close to let it exit quietly."""
    r, w = os.pipe()  # both non-inheritable: only pass_fds gives the watchdog its read end
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", __file__, str(pgid), str(leader_ticks if leader_ticks is not None else -1), repr(float(grace_s)), str(r)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(r,), start_new_session=True, close_fds=True,
        )
    except BaseException:
        os.close(w)
        raise
    finally:
        os.close(r)
    return proc, w


def disarm(proc: subprocess.Popen | None, fd: int | None, timeout_s: float = 5.0) -> None:
    """Tell the watchdog costtax stopped the server itself; reap it."""
    if fd is not None:
        try:
            os.write(fd, DISARM)
        except OSError:
            pass
        try:
            os.close(fd)
        except OSError:
            pass
    if proc is not None:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)


def _main(argv: list[str]) -> int:
    pgid, ticks, grace_s, fd = int(argv[0]), int(argv[1]), float(argv[2]), int(argv[3])
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)  # only the pipe decides
    data = b""
    while True:
        try:
            chunk = os.read(fd, 64)
        except InterruptedError:
            continue
        except OSError:
            chunk = b""
        if not chunk:
            break
        data += chunk
    if DISARM in data:
        return 0
    stop_group(pgid, ticks if ticks >= 0 else None, grace_s)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
