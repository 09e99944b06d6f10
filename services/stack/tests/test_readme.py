"""The README's environment table is the user documentation: it must not fall behind."""

from pathlib import Path

from heron_stack.settings import StackSettings

README = Path(__file__).parents[1] / "README.md"


def test_readme_lists_every_setting() -> None:
    table = README.read_text()

    missing = [
        f"HERON_{name.upper()}"
        for name in StackSettings.model_fields
        if f"| `HERON_{name.upper()}` |" not in table
    ]

    assert missing == []
