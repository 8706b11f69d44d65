"""Runs one after another in one process (how a notebook is used) stay as clean as the first.

Issue #9 A1/A3: the census called Python-level ``__sizeof__`` methods. pandas'
(``PandasObject.__sizeof__``) runs ``memory_usage(deep=True)``, which builds
Series and views; each left a dead weak reference in the copy-on-write lists
of the earlier runs' DataFrames (still alive), so every later run saw
``weakref.ReferenceType`` and ``gc_objects`` grow and called it a leak. A
``MagicMock`` alive anywhere records the ``__sizeof__`` call and makes a child
mock each time. Measuring now runs no code of the measured objects.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from unittest.mock import MagicMock

import pandas as pd

import tokdiag as td
from tokdiag.probes.census import IMPLEMENTATION, take_census_c, take_census_numpy

ROOT = Path(__file__).resolve().parents[1]
CENSUSES = [take_census_numpy] + ([take_census_c] if IMPLEMENTATION == "C" else [])

_KEEP: list[object] = []


@functools.lru_cache(maxsize=256)
def _cached(k: int) -> bytes:
    return bytes(2048) + str(k).encode()


class Task:
    def __init__(self, i: int) -> None:
        self.i = i
        self.frame = pd.DataFrame({"a": range(20), "b": [str(j) for j in range(20)]})


def _workloads() -> None:
    """Different workloads tracked one after another, each leaving its Run (and its DataFrames) alive."""
    _KEEP.append(td.track(lambda i: _cached(i % 1000), steps=100, every=10, progress=False,
                          caches=[td.cache(_cached, name="lru")]))
    frames: list[pd.DataFrame] = []
    _KEEP.append(td.track(lambda i: frames.append(pd.DataFrame({"x": range(i % 7 + 1)})), steps=40, every=10,
                          progress=False, watch=["DataFrame"]))
    _KEEP.append(frames)
    tasks = [Task(i) for i in range(5)]
    _KEEP.append(td.track(lambda i: tasks[i % 5].frame.sum(), steps=40, every=10, progress=False, watch=["Task"]))
    _KEEP.append(tasks)
    mock = MagicMock()  # stays alive for every later run
    _KEEP.append(mock)
    _KEEP.append(td.track(lambda i: mock.handle(i), steps=40, every=10, progress=False, watch=["MagicMock"]))
    mock.reset_mock()


def any_number_of_different_workloads_then_a_noop_run_shows_no_leak() -> None:
    _KEEP.clear()
    try:
        for _ in range(3):
            _workloads()
            gc.collect()
            run = td.track(lambda i: None, steps=150, every=10, progress=False, watch=["MagicMock", "Task"])
            leaks = run.verdicts().query("verdict == 'leak'")[["probe", "subject", "metric", "per_step"]]
            assert leaks.empty, leaks.to_string()
            mocks = [m for m in _KEEP if type(m) is MagicMock]
            assert all(m.mock_calls == [] for m in mocks)  # measuring called nothing on them
            _KEEP.append(run)
    finally:
        _KEEP.clear()


def test_a_magicmock_alive_is_measured_without_being_called():
    mock = MagicMock()
    children = dict(mock._mock_children)
    run = td.track(lambda i: None, steps=40, every=5, progress=False, watch=["MagicMock"],
                   caches=[td.cache(lambda: {"m": mock}, name="holder")])
    assert run.status == "completed"
    assert mock.mock_calls == [] and dict(mock._mock_children) == children
    for take in CENSUSES:
        take([mock])
    td.deep_size(mock)
    assert mock.mock_calls == [] and dict(mock._mock_children) == children


class _Spy:
    calls = 0

    def __sizeof__(self) -> int:
        type(self).calls += 1
        return 10**6


def test_no_size_measure_calls_a_python_sizeof():
    spies = [_Spy() for _ in range(3)]
    for take in CENSUSES:
        (count, size, _), = [v for k, v in take(spies).items() if k.endswith("_Spy")]
        assert count == 3 and size < 1000
    assert td.deep_size(spies) < 10**5  # not 3 x 10**6
    td.track(lambda i: None, steps=3, every=1, progress=False, watch=["_Spy"], caches=[td.cache(lambda: spies)])
    assert _Spy.calls == 0


_DEEP_SIZE_OF_A_MOCK = textwrap.dedent("""
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # it once ran to 23 GiB
    from unittest.mock import MagicMock
    import tokdiag as td
    print(td.deep_size(MagicMock()))
""")


def test_deep_size_of_a_magicmock_ends():
    out = subprocess.run([sys.executable, "-c", _DEEP_SIZE_OF_A_MOCK], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 0 < int(out.stdout.strip()) < 1 << 16  # the mock and its own dicts: no child mocks


def _in_a_fresh_process(scenario: str) -> None:
    """Run ``scenario`` (a function of this file) as this file's main in a new interpreter; its asserts are the test.

    One process from its first run to its last: what "repeated runs" means. A fresh one, because every snapshot's
    full collection costs in proportion to the heap, and a test process that imported half the suite's libraries
    made these runs take three minutes instead of half of one."""
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": path}
    out = subprocess.run([sys.executable, __file__, scenario], capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    assert out.stdout.strip().endswith(f"{scenario}: ok")


def test_any_number_of_different_workloads_then_a_noop_run_shows_no_leak():
    _in_a_fresh_process("any_number_of_different_workloads_then_a_noop_run_shows_no_leak")


def test_ten_runs_in_one_process_leave_the_containers_probe_nothing_to_find_in_a_noop_run():
    _in_a_fresh_process("ten_runs_in_one_process_leave_the_containers_probe_nothing_to_find_in_a_noop_run")


_REQUESTS: dict[str, list[str]] = {}


def _container_workloads(k: int):
    """A step that fills a container the containers probe finds by itself, and how to empty it again."""
    tag = f"rr{k}"
    kinds = [
        (lambda i: logging.getLogger(f"{tag}.{i}"),
         lambda: [logging.Logger.manager.loggerDict.pop(n) for n in list(logging.Logger.manager.loggerDict)
                  if n.startswith(tag)]),
        (lambda i: _REQUESTS.__setitem__(f"{tag}-{i}", [str(i)] * 5), _REQUESTS.clear),
        (lambda i: sys.modules.__setitem__(f"{tag}_plugin_{i}", types.ModuleType(f"{tag}_plugin_{i}")),
         lambda: [sys.modules.pop(n) for n in list(sys.modules) if n.startswith(f"{tag}_plugin_")]),
        (lambda i: _cached(10_000 + 100 * k + i), _cached.cache_clear),
    ]
    return kinds[k % len(kinds)]


def ten_runs_in_one_process_leave_the_containers_probe_nothing_to_find_in_a_noop_run() -> None:
    kept: list[td.Run] = []
    for k in range(10):
        step, empty = _container_workloads(k)
        try:
            run = td.track(step, steps=20, every=5, progress=False)
        finally:
            empty()
        assert not run.timeline.query("probe == 'containers'").empty  # each run found its container
        kept.append(run)
    gc.collect()
    run = td.track(lambda i: None, steps=100, every=5, progress=False)
    written = run.timeline.query("probe == 'containers'")["subject"].unique().tolist()
    assert written == []  # nothing the ten runs (or tokdiag itself) left grows
    leaks = run.verdicts().query("verdict == 'leak'")[["probe", "subject", "metric"]]
    assert leaks.empty, leaks.to_string()
    del kept


if __name__ == "__main__":
    globals()[sys.argv[1]]()
    print(f"{sys.argv[1]}: ok")
