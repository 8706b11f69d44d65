"""The sidecar ``summary.json`` a notebook writes so a batch index can show its headline verdicts.

A notebook's last cell builds the headlines of its runs with
:func:`headlines_from_runs` and writes them with :func:`write_summary`::

    from tokdiag.report.summary import headlines_from_runs, write_summary
    write_summary(output_dir, headlines_from_runs([app, fixed]), title="Agent objects, 300 tasks")

A notebook may add findings of its own (any label, e.g. ``("lazy cache
without a lock", "race", "up to 3 loads")``). ``tokdiag batch`` reads the
file back with :func:`read_summary` and puts the headlines on
``index.html``. A run that wrote journals but no summary gets the same
headlines computed from its journals (:func:`headlines_from_journals`).

What the headlines promise
--------------------------
The headlines are derived from the runs' findings
(:func:`tokdiag.analysis.findings.findings`), the same findings the answer
at the top of a report says in words (:func:`tokdiag.analysis.answer`): one
headline per judged series behind a finding, so the two cannot disagree. A
run never says "no leak" while one of its series is a leak, and never hides
what it warned about:

1. **Every leak** of every run is a headline, whatever its probe (process,
   watch, cache, census, native, allocator, allocation sites), most severe
   first: RSS, then byte series by growth per step, then the other units by
   growth per step. Left out: :data:`tokdiag.analysis.verdicts.NOISE_METRICS`
   (the collector's generation counters, never a headline), tokdiag's own
   buffers (the ``tracker`` probe: its cost is said apart, not as a finding)
   and a census type's ``unowned_bytes`` when its ``bytes`` got the same
   verdict (the same growth twice; left out of step 3 too).
2. **Every warning** of a run (a watched name that matched no class, ...)
   follows, as a headline with the verdict ``"warning"``: subject what
   warned (``watch``), detail the message. A run that did not complete
   (stopped by the memory budget, failed, interrupted, killed) is a
   headline labelled with its status, its message as the detail. They are headlines rather than a field of their own so
   that every reader of ``summary.json`` (the batch index, its JSON) shows
   them beside the verdicts without knowing about them.
3. Then, per run, the series named in ``always`` (RSS by default) whatever
   their verdict, and the series of at most ``limit`` more owners that grew
   and settled (``step``, ``bounded``): watched classes, caches and
   containers, largest first (a census type alone is start-up, not a
   headline).

With several runs each subject is prefixed with its run's name. The file is
plain JSON; ``answer`` is there when the notebook passed one
(:meth:`tokdiag.analysis.answer.Answer.as_dict`: its text and every finding)::

    {"tokdiag_summary": 1, "title": "...",
     "headlines": [{"subject": "...", "verdict": "leak", "detail": "..."},
                   {"subject": "watch", "verdict": "warning", "detail": "no class matches 'Jobb'; ..."}],
     "answer": {"text": "Leak: Job +10.5 KiB ...", "runs": [...], "all_clear": false, "findings": [...]}}

It is written atomically (temp file, then rename), so a run killed while
writing leaves the previous summary or none, never half a file.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokdiag.errors import ConfigError

if TYPE_CHECKING:
    from tokdiag.analysis.findings import Series
    from tokdiag.recording.run import Run

SUMMARY_FILE = "summary.json"
"""File name of the sidecar inside a run's ``output_dir``."""

FORMAT_VERSION = 1

VERDICTS: tuple[str, ...] = ("leak", "step", "bounded", "flat", "inconclusive")
"""The verdict labels of tokdiag's analysis, most alarming first (others are shown as given)."""

WARNING = "warning"
"""The verdict of a headline that carries a run's warning (see the module docstring)."""


@dataclass(frozen=True, slots=True)
class Headline:
    """One headline verdict: what (``subject``), the verdict label, and a short detail."""

    subject: str
    verdict: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Summary:
    """Headline verdicts of a run: the content of a ``summary.json``, or derived from journals.

    ``source`` is ``"summary.json"`` or ``"journals"`` (the index page says which).
    """

    headlines: tuple[Headline, ...]
    title: str = ""
    source: str = SUMMARY_FILE
    answer: str = ""
    """The answer's text when the notebook wrote one (``""`` otherwise)."""

    @property
    def warnings(self) -> tuple[Headline, ...]:
        """The headlines that carry a run's warning (verdict :data:`WARNING`)."""
        return tuple(h for h in self.headlines if h.verdict == WARNING)


HeadlineLike = Headline | Mapping[str, Any] | tuple[Any, ...]


def _headline(item: object, index: int) -> Headline:
    if isinstance(item, Headline):
        return item
    if isinstance(item, Mapping):
        verdict = item.get("verdict", item.get("label"))
        if "subject" not in item or verdict is None:
            raise ConfigError(f"headline {index} ({item!r}) needs keys 'subject' and 'verdict' (or 'label'); "
                              "e.g. {'subject': 'RewardAgent', 'verdict': 'leak', 'detail': '+2 KiB/step'}")
        return Headline(str(item["subject"]), str(verdict), str(item.get("detail", "") or ""))
    if isinstance(item, tuple) and len(item) in (2, 3):
        return Headline(*(str(part) for part in item))
    subject, verdict = getattr(item, "subject", None), getattr(item, "label", getattr(item, "verdict", None))
    if subject is not None and verdict is not None:  # a verdict object from tokdiag.analysis
        return Headline(str(subject), str(verdict), str(getattr(item, "detail", "") or ""))
    raise ConfigError(f"headline {index} is {item!r}; give a Headline, a (subject, verdict[, detail]) tuple, "
                      "or a mapping with 'subject' and 'verdict'")


def _rows(headlines: object) -> Iterable[object]:
    to_dict = getattr(headlines, "to_dict", None)
    if callable(to_dict) and hasattr(headlines, "columns"):  # a pandas DataFrame (a verdict table)
        return list(to_dict(orient="records"))
    if isinstance(headlines, Mapping):  # {subject: verdict}
        return [(k, v) for k, v in headlines.items()]
    if isinstance(headlines, (str, bytes)) or not isinstance(headlines, Iterable):
        raise ConfigError(f"headlines must be a list of (subject, verdict[, detail]) or a DataFrame, "
                          f"not {type(headlines).__name__}")
    return headlines


def write_summary(output_dir: str | os.PathLike[str], headlines: object, *, title: str = "",
                  answer: Any = None) -> Path:
    """Write ``summary.json`` into ``output_dir`` and return its path.

    ``headlines``: an iterable of :class:`Headline`, ``(subject, verdict[,
    detail])`` tuples or mappings with ``subject`` and ``verdict`` (or
    ``label``) keys; a ``{subject: verdict}`` dict; or a DataFrame with those
    columns (e.g. a verdict table). ``answer``: the runs'
    :class:`~tokdiag.analysis.answer.Answer`, written under ``"answer"``.

    >>> import tempfile
    >>> path = write_summary(tempfile.mkdtemp(), [("RewardAgent", "leak", "+2 KiB/step")])
    >>> read_summary(path.parent).headlines[0].verdict
    'leak'
    """
    items = tuple(_headline(item, i) for i, item in enumerate(_rows(headlines)))
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"tokdiag_summary": FORMAT_VERSION, "title": str(title),
                               "headlines": [asdict(h) for h in items]}
    if answer is not None:
        as_dict = getattr(answer, "as_dict", None)
        if not callable(as_dict):
            raise ConfigError(f"answer={answer!r}: pass the Answer of tokdiag.analysis.answer(runs), or None")
        payload["answer"] = as_dict()
    target = folder / SUMMARY_FILE
    fd, tmp = tempfile.mkstemp(prefix=".summary-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=1, ensure_ascii=False)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600; a report file is as readable as the rest
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read_summary(run_dir: str | os.PathLike[str]) -> Summary | None:
    """The summary in ``run_dir`` (a folder, or the ``summary.json`` itself); None if absent or unreadable.

    A batch index must render whatever a notebook managed to write, so a
    malformed file is treated as absent rather than raising.
    """
    path = Path(run_dir)
    if path.is_dir():
        path = path / SUMMARY_FILE
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        items = tuple(_headline(item, i) for i, item in enumerate(payload.get("headlines", [])))
        said = payload.get("answer") or {}
        text = str(said.get("text", "")) if isinstance(said, Mapping) else ""
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    return Summary(headlines=items, title=str(payload.get("title", "")), answer=text)


_PROBE_ORDER = {"watch": 0, "cache": 1, "census": 2, "disk": 3}


def _amount(value: float, unit: str) -> str:
    """``+20 KiB``, ``-3 objects``: a signed figure in the series' unit."""
    if math.isnan(value):
        return "?"
    sign = "+" if value >= 0 else "-"
    size = abs(value)
    if unit == "bytes":
        from tokdiag.analysis.format import format_value

        return sign + format_value(size, unit)
    return f"{sign}{size:.3g} {unit}"


def _is_rss(s: Series) -> bool:
    return (s.probe, s.metric) == ("process", "rss")


def _with_limit(headline: Headline, s: Series, run: Any, memory_limit: Any = None) -> Headline:
    """A leaking RSS headline says when it reaches ``memory_limit``, else the limit the journal recorded ("4 GiB
    limit in ~3 h")."""
    if not _is_rss(s):
        return headline
    from tokdiag.analysis import time_to_limit

    when = time_to_limit(run, memory_limit)
    if when is None or when.status not in ("limit", "over"):
        return headline
    return Headline(headline.subject, headline.verdict, f"{headline.detail}; {when.headline}")


def _headline_of(s: Series, prefix: str) -> Headline:
    subject = "RSS" if _is_rss(s) else f"{s.subject} {s.metric}"
    if s.verdict == "leak":
        detail = f"{_amount(s.per_step, s.unit)}/step"
    elif s.verdict in ("step", "bounded"):
        detail = f"{_amount(s.growth, s.unit)} then level"
    else:
        detail = f"{_amount(s.growth, s.unit)} overall" if s.verdict == "flat" else ""
    return Headline(prefix + subject, s.verdict, detail)


def _leak_severity(s: Series) -> tuple[int, float, int]:
    """Sort key of a leak: RSS first, then bytes per step, then other units per step; watch before census."""
    rate = 0.0 if math.isnan(s.per_step) else s.per_step
    kind = 0 if _is_rss(s) else 1 if s.unit == "bytes" else 2
    return kind, -rate, _PROBE_ORDER.get(s.probe, len(_PROBE_ORDER))


def _each_run(runs: list[Run]) -> list[Run]:
    """``runs`` with a Run whose timeline holds several runs (``td.load_service``: each process and the total)
    replaced by one Run each, so that each gets its own headlines (and its own time to the limit)."""
    import dataclasses

    out: list[Run] = []
    for run in runs:
        labels = list(dict.fromkeys(run.timeline["run"]))
        if len(labels) < 2:
            out.append(run)
        elif run.header.get("processes"):
            from tokdiag.recording.service import service_parts

            out += service_parts(run).values()
        else:
            out += [dataclasses.replace(run, name=str(label), timeline=run.timeline[run.timeline["run"] == label])
                    for label in labels]
    return out


def headlines_from_runs(runs: Run | Iterable[Run], *, always: Iterable[tuple[str, str]] = (("process", "rss"),),
                        limit: int = 5, memory_limit: int | float | str | None = None) -> tuple[Headline, ...]:
    """The headlines of one or more runs, in the order the module docstring gives.

    Derived from the runs' findings (:func:`tokdiag.analysis.findings.findings`,
    the same findings :func:`tokdiag.analysis.answer` says in words): one
    headline per judged series of a finding. ``always``: ``(probe, metric)``
    pairs shown for every run whatever their verdict (RSS by default; e.g.
    add ``("watch", "count")`` to show that a fix left the watched classes
    flat). ``limit``: at most this many further owners that grew and settled
    (``step``, ``bounded``) per run. Leaks and warnings are never limited.
    ``memory_limit``: the limit a leaking RSS headline counts down to
    (``"4GiB"``); default: the one each journal recorded (see
    :func:`tokdiag.analysis.time_to_limit`). A Run holding several runs
    (``td.load_service``) counts as its runs, each process and the total.

    >>> import pandas as pd
    >>> from tokdiag.recording.run import Run
    >>> rows = [("jobs", s, 0.0, "census", "app.Job", "count", float(s), "objects") for s in range(0, 50, 5)]
    >>> rows += [("jobs", s, 0.0, "process", "process", "rss", 1e8, "bytes") for s in range(0, 50, 5)]
    >>> tl = pd.DataFrame(rows, columns=["run", "step", "elapsed_s", "probe", "subject", "metric", "value", "unit"])
    >>> run = Run("jobs", tl, warnings=["watch: no class matches 'Jobb'; did you mean Job?"])
    >>> for h in headlines_from_runs(run):
    ...     print(h.verdict, h.subject, h.detail)
    leak app.Job count +1 objects/step
    warning watch no class matches 'Jobb'; did you mean Job?
    flat RSS +0 B overall
    """
    from tokdiag.analysis.findings import findings
    from tokdiag.recording.run import Run

    runs = _each_run([runs] if isinstance(runs, Run) else list(runs))
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ConfigError(f"limit={limit!r}: pass how many settled series to show per run, e.g. limit=5 (0 for none)")
    shown = [(str(probe), str(metric)) for probe, metric in always]
    leaks: list[tuple[tuple[int, float, int], Headline]] = []
    warned: list[Headline] = []
    rest: list[Headline] = []
    for run in runs:
        prefix = f"{run.name}: " if len(runs) > 1 else ""
        found = findings(run, always=shown, limit=limit)
        judged = [s for f in found for s in f.series if s.role != "duplicate"]
        leaks += [
            (_leak_severity(s), _with_limit(_headline_of(s, prefix), s, run, memory_limit))
            for s in judged
            if s.verdict == "leak"
        ]
        for f in found:
            if f.kind == "warning":
                warned.append(Headline(prefix + f.owner, WARNING, f.detail))
            elif f.kind == "status":
                warned.append(Headline(prefix + "run", f.verdict, f.detail))
        rest += [_headline_of(s, prefix) for pair in shown for s in judged
                 if (s.probe, s.metric) == pair and s.verdict != "leak"]
        rest += [_headline_of(s, prefix) for f in found if f.kind == "settled" for s in f.series
                 if s.role == "main" and s.verdict in ("step", "bounded") and (s.probe, s.metric) not in shown]
    series: list[Headline] = []
    for headline in [*(h for _, h in sorted(leaks, key=lambda item: item[0])), *rest]:
        if all(h.subject != headline.subject for h in series):
            series.append(headline)  # watch and census may both judge a class: keep the first
    n_leaks = sum(h.verdict == "leak" for h in series)
    return (*series[:n_leaks], *dict.fromkeys(warned), *series[n_leaks:])


def headlines_from_journals(paths: Iterable[str | os.PathLike[str]], *, limit: int = 5) -> tuple[Headline, ...]:
    """:func:`headlines_from_runs` of the runs in journal files, for a run that wrote no ``summary.json``.

    A journal that cannot be read is skipped (an index page shows what it
    can). ``limit`` as in :func:`headlines_from_runs`.
    """
    from tokdiag.errors import TokdiagError
    from tokdiag.recording.run import load

    runs = []
    for journal in paths:
        try:
            runs.append(load(journal))
        except (TokdiagError, OSError, ValueError, KeyError):
            continue
    return headlines_from_runs(runs, limit=limit)
