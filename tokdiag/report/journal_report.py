"""Reports from journals alone: ``tokdiag report run.jsonl`` runs the bundled journal-report notebook on them."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from tokdiag.errors import ConfigError, TokdiagError
from tokdiag.report.export import export_html
from tokdiag.report.folders import GENERATOR, refuse_foreign
from tokdiag.report.scrub import scrub_notebook

__all__ = ["JOURNAL_REPORT_NOTEBOOK", "report_from_journals"]

JOURNAL_REPORT_NOTEBOOK = Path(__file__).parent / "notebooks" / "journal_report.ipynb"
"""The bundled notebook ``tokdiag report`` runs; its parameters are ``journals`` and ``output_dir``."""


def report_from_journals(paths: Iterable[str | os.PathLike[str]], out_dir: str | os.PathLike[str]) -> Path:
    """Build an HTML report from journal files alone (e.g. written by a service); return the HTML path.

    Runs the bundled :data:`JOURNAL_REPORT_NOTEBOOK` with papermill in a new
    kernel (cwd ``out_dir``, journals passed as paths relative to it), writes
    ``journal_report.ipynb``, ``journal_report.html`` and ``summary.json``
    into ``out_dir``. Raises :class:`ConfigError` for a missing journal, or
    when one of those three exists and tokdiag did not write it (nothing is
    overwritten), and
    :class:`TokdiagError` (naming the cell and exception; the HTML is still
    written) when the notebook fails.
    """
    from tokdiag.report.kernel import check_parameters, execute

    journals = [Path(p) for p in paths]
    if not journals:
        raise ConfigError("no journal given; pass one or more journal files (.jsonl) written by tokdiag")
    from tokdiag.errors import JournalError
    from tokdiag.recording.journal import read_journal

    for journal in journals:
        if not journal.is_file():
            raise ConfigError(f"journal {str(journal)!r} does not exist; give the path of a .jsonl journal "
                              "written by td.track(..., journal=...) or a tokdiag recorder")
        try:  # read here, before a kernel starts, so the error names the path as the user gave it
            read_journal(journal)
        except JournalError as exc:
            raise ConfigError(f"{str(journal)!r} is not a tokdiag journal ({exc}); give a .jsonl file written by "
                              "td.track(..., journal=...)") from None
    folder = Path(out_dir).resolve()
    executed = folder / "journal_report.ipynb"
    page = folder / "journal_report.html"
    from tokdiag.report.summary import SUMMARY_FILE

    refuse_foreign([executed, page, folder / SUMMARY_FILE], fix="choose another output folder (-o)")
    folder.mkdir(parents=True, exist_ok=True)
    parameters = {"journals": [os.path.relpath(j.resolve(), folder) for j in journals], "output_dir": "."}
    check_parameters(JOURNAL_REPORT_NOTEBOOK, parameters)
    result = execute(JOURNAL_REPORT_NOTEBOOK, executed, parameters, cwd=folder)
    if executed.is_file():
        import nbformat

        scrubbed = scrub_notebook(nbformat.read(executed, as_version=4), base_dir=folder)
        scrubbed.metadata["tokdiag"] = {"generator": GENERATOR}
        nbformat.write(scrubbed, executed)
        export_html(executed, page, title="tokdiag report: " + ", ".join(j.name for j in journals))
    if result.failure is not None:
        raise TokdiagError(f"the journal report failed at {result.failure.describe()}; "
                           f"see {page if page.is_file() else executed} for the traceback")
    return page
