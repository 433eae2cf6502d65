"""Argument checks shared by the kernel ops.

Shape, dtype and device checks read only tensor metadata. Value checks (``cu_seqlens``
monotone, positions in range, token ids in the vocabulary, group offsets) need the values;
on CUDA that is one device->host copy per call, which is why the ops take ``validate=``.
With ``validate=False`` the kernels still never read out of bounds: a score position that
is out of range (or an empty sequence) yields NaN for that sequence instead.
"""

from __future__ import annotations

from typing import Any

import torch

_INDEX_DTYPES = (torch.int32, torch.int64)


def index_vector(x: Any, name: str, *, device: torch.device | None = None) -> torch.Tensor:
    """Check that ``x`` is a 1-D int32/int64 tensor and move it to ``device`` if needed."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(x.shape)}")
    if x.dtype not in _INDEX_DTYPES:
        raise ValueError(f"{name} must be int32 or int64, got {x.dtype}")
    if device is not None and x.device != device:
        x = x.to(device, non_blocking=True)
    return x


def floating_tensor(x: Any, name: str, ndim: int, layout: str) -> torch.Tensor:
    """Check that ``x`` is an ``ndim``-D floating tensor (``layout`` names its axes in errors)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D {layout}, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got {x.dtype}")
    return x


def hidden_matrix(hidden: Any, name: str = "hidden") -> torch.Tensor:
    return floating_tensor(hidden, name, 2, "[T, H]")


def _host(values: torch.Tensor) -> list[int]:
    return values.detach().to("cpu").tolist()


def check_cu_seqlens_values(cu: torch.Tensor, T: int, *, nonempty: bool) -> None:
    """cu[0] == 0, non-decreasing, cu[-1] <= T; every sequence non-empty when ``nonempty``."""
    vals = _host(cu)
    if not vals or vals[0] != 0:
        raise ValueError(f"cu_seqlens must start at 0, got {vals[:4]}")
    lengths = [b - a for a, b in zip(vals[:-1], vals[1:])]
    if any(n < 0 for n in lengths):
        raise ValueError(f"cu_seqlens must be non-decreasing, got {vals}")
    if vals[-1] > T:
        raise ValueError(f"cu_seqlens[-1]={vals[-1]} exceeds the number of hidden rows T={T}")
    if nonempty:
        empty = [i for i, n in enumerate(lengths) if n == 0]
        if empty:
            raise ValueError(
                f"sequences {empty[:8]} are empty: no last token to score (pass positions= "
                "to choose score rows explicitly)"
            )


def check_index_range(idx: torch.Tensor, upper: int, name: str) -> None:
    """Every value in [0, upper)."""
    if idx.numel() == 0:
        return
    lo, hi = _host(torch.stack([idx.min(), idx.max()]))
    if lo < 0 or hi >= upper:
        raise ValueError(f"{name} must lie in [0, {upper}), got values in [{lo}, {hi}]")


def ragged_rows(
    cu_seqlens: Any, positions: Any, T: int, device: torch.device, *, validate: bool
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """The ragged-batch arguments every scoring op takes: ``cu_seqlens`` (B+1 offsets into the
    T hidden rows) and optional ``positions`` (one score row per sequence; default: each
    sequence's last row). Returns them on ``device`` with B. With ``validate`` the values are
    checked too, on the caller's tensor when it is on the host (no device round trip)."""
    cu = index_vector(cu_seqlens, "cu_seqlens", device=device)
    B = cu.shape[0] - 1
    if B < 0:
        raise ValueError("cu_seqlens must have B+1 >= 1 entries")
    if positions is not None:
        positions = index_vector(positions, "positions", device=device)
        if positions.shape[0] != B:
            raise ValueError(f"positions must have B={B} entries (len(cu_seqlens)-1), got {positions.shape[0]}")
    if validate:
        host_cu = cu_seqlens if cu_seqlens.device.type == "cpu" else cu
        check_cu_seqlens_values(host_cu, T, nonempty=positions is None)
        if positions is not None:
            check_index_range(positions, T, "positions")
    return cu, positions, B
