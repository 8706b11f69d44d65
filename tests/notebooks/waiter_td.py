"""A workload whose step ``at`` waits for a file (for tests/notebooks/progress.ipynb)."""

from __future__ import annotations

import os
import time


class WaitingStep:
    """Step ``at`` waits until ``release`` exists (``released`` True) or ``wait_s`` passes (``released`` False)."""

    def __init__(self, release: str, at: int, wait_s: float) -> None:
        self.release, self.at, self.wait_s = release, at, wait_s
        self.released: bool | None = None

    def __call__(self, i: int) -> None:
        if i != self.at:
            return
        deadline = time.monotonic() + self.wait_s
        while not os.path.exists(self.release):
            if time.monotonic() > deadline:
                self.released = False
                return
            time.sleep(0.05)
        self.released = True


def make(release: str, at: int, wait_s: float) -> WaitingStep:
    return WaitingStep(release, at, wait_s)
