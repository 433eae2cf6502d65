"""Issue 26's attacks (each got through the old containment), each next to its control, on both paths.

The cases live in tests/sandbox/sandbox_cases_bwrap.py and run once per path (module fixture) through
tests/sandbox/sandbox_runner.py: ``root`` (costtax as root: bwrap as a per-sample unprivileged uid) and
``nonroot`` (costtax as an ordinary uid: setpriv to uid 65534 with a supplementary group when run
by root, this user otherwise). The fixtures (a root-only or mode-000 secret, mode-666 and
group-660 unix sockets, a token file outside the home, a pty) are made by the cases and removed.
"""
from __future__ import annotations

import os

import pytest

import sandbox_cases as sc
import sandbox_cases_bwrap as sb
import sandbox_runner

pytestmark = pytest.mark.integration
EPERM, ENOSYS, SIGSYS = "errno:1", "errno:38", "signal:31"


@pytest.fixture(scope="module")
def root_results():
    if os.geteuid() != 0:
        pytest.skip("the root path needs euid 0; run by an ordinary user, the nonroot path is this user's")
    return sandbox_runner.results("root", "sandbox_cases_bwrap")


@pytest.fixture(scope="module")
def nonroot_results():
    return sandbox_runner.results("nonroot", "sandbox_cases_bwrap")


@pytest.fixture(params=["root", "nonroot"])
def res(request):
    return request.param, request.getfixturevalue(f"{request.param}_results")


def _r(result: dict) -> dict:
    assert result["passed"], (result["reason"], result["stderr_tail"][-500:])
    return sc.parse_r(result["stdout_tail"])


def test_output_names_turned_into_symlinks_fifo_or_dir_leak_nothing_and_still_pass(res):
    c = res[1]["output_names"]
    secret = c["control"]["R"]["read"]
    assert secret.startswith("ok:") and secret.endswith("ROOT-SECRET")  # what the old PID 1 could read
    r = _r(c["sandbox"])  # a FIFO or a directory named stderr.txt: the run still ends, and passes
    assert all(r[k].startswith("ok") for k in ("symlink_stdout.txt", "symlink_stderr.txt", "fifo", "dir")), r
    assert r["read_secret"].startswith("fail:FileNotFoundError")  # the host path is not in the sandbox
    assert "ROOT-SECRET" not in c["sandbox"]["stdout_tail"] + c["sandbox"]["stderr_tail"]


def test_host_unix_sockets_mode_666_and_group_660_are_unreachable(res):
    c = res[1]["unix_sockets"]
    assert c["control"]["R"] == {"s666": "ok", "g660": "ok"} and c["after"]["control_got"] == {"s666": 1, "g660": 1}
    r = _r(c["sandbox"])
    assert r["s666"].startswith("fail:PermissionError") and r["g660"].startswith("fail:PermissionError")
    assert r["exists_s666"] == r["exists_g660"] == "ok:False"  # not even the path
    assert c["after"]["sandbox_got"] == {"s666": 0, "g660": 0}  # nothing reached the listener


def test_supplementary_groups_do_not_follow_the_sample(res):
    path, c = res
    groups = c["output_names"]["sandbox"]["containment"]["Groups"]
    if path == "root":  # bwrap is exec'd with no supplementary group at all
        assert groups == ""
    else:  # an ordinary user cannot drop them; inside a user namespace they read as the overflow gid
        assert str(sandbox_runner.EXTRA_GID) not in groups


def test_the_callers_terminal_cannot_be_opened_or_typed_into(res):
    c = res[1]["terminal"]
    assert c["control"]["R"]["open_pty"].startswith("ok") and c["after"]["control_seen"] == "INJECTED"
    assert c["control"]["R"]["tiocsti"] == "ok:25"  # ENOTTY on a pipe: the call itself is allowed outside
    assert c["ctl_dev_tty"] == "ok", c.get("error")  # costtax here has the pty as controlling terminal
    r = _r(c["sandbox"])
    assert r["open_pty"].startswith("fail:FileNotFoundError")  # bwrap's own devpts
    assert "No such device or address" in r["dev_tty"]  # --new-session: no controlling terminal
    assert r["tiocsti"] == r["tiocsti_high"] == "ok:1"  # EPERM from the filter, high bits masked off
    assert c["after"]["sandbox_seen"] == ""


@pytest.mark.parametrize("call", ["io_uring_setup", "io_uring_enter", "io_uring_register", "userfaultfd", "perf_event_open",
                                  "keyctl", "add_key", "request_key", "unshare_newuser", "setns", "memfd_create", "ptrace",
                                  "process_vm_readv", "personality", "bpf", "memfd_secret", "mount_setattr", "pidfd_getfd"])
def test_kernel_surface_syscall_is_denied_with_eperm(res, call):
    c = res[1]["kernel_surface"]
    assert c["control"]["R"][call] != EPERM  # reachable outside (ok, or an argument error)
    assert _r(c["sandbox"])[call] == EPERM


def test_clone3_is_enosys_threads_still_work_and_clone_namespaces_are_denied(res):
    c = res[1]["kernel_surface"]
    assert c["control"]["R"]["clone3"] != ENOSYS and c["control"]["R"]["thread"] == "ok"
    r = _r(c["sandbox"])
    assert r["clone3"] == ENOSYS and r["thread"] == "ok" and r["clone_newuser"] == EPERM


def test_32_bit_and_x32_syscalls_kill_the_process(res):
    c = res[1]["kernel_surface"]
    assert not c["control"]["R"]["int80_getpid"].startswith(SIGSYS)  # runs (or faults) outside
    r = _r(c["sandbox"])
    assert r["int80_getpid"] == r["x32_getpid"] == SIGSYS


def test_every_socket_family_is_denied_but_unix_socketpairs(res):
    c = res[1]["socket_families"]
    ctl = c["control"]["R"]
    assert ctl["AF_VSOCK"] == ctl["AF_NETLINK"] == ctl["AF_UNIX"] == "ok"
    r = _r(c["sandbox"])
    assert all(r[f].startswith("fail:PermissionError") for f in ("AF_VSOCK", "AF_NETLINK", "AF_INET6", "AF_PACKET", "AF_UNIX")), r
    assert r["socketpair_unix"] == "ok"


def test_memory_is_bounded_by_the_limit_plus_the_capped_tmpfs_mounts(res):
    c = res[1]["memory"]
    mem, tmpfs = c["limits"]["memory_bytes"], c["limits"]["tmpfs_bytes"]
    assert c["control"]["R"]["memfd_bytes"] > mem  # RLIMIT_AS alone does not bound a memfd
    r = _r(c["sandbox"])
    assert r["memfd"].startswith("fail:PermissionError")
    assert "Read-only file system" in r["root"] and "Read-only file system" in r["dev"]  # bwrap's / and /dev
    tmp, shm = int(r["tmp"][3:]), int(r["shm"][3:])
    assert 0 < tmp <= tmpfs and 0 < shm <= tmpfs and r["heap"] <= mem
    assert tmp + shm + r["heap"] <= mem + 2 * tmpfs  # what the README promises


def test_token_outside_home_other_homes_host_dirs_and_hostname_are_absent(res):
    c = res[1]["token_and_homes"]
    assert c["control"]["R"]["token"].endswith("_TOKEN") and c["control"]["R"]["ls/etc"].startswith("ok")
    r = _r(c["sandbox"])
    assert r["token"].startswith("fail:FileNotFoundError")
    assert all(r[k].startswith("fail:FileNotFoundError") for k in r if k.startswith("ls/")), r
    assert r["hostname"] == "ok:costtax-sandbox" != c["control"]["R"]["hostname"]  # not the host's name
    assert set(eval(r["top"][3:])) <= {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "dev", "proc", "tmp"}


def test_samples_die_with_costtax_on_sigint_and_sigkill(res):
    c = res[1]["die_with_parent"]
    assert c["control"]["sigkill"] == {"started": True, "survivors": 1}  # a plain child outlives its parent
    assert c["sandbox"]["sigint"] == {"started": True, "survivors": 0}
    assert c["sandbox"]["sigkill"] == {"started": True, "survivors": 0}


def test_proc_sys_is_read_only(res):
    path, c = res[0], res[1]["proc_sys"]
    if path == "root":  # what the old root path's sample (uid 0 on the host) could open
        assert c["control"]["R"]["core_pattern_w"] == "ok"
    r = _r(c["sandbox"])
    assert r["core_pattern_w"].startswith("fail:")


def test_concurrent_samples_as_root_get_their_own_uid_and_process_limit(root_results):
    got = sb.concurrent_uids()
    n = got["limits"]["max_processes"]
    assert got["control"]["other"] == "BlockingIOError" and got["control"]["held"] < n  # one uid: shared limit
    a, b = got["a"], got["b"]
    assert 0 < sc.parse_r(a["stdout_tail"])["held"] < n  # A holds every process it may have ...
    assert sc.parse_r(b["stdout_tail"]) == {"forks": 4} and b["passed"]  # ... B still forks
    assert a["containment"]["host_uid"] != b["containment"]["host_uid"]
    assert min(a["containment"]["host_uid"], b["containment"]["host_uid"]) >= sandbox_runner.UID_BASE
