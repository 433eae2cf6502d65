#!/usr/bin/env python3
"""Move costtax's root modules into rooms (subpackages named for their jobs), issue 29.

Re-runnable on any later main: it moves files with `git mv` (so `git log --follow` and blame
survive), rewrites every import that names a moved module — module-level and lazy, relative and
absolute, `from costtax import search` forms included — and every dotted name
(`costtax.search.p95_ci`, mock targets) and path string (`costtax/search.py`) in code, tests,
bench, scripts and docs. It changes no behaviour: run the golden tests after it.

    python scripts/move_rooms.py            # apply (refuses if costtax/run/ already exists)
    python scripts/move_rooms.py --dry-run  # print the plan

A root module that is neither in MOVES nor in KEEP stops the script with its name: decide its
room (add it to MOVES) or keep it at the root (KEEP), then run again.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Modules that stay at the root of costtax/: entry points and what every room uses.
KEEP = {
    "__init__", "__main__", "cli", "doctor", "pytest_plugin", "config", "errors", "stats",
    "provenance", "devices", "model_files", "tiny", "phases", "jsonio",
}

# old root module -> new dotted path under costtax
MOVES = {
    # run/: one profile run from config to run directory
    "profile": "run.profile",
    "startup": "run.startup",
    "unit": "run.unit",
    "rundir": "run.rundir",
    "preflight": "run.preflight",
    "baseline": "run.baseline",
    "run_events": "run.run_events",
    # load/: traffic
    "load": "load.levels",
    "search": "load.search",
    "search_units": "run.search_units",
    "oversaturation": "load.oversaturation",
    "client_lag": "load.client_lag",
    "client_workers": "run.client_workers",
    "search_interval": "load.search_interval",
    "client_gauge": "metering.client_gauge",
    "blocks": "load.blocks",
    # store/: the run directory on disk
    "records": "store.records",
    "rundata": "store.rundata",
    "schema": "store.schema",
    "rundata_build": "store.rundata_build",
    "unit_reader": "store.unit_reader",
    # compare/: verdicts between runs
    "compare": "compare.verdicts",
    "compare_table": "compare.table",
    "estimates": "compare.estimates",
    "assertions": "compare.assertions",
    "noise": "compare.noise",
    # console/: what the terminal shows
    "console": "console.display",
    "live_line": "console.live_line",
    # techniques/: what a technique sees
    "context": "techniques.context",
    "constitution": "techniques.constitution",
}

ROOM_DOCS = {
    "run": '''"""The run: `profile(config)` from a validated RunConfig to a finished run directory —
start-up (engine, run.json), one unit per (cell x load level x cell repeat), resume, preflight,
baselines copied from earlier runs, run events.

May import: the root modules, load, store, console, techniques, engines, rewards, prompts,
metering, report (the summary written as units finish). Nothing imports run except the CLI,
the pytest plugin and the package face (`from costtax import profile`)."""
''',
    "load": '''"""Traffic: load levels (batch, concurrency=C, rate=λ; parsed once into LoadLevel), the
capacity search over levels, and the over-saturation stop.

May import: the root modules only (the runner reads the units a search measured:
costtax.run.search_units). Every other room may import load."""
''',
    "store": '''"""The run directory on disk: one declaration per record (call, answer, unit, score, run),
the writer that appends them and the one reader (RunData) everything else reads runs through.

May import: the root modules, load.levels (a record carries its LoadLevel) and prompts (a run's
prompts are recovered from its config). No pandas, no torch."""
''',
    "compare": '''"""Verdicts between runs: OLD vs NEW per metric with the noise the runs can justify,
the compare table, the estimates (with CIs) they rest on, and the pytest plugin's assertions.

May import: the root modules, load, store, prompts, report (summary records, fitted tables)."""
''',
    "console": '''"""What the terminal shows while a run goes: the display of phases and units, the live
progress line.

May import: the root modules, load.levels, store.records (file names). Must not import run."""
''',
}

# Tests mirror the package: a test file moves into the room of the code it tests. Files one level
# deeper get their `Path(__file__)` arithmetic shifted by one (fix_test_paths).
TEST_MOVES = {
    "test_aa_vllm.py": "run", "test_baseline_from.py": "run", "test_preflight.py": "run",
    "test_profile_fake.py": "run", "test_reliability.py": "run", "test_resume_eval.py": "run",
    "test_run_events.py": "run", "test_e2e.py": "run",
    "test_load.py": "load", "test_oversaturation.py": "load", "test_search.py": "load",
    "test_steady_state.py": "load", "test_client_lag.py": "load", "test_client_workers.py": "run",
    "test_client_lag_standin.py": "run", "test_client_workers_split.py": "run",
    "test_search_drift.py": "load", "test_bootstrap_chunked.py": "compare", "test_blocks.py": "load",
    "test_client_gauge.py": "metering",
    "test_records.py": "store", "test_rundata.py": "store", "test_schema.py": "store",
    "test_schema_roundtrip.py": "store",
    "test_compare.py": "compare", "test_compare_levels.py": "compare", "test_compare_noise.py": "compare",
    "test_context.py": "techniques", "test_reward_length.py": "rewards",
    "test_matrix_cells.py": "run", "test_matrix_vllm.py": "run", "matrix_cells.py": "run",
    "test_sandbox.py": "sandbox", "test_sandbox_attacks.py": "sandbox",
    "test_sandbox_humaneval.py": "sandbox", "sandbox_cases.py": "sandbox",
    "test_sandbox_attacks_bwrap.py": "sandbox", "sandbox_cases_bwrap.py": "sandbox",
    "sandbox_runner.py": "sandbox", "test_sandbox_e2e.py": "sandbox",
}

TEXT_SUFFIXES = {".py", ".sh", ".md", ".toml", ".yml", ".yaml", ".txt", ".cfg", ".ini", ".json", ".args", ""}
SKIP_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", "site", "node_modules", ".benchmarks"}
# Committed run outputs record the paths of the code that wrote them: history, not code.
SKIP_UNDER = ("bench/results/", "tests/golden/", "tests/golden_runner/", "docs/site/")


def sh(*args: str) -> None:
    subprocess.run(args, cwd=ROOT, check=True)


def present_moves() -> dict[str, str]:
    root = ROOT / "costtax"
    mods = {p.stem for p in root.glob("*.py")}
    unknown = sorted(mods - KEEP - set(MOVES))
    if unknown:
        sys.exit(f"move_rooms: root modules with no room: {unknown}; add each to MOVES or KEEP in {Path(__file__).name}")
    return {old: new for old, new in MOVES.items() if old in mods}


# -- rewriting ----------------------------------------------------------------------------------
def module_of(path: Path) -> tuple[str, bool] | None:
    """(dotted module name, is_package) for a file under costtax/ or kernels/, else None."""
    rel = path.relative_to(ROOT)
    if rel.parts[0] == "costtax":
        parts = ["costtax", *rel.with_suffix("").parts[1:]]
    elif rel.parts[0] == "kernels":
        parts = ["costtax", "kernels", *rel.with_suffix("").parts[1:]]
    else:
        return None
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def new_name(mod: str, moves: dict[str, str]) -> str:
    parts = mod.split(".")
    if len(parts) >= 2 and parts[0] == "costtax" and parts[1] in moves:
        return ".".join(["costtax", *moves[parts[1]].split("."), *parts[2:]])
    return mod


def relative(from_pkg: str, target: str) -> str:
    a, b = from_pkg.split("."), target.split(".")
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    return "." * (len(a) - k + 1) + ".".join(b[k:])


FROM_RE = re.compile(r"^(?P<ind>[ \t]*)from[ \t]+(?P<mod>\.*[\w.]*)[ \t]+import[ \t]+(?P<rest>.*)$")


def rewrite_imports(text: str, old_mod: tuple[str, bool] | None, new_mod: tuple[str, bool] | None,
                    moves: dict[str, str]) -> str:
    """Rewrite `from X import ...` lines. Relative imports are resolved against the file's old
    package and re-emitted relative to its new one; `from PKG import module` names that moved are
    split onto their own lines."""
    old_pkg = None if old_mod is None else (old_mod[0] if old_mod[1] else old_mod[0].rsplit(".", 1)[0])
    new_pkg = None if new_mod is None else (new_mod[0] if new_mod[1] else new_mod[0].rsplit(".", 1)[0])
    out = []
    for line in text.split("\n"):
        m = FROM_RE.match(line)
        if not m:
            out.append(line)
            continue
        mod, rest, ind = m["mod"], m["rest"], m["ind"]
        dots = len(mod) - len(mod.lstrip("."))
        if dots:
            if old_pkg is None:
                out.append(line)
                continue
            base = old_pkg.split(".")[: len(old_pkg.split(".")) - (dots - 1)]
            absolute = ".".join(base + ([mod[dots:]] if mod[dots:] else []))
        else:
            absolute = mod
        if not absolute.startswith("costtax") or (not dots and absolute != "costtax"):
            # absolute dotted imports were rewritten with every other dotted name (rewrite_text)
            out.append(line)
            continue

        def emit(target: str, names: str) -> str:
            if dots and new_pkg is not None:
                return f"{ind}from {relative(new_pkg, target)} import {names}"
            return f"{ind}from {target} import {names}"

        # `from costtax import search, stats as M`: names that are moved modules
        simple = re.fullmatch(r"[\w ,]+?(\s*#.*)?", rest)
        names = [n.strip() for n in rest.split("#")[0].split(",")] if simple else []
        moved_names = [n for n in names if absolute == "costtax" and n.split(" as ")[0].strip() in moves]
        if moved_names:
            lines = []
            kept = [n for n in names if n and n not in moved_names]
            if kept:
                lines.append(emit(new_name(absolute, moves), ", ".join(kept)))
            for n in moved_names:
                name, _, alias = (p.strip() for p in n.partition(" as "))
                target = new_name(f"{absolute}.{name}", moves)
                parent, leaf = target.rsplit(".", 1)
                asname = alias or name
                lines.append(emit(parent, leaf if leaf == asname else f"{leaf} as {asname}"))
            comment = rest[rest.index("#"):] if "#" in rest else ""
            if comment:
                lines[0] += "  " + comment
            out.extend(lines)
            continue
        target = new_name(absolute, moves)
        if dots and new_pkg is not None:
            out.append(emit(target, rest))
        elif target != absolute:
            out.append(emit(target, rest))
        else:
            out.append(line)
    return "\n".join(out)


def dotted_and_path_re(moves: dict[str, str]) -> tuple[re.Pattern, re.Pattern]:
    names = "|".join(sorted(moves, key=len, reverse=True))
    dotted = re.compile(rf"\bcosttax\.({names})\b(?!\.py\b)")
    path = re.compile(rf"\bcosttax/({names})\.py\b")
    return dotted, path


def rewrite_text(text: str, moves: dict[str, str], test_moves: dict[str, str] | None = None) -> str:
    dotted, path = dotted_and_path_re(moves)
    text = dotted.sub(lambda m: "costtax." + moves[m[1]], text)
    text = path.sub(lambda m: "costtax/" + moves[m[1]].replace(".", "/") + ".py", text)
    if test_moves:
        names = "|".join(re.escape(n) for n in sorted(test_moves, key=len, reverse=True))
        text = re.sub(rf"\btests/({names})(?![\w.])", lambda m: f"tests/{test_moves[m[1]]}/{m[1]}", text)
    return text


def files() -> list[Path]:
    out = []
    for p in ROOT.rglob("*"):
        if not p.is_file() or any(part in SKIP_DIRS for part in p.relative_to(ROOT).parts):
            continue
        rel = p.relative_to(ROOT).as_posix()
        if rel.startswith(SKIP_UNDER) or rel == "scripts/move_rooms.py":
            continue
        if p.suffix in TEXT_SUFFIXES or p.name in ("Makefile",):
            out.append(p)
    return out


def fix_test_paths(text: str) -> str:
    """A file moved one folder down: what it found beside itself is now one level up."""
    text = re.sub(r"Path\(__file__\)(\.resolve\(\))?\.parents\[(\d+)\]",
                  lambda m: f"Path(__file__){m[1] or ''}.parents[{int(m[2]) + 1}]", text)
    text = re.sub(r"Path\(__file__\)(\.resolve\(\))?\.parent\b(?!s)",
                  lambda m: f"Path(__file__){m[1] or ''}.parents[1]", text)
    return text


def move_tests() -> None:
    tests = ROOT / "tests"
    moved = {name: room for name, room in TEST_MOVES.items() if (tests / name).exists()}
    for name, room in moved.items():
        (tests / room).mkdir(exist_ok=True)
        src = tests / name
        text = src.read_text(encoding="utf-8")
        fixed = fix_test_paths(text)
        if fixed != text:
            src.write_text(fixed, encoding="utf-8")
        sh("git", "mv", f"tests/{name}", f"tests/{room}/{name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    if (ROOT / "costtax" / "run").exists():
        sys.exit("move_rooms: costtax/run/ exists: the rooms are already in place")
    moves = present_moves()
    test_moves = {n: r for n, r in TEST_MOVES.items() if (ROOT / "tests" / n).exists()}
    for old, new in moves.items():
        print(f"costtax/{old}.py -> costtax/{new.replace('.', '/')}.py")
    if args.dry_run:
        return
    # 1. rewrite every file's text in place (old locations), resolving relative imports against
    #    each file's current package and its package after the move
    for p in files():
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        old = module_of(p) if p.suffix == ".py" else None
        new = None
        if old is not None:
            new = (new_name(old[0], moves), old[1])
        fixed = rewrite_text(text, moves, test_moves)
        if p.suffix == ".py":
            fixed = rewrite_imports(fixed, old, new, moves)
        if fixed != text:
            p.write_text(fixed, encoding="utf-8")
    # 2. rooms with their faces, then the moves themselves
    rooms = sorted({new.split(".")[0] for new in moves.values()})
    for room in rooms:
        d = ROOT / "costtax" / room
        d.mkdir(exist_ok=True)
        init = d / "__init__.py"
        if not init.exists() and not (ROOT / "costtax" / f"{room}.py").exists():
            init.write_text(ROOM_DOCS.get(room, f'"""{room}."""\n'), encoding="utf-8")
    for old, new in moves.items():
        dst = ROOT / "costtax" / (new.replace(".", "/") + ".py")
        src = ROOT / "costtax" / f"{old}.py"
        text = src.read_text(encoding="utf-8")
        if fix_test_paths(text) != text:  # a module one level deeper finds its data one level up
            src.write_text(fix_test_paths(text), encoding="utf-8")
        sh("git", "mv", f"costtax/{old}.py", str(dst.relative_to(ROOT)))
    for room in rooms:
        init = ROOT / "costtax" / room / "__init__.py"
        if not init.exists():
            init.write_text(ROOM_DOCS.get(room, f'"""{room}."""\n'), encoding="utf-8")
        sh("git", "add", str(init.relative_to(ROOT)))
    move_tests()
    # 3. pyproject's explicit package list gains every room
    pp = ROOT / "pyproject.toml"
    text = pp.read_text(encoding="utf-8")
    for room in rooms:
        entry = f'    "costtax.{room}",\n'
        if entry not in text:
            text = text.replace('    "costtax.engines",\n', entry + '    "costtax.engines",\n', 1)
    pp.write_text(text, encoding="utf-8")
    print("move_rooms: done; run the tests (golden ones first)")


if __name__ == "__main__":
    main()
