"""Triton kernels for the scoring side of inference-time alignment (installed as
``costtax.kernels``).

* :func:`reward_head`   -- last-token scalar reward head over a packed varlen batch;
* :func:`judge_head`    -- LM-judge logits on k chosen tokens (no full-vocabulary matmul);
* :func:`group_select`  -- best-of-N max / argmax / z-score / softmax over ragged groups;
* :func:`reward_head_group_select` -- the two above in one call (two launches);
* :func:`kernel_path`   -- which implementation a call would use.

Each op has a ``*_reference`` twin in plain torch. This module is import-light: the op
modules (and with them torch and, guarded, triton) load on first attribute access.

The package attributes ``reward_head``, ``judge_head`` and ``group_select`` are always the
*functions*, as they would be after an eager ``from .reward_head import reward_head``, even
once the submodules of the same names are imported. Reach a submodule with
``from costtax.kernels.reward_head import ...`` or ``importlib.import_module``.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_EXPORTS = {
    "kernel_path": "._dispatch",
    "reward_head": ".reward_head",
    "reward_head_reference": ".reward_head",
    "judge_head": ".judge_head",
    "judge_head_reference": ".judge_head",
    "JudgeHeadOutput": ".judge_head",
    "group_select": ".group_select",
    "group_select_reference": ".group_select",
    "GroupSelection": ".group_select",
    "reward_head_group_select": ".group_select",
}

__all__ = sorted(_EXPORTS)


# Functions named like the module that defines them.
_SHADOWED = frozenset({"reward_head", "judge_head", "group_select"})


class _KernelsPackage(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        # Importing submodule `reward_head` makes the import system set the package
        # attribute `reward_head` to the module; keep the function there instead.
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _KernelsPackage


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(mod, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
