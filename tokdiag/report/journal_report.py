"""Reports from journals alone: ``tokdiag report run.jsonl`` and ``tokdiag compare a.jsonl b.jsonl``.

Each runs a bundled notebook on the journals (the journal report, or the
``compare_runs`` A/B report) in a new kernel. The runs can be given names
(``names``, one per journal); without them the names recorded in the
journals are used, and when two of those are the same (two runs of one
target) the journals' file names. Each report gets its own folder
(:func:`default_folder`: named after the journals), and a folder that holds
the report of other journals is refused, never overwritten.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tokdiag.errors import ConfigError, TokdiagError
from tokdiag.report.export import export_html
from tokdiag.report.folders import GENERATOR, refuse_foreign
from tokdiag.report.scrub import scrub_notebook

__all__ = ["COMPARE_NOTEBOOK", "JOURNAL_REPORT_NOTEBOOK", "check_journals", "compare_journals", "default_folder",
           "report_from_journals", "run_report_notebook"]

JOURNAL_REPORT_NOTEBOOK = Path(__file__).parent / "notebooks" / "journal_report.ipynb"
"""The bundled notebook ``tokdiag report`` runs; its parameters are ``journals``, ``names`` and ``output_dir``."""

COMPARE_NOTEBOOK = Path(__file__).parent / "notebooks" / "compare_runs.ipynb"
"""The bundled notebook ``tokdiag compare`` runs: the first journal is the baseline."""

_MAX_FOLDER_NAME = 80


def default_folder(journals: Iterable[str | os.PathLike[str]], *, prefix: str = "report",
                   joiner: str = "+") -> Path:
    """``reports/PREFIX-STEM[+STEM...]``: a report's folder named after its journals, so reports do not collide.

    >>> default_folder(["runs/before.jsonl", "runs/after.jsonl"], prefix="compare", joiner="-vs-")
    PosixPath('reports/compare-before-vs-after')
    """
    stems = [Path(j).name.removesuffix(".jsonl") for j in journals]
    name = f"{prefix}-{joiner.join(stems)}"
    if len(name) > _MAX_FOLDER_NAME:
        import hashlib

        digest = hashlib.sha1("\0".join(str(Path(j).resolve()) for j in journals).encode()).hexdigest()[:8]
        name = f"{name[:_MAX_FOLDER_NAME - 9]}-{digest}"
    return Path("reports") / name


def _names(journals: list[Path], recorded: list[str], names: Iterable[str] | None) -> list[str]:
    """The runs' names: ``names`` (one per journal), else ``[]`` (the recorded ones) when those differ, else the
    journals' file names (two runs of one target both recorded as its name)."""
    given = [str(n) for n in names or ()]
    if given:
        if len(given) != len(journals):
            raise ConfigError(f"--name {' '.join(repr(n) for n in given)}: give one --name per journal "
                              f"({len(journals)}), in their order, or none to use the names the journals recorded")
        return given
    if len(set(recorded)) == len(recorded):
        return []
    stems = [j.name.removesuffix(".jsonl") for j in journals]
    if len(set(stems)) == len(stems):
        return stems
    return [os.path.relpath(j) for j in journals]


def check_journals(journals: Iterable[str | os.PathLike[str]]) -> list[str]:
    """The runs' names the journals recorded; a :class:`ConfigError` naming, as given, the first journal that
    is missing or is not a tokdiag journal (saying what it is when tokdiag can tell, e.g. a ``summary.json``).

    Reads each one here, before a kernel starts.
    """
    from tokdiag.errors import JournalError
    from tokdiag.recording.journal import read_journal
    from tokdiag.report.catalog import file_kind

    recorded = []
    for journal in journals:
        if not Path(journal).is_file():
            raise ConfigError(f"journal {str(journal)!r} does not exist; give the path of a .jsonl journal "
                              "written by td.track(..., journal=...) or a tokdiag recorder")
        try:
            contents = read_journal(journal)
        except JournalError as exc:
            kind = file_kind(Path(journal), str(journal))
            said = f"{str(journal)!r} is {kind}" if kind else str(exc).rstrip(".")
            raise ConfigError(f"{said}; `tokdiag report` takes journals (.jsonl) written by "
                              "td.track(..., journal=...) or a tokdiag recorder") from None
        recorded.append(str(contents.header.get("run") or contents.path.stem))
    return recorded


def _refuse_another_report(executed: Path, journals: list[str]) -> None:
    """A :class:`ConfigError` when ``executed`` (a report notebook tokdiag wrote) was run on other journals."""
    import nbformat

    if not executed.is_file():
        return
    try:
        before = nbformat.read(executed, as_version=4).metadata.get("papermill", {}).get("parameters", {})
    except Exception:  # unreadable: refuse_foreign and the kernel have their say
        return
    earlier = [str(j) for j in before.get("journals") or []]
    if earlier and earlier != journals:
        shown = ", ".join(Path(j).name for j in earlier)
        raise ConfigError(f"{executed.parent} holds the report of {shown}; give this report its own folder "
                          f"with -o (or delete {executed.name} and its .html there to replace that report)")


def run_report_notebook(notebook: Path, journals: Iterable[str | os.PathLike[str]], out_dir: str | os.PathLike[str],
                        *, title: str, parameters: Mapping[str, Any] | None = None, with_code: bool = False) -> Path:
    """Run a bundled report ``notebook`` on ``journals`` into ``out_dir``; return the HTML path.

    The kernel runs in ``out_dir`` with the parameters ``journals`` (paths
    relative to it), ``output_dir`` (``"."``) and ``parameters``; writes
    ``NAME.ipynb``, ``NAME.html`` (``title`` on top) and ``summary.json``.
    Raises :class:`ConfigError` when one of those exists and tokdiag did not
    write it, or when ``out_dir`` holds this notebook's report of other
    journals (nothing is overwritten; the same journals again bring their report
    up to date), and :class:`TokdiagError` (naming the
    cell and exception; the HTML is still written) when the notebook fails.
    """
    from tokdiag.report.kernel import check_parameters, execute
    from tokdiag.report.summary import SUMMARY_FILE

    folder = Path(out_dir).resolve()
    executed = folder / notebook.name
    page = executed.with_suffix(".html")
    refuse_foreign([executed, page, folder / SUMMARY_FILE], fix="choose another output folder (-o)")
    relative = [os.path.relpath(Path(j).resolve(), folder) for j in journals]
    _refuse_another_report(executed, relative)
    folder.mkdir(parents=True, exist_ok=True)
    values = {"journals": relative, "output_dir": ".", **(parameters or {})}
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


def report_from_journals(paths: Iterable[str | os.PathLike[str]], out_dir: str | os.PathLike[str] | None = None, *,
                         limit: int | float | str | None = None, names: Iterable[str] | None = None,
                         with_code: bool = False) -> Path:
    """Build an HTML report from journal files alone (e.g. written by a service); return the HTML path.

    Runs the bundled :data:`JOURNAL_REPORT_NOTEBOOK` with papermill in a new
    kernel (cwd ``out_dir``, journals passed as paths relative to it), writes
    ``journal_report.ipynb``, ``journal_report.html`` and ``summary.json``
    into ``out_dir`` (default :func:`default_folder`; see
    :func:`run_report_notebook`). ``names``: the runs' names, one per journal
    (default: those recorded, or the file names when those clash). ``limit``: the memory
    limit a leak's headline counts down to (``"4GiB"``; default: the one
    each journal recorded). ``with_code``: the page shows its code cells
    (hidden by default). Raises :class:`ConfigError` for a missing
    journal or a bad ``limit`` before any kernel starts. The journals of
    one service's processes get :func:`tokdiag.report.service.report_from_service`.
    """
    journals = [Path(p) for p in paths]
    if not journals:
        raise ConfigError("no journal given; pass one or more journal files (.jsonl) written by tokdiag")
    recorded = check_journals(journals)
    chosen = _names(journals, recorded, names)
    if limit is not None:
        from tokdiag.analysis.limit import parse_size

        parse_size(limit)
    return run_report_notebook(JOURNAL_REPORT_NOTEBOOK, journals, out_dir or default_folder(journals),
                               parameters={"limit": limit, "names": chosen}, with_code=with_code,
                               title="tokdiag report: " + ", ".join(chosen or recorded))


def compare_journals(paths: Iterable[str | os.PathLike[str]], out_dir: str | os.PathLike[str] | None = None, *,
                     names: Iterable[str] | None = None, with_code: bool = False) -> Path:
    """An A/B report of journal files (the first is the baseline): the bundled :data:`COMPARE_NOTEBOOK`.

    Writes ``compare_runs.ipynb``, ``compare_runs.html`` and ``summary.json``
    into ``out_dir`` (default ``reports/compare-A-vs-B``, see
    :func:`default_folder`); ``names`` as in :func:`report_from_journals`.
    Raises :class:`ConfigError` for fewer than two journals, a missing one,
    or a wrong number of names, before any kernel starts.
    """
    journals = [Path(p) for p in paths]
    if len(journals) < 2:
        raise ConfigError(f"tokdiag compare takes two or more journals (the first is the baseline), "
                          f"got {len(journals)}; e.g. tokdiag compare before.jsonl after.jsonl")
    recorded = check_journals(journals)
    chosen = _names(journals, recorded, names)
    shown = chosen or recorded
    return run_report_notebook(COMPARE_NOTEBOOK, journals,
                               out_dir or default_folder(journals, prefix="compare", joiner="-vs-"),
                               parameters={"names": chosen}, with_code=with_code,
                               title="tokdiag compare: " + " vs ".join(shown))
