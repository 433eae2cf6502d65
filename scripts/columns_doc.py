"""Regenerate docs/columns.md's summary.csv column reference from costtax/report/columns.py.

    python scripts/columns_doc.py          # rewrite the section between the markers
    python scripts/columns_doc.py --check  # exit 1 when the page is out of date

test_report.py runs the same comparison, so a column added without this step fails CI.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from costtax.report.columns import README_BEGIN, README_END, markdown  # noqa: E402


def render(readme: str) -> str:
    from readme_block import replace_block

    return replace_block(readme, README_BEGIN, README_END, markdown())


if __name__ == "__main__":
    import readme_block

    sys.exit(readme_block.main(render, "column reference", "scripts/columns_doc.py", sys.argv[1:], marker=README_BEGIN))
