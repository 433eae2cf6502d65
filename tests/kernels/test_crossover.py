"""The measured crossover table and the per-call host work of the ops (pure logic and
CPU-side counting; no GPU needed).

On CUDA the ops pick the measured plain-torch expression at the measured shapes where it was
faster; these tests check that the table is what the committed grid generates, the
dispatcher's choice at every measured shape (read from the grid file itself) and at unmeasured
ones, the wiring inside ``reward_head``, and the torch expression's numbers. The host-work
tests count the torch ops each call dispatches before the kernel launch (each one is several
microseconds of host time on CUDA), with the kernel replaced by a stub so the interpreter's
own tensor work is not counted.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from _kernels_testutil import assert_close, make_cu
from torch.utils._python_dispatch import TorchDispatchMode

from costtax.kernels import _crossover, _dispatch, group_select, judge_head, reward_head, reward_head_reference
from costtax.kernels._crossover import MEASURED, MeasuredShape, choose_impl, lookup

pytestmark = pytest.mark.integration

RH = sys.modules["costtax.kernels.reward_head"]
JH = sys.modules["costtax.kernels.judge_head"]
GS = sys.modules["costtax.kernels.group_select"]

ROOT = Path(__file__).resolve().parents[2]
GRID = ROOT / "bench" / "results" / "crossover-h200-2026-11-27.json"
H200 = "NVIDIA H200"


def _generator():
    spec = importlib.util.spec_from_file_location("crossover_table_gen", ROOT / "bench" / "crossover_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _grid_rows() -> list[dict]:
    return json.loads(GRID.read_text())["rows"]


def test_generated_table_is_what_the_committed_grid_generates():
    """kernels/_crossover_table.py is byte-for-byte the generator's output for the committed
    grid: editing a number by hand, or the grid without regenerating, fails here."""
    gen = _generator()
    committed = (ROOT / "kernels" / "_crossover_table.py").read_text()
    assert committed == gen.render(GRID.read_text(), gen.SOURCE)
    assert hashlib.sha256(GRID.read_bytes()).hexdigest() == _crossover._gen.SOURCE_SHA256


def test_generator_reads_the_numbers_it_claims():
    """Changing one reward_head reading in the grid changes the generated table; changing a
    judge_head reading (or a torch expression the dispatcher never runs) does not."""
    gen = _generator()
    base = json.loads(GRID.read_text())

    def rows(d):  # the generated text without its source-hash line
        return "\n".join(ln for ln in gen.render(json.dumps(d), gen.SOURCE).splitlines() if "SHA256" not in ln)

    ref = rows(base)
    for col, should_change in (("rh_kernel", True), ("rh_gather_bf16", True), ("jh_kernel", False),
                               ("jh_gather_bf16", False), ("rh_allpos", False), ("rh_gather", False)):
        d = copy.deepcopy(base)
        d["rows"][0][col] = d["rows"][0][col] + 1000.0
        assert (rows(d) != ref) == should_change, col
    d = copy.deepcopy(base)
    del d["rows"][3]["rh_gather_bf16"]
    with pytest.raises(ValueError, match="row 3 has no 'rh_gather_bf16'"):
        gen.render(json.dumps(d), gen.SOURCE)


@pytest.mark.parametrize("i", range(18))
def test_every_measured_shape_dispatches_to_its_faster_side(i):
    """At each measured shape of the grid the dispatcher picks the lower median of the kernel
    and the dispatched torch expression, read from the JSON file here (not from the table)."""
    r = _grid_rows()[i]
    shape = {"B": r["B"], "T": r["T"], "H": r["H"]}
    expect = "torch" if r["rh_gather_bf16"] < r["rh_kernel"] else "kernel"
    assert choose_impl("reward_head", shape, H200) == expect
    row = lookup("reward_head", shape, H200)
    assert row is not None and (row.kernel_us, row.torch_us) == (r["rh_kernel"], r["rh_gather_bf16"])
    assert row.measured_date == "2026-11-27" and row.source.endswith(GRID.name)


def test_table_covers_exactly_the_grid_and_only_reward_head():
    grid = {(r["B"], r["T"], r["H"]) for r in _grid_rows()}
    assert {(m.B, m.T, m.H) for m in MEASURED} == grid and len(MEASURED) == len(grid)
    assert {m.op for m in MEASURED} == {"reward_head"} and {m.card for m in MEASURED} == {H200}
    # the grid's own outcome, counted from the file: torch faster at 13 of 18 shapes
    n_torch = sum(r["rh_gather_bf16"] < r["rh_kernel"] for r in _grid_rows())
    assert sum(m.winner == "torch" for m in MEASURED) == n_torch


def test_grid_has_no_threshold_to_interpolate():
    """Why unmeasured shapes get the kernel (the rule in _crossover.py): the kernel's readings
    spread over more than 5x and, at every H, are not ordered in B, and torch wins on both sides
    of a kernel win, so no size threshold separates the two."""
    rows = _grid_rows()
    k = [r["rh_kernel"] for r in rows]
    assert max(k) / min(k) > 5
    for H in {r["H"] for r in rows}:
        by_b = [r["rh_kernel"] for r in sorted(rows, key=lambda r: r["B"]) if r["H"] == H]
        assert by_b != sorted(by_b) and by_b != sorted(by_b, reverse=True), H
    ordered = [r["rh_gather_bf16"] < r["rh_kernel"] for r in sorted(rows, key=lambda r: r["T"] * r["H"])]
    first_kernel_win = ordered.index(False)
    assert any(ordered[first_kernel_win:]), "torch never wins above the first kernel win"


@pytest.mark.parametrize(
    "op,shape,card",
    [
        ("reward_head", {"B": 4, "T": 800, "H": 576}, H200),  # issue 9's SmolLM shape: not in the grid
        ("reward_head", {"B": 1, "T": 257, "H": 576}, H200),  # one token off a measured shape
        ("reward_head", {"B": 1, "T": 256, "H": 576}, "NVIDIA H100 80GB HBM3"),  # measured on H200 only
        ("reward_head", {"B": 1, "T": 256, "H": 576}, "NVIDIA H200 NVL"),  # exact card name only
        ("reward_head", {"B": 1, "T": 256, "H": 576}, None),  # CPU
        ("judge_head", {"B": 1, "T": 256, "H": 576}, H200),  # judge readings never dispatch
        ("group_select", {"B": 1, "T": 256, "H": 576}, H200),
    ],
)
def test_unmeasured_shapes_cards_and_ops_get_the_kernel(op, shape, card):
    assert choose_impl(op, shape, card) == "kernel"


def test_measured_shape_validation():
    ok = dict(op="reward_head", card="L4", B=8, T=9, H=9, kernel_us=5.0, torch_us=4.0, torch_expr="gather_rows",
              source="x.json", measured_date="2026-01-01")
    with pytest.raises(ValueError, match="card must name"):
        MeasuredShape(**{**ok, "card": ""})
    with pytest.raises(ValueError, match="MeasuredShape.B must be an int >= 1"):
        MeasuredShape(**{**ok, "B": 0})
    with pytest.raises(ValueError, match="kernel_us must be a finite time"):
        MeasuredShape(**{**ok, "kernel_us": float("nan")})
    with pytest.raises(ValueError, match="source must name"):
        MeasuredShape(**{**ok, "source": ""})
    custom = (MeasuredShape(**ok), MeasuredShape(**{**ok, "B": 9, "torch_us": 5.0}))
    assert choose_impl("reward_head", {"B": 8, "T": 9, "H": 9}, "L4", custom) == "torch"
    assert choose_impl("reward_head", {"B": 9, "T": 9, "H": 9}, "L4", custom) == "kernel"  # tie: kernel


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
    # (B=1, T=256, H=576): measured, torch faster (the grid's 11.2 vs 22.2 us)
    h, cu, w = torch.randn(256, 576), make_cu([256]), torch.randn(576)
    assert choose_impl("reward_head", {"B": 1, "T": 256, "H": 576}, H200) == "torch"
    out = reward_head(h, cu, w)
    assert state["torch_calls"] == 1 and stub.launches == []
    assert_close(out, reward_head_reference(h, cu, w), torch.float32)
    # Unvalidated calls keep the kernel (its NaN semantics would cost torch ~10 more ops).
    reward_head(h, cu, w, validate=False)
    assert state["torch_calls"] == 1 and len(stub.launches) == 1
    # A measured shape where the kernel was faster (B=4, T=1024, H=576: 5.7 vs 10.5 us).
    reward_head(torch.randn(1024, 576), make_cu([256] * 4), w)
    assert state["torch_calls"] == 1 and len(stub.launches) == 2
    # An unmeasured shape: the kernel.
    reward_head(torch.randn(800, 576), make_cu([200] * 4), w)
    assert state["torch_calls"] == 1 and len(stub.launches) == 3
    # An explicit path is honoured: no dispatch.
    explicit = reward_head(h, cu, w, path="reference")
    assert state["torch_calls"] == 1 and explicit.shape == (1,)
    # A card not measured: the kernel, even at the measured shape.
    state["card"] = "NVIDIA A100"
    reward_head(h, cu, w)
    assert state["torch_calls"] == 1 and len(stub.launches) == 4


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
@pytest.mark.parametrize("T,H", [(1024, 2048), (1024, 576), (800, 576)], ids=["measured-torch", "measured-kernel", "unmeasured"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_cuda_auto_path_matches_reference(T, H, dtype, seed, monkeypatch):
    """On CUDA the auto path takes the table's choice for this card (on the H200: torch at
    B=4 T=1024 H=2048, the kernel at H=576 and at the unmeasured shape) and stays within the
    documented tolerance of the reference either way, validated or not."""
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
    expect_torch = choose_impl("reward_head", {"B": 4, "T": T, "H": H}, card) == "torch"
    assert len(calls) == (1 if expect_torch else 0)  # the validated call only
    torch.testing.assert_close(reward_head(h, cu, w, b, path="triton"), ref, atol=atol, rtol=rtol)
    assert len(calls) == (1 if expect_torch else 0)  # an explicit path never dispatches
