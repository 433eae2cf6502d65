#!/usr/bin/env python3
"""Regroup docs/layout.md by room: the page's own one-line descriptions of each module are kept,
grouped under their room with the room's `__init__.py` docstring (what lives there, what it may
import) written in from the code. tests/test_layout.py checks that every module is listed once.

    python scripts/layout_doc.py   # rewrite docs/layout.md in place (a new module: add its line first)
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "layout.md"
ENTRY = re.compile(r"^- `((?:costtax|kernels)/[\w/]+\.py)`: (.+)$")
ORDER = ["costtax/", "costtax/run/", "costtax/load/", "costtax/store/", "costtax/compare/", "costtax/console/",
         "costtax/techniques/", "costtax/engines/", "costtax/rewards/", "costtax/prompts/", "costtax/metering/",
         "costtax/report/", "costtax/sandbox/", "kernels/"]
INTRO = """# Layout

costtax is built of rooms, one subpackage per stage of a profile run, and a few root modules
that every room uses (config, errors, stats, provenance, devices, model files, phases, JSON on
disk) or that users start from (the CLI, `doctor`, the pytest plugin, `costtax.profile`). Rooms
import each other one way only (`tests/test_imports.py` checks it, package faces counted):
cli → run → techniques → engines / rewards → kernels; store, load and metering sit low; report,
compare and the plugin read runs only through store. Each room's `__init__.py` says what lives
there and what it may import.

Every module, one line each (`tests/test_layout.py` checks the list against the tree):
"""


def room_of(path: str) -> str:
    parts = path.split("/")
    if parts[0] == "kernels":
        return "kernels/"
    return "costtax/" if len(parts) == 2 else f"costtax/{parts[1]}/"


def room_doc(room: str) -> str | None:
    if room in ("costtax/", "kernels/"):
        return None
    doc = ast.get_docstring(ast.parse((ROOT / room / "__init__.py").read_text(encoding="utf-8"))) or ""
    return " ".join(doc.split()) or None


def render(text: str) -> str:
    entries = {m.group(1): m.group(2) for line in text.splitlines() if (m := ENTRY.match(line))}
    rooms: dict[str, list[str]] = {}
    for path in entries:
        rooms.setdefault(room_of(path), []).append(path)
    unknown = set(rooms) - set(ORDER)
    if unknown:
        raise SystemExit(f"layout_doc: rooms not in ORDER: {sorted(unknown)}")
    out = [INTRO]
    for room in (r for r in ORDER if r in rooms):
        out.append(f"## `{room}`")
        doc = room_doc(room)
        if doc:
            out.append(doc)
        out.append("")
        for path in sorted(rooms[room], key=lambda p: (not p.endswith("__init__.py"), p)):
            out.append(f"- `{path}`: {entries[path]}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    PAGE.write_text(render(PAGE.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"{PAGE.relative_to(ROOT)}: regrouped by room")
