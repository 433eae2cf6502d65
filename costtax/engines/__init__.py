"""Engines behind one protocol; `make_engine` is the only place that picks one by name."""
from __future__ import annotations

from .base import BatchStats, Engine, GenRequest, GenResult, Sample, SamplingSpec

ENGINES = ("vllm", "hf")


def make_engine(name: str, model_dir: str, **kwargs) -> Engine:
    if name == "vllm":
        from .vllm import VllmEngine

        return VllmEngine(model_dir, **kwargs)
    if name == "hf":
        from .hf import HFEngine

        return HFEngine(model_dir, **kwargs)
    raise ValueError(f"unknown engine {name!r}; valid: {', '.join(ENGINES)}")


__all__ = ["BatchStats", "Engine", "GenRequest", "GenResult", "Sample", "SamplingSpec", "ENGINES", "make_engine"]
