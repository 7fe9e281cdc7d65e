"""Payload goldens in update mode still fail the test whose golden they rewrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.actions import support


def test_update_mode_rewrites_a_differing_golden_and_fails_then_passes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(support, "GOLDENS", tmp_path)
    monkeypatch.setenv("HERALD_UPDATE_GOLDENS", "1")
    with pytest.raises(AssertionError, match=r"golden updated: .*p\.json, re-run"):
        support.assert_golden("p", {"a": 1})  # missing
    support.assert_golden("p", {"a": 1})  # the re-run compares and passes
    with pytest.raises(AssertionError, match="golden updated"):
        support.assert_golden("p", {"a": 2})
    assert json.loads((tmp_path / "p.json").read_text()) == {"a": 2}


def test_compare_mode_never_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(support, "GOLDENS", tmp_path)
    monkeypatch.delenv("HERALD_UPDATE_GOLDENS", raising=False)
    with pytest.raises(AssertionError, match="is missing"):
        support.assert_golden("p", {"a": 1})
    (tmp_path / "p.json").write_text('{"a": 0}\n')
    with pytest.raises(AssertionError, match="differs from golden"):
        support.assert_golden("p", {"a": 1})
    assert json.loads((tmp_path / "p.json").read_text()) == {"a": 0}
