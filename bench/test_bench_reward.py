"""Kernel path vs naive HF-style scoring at best-of-N-like shapes (pytest-benchmark).

Run on its own (NOT together with tests/, whose conftest turns on the Triton interpreter on
CPU):

    pytest bench --benchmark-disable -q      # smoke: each function runs once
    pytest bench -q                           # timings (fixed rounds, benchmark.pedantic)

Pairs, each in its own benchmark group:

(a) ``reward_head``: ``costtax.kernels.reward_head`` on packed hidden states vs the HF way
    (apply the ``Linear(H, 1)`` head to every position, then gather each last token) and vs
    the best plain-torch expression (gather the B last rows, then the head);
(b) ``judge_head``: the k=2 row judge vs full-vocabulary logits ``hidden @ lm_head.T`` at the
    B last positions, then two columns (``logits_to_keep``-style), vs the best plain-torch
    expression (gather the B rows, project on the k LM-head rows packed once); on CUDA also vs
    full-vocabulary logits at every position (the default HF forward), skipped on CPU where
    it takes seconds;
(c) ``group_select``: the kernel vs a Python loop over groups (and the vectorised torch
    reference).

Shapes: CPU B=16 sequences of 40..200 tokens, H=576, V=49152, fp32 (few seconds in all).
CUDA: B=64 sequences of 64..1024 tokens, H=4096, V=128256, bf16. Each benchmark records
shapes, dtype, device name and the kernel path (``triton`` on CUDA; ``reference`` on CPU,
which is the torch gather-then-project implementation) in ``benchmark.extra_info``.

Targets (reported, not asserted; bench/gpu_check.py gives the verdict per shape, GPU time and
host cost per call): every kernel at least as fast as the best torch expression; head kernels
>= 20x the naive full-position head, k-row judge >= 100x full-vocabulary logits.
"""

from __future__ import annotations

import pytest
import torch

from costtax.kernels import group_select, group_select_reference, judge_head, kernel_path, reward_head

ROUNDS, WARMUP = 15, 2


def _shapes(device: torch.device) -> dict:
    if device.type == "cuda":
        return dict(B=64, min_len=64, max_len=1024, H=4096, V=128256, G=512, max_n=16, dtype=torch.bfloat16)
    return dict(B=16, min_len=40, max_len=200, H=576, V=49152, G=64, max_n=16, dtype=torch.float32)


@pytest.fixture(scope="module")
def workload(bench_device):
    s = _shapes(bench_device)
    g = torch.Generator().manual_seed(1234)
    lengths = torch.randint(s["min_len"], s["max_len"] + 1, (s["B"],), generator=g)
    cu = torch.zeros(s["B"] + 1, dtype=torch.int32)
    cu[1:] = lengths.cumsum(0)
    T, H, V = int(cu[-1]), s["H"], s["V"]
    dev, dt = bench_device, s["dtype"]
    hidden = torch.randn(T, H, generator=g).to(dev, dt)
    head_w = (torch.randn(1, H, generator=g) / H**0.5).to(dev, dt)
    head_b = torch.randn(1, generator=g).to(dev, dt)
    lm_head = (torch.randn(V, H, generator=g) / H**0.5).to(dev, dt)
    token_ids = torch.tensor([9891, 2822], device=dev)  # e.g. " Yes", " No"
    sizes = torch.randint(1, s["max_n"] + 1, (s["G"],), generator=g)
    offsets = torch.zeros(s["G"] + 1, dtype=torch.int64)
    offsets[1:] = sizes.cumsum(0)
    rewards = torch.randn(int(offsets[-1]), generator=g).to(dev)
    return dict(
        s=s, T=T, cu=cu.to(dev), last=(cu[1:].long() - 1).to(dev), hidden=hidden, head_w=head_w, head_b=head_b,
        lm_head=lm_head, token_ids=token_ids, lm_k_rows=lm_head.index_select(0, token_ids).contiguous(),
        offsets=offsets.to(dev), offsets_host=offsets.tolist(), rewards=rewards,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _run(benchmark, fn, device, info: dict):
    benchmark.extra_info.update(info)

    def target():
        out = fn()
        _sync(device)
        return out

    return benchmark.pedantic(target, rounds=ROUNDS, warmup_rounds=WARMUP, iterations=1)


def _info(bench_env, w, op: str, impl: str, path: str, **extra) -> dict:
    s = w["s"]
    return {
        **bench_env, "op": op, "impl": impl, "kernel_path": path, "dtype": str(s["dtype"]).replace("torch.", ""),
        "B": s["B"], "T": w["T"], "H": s["H"], **extra,
    }


# ---------------------------------------------------------------- (a) reward head
def _naive_reward_head(w):
    every = torch.nn.functional.linear(w["hidden"], w["head_w"], w["head_b"])  # [T, 1]
    return every[w["last"], 0].float()


@pytest.mark.benchmark(group="reward_head")
def test_reward_head_kernel(benchmark, workload, bench_device, bench_env):
    w = workload
    path = kernel_path(w["hidden"], w["head_w"])
    fn = lambda: reward_head(w["hidden"], w["cu"], w["head_w"], w["head_b"], validate=False)  # noqa: E731
    torch.testing.assert_close(fn(), _naive_reward_head(w), atol=2e-2, rtol=2e-2)
    _run(benchmark, fn, bench_device, _info(bench_env, w, "reward_head", "kernel", path))


def _best_torch_reward_head(w):
    rows = w["hidden"].index_select(0, w["last"])
    return torch.nn.functional.linear(rows, w["head_w"], w["head_b"])[:, 0].float()


@pytest.mark.benchmark(group="reward_head")
def test_reward_head_best_torch_gather_rows(benchmark, workload, bench_device, bench_env):
    w = workload
    torch.testing.assert_close(_best_torch_reward_head(w), _naive_reward_head(w), atol=2e-2, rtol=2e-2)
    info = _info(bench_env, w, "reward_head", "torch-gather-last-rows", "torch")
    _run(benchmark, lambda: _best_torch_reward_head(w), bench_device, info)


@pytest.mark.benchmark(group="reward_head")
def test_reward_head_naive_full_positions(benchmark, workload, bench_device, bench_env):
    w = workload
    _run(benchmark, lambda: _naive_reward_head(w), bench_device, _info(bench_env, w, "reward_head", "naive-all-positions", "torch"))


# ---------------------------------------------------------------- (b) k-row judge
def _naive_judge_last(w):
    logits = torch.nn.functional.linear(w["hidden"][w["last"]], w["lm_head"])  # [B, V]
    two = logits[:, w["token_ids"]].float()
    return two[:, 0] - two[:, 1]


def _naive_judge_all(w):
    logits = torch.nn.functional.linear(w["hidden"], w["lm_head"])  # [T, V], the HF default
    two = logits[w["last"]][:, w["token_ids"]].float()
    return two[:, 0] - two[:, 1]


@pytest.mark.benchmark(group="judge_head")
def test_judge_head_kernel(benchmark, workload, bench_device, bench_env):
    w = workload
    path = kernel_path(w["hidden"], w["lm_head"])
    fn = lambda: judge_head(w["hidden"], w["cu"], w["lm_head"], w["token_ids"], validate=False).reward  # noqa: E731
    torch.testing.assert_close(fn(), _naive_judge_last(w), atol=5e-2, rtol=5e-2)
    _run(benchmark, fn, bench_device, _info(bench_env, w, "judge_head", "kernel", path, V=w["s"]["V"], k=2))


def _best_torch_judge(w):
    two = torch.nn.functional.linear(w["hidden"].index_select(0, w["last"]), w["lm_k_rows"]).float()
    return two[:, 0] - two[:, 1]


@pytest.mark.benchmark(group="judge_head")
def test_judge_head_best_torch_k_rows(benchmark, workload, bench_device, bench_env):
    w = workload
    torch.testing.assert_close(_best_torch_judge(w), _naive_judge_last(w), atol=5e-2, rtol=5e-2)
    info = _info(bench_env, w, "judge_head", "torch-gather-rows-k-lm-rows-prepacked", "torch", V=w["s"]["V"], k=2)
    _run(benchmark, lambda: _best_torch_judge(w), bench_device, info)


@pytest.mark.benchmark(group="judge_head")
def test_judge_head_naive_full_vocab_last(benchmark, workload, bench_device, bench_env):
    w = workload
    info = _info(bench_env, w, "judge_head", "naive-full-vocab-last-positions", "torch", V=w["s"]["V"], k=2)
    _run(benchmark, lambda: _naive_judge_last(w), bench_device, info)


@pytest.mark.benchmark(group="judge_head")
def test_judge_head_naive_full_vocab_all(benchmark, workload, bench_device, bench_env):
    w = workload
    if bench_device.type != "cuda":
        pytest.skip("full-vocabulary logits at every position take seconds per round on CPU")
    info = _info(bench_env, w, "judge_head", "naive-full-vocab-all-positions", "torch", V=w["s"]["V"], k=2)
    _run(benchmark, lambda: _naive_judge_all(w), bench_device, info)


# ---------------------------------------------------------------- (c) group select
def _naive_group_loop(w):
    r, offs = w["rewards"], w["offsets_host"]
    out = []
    for g in range(len(offs) - 1):
        x = r[offs[g]:offs[g + 1]].float()
        mx, am = x.max(0)
        std = x.std(unbiased=False)
        z = (x - x.mean()) / std if x.numel() > 1 and std > 0 else torch.zeros_like(x)
        out.append((mx, am, z, torch.softmax(x, 0)))
    return out


@pytest.mark.benchmark(group="group_select")
def test_group_select_kernel(benchmark, workload, bench_device, bench_env):
    w = workload
    path = kernel_path(w["rewards"])
    fn = lambda: group_select(w["rewards"], w["offsets"], validate=False)  # noqa: E731
    got, loop = fn(), _naive_group_loop(w)
    torch.testing.assert_close(got.max, torch.stack([o[0] for o in loop]))
    torch.testing.assert_close(got.argmax, torch.stack([o[1] for o in loop]))
    info = _info(bench_env, w, "group_select", "kernel", path, G=w["s"]["G"], M=w["rewards"].numel())
    _run(benchmark, fn, bench_device, info)


@pytest.mark.benchmark(group="group_select")
def test_group_select_python_loop(benchmark, workload, bench_device, bench_env):
    w = workload
    info = _info(bench_env, w, "group_select", "naive-python-loop", "torch", G=w["s"]["G"], M=w["rewards"].numel())
    _run(benchmark, lambda: _naive_group_loop(w), bench_device, info)


@pytest.mark.benchmark(group="group_select")
def test_group_select_torch_vectorised(benchmark, workload, bench_device, bench_env):
    w = workload
    info = _info(bench_env, w, "group_select", "torch-vectorised-reference", "reference", G=w["s"]["G"], M=w["rewards"].numel())
    _run(benchmark, lambda: group_select_reference(w["rewards"], w["offsets"]), bench_device, info)
