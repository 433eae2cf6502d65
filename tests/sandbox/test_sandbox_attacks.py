"""Today's attacks on the sandbox, each next to a control that succeeds outside it, on both paths.

* ``root``: costtax runs as root (CI): bwrap runs as a per-sample unprivileged uid.
* ``nonroot``: costtax runs as an ordinary uid (as root: ``setpriv`` to uid 65534 running the system
  python3 on readable copies; as an ordinary user: this process).

The cases live in tests/sandbox/sandbox_cases.py, run by tests/sandbox/sandbox_runner.py once per path (module
fixture). The issue-26 rows are in tests/test_sandbox_attacks_bwrap.py. Nothing here skips when
run by root; run by an ordinary user, the root path cannot exist and says so.
"""
from __future__ import annotations

import os

import pytest

import sandbox_cases as sc
import sandbox_runner

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def root_results():
    if os.geteuid() != 0:
        pytest.skip("the root path needs euid 0; run by an ordinary user, the nonroot path is this user's")
    return sandbox_runner.results("root", "sandbox_cases")


@pytest.fixture(scope="module")
def nonroot_results():
    return sandbox_runner.results("nonroot", "sandbox_cases")


@pytest.fixture(params=["root", "nonroot"])
def res(request):
    return request.param, request.getfixturevalue(f"{request.param}_results")


def _r(case: dict) -> dict:
    """What the sandboxed probe printed (its ``R`` line); the probe itself must have run to its end."""
    sb = case["sandbox"]
    assert sb["passed"], (sb["reason"], sb["stderr_tail"][-500:])
    return sc.parse_r(sb["stdout_tail"])


def test_home_is_absent_write_and_read_fail(res):
    _, c = res[0], res[1]["home"]
    assert c["control"]["R"] == {"write": "ok:1", "read": f"ok:{c['control']['R']['read'][3:]}"}
    assert c["control"]["R"]["read"].endswith("HOME-SECRET")
    r = _r(c)
    # no home in the sandbox's filesystem at all (only /usr and the interpreter are bound)
    assert all(r[k].startswith("fail:FileNotFoundError") for k in ("write", "read", "listdir")), r
    assert "HOME-SECRET" not in c["sandbox"]["stdout_tail"] + c["sandbox"]["stderr_tail"]
    assert c["after"]["exists"] is False


def test_project_dir_is_not_reachable(res):
    _, c = res[0], res[1]["project"]
    assert c["control"]["R"] == {"write": "ok:1"}
    write = _r(c)["write"]  # the checkout is not bound in (wherever it lives, /tmp included)
    assert write.startswith("fail:FileNotFoundError") or "Read-only file system" in write, write
    assert c["after"]["exists"] is False


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
    r = _r(c)  # socket() itself is denied by the seccomp filter (and the network namespace is empty)
    assert r["loopback"].startswith("fail:PermissionError") and r["internet"].startswith("fail:PermissionError"), r


def test_parent_and_host_processes_cannot_be_signalled(res):
    path, c = res[0], res[1]["signal_parent"]
    assert c["control"]["R"] == {"kill": "ok"} and c["after"]["victim_rc"] == -9
    r = _r(c)  # PID 1 survived to report: the sample ran to its end and the result came back
    assert r["ppid"] == "ok:1"
    # the same uid inside: the kill is delivered to PID 1 of the namespace, which ignores it (no handler)
    assert r["kill_parent"] in ("ok", "fail:PermissionError:[Errno 1] Operation not permitted")
    assert r["kill_host"].startswith("fail:ProcessLookupError")  # outside its PID namespace
    assert c["after"]["sentinel_alive"] is True


def test_other_processes_environ_and_cmdline_are_hidden(res):
    _, c = res[0], res[1]["proc_peek"]
    ctl = c["control"]["R"]
    assert c["secret"] in ctl["environ"] and "sentinel-argv" in ctl["cmdline"]
    r = _r(c)
    out = c["sandbox"]["stdout_tail"]
    assert c["secret"] not in out and r["environ_all"] == "ok:"  # PID 1 is not dumpable: no environ
    assert "sentinel-argv" not in r["cmdline_all"]  # no host process is visible
    assert r["environ_host_pid"].startswith("fail:FileNotFoundError")
    # PID 1's command line is the init's public source; its configuration came on a pipe
    assert r["cmdline_pid1"].startswith("ok:") and "PID 1 inside the sandbox" in r["cmdline_pid1"]  # the public source only
    assert r["pids"] == "ok:['1', '2']"  # the init and the sample: nothing of the host


def test_result_pipe_cannot_be_reached_through_proc(res):
    """Nor can PID 1 be ptraced (which would reach the pipe too)."""
    _, c = res[0], res[1]["result_pipe"]
    assert c["control"] == {"rc": 0, "read_back": "forged", "ptrace": "ok"}  # both work between host processes
    r = _r(c)
    # PID 1 is not dumpable: its /proc/1/fd belongs to a uid the sample is not (same uid otherwise)
    assert r["fd_list"].startswith("fail:PermissionError") and r["fd_write"].startswith("fail:PermissionError")
    assert [k for k in r if k.startswith("fd_write_")] == ["fd_write_1"] and r["fd_write_1"].startswith("fail:"), r
    assert r["ptrace_pid1"].startswith("fail:PermissionError")  # ptrace is denied by seccomp too


def test_fork_bomb_is_contained_and_nothing_survives(res):
    _, c = res[0], res[1]["fork_bomb"]
    assert c["control"]["R"] == {"forks": 40}  # more processes than the sandbox's limit of 16, outside
    sb = c["sandbox"]
    r = sc.parse_r(sb["stdout_tail"])  # each child holds its slot: the limit, not the CPU, stops it
    assert r["error"] == "BlockingIOError" and 0 <= r["forks"] < 16, r
    assert sb["passed"] is False and sb["reason"] == "fork_outlived" and sb["processes_left"] == r["forks"]
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
        assert facts["path"] == "bwrap" and facts["mode"] == ("root" if path == "root" else "user"), name
        assert (facts["CapEff"], facts["CapPrm"], facts["CapBnd"], facts["CapAmb"]) == ("0" * 16,) * 4, name
        assert facts["NoNewPrivs"] == "1" and facts["Seccomp"] == "2" and len(facts["seccomp_sha256"]) == 64, name
        assert facts["bwrap"] >= "0.11", name
        host = facts["host_uid"]  # root: a dedicated unprivileged uid; otherwise the caller's own
        assert host != 0 and (host >= sandbox_runner.UID_BASE) == (path == "root"), name
        # the sample is that uid inside too, mapped one to one (no uid 0 anywhere)
        assert facts["uid"] == host and facts["uid_map"].split()[0] == str(host) and facts["uid_map"].split()[2] == "1", name
