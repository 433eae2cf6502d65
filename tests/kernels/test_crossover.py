"""The measured crossover table and the per-call host work of the ops (pure logic and
CPU-side counting; no GPU needed).

On CUDA the ops pick a plain-torch expression where the table says torch measured faster;
these tests check the table's data, the dispatcher's choice at each shape of issue 9's
table, the wiring inside ``reward_head``, and the torch expression's numbers. The host-work
tests count the torch ops each call dispatches before the kernel launch (each one is several
microseconds of host time on CUDA), with the kernel replaced by a stub so the interpreter's
own tensor work is not counted.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch
from _kernels_testutil import assert_close, make_cu
from torch.utils._python_dispatch import TorchDispatchMode

from costtax.kernels import _crossover, _dispatch, group_select, judge_head, reward_head, reward_head_reference
from costtax.kernels._crossover import CROSSOVERS, Crossover, choose_impl, rule_for

RH = sys.modules["costtax.kernels.reward_head"]
JH = sys.modules["costtax.kernels.judge_head"]
GS = sys.modules["costtax.kernels.group_select"]

# Issue 9's H200 table (bf16, do_bench median): (B, T, H) -> which side won for reward_head.
ISSUE9_SHAPES = {
    "smollm-bon4": ((4, 800, 576), "torch"),  # kernel 34.2 us vs all-positions head 9.9 us
    "8b-bon16x1k": ((16, 16384, 4096), "kernel"),  # 6.9 vs 28.8 / 47.8
    "8b-bon64x256": ((64, 16384, 4096), "kernel"),  # 7.0 vs 28.0 / 47.9
    "8b-bon256x512": ((256, 131072, 4096), "kernel"),  # 7.7 vs 21.2 / 267
}


@pytest.mark.parametrize("name", list(ISSUE9_SHAPES))
@pytest.mark.parametrize("card", ["NVIDIA H200", "NVIDIA H100 80GB HBM3"])
def test_dispatcher_picks_the_measured_winner(name, card):
    (B, T, H), winner = ISSUE9_SHAPES[name]
    assert choose_impl("reward_head", {"B": B, "T": T, "H": H}, card) == winner


@pytest.mark.parametrize(
    "shape,expect",
    [
        ({"B": 1, "T": 256, "H": 576}, "torch"),
        ({"B": 4, "T": 1024, "H": 4096}, "torch"),  # T*H = 2**22 exactly: inclusive bound
        ({"B": 4, "T": 1025, "H": 4096}, "kernel"),  # one row more
        ({"B": 1024, "T": 262144, "H": 576}, "kernel"),
    ],
)
def test_threshold_edges(shape, expect):
    assert choose_impl("reward_head", shape, "NVIDIA H200") == expect


def test_unknown_card_and_other_ops_get_the_kernel():
    small = {"B": 4, "T": 800, "H": 576}
    assert choose_impl("reward_head", small, "NVIDIA A100-SXM4-80GB") == "kernel"
    assert choose_impl("reward_head", small, None) == "kernel"
    assert choose_impl("judge_head", small, "NVIDIA H200") == "kernel"
    assert choose_impl("group_select", small, "NVIDIA H200") == "kernel"


def test_table_records_where_and_when():
    rule = rule_for("reward_head", "NVIDIA H200")
    assert rule is not None and rule.measured_on == "NVIDIA H200" and rule.measured_date == "2026-11-27"
    assert "crossover-h200-2026-11-27.json" in rule.source and "34.2" in rule.evidence
    for r in CROSSOVERS:
        assert r.cards and r.measured_date and r.source and r.evidence


def test_crossover_validation():
    with pytest.raises(ValueError, match="impl must be one of"):
        Crossover(op="reward_head", impl="cuda", cards=("H200",))
    with pytest.raises(ValueError, match="cards must name"):
        Crossover(op="reward_head", impl="torch")
    with pytest.raises(ValueError, match="max_TH must be >= 0"):
        Crossover(op="reward_head", impl="torch", max_TH=-1, cards=("H200",))
    custom = (Crossover(op="judge_head", impl="torch", max_B=8, cards=("L4",)),)
    assert choose_impl("judge_head", {"B": 8, "T": 9, "H": 9}, "NVIDIA L4", custom) == "torch"
    assert choose_impl("judge_head", {"B": 9, "T": 9, "H": 9}, "NVIDIA L4", custom) == "kernel"


# ------------------------------------------------------------------ wiring inside reward_head
class _StubKernel:
    """Stands in for a compiled kernel: records launches, runs nothing."""

    def __init__(self):
        self.launches = []

    def __getitem__(self, grid):
        return lambda *args, **kw: self.launches.append((grid, kw))


@pytest.fixture
def fake_cuda(monkeypatch):
    """Make reward_head believe it is on the compiled path of a card: auto_path says
    "triton", the card name is chosen by the test, the kernel is a stub."""
    stub = _StubKernel()
    state = {"card": "NVIDIA H200", "torch_calls": 0}
    monkeypatch.setattr(RH, "auto_path", lambda is_cuda, ok: "triton")
    monkeypatch.setattr(RH, "cuda_card", lambda index: state["card"])
    monkeypatch.setattr(RH, "resolve_kernel", lambda kernel, path: stub)
    real = RH._reward_head_torch

    def spy(*a, **kw):
        state["torch_calls"] += 1
        return real(*a, **kw)

    monkeypatch.setattr(RH, "_reward_head_torch", spy)
    return stub, state


def test_reward_head_dispatches_by_table(fake_cuda):
    stub, state = fake_cuda
    h, cu, w = torch.randn(800, 576), make_cu([200] * 4), torch.randn(576)
    out = reward_head(h, cu, w)
    assert state["torch_calls"] == 1 and stub.launches == []
    assert_close(out, reward_head_reference(h, cu, w), torch.float32)
    # Unvalidated calls keep the kernel (its NaN semantics would cost torch ~10 more ops).
    reward_head(h, cu, w, validate=False)
    assert state["torch_calls"] == 1 and len(stub.launches) == 1
    # Large T*H (a stride-0 view: no memory) goes to the kernel.
    big = torch.zeros(1, 4096).expand(2048, 4096)
    reward_head(big, make_cu([1024, 1024]), torch.zeros(4096))
    assert state["torch_calls"] == 1 and len(stub.launches) == 2
    # An explicit path is honoured: no dispatch.
    explicit = reward_head(h, cu, w, path="reference")
    assert state["torch_calls"] == 1 and explicit.shape == (4,)
    # A card without a rule: the kernel, even at the small shape.
    state["card"] = "NVIDIA A100"
    reward_head(h, cu, w)
    assert state["torch_calls"] == 1 and len(stub.launches) == 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("bias", [None, 0.5, "tensor"])
def test_torch_expression_matches_reference(dtype, bias, seed):
    lengths = [5, 1, 9, 4]
    cu = make_cu(lengths)
    h = torch.randn(int(cu[-1]), 101).to(dtype)
    w = (torch.randn(1, 101) / 101**0.5).to(dtype)
    b = torch.tensor([-0.25]).to(dtype) if bias == "tensor" else bias
    got = RH._reward_head_torch(h, cu, w, b, None, checked=True)
    ref = reward_head_reference(h, cu, w, b)
    assert got.dtype == torch.float32 and got.shape == (4,)
    # bf16: the GEMV output is rounded to bf16 before the fp32 cast (documented).
    tol = (2e-5, 1e-5) if dtype == torch.float32 else (4e-3, 2**-8)
    torch.testing.assert_close(got, ref, atol=tol[0], rtol=tol[1])


def test_torch_expression_unchecked_gives_nan_like_the_kernel():
    h, cu, w = torch.randn(7, 33), make_cu([3, 0, 4]), torch.randn(33)
    got = RH._reward_head_torch(h, cu, w, None, None, checked=False)
    ref = reward_head_reference(h, cu, w)
    assert math.isnan(got[1]) and math.isnan(ref[1])
    assert_close(got[[0, 2]], ref[[0, 2]], torch.float32)
    pos = torch.tensor([-1, 2, 7])
    got = RH._reward_head_torch(h, cu, w, None, pos, checked=False)
    assert torch.isnan(got[[0, 2]]).all() and not torch.isnan(got[1])


# ------------------------------------------------------------------ per-call host work
class _OpLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.fixture
def stub_kernels(monkeypatch):
    stub = _StubKernel()
    for mod in (RH, JH, GS):
        monkeypatch.setattr(mod, "resolve_kernel", lambda kernel, path: stub)
        monkeypatch.setattr(mod, "auto_path", lambda is_cuda, ok: "triton-interpret")
    return stub


def _ops(fn) -> list[str]:
    fn()  # first call fills the caches
    with _OpLog() as log:
        fn()
    return log.ops


def test_reward_head_host_work_is_one_allocation(stub_kernels):
    """validate=False on a kernel path: the output allocation is the only torch op: no
    weight view, no bias reshape, no dtype or device conversion, no device->host copy."""
    h = torch.randn(800, 576, dtype=torch.bfloat16)
    cu = make_cu([200] * 4)
    lin_w = torch.randn(1, 576, dtype=torch.bfloat16)  # nn.Linear(H, 1).weight layout
    bias = torch.randn(1, dtype=torch.bfloat16)
    assert _ops(lambda: reward_head(h, cu, lin_w, bias, validate=False)) == ["aten.empty.memory_format"]
    w1 = lin_w[0]
    assert _ops(lambda: reward_head(h, cu, w1, 0.5, validate=False)) == ["aten.empty.memory_format"]
    grid, kw = stub_kernels.launches[-1]
    assert kw["BIAS_MODE"] == 1 and grid == (1,)


def test_judge_and_group_select_host_work(stub_kernels):
    h = torch.randn(800, 576)
    cu = make_cu([200] * 4)
    lm, tok = torch.randn(50, 576), torch.tensor([3, 7])
    assert _ops(lambda: judge_head(h, cu, lm, tok, validate=False)) == ["aten.empty.memory_format"] * 2
    # split-K adds exactly its workspace
    assert _ops(lambda: judge_head(h, cu, lm, tok, validate=False, split_h=4)) == ["aten.empty.memory_format"] * 3
    r, off = torch.randn(16), make_cu([4, 4, 8], torch.int64)
    assert _ops(lambda: group_select(r, off, validate=False)) == ["aten.empty.memory_format"] * 4


def test_torch_expression_is_lean():
    """The dispatched torch expression (validated call) stays at a handful of ops: slice,
    sub, index_select, mv, cast, bias add. Each is a launch on CUDA; more would give away
    what the dispatch is for."""
    h = torch.randn(800, 576, dtype=torch.bfloat16)
    cu, w, b = make_cu([200] * 4), torch.randn(1, 576, dtype=torch.bfloat16), torch.randn(1)
    with _OpLog() as log:
        RH._reward_head_torch(h, cu, w, b, None, checked=True)
    assert len(log.ops) <= 7, log.ops
    assert "aten.mv.default" in log.ops and not any("where" in op or "clamp" in op for op in log.ops)


def test_validate_true_copies_host_tensors_nowhere(stub_kernels):
    """With the indices already on the host, validation reads them there: still no copy op."""
    h, cu, w = torch.randn(800, 576), make_cu([200] * 4), torch.randn(576)
    ops = _ops(lambda: reward_head(h, cu, w))
    assert "aten._to_copy.default" not in ops and "aten.copy_.default" not in ops


def test_launch_configs_are_cached(stub_kernels):
    RH._launch_config.cache_clear()
    h, w = torch.randn(40, 33), torch.randn(33)
    for _ in range(5):
        reward_head(h, make_cu([10, 30]), w, validate=False)
    info = RH._launch_config.cache_info()
    assert info.misses == 1 and info.hits == 4


def test_dispatch_helpers_are_cheap_and_correct(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    if _dispatch.triton_importable():
        assert _dispatch.auto_path(False, True) == "triton-interpret"
        assert _dispatch.auto_path(False, False) == "reference"
    monkeypatch.delenv("TRITON_INTERPRET")
    assert _dispatch.auto_path(False, True) == "reference"
    assert _dispatch.kernel_dtype_ok(torch.ones(1, dtype=torch.bfloat16), torch.ones(1, dtype=torch.int64))
    assert not _dispatch.kernel_dtype_ok(torch.ones(1, dtype=torch.float64))
    assert _dispatch.cuda_card(-1) is None
    assert _crossover.IMPLS == ("kernel", "torch")


# ------------------------------------------------------------------ the same on a real GPU
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("T,H", [(800, 576), (4096, 4096)], ids=["small", "large"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cuda_auto_path_matches_reference(T, H, dtype, seed, monkeypatch):
    """On CUDA the auto path takes the table's choice for this card (torch at the small
    shape on H100/H200, the kernel at the large one) and stays within the documented
    tolerance of the reference either way, validated or not."""
    calls = []
    real = RH._reward_head_torch
    monkeypatch.setattr(RH, "_reward_head_torch", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    cu = make_cu([T // 4] * 4).cuda()
    h = torch.randn(T, H, device="cuda").to(dtype)
    w = (torch.randn(1, H, device="cuda") / H**0.5).to(dtype)
    b = torch.tensor([0.25], device="cuda").to(dtype)
    ref = reward_head_reference(h, cu, w, b)
    atol, rtol = (2e-4, 1e-4) if dtype == torch.float32 else (8e-3, 2**-8)
    for validate in (True, False):
        torch.testing.assert_close(reward_head(h, cu, w, b, validate=validate), ref, atol=atol, rtol=rtol)
    card = torch.cuda.get_device_name()
    expect_torch = T * H <= (1 << 22) and rule_for("reward_head", card) is not None
    assert len(calls) == (1 if expect_torch else 0)  # the validated call only
    torch.testing.assert_close(reward_head(h, cu, w, b, path="triton"), ref, atol=atol, rtol=rtol)
    assert len(calls) == (1 if expect_torch else 0)  # an explicit path never dispatches
