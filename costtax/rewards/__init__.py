"""Reward models for best-of-N selection and evaluation: an LM judge (few-shot Yes/No) and
scalar sequence-classification heads, both read through costtax.kernels at the score rows.

Import-light: nothing here imports torch or transformers until a model is loaded.
"""
from .base import (
    DEFAULT_JUDGE,
    KINDS,
    RewardModel,
    RewardSpec,
    ScoreBatch,
    make_reward_model,
    validate_reward_spec,
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
