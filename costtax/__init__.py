"""costtax: profile what inference-time alignment costs and what it buys."""
from __future__ import annotations

import importlib.util as _ilu
import sys as _sys
from pathlib import Path as _Path


def _source_tree_kernels() -> None:
    """Run from a source tree without the build's package mapping (PYTHONPATH=., a bare GPU image,
    an older setuptools editable install), `costtax.kernels` is not on any path: it lives in the
    top-level kernels/ folder. Register that folder as the package then; installed builds map it
    themselves and this does nothing."""
    if "costtax.kernels" in _sys.modules:
        return
    here = _Path(__file__).resolve().parent
    if (here / "kernels").exists():
        return
    src = here.parent / "kernels" / "__init__.py"
    try:
        found = _ilu.find_spec("costtax.kernels")
    except (ImportError, ValueError):
        found = None
    # An editable install of *another* checkout (a shared venv, a git worktree) maps
    # costtax.kernels to that checkout's kernels/; this costtax/ must get its own sibling.
    if found is not None and not (
        src.is_file() and found.origin and _Path(found.origin).resolve() != src.resolve()
    ):
        return
    if src.is_file():
        spec = _ilu.spec_from_file_location("costtax.kernels", src, submodule_search_locations=[str(src.parent)])
        if spec and spec.loader:
            module = _ilu.module_from_spec(spec)
            _sys.modules["costtax.kernels"] = module
            globals()["kernels"] = module
            spec.loader.exec_module(module)


_source_tree_kernels()

from .config import RunConfig  # noqa: E402
from .run.profile import RunResult, profile  # noqa: E402

__all__ = ["RunConfig", "RunResult", "profile"]
__version__ = "0.1.0"
