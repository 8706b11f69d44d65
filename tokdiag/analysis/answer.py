"""The answer: what one or several runs say, in words, before any table or chart.

>>> import pandas as pd
>>> from tokdiag.recording.run import Run
>>> cols = ["run", "step", "elapsed_s", "probe", "subject", "metric", "value", "unit"]
>>> rows = [("jobs", s, s / 10, "watch", "myapp.jobs.Job", "count", float(s), "objects") for s in range(0, 101, 5)]
>>> rows += [("jobs", s, s / 10, "watch", "myapp.jobs.Job", "bytes", 10752.0 * s, "bytes") for s in range(0, 101, 5)]
>>> rows += [("jobs", s, s / 10, "process", "process", "rss", 5e7 + 12288.0 * s, "bytes") for s in range(0, 101, 5)]
>>> chain = {"root": "module myapp.jobs", "root_kind": "module", "target_type": "Job",
...          "edges": [{"kind": "attr", "label": "_DONE", "source_type": "module"},
...                    {"kind": "index", "label": "0", "source_type": "list"}]}
>>> run = Run("jobs", pd.DataFrame(rows, columns=cols), retention={"myapp.jobs.Job": [chain]})
>>> print(answer(run).text)  # doctest: +NORMALIZE_WHITESPACE
Leak: Job +10.5 KiB (+1 object) per step, held by module myapp.jobs -> _DONE[0].
Process: RSS leaks, +117 MiB per 10,000 steps (+12 KiB per step).
RSS over the run (step 0 to 100): +1.17 MiB; mostly Job 1.03 MiB (88%); 12% of it not attributed
(native memory, or objects no probe sees).

:func:`answer` builds the findings of each run with
:func:`tokdiag.analysis.findings.findings` (the same findings the
``summary.json`` headlines come from) and renders them: :attr:`Answer.text`
(one finding a line), :attr:`Answer.markdown` (a list, names in backticks),
:attr:`Answer.html` (a ``<div class="tokdiag-answer">``, names in
``<code>``, every workload string escaped), :meth:`Answer.as_dict` (for
``summary.json``). In a notebook the answer displays as its HTML (with the
Markdown beside it in the output, and the text as ``text/plain``).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

from tokdiag.analysis.findings import Finding, Text, code, findings, sentence
from tokdiag.analysis.owners import runs_of
from tokdiag.errors import ConfigError

__all__ = ["MAX_LEAK_LINES", "Answer", "answer"]

MAX_LEAK_LINES = 6
"""Leaks of one run written out in full; the rest are named on one line (never left out)."""

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~])")


def _md(pieces: Text) -> str:
    return "".join(f"`{t.replace('`', '')}`" if is_code else _MD_SPECIAL.sub(r"\\\1", t) for t, is_code in pieces)


def _html(pieces: Text) -> str:
    return "".join(f"<code>{html.escape(t)}</code>" if is_code else html.escape(t) for t, is_code in pieces)


def _plain(pieces: Text) -> str:
    return "".join(t for t, _ in pieces)


@dataclass(frozen=True, slots=True)
class Answer:
    """The findings of one or more runs (``runs``: their names, in order), renderable as text, Markdown or HTML."""

    findings: tuple[Finding, ...]
    runs: tuple[str, ...]

    # -- views ---------------------------------------------------------------
    @property
    def leaks(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.kind == "leak" or (f.kind == "process" and f.verdict == "leak"))

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.kind in ("warning", "status"))

    @property
    def all_clear(self) -> bool:
        """True only when every run's findings say ``clear`` and nothing leaks, warned or stopped early."""
        clear = {f.run for f in self.findings if f.kind == "clear"}
        return clear == set(self.runs) and not self.leaks and not self.warnings

    def _lines(self) -> list[tuple[str, Text, str]]:
        """(run, sentence, verdict) per line, leaks past :data:`MAX_LEAK_LINES` collapsed into one."""
        out: list[tuple[str, Text, str]] = []
        for run in self.runs:
            mine = [f for f in self.findings if f.run == run]
            leaks = [f for f in mine if f.kind == "leak"]
            for f in mine:
                if f.kind == "leak" and leaks.index(f) >= MAX_LEAK_LINES:
                    continue
                out.append((run, f.pieces, f.verdict))
                if f.kind == "leak" and leaks.index(f) == MAX_LEAK_LINES - 1 and len(leaks) > MAX_LEAK_LINES:
                    more = leaks[MAX_LEAK_LINES:]
                    names: list[str] = []
                    for g in more:
                        names += [", " if names else "", code(g.name or g.owner)]
                    out.append((run, sentence(f"{len(more)} more leaks: ", *names, " (see the top growers)."), "leak"))
        return out

    @property
    def text(self) -> str:
        """Plain text, one finding a line; with several runs each run's lines follow its name."""
        lines = self._lines()
        if len(self.runs) <= 1:
            return "\n".join(_plain(p) for _, p, _ in lines)
        out: list[str] = []
        for run in self.runs:
            out.append(f"{run}:")
            out += [f"  {_plain(p)}" for r, p, _ in lines if r == run]
        return "\n".join(out)

    @property
    def markdown(self) -> str:
        """A Markdown list (per run under its name in bold when there are several); names in backticks."""
        lines = self._lines()
        out: list[str] = []
        for run in self.runs:
            if len(self.runs) > 1:
                out += ["", f"**{_md(sentence(run))}**", ""]
            out += [f"- {_md(p)}" for r, p, _ in lines if r == run]
        return "\n".join(out).strip("\n")

    @property
    def html(self) -> str:
        """``<div class="tokdiag-answer">``: a list per run, each item with its verdict as class; all text escaped."""
        lines = self._lines()
        parts = ['<div class="tokdiag-answer">']
        for run in self.runs:
            if len(self.runs) > 1:
                parts.append(f'<p class="run"><b>{html.escape(run)}</b></p>')
            items = "".join(f'<li class="{html.escape(v)}">{_html(p)}</li>' for r, p, v in lines if r == run)
            parts.append(f"<ul>{items}</ul>")
        parts.append("</div>")
        return "".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe form for ``summary.json``: the text, the runs and every finding (:meth:`Finding.as_dict`)."""
        return {"text": self.text, "runs": list(self.runs), "all_clear": self.all_clear,
                "findings": [f.as_dict() for f in self.findings]}

    def __str__(self) -> str:
        return self.text

    def _repr_markdown_(self) -> str:
        return self.markdown

    def _repr_html_(self) -> str:
        """A notebook shows :attr:`html` (JupyterLab and nbconvert prefer it to the Markdown): the same lines,
        each ``<li>`` classed with its verdict, every workload string escaped once."""
        return self.html

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """IPython's plain-text form (a notebook's ``text/plain``, a terminal): the text, not the dataclass."""
        printer.text(self.text)


def answer(run_or_runs: Any, *, project_to: int = 10_000, limit: int = 5) -> Answer:
    """What the run(s) say, in words: leaks first (with what holds them), or what was measured and found flat.

    ``run_or_runs``: a :class:`tokdiag.Run`, a journal path, a list of
    them, or a dict ``{label: run}`` (the labels name the runs).
    ``project_to``: the step count projections are given at. ``limit``: at
    most this many settled owners (caches that filled) per run. See
    :mod:`tokdiag.analysis.findings` for what is said and in which order.
    """
    runs = runs_of(run_or_runs)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ConfigError(f"limit={limit!r}: pass how many settled owners to name per run, e.g. limit=5 (0 for none)")
    found: list[Finding] = []
    names: list[str] = []
    for run in runs:
        name = str(run.name)
        if name in names:
            raise ConfigError(f"two runs are both named {name!r}; pass a dict {{label: run}} to tell them apart, "
                              "e.g. answer({'before': a, 'after': b})")
        names.append(name)
        found += findings(run, project_to=project_to, limit=limit)
    return Answer(tuple(found), tuple(names))
