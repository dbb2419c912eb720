"""The README says what the code registers."""

from pathlib import Path

from strategies.registry import strategy_table

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_strategy_table_is_the_registrations():
    """Regenerate it with ``python -c "from strategies.registry import strategy_table as t;
    print(t())"`` after changing a registration."""
    assert strategy_table() in README.read_text()
