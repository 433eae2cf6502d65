"""Bad input fails fast: one line naming the field and the fix, exit code 2, no traceback,
before any model loads. Run in-process through costtax.cli.main (same code path as the script)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from costtax.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    f = {}

    def w(name, data: bytes | str):
        p = d / name
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
        f[name] = str(p)

    w("empty.jsonl", "")
    w("notjson.jsonl", "hello\n")
    w("noprompt.jsonl", '{"id": "a"}\n')
    w("intprompt.jsonl", '{"prompt": 5}\n')
    w("dup.jsonl", '{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n')
    w("latin1.jsonl", b'{"prompt": "caf\xe9"}\n')
    w("ok.jsonl", '{"id": "a", "prompt": "x"}\n')
    w("a_file", "x")
    w("bad.yaml", "principles: [unclosed\n")
    w("empty_const.yaml", "principles: []\n")
    w("norevision.yaml", "principles:\n  - id: a\n    critique: check it\n")
    (d / "nomodel").mkdir()
    (d / "cls").mkdir()
    (d / "cls" / "config.json").write_text(json.dumps({"architectures": ["LlamaForSequenceClassification"], "num_labels": 1}))
    (d / "cls3").mkdir()
    (d / "cls3" / "config.json").write_text(json.dumps({"architectures": ["LlamaForSequenceClassification"], "num_labels": 3, "id2label": {"0": "a", "1": "b", "2": "c"}}))
    (d / "notempty").mkdir()
    (d / "notempty" / "x.txt").write_text("x")
    (d / "oldrun").mkdir()
    (d / "oldrun" / "run.json").write_text("{}")
    f.update({k: str(d / k) for k in ("nomodel", "cls", "cls3", "notempty", "oldrun")})
    f["dir"] = str(d)
    return f


CASES = [
    (["-t", "bon:n=0"], "--technique", "must be >= 1"),
    (["-t", "bon:n=abc"], "--technique", "expected an integer"),
    (["-t", "bon:m=3"], "--technique", "unknown key"),
    (["-t", "cai:rounds=-1"], "--technique", "must be >= 0"),
    (["-t", "cai:rounds=2,early_stop=perhaps"], "--technique", "true or false"),
    (["-t", "dpo"], "--technique", "valid: plain, bon, bon_es, cai, sc"),
    (["--engine", "tgi"], "--engine", "vllm, hf"),
    (["--limit", "0"], "--limit", "between 1"),
    (["--limit", "abc"], "--limit", "integer"),
    (["--max-tokens", "0"], "--max-tokens", "between 1"),
    (["--max-tokens", "4096"], "--max-tokens", "below --max-model-len"),
    (["--temperature", "-1"], "--temperature", "between 0"),
    (["--temperature", "3"], "--temperature", "between 0 and 2"),
    (["--top-p", "0"], "--top-p", "(0, 1]"),
    (["--top-p", "1.5"], "--top-p", "(0, 1]"),
    (["--seed", "-1"], "--seed", "between 0"),
    (["--repeats", "0"], "--repeats", "between 1"),
    (["--max-model-len", "10"], "--max-model-len", "between 64"),
    (["--bogus"], "--bogus", "No such option"),
    (["-p", "{dir}/missing.jsonl"], "--prompts", "no such file"),
    (["-p", "{empty.jsonl}"], "--prompts", "no prompts"),
    (["-p", "{notjson.jsonl}"], "--prompts", "not JSON"),
    (["-p", "{noprompt.jsonl}"], "--prompts", '"prompt"'),
    (["-p", "{intprompt.jsonl}"], "--prompts", "non-empty string"),
    (["-p", "{dup.jsonl}"], "--prompts", "duplicate id"),
    (["-p", "{latin1.jsonl}"], "--prompts", "UTF-8"),
    (["-p", "{dir}"], "--prompts", "is a directory"),
    (["--model", "{dir}/nope"], "--model", "no such directory"),
    (["--model", "{nomodel}"], "--model", "no config.json"),
    (["--model", "{cls}"], "--model", "not a causal LM"),
    (["--out", "{a_file}"], "--out", "is a file"),
    (["--out", "{notempty}"], "--out", "not empty"),
    (["--out", "{oldrun}"], "--out", "--resume"),
    (["--out", "{a_file}/sub"], "--out", "is a file"),
    (["--constitution", "{dir}/none.yaml"], "--constitution", "no such file"),
    (["--constitution", "{bad.yaml}"], "--constitution", "cannot parse"),
    (["--constitution", "{empty_const.yaml}"], "--constitution", "principles"),
    (["--constitution", "{norevision.yaml}"], "--constitution", "revision"),
    (["--reward-model", "foo:bar"], "--reward-model", "valid kinds"),
    (["--reward-model", "{dir}/nope"], "--reward-model", "no such directory"),
    (["--reward-model", "scalar:{cls3}"], "--reward-model", "num_labels"),
    (["--eval-reward-model", "scalar:{dir}/nope"], "--eval-reward-model", "no such directory"),
    (["--resume", "{notempty}"], "--resume", "not a costtax run"),
    (["--cell-repeats", "0"], "--cell-repeats", "between 1"),
    (["--warmup-answers", "-1"], "--warmup-answers", ">= 0"),
    (["--load", "burst"], "--load", "use batch, concurrency="),
    (["--load", "concurrency=0"], "--load", "integer >= 1"),
    (["--load", "rate=fast"], "--load", "not a number"),
    (["--level-timeout-s", "0"], "--level-timeout-s", "> 0"),
    (["--slo-p95-s", "-1"], "--slo-p95-s", "> 0"),
    (["--score-max-pairs", "0"], "--score-max-pairs", ">= 1"),
    (["--score-max-wait-ms", "-5"], "--score-max-wait-ms", "between 0"),
    (["--score-gather-ms", "-1"], "--score-gather-ms", "between 0"),
    (["--engine", "openai"], "--base-url", "needs the server's URL"),
    (["--engine", "openai", "--base-url", "ftp://x"], "--base-url", "http(s) URL"),
    (["--base-url", "http://127.0.0.1:8000/v1"], "--base-url", "--engine openai"),
    (["--engine", "openai", "--base-url", "http://127.0.0.1:9/v1", "--out", "{dir}/unreachable"], "--base-url", "127.0.0.1:9"),
    (["--serve", "--engine", "hf"], "--serve", "--engine hf"),
    (["--serve", "--server-timeout-s", "0"], "--server-timeout-s", "> 0"),
    (["--serve-arg=--tensor-parallel-size=2"], "--serve-arg", "add --serve"),
    (["--serve", "--serve-arg=--port=9000"], "--serve-arg", "costtax sets --port itself"),
    (["--serve", "--serve-arg=--max-model=99"], "--serve-arg", "--max-model-len"),
    (["--serve", "--serve-arg=tensor-parallel-size"], "--serve-arg", "--name=value"),
    (["--reward-model", "served"], "--reward-model", "add --serve"),
    (["--reward-model", "openai:localhost:8000"], "--reward-model", "http(s) URL"),
    (["--reward-model", "openai:http://127.0.0.1:9/v1,kind=rm"], "--reward-model", "judge or scalar"),
    (["--reward-model", "openai:http://127.0.0.1:9/v1", "--out", "{dir}/rm-unreachable"], "--reward-model", "no reward server answered"),
    (["--eval-reward-model", "openai:http://127.0.0.1:9/v1", "--out", "{dir}/erm-unreachable"], "--eval-reward-model", "no reward server"),
    (["--load", "search"], "--slo-p95-s", "needs the p95 SLO"),
    (["--load", "search=qps", "--slo-p95-s", "5"], "--load", "search=rate"),
    (["--load", "search", "--load", "batch", "--slo-p95-s", "5"], "--load", "give it alone"),
    (["--load", "search", "--slo-p95-s", "5", "--search-max", "0"], "--search-max", "integer >= 1"),
    (["--load", "search=rate", "--slo-p95-s", "5", "--search-max", "-2"], "--search-max", "answers/s > 0"),
    (["--load", "search", "--slo-p95-s", "5", "--search-start", "1.5"], "--search-start", "integer >= 1"),
    (["--load", "search", "--slo-p95-s", "5", "--search-start", "8", "--search-max", "4"], "--search-start", "must not exceed"),
    (["--load", "search", "--slo-p95-s", "5", "--search-probes", "0"], "--search-probes", "between 1 and 100"),
    (["--load", "search", "--slo-p95-s", "5", "--search-answers-per-slot", "0"], "--search-answers-per-slot", "between 1"),
    (["--load", "search", "--slo-p95-s", "5", "--search-min-answers", "0"], "--search-min-answers", "between 1"),
    (["--load", "search", "--slo-p95-s", "5", "--search-reprobes", "-1"], "--search-reprobes", "between 0 and 20"),
    (["--search-max", "8"], "--search-max", "only to --load search"),
    (["--client-workers", "0"], "--client-workers", "between 1 and 64"),
    (["--client-workers", "2", "--engine", "hf"], "--client-workers", "served engine only"),
]


@pytest.mark.parametrize("argv, field, fragment", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input(files, capsys, argv, field, fragment):
    for key, value in sorted(files.items(), key=lambda kv: -len(kv[0])):
        argv = [a.replace("{" + key + "}", value) for a in argv]
    with pytest.raises(SystemExit) as exc:
        main(["profile", *argv, "--limit", "1"] if "--limit" not in argv else ["profile", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("costtax: error:") and field in lines[0] and fragment in lines[0], lines[0]
    assert "Traceback" not in err


# profile's options that take no user value that could be bad (switches), or only one checked
# elsewhere (--resume with a good directory: tests/run/test_reliability.py)
NO_BAD_VALUE = {"--prefix-caching", "--trust-remote-code", "--judge-calibration", "--verbose", "--help", "--ignore-eos", "--serve", "--wide", "--oversaturation-stop",
                "--no-prefix-caching", "--no-judge-calibration", "--no-oversaturation-stop"}


def test_every_profile_option_has_a_bad_input_case():
    """A new `profile` option that takes a value needs a bad-input case above."""
    import typer.main

    from costtax.cli import app

    group = typer.main.get_command(app)
    options = [p.opts[0] for p in group.commands["profile"].params if p.opts and p.opts[0].startswith("--")]
    covered = {field for _, field, _ in CASES}
    missing = [o for o in options if o not in covered and o not in NO_BAD_VALUE]
    assert not missing, f"add a bad-input case for {missing}"


def test_bad_input_is_fast_and_loads_no_model(files):
    """As a real process: exit 2 within seconds, and torch is never imported."""
    code = (
        "import sys; from costtax.cli import main\n"
        "try:\n    main(['profile', '-t', 'bon:n=0'])\n"
        "except SystemExit as e:\n    print('EXIT', e.code, 'torch' in sys.modules, 'vllm' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "EXIT 2 False False" in out.stdout, out.stdout + out.stderr


def test_debug_shows_traceback(capsys):
    with pytest.raises(SystemExit):
        main(["--debug", "profile", "-t", "bon:n=0"])
    assert "Traceback" in capsys.readouterr().err


def test_help_and_models(capsys):
    main(["--help"])
    assert "profile" in capsys.readouterr().out
    main(["models"])
    assert "smollm2-135m-instruct" in capsys.readouterr().out


# -- what a run prints ---------------------------------------------------------------------------
def _events(display, run_dir):
    display("run_dir", {"run_dir": str(run_dir), "run_id": "r"})
    display("status", {"msg": "starting vllm engine"})
    display("cell_start", {"cell": "plain"})
    for i in range(1, 5):
        display("answer_done", {"cell": "plain", "done": i, "total": 4})
    display("cell_done", {"cell": "plain", "answers": 4, "wall_s": 2.5})
    display("cell_start", {"cell": "bon:n=4"})
    display("answer_done", {"cell": "bon:n=4", "done": 1, "total": 4})
    display("cell_failed", {"cell": "bon:n=4", "error": "RuntimeError: boom"})


def _run_dir_with_sources(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    sources = [{"source": "helpful", "used": 8, "available": 50}, {"source": str(tmp_path / "my.jsonl"), "used": 10, "available": 10}]
    (d / "run.json").write_text(json.dumps({"prompts": {"count": 18, "sources": sources}}))
    return d


def test_display_off_a_terminal_is_plain_and_short(tmp_path, monkeypatch):
    import io

    import costtax.provenance
    from costtax.console.display import NO_GPU_NOTE, RunDisplay

    monkeypatch.setattr(costtax.provenance, "gpu_names", lambda: [])
    buf = io.StringIO()
    d = _run_dir_with_sources(tmp_path)
    display = RunDisplay(buf, tty=False)
    _events(display, d)
    display.close()
    assert buf.getvalue().splitlines() == [
        f"costtax: run directory {d}",
        "costtax: 18 prompts: helpful 8 of 50, my.jsonl 10 of 10",
        f"costtax: {NO_GPU_NOTE}",
        "costtax: starting vllm engine",
        "costtax: cell plain ...",
        "costtax: cell plain: 4 answers in 2.5 s",
        "costtax: cell bon:n=4 ...",
        "costtax: cell bon:n=4 FAILED: RuntimeError: boom",
    ]  # per-answer events print nothing off a terminal; no escape codes


def test_display_on_a_terminal_shows_progress(tmp_path, monkeypatch):
    import io

    import costtax.provenance
    from costtax.console.display import RunDisplay

    monkeypatch.setattr(costtax.provenance, "gpu_names", lambda: ["NVIDIA H100"])
    buf = io.StringIO()
    display = RunDisplay(buf, tty=True)
    display("run_dir", {"run_dir": str(tmp_path), "run_id": "r"})
    display("cell_start", {"cell": "plain"})
    display("answer_done", {"cell": "plain", "done": 3, "total": 4})
    display.progress.refresh()
    shown = buf.getvalue()
    assert "3/4" in shown and "answers" in shown and "ETA" in shown
    assert display.progress.tasks[0].completed == 3 and display.progress.tasks[0].total == 4
    display("cell_done", {"cell": "plain", "answers": 4, "wall_s": 2.5})
    assert display.progress is None  # the finished bar left the live area, which stopped (nothing runs) ...
    display.close()
    assert "✓ plain" in buf.getvalue() and "4/4" in buf.getvalue() and "no NVIDIA GPU" not in buf.getvalue()  # ... as a line
    assert display.lines == 1  # the run-directory line; the bars are not lines


def test_prompts_line():
    from costtax.console.display import prompts_line

    assert prompts_line([{"source": "helpful", "used": 8, "available": 50}, {"source": "/x/my.jsonl", "used": 10, "available": 10}]) == (
        "18 prompts: helpful 8 of 50, my.jsonl 10 of 10"
    )


_LOG_SCRIPT = r"""
import logging, os, subprocess, sys
from costtax.console.display import EngineLog
child = [sys.executable, "-c", "import sys; print('child-out-' + sys.argv[1]); print('child-err-' + sys.argv[1], file=sys.stderr)"]
with EngineLog(echo=sys.argv[2] == "echo") as log:
    log.terminal_err.write("TERMINAL\n")
    print("py-stdout")
    os.write(2, b"fd2-write\n")
    logging.basicConfig()
    logging.getLogger("vllm").warning("library-log")
    subprocess.run(child + ["before"])
    tmp = log.path
    log.move_to(sys.argv[1])
    subprocess.run(child + ["after"])
print("restored", tmp.exists())
"""


@pytest.mark.parametrize("echo", [False, True], ids=["quiet", "verbose"])
def test_engine_log_takes_child_process_output(tmp_path, echo):
    """fds 1/2 go to RUN_DIR/engine.log, spawned processes included; the terminal gets only
    what costtax writes to it (and, with --verbose, the log's lines too)."""
    out = subprocess.run([sys.executable, "-c", _LOG_SCRIPT, str(tmp_path), "echo" if echo else "quiet"],
                         capture_output=True, text=True, timeout=60)
    log = (tmp_path / "engine.log").read_text()
    expected = ["py-stdout", "fd2-write", "library-log", "child-out-before", "child-err-before", "child-out-after", "child-err-after"]
    for line in expected:
        assert line in log
    assert out.stdout == "restored False\n"  # stdout restored; the temporary log moved into the run directory
    shown = out.stderr.splitlines()
    assert shown[0] == "TERMINAL"
    if echo:
        assert sorted(shown[1:]) == sorted(l for l in log.splitlines() if l), out.stderr
    else:
        assert shown == ["TERMINAL"], out.stderr


def _fake_cli_run(tmp_path, *args):
    """`costtax profile` as a process, with profile() given the fake engine and reward."""
    from pathlib import Path

    tests = str(Path(__file__).parent)
    code = (
        "import functools, os, sys\n"
        f"sys.path.insert(0, {tests!r})\n"
        "import importlib; P = importlib.import_module('costtax.run.profile')\n"
        "from fakes import FakeEngine, FakeReward\n"
        "real = P.profile\n"
        "def fake(config, **kw):\n"
        "    os.write(1, b'INFO 11-27 engine chatter\\n')\n"
        "    return real(config, engine=FakeEngine(), scorer=FakeReward(), **kw)\n"
        "P.profile = fake\n"
        "from costtax.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    # cai, not bon: bon's selection runs the group_select kernel, slow under the Triton interpreter
    return subprocess.run([sys.executable, "-c", code, "profile", "-t", "cai:rounds=1", "--max-tokens", "16", *args],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)


def test_profile_output_is_short_and_a_user_file_runs_whole(tmp_path):
    mine = tmp_path / "my.jsonl"
    mine.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"Question {i}?"}) + "\n" for i in range(10)))
    out = _fake_cli_run(tmp_path, "-p", "helpful", "-p", str(mine), "--out", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    err = out.stderr.splitlines()
    assert "costtax: 18 prompts: helpful 8 of 50, my.jsonl 10 of 10" in err
    assert "costtax: cell plain: 18 answers" in "\n".join(err)
    assert not any("INFO" in l or "Warning" in l for l in err), out.stderr  # chatter and warnings: engine.log
    assert "INFO 11-27 engine chatter" in (tmp_path / "run" / "engine.log").read_text()
    assert sum(1 for l in err if "no NVIDIA GPU" in l) <= 1
    assert "cai:rounds=1" in out.stdout and len(err) + len(out.stdout.splitlines()) < 40
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["prompts"]["sources"] == [
        {"source": "helpful", "used": 8, "available": 50}, {"source": str(mine), "used": 10, "available": 10},
    ]
    answers = [json.loads(l) for l in (tmp_path / "run" / "answers.jsonl").read_text().splitlines()]
    assert sum(a["cell"] == "plain" for a in answers) == 18


def test_explicit_limit_cuts_every_source(tmp_path):
    mine = tmp_path / "my.jsonl"
    mine.write_text("".join(json.dumps({"prompt": f"Question {i}?"}) + "\n" for i in range(10)))
    out = _fake_cli_run(tmp_path, "-p", "helpful", "-p", str(mine), "--limit", "3", "--out", str(tmp_path / "run"))
    assert out.returncode == 0, out.stderr
    assert "costtax: 6 prompts: helpful 3 of 50, my.jsonl 3 of 10" in out.stderr.splitlines()


def test_resume_uses_the_recorded_prompt_counts(tmp_path):
    """The counts in run.json decide a resumed run's prompts, not today's default."""
    from costtax.config import RunConfig
    from costtax.run.preflight import run_preflight

    d = tmp_path / "run"
    d.mkdir()
    (d / "run.json").write_text(json.dumps({"prompts": {"sources": [{"source": "helpful", "used": 5, "available": 50}]}}))
    pre = run_preflight(RunConfig(techniques=("plain",)), run_dir=d, resume=True, check_rewards=False)
    assert len(pre.prompts) == 5 and pre.sources == ({"source": "helpful", "used": 5, "available": 50},)
    fresh = run_preflight(RunConfig(techniques=("plain",)), run_dir=tmp_path / "new", check_rewards=False)
    assert len(fresh.prompts) == 8  # the shipped set's demo default


def test_failed_cells_exit_nonzero(monkeypatch, tmp_path):
    """`costtax profile` exits 1 when a cell failed (the rows of the others are kept)."""
    from costtax.run.profile import RunResult

    def fake_run(config, *, resume=None, verbose=False):
        return RunResult(tmp_path, "r", "finished", ("plain",), ("bon:n=4",))

    monkeypatch.setattr("costtax.cli._run_with_display", fake_run)
    monkeypatch.setattr("costtax.cli._print_table", lambda run_dir, df=None, **kw: None)
    with pytest.raises(SystemExit) as exc:
        main(["profile", "--limit", "1", "--out", str(tmp_path / "o")])
    assert exc.value.code == 1


def test_prompts_help_names_every_named_set():
    from typer.testing import CliRunner

    from costtax.cli import app
    from costtax.prompts import NAMED

    out = CliRunner().invoke(app, ["profile", "--help"], env={"COLUMNS": "400"}).output
    assert all(name in out for name in NAMED) and "humaneval" in out, out
