"""The page tests' browser rule: skip without Chromium on a laptop, fail under SBIR_REQUIRE_BROWSER=1 (CI)."""

from __future__ import annotations

import pytest

from tests.app import support


def test_a_missing_chromium_skips_the_page_tests_by_default(monkeypatch, tmp_path):
    monkeypatch.setattr(support, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.delenv(support.REQUIRE_BROWSER, raising=False)
    with pytest.raises(pytest.skip.Exception, match="chromium is not installed"):
        support.require_browser()


def test_a_missing_chromium_fails_the_page_tests_when_ci_requires_the_browser(monkeypatch, tmp_path):
    monkeypatch.setattr(support, "CHROMIUM", tmp_path / "no-chromium")
    monkeypatch.setenv(support.REQUIRE_BROWSER, "1")
    with pytest.raises(pytest.fail.Exception, match="SBIR_REQUIRE_BROWSER=1 forbids skipping"):
        support.require_browser()

