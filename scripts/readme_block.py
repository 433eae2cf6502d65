"""The one way a generator script rewrites its block of README.md (or checks it with --check).

    sys.exit(readme_block.main(render, "column reference", "scripts/columns_doc.py", sys.argv[1:]))

`render(readme_text) -> readme_text` replaces the script's block; `--check` exits 1 when README.md
is out of date instead of writing it.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]


def main(render: Callable[[str], str], what: str, script: str, argv: list[str]) -> int:
    path = ROOT / "README.md"
    old = path.read_text(encoding="utf-8")
    new = render(old)
    if "--check" in argv:
        if new != old:
            print(f"README.md {what} is out of date: run python {script}", file=sys.stderr)
            return 1
        return 0
    if new != old:
        path.write_text(new, encoding="utf-8")
        print(f"README.md: {what} updated")
    return 0
