"""Calibration and evaluation scoring report pairs done / total from inside the one scoring
call (costtax/rewards/progress.py), without changing its batches or its results."""
from __future__ import annotations

import pytest
import torch

from costtax.rewards import make_reward_model
from costtax.rewards.calibration import judge_accuracy
from costtax.rewards.progress import batch_progress

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def scalar_rm(tmp_path_factory):
    from costtax.tiny import build_tiny_llama

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("progress_tiny")
    rm = make_reward_model(f"scalar:{build_tiny_llama(root / 'cls', classifier=True)}", device="cpu", max_batch=2)
    rm.load()
    yield rm
    rm.close()
    torch.set_num_threads(before)


def test_batches_report_as_they_finish_and_results_are_unchanged(scalar_rm):
    prompts = [f"question {i}" for i in range(7)]
    responses = ["an answer " * (i + 1) for i in range(7)]
    plain = scalar_rm.score(prompts, responses)
    seen = []
    with batch_progress(scalar_rm, 7, lambda done, total: seen.append((done, total))):
        hooked = scalar_rm.score(prompts, responses)
    assert hooked.rewards == pytest.approx(plain.rewards)
    dones = [d for d, _ in seen]
    assert dones[0] == 0 and dones[-1] == 7 and dones == sorted(dones)
    assert len(set(dones)) >= 5  # 0, then one step per batch of at most 2 (4 batches): not one jump at the end
    assert all(t == 7 for _, t in seen)
    assert scalar_rm.on_batch_scored is None  # the hook is gone after the block


def test_a_model_without_the_hook_reports_start_and_end():
    class Flat:
        def score(self, prompts, responses, *, harmful=None):
            from costtax.rewards.base import ScoreBatch

            return ScoreBatch(rewards=tuple(1.0 if "good" in r else 0.0 for r in responses), tokens=tuple(1 for _ in responses),
                              padding_fraction=0.0, path="reference", latency_s=0.0)

    seen = []
    pairs = [{"prompt": "p", "good": "good", "bad": "bad", "kind": "k", "id": i} for i in range(3)]
    res = judge_accuracy(Flat(), pairs, progress=lambda d, t: seen.append((d, t)))
    assert res["accuracy"] == 1.0 and seen == [(0, 6), (6, 6)]
