"""Engines behind one protocol; `make_engine` is the only place that picks one by name."""
from __future__ import annotations

from .base import BatchStats, Engine, GenRequest, GenResult, Sample, SamplingSpec

ENGINES = ("vllm", "hf", "openai")


def make_engine(name: str, model_dir: str, **kwargs) -> Engine:
    """`openai`: model_dir is the served model name (or None: the server's only model); pass
    base_url= (and optionally tokenizer=, launch=, url_field=) as keyword arguments."""
    if name == "vllm":
        from .vllm import VllmEngine

        return VllmEngine(model_dir, **kwargs)
    if name == "hf":
        from .hf import HFEngine

        return HFEngine(model_dir, **kwargs)
    if name == "openai":
        from .openai import OpenAIEngine

        base_url = kwargs.pop("base_url", None)
        if base_url is None:
            raise ValueError("engine 'openai' needs base_url=")
        return OpenAIEngine(base_url, model_dir, **kwargs)
    raise ValueError(f"unknown engine {name!r}; valid: {', '.join(ENGINES)}")


__all__ = ["BatchStats", "Engine", "GenRequest", "GenResult", "Sample", "SamplingSpec", "ENGINES", "make_engine"]
