"""A batch's index page: ``index.html`` for people, ``index.json`` for programs.

``index.html`` lists every run, most alarming first (:data:`FOUND_ORDER`:
a failed run, then leak, warning, undecided, settled, clear; plan order
within each): notebook, parameters, status (a failed run names its cell and
exception), the first line of the run's answer, whole, then its headline
verdicts (from the run's
``summary.json`` or computed from its journals, see
:func:`tokdiag.report.batch.run_one`), duration, where it ran (in a batch on
a Dask cluster: host, worker, attempts), and relative links to its report,
executed notebook and journals; ``index.json`` holds the same.

The page is built from the results (:meth:`IndexPage.from_results`: every
text already free of this machine's absolute paths) and rendered separately
(:meth:`IndexPage.render`) with the autoescaped template
``templates/batch_index.html.j2``. Verdicts wear the colours of the report
charts (:data:`tokdiag.charts.LABEL_COLORS`).

>>> page = IndexPage.from_results([], Path("/srv/out"), title="<nightly>", stamp="2025-01-01 00:00 UTC")
>>> page.counts
'0 runs: 0 ok, 0 failed'
>>> "<title>&lt;nightly&gt;</title>" in page.render()
True
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tokdiag.charts import LABEL_COLORS
from tokdiag.report.folders import GENERATOR, refuse_foreign
from tokdiag.report.pages import content_security_policy, environment
from tokdiag.report.plan import format_parameters
from tokdiag.report.results import RunResult
from tokdiag.report.scrub import path_rules, scrub_value
from tokdiag.report.summary import Summary

__all__ = ["FOUND_ORDER", "SHOWN_HEADLINES", "IndexPage", "IndexRow", "LegendEntry", "Link", "ShownHeadline",
           "index_records", "write_index"]

SHOWN_HEADLINES = 4
"""Headlines shown in a row of the index; the rest fold into a ``<details>`` (no script needed)."""

FOUND_ORDER = ("failed", "leak", "warning", "undecided", "settled", "clear")
"""What a run found, most alarming first: the order of the index's rows (:func:`found`)."""

_FOUND_OF_VERDICT = {"leak": "leak", "new leak": "leak", "more growth": "leak", "warning": "warning",
                     "inconclusive": "undecided", "step": "settled", "bounded": "settled", "less growth": "settled",
                     "flat": "clear", "fixed": "clear", "unchanged": "clear", "not compared": "clear"}
"""What a headline's verdict says about its run; a label not here (a run's status such as ``stopped``, a
notebook's own finding such as ``race``) is a warning."""


def found(result: RunResult) -> str:
    """What ``result`` found, one of :data:`FOUND_ORDER`: ``failed``, else its most alarming headline's.

    >>> from tokdiag.report.plan import RunSpec
    >>> from tokdiag.report.summary import Headline
    >>> spec = RunSpec(index=1, notebook=Path("n.ipynb"), label="n", parameters={}, folder_name="01-n")
    >>> found(RunResult(spec=spec, folder=Path("01-n"), duration_s=1.0,
    ...                 summary=Summary(headlines=(Headline("RSS", "bounded"), Headline("watch", "warning")))))
    'warning'
    """
    if result.status != "ok":
        return "failed"
    kinds = {_FOUND_OF_VERDICT.get(h.verdict, "warning") for h in (result.summary.headlines if result.summary else ())}
    return next((kind for kind in FOUND_ORDER if kind in kinds), "clear")


def answer_line(text: str) -> str:
    """The first line of a run's answer, whole; of several runs' answer, the first run's first line, named.

    >>> answer_line("Leak: Job +10 KiB per step.\\nProcess: +1 MiB per 10,000 steps.")
    'Leak: Job +10 KiB per step.'
    >>> answer_line("baseline:\\n  Leak: Job +10 KiB per step.\\nfixed:\\n  No leak.")
    'baseline: Leak: Job +10 KiB per step.'
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    if len(lines) > 1 and lines[0].endswith(":") and lines[1].startswith(" "):
        return f"{lines[0]} {lines[1].strip()}"
    return lines[0].strip()


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

_OTHER_HELP = "a finding the notebook names itself (e.g. race, mutated); its detail says what"


def _css_class(verdict: str) -> str:
    """The CSS class of a verdict badge: ``v-<label>`` for a label with a colour, ``v-other`` otherwise."""
    return f"v-{verdict.replace(' ', '-')}" if verdict in _ALL_COLORS else "v-other"


def _href(path: Path, base: Path) -> str:
    return quote(os.path.relpath(path, base).replace(os.sep, "/"))


@dataclass(frozen=True, slots=True)
class Link:
    """A relative link of a row: its target (URL-quoted) and its text."""

    href: str
    text: str


@dataclass(frozen=True, slots=True)
class ShownHeadline:
    """One headline of a row, as the page shows it (``css``: the badge's colour class)."""

    verdict: str
    subject: str
    detail: str
    css: str


@dataclass(frozen=True, slots=True)
class LegendEntry:
    """A label below the table and what it means (``css``: the badge's colour class)."""

    label: str
    text: str
    css: str


@dataclass(frozen=True, slots=True)
class IndexRow:
    """One run, as the index shows it."""

    index: int
    notebook: str
    title: str
    folder: str
    parameters: tuple[str, ...]
    status: str
    error: str
    found: str
    answer: str
    headlines: tuple[ShownHeadline, ...]
    from_journals: bool
    duration_s: float
    host: str
    worker: str
    attempts: int
    files: tuple[Link, ...]
    journals: tuple[Link, ...]


@dataclass(frozen=True, slots=True)
class IndexPage:
    """The index of a batch, every text in it as it will be shown; :meth:`render` makes the HTML."""

    title: str
    plan: str
    stamp: str
    rows: tuple[IndexRow, ...]
    legend: tuple[LegendEntry, ...]

    @property
    def counts(self) -> str:
        failed = sum(1 for r in self.rows if r.status != "ok")
        return f"{len(self.rows)} runs: {len(self.rows) - failed} ok, {failed} failed"

    @property
    def placement(self) -> bool:
        """Whether the page has a "ran on" column: a batch on a Dask cluster says where each run ran."""
        return any(r.worker for r in self.rows)

    @classmethod
    def from_results(cls, results: Sequence[RunResult], base: Path, *, title: str = "tokdiag batch",
                     plan_name: str = "", stamp: str = "", clean: Callable[[str], str] = str) -> IndexPage:
        """The page for ``results``, links relative to ``base``; ``clean`` rewrites every text shown (paths)."""
        ordered = sorted(results, key=lambda r: FOUND_ORDER.index(found(r)))  # stable: plan order within each
        rows = tuple(_row(r, base, clean) for r in ordered)
        shown = {h.verdict for r in results if r.summary for h in r.summary.headlines}
        helps = {**_VERDICT_HELP, **{k: v for k, v in _CHANGE_HELP.items() if k in shown}}
        if shown - _ALL_COLORS.keys():
            helps["other"] = _OTHER_HELP
        legend = tuple(LegendEntry(label, text, css=f"v-{label.replace(' ', '-')}") for label, text in helps.items())
        return cls(title=clean(title), plan=clean(plan_name), stamp=clean(stamp), rows=rows, legend=legend)

    def render(self) -> str:
        """The HTML page: no script, nothing loaded (its Content-Security-Policy forbids both)."""
        return environment().get_template("tokdiag/batch_index.html.j2").render(
            page=self, colors=_ALL_COLORS, shown=SHOWN_HEADLINES, policy=content_security_policy(),
            found_order=[kind for kind in FOUND_ORDER if kind != "failed"],
            generator=GENERATOR)


def _headlines(summary: Summary | None, clean: Callable[[str], str]) -> tuple[ShownHeadline, ...]:
    if summary is None:
        return ()
    return tuple(ShownHeadline(verdict=clean(h.verdict), subject=clean(h.subject), detail=clean(h.detail),
                               css=_css_class(h.verdict)) for h in summary.headlines)


def _row(result: RunResult, base: Path, clean: Callable[[str], str]) -> IndexRow:
    spec = result.spec
    files = []
    if result.html is not None:
        files.append(Link(clean(_href(result.html, base)), "report"))
    if result.notebook is not None:
        files.append(Link(clean(_href(result.notebook, base)), "notebook"))
    summary = result.summary
    return IndexRow(
        index=spec.index, notebook=clean(spec.notebook.stem),
        title=clean(summary.title) if summary is not None and summary.title else "",
        folder=clean(spec.folder_name),
        parameters=tuple(clean(format_parameters({k: v})) for k, v in spec.parameters.items()),
        status=result.status, error="" if result.failure is None else clean(result.failure.describe()),
        found=found(result), answer=clean(answer_line(summary.answer)) if summary is not None else "",
        headlines=_headlines(summary, clean), from_journals=summary is not None and summary.source == "journals",
        duration_s=result.duration_s, host=clean(result.host), worker=clean(result.worker), attempts=result.attempts,
        files=tuple(files),
        journals=tuple(Link(clean(_href(j, base)), clean(j.name)) for j in result.journals))


def index_records(results: Sequence[RunResult], base: Path) -> list[dict[str, Any]]:
    """What ``index.json`` holds for each run (links relative to ``base``; absolute paths not yet scrubbed)."""
    return [{
        "index": r.spec.index, "notebook": r.spec.label, "folder": r.spec.folder_name,
        "parameters": dict(r.spec.parameters), "status": r.status, "duration_s": round(r.duration_s, 3),
        "host": r.host, "worker": r.worker, "attempts": r.attempts, "found": found(r),
        "answer": "" if r.summary is None else r.summary.answer,
        "error": None if r.failure is None else {"where": r.failure.where, "ename": r.failure.ename,
                                                 "evalue": r.failure.evalue, "cell_index": r.failure.cell_index},
        "html": _href(r.html, base) if r.html else None,
        "executed_notebook": _href(r.notebook, base) if r.notebook else None,
        "journals": [_href(j, base) for j in r.journals],
        "headlines": [] if r.summary is None else [
            {"subject": h.subject, "verdict": h.verdict, "detail": h.detail} for h in r.summary.headlines],
    } for r in results]


def write_index(results: Sequence[RunResult], out_dir: str | os.PathLike[str], *, title: str = "tokdiag batch",
                plan_name: str = "", now: Callable[[], _dt.datetime] | None = None) -> Path:
    """Write ``index.html`` and ``index.json`` for ``results`` into ``out_dir``; return the HTML path.

    Either file, if it exists and tokdiag did not write it, is a
    :class:`~tokdiag.errors.ConfigError` (nothing is overwritten).

    Every text is escaped, links are relative, absolute paths of this machine
    are shown relative or as ``$TMPDIR``/``~``/``$PYTHON`` (as in
    :func:`tokdiag.report.scrub.scrub_notebook`), and the page loads nothing and
    runs no script (its Content-Security-Policy forbids both).
    """
    base = Path(out_dir).resolve()
    refuse_foreign([base / "index.html", base / "index.json"], fix="choose another output folder")
    rules = path_rules(base, ())  # plan values may hold absolute paths: show them relative or symbolic
    base.mkdir(parents=True, exist_ok=True)
    stamp = (now or (lambda: _dt.datetime.now().astimezone()))().strftime("%Y-%m-%d %H:%M %Z").strip()
    page = IndexPage.from_results(results, base, title=title, plan_name=plan_name, stamp=stamp,
                                  clean=lambda text: str(scrub_value(text, rules)))
    index = base / "index.html"
    index.write_text(page.render(), encoding="utf-8")
    payload = scrub_value(json.loads(json.dumps({"generator": GENERATOR, "title": title, "plan": plan_name,
                                                 "runs": index_records(results, base)}, default=str)), rules)
    (base / "index.json").write_text(json.dumps(payload, indent=1), encoding="utf-8")
    return index
