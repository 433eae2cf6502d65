"""Run-to-run spread of two pytest-benchmark JSON files of the same code on the same machine, per
`costtax compare` limit: the largest "worse by" either direction (A vs B and B vs A), which is what
an identical rerun can show without any regression. Thresholds in bench/baselines/thresholds.args
are chosen above these.

    python bench/spread.py RUN_A.json RUN_B.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def spread(a_path: str, b_path: str) -> dict[str, list[tuple[float, str, str]]]:
    from costtax.compare.verdicts import METRICS, benchmark_estimates, worse_by

    a = benchmark_estimates(json.loads(Path(a_path).read_text()))
    b = benchmark_estimates(json.loads(Path(b_path).read_text()))
    out: dict[str, list[tuple[float, str, str]]] = {}
    for key in a.keys() & b.keys():
        for m in METRICS:
            ea, eb = a[key].get(m.name), b[key].get(m.name)
            if ea is None or eb is None or ea.value is None or eb.value is None or m.limit is None:
                continue
            changes = [c for c in (worse_by(m, ea.value, eb.value), worse_by(m, eb.value, ea.value)) if c is not None]
            if changes:
                out.setdefault(m.limit, []).append((max(changes), key, m.name))
    return {k: sorted(v, reverse=True) for k, v in out.items()}


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        sys.exit(__doc__)
    for kind, rows in sorted(spread(*argv).items()):
        worst = rows[0]
        print(f"{kind:9s} max worse-by {worst[0]:+.3f} ({worst[2]} of {worst[1]}); next: "
              + ", ".join(f"{c:+.3f} {m} {k.split('::')[-1]}" for c, k, m in rows[1:4]))


if __name__ == "__main__":
    main(sys.argv[1:])
