"""Run a plan of parameterized notebooks, several at once, and write an index page.

A plan is a YAML file::

    title: tokdiag suite            # optional, shown on index.html
    jobs: 2                         # optional, runs at once (--jobs overrides)
    timeout: 600                    # optional, seconds allowed per cell
    runs:
      - notebook: agent_objects     # a shipped notebook's name, or an .ipynb path
        parameters: {tasks: 300}    # optional
        grid: {keep_agents: [true, false]}  # optional: one run per combination
        name: agents                # optional: folder name (default: notebook name)

``notebook`` is the name of a shipped notebook (``agent_objects``; see
:mod:`tokdiag.report.catalog`, ``tokdiag notebooks``) or a path, looked up
in the plan file's folder, then in the current folder. Every parameter must
be documented in the notebook's ``parameters`` cell (as :func:`papermill.inspect_notebook` sees it); the whole
plan is checked before anything runs, and a mistake raises
:class:`~tokdiag.errors.ConfigError` naming the run, the key and the fix.

Each run gets a folder ``NN-name[-key=value...]`` under the output folder
and its own kernel (papermill), started *in that folder*. tokdiag never
deletes or overwrites a file it did not write: a run folder holds a marker
file (:data:`RUN_MARKER`) listing the files the run wrote (with their size
and modification time); running into it again deletes those files only,
and keeps any other file (yours) where it is, out of the index. A folder
without the marker must be empty; a listed file you changed, a file of
yours named like one the run writes, or a marker of a run that never
finished, is a :class:`~tokdiag.errors.ConfigError` naming the file and
the fix, before any kernel starts. ``index.html``/``index.json`` are
overwritten only if tokdiag wrote them. A run that fails (a
cell raises, the kernel dies, a cell times out) is recorded with its cell and
exception and the others go on. ``index.html`` lists every run: notebook,
parameters, status, headline verdicts, duration, and relative links;
``index.json`` holds the same for programs.

The run-folder convention (for notebook authors)
------------------------------------------------
A notebook tells tokdiag where its files go by declaring parameters with
these names in its ``parameters`` cell; tokdiag sets each one it finds (and
only those) and refuses them in a plan or on the command line:

==============  ==================  ===========================================
parameter       set to              the notebook should
==============  ==================  ===========================================
``output_dir``  ``"."``             write its journal(s) and ``summary.json``
                                    there (``out_dir`` is accepted as an alias)
``journal``     ``"journal.jsonl"`` pass it to ``td.track(..., journal=journal)``
==============  ==================  ===========================================

Both values are relative to the kernel's working folder, which *is* the run
folder, so plain relative paths in a notebook land there as well; keep them
relative (absolute paths would show up in the shared HTML). A typical
``parameters`` cell::

    steps = 300            # steps to run
    output_dir = "."       # where the journal and summary.json go (set by tokdiag batch)

then ``td.track(step, steps=steps, journal=os.path.join(output_dir,
"run.jsonl"))`` and, in the last cell, ``tokdiag.report.summary.write_summary(output_dir,
verdict_table)``.

What the index shows for a run:

* **files**: the executed notebook, its HTML, and every ``*.jsonl`` journal
  found in the run folder (or below it);
* **headline verdicts**: read from ``summary.json`` (see
  :mod:`tokdiag.report.summary`) when the notebook wrote one; otherwise computed from
  the journals it left (:func:`tokdiag.report.summary.headlines_from_journals`).
  scrapbook is not used.

>>> # doctest: +SKIP
>>> result = run_batch("plans/default.yaml", "reports", jobs=2)
>>> result.index
PosixPath('reports/index.html')
"""

from __future__ import annotations

import datetime as _dt
import html
import itertools
import json
import os
import re
import socket
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from tokdiag.charts import LABEL_COLORS
from tokdiag.errors import ConfigError, did_you_mean
from tokdiag.report.kernel import ExecutionFailure, check_parameters, execute
from tokdiag.report.summary import Summary, headlines_from_journals, read_summary

OUTPUT_DIR_PARAMETER = "output_dir"
"""The notebook parameter tokdiag sets to the run's folder (relative to the kernel's cwd: ``"."``)."""

JOURNAL_FILE = "journal.jsonl"
"""What a notebook's ``journal`` parameter is set to (a file in the run's folder)."""

RUN_FOLDER_PARAMETERS: Mapping[str, str] = {OUTPUT_DIR_PARAMETER: ".", "out_dir": ".", "journal": JOURNAL_FILE}
"""Parameters tokdiag sets when a notebook declares them (see "The run-folder convention" above)."""


def run_folder_parameters(documented: Mapping[str, object] | None) -> dict[str, str]:
    """The subset of :data:`RUN_FOLDER_PARAMETERS` that a notebook with ``documented`` parameters declares.

    >>> run_folder_parameters({"steps": 1, "output_dir": "."})
    {'output_dir': '.'}
    >>> run_folder_parameters(None)
    {}
    """
    if documented is None:
        return {}
    return {name: value for name, value in RUN_FOLDER_PARAMETERS.items() if name in documented}

RUN_MARKER = ".tokdiag-run"
"""File that marks a run folder as tokdiag's and lists the files its last run wrote (JSON).

A re-run into the folder deletes exactly those files (if unchanged) and keeps every other one."""

_PLAN_KEYS = ("title", "jobs", "timeout", "runs")
_RUN_KEYS = ("notebook", "parameters", "grid", "name")


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One notebook execution of a plan: which notebook, with which parameters, into which folder."""

    index: int
    notebook: Path
    label: str
    parameters: Mapping[str, Any]
    folder_name: str
    folder_parameters: Mapping[str, str] = field(default_factory=dict)

    def kernel_parameters(self) -> dict[str, Any]:
        """The parameters papermill injects: the plan's, plus the run-folder ones the notebook declares."""
        return {**self.parameters, **self.folder_parameters}


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated plan (see the module docstring for the file format)."""

    runs: tuple[RunSpec, ...]
    title: str = "tokdiag batch"
    jobs: int | None = None
    timeout: float | None = None
    source: str = ""


@dataclass(frozen=True, slots=True)
class RunResult:
    """What one run produced. Paths are absolute; the index makes them relative."""

    spec: RunSpec
    folder: Path
    duration_s: float
    failure: ExecutionFailure | None = None
    notebook: Path | None = None
    html: Path | None = None
    journals: tuple[Path, ...] = ()
    summary: Summary | None = None
    host: str = field(default_factory=socket.gethostname)
    """The machine whose kernel ran it (RSS figures from different machines are not comparable)."""
    worker: str = ""
    """The Dask worker's address when the batch ran on a cluster (``""`` on the local pool)."""
    attempts: int = 1
    """How many times the run was started (more than 1 after a retry on a cluster)."""

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def status(self) -> str:
        return "ok" if self.ok else "failed"


@dataclass(frozen=True, slots=True)
class BatchResult:
    """The outcome of :func:`run_batch`: every run (in plan order) and the index page."""

    out_dir: Path
    index: Path
    runs: tuple[RunResult, ...] = field(default_factory=tuple)

    @property
    def failed(self) -> tuple[RunResult, ...]:
        return tuple(r for r in self.runs if not r.ok)


# ---------------------------------------------------------------------------
# plans


def load_plan(path: str | os.PathLike[str]) -> Plan:
    """Read and validate the plan file at ``path`` (raises :class:`ConfigError` naming any problem)."""
    import yaml

    plan_path = Path(path)
    if not plan_path.is_file():
        raise ConfigError(f"plan file {str(plan_path)!r} does not exist; give the path of a YAML plan "
                          "(see `tokdiag batch --help` for the format)")
    try:
        data = yaml.safe_load(plan_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{plan_path.name}: not valid YAML{where} ({problem}); fix the syntax") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{plan_path.name}: not a text file; a plan is a UTF-8 YAML file") from None
    return parse_plan(data, base_dir=plan_path.parent, source=plan_path.name)


def parse_plan(data: object, *, base_dir: str | os.PathLike[str] = ".", source: str = "plan") -> Plan:
    """Validate an already-loaded plan (e.g. a dict); relative notebooks resolve against ``base_dir``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: a plan is a mapping with a 'runs' list, got {_kind(data)}; e.g.\n"
                          "runs:\n  - notebook: agent_objects\n    parameters: {tasks: 300}")
    for key in data:
        if key not in _PLAN_KEYS:
            raise ConfigError(f"{source}: unknown key {key!r} at the top level; "
                              f"{did_you_mean(key, _PLAN_KEYS, end=' ')}allowed keys: {', '.join(_PLAN_KEYS)}")
    title = data.get("title", "tokdiag batch")
    if not isinstance(title, str):
        raise ConfigError(f"{source}: title must be text, got {title!r}")
    jobs = data.get("jobs")
    if jobs is not None and (not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1):
        raise ConfigError(f"{source}: jobs must be a whole number >= 1, got {jobs!r}")
    timeout = data.get("timeout")
    if timeout is not None and (not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0):
        raise ConfigError(f"{source}: timeout must be a number of seconds > 0, got {timeout!r}")
    runs = data.get("runs")
    if not isinstance(runs, list) or not runs:
        raise ConfigError(f"{source}: 'runs' must be a non-empty list of runs, got {_kind(runs)}; e.g.\n"
                          "runs:\n  - notebook: agent_objects")
    specs: list[RunSpec] = []
    for i, run in enumerate(runs):
        specs.extend(_expand_run(run, where=f"{source}, runs[{i}]", base_dir=Path(base_dir),
                                 first_index=len(specs) + 1))
    return Plan(runs=tuple(specs), title=title, jobs=jobs,
                timeout=float(timeout) if timeout is not None else None, source=source)


def _expand_run(run: object, *, where: str, base_dir: Path, first_index: int) -> list[RunSpec]:
    if not isinstance(run, Mapping):
        raise ConfigError(f"{where}: each run is a mapping with a 'notebook' key, got {_kind(run)}")
    for key in run:
        if key not in _RUN_KEYS:
            raise ConfigError(f"{where}: unknown key {key!r}; {did_you_mean(key, _RUN_KEYS, end=' ')}"
                              f"allowed keys: {', '.join(_RUN_KEYS)}")
    label = run.get("notebook")
    if not isinstance(label, str) or not label:
        raise ConfigError(f"{where}: 'notebook' must be a shipped notebook's name or the path of an .ipynb file, "
                          f"got {label!r}")
    notebook = _resolve_notebook(label, base_dir=base_dir, where=where)
    parameters = run.get("parameters") or {}
    if not isinstance(parameters, Mapping):
        raise ConfigError(f"{where}: 'parameters' must be a mapping of name: value, got {_kind(parameters)}")
    grid = run.get("grid") or {}
    if not isinstance(grid, Mapping):
        raise ConfigError(f"{where}: 'grid' must be a mapping of name: [values], got {_kind(grid)}")
    for name, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: grid.{name} must be a non-empty list of values, e.g. [100, 300]; "
                              f"got {values!r}")
        if name in parameters:
            raise ConfigError(f"{where}: {name!r} is both in 'parameters' and in 'grid'; keep it in one")
    for name in (*parameters, *grid):
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError(f"{where}: parameter name {name!r} is not a Python identifier")
    documented = check_parameters(notebook, {**parameters, **grid}, reserved=tuple(RUN_FOLDER_PARAMETERS),
                                  where=f"{where}: ")
    folder_parameters = run_folder_parameters(documented)
    base_name = run.get("name", notebook.stem)
    if not isinstance(base_name, str) or not base_name.strip():
        raise ConfigError(f"{where}: 'name' must be non-empty text, got {base_name!r}")
    combos = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())] or [{}]
    specs = []
    for offset, combo in enumerate(combos):
        index = first_index + offset
        suffix = "".join(f"-{k}={_slug_value(v)}" for k, v in combo.items())
        specs.append(RunSpec(index=index, notebook=notebook, label=label, parameters={**parameters, **combo},
                             folder_name=_slug(f"{index:02d}-{base_name}{suffix}"),
                             folder_parameters=folder_parameters))
    return specs


def _resolve_notebook(label: str, *, base_dir: Path, where: str) -> Path:
    """A path relative to the plan's folder or the current one, or the name of a shipped notebook."""
    from tokdiag.report.catalog import resolve

    return resolve(label, base_dirs=(base_dir, Path.cwd()), where=f"{where}: ")


def _slug(text: str, limit: int = 80) -> str:
    slug = re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_.")
    return slug[:limit] or "run"


def _slug_value(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "+".join(_slug_value(v) for v in value)
    return str(value)


def _kind(value: object) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"[:120]


# ---------------------------------------------------------------------------
# running


@dataclass(frozen=True, slots=True)
class _FolderPlan:
    """What a run into ``folder`` may delete (its previous run's files) and must keep (everything else)."""

    folder: Path
    remove: tuple[str, ...] = ()
    remove_dirs: tuple[str, ...] = ()
    keep: frozenset[str] = frozenset()


def _entries_below(folder: Path) -> tuple[set[str], set[str]]:
    """Files and folders under ``folder`` (relative, '/'-separated), the marker left out."""
    files: set[str] = set()
    dirs: set[str] = set()
    for root, subdirs, names in os.walk(folder):
        rel = Path(root).relative_to(folder)
        dirs.update((rel / d).as_posix() for d in subdirs)
        files.update((rel / n).as_posix() for n in names)
    files.discard(RUN_MARKER)
    return files, dirs


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _read_marker(marker: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("written_by") != "tokdiag" or not isinstance(data.get("files"), dict):
        return None
    return data


def _inspect_folder(folder: Path, writes: Sequence[str] = ()) -> _FolderPlan:
    """How a run can use ``folder`` without touching what tokdiag did not write; ConfigError when it cannot.

    ``writes`` are the names the run will write there (its executed notebook and HTML, journal, summary).
    """
    fix = "choose another output folder (-o)"
    if not folder.exists():
        return _FolderPlan(folder)
    if not folder.is_dir():
        raise ConfigError(f"output folder {str(folder)!r} is a file; {fix}")
    files, dirs = _entries_below(folder)
    marker = folder / RUN_MARKER
    if not marker.exists():
        if files or dirs:
            raise ConfigError(f"folder {str(folder)!r} exists and was not written by tokdiag; "
                              f"{fix} or remove it")
        return _FolderPlan(folder)
    data = _read_marker(marker)
    if data is None:
        raise ConfigError(f"folder {str(folder)!r} was written by an older tokdiag that did not list its files, "
                          f"so tokdiag cannot tell them from yours and deletes nothing: remove the folder (move out "
                          f"what you want to keep) and run again, or {fix}")
    if not data.get("complete"):
        raise ConfigError(f"folder {str(folder)!r} holds a run that never finished (tokdiag was stopped), so tokdiag "
                          f"cannot tell its files from yours and deletes nothing: remove the folder (move out what "
                          f"you want to keep) and run again, or {fix}")
    listed: dict[str, Any] = data["files"]
    changed = sorted(rel for rel, stamp in listed.items()
                     if rel in files and _stamp(folder / rel) != list(stamp))
    if changed:
        raise ConfigError(f"{', '.join(changed[:3])} in {str(folder)!r} changed since tokdiag wrote "
                          f"{'them' if len(changed) > 1 else 'it'}; tokdiag will not delete your edits: move "
                          f"{'them' if len(changed) > 1 else 'it'} out of the folder, or {fix}")
    keep = frozenset(files - set(listed))
    clash = sorted(keep & set(writes))
    if clash:
        raise ConfigError(f"{clash[0]} in {str(folder)!r} was not written by tokdiag and the run would overwrite "
                          f"it: move it out of the folder, or {fix}")
    kept_parents = {Path(k).parent.as_posix() for k in keep}
    own_dirs = [d for d in data.get("dirs", []) if isinstance(d, str) and d in dirs]
    return _FolderPlan(folder, remove=tuple(sorted(set(listed) & files)),
                       remove_dirs=tuple(sorted((d for d in own_dirs if d not in kept_parents),
                                                key=lambda d: d.count("/"), reverse=True)),
                       keep=keep)


def _prepare_folder(folder: Path, writes: Sequence[str] = ()) -> _FolderPlan:
    """Make ``folder`` ready for a run: delete its previous run's files (only those), mark it as in progress."""
    plan = _inspect_folder(folder, writes)
    for rel in plan.remove:
        (folder / rel).unlink(missing_ok=True)
    for rel in plan.remove_dirs:
        try:
            (folder / rel).rmdir()  # only if empty: a folder holding anything else stays
        except OSError:
            pass
    folder.mkdir(parents=True, exist_ok=True)
    _write_marker(folder, complete=False, files={}, dirs=[])
    return plan


def _seal_folder(plan: _FolderPlan, before_dirs: set[str]) -> None:
    """List what the run wrote in the folder's marker (everything but the files that were kept)."""
    files, dirs = _entries_below(plan.folder)
    own = sorted(files - plan.keep)
    stamps = {}
    for rel in own:
        try:
            stamps[rel] = _stamp(plan.folder / rel)
        except OSError:  # gone meanwhile
            continue
    _write_marker(plan.folder, complete=True, files=stamps, dirs=sorted(dirs - before_dirs))


def _write_marker(folder: Path, *, complete: bool, files: Mapping[str, list[int]], dirs: Sequence[str]) -> None:
    from tokdiag import __version__

    marker = {"written_by": "tokdiag", "tokdiag": __version__, "complete": complete,
              "about": "the files tokdiag's last run wrote here; running into this folder again deletes these "
                       "(if unchanged) and keeps every other file",
              "files": dict(files), "dirs": list(dirs)}
    tmp = folder / f"{RUN_MARKER}.tmp"
    tmp.write_text(json.dumps(marker, indent=1), encoding="utf-8")
    os.replace(tmp, folder / RUN_MARKER)


def _run_writes(spec: RunSpec) -> tuple[str, ...]:
    """Names a run writes in its folder whatever its notebook does (a file of yours by that name is refused)."""
    from tokdiag.report.summary import SUMMARY_FILE

    return (f"{spec.notebook.stem}.ipynb", f"{spec.notebook.stem}.html", JOURNAL_FILE, SUMMARY_FILE)


def run_one(spec: RunSpec, folder: str | os.PathLike[str], *, timeout: float | None = None) -> RunResult:
    """Execute one run into ``folder``: executed notebook, HTML, journals, summary. Never raises for a failed run.

    Raises :class:`ConfigError`, before anything runs, when ``folder`` holds
    files tokdiag did not write that it would have to delete or overwrite
    (see the module docstring).
    """
    run_dir = Path(folder).resolve()
    plan = _prepare_folder(run_dir, _run_writes(spec))
    before_dirs = _entries_below(run_dir)[1]
    try:
        return _run_in(spec, run_dir, plan, timeout)
    finally:  # also after Ctrl-C: the next run must know which files were this one's
        _seal_folder(plan, before_dirs)


def _run_in(spec: RunSpec, run_dir: Path, plan: _FolderPlan, timeout: float | None) -> RunResult:
    import nbformat

    from tokdiag.report.export import export_html, scrub_notebook

    executed = run_dir / f"{spec.notebook.stem}.ipynb"
    result = execute(spec.notebook, executed, spec.kernel_parameters(), cwd=run_dir, timeout=timeout)
    failure = result.failure
    page: Path | None = None
    if executed.is_file():
        try:
            scrubbed = scrub_notebook(nbformat.read(executed, as_version=4), base_dir=run_dir)
            nbformat.write(scrubbed, executed)
            params = _format_parameters(spec.parameters) or "default parameters"
            status = "ok" if failure is None else f"FAILED at {failure.describe()}"
            page = export_html(scrubbed, run_dir / f"{spec.notebook.stem}.html",
                               title=f"{spec.notebook.stem} ({params})",
                               subtitle=f"tokdiag run {spec.folder_name}: {status} · opens offline")
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


class _Progress:
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
        params = _format_parameters(spec.parameters)
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
              retries: int = 0) -> BatchResult:
    """Execute every run of ``plan`` (a :class:`Plan` or a plan file), ``jobs`` at a time; write the index.

    ``jobs`` defaults to the plan's ``jobs``, else 2 (never more than the
    number of runs). Progress lines go to ``progress`` (None: silent). Returns
    a :class:`BatchResult`; failed runs are in it and on the index page, not
    raised. Raises :class:`ConfigError` for a bad plan before anything runs.

    ``cluster`` (``"tcp://HOST:8786"`` or ``"local:N"``) runs each run as a
    Dask task instead, on that cluster's workers (``jobs`` is then unused),
    re-running a run whose worker or kernel died up to ``retries`` times; see
    :mod:`tokdiag.report.cluster`. Without it, Dask is not imported.
    """
    if not isinstance(plan, Plan):
        plan = load_plan(plan)
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
    from tokdiag.report.export import refuse_foreign

    refuse_foreign([out / "index.html", out / "index.json"], fix="choose another output folder (-o)")
    for spec in plan.runs:  # refuse what is not tokdiag's before spending minutes on the runs
        _inspect_folder(out / spec.folder_name, _run_writes(spec))
    report = _Progress(progress, len(plan.runs))
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


# ---------------------------------------------------------------------------
# the index page


def _format_parameters(parameters: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={json.dumps(v, default=str)}"
                     for k, v in parameters.items())


def _href(path: Path, base: Path) -> str:
    return quote(os.path.relpath(path, base).replace(os.sep, "/"))


_VERDICT_HELP = {
    "leak": "keeps growing at a steady rate to the end of the run",
    "step": "grew once (a jump) and then stayed level",
    "bounded": "grew, then settled: a cache filling up or warm-up",
    "flat": "no growth worth mentioning",
    "inconclusive": "too few or too noisy points to decide",
}

_CHANGE_COLORS = {"fixed": "#2ca02c", "less growth": "#74c476", "new leak": "#d62728", "more growth": "#fb6a4a",
                  "unchanged": "#8c8c8c", "not compared": "#bdbdbd"}
"""Colours of :func:`tokdiag.compare`'s ``change`` labels when a notebook uses them as headlines."""

_CHANGE_HELP = {
    "fixed": "a leak in the baseline run is gone in this one",
    "less growth": "still grows, but measurably less than the baseline",
    "more growth": "grows measurably more than the baseline",
    "new leak": "a leak that the baseline did not have",
    "unchanged": "no real difference from the baseline",
    "not compared": "measured in only one of the two runs (they watched different classes or caches)",
}

_ALL_COLORS = {**LABEL_COLORS, **_CHANGE_COLORS}


def _verdict_css() -> str:
    """One rule per label, in the colours the report charts use (tokdiag.charts.LABEL_COLORS)."""
    rules = [f".v-{name.replace(' ', '-')} {{ background: {color}; color: white; }}" for name, color in _ALL_COLORS.items()]
    rules.append(".v-other { background: #fdd49e; color: #1d2430; }")
    return "\n".join(rules)


_INDEX_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px; color: #1d2430; }
h1 { font-size: 22px; margin: 0 0 4px; }
.sub { color: #5b6474; margin-bottom: 16px; }
table.runs { border-collapse: collapse; width: 100%; }
table.runs th, table.runs td { border-bottom: 1px solid #e3e6eb; padding: 8px 10px; text-align: left; vertical-align: top; }
table.runs th { background: #f5f7fa; font-weight: 600; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; background: #f2f4f7; padding: 1px 4px; border-radius: 3px; word-break: break-word; }
.status { display: inline-block; padding: 1px 8px; border-radius: 10px; font-weight: 600; font-size: 12px; }
.status.ok { background: #e3f5e8; color: #176b2c; }
.status.failed { background: #fde4e4; color: #a11414; }
.error { color: #a11414; margin-top: 4px; font-size: 13px; }
td.nb { min-width: 10em; max-width: 15em; overflow-wrap: break-word; }
td.nb strong { white-space: nowrap; }
td.st { min-width: 4em; max-width: 24em; }
.verdict { display: inline-block; min-width: 64px; text-align: center; padding: 0 6px; border-radius: 3px; font-size: 12px; font-weight: 600; margin-right: 6px; }
@@VERDICT_CSS@@
ul.headlines { margin: 0; padding: 0; list-style: none; } ul.headlines li { margin: 2px 0; }
.detail { color: #5b6474; }
.muted { color: #8a93a3; }
.num { text-align: right; white-space: nowrap; }
td.links { min-width: 8em; max-width: 12em; }
td.links a { display: block; overflow-wrap: break-word; }
td.links details a { font-size: 12px; }
td.hl { min-width: 20em; }
td.host { white-space: nowrap; }
details summary { cursor: pointer; color: #3b5b9a; font-size: 12px; margin: 2px 0; }
dl.legend { display: grid; grid-template-columns: max-content 1fr; gap: 4px 12px; margin-top: 24px; color: #3b4352; }
dl.legend dd { margin: 0; }
"""
_INDEX_CSS = _INDEX_CSS.replace("@@VERDICT_CSS@@", _verdict_css())


SHOWN_HEADLINES = 4
"""Headlines shown in a row of the index; the rest fold into a ``<details>`` (no script needed)."""


def _shorten(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _headlines_html(summary: Summary | None) -> str:
    if summary is None or not summary.headlines:
        return '<span class="muted">none (no summary.json or journal)</span>'
    items = []
    for h in summary.headlines:
        cls = f"v-{h.verdict.replace(' ', '-')}" if h.verdict in _ALL_COLORS else "v-other"
        detail = (f' <span class="detail" title="{html.escape(h.detail)}">{html.escape(_shorten(h.detail))}</span>'
                  if h.detail else "")
        items.append(f'<li><span class="verdict {cls}">{html.escape(h.verdict)}</span>'
                     f"<code>{html.escape(h.subject)}</code>{detail}</li>")
    shown = '<ul class="headlines">' + "".join(items[:SHOWN_HEADLINES]) + "</ul>"
    if len(items) > SHOWN_HEADLINES:
        shown += (f"<details><summary>{len(items) - SHOWN_HEADLINES} more</summary>"
                  f'<ul class="headlines">{"".join(items[SHOWN_HEADLINES:])}</ul></details>')
    source = '<div class="muted">computed from the journal</div>' if summary.source == "journals" else ""
    return shown + source


def _placement_html(result: RunResult) -> str:
    """The "ran on" cell of a cluster batch: host, worker address, attempts."""
    if not result.host:
        return '<td class="host"><span class="muted">unknown</span></td>'
    again = f'<div class="muted">{result.attempts} attempts</div>' if result.attempts > 1 else ""
    return (f'<td class="host">{html.escape(result.host)}'
            f'<div class="muted">{html.escape(result.worker)}</div>{again}</td>')


def _row_html(result: RunResult, base: Path, *, placement: bool = False) -> str:
    spec = result.spec
    params = "".join(f"<code>{html.escape(part)}</code> " for part in
                     (_format_parameters({k: v}) for k, v in spec.parameters.items())) or \
        '<span class="muted">defaults</span>'
    status = f'<span class="status {result.status}">{result.status}</span>'
    if result.failure is not None:
        status += f'<div class="error">{html.escape(result.failure.describe())}</div>'
    links = []
    if result.html is not None:
        links.append(f'<a href="{_href(result.html, base)}">report</a>')
    if result.notebook is not None:
        links.append(f'<a href="{_href(result.notebook, base)}">notebook</a>')
    journals = [f'<a href="{_href(journal, base)}">{html.escape(journal.name)}</a>' for journal in result.journals]
    if len(journals) > 2:
        links.append(f"<details><summary>{len(journals)} journals</summary>{''.join(journals)}</details>")
    else:
        links.extend(journals)
    title = html.escape(result.summary.title) if result.summary is not None and result.summary.title else ""
    return (f"<tr><td class=\"num\">{spec.index}</td>"
            f"<td class=\"nb\"><strong>{html.escape(spec.notebook.stem)}</strong>"
            f"{'<div class=detail>' + title + '</div>' if title else ''}"
            f"<div class=\"muted\">{html.escape(spec.folder_name)}/</div></td>"
            f"<td>{params}</td><td class=\"st\">{status}</td><td class=\"hl\">{_headlines_html(result.summary)}</td>"
            f"<td class=\"num\">{result.duration_s:.1f} s</td>{_placement_html(result) if placement else ''}"
            f"<td class=\"links\">{''.join(links) or '<span class=muted>none</span>'}</td></tr>")


def write_index(results: Sequence[RunResult], out_dir: str | os.PathLike[str], *, title: str = "tokdiag batch",
                plan_name: str = "", now: Callable[[], _dt.datetime] | None = None) -> Path:
    """Write ``index.html`` and ``index.json`` for ``results`` into ``out_dir``; return the HTML path.

    Either file, if it exists and tokdiag did not write it, is a
    :class:`ConfigError` (nothing is overwritten).

    Every text is escaped, links are relative, absolute paths of this machine
    are shown relative or as ``$TMPDIR``/``~``/``$PYTHON`` (as in
    :func:`tokdiag.report.export.scrub_notebook`), and the page loads nothing and
    runs no script (its Content-Security-Policy forbids both).
    """
    from tokdiag.report.export import (
        GENERATOR,
        _replacements,
        _scrub_value,
        csp_meta,
        refuse_foreign,
    )

    base = Path(out_dir).resolve()
    refuse_foreign([base / "index.html", base / "index.json"], fix="choose another output folder")
    rules = _replacements(base, ())  # plan values may hold absolute paths: show them relative or symbolic
    base.mkdir(parents=True, exist_ok=True)
    stamp = (now or (lambda: _dt.datetime.now().astimezone()))().strftime("%Y-%m-%d %H:%M %Z").strip()
    failed = sum(1 for r in results if not r.ok)
    counts = f"{len(results)} runs: {len(results) - failed} ok, {failed} failed"
    shown = {h.verdict for r in results if r.summary for h in r.summary.headlines}
    helps = {**_VERDICT_HELP, **{k: v for k, v in _CHANGE_HELP.items() if k in shown}}
    legend = "".join(f'<dt><span class="verdict v-{name.replace(" ", "-")}">{name}</span></dt><dd>{html.escape(text)}</dd>'
                     for name, text in helps.items())
    if shown - _ALL_COLORS.keys():
        legend += ('<dt><span class="verdict v-other">other</span></dt>'
                   '<dd>a finding the notebook names itself (e.g. race, mutated); its detail says what</dd>')
    plan = f" · plan <code>{html.escape(plan_name)}</code>" if plan_name else ""
    placement = any(r.worker for r in results)  # a cluster batch: say where each run ran
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
{csp_meta()}
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_INDEX_CSS}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<div class="sub">{html.escape(counts)}{plan} · generated {html.escape(stamp)}</div>
<table class="runs">
<thead><tr><th>#</th><th>notebook</th><th>parameters</th><th>status</th><th>headline verdicts</th>
<th>duration</th>{'<th>ran on</th>' if placement else ''}<th>files</th></tr></thead>
<tbody>
{chr(10).join(_row_html(r, base, placement=placement) for r in results)}
</tbody>
</table>
<dl class="legend">{legend}</dl>
</body>
</html>
"""
    index = base / "index.html"
    index.write_text(_scrub_value(page, rules), encoding="utf-8")
    records = [{
        "index": r.spec.index, "notebook": r.spec.label, "folder": r.spec.folder_name,
        "parameters": dict(r.spec.parameters), "status": r.status, "duration_s": round(r.duration_s, 3),
        "host": r.host, "worker": r.worker, "attempts": r.attempts,
        "error": None if r.failure is None else {"where": r.failure.where, "ename": r.failure.ename,
                                                 "evalue": r.failure.evalue, "cell_index": r.failure.cell_index},
        "html": _href(r.html, base) if r.html else None,
        "executed_notebook": _href(r.notebook, base) if r.notebook else None,
        "journals": [_href(j, base) for j in r.journals],
        "headlines": [] if r.summary is None else [
            {"subject": h.subject, "verdict": h.verdict, "detail": h.detail} for h in r.summary.headlines],
    } for r in results]
    payload = _scrub_value(json.loads(json.dumps({"generator": GENERATOR, "title": title, "plan": plan_name,
                                                  "runs": records}, default=str)), rules)
    (base / "index.json").write_text(json.dumps(payload, indent=1), encoding="utf-8")
    return index
