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
A run never says "no leak" while one of its series is a leak, and never
hides what it warned about:

1. **Every leak** of every run is a headline, whatever its probe (process,
   watch, cache, census, allocation sites, tokdiag's own), most severe first:
   RSS, then byte series by growth per step, then the other units by growth
   per step. Left out: :data:`tokdiag.analysis.verdicts.NOISE_METRICS`
   (the collector's generation counters, never a headline), and a census
   type's ``unowned_bytes`` when its ``bytes`` got the same verdict (the
   same growth twice; left out of step 3 too).
2. **Every warning** of a run (a watched name that matched no class, ...)
   follows, as a headline with the verdict ``"warning"``: subject what
   warned (``watch``), detail the message. A run that did not complete
   (stopped by the memory budget, failed, interrupted, killed) is a
   headline labelled with its status, its message as the detail. They are headlines rather than a field of their own so
   that every reader of ``summary.json`` (the batch index, its JSON) shows
   them beside the verdicts without knowing about them.
3. Then, per run, the series named in ``always`` (RSS by default) whatever
   their verdict, and at most ``limit`` more series that grew and settled
   (``step``, ``bounded``) in the ``watch``, ``cache`` and ``census`` probes,
   largest first.

With several runs each subject is prefixed with its run's name. The file is
plain JSON::

    {"tokdiag_summary": 1, "title": "...",
     "headlines": [{"subject": "...", "verdict": "leak", "detail": "..."},
                   {"subject": "watch", "verdict": "warning", "detail": "no class matches 'Jobb'; ..."}]}

It is written atomically (temp file, then rename), so a run killed while
writing leaves the previous summary or none, never half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokdiag.errors import ConfigError

if TYPE_CHECKING:
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


def write_summary(output_dir: str | os.PathLike[str], headlines: object, *, title: str = "") -> Path:
    """Write ``summary.json`` into ``output_dir`` and return its path.

    ``headlines``: an iterable of :class:`Headline`, ``(subject, verdict[,
    detail])`` tuples or mappings with ``subject`` and ``verdict`` (or
    ``label``) keys; a ``{subject: verdict}`` dict; or a DataFrame with those
    columns (e.g. a verdict table).

    >>> import tempfile
    >>> path = write_summary(tempfile.mkdtemp(), [("RewardAgent", "leak", "+2 KiB/step")])
    >>> read_summary(path.parent).headlines[0].verdict
    'leak'
    """
    items = tuple(_headline(item, i) for i, item in enumerate(_rows(headlines)))
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"tokdiag_summary": FORMAT_VERSION, "title": str(title),
               "headlines": [asdict(h) for h in items]}
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
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    return Summary(headlines=items, title=str(payload.get("title", "")))


_SETTLED = {"step": 0, "bounded": 1}
_PROBE_ORDER = {"watch": 0, "cache": 1, "census": 2, "disk": 3}


def _amount(value: float, unit: str) -> str:
    """``+20 KiB``, ``-3 objects``: a signed figure in the series' unit."""
    if value != value:  # NaN
        return "?"
    sign = "+" if value >= 0 else "-"
    size = abs(value)
    if unit == "bytes":
        for div, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if size >= div:
                return f"{sign}{size / div:.3g} {suffix}"
        return f"{sign}{size:.3g} B"
    return f"{sign}{size:.3g} {unit}"


def _is_rss(row: Mapping[str, Any]) -> bool:
    return (row["probe"], row["metric"]) == ("process", "rss")


def _with_limit(headline: Headline, row: Mapping[str, Any], run: Any, memory_limit: Any = None) -> Headline:
    """A leaking RSS headline says when it reaches ``memory_limit``, else the limit the journal recorded ("4 GiB
    limit in ~3 h")."""
    if (row["probe"], row["metric"]) != ("process", "rss"):
        return headline
    from tokdiag.analysis import time_to_limit

    when = time_to_limit(run, memory_limit)
    if when is None or when.status not in ("limit", "over"):
        return headline
    return Headline(headline.subject, headline.verdict, f"{headline.detail}; {when.headline}")


def _headline_of(row: Mapping[str, Any], prefix: str) -> Headline:
    subject = "RSS" if _is_rss(row) else f"{row['subject']} {row['metric']}"
    verdict, unit = str(row["verdict"]), str(row["unit"])
    if verdict == "leak":
        detail = f"{_amount(float(row['per_step']), unit)}/step"
    elif verdict in ("step", "bounded"):
        detail = f"{_amount(float(row['growth']), unit)} then level"
    else:
        detail = f"{_amount(float(row['growth']), unit)} overall" if verdict == "flat" else ""
    return Headline(prefix + subject, verdict, detail)


def _leak_severity(row: Mapping[str, Any]) -> tuple[int, float, int]:
    """Sort key of a leak: RSS first, then bytes per step, then other units per step; watch before census."""
    rate = float(row["per_step"]) if row["per_step"] == row["per_step"] else 0.0
    kind = 0 if _is_rss(row) else 1 if row["unit"] == "bytes" else 2
    return kind, -rate, _PROBE_ORDER.get(str(row["probe"]), len(_PROBE_ORDER))


def _warning_headline(message: str, prefix: str) -> Headline:
    """``"watch: no class matches ..."`` -> subject ``watch``, detail the rest; other messages under ``run``."""
    head, sep, rest = message.partition(": ")
    if sep and head.isidentifier():
        return Headline(prefix + head, WARNING, rest)
    return Headline(prefix + "run", WARNING, message)


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

    ``always``: ``(probe, metric)`` pairs shown for every run whatever their
    verdict (RSS by default; e.g. add ``("watch", "count")`` to show that a
    fix left the watched classes flat). ``limit``: at most this many further
    series that grew and settled (``step``, ``bounded``) per run. Leaks and
    warnings are never limited. ``memory_limit``: the limit a leaking RSS
    headline counts down to (``"4GiB"``); default: the one each journal
    recorded (see :func:`tokdiag.analysis.time_to_limit`). A Run holding
    several runs (``td.load_service``) counts as its runs, each process
    and the total.

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
    from tokdiag.analysis import verdicts
    from tokdiag.analysis.verdicts import NOISE_METRICS
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
        table = verdicts(run.timeline)
        rows = table.to_dict(orient="records")
        census_bytes = {(r["subject"], r["verdict"]) for r in rows if (r["probe"], r["metric"]) == ("census", "bytes")}
        rows = [r for r in rows if (r["probe"], r["metric"]) not in NOISE_METRICS and not (
            (r["probe"], r["metric"]) == ("census", "unowned_bytes") and (r["subject"], r["verdict"]) in census_bytes)]
        leaks += [(_leak_severity(r), _with_limit(_headline_of(r, prefix), r, run, memory_limit)) for r in rows
                  if r["verdict"] == "leak"]
        for message in dict.fromkeys(run.warnings):
            warned.append(_warning_headline(message, prefix))
        if run.status != "completed":
            warned.append(Headline(prefix + "run", run.status, run.message))
        named = [r for pair in shown for r in rows if (r["probe"], r["metric"]) == pair and r["verdict"] != "leak"]
        settled = sorted((r for r in rows if r["verdict"] in _SETTLED and r["probe"] in _PROBE_ORDER),
                         key=lambda r: (_SETTLED[r["verdict"]], _PROBE_ORDER[r["probe"]],
                                        -abs(float(r["growth"]) if r["growth"] == r["growth"] else 0.0)))
        rest += [_headline_of(r, prefix) for r in named]
        rest += [_headline_of(r, prefix) for r in settled if (r["probe"], r["metric"]) not in shown][:limit]
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
