from __future__ import annotations

import gc
import os

import pytest

# The native registry's coefficients: the built-in ones, never a calibration
# file the machine running the tests may have written (`tokdiag calibrate`).
os.environ["TOKDIAG_CALIBRATION"] = "none"


@pytest.fixture(autouse=True)
def _collect_between_tests():
    yield
    gc.collect()
