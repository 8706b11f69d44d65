"""The five notebooks of ``make report`` on small parameters, run once per test session.

Two test files read the same batch: ``test_notebooks.py`` (what each run found) and ``test_layout.py``
(how each page looks in Chromium). ``make test`` runs them in two xdist workers (``--dist loadfile``):
the first worker to ask runs the batch, under a lock in the session's shared temporary folder, and leaves
the result there; the other waits for the lock and reads it. A batch whose builder failed is run again.
"""

from __future__ import annotations

import fcntl
import os
import pickle
from pathlib import Path

import pytest

from tokdiag.report.batch import run_batch
from tokdiag.report.plan import parse_plan
from tokdiag.report.results import BatchResult

SUITE = ("tokenizer_caches", "agent_objects", "aworld_agents", "your_workload", "compare_runs")
"""The notebooks of plans/default.yaml, in its order."""

SMALL = {
    "tokenizer_caches": {"steps": 8, "kept_steps": 4, "model_names": 5, "threads": 3},
    "agent_objects": {"tasks": 40},
    "aworld_agents": {"tasks": 2, "tokenizer_steps": 3, "model_names": 3},
    "your_workload": {"steps": 40, "name": "demo run"},
    "compare_runs": {"tasks": 40, "names": ["per task", "reused"]},
}
"""Parameters small enough for the test suite, large enough for each notebook to show what it is built to show."""


def _run(out: Path, plan_dir: Path) -> BatchResult:
    plan = parse_plan({"title": "small suite", "timeout": 600,
                       "runs": [{"notebook": name, "parameters": SMALL[name]} for name in SUITE]},
                      base_dir=plan_dir, source="small.yaml")
    return run_batch(plan, out, jobs=2, progress=None)


def small_suite(tmp_path_factory: pytest.TempPathFactory) -> BatchResult:
    """The batch, built once per session across xdist workers (or in this process without xdist)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return _run(tmp_path_factory.mktemp("suite"), tmp_path_factory.mktemp("plan"))
    shared = tmp_path_factory.getbasetemp().parent  # one folder per session, common to its workers
    done = shared / "small-suite.pickle"
    with open(shared / "small-suite.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other worker waits here while the batch runs
        try:
            if done.is_file():
                result: BatchResult = pickle.loads(done.read_bytes())
                return result
            result = _run(shared / f"small-suite-{os.environ['PYTEST_XDIST_WORKER']}", tmp_path_factory.mktemp("plan"))
            if not result.failed:
                done.write_bytes(pickle.dumps(result))
            return result
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
