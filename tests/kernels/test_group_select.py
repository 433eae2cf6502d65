"""group_select: Triton path (compiled on CUDA, interpreter on CPU) vs reference vs a Python
loop over groups. The parametrized tests take the `device` fixture: inputs are drawn on the
CPU and moved there, and results are compared on the CPU."""

from __future__ import annotations

import math

import pytest
import torch
from _kernels_testutil import TOL, assert_close, assert_no_poison, make_cu
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costtax.kernels import GroupSelection, group_select, group_select_reference, reward_head_group_select
from costtax.kernels.reward_head import reward_head_reference

pytestmark = pytest.mark.integration

GROUPS = {
    "G1_N1": [1],
    "N1_groups": [1, 1, 1],
    "bon_equal": [4, 4, 4, 4],
    "ragged": [3, 1, 7, 2, 5],
    "long_group": [70, 1, 130],  # > the interpreter's 64-wide tile: multi-chunk loops
}
DTYPES = [torch.float32, torch.bfloat16]


def _naive(rewards: torch.Tensor, sizes: list[int], temperature: float):
    """One group at a time with plain torch/Python on the CPU: independent of the reference."""
    r = rewards.cpu().double()
    mx, am, z, sm = [], [], [], []
    start = 0
    for n in sizes:
        x = r[start:start + n]
        start += n
        vals = x.tolist()
        best = max(vals)
        mx.append(best)
        am.append(vals.index(best))  # first max
        if n == 1 or min(vals) == best:
            z.append(torch.zeros(n, dtype=torch.float64))
        else:
            z.append((x - x.mean()) / x.std(unbiased=False))
        sm.append(torch.softmax(x / temperature, dim=0))
    return torch.tensor(mx, dtype=torch.float64), torch.tensor(am, dtype=torch.int64), torch.cat(z), torch.cat(sm)


def _rewards(sizes, dtype, ties=False, device="cpu"):
    """Drawn on the CPU from the seeded generator, then moved: same values on any device."""
    M = sum(sizes)
    r = (torch.randn(M) * 2).to(dtype)
    if ties:  # repeated maxima and a constant group
        r = torch.randint(-2, 3, (M,)).to(dtype)
    return r.to(device)


def _check(out: GroupSelection, rewards, sizes, temperature, dtype):
    nmax, narg, nz, nsm = _naive(rewards, sizes, temperature)  # on the CPU
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(out.max.cpu().double(), nmax, atol=atol, rtol=rtol)
    assert torch.equal(out.argmax.cpu(), narg)
    torch.testing.assert_close(out.zscore.cpu().double(), nz, atol=max(atol, 1e-4), rtol=max(rtol, 1e-4))
    torch.testing.assert_close(out.softmax.cpu().double(), nsm, atol=atol, rtol=max(rtol, 1e-4))


@pytest.mark.parametrize("temperature", [1.0, 0.37])
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize("sizes", list(GROUPS.values()), ids=list(GROUPS))
def test_matches_reference_and_naive(sizes, dtype, temperature, seed, poison, auto_path, device):
    rewards = _rewards(sizes, dtype, ties=seed % 3 == 0, device=device)
    offsets = make_cu(sizes, torch.int64 if seed % 2 else torch.int32, device)
    out = group_select(rewards, offsets, temperature)
    assert isinstance(out, GroupSelection)
    G, M = len(sizes), sum(sizes)
    assert out.max.shape == (G,) and out.argmax.shape == (G,) and out.zscore.shape == (M,) and out.softmax.shape == (M,)
    assert out.max.dtype == out.zscore.dtype == out.softmax.dtype == torch.float32 and out.argmax.dtype == torch.int64
    assert_no_poison(poison, device)
    ref = group_select_reference(rewards, offsets, temperature)
    for name in ("max", "zscore", "softmax"):
        assert_close(getattr(out, name), getattr(ref, name), torch.float32, f"{auto_path} {name} vs reference")
    assert torch.equal(out.argmax.cpu(), ref.argmax.cpu())
    _check(ref, rewards, sizes, temperature, dtype)


def test_ties_constant_groups_and_singletons(poison, auto_path, device):
    rewards = torch.tensor([0.1, 0.1, 0.1, 5.0, -1.0, 5.0, 2.0, 7.5, 3.0, 3.0], device=device)
    offsets = make_cu([3, 3, 1, 1, 2], device=device)
    for out in (group_select(rewards, offsets), group_select_reference(rewards, offsets)):
        assert out.argmax.tolist() == [0, 0, 0, 0, 0]
        assert out.max.tolist() == pytest.approx([0.1, 5.0, 2.0, 7.5, 3.0])
        # Constant and 1-element groups have std 0 -> z-score exactly 0.
        z = out.zscore.tolist()
        assert z[0:3] == [0.0, 0.0, 0.0] and z[6] == 0.0 and z[7] == 0.0 and z[8:10] == [0.0, 0.0]
        assert out.softmax[6].item() == 1.0 and out.softmax[7].item() == 1.0
        torch.testing.assert_close(out.softmax[0:3].cpu(), torch.full((3,), 1 / 3))
    assert_no_poison(poison, device)


def test_softmax_sums_to_one_and_large_values(auto_path, device):
    rewards = torch.tensor([1000.0, 999.0, -1000.0, 80.0, 80.5], device=device)
    offsets = make_cu([3, 2], device=device)
    out = group_select(rewards, offsets, temperature=0.01)
    sm = out.softmax.cpu()
    assert torch.isfinite(sm).all()
    torch.testing.assert_close(sm[:3].sum(), torch.tensor(1.0))
    torch.testing.assert_close(sm[3:].sum(), torch.tensor(1.0))


def test_empty(auto_path, device):
    out = group_select(torch.empty(0, device=device), torch.zeros(1, dtype=torch.long, device=device))
    assert out.max.shape == (0,) and out.zscore.shape == (0,)
    assert out.max.device.type == torch.device(device).type


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=5),
    data=st.data(),
    temperature=st.floats(min_value=0.05, max_value=20.0),
)
def test_property_reference_vs_naive_and_kernel(sizes, data, temperature, auto_path, device):
    """Random ragged groups with duplicated values (integer-ish rewards)."""
    vals = data.draw(st.lists(st.integers(min_value=-4, max_value=4), min_size=sum(sizes), max_size=sum(sizes)))
    rewards = (torch.tensor(vals, dtype=torch.float32) * 0.5).to(device)
    offsets = make_cu(sizes, device=device)
    ref = group_select_reference(rewards, offsets, temperature)
    _check(ref, rewards, sizes, temperature, torch.float32)
    out = group_select(rewards, offsets, temperature)
    assert torch.equal(out.argmax.cpu(), ref.argmax.cpu())
    for name in ("max", "zscore", "softmax"):
        assert_close(getattr(out, name), getattr(ref, name), torch.float32, name)


def test_reward_head_group_select(seed, poison, auto_path, device):
    lengths = [5, 1, 9, 4, 3, 7, 2]
    cu = make_cu(lengths)
    hidden = torch.randn(int(cu[-1]), 45)
    weight = torch.randn(45) / 45**0.5
    hidden, cu, weight = hidden.to(device), cu.to(device), weight.to(device)
    groups = make_cu([3, 1, 3], device=device)
    rewards, sel = reward_head_group_select(hidden, cu, weight, 0.5, groups, temperature=0.7)
    assert_no_poison(poison, device)
    expect_r = reward_head_reference(hidden, cu, weight, 0.5)
    assert_close(rewards, expect_r, torch.float32)
    ref = group_select_reference(expect_r, groups, 0.7)
    assert torch.equal(sel.argmax.cpu(), ref.argmax.cpu())
    assert_close(sel.softmax, ref.softmax, torch.float32)
    with pytest.raises(ValueError, match="must end at M=7"):
        reward_head_group_select(hidden, cu, weight, None, make_cu([3, 3], device=device))


@pytest.mark.parametrize(
    "rewards,offsets,kwargs,match",
    [
        (torch.randn(4), make_cu([2, 2]), {"temperature": 0.0}, "temperature must be a finite float > 0"),
        (torch.randn(4), make_cu([2, 2]), {"temperature": -1.0}, "temperature must be"),
        (torch.randn(4), make_cu([2, 2]), {"temperature": math.inf}, "temperature must be"),
        (torch.randn(4), make_cu([2, 2]), {"temperature": math.nan}, "temperature must be"),
        (torch.randn(4), make_cu([2, 2]), {"temperature": "hot"}, "temperature must be"),
        (torch.randn(2, 2), make_cu([2, 2]), {}, "rewards must be 1-D"),
        (torch.arange(4), make_cu([2, 2]), {}, "rewards must be a floating"),
        (torch.randn(4), make_cu([2, 2]).float(), {}, "offsets must be int32 or int64"),
        (torch.randn(4), make_cu([2, 0, 2]), {}, "every group needs >= 1 element"),
        (torch.randn(4), make_cu([2, 1]), {}, "must end at M=4"),
        (torch.randn(4), torch.tensor([1, 4]), {}, "must start at 0"),
        (torch.randn(4), torch.tensor([0, 3, 2, 4]), {}, "every group needs >= 1 element"),
    ],
)
def test_errors(rewards, offsets, kwargs, match):
    with pytest.raises(ValueError, match=match):
        group_select(rewards, offsets, **kwargs)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
def test_cuda_matches_reference(dtype, seed, poison):
    sizes = [1, 3, 8, 16, 300, 1000, 7] * 5
    rewards = _rewards(sizes, dtype).cuda()
    offsets = make_cu(sizes).cuda()
    out = group_select(rewards, offsets, 0.5)
    assert_no_poison(poison)
    ref = group_select_reference(rewards, offsets, 0.5)
    assert torch.equal(out.argmax, ref.argmax)
    for name in ("max", "zscore", "softmax"):
        torch.testing.assert_close(getattr(out, name), getattr(ref, name), atol=1e-5, rtol=1e-4)
