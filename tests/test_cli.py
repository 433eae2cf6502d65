"""Bad input fails fast: one line naming the field and the fix, exit code 2, no traceback,
before any model loads. Run in-process through costtax.cli.main (same code path as the script)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from costtax.cli import main


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
    (["-t", "dpo"], "--technique", "valid: plain, bon, cai"),
    (["--engine", "tgi"], "--engine", "vllm, hf"),
    (["--limit", "0"], "--limit", "between 1"),
    (["--limit", "abc"], "--limit", "integer"),
    (["--max-tokens", "0"], "--max-tokens", "between 1"),
    (["--max-tokens", "4096"], "--max-tokens", "below --max-model-len"),
    (["--temperature", "-1"], "--temperature", "between 0"),
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
    (["--reward-model", "{dir}/nope"], "--reward-model", ""),
    (["--reward-model", "scalar:{cls3}"], "--reward-model", "num_labels"),
    (["--eval-reward-model", "scalar:{dir}/nope"], "--eval-reward-model", ""),
    (["--resume", "{notempty}"], "--resume", "not a costtax run"),
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


def test_enough_bad_inputs():
    assert len(CASES) >= 30


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
