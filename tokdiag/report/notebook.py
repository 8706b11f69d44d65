"""What the shipped notebooks call, so that their cells stay a few lines: setup, the parameters used, your workload.

The notebooks in ``tokdiag/report/notebooks/`` and ``tokdiag_workloads/notebooks/``
(see :mod:`tokdiag.report.catalog`) start the same way::

    import tokdiag as td
    from tokdiag import charts
    from tokdiag.report import notebook as nb
    from tokdiag.report.summary import headlines_from_runs, write_summary

    nb.setup()

then run their workloads (a progress line shows while they run, and is gone
when they complete), show the answer first (``td.analysis.answer(runs)``),
then the top growers, then :func:`parameters_table` (what the run used),
then the rest, and write ``summary.json`` last.

- :func:`setup`: figures that draw in JupyterLab and in the offline HTML
  export (:func:`tokdiag.report.export.plotly_renderer_setup`), and pandas
  display options for the tables.
- :func:`parameters_table`: what a run actually used, as a small table (the
  values after papermill's injected parameters and after ``"auto"`` was
  resolved, never the defaults of the ``parameters`` cell).
- :func:`workload_options`: the ``your_workload`` notebook's ``"auto"``
  values for ``setup``, ``watch``, ``caches`` and the run's ``name``.
- :func:`track_workload`: the ``your_workload`` notebook's run: resolve the
  options, load the step function (:func:`tokdiag.recording.targets.load`),
  track it.
- :func:`names`: the runs' names of a notebook that runs several variants,
  under its ``name`` parameter (a prefix); :func:`named`: runs loaded from
  journals, renamed (a notebook's ``names`` parameter).
- :func:`bullets`: sentences (``compare_notes``, a notebook's own findings)
  shown as a list, every string escaped.
"""

from __future__ import annotations

import dataclasses
import html
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from tokdiag.errors import ConfigError, TokdiagWarning

__all__ = ["DEMO_OPTIONS", "DEMO_TARGET", "Bullets", "bullets", "named", "names", "parameters_table", "setup",
           "track_workload", "workload_options"]

DEMO_TARGET = "tokdiag_workloads.agents:AgentApp.run_task"
"""``your_workload``'s default target: the built-in agent app (it leaks), measured by name like any target."""

DEMO_OPTIONS: Mapping[str, Any] = {
    "setup": "tokdiag_workloads.agents:AgentApp",
    "watch": ("RewardAgent", "MemoryEventMessage"),
    "caches": ("tokdiag_workloads.agents.objects:_ENCODINGS",),
}
"""What ``"auto"`` means for :data:`DEMO_TARGET` (for any other target: no setup, nothing watched, no cache)."""

MAX_COLWIDTH = 160
"""Characters of a table cell pandas shows before cutting it (:func:`setup`)."""


def setup() -> None:
    """Prepare a notebook's kernel: plotly figures that export offline, pandas tables that show whole cells.

    Call it once, after the imports. Calling it again is harmless.
    """
    from tokdiag.report.export import plotly_renderer_setup

    plotly_renderer_setup()  # figures carry plotly.js once per page and render offline in the HTML export
    pd.set_option("display.max_colwidth", MAX_COLWIDTH)


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, (list, tuple)):
        return ", ".join(_shown(v) for v in value) if value else "(none)"
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return repr(value) if isinstance(value, (bool, int, float)) or value is None else str(value)


def parameters_table(used: Mapping[str, Any] | None = None, /, **more: Any) -> pd.DataFrame:
    """The parameters a run used, one row each (``parameter`` -> ``value`` as text), in the order given.

    Pass the values the notebook ran with: its variables after papermill set
    them, and what ``"auto"`` resolved to (e.g. :func:`workload_options`'s
    result), as a mapping, keywords, or both. Lists are written comma
    separated, an empty one as ``(none)``.

    >>> parameters_table({"target": "app:step", "watch": []}, steps=200)["value"].to_dict()
    {'target': 'app:step', 'watch': '(none)', 'steps': '200'}
    """
    values = {**dict(used or {}), **more}
    for key in values:
        if not isinstance(key, str):
            raise ConfigError(f"parameters_table: parameter names are strings, got {key!r}")
    return pd.DataFrame({"value": [_shown(v) for v in values.values()]},
                        index=pd.Index(list(values), name="parameter"))


def _names(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"{what}={value!r}: give a name, a list of names, [] for none, or 'auto'")


def workload_options(target: str, *, setup: str = "auto", watch: Any = "auto", caches: Any = "auto",
                     name: str = "") -> dict[str, Any]:
    """``your_workload``'s options with ``"auto"`` resolved: ``{"target", "setup", "watch", "caches", "name"}``.

    ``"auto"`` means :data:`DEMO_OPTIONS` when ``target`` is
    :data:`DEMO_TARGET`, and nothing otherwise (no setup, no watched class,
    no cache). ``setup`` comes back as ``""`` for none; ``watch`` and
    ``caches`` as lists. ``name`` ``""`` names the run after the target's
    attribute (``"myapp.jobs:handle"`` -> ``handle``).

    >>> workload_options("myapp.jobs:handle", watch="Job")
    {'target': 'myapp.jobs:handle', 'setup': '', 'watch': ['Job'], 'caches': [], 'name': 'handle'}
    >>> workload_options(DEMO_TARGET)["watch"]
    ['RewardAgent', 'MemoryEventMessage']
    """
    if not isinstance(target, str) or not target.strip():
        raise ConfigError(f"target={target!r}: give your step function as 'package.module:function'")
    demo = target.strip() == DEMO_TARGET
    if not isinstance(setup, str):
        raise ConfigError(f"setup={setup!r}: give 'package.module:factory', '' for none, or 'auto'")
    if not isinstance(name, str):
        raise ConfigError(f"name={name!r}: give the run's name as text, or '' to name it after the target")
    return {
        "target": target.strip(),
        "setup": (str(DEMO_OPTIONS["setup"]) if demo else "") if setup == "auto" else setup,
        "watch": (list(DEMO_OPTIONS["watch"]) if demo else []) if watch == "auto" else _names(watch, "watch"),
        "caches": (list(DEMO_OPTIONS["caches"]) if demo else []) if caches == "auto" else _names(caches, "caches"),
        "name": name.strip() or target.strip().rpartition(":")[2],
    }


def track_workload(target: str, *, setup: str = "auto", watch: Any = "auto", caches: Any = "auto", name: str = "",
                   steps: int, every: int | str = "auto", budget_mb: float | None = None,
                   journal: str | os.PathLike[str] | None = None, **options: Any) -> tuple[Any, dict[str, Any]]:
    """Track ``target`` for ``steps`` steps in this kernel; return ``(run, used)``.

    ``used`` is :func:`workload_options`' result plus ``steps``, ``every``
    and ``budget_mb``: what :func:`parameters_table` shows. The step
    function comes from :func:`tokdiag.recording.targets.load` (``setup``
    called once first), the run from :func:`tokdiag.track` (``journal``
    replaced if it is one; ``options`` are its other options). A
    :class:`~tokdiag.errors.TokdiagWarning` that the run journals (a watched
    name that matched nothing) is not printed: the run's answer says it,
    first thing. Any other warning is.
    """
    from tokdiag.recording.steps import track
    from tokdiag.recording.targets import load

    used = workload_options(target, setup=setup, watch=watch, caches=caches, name=name)
    step = load(used["target"], setup=used["setup"] or None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TokdiagWarning)
        run = track(step, steps=steps, every=every, watch=used["watch"], caches=used["caches"], budget_mb=budget_mb,
                    journal=journal, overwrite=journal is not None, name=used["name"], **options)
    said = set(run.warnings)
    for w in caught:
        if not (issubclass(w.category, TokdiagWarning) and str(w.message) in said):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return run, {**used, "steps": steps, "every": every, "budget_mb": budget_mb}


def names(prefix: str, labels: Sequence[str]) -> list[str]:
    """Run names for the variants of a notebook: ``prefix`` before each label (``"v2"`` -> ``"v2 fixed"``)."""
    if not isinstance(prefix, str):
        raise ConfigError(f"name={prefix!r}: give a prefix for the runs' names as text, or '' for none")
    return [f"{prefix.strip()} {label}" if prefix.strip() else label for label in labels]


def named(runs: Sequence[Any], labels: Sequence[str] = ()) -> list[Any]:
    """``runs`` with their names replaced by ``labels`` (in order; ``[]`` keeps the names they have).

    The timeline's ``run`` column is renamed too, so tables, charts and the
    answer all say the new name. Raises :class:`ConfigError` when the counts
    differ or two runs would share a name.
    """
    labels = list(labels)
    if not labels:
        out = list(runs)
    elif len(labels) != len(runs):
        raise ConfigError(f"names={labels!r}: give one name per run ({len(runs)}), in the order of the journals, "
                          "or [] to keep the names recorded in them")
    else:
        out = [dataclasses.replace(r, name=str(n), timeline=r.timeline.assign(run=str(n))) for r, n in zip(
            runs, labels, strict=True)]
    seen = [str(r.name) for r in out]
    twice = sorted({n for n in seen if seen.count(n) > 1})
    if twice:
        raise ConfigError(f"two runs are named {twice[0]!r}; give each its own name with the notebook's names "
                          f"parameter, e.g. names=['before', 'after']")
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class Bullets:
    """Sentences shown as a list: escaped HTML in a notebook, one ``- line`` each as text."""

    lines: tuple[str, ...]

    def _repr_html_(self) -> str:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in self.lines)
        return f'<ul class="tokdiag-notes">{items}</ul>'

    def __repr__(self) -> str:
        return "\n".join(f"- {line}" for line in self.lines)


def bullets(lines: Iterable[str]) -> Bullets:
    """Show ``lines`` (e.g. :func:`tokdiag.analysis.compare_notes`) as a list.

    >>> bullets(["Fixed in after: Job count.", "RSS: unchanged."])
    - Fixed in after: Job count.
    - RSS: unchanged.
    """
    return Bullets(tuple(str(line) for line in lines))
