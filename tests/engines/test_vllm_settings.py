"""engines/vllm_settings.py: the one definition of the vLLM settings, and --serve using it."""
from __future__ import annotations

import os

from costtax.engines import vllm_settings as S
from costtax.engines.serve import ServedVllm
import pytest

pytestmark = pytest.mark.unit


def test_cpu_settings():
    args = S.engine_args(on_cuda=False)
    assert args == {"dtype": "float32", "enforce_eager": True, "block_size": 32}
    assert S.engine_args(on_cuda=False, dtype="bfloat16", block_size=64)["block_size"] == 64
    assert S.server_flags(args) == ["--dtype", "float32", "--enforce-eager", "--block-size", "32"]
    env = S.env_defaults(on_cuda=False)
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1" and env["HF_HUB_OFFLINE"] == "1"
    lo, hi = map(int, env["VLLM_CPU_OMP_THREADS_BIND"].split("-"))
    assert lo <= hi and lo in os.sched_getaffinity(0) and hi in os.sched_getaffinity(0)


def test_cuda_settings_leave_vllm_defaults_off_the_command_line():
    args = S.engine_args(on_cuda=True)
    assert args == {"dtype": "auto", "gpu_memory_utilization": S.GPU_MEMORY_UTILIZATION}
    assert S.server_flags(args) == ["--gpu-memory-utilization", str(S.GPU_MEMORY_UTILIZATION)]
    assert S.server_flags(S.engine_args(on_cuda=True, dtype="float16", block_size=16)) == [
        "--dtype", "float16", "--gpu-memory-utilization", str(S.GPU_MEMORY_UTILIZATION), "--block-size", "16"]
    assert set(S.env_defaults(on_cuda=True)) == set(S.OFFLINE_ENV)


def test_serve_takes_the_shared_settings(tmp_path, monkeypatch):
    for k in (*S.CPU_ENV_DEFAULTS, "VLLM_CPU_OMP_THREADS_BIND"):
        monkeypatch.delenv(k, raising=False)
    served = ServedVllm("/m", tmp_path / "log", port=1234, block_size=64)
    cmd = served.build_command(on_cuda=False)
    flags = S.server_flags(S.engine_args(on_cuda=False, block_size=64))
    assert any(cmd[i : i + len(flags)] == flags for i in range(len(cmd)))
    env = served.build_env(on_cuda=False)
    for k, v in S.env_defaults(on_cuda=False).items():
        assert env[k] == v and served.env_used[k] == v
