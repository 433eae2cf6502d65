"""Longest time the screen stood still during a captured command (bench/terminal_capture.sh).

    python bench/terminal_frames.py OUT.frames

Reads the pane snapshots (NNNNNN.txt, taken every ~0.5 s, with their times in NNNNNN.t) and
prints the longest stretch over which the pane did not change, with the text at its bottom.
Issue 20: no phase of a run may leave the screen unchanged for more than ~2 s."""
from __future__ import annotations

import sys
from pathlib import Path


def still_stretches(frames_dir: Path) -> list[tuple[float, str]]:
    snaps = sorted(frames_dir.glob("*.txt"))
    out: list[tuple[float, str]] = []
    start_t, prev = None, None
    for f in snaps:
        t = float(f.with_suffix(".t").read_text())
        text = f.read_text(encoding="utf-8")
        if prev is None or text != prev:
            if prev is not None:
                out.append((t - start_t, [x for x in prev.splitlines() if x.strip()][-1:][0] if prev.strip() else ""))
            start_t, prev = t, text
    return out


def main(argv: list[str]) -> int:
    d = Path(argv[0])
    stretches = still_stretches(d)
    if not stretches:
        print(f"{d}: no change recorded")
        return 1
    longest = max(stretches)
    n = len(sorted(d.glob("*.txt")))
    print(f"{d}: {n} snapshots; longest still screen {longest[0]:.1f} s, ending at: {longest[1]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
