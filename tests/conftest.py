from __future__ import annotations

import gc

import pytest


@pytest.fixture(autouse=True)
def _collect_between_tests():
    yield
    gc.collect()
