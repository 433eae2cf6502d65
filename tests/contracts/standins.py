"""The stand-in servers the contract suites share with the suites that built them, loaded by
file path (tests/ is not a package: `import rewards...` could resolve to an installed package)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent


def load_test_module(rel: str):
    """The module at tests/<rel>, imported once under a private name."""
    name = "_contract_" + rel.replace("/", "_").removesuffix(".py")
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, TESTS / rel)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
