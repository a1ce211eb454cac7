"""The README and docs/: every relative link leads to a file of the repository, and every
``#anchor`` to a heading of the page it names (as GitHub makes anchors of headings)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces -> -."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", FENCE.sub("", page.read_text()), re.M):
        text = re.sub(r"[`*_]", "", heading.strip().lower())
        found.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return found


def links(page: Path) -> list[str]:
    return [t for t in LINK.findall(FENCE.sub("", page.read_text())) if "://" not in t]


def test_the_readme_and_the_docs_exist() -> None:
    # The README sends newcomers to these pages.
    assert [p.name for p in PAGES[:1]] == ["README.md"] and len(PAGES) > 4


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        if target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    # The check itself: a missing file and a missing anchor are both reported.
    page = tmp_path / "page.md"
    page.write_text("# Title here\n[a](missing.md) [b](#nope) [c](#title-here)\n")
    assert links(page) == ["missing.md", "#nope", "#title-here"]
    assert anchors(page) == {"title-here"}
