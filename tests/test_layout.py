"""docs/layout.md (the "Layout" page, once a README section) lists every module of costtax/ and kernels/ once, with a line that
says what it does, and lists nothing that is not there."""
from __future__ import annotations

import re
from pathlib import Path
import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
ENTRY = re.compile(r"^- `((?:costtax|kernels)/[\w/]+\.py)`: (.+)$")


def _modules() -> set[str]:
    return {
        p.relative_to(ROOT).as_posix()
        for base in ("costtax", "kernels")
        for p in (ROOT / base).rglob("*.py")
        if "__pycache__" not in p.parts
    }


def layout_problems(section: str, modules: set[str]) -> list[str]:
    listed = [(m.group(1), m.group(2)) for line in section.splitlines() if (m := ENTRY.match(line))]
    paths = [p for p, _ in listed]
    out = []
    dupes = sorted({p for p in paths if paths.count(p) > 1})
    if dupes:
        out.append(f"listed twice: {dupes}")
    if missing := sorted(modules - set(paths)):
        out.append(f"not listed (add one line each): {missing}")
    if gone := sorted(set(paths) - modules):
        out.append(f"listed but not in the tree: {gone}")
    if short := [p for p, what in listed if len(what.split()) < 2]:
        out.append(f"say in a few words what these do: {short}")
    return out


def test_readme_layout_matches_the_tree():
    section = (ROOT / "docs" / "layout.md").read_text(encoding="utf-8")
    assert layout_problems(section, _modules()) == []


def test_the_check_finds_missing_extra_duplicate_and_empty_lines():
    mods = {"costtax/a.py", "costtax/b.py", "kernels/c.py"}
    section = "- `costtax/a.py`: does a\n- `costtax/a.py`: does a again\n- `costtax/gone.py`: was here\n- `kernels/c.py`: c\n"
    problems = layout_problems(section, mods)
    assert problems == [
        "listed twice: ['costtax/a.py']",
        "not listed (add one line each): ['costtax/b.py']",
        "listed but not in the tree: ['costtax/gone.py']",
        "say in a few words what these do: ['kernels/c.py']",
    ]


def _declared_packages() -> set[str]:
    import tomllib

    return set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])


def _tree_packages() -> set[str]:
    """Every folder of costtax/ that holds Python or package data, as a dotted name, plus the
    kernels/ folder installed as costtax.kernels."""
    found = {"costtax.kernels"}
    for d in [ROOT / "costtax", *(p for p in (ROOT / "costtax").rglob("*") if p.is_dir())]:
        if "__pycache__" in d.parts or not any(f.is_file() for f in d.iterdir()):
            continue
        found.add(".".join(d.relative_to(ROOT).parts))
    return found


def test_pyproject_lists_every_room():
    """pyproject's `packages` is an explicit list: an editable install finds a new room anyway,
    a wheel would silently leave it out."""
    assert _declared_packages() == _tree_packages()
