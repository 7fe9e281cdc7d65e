"""Golden files in update mode still fail the test whose golden they rewrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.content import Content
from tests.templates import goldenfile


def test_update_mode_rewrites_a_differing_golden_and_fails_then_passes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(goldenfile, "GOLDENS", tmp_path)
    monkeypatch.setattr(goldenfile, "UPDATE", True)
    content = Content(title="t", description="<p>d</p>")
    with pytest.raises(AssertionError, match=r"golden updated: .*x\.golden, re-run"):
        goldenfile.check("x", content)  # missing
    goldenfile.check("x", content)  # the re-run compares and passes
    with pytest.raises(AssertionError, match="golden updated"):
        goldenfile.check("x", Content(title="t", description="changed"))
    assert goldenfile.load((tmp_path / "x.golden").read_text())["description"] == "changed"


def test_compare_mode_never_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(goldenfile, "GOLDENS", tmp_path)
    monkeypatch.setattr(goldenfile, "UPDATE", False)
    with pytest.raises(AssertionError, match="no golden x.golden"):
        goldenfile.check("x", Content(title="t", description="d"))
    (tmp_path / "x.golden").write_text("=== title ===\nt\n=== description ===\nold\n")
    with pytest.raises(AssertionError, match="description differs"):
        goldenfile.check("x", Content(title="t", description="d"))
    assert "old" in (tmp_path / "x.golden").read_text()
