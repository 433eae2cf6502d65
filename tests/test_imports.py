"""The package's import graph (module-level and lazy imports alike) has no cycle: a reader can
read costtax bottom-up. Imports under `if TYPE_CHECKING:` do not run and are not counted.

Importing `costtax.report.table` runs `costtax/report/__init__.py` first: the edge to that face is
counted too, so a face that re-exports its room cannot hide a cycle. Not counted: the faces the
importer sits in itself (already running when it runs) and the top-level `costtax` face (the
public API, `from costtax import RunConfig, profile`, which nothing inside the package imports)."""
from __future__ import annotations

import ast
from pathlib import Path
import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]


def _modules() -> dict[str, Path]:
    mods = {}
    for base, prefix in ((ROOT / "costtax", "costtax"), (ROOT / "kernels", "costtax.kernels")):
        for path in base.rglob("*.py"):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join([prefix, *parts])] = path
    return mods


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for c in child.orelse:
                    visit(c)
                continue
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                for alias in child.names:  # `from . import metrics` names a module
                    sub = f"{target}.{alias.name}"
                    out.add(sub if sub in mods else target)
            elif isinstance(child, ast.Import):
                out.update(a.name for a in child.names)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    own = {*_faces(name), name}
    found = {m for m in out if m in mods and m != name}
    faces = {f for m in found for f in _faces(m) if f in mods and f not in own and f != "costtax"}
    return found | faces


def _faces(module: str) -> list[str]:
    """The packages whose __init__ runs before `module`: costtax.report.table -> [costtax, costtax.report]."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = dfs(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = dfs(n)
            if found:
                return found
    return None


def test_import_graph_has_no_cycle():
    mods = _modules()
    graph = {name: _imports(name, path, mods) for name, path in mods.items()}
    assert "costtax.rewards.judge" in graph["costtax.rewards"]  # the factory's lazy import is seen
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_a_face_that_re_exports_its_room_is_an_edge(tmp_path):
    """costtax.a.x imports costtax.b.y; costtax/b/__init__ re-exports costtax.b.z, which imports
    costtax.a.x: a cycle only through the face, which the graph must see."""
    pkg = tmp_path / "costtax"
    for rel, text in {"__init__.py": "", "a/__init__.py": "", "a/x.py": "from ..b.y import f\n",
                      "b/__init__.py": "from .z import g\n", "b/y.py": "def f(): pass\n",
                      "b/z.py": "from ..a.x import f as g\n"}.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    mods = {"costtax": pkg / "__init__.py", "costtax.a": pkg / "a/__init__.py", "costtax.a.x": pkg / "a/x.py",
            "costtax.b": pkg / "b/__init__.py", "costtax.b.y": pkg / "b/y.py", "costtax.b.z": pkg / "b/z.py"}
    graph = {name: _imports(name, path, mods) for name, path in mods.items()}
    assert "costtax.b" in graph["costtax.a.x"]
    assert _cycle(graph) is not None


def test_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _room(module: str) -> str:
    """A module's room: its subpackage of costtax (costtax.load.search -> load); a root module
    is a room of its own (costtax.stats -> stats); the kernels are one room."""
    parts = module.split(".")
    if len(parts) == 1:
        return "costtax"
    if len(parts) == 2 and (ROOT / "costtax" / f"{parts[1]}.py").exists():
        return parts[1]
    return parts[1]


def room_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    rooms: dict[str, set[str]] = {}
    for name, targets in graph.items():
        rooms.setdefault(_room(name), set()).update(_room(t) for t in targets if _room(t) != _room(name))
    for targets in list(rooms.values()):
        for t in targets:
            rooms.setdefault(t, set())
    return rooms


def test_rooms_import_each_other_one_way():
    """No upward import between rooms: if room A imports room B, nothing in B imports A (directly
    or through other rooms). Module-level acyclicity alone would let two rooms lean on each other."""
    mods = _modules()
    rooms = room_graph({name: _imports(name, path, mods) for name, path in mods.items()})
    assert {"run", "load", "store", "compare", "console"} <= set(rooms)
    assert "store" in rooms["run"] and "run" not in rooms["store"]
    cycle = _cycle(rooms)
    assert cycle is None, "rooms import each other: " + " -> ".join(cycle)


def test_room_cycle_is_found_across_modules():
    graph = {"costtax.a.x": {"costtax.b.y"}, "costtax.b.y": set(), "costtax.b.z": {"costtax.a.w"}, "costtax.a.w": set()}
    assert _cycle(room_graph(graph)) is not None  # no module cycle, but rooms a and b lean on each other
