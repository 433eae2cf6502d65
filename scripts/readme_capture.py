"""Copy the committed 80-column terminal capture into README.md and docs/getting-started.md
(between their markers).

    python scripts/readme_capture.py          # rewrite the block
    python scripts/readme_capture.py --check  # exit 1 when a page differs from the capture

tests/report/test_fit.py runs the same comparison, so the pages show what was captured.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN = re.compile(r"<!-- terminal-capture: (\S+) \(scripts/readme_capture.py\) -->\n")
END = "<!-- /terminal-capture -->"


def render(readme: str) -> str:
    m = BEGIN.search(readme)
    end = readme.find(END, m.end()) if m else -1
    if not m or end < 0:
        raise SystemExit("the page lacks the terminal-capture markers")
    capture = (ROOT / m.group(1)).read_text(encoding="utf-8").rstrip("\n")
    return readme[: m.end()] + "```text\n" + capture + "\n```\n" + readme[end:]


if __name__ == "__main__":
    import readme_block

    sys.exit(readme_block.main(render, "terminal capture", "scripts/readme_capture.py", sys.argv[1:], marker="<!-- terminal-capture: "))
