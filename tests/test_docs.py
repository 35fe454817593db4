"""The documentation holds together: every relative link of the README and docs/ reaches a file
(and, with a #fragment, a heading of it), the README stays a user's page (at most 300 lines),
and no docstring cites the method outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 300
#: ``[text](target)`` and ``![alt](target)``, outside code blocks and spans.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _unfenced(text: str) -> str:
    """The text without fenced code blocks (a ``#`` there is no heading)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code (links there are not links)."""
    return re.sub(r"`[^`\n]*`", "", _unfenced(text))


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown page: lower case, punctuation dropped, spaces to
    hyphens, a repeated heading numbered -1, -2, ..."""
    seen: dict[str, int] = {}
    found = set()
    for line in _unfenced(page.read_text(encoding="utf-8")).splitlines():
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).replace("`", "").lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(_prose(page.read_text(encoding="utf-8")))
            if not re.match(r"[a-z][a-z0-9+.-]*:", t)]  # http:, https:, mailto: are not checked here


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def broken_links(page: Path) -> list[str]:
    """Each relative link of ``page`` whose file, or heading, does not exist."""
    broken = []
    for target in relative_links(page):
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no file {_shown(file)})")
        elif fragment and file.suffix == ".md" and fragment not in anchors(file):
            broken.append(f"{target} (no heading #{fragment} in {_shown(file)})")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_relative_links_resolve(page: Path) -> None:
    assert broken_links(page) == []


def test_the_checker_finds_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other page\n\n## A section, with `code`\n", encoding="utf-8")
    page.write_text("[ok](other.md#a-section-with-code) [gone](missing.md) [bad](other.md#nowhere)\n"
                    "[web](https://example.com) `[code](missing.md)`\n", encoding="utf-8")
    assert [b.split()[0] for b in broken_links(page)] == ["missing.md", "other.md#nowhere"]


def test_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move depth into docs/"


def test_readme_shows_a_picture_that_exists() -> None:
    images = [t for t in relative_links(ROOT / "README.md") if t.endswith(".png")]
    assert images and all((ROOT / t).is_file() for t in images)


def test_docstrings_cite_the_method_in_the_repository() -> None:
    assert (ROOT / "docs" / "METHOD.md").is_file()
    outside = [f"{path.relative_to(ROOT)}:{number}"
               for folder in ("activeit", "experiment", "pipelines", "steps", "tracking", "benchmarks")
               for path in sorted((ROOT / folder).rglob("*.py"))
               for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
               if re.search(r"(?<!docs/)METHOD\.md", line)]
    assert outside == []
