"""Copy the committed 80-column terminal capture into README.md (between its markers).

    python scripts/readme_capture.py          # rewrite the block
    python scripts/readme_capture.py --check  # exit 1 when README.md differs from the capture

tests/report/test_fit.py runs the same comparison, so the README shows what was captured.
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
        raise SystemExit("README.md lacks the terminal-capture markers")
    capture = (ROOT / m.group(1)).read_text(encoding="utf-8").rstrip("\n")
    return readme[: m.end()] + "```text\n" + capture + "\n```\n" + readme[end:]


def main(argv: list[str]) -> int:
    path = ROOT / "README.md"
    old = path.read_text(encoding="utf-8")
    new = render(old)
    if "--check" in argv:
        if new != old:
            print("README.md terminal capture is out of date: run python scripts/readme_capture.py", file=sys.stderr)
            return 1
        return 0
    if new != old:
        path.write_text(new, encoding="utf-8")
        print("README.md: terminal capture updated")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
