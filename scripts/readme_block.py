"""The one way a generator script rewrites its block of README.md or a docs/ page (or checks it
with --check).

    sys.exit(readme_block.main(render, "column reference", "scripts/columns_doc.py", sys.argv[1:],
                               marker=README_BEGIN))

`render(text) -> text` replaces the script's block; it is applied to every page that holds
`marker` (README.md and docs/*.md; without `marker`, README.md alone). `--check` exits 1 when a
page is out of date instead of writing it, and 1 when no page holds the marker.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]


def pages() -> list[Path]:
    """README.md and every docs page: the files generated blocks may live in."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def pages_with(marker: str) -> list[Path]:
    return [p for p in pages() if marker in p.read_text(encoding="utf-8")]


def main(render: Callable[[str], str], what: str, script: str, argv: list[str], marker: str | None = None) -> int:
    paths = pages_with(marker) if marker else [ROOT / "README.md"]
    if not paths:
        print(f"no page holds the {what} markers ({marker})", file=sys.stderr)
        return 1
    stale = []
    for path in paths:
        old = path.read_text(encoding="utf-8")
        new = render(old)
        if new == old:
            continue
        stale.append(path)
        if "--check" not in argv:
            path.write_text(new, encoding="utf-8")
            print(f"{path.relative_to(ROOT)}: {what} updated")
    if "--check" in argv and stale:
        names = ", ".join(str(p.relative_to(ROOT)) for p in stale)
        print(f"{names}: {what} is out of date: run python {script}", file=sys.stderr)
        return 1
    return 0


def replace_block(text: str, begin: str, end: str, body: str) -> str:
    """`text` with what lies between the markers `begin` and `end` replaced by `body` (the
    markers kept, each on its own line); a page without both markers is an error."""
    head, sep, rest = text.partition(begin)
    _, sep2, tail = rest.partition(end)
    if not sep or not sep2:
        raise SystemExit(f"the page lacks the markers {begin} ... {end}")
    return head + begin + "\n" + body + end + tail
