"""Wall time of one plan on the local pool (2 jobs) vs on a Dask ``LocalCluster`` (``--cluster local:2``).

Both arms run the same 8-run plan (one notebook, ``name`` grid a..h), one
kernel per run, two at a time, into separate output folders, so the
difference is the Dask path's own cost: starting the cluster (scheduler and
two spawned worker processes), each worker importing tokdiag and nbconvert
for its first run, shipping every run's files back compressed and writing
them here. Prints the wall time of each arm side by side, the ratio, the
time the cluster took to be ready, and the summed time the kernels
themselves ran (papermill's execution time, the part both arms share).

The default notebook is the toy tracked workload of the tests
(``tests/notebooks/rendezvous.ipynb``, a few seconds a run); pass another
notebook to weigh a heavier run (one without a ``name`` parameter runs as
plan entries named a..h, on its defaults).

Run: ``.venv/bin/python bench/batch.py [runs=8] [notebook] [rounds=1]``
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tokdiag.report.batch import run_batch
from tokdiag.report.kernel import notebook_parameters
from tokdiag.report.plan import load_plan
from tokdiag.report.results import BatchResult

ROOT = Path(__file__).resolve().parents[1]


class _Clock:
    """A progress stream that notes when the cluster said it was ready (the "N Dask workers on" line)."""

    def __init__(self, started: float) -> None:
        self.started, self.ready_s = started, float("nan")

    def write(self, text: str) -> int:
        if re.search(r"\d+ Dask workers? on ", text):
            self.ready_s = time.perf_counter() - self.started
        return len(text)

    def flush(self) -> None:
        pass


def _plan(folder: Path, notebook: Path, runs: int) -> Path:
    names = [chr(ord("a") + i) if i < 26 else f"r{i}" for i in range(runs)]
    documented = notebook_parameters(notebook) or {}
    shutil.copy(notebook, folder / notebook.name)
    if "name" in documented:
        body = f"  - notebook: {notebook.name}\n    grid: {{name: [{', '.join(names)}]}}\n"
    else:
        body = "".join(f"  - notebook: {notebook.name}\n    name: {n}\n" for n in names)
    (folder / "plan.yaml").write_text(f"title: bench\nruns:\n{body}", encoding="utf-8")
    return folder / "plan.yaml"


def _arm(plan: Path, out: Path, cluster: str | None, progress: Any) -> tuple[float, BatchResult]:
    started = time.perf_counter()
    result = run_batch(plan, out, jobs=2, cluster=cluster, progress=progress)
    return time.perf_counter() - started, result


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    notebook = Path(sys.argv[2]).resolve() if len(sys.argv) > 2 else ROOT / "tests" / "notebooks" / "rendezvous.ipynb"
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs "
          "(other processes inflate all timings)")
    with tempfile.TemporaryDirectory(prefix="tokdiag-bench-batch-") as tmp:
        plan = _plan(Path(tmp), notebook, runs)
        load_plan(plan)  # client-side imports (papermill, nbformat) paid before either clock starts
        print(f"plan: {runs} runs of {notebook.name}, 2 at a time in both arms")
        for r in range(rounds):
            local_s, local = _arm(plan, Path(tmp) / f"local{r}", None, None)
            clock = _Clock(time.perf_counter())
            cluster_s, remote = _arm(plan, Path(tmp) / f"cluster{r}", "local:2", clock)
            failed = [x.spec.folder_name for x in (*local.runs, *remote.runs) if not x.ok]
            if failed:
                print(f"  failed runs: {failed}")
            kernels_local = sum(x.duration_s for x in local.runs)
            kernels_cluster = sum(x.duration_s for x in remote.runs)
            print(f"round {r + 1}:")
            print(f"  local pool, --jobs 2:     {local_s:7.1f} s wall   (kernels ran {kernels_local:6.1f} s in all)")
            print(f"  --cluster local:2:        {cluster_s:7.1f} s wall   (kernels ran {kernels_cluster:6.1f} s "
                  f"in all; cluster ready after {clock.ready_s:.1f} s)")
            print(f"  cluster / local:          {cluster_s / local_s:7.2f}x   "
                  f"({cluster_s - local_s:+.1f} s, {(cluster_s - local_s) / runs:+.2f} s per run)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
