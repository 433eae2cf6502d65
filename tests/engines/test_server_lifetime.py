"""A served engine never outlives costtax (engines/watchdog.py, engines/server_record.py).

The stand-in server is a script run as costtax's "python": it records its argv, forks a child
of its own into its process group (like vLLM's engine core), serves /health on --port, and in
"stubborn" mode both ignore SIGTERM. The stand-in profiling process is a Python process that
starts the server through ServedVllm with the run.json hooks `--serve` uses, prints READY and
sleeps until it is killed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from costtax.engines import server_record
from costtax.engines.server_record import ServerRecord, find_leftovers, reap_on_resume, start_ticks

pytestmark = pytest.mark.integration

STAND_IN = r'''#!{python}
import json, os, signal, subprocess, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer
args = sys.argv[1:]
port = int(args[args.index("--port") + 1])
stubborn = os.environ.get("FAKE_MODE") == "stubborn"
with open(os.environ["FAKE_ARGV_FILE"], "w") as f:
    json.dump(args, f)
CHILD = "import signal, sys, time\nif sys.argv[1] == 'stubborn': signal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(600)"
child = subprocess.Popen([sys.executable, "-c", CHILD, "stubborn" if stubborn else "ok"])
with open(os.environ["FAKE_CHILD_FILE"], "w") as f:
    f.write(str(child.pid))
if stubborn:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

HTTPServer(("127.0.0.1", port), H).serve_forever()
'''

OWNER = r'''
import json, sys, time
from pathlib import Path
from costtax.engines.serve import ServedVllm
from costtax.engines.server_record import RunJsonHooks
run, python, mode, watchdog, session, grace = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] == "1", sys.argv[5], float(sys.argv[6])
serve_args = sys.argv[7:]
meta = json.loads((run / "run.json").read_text()) if (run / "run.json").exists() else {}
hooks = RunJsonHooks(meta, run / "run.json", session)
s = ServedVllm(run / "model", run / "server.log", python=python, device="cpu", stop_grace_s=grace, health_timeout_s=60,
               env={"FAKE_MODE": mode, "FAKE_CHILD_FILE": str(run / f"child-{session}.pid"), "FAKE_ARGV_FILE": str(run / f"argv-{session}.json")},
               serve_args=serve_args, on_spawn=hooks.spawned, on_stop=hooks.stopped, watchdog=watchdog)
s.start()
print("READY", s.pgid, flush=True)
time.sleep(600)
'''


def alive(pid: int) -> bool:
    try:
        st = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return st[st.rfind(")") + 2] not in "ZX"


def wait_gone(pids, timeout_s: float) -> float:
    t0 = time.monotonic()
    while any(alive(p) for p in pids):
        if time.monotonic() - t0 > timeout_s:
            break
        time.sleep(0.05)
    return time.monotonic() - t0


@pytest.fixture
def stand_in(tmp_path):
    path = tmp_path / "stand-in-python"
    path.write_text(STAND_IN.replace("{python}", sys.executable))
    path.chmod(0o755)
    return str(path)


class Owner:
    """A stand-in profiling process with its server; kills everything it knows at teardown."""

    def __init__(self, run: Path, python: str, *, mode="ok", watchdog=True, session="s1", grace=20.0, serve_args=()):
        run.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", OWNER, str(run), python, mode, "1" if watchdog else "0", session, str(grace), *serve_args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        line = self.proc.stdout.readline()
        assert line.startswith("READY"), line + self.proc.stderr.read()
        self.pgid = int(line.split()[1])
        self.child = int((run / f"child-{session}.pid").read_text())
        self.run, self.session = run, session

    def record(self) -> dict:
        recs = [r for r in json.loads((self.run / "run.json").read_text())["servers"] if r["session"] == self.session]
        assert len(recs) == 1
        return recs[0]

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for pid in (self.pgid, self.child):
            if alive(pid):
                try:
                    os.killpg(self.pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture
def owners():
    made: list[Owner] = []
    yield made
    for o in made:
        o.cleanup()


def test_sigkill_of_the_profiling_process_leaves_neither_server_nor_child(tmp_path, stand_in, owners):
    o = Owner(tmp_path / "run", stand_in)
    owners.append(o)
    rec = o.record()  # written right after the server process started
    assert rec["pgid"] == o.pgid == rec["pid"] and rec["owner_pid"] == o.proc.pid
    assert rec["start_ticks"] == start_ticks(o.pgid) and rec["owner_start_ticks"] and rec["boot_id"]
    assert os.getpgid(o.child) == o.pgid and alive(o.child)
    assert rec["watchdog_pid"] and alive(rec["watchdog_pid"]) and os.getsid(rec["watchdog_pid"]) == rec["watchdog_pid"]
    o.kill9()
    took = wait_gone([o.pgid, o.child, rec["watchdog_pid"]], 5.0)
    assert not alive(o.pgid) and not alive(o.child), f"still alive after {took:.1f} s"
    assert not alive(rec["watchdog_pid"])


def test_a_stubborn_server_gets_sigkill_after_its_grace(tmp_path, stand_in, owners):
    o = Owner(tmp_path / "run", stand_in, mode="stubborn", grace=1.5)
    owners.append(o)
    t0 = time.monotonic()
    o.kill9()
    time.sleep(0.8)
    assert alive(o.pgid) and alive(o.child)  # SIGTERM ignored: still there within the grace
    wait_gone([o.pgid, o.child], 5.0)
    assert not alive(o.pgid) and not alive(o.child)
    assert time.monotonic() - t0 < 5.0


def test_costtax_stopping_the_server_itself_disarms_the_watchdog(tmp_path, stand_in):
    from costtax.engines.serve import ServedVllm
    from costtax.engines.server_record import RunJsonHooks

    run = tmp_path / "run"
    run.mkdir()
    meta: dict = {}
    hooks = RunJsonHooks(meta, run / "run.json", "s1")
    s = ServedVllm(run / "model", run / "server.log", python=stand_in, device="cpu", health_timeout_s=60,
                   env={"FAKE_MODE": "ok", "FAKE_CHILD_FILE": str(run / "child"), "FAKE_ARGV_FILE": str(run / "argv.json")},
                   on_spawn=hooks.spawned, on_stop=hooks.stopped)
    with s:
        wd = s._watchdog[0]
        assert wd.poll() is None
    assert wd.poll() == 0  # exited on the disarm byte, reaped
    rec = json.loads((run / "run.json").read_text())["servers"][0]
    assert rec["stopped_at"] and rec["session"] == "s1"
    assert reap_on_resume(json.loads((run / "run.json").read_text())) == []  # stopped records are skipped


def test_resume_stops_the_server_a_dead_owner_left(tmp_path, stand_in, owners):
    """No watchdog (it failed, or was killed with the owner): the record in run.json is what
    --resume goes by. open_run(resume=...) stops the leftover and records it as an event."""
    from costtax.config import RunConfig
    from costtax.run.rundir import open_run

    run = tmp_path / "run"
    config = RunConfig(serve=True, techniques=("plain",), limit=1, out=str(run))
    open_run(config)
    o = Owner(run, stand_in, watchdog=False, session="dead")
    owners.append(o)
    o.kill9()
    time.sleep(0.3)
    assert alive(o.pgid) and alive(o.child)  # the leftover: 2 processes, port held
    state = open_run(config, resume=run)
    assert wait_gone([o.pgid, o.child], 5.0) < 5.0 and not alive(o.pgid) and not alive(o.child)
    ev = [e for e in state.meta["events"] if e["event"] == "leftover_server"]
    assert len(ev) == 1 and ev[0]["action"] == "terminated" and ev[0]["session"] == "dead"
    assert set(ev[0]["members"]) == {o.pgid, o.child}
    # the record stays (one per session, never overwritten)
    on_disk = json.loads((run / "run.json").read_text())
    assert [r["session"] for r in on_disk["servers"]] == ["dead"]


def test_resume_leaves_a_live_owners_server_alone(tmp_path, stand_in, owners):
    run = tmp_path / "run"
    o = Owner(run, stand_in, session="live")
    owners.append(o)
    meta = json.loads((run / "run.json").read_text())
    res = reap_on_resume(meta)
    assert [r["action"] for r in res] == ["owner_alive"]
    assert meta["events"][0]["action"] == "owner_alive"
    time.sleep(0.3)
    assert alive(o.pgid) and alive(o.child)


def test_a_process_reusing_a_recorded_pid_is_left_alone(tmp_path):
    """The record's pid (and process group) now belongs to an unrelated process: another start
    time, owner dead. Nothing is signalled."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        time.sleep(0.2)
        ticks = start_ticks(other.pid)
        dead_owner = subprocess.Popen([sys.executable, "-c", "pass"])
        dead_owner.wait()
        rec = ServerRecord(session="old", pid=other.pid, pgid=other.pid, port=8000, start_ticks=ticks - 5,
                           boot_id=server_record.boot_id(), owner_pid=dead_owner.pid, owner_start_ticks=1)
        assert not rec.owner_alive() and rec.members() == []
        meta = {"servers": [rec.to_json()]}
        assert reap_on_resume(meta) == [{"session": "old", "pgid": other.pid, "port": 8000, "action": "gone", "members": []}]
        # a record from another boot is never acted on either
        rec2 = ServerRecord(**{**rec.to_json(), "start_ticks": ticks, "boot_id": "another-boot"})
        assert server_record.stop_leftover(rec2)["action"] == "gone"
        time.sleep(0.2)
        assert other.poll() is None and alive(other.pid)
    finally:
        other.kill()
        other.wait()


def test_doctor_finds_a_leftover_by_its_environment_and_stops_it(tmp_path, stand_in, owners):
    live = Owner(tmp_path / "live", stand_in, session="live")
    dead = Owner(tmp_path / "dead", stand_in, watchdog=False, session="dead")
    owners += [live, dead]
    dead.kill9()
    found = [g for g in find_leftovers() if g["pgid"] in (live.pgid, dead.pgid)]
    assert [g["pgid"] for g in found] == [dead.pgid]  # the live owner's server is not a leftover
    assert set(found[0]["pids"]) == {dead.pgid, dead.child} and found[0]["run_dir"] == str((tmp_path / "dead").resolve())
    from costtax.doctor import leftover_lines

    lines = leftover_lines(stop=False)
    assert any(str(dead.pgid) in ln and "leftover" in ln for ln in lines)
    assert alive(dead.pgid)  # reporting stops nothing
    lines = leftover_lines(stop=True)
    assert any(str(dead.pgid) in ln and "terminated" in ln for ln in lines)
    assert not alive(dead.pgid) and not alive(dead.child) and alive(live.pgid)


def test_server_record_validates():
    with pytest.raises(ValueError, match="port"):
        ServerRecord(session="s", pid=10, pgid=10, port=0, start_ticks=1, boot_id="b", owner_pid=2, owner_start_ticks=1)
    with pytest.raises(ValueError, match="pgid"):
        ServerRecord(session="s", pid=10, pgid=-1, port=80, start_ticks=1, boot_id="b", owner_pid=2, owner_start_ticks=1)
    rec = ServerRecord(session="s", pid=10, pgid=10, port=80, start_ticks=1, boot_id="b", owner_pid=2, owner_start_ticks=1, command=["a"])
    assert ServerRecord.from_json(json.loads(json.dumps(rec.to_json()))) == rec
