"""Who started which server: the record costtax keeps of a server it started, and what to do
with a server whose owner died.

Right after `--serve` starts vLLM's server, run.json gets one record per session under
`servers` (a resumed run appends its own; records are never overwritten by a later session):
the server's pid and process group, its port, its start time (clock ticks since boot, from
/proc/PID/stat) with the boot id, and the owner's (costtax's) pid and start time. A process is
identified by (pid, start time, boot id), never by pid alone, so a pid reused by another
process is never taken for the server or for its owner.

The server's environment carries the same identity (COSTTAX_SERVE_OWNER, COSTTAX_RUN_DIR;
vLLM's engine core inherits it), so `costtax doctor` finds leftovers of any run without being
told a run directory.

A leftover is a live member of the recorded process group whose owner is gone. `--resume`
stops the leftovers recorded in its run.json before it starts a new server;
`costtax doctor --stop-leftovers` stops the ones it finds. A server whose owner is alive is
never touched (another costtax is still using it).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import watchdog

OWNER_ENV = "COSTTAX_SERVE_OWNER"  # "PID:START_TICKS:BOOT_ID" of the costtax that started it
RUN_DIR_ENV = "COSTTAX_RUN_DIR"


def boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def start_ticks(pid: int) -> int | None:
    """Start time of process `pid` in clock ticks since boot (/proc/PID/stat field 22)."""
    f = watchdog._stat_fields(pid)
    if not f or len(f) <= 19:
        return None
    return int(f[19])


def process_is(pid: int, ticks: int | None, boot: str | None) -> bool:
    """Whether the recorded process (pid, start ticks, boot id) is alive, not a zombie."""
    if pid <= 0 or ticks is None or boot is None or boot != boot_id():
        return False
    f = watchdog._stat_fields(pid)
    return bool(f) and len(f) > 19 and f[0] not in ("Z", "X") and int(f[19]) == ticks


def owner_tag() -> str:
    """This process's identity for the server's environment."""
    return f"{os.getpid()}:{start_ticks(os.getpid())}:{boot_id()}"


@dataclass(frozen=True)
class ServerRecord:
    """One server costtax started; run.json `servers[i]`."""

    session: str
    pid: int
    pgid: int
    port: int
    start_ticks: int | None
    boot_id: str | None
    owner_pid: int
    owner_start_ticks: int | None
    command: tuple[str, ...] = ()
    serve_args: tuple[str, ...] = ()
    started_at: str | None = None
    watchdog_pid: int | None = None
    stopped_at: str | None = None  # set when costtax stopped it itself

    def __post_init__(self):
        for name in ("pid", "pgid", "owner_pid"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"ServerRecord.{name}: a positive pid, got {v!r}")
        if not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise ValueError(f"ServerRecord.port: 1..65535, got {self.port!r}")
        object.__setattr__(self, "command", tuple(self.command))
        object.__setattr__(self, "serve_args", tuple(self.serve_args))

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["command"] = list(self.command)
        d["serve_args"] = list(self.serve_args)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "ServerRecord":
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in fields})

    def owner_alive(self) -> bool:
        return process_is(self.owner_pid, self.owner_start_ticks, self.boot_id)

    def members(self) -> list[int]:
        """Live processes of this server's group ([] after a reboot, or when the recorded
        leader pid now belongs to another process)."""
        if self.boot_id is None or self.boot_id != boot_id() or self.start_ticks is None:
            return []
        return watchdog.group_members(self.pgid, self.start_ticks)


def record_server(meta: dict, record: ServerRecord) -> None:
    """Put `record` into run.json's `servers`: replaces this session's record (a port retry
    within one start), appends otherwise."""
    servers = meta.setdefault("servers", [])
    for i, old in enumerate(servers):
        if old.get("session") == record.session:
            servers[i] = record.to_json()
            return
    servers.append(record.to_json())


def stop_leftover(record: ServerRecord, grace_s: float = 20.0) -> dict[str, Any]:
    """Stop a recorded server if, and only if, its owner is gone and its group is still there.
    Returns {"session", "pgid", "action", "members"}; action: owner_alive | gone | terminated |
    killed | survived."""
    out: dict[str, Any] = {"session": record.session, "pgid": record.pgid, "port": record.port}
    if record.owner_alive():
        return {**out, "action": "owner_alive", "members": []}
    members = record.members()
    if not members:
        return {**out, "action": "gone", "members": []}
    return {**out, "action": watchdog.stop_group(record.pgid, record.start_ticks, grace_s), "members": members}


def reap_recorded(meta: dict, grace_s: float = 20.0) -> list[dict[str, Any]]:
    """For `--resume`: stop every recorded server whose owner died (records costtax stopped
    itself are skipped). Returns one result per record examined."""
    results = []
    for raw in meta.get("servers") or []:
        if raw.get("stopped_at"):
            continue
        try:
            rec = ServerRecord.from_json(raw)
        except (TypeError, ValueError):
            results.append({"session": raw.get("session"), "action": "unreadable"})
            continue
        results.append(stop_leftover(rec, grace_s))
    return results


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    env = {}
    for item in raw.split(b"\0"):
        k, sep, v = item.partition(b"=")
        if sep and k in (OWNER_ENV.encode(), RUN_DIR_ENV.encode()):
            env[k.decode()] = v.decode(errors="replace")
    return env


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def find_leftovers() -> list[dict[str, Any]]:
    """Server processes costtax started (found by COSTTAX_SERVE_OWNER in their environment,
    readable for processes of this user) whose owner is gone, one entry per process group:
    {"pgid", "pids", "owner", "run_dir", "commands", "rss_mb"}."""
    here = boot_id()
    groups: dict[int, dict[str, Any]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        env = _environ(pid)
        tag = env.get(OWNER_ENV)
        if not tag:
            continue
        f = watchdog._stat_fields(pid)
        if not f or f[0] in ("Z", "X"):
            continue
        try:
            opid, oticks, oboot = tag.split(":", 2)
            owner_live = oboot == here and process_is(int(opid), int(oticks), oboot)
        except ValueError:
            owner_live = False
        if owner_live:
            continue
        pgid = int(f[2])
        g = groups.setdefault(pgid, {"pgid": pgid, "pids": [], "owner": tag, "run_dir": env.get(RUN_DIR_ENV), "commands": [], "rss_mb": 0.0})
        g["pids"].append(pid)
        g["commands"].append(_cmdline(pid)[:120])
        try:
            g["rss_mb"] += int(f[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except (ValueError, IndexError, OSError):
            pass
    return sorted(groups.values(), key=lambda g: g["pgid"])


def stop_found(group: dict[str, Any], grace_s: float = 20.0) -> str:
    """Stop one group from find_leftovers (its leader's start time, if the leader is alive,
    pins the group; else the members found)."""
    pgid = group["pgid"]
    ticks = start_ticks(pgid) if pgid in group["pids"] else min((start_ticks(p) or 0) for p in group["pids"])
    return watchdog.stop_group(pgid, ticks, grace_s)


def record_from_served(served: Any, session: str) -> ServerRecord:
    """The record of a ServedVllm whose process just started."""
    from .. import provenance

    return ServerRecord(
        session=session, pid=served.proc.pid, pgid=served.pgid, port=int(served.port),
        start_ticks=served.start_ticks, boot_id=boot_id(),
        owner_pid=os.getpid(), owner_start_ticks=start_ticks(os.getpid()),
        command=tuple(served.command), serve_args=tuple(served.serve_args), started_at=provenance.now_iso(),
        watchdog_pid=served._watchdog[0].pid if served._watchdog else None,
    )


class RunJsonHooks:
    """`on_spawn` / `on_stop` for ServedVllm: write the session's server record into run.json
    right after the server process starts, and when costtax stopped it itself."""

    def __init__(self, meta: dict, run_json: Path, session: str):
        self.meta, self.run_json, self.session = meta, Path(run_json), session

    def _write(self) -> None:
        from ..jsonio import write_json_atomic

        write_json_atomic(self.run_json, self.meta)

    def spawned(self, served: Any) -> None:
        record_server(self.meta, record_from_served(served, self.session))
        self._write()

    def stopped(self, served: Any) -> None:
        from .. import provenance

        for rec in self.meta.get("servers") or []:
            if rec.get("session") == self.session and rec.get("pid") == served.pgid:
                rec["stopped_at"] = provenance.now_iso()
        self._write()


def reap_on_resume(meta: dict, emit: Any = None, grace_s: float = 20.0) -> list[dict[str, Any]]:
    """`--resume`: stop the servers this run's dead sessions left, leave a live owner's alone;
    each outcome other than "gone" becomes a run.json event and a status line."""
    from .. import provenance

    results = reap_recorded(meta, grace_s)
    for r in results:
        if r.get("action") == "gone":
            continue
        meta.setdefault("events", []).append({"t": provenance.now_iso(), "event": "leftover_server", **r})
        if emit is not None:
            what = {
                "owner_alive": "left alone: the costtax that started it is still running",
                "unreadable": "its record in run.json is unreadable; see `costtax doctor`",
            }.get(r["action"], f"stopped ({r['action']})")
            emit("status", {"msg": f"server of session {r.get('session')} (process group {r.get('pgid')}, port {r.get('port')}): {what}"})
    return results
