"""Reward models behind a server (costtax/rewards/served.py), against a stand-in OpenAI server
backed by the tiny Llama in transformers: /v1/completions answers logprob_token_ids with the
model's raw log-probs (as vLLM does), /tokenize and /detokenize use its tokenizer, /pooling runs
the tiny classifier. The real vLLM server is in test_served_reward_vllm.py (slow)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from costtax.errors import ConfigError

pytestmark = pytest.mark.integration

NAME = "tiny"


class StandIn:
    def __init__(self, model_dir, *, scalar_dir=None, vllm_protocol=True):
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(str(model_dir))
        self.lm = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
        self.cls = AutoModelForSequenceClassification.from_pretrained(str(scalar_dir), dtype=torch.float32).eval() if scalar_dir else None
        self.cls_tok = AutoTokenizer.from_pretrained(str(scalar_dir)) if scalar_dir else None
        self.vllm_protocol = vllm_protocol
        self.bodies: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _json(self, obj, code=200):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/v1/models":
                    return self._json({"data": [{"id": NAME, "max_model_len": 1024}]})
                self._json({"error": "no"}, 404)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.bodies.append((self.path, body))
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                try:
                    code, obj = outer.handle(self.path, body)
                finally:
                    with outer.lock:
                        outer.in_flight -= 1
                self._json(obj, code)

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # uvicorn's backlog is 2048; the stdlib default 5 resets connections

        self.httpd = Server(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def handle(self, path: str, body: dict):
        import time

        import torch

        if path == "/v1/completions":
            ids = body["prompt"]
            assert isinstance(ids, list) and all(isinstance(i, int) for i in ids), "token ids expected"
            assert body["max_tokens"] == 1 and body.get("logprobs")
            wanted = body.get("logprob_token_ids") if self.vllm_protocol else None
            time.sleep(0.05)  # long enough for concurrent requests to overlap
            with self.lock, torch.inference_mode():
                lp = torch.log_softmax(self.lm(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)
            top = int(lp.argmax())
            keys = [top] + (list(wanted) if wanted else [])
            key = (lambda t: f"token_id:{t}") if body.get("return_tokens_as_token_ids") else self.tok.decode
            return 200, {"choices": [{"index": 0, "text": "", "logprobs": {"top_logprobs": [{key(t): float(lp[t]) for t in keys}]}}],
                         "usage": {"prompt_tokens": len(ids), "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 32}}}
        if path == "/tokenize":
            if "messages" in body:
                text = self.tok.apply_chat_template(body["messages"], tokenize=False, add_generation_prompt=body.get("add_generation_prompt", False))
                ids = self.tok(text, add_special_tokens=False)["input_ids"]
            else:
                ids = self.tok(body["prompt"], add_special_tokens=body.get("add_special_tokens", True))["input_ids"]
            return 200, {"tokens": list(ids), "count": len(ids)}
        if path == "/detokenize":
            return 200, {"prompt": self.tok.decode(body["tokens"])}
        if path == "/pooling":
            if self.cls is None:
                return 400, {"error": "this model does not support pooling"}
            assert body["task"] == "classify" and body["use_activation"] is False
            text = self.cls_tok.apply_chat_template(body["messages"], tokenize=False)
            ids = self.cls_tok(text, add_special_tokens=False)["input_ids"]
            with self.lock, torch.inference_mode():
                v = float(self.cls(input_ids=torch.tensor([ids])).logits[0, 0])
            return 200, {"data": [{"index": 0, "data": [v]}], "usage": {"prompt_tokens": len(ids)}}
        return 404, {"error": "not found"}

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server(tiny_llama_dir, tiny_classifier_dir):
    s = StandIn(tiny_llama_dir, scalar_dir=tiny_classifier_dir)
    yield s
    s.close()


@pytest.fixture(scope="module")
def in_process(tiny_llama_dir):
    from costtax.rewards.judge import JudgeReward

    j = JudgeReward(str(tiny_llama_dir), device="cpu", kernel_path="reference")
    j.load()
    yield j
    j.close()


class Policy:  # what `served` reads from the run's openai engine
    def __init__(self, url, model, tokenizer_dir):
        self.base_url, self.model, self.tokenizer_dir = url, model, tokenizer_dir


def _pairs():
    from costtax.rewards.calibration import load_judge_pairs

    pairs = load_judge_pairs()
    return [p["prompt"] for p in pairs] * 2, [p["good"] for p in pairs] + [p["bad"] for p in pairs]


def test_served_judge_equals_the_in_process_judge_on_the_shipped_pairs(server, in_process, tiny_llama_dir):
    from costtax.rewards import make_reward_model
    from costtax.rewards.served import ServedJudge

    served = make_reward_model("served", policy=Policy(server.url, NAME, str(tiny_llama_dir)))
    assert isinstance(served, ServedJudge)
    served.load()
    prompts, responses = _pairs()
    ref = in_process.score(prompts, responses)
    n0 = len(server.bodies)
    got = served.score(prompts, responses)
    assert len(server.bodies) - n0 == len(prompts)  # one request per pair
    assert served.token_ids == in_process.token_ids
    # the judging prompt the server read is the in-process judge's, token for token
    assert server.bodies[-1][1]["prompt"] in [in_process._encode(p, r) for p, r in zip(prompts, responses)]
    for a, b in zip(got.rewards, ref.rewards):
        assert a == pytest.approx(b, abs=2e-4)
    assert got.tokens == ref.tokens and got.path == "server" and got.cached_tokens == (32,) * len(prompts)
    assert got.computed_tokens == tuple(t - 32 for t in got.tokens)
    prov = served.provenance()
    assert prov["answer_token_ids"] == list(in_process.token_ids) and prov["judge_template_sha"] == in_process.provenance()["judge_template_sha"]
    assert "logprob_token_ids" in prov["reward"] and prov["tokenizer_source"] == f"local:{tiny_llama_dir}"
    assert server.max_in_flight > 1  # the pairs of one call went out concurrently
    body = server.bodies[-1][1]
    assert body["logprob_token_ids"] == list(in_process.token_ids) and body["max_tokens"] == 1 and body["temperature"] == 0
    served.close()


def test_remote_judge_without_a_local_tokenizer_uses_the_servers(server, in_process):
    from costtax.rewards import make_reward_model

    remote = make_reward_model(f"openai:{server.url}")  # the only model it lists
    remote.load()
    prompts, responses = _pairs()
    prompts, responses = prompts[:4], responses[:4]
    got = remote.score(prompts, responses, harmful=[True, False, False, False])
    ref = in_process.score(prompts, responses, harmful=[True, False, False, False])  # refusal rule applied the same way
    assert remote.provenance()["tokenizer_source"] == "server:/tokenize"
    for a, b in zip(got.rewards, ref.rewards):
        assert a == pytest.approx(b, abs=2e-4)
    remote.close()


def test_scalar_reward_model_on_pooling(server, tiny_classifier_dir):
    from costtax.rewards import make_reward_model

    served = make_reward_model(f"openai:{server.url},model={NAME},kind=scalar")
    local = make_reward_model(f"scalar:{tiny_classifier_dir}", device="cpu", kernel_path="reference")
    served.load()
    local.load()
    prompts, responses = ["What is 2+2?", "Name a colour."], ["4", "Blue."]
    got, ref = served.score(prompts, responses), local.score(prompts, responses)
    for a, b in zip(got.rewards, ref.rewards):
        assert a == pytest.approx(b, abs=2e-4)
    assert server.bodies[-1][0] == "/pooling"
    served.close()
    local.close()


def test_micro_batcher_merges_concurrent_score_calls_into_one_served_call(server, tiny_llama_dir):
    import asyncio

    from costtax.rewards.served import ServedJudge
    from costtax.rewards.batcher import RewardBatcher

    served = ServedJudge(server.url, NAME, tokenizer=str(tiny_llama_dir))
    served.load()
    calls = []
    orig = served.score
    served.score = lambda *a, **k: calls.append(len(a[0])) or orig(*a, **k)

    async def run():
        b = RewardBatcher(served, max_pairs=64, max_wait_s=0.05)
        outs = await asyncio.gather(*(b.score(f"question {i}", ["yes", "no"]) for i in range(4)))
        await b.aclose()
        return outs

    outs = asyncio.run(run())
    assert calls == [8] and all(o.batch_calls == 4 and o.batch_pairs == 8 for o in outs)
    served.close()


def test_server_without_logprob_token_ids_is_a_clear_error(tiny_llama_dir):
    from costtax.rewards.served import ServedJudge

    s = StandIn(tiny_llama_dir, vllm_protocol=False)
    try:
        j = ServedJudge(s.url, NAME, tokenizer=str(tiny_llama_dir))
        with pytest.raises(RuntimeError, match="logprob_token_ids"):
            j.score(["q"], ["a"])
        j.close()
    finally:
        s.close()


@pytest.mark.parametrize("spec, fragment", [
    ("openai:", "not an http(s) URL"),
    ("openai:ftp://x/v1", "not an http(s) URL"),
    ("openai:http://127.0.0.1:9/v1,colour=red", "unknown option"),
    ("openai:http://127.0.0.1:9/v1,model=", "needs a value"),
    ("openai:http://127.0.0.1:9/v1,kind=vibes", "judge or scalar"),
    ("openai:http://127.0.0.1:9/v1,model=a,model=b", "given twice"),
    ("openai:http://127.0.0.1:notaport/v1", "bad port"),
    ("openai:http://127.0.0.1:9/v1", "no reward server answered"),
])
def test_bad_server_specs(spec, fragment):
    from costtax.rewards import validate_reward_spec

    with pytest.raises(ConfigError) as ei:
        validate_reward_spec(spec, field="--reward-model")
    assert fragment in str(ei.value) and str(ei.value).startswith("--reward-model:")


def test_served_needs_a_served_policy():
    from costtax.config import RunConfig

    with pytest.raises(ConfigError, match="add --serve"):
        RunConfig(reward_model="served")
    with pytest.raises(ConfigError, match="--eval-reward-model"):
        RunConfig(eval_reward_model="served", engine="hf")
    assert RunConfig(reward_model="served", serve=True).reward_model == "served"
    assert RunConfig(reward_model="served", engine="openai", base_url="http://h:1/v1").reward_model == "served"


def test_unknown_model_on_the_reward_server(server):
    from costtax.rewards import make_reward_model

    with pytest.raises(ConfigError, match="does not serve 'other'"):
        make_reward_model(f"openai:{server.url},model=other").load()


def test_readme_cost_table_is_generated_from_the_recorded_measurement():
    """README's served-vs-in-process table is bench/served_reward.py's rendering of the
    committed JSON (python bench/served_reward.py readme rewrites it)."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("served_reward_bench", root / "bench" / "served_reward.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = json.loads(bench.RESULT.read_text())
    assert bench.readme_section(bench.PAGE.read_text()) == bench.render(result)
    assert result["agreement"]["pair_verdicts_identical"] is True
