"""Reports from journals alone: ``tokdiag report run.jsonl`` runs the bundled journal-report notebook on them."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tokdiag.errors import ConfigError, TokdiagError
from tokdiag.report.export import export_html
from tokdiag.report.folders import GENERATOR, refuse_foreign
from tokdiag.report.scrub import scrub_notebook

__all__ = ["JOURNAL_REPORT_NOTEBOOK", "check_journals", "report_from_journals", "run_report_notebook"]

JOURNAL_REPORT_NOTEBOOK = Path(__file__).parent / "notebooks" / "journal_report.ipynb"
"""The bundled notebook ``tokdiag report`` runs; its parameters are ``journals`` and ``output_dir``."""


def check_journals(journals: Iterable[str | os.PathLike[str]]) -> None:
    """A :class:`ConfigError` naming, as given, the first journal that is missing or is not a tokdiag journal.

    Reads each one here, before a kernel starts.
    """
    from tokdiag.errors import JournalError
    from tokdiag.recording.journal import read_journal

    for journal in journals:
        if not Path(journal).is_file():
            raise ConfigError(f"journal {str(journal)!r} does not exist; give the path of a .jsonl journal "
                              "written by td.track(..., journal=...) or a tokdiag recorder")
        try:
            read_journal(journal)
        except JournalError as exc:
            raise ConfigError(f"{str(journal)!r} is not a tokdiag journal ({exc}); give a .jsonl file written by "
                              "td.track(..., journal=...)") from None


def run_report_notebook(notebook: Path, journals: Iterable[str | os.PathLike[str]], out_dir: str | os.PathLike[str],
                        *, title: str, parameters: Mapping[str, Any] | None = None, with_code: bool = False) -> Path:
    """Run a bundled report ``notebook`` on ``journals`` into ``out_dir``; return the HTML path.

    The kernel runs in ``out_dir`` with the parameters ``journals`` (paths
    relative to it), ``output_dir`` (``"."``) and ``parameters``; writes
    ``NAME.ipynb``, ``NAME.html`` (``title`` on top) and ``summary.json``.
    Raises :class:`ConfigError` when one of those exists and tokdiag did not
    write it (nothing is overwritten), and :class:`TokdiagError` (naming the
    cell and exception; the HTML is still written) when the notebook fails.
    """
    from tokdiag.report.kernel import check_parameters, execute
    from tokdiag.report.summary import SUMMARY_FILE

    folder = Path(out_dir).resolve()
    executed = folder / notebook.name
    page = executed.with_suffix(".html")
    refuse_foreign([executed, page, folder / SUMMARY_FILE], fix="choose another output folder (-o)")
    folder.mkdir(parents=True, exist_ok=True)
    values = {"journals": [os.path.relpath(Path(j).resolve(), folder) for j in journals], "output_dir": ".",
              **(parameters or {})}
    check_parameters(notebook, values)
    result = execute(notebook, executed, values, cwd=folder)
    if executed.is_file():
        import nbformat

        scrubbed = scrub_notebook(nbformat.read(executed, as_version=4), base_dir=folder)
        scrubbed.metadata["tokdiag"] = {"generator": GENERATOR}
        nbformat.write(scrubbed, executed)
        export_html(executed, page, title=title, with_code=with_code)
    if result.failure is not None:
        what = notebook.stem.replace("_", " ")
        what = what if what.endswith("report") else f"{what} report"
        raise TokdiagError(f"the {what} failed at {result.failure.describe()}; "
                           f"see {page if page.is_file() else executed} for the traceback")
    return page


def report_from_journals(paths: Iterable[str | os.PathLike[str]], out_dir: str | os.PathLike[str], *,
                         limit: int | float | str | None = None, with_code: bool = False) -> Path:
    """Build an HTML report from journal files alone (e.g. written by a service); return the HTML path.

    Runs the bundled :data:`JOURNAL_REPORT_NOTEBOOK` with papermill in a new
    kernel (cwd ``out_dir``, journals passed as paths relative to it), writes
    ``journal_report.ipynb``, ``journal_report.html`` and ``summary.json``
    into ``out_dir`` (see :func:`run_report_notebook`). ``limit``: the memory
    limit a leak's headline counts down to (``"4GiB"``; default: the one
    each journal recorded). ``with_code``: the page shows its code cells
    (hidden by default). Raises :class:`ConfigError` for a missing
    journal or a bad ``limit`` before any kernel starts. The journals of
    one service's processes get :func:`tokdiag.report.service.report_from_service`.
    """
    journals = [Path(p) for p in paths]
    if not journals:
        raise ConfigError("no journal given; pass one or more journal files (.jsonl) written by tokdiag")
    check_journals(journals)
    if limit is not None:
        from tokdiag.analysis.limit import parse_size

        parse_size(limit)
    return run_report_notebook(JOURNAL_REPORT_NOTEBOOK, journals, out_dir, parameters={"limit": limit},
                               with_code=with_code, title="tokdiag report: " + ", ".join(j.name for j in journals))
