"""The README and docs/ say what the code registers, and their links lead somewhere."""

import re
from pathlib import Path

from strategies.registry import strategy_table

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_the_strategy_table_is_the_registrations():
    """Regenerate it with ``python -c "from strategies.registry import strategy_table as t;
    print(t())"`` after changing a registration."""
    assert strategy_table() in (ROOT / "docs" / "strategies.md").read_text()


def test_every_relative_link_and_anchor_resolves():
    for page in PAGES:
        text = page.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.exists(), f"{page.name}: {target}"
            if anchor and linked.suffix == ".md":
                assert anchor in {slug(h) for h in re.findall(r"^#+ (.+)$",
                                                              linked.read_text(), re.M)}, \
                    f"{page.name}: {target}"


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
