"""The sidecar ``summary.json`` a notebook writes so a batch index can show its headline verdicts.

A notebook's last cell calls :func:`write_summary` with a few headlines, one
per series that matters::

    from tokdiag.report.summary import write_summary
    write_summary(output_dir, [
        ("app.agents.RewardAgent", "leak", "+2.1 KiB/step"),
        ("tiktoken.registry:ENCODINGS", "bounded", "settles at 1 entry"),
    ], title="Agent objects, 300 tasks")

``tokdiag batch`` reads it back with :func:`read_summary` and puts the
headlines on ``index.html``. A run that wrote journals but no summary gets
headlines computed from its journals (:func:`headlines_from_journals`). The file is plain JSON::

    {"tokdiag_summary": 1, "title": "...",
     "headlines": [{"subject": "...", "verdict": "leak", "detail": "..."}]}

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
from typing import Any

from tokdiag.errors import ConfigError

SUMMARY_FILE = "summary.json"
"""File name of the sidecar inside a run's ``output_dir``."""

FORMAT_VERSION = 1

VERDICTS: tuple[str, ...] = ("leak", "step", "bounded", "flat", "inconclusive")
"""The verdict labels of tokdiag's analysis, most alarming first (others are shown as given)."""


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


_SEVERITY = {"leak": 0, "step": 1, "bounded": 2}
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


def _headline_of(row: Mapping[str, Any], prefix: str) -> Headline:
    subject = "RSS" if (row["probe"], row["metric"]) == ("process", "rss") else f"{row['subject']} {row['metric']}"
    verdict, unit = str(row["verdict"]), str(row["unit"])
    if verdict == "leak":
        detail = f"{_amount(float(row['per_step']), unit)}/step"
    elif verdict in ("step", "bounded"):
        detail = f"{_amount(float(row['growth']), unit)} then level"
    else:
        detail = f"{_amount(float(row['growth']), unit)} overall" if verdict == "flat" else ""
    return Headline(prefix + subject, verdict, detail)


def headlines_from_journals(paths: Iterable[str | os.PathLike[str]], *, limit: int = 5) -> tuple[Headline, ...]:
    """Headline verdicts computed from journal files, for a run that wrote no ``summary.json``.

    Per journal: the process RSS verdict first, then the growing series of
    the ``watch``, ``cache``, ``census`` and ``disk`` probes (leaks, then steps, then
    bounded; larger growth first), at most ``limit`` in all. A leaking RSS
    says when it reaches the memory limit recorded in the journal (when one is set). With several
    journals each subject is prefixed with the journal's run name. A journal
    that cannot be read is skipped (an index page shows what it can).
    """
    from tokdiag.analysis import time_to_limit, verdicts
    from tokdiag.errors import TokdiagError
    from tokdiag.record.run import load

    judged = []
    for journal in paths:
        try:
            run = load(journal)
            judged.append((run.name, verdicts(run.timeline), run))
        except (TokdiagError, OSError, ValueError, KeyError):
            continue
    found: list[Headline] = []
    for name, table, run in judged:
        prefix = f"{name}: " if len(judged) > 1 else ""
        rows = table.to_dict(orient="records")
        rss = [r for r in rows if (r["probe"], r["metric"]) == ("process", "rss")]
        growing = sorted((r for r in rows if r["verdict"] in _SEVERITY and r["probe"] in _PROBE_ORDER),
                         key=lambda r: (_SEVERITY[r["verdict"]], _PROBE_ORDER[r["probe"]],
                                        -abs(float(r["growth"]) if r["growth"] == r["growth"] else 0.0)))
        for row in [*rss, *growing]:  # watch and census may both judge a class: keep the first
            headline = _headline_of(row, prefix)
            when = time_to_limit(run) if row in rss and row["verdict"] == "leak" else None
            if when is not None and when.status in ("limit", "over"):  # "4 GiB limit in ~3 h"
                headline = Headline(headline.subject, headline.verdict, f"{headline.detail}; {when.headline}")
            if all(h.subject != headline.subject for h in found):
                found.append(headline)
    return tuple(found[:limit])
