"""The sandbox contains hostile generated code; each attack is scored as a failure with a reason.

These run in CI (not skipped): the machines run as root, where `unshare` can make the namespaces.
Each test takes well under a few seconds (limits below are small on purpose).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from costtax import sandbox
from costtax.prompts import load_source
from costtax.prompts.grading import build_program, evaluate_answers
from costtax.sandbox import SandboxLimits, SandboxUnavailable, check_sandbox, run_program

FAST = SandboxLimits(timeout_s=6.0, cpu_s=1, memory_bytes=256 << 20, max_processes=16)


@pytest.fixture(scope="module")
def humaneval0():
    return load_source("humaneval")[0]  # has_close_elements


def hostile(prompt, body: str) -> str:
    """A chat answer whose function runs ``body`` before returning a plausible value."""
    code = textwrap.indent(textwrap.dedent(body).strip("\n"), "    ")
    return f"```python\nimport os, sys, signal, socket, time\n\ndef {prompt.entry_point}(numbers, threshold):\n{code}\n    return False\n```"


def score(prompt, answer: str, limits: SandboxLimits = FAST) -> dict:
    return evaluate_answers([prompt], [answer], limits=limits, workers=1)[0]


def test_sandbox_is_available_here():
    # CI runs as root on Linux: if this fails, namespaces are missing and code benchmarks refuse to run
    assert check_sandbox().endswith(("python3", "python3.11")) or "python" in check_sandbox()


def test_correct_humaneval_solution_passes(humaneval0):
    answer = (
        "Sure! Here is the function:\n\n```python\nfrom typing import List\n\n"
        "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
        "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n```\n"
        "It compares every pair once."
    )
    e = score(humaneval0, answer)
    assert e["code_passed"] is True and e["code_fail_reason"] is None
    assert e["code_extracted_by"] == "fenced_def"


def test_wrong_solution_fails_with_assertion(humaneval0):
    e = score(humaneval0, "```python\ndef has_close_elements(numbers, threshold):\n    return True\n```")
    assert e["code_passed"] is False and e["code_fail_reason"] == "assertion"


def test_infinite_loop_hits_cpu_limit(humaneval0):
    t0 = time.perf_counter()
    e = score(humaneval0, hostile(humaneval0, "while True:\n    pass"))
    assert e["code_passed"] is False and e["code_fail_reason"] == "cpu_time"
    assert time.perf_counter() - t0 < FAST.timeout_s + 2


def test_sleeping_forever_hits_wall_timeout(humaneval0):
    lim = SandboxLimits(timeout_s=1.5, cpu_s=1)
    e = score(humaneval0, hostile(humaneval0, "time.sleep(3600)"), lim)
    assert e["code_passed"] is False and e["code_fail_reason"] == "timeout"


def test_unbounded_allocation_hits_memory_limit(humaneval0):
    e = score(humaneval0, hostile(humaneval0, "x = []\nwhile True:\n    x.append(bytearray(1 << 24))"))
    assert e["code_passed"] is False and e["code_fail_reason"] == "memory"


def test_fork_bomb_is_contained_and_leaves_nothing_behind(humaneval0):
    lim = SandboxLimits(timeout_s=3.0, cpu_s=1, max_processes=16)
    bomb = "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    e = score(humaneval0, hostile(humaneval0, bomb), lim)
    assert e["code_passed"] is False and e["code_fail_reason"] in ("timeout", "cpu_time")
    # the kernel kills every process of the namespace when its PID 1 dies; under load that takes
    # a moment, so poll (nothing else on these machines runs as uid 65534)
    deadline = time.monotonic() + 15
    while True:
        left = subprocess.run(["ps", "-u", str(sandbox.SANDBOX_UID), "-o", "pid="], capture_output=True, text=True)
        if not left.stdout.strip() or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert left.stdout.strip() == "", f"sandbox processes survived: {left.stdout}"


def test_socket_connect_has_no_network(humaneval0):
    body = "socket.create_connection(('1.1.1.1', 53), timeout=2)"
    e = score(humaneval0, hostile(humaneval0, body))
    assert e["code_passed"] is False and e["code_fail_reason"] == "error:OSError"
    res = run_program("import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=2)", FAST)
    assert not res.passed and "Network is unreachable" in res.stderr_tail  # even loopback is down


def test_write_to_home_directory_is_refused(humaneval0, tmp_path):
    home = Path(os.path.expanduser("~"))
    target = home / f"costtax-sandbox-probe-{os.getpid()}"
    e = score(humaneval0, hostile(humaneval0, f"open({str(target)!r}, 'w').write('pwned')"))
    assert e["code_passed"] is False and e["code_fail_reason"] == "error:PermissionError"
    assert not target.exists()
    # writes inside the sandbox (its HOME, /tmp) land on a private tmpfs and do not reach the host
    probe = f"costtax-probe-{os.getpid()}"
    res = run_program(f"open('/tmp/{probe}', 'w').write('x')\nimport os\nopen(os.path.expanduser('~/x'), 'w').write('y')", FAST)
    assert res.passed and not Path("/tmp", probe).exists()


def test_environment_secret_is_not_visible(humaneval0, monkeypatch):
    monkeypatch.setenv("COSTTAX_TEST_SECRET", "hunter2-secret")
    body = (
        "s = os.environ['COSTTAX_TEST_SECRET']\nprint(s)"
    )
    e = score(humaneval0, hostile(humaneval0, body))
    assert e["code_passed"] is False and e["code_fail_reason"] == "error:KeyError"
    # nor through /proc: the sample has its own /proc and sees only its namespace
    res = run_program(
        "import os\nfound = ''\nfor p in os.listdir('/proc'):\n    if p.isdigit():\n"
        "        try: found += open(f'/proc/{p}/environ').read()\n        except OSError: pass\n"
        "print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit())); print(found)",
        FAST,
    )
    assert res.passed and "hunter2-secret" not in res.stdout_tail
    assert os.getpid() != 1 and f"/{os.getpid()}/" not in res.stdout_tail


def test_killing_the_parent_fails_and_the_parent_survives(humaneval0):
    # a root process outside standing in for costtax, with a pid the code knows
    sentinel = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        body = f"os.kill(os.getppid(), signal.SIGKILL)\nos.kill({sentinel.pid}, signal.SIGKILL)\nos.kill({os.getpid()}, signal.SIGKILL)"
        e = score(humaneval0, hostile(humaneval0, body))
        assert e["code_passed"] is False
        assert e["code_fail_reason"] == "error:PermissionError"  # its parent is the sandbox's root PID 1
        assert sentinel.poll() is None  # alive
        res = run_program(f"import os, signal\nos.kill({sentinel.pid}, signal.SIGKILL)", FAST)
        assert not res.passed and res.reason in ("error:ProcessLookupError", "error:PermissionError")
        assert sentinel.poll() is None
    finally:
        sentinel.kill()
        sentinel.wait()


def test_runs_unprivileged_without_capabilities():
    res = run_program(
        "import os\nprint(os.getresuid(), os.getresgid(), os.getgroups())\n"
        "print([l for l in open('/proc/self/status') if l.startswith('CapEff')][0])",
        FAST,
    )
    assert res.passed, res.stderr_tail
    if os.geteuid() == 0:
        assert "(65534, 65534, 65534) (65534, 65534, 65534) []" in res.stdout_tail
        assert "0000000000000000" in res.stdout_tail


def test_missing_namespaces_refuse_instead_of_weaker_fallback(monkeypatch):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    with pytest.raises(SandboxUnavailable, match="unshare"):
        run_program("print(1)", FAST)
    # unshare present but namespaces denied: a fake unshare that fails like a locked-down container
    def fake_command():
        return [sys.executable, "-c", "import sys; sys.stderr.write('unshare: unshare failed: Operation not permitted'); sys.exit(1)"]

    monkeypatch.setattr(sandbox, "_command", fake_command)
    with pytest.raises(SandboxUnavailable, match="Operation not permitted"):
        run_program("print(1)", FAST)


def test_build_program_keeps_prompt_helpers():
    p = load_source("humaneval")[10]  # make_palindrome uses the prompt's is_palindrome helper
    answer = (
        "```python\ndef make_palindrome(string: str) -> str:\n    if not string:\n        return ''\n"
        "    beginning = 0\n    while not is_palindrome(string[beginning:]):\n        beginning += 1\n"
        "    return string + string[:beginning][::-1]\n```"
    )
    program, how = build_program(p, answer)
    assert how == "fenced_def" and "def is_palindrome" in program and program.rstrip().endswith("check(make_palindrome)")
    assert score(p, answer)["code_passed"] is True


def test_candidates_give_pass_at_k_inputs_and_identical_programs_run_once(humaneval0, monkeypatch):
    good = (
        "```python\ndef has_close_elements(numbers, threshold):\n"
        "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n```"
    )
    bad = "```python\ndef has_close_elements(numbers, threshold):\n    return False\n```"
    runs = []
    real = sandbox.run_program
    monkeypatch.setattr(sandbox, "run_program", lambda src, lim: runs.append(src) or real(src, lim))
    e = evaluate_answers([humaneval0], [good], [[good, bad, bad, good]], limits=FAST)[0]
    assert e["code_passed"] is True
    assert (e["candidates_n"], e["candidates_passed"]) == (4, 2)
    assert e["candidate_fail_reasons"] == [None, "assertion", "assertion", None]
    assert len(runs) == 2  # one run per distinct program


def test_scoring_preflight_checks_the_sandbox_only_for_code(monkeypatch):
    from costtax.prompts.grading import check_scoring_ready

    assert check_scoring_ready(load_source("advbench")[:2]) == {"scorers": ["refusal"], "sandbox_python": None}
    info = check_scoring_ready(load_source("humaneval")[:1] + load_source("helpful")[:1])
    assert info["scorers"] == ["pass_at_k", "reward"] and info["sandbox_python"]
    monkeypatch.setattr(sandbox, "_checked", {})
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    with pytest.raises(SandboxUnavailable):
        check_scoring_ready(load_source("humaneval")[:1])
