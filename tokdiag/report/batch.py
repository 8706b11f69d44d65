"""Run a plan of parameterized notebooks, several at once, and write the index page.

:func:`run_batch` checks the whole plan (:mod:`tokdiag.report.plan`) and
every run folder (:mod:`tokdiag.report.folders`) before anything runs, then
executes each run with :func:`run_one`, ``jobs`` at a time on this machine
(or on a Dask cluster, :mod:`tokdiag.report.cluster`), and writes
``index.html``/``index.json`` (:mod:`tokdiag.report.index`).

Each run gets a folder ``NN-name[-key=value...]`` under the output folder
and its own kernel (papermill), started *in that folder*. tokdiag never
deletes or overwrites a file it did not write (see :mod:`tokdiag.report.folders`).
A run that fails (a cell raises, the kernel dies, a cell times out) is
recorded with its cell and exception and the others go on.

What a run leaves for the index:

* **files**: the executed notebook, its HTML, and every ``*.jsonl`` journal
  found in the run folder (or below it);
* **headline verdicts**: read from ``summary.json`` (see
  :mod:`tokdiag.report.summary`) when the notebook wrote one; otherwise computed from
  the journals it left (:func:`tokdiag.report.summary.headlines_from_journals`).
  scrapbook is not used.

A batch, from Python (``tokdiag batch plans/default.yaml -o reports --jobs 2`` on the command line)::

    result = run_batch("plans/default.yaml", "reports", jobs=2)
    result.index  # PosixPath('reports/index.html')
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from tokdiag.errors import ConfigError
from tokdiag.report.export import export_html
from tokdiag.report.folders import (
    FolderPlan,
    entries_below,
    inspect_folder,
    prepare_folder,
    refuse_foreign,
    run_writes,
    seal_folder,
)
from tokdiag.report.index import write_index
from tokdiag.report.kernel import ExecutionFailure, execute
from tokdiag.report.plan import Plan, RunSpec, format_parameters, load_plan
from tokdiag.report.results import BatchResult, RunResult
from tokdiag.report.scrub import scrub_notebook
from tokdiag.report.summary import Summary, headlines_from_journals, read_summary

__all__ = ["Progress", "run_batch", "run_one"]


def run_one(spec: RunSpec, folder: str | os.PathLike[str], *, timeout: float | None = None) -> RunResult:
    """Execute one run into ``folder``: executed notebook, HTML, journals, summary. Never raises for a failed run.

    Raises :class:`ConfigError`, before anything runs, when ``folder`` holds
    files tokdiag did not write that it would have to delete or overwrite
    (see :mod:`tokdiag.report.folders`).
    """
    run_dir = Path(folder).resolve()
    plan = prepare_folder(run_dir, run_writes(spec))
    before_dirs = entries_below(run_dir)[1]
    try:
        return _run_in(spec, run_dir, plan, timeout)
    finally:  # also after Ctrl-C: the next run must know which files were this one's
        seal_folder(plan, before_dirs)


def _run_in(spec: RunSpec, run_dir: Path, plan: FolderPlan, timeout: float | None) -> RunResult:
    import nbformat

    executed = run_dir / f"{spec.notebook.stem}.ipynb"
    result = execute(spec.notebook, executed, spec.kernel_parameters(), cwd=run_dir, timeout=timeout)
    failure = result.failure
    page: Path | None = None
    if executed.is_file():
        try:
            scrubbed = scrub_notebook(nbformat.read(executed, as_version=4), base_dir=run_dir)
            nbformat.write(scrubbed, executed)
            params = format_parameters(spec.parameters) or "default parameters"
            status = "ok" if failure is None else f"FAILED at {failure.describe()}"
            page = export_html(scrubbed, run_dir / f"{spec.notebook.stem}.html",
                               title=f"{spec.notebook.stem} ({params})",
                               subtitle=f"tokdiag run {spec.folder_name}: {status} · opens offline",
                               with_code=spec.with_code)
        except Exception as exc:  # an export bug must not lose the run
            if failure is None:
                failure = ExecutionFailure(ename=type(exc).__name__, evalue=f"HTML export failed: {exc}")
    journals = tuple(sorted(p for p in run_dir.rglob("*.jsonl")
                            if p.is_file() and p.relative_to(run_dir).as_posix() not in plan.keep))
    summary = read_summary(run_dir)
    if summary is None and journals:
        derived = headlines_from_journals(journals)
        summary = Summary(headlines=derived, title="", source="journals") if derived else None
    return RunResult(spec=spec, folder=run_dir, duration_s=result.duration_s, failure=failure,
                     notebook=executed if executed.is_file() else None, html=page, journals=journals,
                     summary=summary)


class Progress:
    """Plain progress lines, one per start and end of a run (thread-safe)."""

    def __init__(self, stream: TextIO | None, total: int) -> None:
        self.stream, self.total, self.done = stream, total, 0
        self.lock = threading.Lock()

    def say(self, text: str) -> None:
        if self.stream is None:
            return
        with self.lock:
            print(text, file=self.stream, flush=True)

    def started(self, spec: RunSpec) -> None:
        params = format_parameters(spec.parameters)
        self.say(f"[start] {spec.folder_name}" + (f"  ({params})" if params else ""))

    def finished(self, result: RunResult) -> None:
        with self.lock:
            self.done += 1
            done = self.done
        mark = "ok" if result.ok else "FAILED"
        detail = "" if result.failure is None else f": {result.failure.describe()}"
        self.say(f"[{done}/{self.total}] {mark:6} {result.spec.folder_name} in {result.duration_s:.1f}s{detail}")


def run_batch(plan: Plan | str | os.PathLike[str], out_dir: str | os.PathLike[str] = "reports", *,
              jobs: int | None = None, progress: TextIO | None = sys.stderr, cluster: str | None = None,
              retries: int = 0, with_code: bool = False) -> BatchResult:
    """Execute every run of ``plan`` (a :class:`~tokdiag.report.plan.Plan` or a plan file); write the index.

    Runs go ``jobs`` at a time on this machine, or on a Dask cluster.

    ``jobs`` defaults to the plan's ``jobs``, else 2 (never more than the
    number of runs). Progress lines go to ``progress`` (None: silent). Returns
    a :class:`~tokdiag.report.results.BatchResult`; failed runs are in it and on the index page, not
    raised. Raises :class:`ConfigError` for a bad plan before anything runs.

    ``cluster`` (``"tcp://HOST:8786"`` or ``"local:N"``) runs each run as a
    Dask task instead, on that cluster's workers (``jobs`` is then unused),
    re-running a run whose worker or kernel died up to ``retries`` times; see
    :mod:`tokdiag.report.cluster`. Without it, Dask is not imported.
    ``with_code``: every page shows its code cells (hidden by default).
    """
    if not isinstance(plan, Plan):
        plan = load_plan(plan)
    if with_code:
        plan = replace(plan, runs=tuple(replace(spec, with_code=True) for spec in plan.runs))
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ConfigError(f"jobs must be a whole number >= 1, got {jobs!r}")
    if cluster is not None:  # checked before anything runs; imports tokdiag.report.cluster, not Dask
        from tokdiag.report.cluster import parse_cluster

        parse_cluster(cluster)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"retries must be a whole number >= 0, got {retries!r}")
    if retries and cluster is None:
        raise ConfigError(f"retries={retries} re-runs runs whose Dask worker died; it needs a cluster "
                          "(--cluster tcp://HOST:8786 or local:N)")
    workers = max(1, min(jobs or plan.jobs or 2, len(plan.runs)))
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    refuse_foreign([out / "index.html", out / "index.json"], fix="choose another output folder (-o)")
    for spec in plan.runs:  # refuse what is not tokdiag's before spending minutes on the runs
        inspect_folder(out / spec.folder_name, run_writes(spec))
    report = Progress(progress, len(plan.runs))
    report.say(f"tokdiag batch: {len(plan.runs)} runs of {plan.source or 'the plan'}, "
               + (f"{workers} at a time" if cluster is None else f"on the Dask cluster {cluster}"))

    def work(spec: RunSpec) -> RunResult:
        report.started(spec)
        try:
            result = run_one(spec, out / spec.folder_name, timeout=plan.timeout)
        except Exception as exc:  # anything unforeseen fails this run only
            result = RunResult(spec=spec, folder=out / spec.folder_name, duration_s=0.0,
                               failure=ExecutionFailure(ename=type(exc).__name__, evalue=str(exc)))
        report.finished(result)
        return result

    if cluster is not None:
        from tokdiag.report.cluster import run_on_cluster

        results = run_on_cluster(plan, out, cluster, retries=retries, progress=report)
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tokdiag-run") as pool:
            results = tuple(pool.map(work, plan.runs))
    index = write_index(results, out, title=plan.title, plan_name=plan.source)
    failed = sum(1 for r in results if not r.ok)
    report.say(f"tokdiag batch: {len(results) - failed} ok, {failed} failed; index: "
               f"{os.path.relpath(index)}")
    return BatchResult(out_dir=out, index=index, runs=results)
