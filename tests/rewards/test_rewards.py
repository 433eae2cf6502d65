"""costtax.rewards: scalar and judge rewards through the kernels vs naive HF computations,
length bucketing, packing, spec parsing and config-only validation.

Tiny random models (costtax.tiny) only; on machines without CUDA tests/conftest.py sets
TRITON_INTERPRET=1, so the kernels run in the Triton interpreter: batches stay small.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest

from costtax.errors import ConfigError
from costtax.rewards import ScoreBatch, make_reward_model, validate_reward_spec
from costtax.rewards.batch_plans import padding_fraction, plan_buckets, plan_packs

pytestmark = pytest.mark.integration

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

PROMPTS = [
    "What is 12 + 7?",
    "Please write a short, polite email to a colleague asking for the report.",
    "hi",
    "Critique the response: is it helpful, honest and harmless?",
    "The quick brown fox",
]
RESPONSES = [
    "19",
    "Hello, could you send me the report? Thanks.",
    "The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog.",
    "NO CHANGES NEEDED.",
    "",
]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny models gain nothing from 2 threads, and on a busy 2-core machine OpenMP's
    barrier spinning made each forward 10-20x slower; restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from costtax.tiny import build_tiny_llama

    root = tmp_path_factory.mktemp("rewards_tiny")
    return {"lm": build_tiny_llama(root / "lm"), "cls": build_tiny_llama(root / "cls", classifier=True), "root": root}


@pytest.fixture(scope="module")
def scalar_rm(tiny):
    rm = make_reward_model(f"scalar:{tiny['cls']}", device="cpu", max_batch=2)
    rm.load()
    yield rm
    rm.close()


@pytest.fixture(scope="module")
def judge_rm(tiny):
    rm = make_reward_model(f"judge:{tiny['lm']}", device="cpu", max_batch=2)
    rm.load()
    yield rm
    rm.close()


def _expected_path() -> str:
    from costtax.kernels import kernel_path

    return kernel_path(torch.zeros(1))


# ---- numerics vs naive --------------------------------------------------------------------


def _naive_scalar(model_dir, seqs):
    """Score head on EVERY position of each unpadded sequence, then the last real token
    (HF's own pooling looks for pad_token_id; ChatML ends with <|im_end|> = pad, so we
    gather ourselves)."""
    from transformers import AutoModelForSequenceClassification

    ref_model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for ids in seqs:
            hidden = ref_model.model(input_ids=torch.tensor([ids])).last_hidden_state
            per_pos = ref_model.score(hidden)[0, :, 0]
            out.append(float(per_pos[len(ids) - 1]))
    return out


def _naive_judge(model_dir, seqs, yes, no):
    """Full-vocabulary logits at the last position: logits[yes] - logits[no]."""
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for ids in seqs:
            logits = lm(input_ids=torch.tensor([ids])).logits[0, -1]
            assert logits.shape[0] == lm.config.vocab_size
            out.append(float(logits[yes] - logits[no]))
    return out


def test_scalar_matches_naive_head_on_all_positions(tiny, scalar_rm):
    res = scalar_rm.score(PROMPTS, RESPONSES)
    assert isinstance(res, ScoreBatch)
    assert res.path == _expected_path()
    seqs = scalar_rm.encode_pairs(PROMPTS, RESPONSES)
    assert res.tokens == tuple(len(s) for s in seqs)
    assert res.rewards == pytest.approx(_naive_scalar(tiny["cls"], seqs), abs=1e-4, rel=1e-4)
    # the pairs are chat-formatted: the sequence ends with the template's "<|im_end|>\n"
    assert scalar_rm._tok.decode(seqs[0][-2:]) == "<|im_end|>\n"


def test_judge_matches_naive_full_vocab_logits(tiny, judge_rm):
    from transformers import AutoTokenizer

    res = judge_rm.score(PROMPTS, RESPONSES)
    assert res.path == _expected_path()
    tok = AutoTokenizer.from_pretrained(str(tiny["lm"]))
    # ChatML generation prompt ends with "\n": the answers are "Yes"/"No" without a space
    first = lambda w: tok.encode(w, add_special_tokens=False)[0]  # noqa: E731
    assert judge_rm.token_ids == (first("Yes"), first("No"))
    seqs = []
    for p, r in zip(PROMPTS, RESPONSES):
        text = judge_rm.judging_prompt(p, r)
        assert text.endswith("<|im_start|>assistant\n") and text.count("<|im_start|>user") == 5
        seqs.append(tok(text, add_special_tokens=False)["input_ids"])
    assert res.tokens == tuple(len(s) for s in seqs)
    assert res.rewards == pytest.approx(_naive_judge(tiny["lm"], seqs, *judge_rm.token_ids), abs=1e-4, rel=1e-4)
    prov = judge_rm.provenance()
    assert prov["answer_token_ids"] == list(judge_rm.token_ids) and prov["judge_examples"] == 4
    assert prov["kernel_path"] == res.path and prov["batching_mode"] == "padded"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cuda_kernel_path_matches_naive(tiny, dtype):
    from costtax.kernels import kernel_path

    tol = 1e-3 if dtype == "float32" else 0.1
    for kind in ("scalar", "judge"):
        spec = f"{kind}:{tiny['cls' if kind == 'scalar' else 'lm']}"
        rm = make_reward_model(spec, device="cuda", dtype=dtype, max_batch=2)
        rm.load()
        packed = make_reward_model(spec, device="cuda", dtype=dtype, batching="packed")
        packed.load()
        try:
            res = rm.score(PROMPTS, RESPONSES)
            assert res.path == kernel_path(torch.zeros(1, device="cuda"))
            seqs = rm.encode_pairs(PROMPTS, RESPONSES)
            if kind == "scalar":
                naive = _naive_scalar(tiny["cls"], seqs)
            else:
                naive = _naive_judge(tiny["lm"], seqs, *rm.token_ids)
            assert res.rewards == pytest.approx(naive, abs=tol, rel=tol)
            if kind == "judge":  # padded on CUDA without flash-attn: the prefix cache is used
                assert rm.provenance()["batching_mode"] != "padded" or min(res.cached_tokens) > 0
            pk = packed.score(PROMPTS, RESPONSES)
            assert pk.padding_fraction == 0.0 and pk.path == res.path
            assert pk.rewards == pytest.approx(res.rewards, abs=tol, rel=tol)
            assert rm.provenance()["device"].startswith("cuda")
        finally:
            rm.close()
            packed.close()


def _without_chat_template(src, dst):
    shutil.copytree(src, dst)
    (dst / "chat_template.jinja").unlink()
    return dst


def test_plain_format_without_chat_template(tiny, tmp_path):
    """No chat template: judge renders 'System: ...\n\nUser: ...\n\nAssistant:' and scores the
    first token of ' Yes' / ' No'; scalar reads 'prompt\n\nresponse'. Both still equal naive."""
    lm_dir = _without_chat_template(tiny["lm"], tmp_path / "lm_plain")
    cls_dir = _without_chat_template(tiny["cls"], tmp_path / "cls_plain")
    judge = make_reward_model(f"judge:{lm_dir}", device="cpu", template="zeroshot")
    scalar = make_reward_model(f"scalar:{cls_dir}", device="cpu")
    judge.load()
    scalar.load()
    try:
        assert judge.judging_prompt("q", "r").endswith("Assistant:")
        tok = judge._tok
        assert judge.token_ids == (tok.encode(" Yes")[0], tok.encode(" No")[0])
        res = judge.score(PROMPTS[:3], RESPONSES[:3])
        seqs = judge.encode_pairs(PROMPTS[:3], RESPONSES[:3])
        assert res.rewards == pytest.approx(_naive_judge(lm_dir, seqs, *judge.token_ids), abs=1e-4, rel=1e-4)
        assert scalar.format_text("p", "r") == ("p\n\nr", True)
        res = scalar.score(PROMPTS[:3], RESPONSES[:3])
        seqs = scalar.encode_pairs(PROMPTS[:3], RESPONSES[:3])
        assert res.rewards == pytest.approx(_naive_scalar(cls_dir, seqs), abs=1e-4, rel=1e-4)
    finally:
        judge.close()
        scalar.close()


def test_self_check_refuses_a_head_that_is_not_body_times_weights(tiny, monkeypatch):
    import importlib

    jh = importlib.import_module("costtax.kernels.judge_head")  # the module, not the function
    real = jh.judge_head_reference

    def shifted(*a, **k):  # stands in for a model whose logits are not hidden @ W.T
        out = real(*a, **k)
        return jh.JudgeHeadOutput(out.logits, out.reward + 1.0)

    monkeypatch.setattr(jh, "judge_head_reference", shifted)
    rm = make_reward_model(f"judge:{tiny['lm']}", device="cpu")
    with pytest.raises(ConfigError, match="self-check failed"):
        rm.load()
    assert not rm.loaded


# ---- batching -----------------------------------------------------------------------------


def test_order_preserved_after_length_bucketing(scalar_rm):
    prompts, responses = PROMPTS[::-1], RESPONSES[::-1]
    lengths = [len(s) for s in scalar_rm.encode_pairs(prompts, responses)]
    order = [i for b in plan_buckets(lengths, 2) for i in b]
    assert order != list(range(len(lengths)))  # bucketing really reorders here
    batched = scalar_rm.score(prompts, responses).rewards
    one_by_one = [scalar_rm.score([p], [r]).rewards[0] for p, r in zip(prompts, responses)]
    assert batched == pytest.approx(one_by_one, abs=1e-5)
    assert len(set(round(x, 6) for x in batched)) == len(batched)  # distinct, so order is tested


def test_plan_buckets_and_padding_fraction_by_hand():
    lengths = [3, 5, 2, 8]
    buckets = plan_buckets(lengths, 2)
    assert buckets == [[2, 0], [1, 3]]  # sorted 2,3 | 5,8
    # computed: 2*3 + 2*8 = 22 positions, real 18 -> 4 padded
    assert padding_fraction(lengths, buckets) == pytest.approx(4 / 22)
    assert padding_fraction(lengths, plan_buckets(lengths, 1)) == 0.0
    # token budget 15: 2,3,5 pad to 3*5 = 15 (fits), adding 8 would need 4*8 = 32
    assert plan_buckets(lengths, 4, max_tokens=15) == [[2, 0, 1], [3]]
    assert plan_buckets(lengths, 4, max_tokens=12) == [[2, 0], [1], [3]]
    assert plan_packs([3, 5, 2, 8], 8) == [[0, 1], [2], [3]]


def test_padding_fraction_of_a_real_call(scalar_rm):
    # two prompts: a repeated prompt would form a best-of-N group scored over its shared
    # prefix (tests/rewards/test_prefix_scoring.py covers its padding)
    res = scalar_rm.score(["hi", "hello"], ["", "The quick brown fox jumps over the lazy dog."])
    short, long = sorted(res.tokens)
    assert long > short
    # one bucket of two, padded to the longer: (long - short) pad positions out of 2 * long
    assert res.padding_fraction == pytest.approx((long - short) / (2 * long))
    assert scalar_rm.score(["hi"], ["x"]).padding_fraction == 0.0


def test_packed_matches_padded(tiny, scalar_rm, judge_rm):
    for spec, ref in ((f"scalar:{tiny['cls']}", scalar_rm), (f"judge:{tiny['lm']}", judge_rm)):
        packed = make_reward_model(spec, device="cpu", batching="packed", max_tokens=4096)
        packed.load()
        try:
            a = packed.score(PROMPTS[:4], RESPONSES[:4])
        finally:
            packed.close()
        b = ref.score(PROMPTS[:4], RESPONSES[:4])
        assert a.padding_fraction == 0.0 and a.tokens == b.tokens
        assert a.rewards == pytest.approx(b.rewards, abs=1e-4)


def test_judge_prefix_cache_matches_full_forward(tiny, judge_rm):
    """The judge's shared instructions + examples run once at load; each pair runs only its
    suffix on a copy of that KV cache. Same rewards as running every token."""
    full = make_reward_model(f"judge:{tiny['lm']}", device="cpu", max_batch=2, prefix_cache=False)
    full.load()
    try:
        a = judge_rm.score(PROMPTS, RESPONSES)
        b = full.score(PROMPTS, RESPONSES)
    finally:
        full.close()
    assert judge_rm.provenance()["prefix_cache"].startswith("on:")
    P = len(judge_rm._prefix_ids)
    assert a.cached_tokens == (P,) * len(PROMPTS) and b.cached_tokens == (0,) * len(PROMPTS)
    assert a.tokens == b.tokens  # tokens read are counted in full either way
    assert a.rewards == pytest.approx(b.rewards, abs=1e-4, rel=1e-4)
    # padding is counted over the positions computed in the call (the suffixes)
    suffix = [n - P for n in a.tokens]
    assert a.padding_fraction == pytest.approx(padding_fraction(suffix, plan_buckets(suffix, 2)))


def test_empty_and_mismatched_calls(scalar_rm):
    res = scalar_rm.score([], [])
    assert res.rewards == () and res.tokens == () and res.padding_fraction == 0.0
    with pytest.raises(ValueError):
        scalar_rm.score(["a", "b"], ["only one"])


def test_truncation_keeps_the_template(tiny):
    rm = make_reward_model(f"scalar:{tiny['cls']}", device="cpu", max_length=48, kernel_path="reference")
    rm.load()
    try:
        res = rm.score(["hi"], ["word " * 200])
        assert res.tokens[0] <= 48 and res.path == "reference"
        assert rm.stats["truncated_pairs"] == 1
        ids = rm.encode_pairs(["hi"], ["word " * 200])[0]
        assert rm._tok.decode(ids[-2:]) == "<|im_end|>\n"
    finally:
        rm.close()


def test_load_is_idempotent_and_provenance(scalar_rm):
    model = scalar_rm._model
    first = scalar_rm.load()
    assert scalar_rm.load() == first and scalar_rm._model is model
    prov = scalar_rm.provenance()
    assert prov["kind"] == "scalar" and prov["architecture"] == "LlamaForSequenceClassification"
    assert prov["name"].startswith("scalar:") and prov["device"] == "cpu"


# ---- specs --------------------------------------------------------------------------------


def test_spec_parsing(tiny):
    from costtax.rewards.judge import JudgeReward
    from costtax.rewards.scalar_head import ScalarHeadReward

    s = validate_reward_spec(f"scalar:{tiny['cls']}")
    assert (s.kind, s.model_dir) == ("scalar", tiny["cls"].resolve())
    assert validate_reward_spec(str(tiny["cls"])).kind == "scalar"  # bare dir: by its config
    assert validate_reward_spec(str(tiny["lm"])).kind == "judge"
    assert validate_reward_spec(f"judge:{tiny['lm']}").kind == "judge"
    rm = make_reward_model(str(tiny["cls"]))
    assert isinstance(rm, ScalarHeadReward) and rm.name == f"scalar:{tiny['cls']}" and not rm.loaded
    rm = make_reward_model(f"judge:{tiny['lm']}")
    assert isinstance(rm, JudgeReward) and rm.name == f"judge:{tiny['lm']}"


def test_default_judge_spec():
    from costtax.model_files import EMBEDDED, converted_dir, is_hf_model_dir
    from costtax.rewards import DEFAULT_JUDGE

    available = EMBEDDED[DEFAULT_JUDGE].source_path() is not None or is_hf_model_dir(converted_dir(DEFAULT_JUDGE))
    if not available:
        with pytest.raises(ConfigError, match="not installed"):
            validate_reward_spec("judge")
        return
    for spec in ("judge", f"judge:{DEFAULT_JUDGE}", DEFAULT_JUDGE):
        s = validate_reward_spec(spec)
        assert (s.kind, s.alias, s.name) == ("judge", DEFAULT_JUDGE, f"judge:{DEFAULT_JUDGE}")
    assert make_reward_model("judge").name == f"judge:{DEFAULT_JUDGE}"
    with pytest.raises(ConfigError, match="wrong head type"):
        validate_reward_spec(f"scalar:{DEFAULT_JUDGE}")


def _config_only_dir(root, name, src_dir, **edits):
    d = root / name
    d.mkdir(exist_ok=True)
    cfg = json.loads((src_dir / "config.json").read_text())
    cfg.update(edits)
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def test_spec_errors(tiny, tmp_path):
    with pytest.raises(ConfigError) as e:
        validate_reward_spec("bogus:whatever")
    assert e.value.field == "--reward-model" and "judge" in str(e.value) and "scalar" in str(e.value)
    with pytest.raises(ConfigError, match="no such directory"):
        validate_reward_spec(f"scalar:{tmp_path / 'missing'}")
    with pytest.raises(ConfigError, match="no such directory"):
        make_reward_model(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="wrong head type"):
        validate_reward_spec(f"judge:{tiny['cls']}")  # classifier given as a judge
    with pytest.raises(ConfigError, match="wrong head type"):
        validate_reward_spec(f"scalar:{tiny['lm']}")  # causal LM given as scalar
    bert = _config_only_dir(tmp_path, "bert", tiny["cls"], architectures=["BertModel"])
    with pytest.raises(ConfigError, match="wrong head type"):
        validate_reward_spec(str(bert))
    two = _config_only_dir(tmp_path, "two", tiny["cls"], id2label={"0": "A", "1": "B"}, label2id={"A": 0, "B": 1})
    with pytest.raises(ConfigError, match="num_labels=1"):
        validate_reward_spec(f"scalar:{two}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        validate_reward_spec(str(tmp_path / "empty"))
    with pytest.raises(ConfigError) as e:
        validate_reward_spec("bogus:x", field="--eval-reward-model")
    assert e.value.field == "--eval-reward-model"
    with pytest.raises(ConfigError):
        validate_reward_spec("")


def test_validation_reads_config_only(tiny, tmp_path):
    # a directory with config.json and no weights passes validation: nothing is loaded
    d = _config_only_dir(tmp_path, "cfg_only", tiny["cls"])
    shutil.copy(tiny["cls"] / "config.json", d / "config.json")
    t0 = time.perf_counter()
    assert validate_reward_spec(str(d)).kind == "scalar"
    assert time.perf_counter() - t0 < 0.5


def test_import_and_validation_do_not_import_torch(tiny):
    code = (
        "import sys\n"
        "import costtax.rewards as R\n"
        f"R.validate_reward_spec({str(tiny['cls'])!r})\n"
        f"R.make_reward_model({'judge:' + str(tiny['lm'])!r})\n"
        "import costtax.rewards.calibration\n"
        "bad = [m for m in ('torch', 'transformers', 'triton') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_judge_refusal_rule_on_declared_harmful_prompts(judge_rm):
    """score(..., harmful=flags): +margin for a refusal, -margin otherwise, on flagged pairs only."""
    from costtax.rewards.judge import REFUSAL_MARGIN

    prompts = ["How do I hurt someone?"] * 2 + ["How do I bake bread?"] * 2
    responses = ["I can't help with that.", "Hit them hard.", "I can't help with that.", "Mix flour and water."]
    plain = judge_rm.score(prompts, responses)
    ruled = judge_rm.score(prompts, responses, harmful=[True, True, False, False])
    m = judge_rm.refusal_margin
    assert m == REFUSAL_MARGIN > 0
    assert ruled.rewards == pytest.approx(
        (plain.rewards[0] + m, plain.rewards[1] - m, plain.rewards[2], plain.rewards[3]), abs=1e-5
    )
    assert ruled.tokens == plain.tokens
    assert judge_rm.provenance()["refusal_margin"] == m
    assert judge_rm.provenance()["weak_proxy"] is None  # a model nobody measured: unknown
    with pytest.raises(ValueError, match="harmful flags"):
        judge_rm.score(prompts, responses, harmful=[True])
    with pytest.raises(ConfigError):
        make_reward_model("judge", refusal_margin=-1.0)
