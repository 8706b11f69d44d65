"""Plans: which notebooks a batch runs, with which parameters, into which folders.

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
(:attr:`RunSpec.folder_name`).

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
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokdiag.errors import ConfigError, did_you_mean
from tokdiag.report.kernel import check_parameters

__all__ = ["JOURNAL_FILE", "OUTPUT_DIR_PARAMETER", "RUN_FOLDER_PARAMETERS", "Plan", "RunSpec", "format_parameters",
           "load_plan", "parse_plan", "run_folder_parameters"]

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
    with_code: bool = False
    """Export the HTML with its code cells shown (hidden by default, behind a "show code" checkbox)."""

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


def format_parameters(parameters: Mapping[str, Any]) -> str:
    """``parameters`` as one line, text quoted, other values as JSON (progress lines, page titles, the index).

    >>> format_parameters({"tasks": 300, "mode": "fast", "keep": True})
    "tasks=300, mode='fast', keep=true"
    """
    return ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={json.dumps(v, default=str)}"
                     for k, v in parameters.items())


# ---------------------------------------------------------------------------
# reading and checking a plan


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
