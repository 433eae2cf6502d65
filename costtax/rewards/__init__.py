"""Reward models for best-of-N selection and evaluation: an LM judge (few-shot Yes/No) and
scalar sequence-classification heads, both read through costtax.kernels at the score rows.

Import-light: nothing here imports torch or transformers until a model is loaded. The factory
lives here, above the model modules (judge.py, scalar_head.py -> _hf.py -> prefix_cache.py,
batch_plans.py, attention_paths.py, base.py), so the import graph has no cycle.
"""
from __future__ import annotations

from .base import (
    DEFAULT_JUDGE,
    KINDS,
    RewardModel,
    RewardSpec,
    ScoreBatch,
    validate_reward_spec,
)
from .server_spec import ServerRewardSpec


def make_reward_model(
    spec: str,
    *,
    device: str | None = None,
    trust_remote_code: bool = False,
    field: str = "--reward-model",
    **options,
) -> RewardModel:
    """Build (not load) the reward model a spec names; call ``.load()`` before scoring.

    ``options`` go to the model class: ``max_batch`` (16), ``max_tokens`` (16384 padded
    positions per bucket / tokens per pack), ``batching`` ("auto" | "padded" | "packed"),
    ``dtype`` (fp32 on CPU, bf16 on CUDA), ``kernel_path`` (None = auto), ``max_length``,
    ``prefix_cache`` (True), and for judges ``template`` ("fewshot" | "zeroshot" | dict)."""
    policy = options.pop("policy", None)  # the run's openai engine, for `served`
    rs = validate_reward_spec(spec, field=field)
    if isinstance(rs, ServerRewardSpec):  # behind a server: costtax/rewards/served.py
        from .served import make_server_reward

        return make_server_reward(rs, policy=policy, field=field, **options)
    if rs.kind == "scalar":
        from .scalar_head import ScalarHeadReward

        return ScalarHeadReward(
            rs.model_dir, name=rs.name, device=device, trust_remote_code=trust_remote_code, field=field, **options
        )
    from .judge import JudgeReward

    return JudgeReward(
        rs.model_dir if rs.alias is None else rs.alias,
        name=rs.name,
        device=device,
        trust_remote_code=trust_remote_code,
        field=field,
        **options,
    )


__all__ = [
    "DEFAULT_JUDGE",
    "KINDS",
    "RewardModel",
    "RewardSpec",
    "ScoreBatch",
    "make_reward_model",
    "validate_reward_spec",
]
