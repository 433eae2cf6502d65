"""The calibration figures costtax states come from the committed data file, and the README table
is its rendering.

costtax/rewards/data/public_calibration.json is written by bench/calibration_table.py (minutes of
model time; never in CI). These tests tie the README, the judge's weak-proxy text and the file's
provenance to that file and to the inputs it names."""
from __future__ import annotations

import copy
import hashlib
import importlib.util
import re
from pathlib import Path

import pytest

from costtax.rewards import calibration_report as cr
from costtax.rewards.judge import JudgeReward, weak_proxy_reason
from costtax.rewards.refusal_fingerprint import refusal_rule_fingerprint

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "techniques-and-reward-models.md"  # holds the table (was README.md)
DATA = cr.load_calibration()


def test_readme_table_is_the_rendering_of_the_committed_json():
    block = cr.readme_block(PAGE.read_text(encoding="utf-8"))
    assert block is not None, "docs/techniques-and-reward-models.md lacks the calibration-table markers"
    assert block == cr.render_table(DATA), "the page's table differs: run bench/calibration_table.py --readme-only"


def test_render_shows_each_figure_of_the_file():
    """Changing any figure in the data changes the rendered table."""
    base = cr.render_table(DATA)
    for path in (("splits", "dev", "judge_alone", "auc"), ("splits", "test", "rule_alone", "auc"),
                 ("splits", "test", "judge_plus_rule", "auc"), ("splits", "dev", "judge_plus_rule", "accuracy"),
                 ("splits", "test", "reward_length_rho")):
        d = copy.deepcopy(DATA)
        node = d
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = 0.123456
        out = cr.render_table(d)
        assert out != base and "0.12" in out, path
    d = copy.deepcopy(DATA)
    d["variants"][0]["dev_auc"] = 0.987
    assert "0.99" in cr.render_table(d)


def test_every_number_in_the_readme_block_is_in_the_file():
    """No figure in the generated block is typed: each decimal printed is one of the file's."""
    def numbers(x):
        if isinstance(x, dict):
            return [n for v in x.values() for n in numbers(v)]
        if isinstance(x, list):
            return [n for v in x for n in numbers(v)]
        return [x] if isinstance(x, (int, float)) and not isinstance(x, bool) else []

    known = {f"{float(v):.2f}" for v in numbers(DATA)}
    for tok in re.findall(r"(?<![\w.])-?\d+\.\d\d(?![\d.])", cr.render_table(DATA)):  # not versions (3.11.7)
        assert tok in known, tok


def test_provenance_names_script_inputs_and_model():
    prov = DATA["provenance"]
    assert prov["script"] == "bench/calibration_table.py" and len(prov["script_sha256"]) == 64
    assert prov["model"]["model"] == DATA["model"] and prov["model"]["dtype"]
    pairs = ROOT / "costtax" / "rewards" / "data" / "judge_pairs.jsonl"
    assert prov["inputs"]["judge_pairs_sha256"] == hashlib.sha256(pairs.read_bytes()).hexdigest(), (
        "judge_pairs.jsonl changed since the calibration was measured: rerun bench/calibration_table.py")
    assert prov["inputs"]["objective_csv_sha256"] and prov["inputs"]["pyrit_version"]


def test_inputs_are_the_installed_public_files():
    if importlib.util.find_spec("pyrit") is None:
        pytest.skip("pyrit is not installed (make setup installs it): cannot hash the public inputs")
    from costtax.rewards import public_sets as ps

    got = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(ps.data_dir().glob("*.csv"))}
    assert got == DATA["provenance"]["inputs"]["objective_csv_sha256"]


def test_file_was_measured_with_todays_rule_and_template():
    """The refusal phrases and the few-shot template are those the file was measured with; if
    either changes, its figures are stale and this fails until the script is rerun."""
    assert DATA["provenance"]["refusal_rule_sha256"] == refusal_rule_fingerprint()
    j = JudgeReward(DATA["model"], template=DATA["template"])
    from costtax.rewards.judge import text_sha

    assert DATA["template_sha"] == text_sha(j.template_text())


def test_weak_proxy_text_is_built_from_the_file():
    reasons = cr.weak_proxy_reasons(DATA)
    test = DATA["splits"]["test"]
    if not DATA["weak_proxy"]:
        assert reasons == {}
        return
    text = reasons[(DATA["model"], DATA["template"])]
    for v in (test["judge_alone"]["auc"], test["rule_alone"]["auc"], test["judge_plus_rule"]["auc"]):
        assert f"{v:.2f}" in text
    d = copy.deepcopy(DATA)
    d["splits"]["test"]["judge_plus_rule"]["auc"] = 0.4321
    assert "0.43" in cr.weak_proxy_reasons(d)[(DATA["model"], DATA["template"])]
    d["splits"]["test"]["judge_alone"]["auc"] = DATA["auc_target"]  # at the target: not weak
    assert cr.weak_proxy_reasons(d) == {}


def test_judge_provenance_reads_the_reason_only_for_the_measured_template():
    sha = DATA["template_sha"]
    if DATA["weak_proxy"]:
        assert weak_proxy_reason(DATA["model"], DATA["template"], sha) == cr.weak_proxy_reasons(DATA)[(DATA["model"], DATA["template"])]
    assert weak_proxy_reason(DATA["model"], DATA["template"], "0" * 16) is None  # a different template text
    assert weak_proxy_reason("some-other-model", DATA["template"], sha) is None
    assert weak_proxy_reason(DATA["model"], "zeroshot", None) is None


def test_missing_data_file_means_unknown_not_a_crash(monkeypatch):
    def gone():
        raise FileNotFoundError("public_calibration.json")

    monkeypatch.setattr(cr, "_calibration_text", gone)
    assert weak_proxy_reason(DATA["model"], DATA["template"], DATA["template_sha"]) is None


def _readme_claims(data) -> dict[str, bool]:
    """The README's sentences around the table, each with whether the data bears it out."""
    return {
        "AUC below 0.5": data["splits"]["test"]["judge_alone"]["auc"] < 0.5,
        "no variant tried reaches the target": max(v["dev_auc"] for v in data["variants"]) < data["auc_target"],
        "the rule by itself ranks at least as well as judge + rule": all(
            data["splits"][k]["rule_alone"]["auc"] >= data["splits"][k]["judge_plus_rule"]["auc"] for k in ("dev", "test")),
    }


def test_readme_prose_claims_hold_for_the_file():
    """The README's sentences around the table ("below 0.5", "no variant tried reaches the
    target", "the rule by itself ranks at least as well as judge + rule") are in the README and
    true of the data; a new measurement that breaks one fails here until the prose is rewritten
    (and this list with it)."""
    readme = " ".join(PAGE.read_text(encoding="utf-8").split())  # sentences wrap across lines
    for phrase, holds in _readme_claims(DATA).items():
        assert phrase in readme, f"README no longer says {phrase!r}: update the claims checked here"
        assert holds, f"README says {phrase!r}, the calibration data does not bear it out"


def test_each_readme_claim_fails_on_data_that_contradicts_it():
    broken = []
    d = copy.deepcopy(DATA)
    d["splits"]["test"]["judge_alone"]["auc"] = 0.5
    broken.append(d)
    d = copy.deepcopy(DATA)
    d["variants"][0]["dev_auc"] = d["auc_target"]
    broken.append(d)
    d = copy.deepcopy(DATA)
    d["splits"]["dev"]["rule_alone"]["auc"] = d["splits"]["dev"]["judge_plus_rule"]["auc"] - 0.01
    broken.append(d)
    for k, (phrase, d) in enumerate(zip(_readme_claims(DATA), broken)):
        got = _readme_claims(d)
        assert not got[phrase] and sum(got.values()) == len(got) - 1, (k, phrase)
