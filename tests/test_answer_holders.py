"""What the answer says holds the growth, on real workloads tracked in this process.

Objects kept by ``atexit`` (C state): the chain's root says how they are
held, once.
"""

from __future__ import annotations

import atexit
import warnings

import tokdiag as td
from tokdiag.analysis import answer
from tokdiag.analysis.retention import HELD_OUTSIDE
from tokdiag.errors import TokdiagWarning


class HeldByAtexit:
    def __init__(self, i: int) -> None:
        self.payload = bytearray(2000)


def _noop(*args: object) -> None:
    pass


def test_a_chain_held_from_c_state_says_held_once():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TokdiagWarning)
            run = td.track(lambda i: atexit.register(_noop, HeldByAtexit(i)), steps=100, every=10,
                           watch=["HeldByAtexit"], census=False, progress=False)
    finally:
        atexit.unregister(_noop)
    a = answer(run)
    held = next(f for f in a.findings if f.kind == "leak" and f.owner.endswith(".HeldByAtexit"))
    assert held.chain == f"{HELD_OUTSIDE} -> tuple[0]"
    assert held.text.endswith(f" per step, {HELD_OUTSIDE}, via tuple[0]."), held.text
    assert "held by held" not in a.text and f"{HELD_OUTSIDE}, via `tuple[0]`" in a.markdown
