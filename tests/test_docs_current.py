"""Generated documentation stays in step with the code."""

from __future__ import annotations

from app.devtools.docs_gen import actions_table_markdown
from tests.harness import ROOT


def test_actions_table_in_docs_is_generated_from_the_models() -> None:
    assert (ROOT / "docs" / "actions.md").read_text() == actions_table_markdown()
