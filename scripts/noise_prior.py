"""The reference machine's A/A noise bands that `costtax compare` uses on a machine with no
calibration of its own (costtax/compare/noise.py, source "prior"), written from committed runs.

    python scripts/noise_prior.py          # rewrite costtax/data/noise_prior.json
    python scripts/noise_prior.py --check  # exit 1 when the file differs from what the runs give

Rule (the calibration's, `costtax compare A A2 --record-noise`, bench/spread.py): per measured
metric, the largest "worse by" in either direction over every pair of identical runs in each
group below. A row where either run sat beside neighbours (foreign_cpu_share over
QUIET_SHARE) is left out: that pair did not run under identical conditions, and one such burst
would set the band for every user. QUIET_SHARE is stricter than the table's warning share
(costtax/report/table.py): two busy loops pinned to both cores doubled latency at a share the
table's old warning level did not reach (bench/results/aa-compare-cpu-quiet-2026-12-06/hog). tests/compare/test_noise_prior.py runs the --check.
"""
from __future__ import annotations

import itertools
import math
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUIET_SHARE = 0.05
OUT = ROOT / "costtax" / "data" / "noise_prior.json"
# Groups of identical runs (one command, one machine, back to back), committed under bench/results.
GROUPS: tuple[tuple[str, ...], ...] = (
    # the done-when A/A of issue 27: `--serve -t plain --load concurrency=1,4 --limit 8
    # --max-tokens 32 --ignore-eos`, four times on the quiet 2-core machine
    tuple(f"bench/results/aa-compare-cpu-quiet-2026-12-06/q{i}" for i in (1, 2, 3, 4)),
    # issue 27's bon:n=4 capacity search, three times (plain and bon:n=4 rows at every level two
    # runs probed; best-of-N's reward cohorts drift more than plain)
    tuple(f"bench/results/capacity-search-repeats-cpu-2026-12-06/s{i}" for i in (1, 2, 3)),
)


def compute(groups=GROUPS, root: Path = ROOT) -> dict:
    sys.path.insert(0, str(root))
    from costtax.compare.verdicts import CompareConfig, compare_sources, load_source, noise_bands

    bands: dict[str, float] = {}
    pairs = rows = 0
    machine: dict = {}
    versions: set[str] = set()
    sources: list[str] = []
    for group in groups:
        srcs = [load_source(str(root / g), "runs") for g in group]
        sources += list(group)
        for s in srcs:
            m = s.info.get("machine") or {}
            machine = machine or {k: m.get(k) for k in ("cpu", "cpu_count", "device")}
            if s.info.get("version"):
                versions.add(str(s.info["version"]))
        for old, new in itertools.combinations(srcs, 2):
            result = compare_sources(old, new, CompareConfig(old.path, new.path))
            busy = {k for s in (old, new) for k, v in (s.info.get("contention") or {}).items()
                    if v is not None and v > QUIET_SHARE}
            kept = tuple(r for r in result.rows if r.key not in busy)
            rows += len({r.key for r in kept})
            pairs += 1
            for k, v in noise_bands(type(result)(result.old, result.new, kept, (), (), ())).items():
                # rounded up: the band must still cover the pair that set it
                bands[k] = max(bands.get(k, 0.0), math.ceil(v * 1e4) / 1e4)
    return {
        "what": "largest 'worse by' per measured metric between identical runs, either direction "
                "(scripts/noise_prior.py; costtax/compare/noise.py, source 'prior')",
        "machine": machine,
        "costtax_versions": sorted(versions),
        "pairs": pairs,
        "rows": rows,
        "sources": sources,
        "bands": dict(sorted(bands.items())),
    }


def render(data: dict) -> str:
    return json.dumps(data, indent=1, sort_keys=False) + "\n"


def main(argv: list[str]) -> int:
    text = render(compute())
    if "--check" in argv:
        if not OUT.is_file() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT.relative_to(ROOT)} differs from what its runs give: run python scripts/noise_prior.py")
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}: " + ", ".join(f"{k} ±{v:.0%}" for k, v in json.loads(text)["bands"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
