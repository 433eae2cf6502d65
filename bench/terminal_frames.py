"""Longest time the screen stood still during a captured command (bench/terminal_capture.sh).

    python bench/terminal_frames.py OUT.frames

Reads the pane snapshots (NNNNNN.txt, taken every ~0.5 s, with their times in NNNNNN.t) and
prints the longest stretch over which the pane did not change, with the text at its bottom.
Issue 20: no phase of a run may leave the screen unchanged for more than ~2 s."""
from __future__ import annotations

import sys
from pathlib import Path

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def still_stretches(frames_dir: Path) -> list[tuple[float, str, bool]]:
    """(seconds the pane stood still, its last non-blank line, whether costtax had printed yet)."""
    snaps = sorted(frames_dir.glob("*.txt"))
    out: list[tuple[float, str, bool]] = []
    start_t, prev, started = None, None, False
    for f in snaps:
        t = float(f.with_suffix(".t").read_text())
        text = f.read_text(encoding="utf-8")
        if prev is None or text != prev:
            if prev is not None:
                lines = [x for x in prev.splitlines() if x.strip()]
                out.append((t - start_t, lines[-1] if lines else "", started))
            # costtax's own first line (not the shell echoing the command before `clear` ran)
            started = started or any(x.startswith(("costtax: ", "✓ ")) or (x[:1] != "" and x[0] in SPINNER) for x in text.splitlines())
            start_t, prev = t, text
    return out


def main(argv: list[str]) -> int:
    d = Path(argv[0])
    stretches = still_stretches(d)
    if not stretches:
        print(f"{d}: no change recorded")
        return 1
    n = len(sorted(d.glob("*.txt")))
    top = sorted(stretches, reverse=True)[:3]
    print(f"{d}: {n} snapshots; longest still screens: " + "; ".join(f"{s:.1f} s at {t!r}" for s, t, _ in top))
    after = [s for s, _, started in stretches if started]
    if after:
        print(f"  once costtax had printed its first line: longest {max(after):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
