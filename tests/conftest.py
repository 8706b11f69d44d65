from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import small_suite as _small_suite
from late_imports import LATE

# The native registry's coefficients: the built-in ones, never a calibration
# file the machine running the tests may have written (`tokdiag calibrate`).
os.environ["TOKDIAG_CALIBRATION"] = "none"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files of ``LATE`` after all others, in its order (tests/late_imports.py says why)."""
    rank = {name: n for n, name in enumerate(LATE, start=1)}
    items.sort(key=lambda item: rank.get(item.path.name, 0))  # stable: within a file, and among the rest


@pytest.fixture(autouse=True)
def _collect_between_tests():
    yield
    gc.collect()


CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (Debian's) through Playwright, for the tests that open the exported pages."""
    try:
        from playwright import sync_api
    except ImportError:  # a missing browser fails the page tests, never skips them
        pytest.fail("playwright is not installed: pip install -e '.[dev]' (make test does)")
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: install the Debian package `chromium` (make browser / .ci/run)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def small_suite(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The five notebooks of ``make report`` on small parameters: one batch per session (tests/small_suite.py)."""
    return _small_suite.small_suite(tmp_path_factory)
