"""Every attack on the sandbox, each next to a control that succeeds outside it, on both paths.

* ``root``: costtax runs as root (CI): the sample gets uid 65534.
* ``nonroot``: costtax runs as a real unprivileged uid (``setpriv --reuid=65534 --regid=65534
  --clear-groups``, HOME under /home owned by that uid, the system python3 with the sandbox package
  copied to a world-readable directory): the sample is root of a user namespace mapping only 65534.

The cases live in tests/sandbox_cases.py; each path runs them all once (module fixture, ~12 s).
Skips only where the machine cannot create the namespaces (or lacks the tools to try), by name.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

import sandbox_cases as sc

ROOT = Path(__file__).resolve().parents[1]
UNSHARE_PROBE = ["unshare", "--net", "--pid", "--fork", "--mount", "--ipc", "--uts", "true"]
UNPRIV = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _skip_without(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"namespaces cannot be tried here: `{tool}` (util-linux) is not installed")


@pytest.fixture(scope="module")
def root_results():
    if os.geteuid() != 0:
        pytest.skip("root path needs euid 0 (CI runs as root); the nonroot cases run as this user")
    _skip_without("unshare")
    p = subprocess.run(UNSHARE_PROBE, capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"namespaces cannot be created here as root: {p.stderr.strip()}")
    ctx = {"home": os.path.expanduser("~"), "project": str(ROOT), "tag": f"ctx-{uuid.uuid4().hex[:8]}"}
    return sc.run_cases(ctx)


@pytest.fixture(scope="module")
def nonroot_results():
    _skip_without("unshare")
    py = "/usr/bin/python3"
    if not os.access(py, os.X_OK):
        pytest.skip("no system /usr/bin/python3 for the unprivileged uid to run")
    if os.geteuid() != 0:  # already unprivileged: run the cases as this user, in this interpreter
        p = subprocess.run(["unshare", "--map-root-user", *UNSHARE_PROBE[1:]], capture_output=True, text=True)
        if p.returncode != 0:
            pytest.skip(f"user namespaces cannot be created by this uid here: {p.stderr.strip()}")
        return sc.run_cases({"home": os.path.expanduser("~"), "project": tempfile.mkdtemp(dir=os.path.expanduser("~")),
                             "tag": f"ctx-{uuid.uuid4().hex[:8]}"})
    _skip_without("setpriv")
    p = subprocess.run([*UNPRIV, "unshare", "--map-root-user", *UNSHARE_PROBE[1:]], capture_output=True, text=True, cwd="/")
    if p.returncode != 0:
        pytest.skip(f"user namespaces cannot be created by uid 65534 here: {p.stderr.strip()}")
    os.makedirs("/home", exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="costtax-sbx-", dir="/home"))
    try:
        home, proj, pkg = base / "home", base / "project", base / "pkg"
        for d in (home, proj, pkg / "costtax" / "sandbox"):
            d.mkdir(parents=True)
        (pkg / "costtax" / "__init__.py").write_text("")
        shutil.copy(ROOT / "costtax" / "errors.py", pkg / "costtax")
        for f in (ROOT / "costtax" / "sandbox").glob("*.py"):
            shutil.copy(f, pkg / "costtax" / "sandbox")
        shutil.copy(Path(__file__).with_name("sandbox_cases.py"), pkg)
        ctx_file = base / "ctx.json"
        ctx_file.write_text(json.dumps({"home": str(home), "project": str(proj), "tag": f"ctx-{uuid.uuid4().hex[:8]}"}))
        for d, _, files in os.walk(base):
            os.chown(d, 65534, 65534)
            os.chmod(d, 0o755)
            for f in files:
                os.chown(os.path.join(d, f), 65534, 65534)
        cmd = [*UNPRIV, "env", "-i", f"HOME={home}", "PATH=/usr/bin:/bin", f"PYTHONPATH={pkg}", py,
               str(pkg / "sandbox_cases.py"), str(ctx_file)]
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=str(home), timeout=180)
        assert p.returncode == 0, f"unprivileged case runner failed: {p.stderr[-2000:]}"
        return json.loads(p.stdout)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["root", "nonroot"])
def res(request):
    return request.param, request.getfixturevalue(f"{request.param}_results")


def _r(case: dict) -> dict:
    """What the sandboxed probe printed (its ``R`` line); the probe itself must have run to its end."""
    sb = case["sandbox"]
    assert sb["passed"], (sb["reason"], sb["stderr_tail"][-500:])
    return sc.parse_r(sb["stdout_tail"])


def test_home_is_masked_write_and_read_fail(res):
    _, c = res[0], res[1]["home"]
    assert c["control"]["R"] == {"write": "ok:1", "read": f"ok:{c['control']['R']['read'][3:]}"}
    assert c["control"]["R"]["read"].endswith("HOME-SECRET")
    r = _r(c)
    assert r["write"].startswith("fail:") and r["read"].startswith("fail:FileNotFoundError") and r["listdir"] == "ok:[]"
    assert "HOME-SECRET" not in c["sandbox"]["stdout_tail"] + c["sandbox"]["stderr_tail"]
    assert c["after"]["exists"] is False


def test_project_dir_is_read_only(res):
    _, c = res[0], res[1]["project"]
    assert c["control"]["R"] == {"write": "ok:1"}
    assert "Read-only file system" in _r(c)["write"] and c["after"]["exists"] is False


def test_tmp_write_lands_in_private_tmpfs(res):
    _, c = res[0], res[1]["tmp"]
    assert c["control"]["R"] == {"write": "ok:1", "read": "ok:x"}
    assert _r(c) == {"write": "ok:1", "read": "ok:x"}  # it worked inside ...
    assert c["after"]["exists"] is False  # ... and never reached the host's /tmp


def test_mount_and_umount_are_refused(res):
    _, c = res[0], res[1]["mount"]
    assert c["control"]["R"] == {"mount": "ok", "umount": "ok"}  # with PID 1's capabilities
    r = _r(c)
    assert r["mount"].startswith("fail:PermissionError") and r["umount"].startswith("fail:PermissionError")


def test_capabilities_cannot_be_raised(res):
    _, c = res[0], res[1]["capabilities"]
    ctl = c["control"]["R"]
    assert ctl["capset_sys_admin"] == "ok" and ctl["ambient_raise_sys_admin"] == "ok"
    r = _r(c)
    assert r["capset_sys_admin"].startswith("fail:PermissionError")
    assert r["ambient_raise_sys_admin"].startswith("fail:PermissionError")
    assert r["cap_eff"] == "ok:0000000000000000"


def test_no_network_even_loopback(res):
    _, c = res[0], res[1]["network"]
    assert c["control"]["R"]["loopback"] == "ok"
    r = _r(c)
    assert "Network is unreachable" in r["loopback"] and "Network is unreachable" in r["internet"]


def test_parent_and_host_processes_cannot_be_signalled(res):
    path, c = res[0], res[1]["signal_parent"]
    assert c["control"]["R"] == {"kill": "ok"} and c["after"]["victim_rc"] == -9
    r = _r(c)  # PID 1 survived to report: the sample ran to its end and the result came back
    assert r["ppid"] == "ok:1"
    if path == "root":  # uid 65534 may not signal root
        assert r["kill_parent"].startswith("fail:PermissionError")
    else:  # same uid: the kill is delivered to PID 1 of the namespace, which ignores it
        assert r["kill_parent"] in ("ok", "fail:PermissionError:[Errno 1] Operation not permitted")
    assert r["kill_host"].startswith("fail:ProcessLookupError")  # outside its PID namespace
    assert c["after"]["sentinel_alive"] is True


def test_other_processes_environ_and_cmdline_are_hidden(res):
    _, c = res[0], res[1]["proc_peek"]
    ctl = c["control"]["R"]
    assert c["secret"] in ctl["environ"] and "sentinel-argv" in ctl["cmdline"]
    r = _r(c)
    out = c["sandbox"]["stdout_tail"]
    assert c["secret"] not in out and r["environ_all"] == "ok:" and r["cmdline_all"] == "ok:"
    assert r["environ_host_pid"].startswith("fail:FileNotFoundError")
    assert r["cmdline_pid1"].startswith("fail:FileNotFoundError")  # PID 1 (and its config) invisible
    assert r["pids"] == "ok:['2']"  # the sample alone: PID 1 hidden, nothing else in the namespace


def test_result_pipe_cannot_be_reached_through_proc(res):
    """Nor can PID 1 be ptraced (which would reach the pipe too)."""
    _, c = res[0], res[1]["result_pipe"]
    assert c["control"] == {"rc": 0, "read_back": "forged", "ptrace": "ok"}  # both work between host processes
    r = _r(c)
    assert r["fd_list"].startswith("fail:FileNotFoundError") and r["fd_write"].startswith("fail:FileNotFoundError")
    assert r["fd_write_ns"] == "ok:[]"
    assert r["ptrace_pid1"].startswith("fail:PermissionError")  # PID 1 is not dumpable (root: other uid too)


def test_fork_bomb_is_contained_and_nothing_survives(res):
    _, c = res[0], res[1]["fork_bomb"]
    assert c["control"]["R"] == {"forks": 40}  # more processes than the sandbox's limit of 16
    assert c["sandbox"]["passed"] is False and c["sandbox"]["reason"] in ("timeout", "cpu_time")
    assert c["after"]["survivors"] == []


def test_memory_bomb_fails_with_memory(res):
    _, c = res[0], res[1]["memory_bomb"]
    assert c["control"]["R"] == {"alloc": f"ok:{400 << 20}"}  # more than the sandbox's 256 MiB
    assert c["sandbox"]["passed"] is False and c["sandbox"]["reason"] == "memory"


def test_file_size_bomb_is_refused(res):
    _, c = res[0], res[1]["file_size_bomb"]
    assert c["control"]["R"] == {"write": f"ok:{3 << 20}"}  # more than the sandbox's 1 MiB
    assert "File too large" in _r(c)["write"]


def test_open_files_are_limited(res):
    _, c = res[0], res[1]["open_files"]
    assert c["control"]["R"] == {"open": "ok:200"}
    assert "Too many open files" in _r(c)["open"]


def test_every_result_records_path_uid_map_and_no_capabilities(res):
    path, c = res
    for name, case in c.items():
        facts = case["sandbox"]["containment"]  # on a timeout: PID 1's reading right after exec
        assert facts["path"] == "unshare" and facts["mode"] == ("root" if path == "root" else "userns"), name
        assert (facts["CapEff"], facts["CapPrm"], facts["CapBnd"], facts["CapAmb"]) == ("0" * 16,) * 4, name
        assert facts["NoNewPrivs"] == "1", name
        if path == "root":
            assert facts["uid"] == 65534 and facts["uid_map"] == "0 0 4294967295", name
        else:  # root of a namespace that maps only the unprivileged uid
            assert facts["uid"] == 0 and facts["uid_map"] == "0 65534 1", name
