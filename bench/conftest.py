"""Fixtures for the pytest-benchmark suite in bench/ (run it on its own: `pytest bench`).

This conftest deliberately does NOT set TRITON_INTERPRET (tests/conftest.py does, on
machines without CUDA). On CPU the benchmarks therefore time the plain-torch reference
path of costtax.kernels, which is what a CPU user gets; on CUDA they time the compiled
Triton kernels. Running bench/ in the same pytest invocation as tests/, or with
TRITON_INTERPRET=1 in the environment, would time the Triton *interpreter* instead
(milliseconds per program, meaningless as a performance number); the recorded
`kernel_path` in each benchmark's extra_info says which one ran.
"""

from __future__ import annotations

import os
import platform

import pytest

# The costtax plugin (costtax_profile, costtax_engine, costtax_scorer) for the suites written with
# it. An installed costtax registers it through its pytest11 entry point under this same name, so
# this line is a no-op there and keeps `pytest bench` working from a source tree without install.
pytest_plugins = ["costtax.pytest_plugin"]


def _device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return platform.processor() or platform.machine() or "cpu"


def pytest_report_header(config):
    interp = os.environ.get("TRITON_INTERPRET")
    line = f"costtax bench: TRITON_INTERPRET={interp!r}"
    if interp == "1":
        line += " (the Triton interpreter will be timed; unset it for real numbers)"
    return line


@pytest.fixture(scope="session")
def bench_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(scope="session")
def bench_env(bench_device):
    """Fields every benchmark records in extra_info."""
    import torch

    info = {
        "device": str(bench_device),
        "device_name": _device_name(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "triton_interpret_env": os.environ.get("TRITON_INTERPRET"),
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception:
        info["triton"] = None
    return info
