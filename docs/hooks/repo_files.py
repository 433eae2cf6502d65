"""mkdocs hook: links from a docs page to a repository file outside docs/ (a results table, a
plot under bench/results/) are written as relative paths, `../bench/results/x.png`, so they work
when the page is read on the repository host too. For the site, this hook copies each such file
into the build at its repository path and rewrites the link to it; a link to a file that is not
in the repository is left as written, so `mkdocs build --strict` fails on it.
Linked .md files are copied as they are (text), not rendered as pages."""
from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
LINK = re.compile(r"\]\(\.\./([^)#\s]+)(#[^)\s]*)?\)")


class RepoFile(File):
    """A repository file copied into the site as it is."""

    def is_documentation_page(self) -> bool:
        return False


def repo_targets() -> set[str]:
    """Repository paths (outside docs/) that the docs pages link to."""
    return {m.group(1) for page in DOCS.glob("*.md") for m in LINK.finditer(page.read_text(encoding="utf-8"))}


def on_files(files, config):
    for rel in sorted(repo_targets()):
        if (ROOT / rel).is_file():
            files.append(RepoFile(rel, str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files


def on_page_markdown(markdown, page, config, files):
    def local(m: re.Match) -> str:
        return f"]({m.group(1)}{m.group(2) or ''})" if (ROOT / m.group(1)).is_file() else m.group(0)

    return LINK.sub(local, markdown)
