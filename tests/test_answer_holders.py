"""What the answer says holds the growth, on real workloads tracked in this process.

A logger per request (nothing watched): the growing ``loggerDict`` is the
holder and leads the census counts of the loggers, dicts, lists and str it
holds; the builtin types among them point at it rather than at watching
them. A list kept by a closure: a builtin count with no holder anywhere is
said bare. Objects kept by ``atexit`` (C state): the chain's root says how
they are held, once.
"""

from __future__ import annotations

import atexit
import logging
import uuid
import warnings

import pytest

import tokdiag as td
from tokdiag.analysis import answer, growers
from tokdiag.analysis.findings import Finding
from tokdiag.analysis.retention import HELD_OUTSIDE
from tokdiag.errors import TokdiagWarning

LOGGERS = "logging:Logger.manager.loggerDict"


@pytest.fixture(scope="module")
def logger_run() -> td.Run:
    prefix = f"req{uuid.uuid4().hex[:8]}"
    try:
        # 100 steps: the dict of loggers gains ~600 B a step, ~30 KiB over the judged half of the run, below the
        # 64 KiB a bytes leak needs, so it leaks by its entries alone, as the census counts of what it holds do
        return td.track(lambda i: logging.getLogger(f"{prefix}.{i}"), steps=100, every=5, progress=False)
    finally:
        for name in [n for n in logging.Logger.manager.loggerDict if n == prefix or n.startswith(f"{prefix}.")]:
            del logging.Logger.manager.loggerDict[name]


def _counted(f: Finding) -> bool:
    """A finding of the census alone, by count: no bytes per step, no chain."""
    return all(s.probe == "census" for s in f.series) and not f.numbers.get("bytes_per_step") and not f.chain


def test_the_growing_container_leads_the_census_counts_of_what_it_holds(logger_run):
    a = answer(logger_run)
    leaks = [f for f in a.findings if f.kind == "leak"]
    assert leaks[0].owner == LOGGERS, a.text
    assert leaks[0].text == f"Leak: container {LOGGERS} +1 entry per step."
    counted = {f.owner for f in leaks if _counted(f)}
    assert {"logging.Logger", "builtins.str"} <= counted, a.text  # one logger and its name a request


def test_the_top_growers_table_leads_with_the_container_too(logger_run):
    rows = growers(logger_run)
    assert rows.iloc[0]["owner"] == LOGGERS, rows[["owner", "bytes_per_step", "count_per_step"]]
    assert rows.iloc[0]["count_per_step"] < rows.set_index("owner").loc["builtins.list", "count_per_step"]


def test_builtin_types_point_at_the_holder_and_other_classes_at_watching_them(logger_run):
    a = answer(logger_run)
    leaks = {f.owner: f for f in a.findings if f.kind == "leak"}
    builtin = [f for o, f in leaks.items() if o.startswith("builtins.")]
    assert builtin, a.text
    for f in builtin:
        assert f.text.endswith(f" per step (a builtin type: perhaps held in container {LOGGERS}, which grows too).")
        assert "watch" not in f.text
    assert f"(a builtin type: perhaps held in container `{LOGGERS}`, which grows too)" in a.markdown
    logger = leaks["logging.Logger"]  # a class of the workload: watching it records its chain
    assert logger.text.endswith(f"(no why-alive chain: only the census saw it; watch {logger.name} to record one).")


def test_a_builtin_count_with_no_holder_anywhere_is_said_bare():
    def make():
        keep = []  # a closure's list: no module-level container for the containers probe to find

        def step(i: int) -> None:
            keep.append([i, i])

        return step, keep

    step, keep = make()
    a = answer(td.track(step, steps=60, every=5, progress=False))
    keep.clear()
    lists = next(f for f in a.findings if f.kind == "leak" and f.owner == "builtins.list")
    assert lists.text.startswith("Leak: list +1 object per step"), a.text
    assert lists.text.endswith(" per step.") and "watch" not in lists.text


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
