"""The README and docs/ say what the code registers, and their links lead somewhere."""

import re
from pathlib import Path

from benchmarks.suitefile import load_suite
from strategies.registry import strategy_table

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README = (ROOT / "README.md").read_text()


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


def test_the_quick_start_block_opens_with_make_smoke_and_its_time():
    block = re.search(r"## Quick start\n\n```bash\n(.*?)```", README, re.S).group(1)
    assert re.match(r"make smoke +#.*: \d+ s", block), block


def test_the_readme_says_what_the_default_suite_fixes():
    """Its line on `--suite default` names configs/default.yaml's streams, backbone, seeds and
    budget, so the two cannot drift apart."""
    line = re.search(r"^- \*\*`--suite default`\*\*(.*?)^- ", README, re.S | re.M).group(1)
    line = " ".join(line.split())
    suite = load_suite("default")
    assert suite["strategies"] == "all" and "every strategy" in line
    for name in [*suite["stream"], suite["backbone"]]:
        assert f"`{name}`" in line, name
    assert suite["seeds"] == [0] and "seed 0," in line
    assert (f"{suite['steps_per_task']} optimizer steps of batch {suite['batch_size']} per task"
            in line)
    assert f"base pre-trained {suite['base_epochs']} epochs" in line
