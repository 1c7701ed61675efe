"""The README as a new user reads it: one way to get the `hybrid-serve` command, used throughout."""

from __future__ import annotations

import re

from tests.conftest import REPO_ROOT


def test_the_readme_says_how_to_get_the_command_and_uses_it_one_way() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert "source .venv/bin/activate" in readme
    assert not re.search(r"\.venv/bin/(hybrid-serve|modal|python)\b", readme), "one way: the activated environment"
    assert readme.index("source .venv/bin/activate") < readme.index("hybrid-serve experiments")  # before any use
