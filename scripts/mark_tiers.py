#!/usr/bin/env python3
"""Give every test file under tests/ a tier marker (issue 29): `unit`, `integration` or `slow`.

    python scripts/mark_tiers.py            # add a module-level tier to files that have none
    python scripts/mark_tiers.py --check    # list files without one (exit 1 if any)

The tier is decided from what the file does, never from how long it happened to take:
- slow        : already marked slow at module level (vLLM, the embedded model, end-to-end CLI);
- integration : builds or loads a model (torch, tiny models), runs Triton (interpreter on CPU),
                spawns processes or servers (subprocess, sandbox, stand-in HTTP servers, pytester);
- unit        : everything else — pure Python over fakes.
A single test inside a file can still carry `@pytest.mark.slow` (vLLM): tests/conftest.py takes
the slowest tier marker a test has as its tier. A test with no tier marker at all is a collection
error (tests/conftest.py), so a new file must choose.
"""
from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIERS = ("unit", "integration", "slow")
INTEGRATION = re.compile(
    r"^\s*(import torch|from torch|import triton|from costtax\.kernels|from costtax import kernels)"
    r"|subprocess|Popen|pytester|multiprocessing|ThreadingHTTPServer|HTTPServer|uvicorn"
    r"|sandbox|make_tiny|tiny_llama_dir|tiny_classifier_dir|hf_engine|build_tiny|costtax\.tiny|TRITON_INTERPRET|setpriv|unshare",
    re.M,
)
MARK = re.compile(r"^pytestmark\s*=\s*(?P<value>.+)$", re.M)


def tier_of(text: str) -> str | None:
    m = MARK.search(text)
    if m and any(f"mark.{t}" in m["value"] for t in TIERS):
        return next(t for t in reversed(TIERS) if f"mark.{t}" in m["value"])
    return None


def decide(text: str) -> str:
    return "integration" if INTEGRATION.search(text) else "unit"


def insert(text: str, tier: str) -> str:
    mark = f"pytest.mark.{tier}"
    m = MARK.search(text)
    if m:  # an existing module mark (filterwarnings, vllm): keep it beside the tier
        value = m["value"].strip()
        inner = value[1:-1].strip().rstrip(",") if value.startswith("[") else value
        return text[: m.start()] + f"pytestmark = [{mark}, {inner}]" + text[m.end():]
    tree = ast.parse(text)
    last = 0
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            last = node.end_lineno
        elif isinstance(node, ast.Expr) and isinstance(getattr(node, "value", None), ast.Constant) and last == 0:
            last = node.end_lineno  # the module docstring
        elif last:
            break
    lines = text.split("\n")
    has_pytest = any(isinstance(n, ast.Import) and any(a.name == "pytest" for a in n.names) for n in tree.body)
    block = ([] if has_pytest else ["import pytest"]) + ["", f"pytestmark = {mark}"]
    return "\n".join(lines[:last] + block + lines[last:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    missing = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        text = path.read_text(encoding="utf-8")
        if tier_of(text):
            continue
        missing.append(path)
        if not args.check:
            tier = decide(text)
            path.write_text(insert(text, tier), encoding="utf-8")
            print(f"{tier:12} {path.relative_to(ROOT)}")
    if args.check and missing:
        print("\n".join(f"no tier: {p.relative_to(ROOT)}" for p in missing))
        sys.exit(1)


if __name__ == "__main__":
    main()
