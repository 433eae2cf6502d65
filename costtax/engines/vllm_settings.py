"""The vLLM settings costtax runs with, written once: the in-process engine (engines/vllm.py) and
`--serve` (engines/serve.py, vLLM's OpenAI server) both take their device-dependent engine
arguments and environment from here, so the two cannot drift apart.

On CPU: fp32 + eager mode (bf16 is slow without AMX/AVX512-BF16 and torch.compile costs minutes
at start), KV block 32 (vLLM's CPU default is 128 and only full blocks are cached, so chat prompts
shorter than 128 tokens would never hit the prefix cache; 32 is the smallest size the CPU
attention backend accepts without a warning), a 1 GiB KV cache, OpenMP threads bound to every
core this process may use, no reserved core. On CUDA: the dtype given (else vLLM's "auto") and
85 % of GPU memory. Both: Hugging Face offline (no weights are ever downloaded).
"""
from __future__ import annotations

import os
from typing import Any

CPU_ENV_DEFAULTS = {
    "VLLM_TARGET_DEVICE": "cpu",
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
}
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
CPU_DTYPE = "float32"
CPU_BLOCK_SIZE_TOKENS = 32
GPU_MEMORY_UTILIZATION = 0.85
# Engine arguments equal to vLLM's own default: not spelled out on the server's command line.
_VLLM_DEFAULTS = {("dtype", "auto")}


def omp_threads_bind() -> str:
    """VLLM_CPU_OMP_THREADS_BIND for every core this process may use ("lo-hi")."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    return f"{min(cpus)}-{max(cpus)}"


def env_defaults(on_cuda: bool) -> dict[str, str]:
    """Environment variables vLLM should see (applied with setdefault: the user's own win)."""
    env = dict(OFFLINE_ENV)
    if not on_cuda:
        env.update(CPU_ENV_DEFAULTS)
        env["VLLM_CPU_OMP_THREADS_BIND"] = omp_threads_bind()
    return env


def engine_args(
    *, on_cuda: bool, dtype: str | None = None, block_size: int | None = None,
    gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION,
) -> dict[str, Any]:
    """The device-dependent engine arguments (vLLM's EngineArgs names); explicit values win."""
    if on_cuda:
        args: dict[str, Any] = {"dtype": dtype or "auto", "gpu_memory_utilization": gpu_memory_utilization}
        if block_size:
            args["block_size"] = block_size
        return args
    return {"dtype": dtype or CPU_DTYPE, "enforce_eager": True, "block_size": block_size or CPU_BLOCK_SIZE_TOKENS}


def server_flags(args: dict[str, Any]) -> list[str]:
    """The same arguments as command-line flags of vLLM's OpenAI server (`block_size=32` ->
    `--block-size 32`, `enforce_eager=True` -> `--enforce-eager`); vLLM's defaults left out."""
    flags: list[str] = []
    for key, value in args.items():
        if (key, value) in _VLLM_DEFAULTS or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        flags += [flag] if value is True else [flag, str(value)]
    return flags
