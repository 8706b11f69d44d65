"""What tokdiag may delete or overwrite: only files it wrote itself.

tokdiag never deletes or overwrites a file it did not write.

* **Run folders.** A run folder holds a marker file (:data:`RUN_MARKER`)
  listing the files the run wrote (with their size and modification time);
  running into it again deletes those files only (:func:`prepare_folder`),
  and keeps any other file (yours) where it is, out of the index. A folder
  without the marker must be empty; a listed file you changed, a file of
  yours named like one the run writes (:func:`run_writes`), or a marker of a
  run that never finished, is a :class:`~tokdiag.errors.ConfigError` naming
  the file and the fix (:func:`inspect_folder`), before any kernel starts.
  When the run ends, :func:`seal_folder` lists what it wrote.
* **Pages, indexes, notebooks.** Every other file tokdiag writes carries its
  mark (:data:`GENERATOR`), and one without it is never overwritten
  (:func:`refuse_foreign`): a batch's ``index.html`` and ``index.json``, an
  exported page, the journal report's notebook and ``summary.json``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokdiag.errors import ConfigError
from tokdiag.report.plan import JOURNAL_FILE, RunSpec
from tokdiag.report.summary import SUMMARY_FILE

__all__ = ["GENERATOR", "PAGE_MARK", "RUN_MARKER", "FolderPlan", "entries_below", "inspect_folder",
           "prepare_folder", "refuse_foreign", "run_writes", "seal_folder", "written_by_tokdiag"]

GENERATOR = "tokdiag"
"""How tokdiag marks the files it writes: ``<meta name="generator">`` in pages, ``"generator"`` in
``index.json`` (``"tokdiag_summary"`` in ``summary.json``), ``metadata.tokdiag.generator`` in the journal
report's executed notebook. A file without the mark is never overwritten (:func:`refuse_foreign`)."""

PAGE_MARK = f'<meta name="generator" content="{GENERATOR}">'
"""tokdiag's mark in the ``<head>`` of every page it writes (see :func:`tokdiag.report.pages.csp_meta`)."""

_PAGE_MARK_FOUND = re.compile(  # in either attribute order (nbconvert's post-processing sorts them)
    rf"""<meta\b(?=[^>]*\bname=["']generator["'])(?=[^>]*\bcontent=["']{GENERATOR}["'])[^>]*>""", re.I)

RUN_MARKER = ".tokdiag-run"
"""File that marks a run folder as tokdiag's and lists the files its last run wrote (JSON).

A re-run into the folder deletes exactly those files (if unchanged) and keeps every other one."""


# ---------------------------------------------------------------------------
# files with tokdiag's mark


def written_by_tokdiag(path: str | os.PathLike[str]) -> bool:
    """Whether the file at ``path`` carries tokdiag's mark (:data:`GENERATOR`): a page, index or notebook it wrote."""
    p = Path(path)
    try:
        if p.suffix in (".html", ".htm"):
            with open(p, encoding="utf-8", errors="replace") as fh:
                return _PAGE_MARK_FOUND.search(fh.read(65536)) is not None
        if p.suffix in (".json", ".ipynb"):
            data = json.loads(p.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                return False
            if p.suffix == ".json":  # index.json, or a summary.json (tokdiag.report.summary marks it its own way)
                return data.get("generator") == GENERATOR or "tokdiag_summary" in data
            meta = data.get("metadata", {}).get("tokdiag", {})
            return isinstance(meta, dict) and meta.get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        return False
    return False


def refuse_foreign(paths: Iterable[str | os.PathLike[str]], *, fix: str) -> None:
    """Raise :class:`ConfigError` if any of ``paths`` exists and tokdiag did not write it (so it is not overwritten)."""
    for path in paths:
        p = Path(path)
        if p.exists() and (p.is_dir() or not written_by_tokdiag(p)):
            what = "a folder" if p.is_dir() else "a file tokdiag did not write"
            raise ConfigError(f"{str(p)!r} is {what}; tokdiag will not overwrite it: move it, or {fix}")


# ---------------------------------------------------------------------------
# run folders


@dataclass(frozen=True, slots=True)
class FolderPlan:
    """What a run into ``folder`` may delete (its previous run's files) and must keep (everything else)."""

    folder: Path
    remove: tuple[str, ...] = ()
    remove_dirs: tuple[str, ...] = ()
    keep: frozenset[str] = frozenset()


def entries_below(folder: Path) -> tuple[set[str], set[str]]:
    """Files and folders under ``folder`` (relative, '/'-separated), the marker left out."""
    files: set[str] = set()
    dirs: set[str] = set()
    for root, subdirs, names in os.walk(folder):
        rel = Path(root).relative_to(folder)
        dirs.update((rel / d).as_posix() for d in subdirs)
        files.update((rel / n).as_posix() for n in names)
    files.discard(RUN_MARKER)
    return files, dirs


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _read_marker(marker: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("written_by") != "tokdiag" or not isinstance(data.get("files"), dict):
        return None
    return data


def inspect_folder(folder: Path, writes: Sequence[str] = ()) -> FolderPlan:
    """How a run can use ``folder`` without touching what tokdiag did not write; ConfigError when it cannot.

    ``writes`` are the names the run will write there (its executed notebook and HTML, journal, summary).
    """
    fix = "choose another output folder (-o)"
    if not folder.exists():
        return FolderPlan(folder)
    if not folder.is_dir():
        raise ConfigError(f"output folder {str(folder)!r} is a file; {fix}")
    files, dirs = entries_below(folder)
    marker = folder / RUN_MARKER
    if not marker.exists():
        if files or dirs:
            raise ConfigError(f"folder {str(folder)!r} exists and was not written by tokdiag; "
                              f"{fix} or remove it")
        return FolderPlan(folder)
    data = _read_marker(marker)
    if data is None:
        raise ConfigError(f"folder {str(folder)!r} was written by an older tokdiag that did not list its files, "
                          f"so tokdiag cannot tell them from yours and deletes nothing: remove the folder (move out "
                          f"what you want to keep) and run again, or {fix}")
    if not data.get("complete"):
        raise ConfigError(f"folder {str(folder)!r} holds a run that never finished (tokdiag was stopped), so tokdiag "
                          f"cannot tell its files from yours and deletes nothing: remove the folder (move out what "
                          f"you want to keep) and run again, or {fix}")
    listed: dict[str, Any] = data["files"]
    changed = sorted(rel for rel, stamp in listed.items()
                     if rel in files and _stamp(folder / rel) != list(stamp))
    if changed:
        raise ConfigError(f"{', '.join(changed[:3])} in {str(folder)!r} changed since tokdiag wrote "
                          f"{'them' if len(changed) > 1 else 'it'}; tokdiag will not delete your edits: move "
                          f"{'them' if len(changed) > 1 else 'it'} out of the folder, or {fix}")
    keep = frozenset(files - set(listed))
    clash = sorted(keep & set(writes))
    if clash:
        raise ConfigError(f"{clash[0]} in {str(folder)!r} was not written by tokdiag and the run would overwrite "
                          f"it: move it out of the folder, or {fix}")
    kept_parents = {Path(k).parent.as_posix() for k in keep}
    own_dirs = [d for d in data.get("dirs", []) if isinstance(d, str) and d in dirs]
    return FolderPlan(folder, remove=tuple(sorted(set(listed) & files)),
                      remove_dirs=tuple(sorted((d for d in own_dirs if d not in kept_parents),
                                               key=lambda d: d.count("/"), reverse=True)),
                      keep=keep)


def prepare_folder(folder: Path, writes: Sequence[str] = ()) -> FolderPlan:
    """Make ``folder`` ready for a run: delete its previous run's files (only those), mark it as in progress."""
    plan = inspect_folder(folder, writes)
    for rel in plan.remove:
        (folder / rel).unlink(missing_ok=True)
    for rel in plan.remove_dirs:
        try:
            (folder / rel).rmdir()  # only if empty: a folder holding anything else stays
        except OSError:
            pass
    folder.mkdir(parents=True, exist_ok=True)
    _write_marker(folder, complete=False, files={}, dirs=[])
    return plan


def seal_folder(plan: FolderPlan, before_dirs: set[str]) -> None:
    """List what the run wrote in the folder's marker (everything but the files that were kept)."""
    files, dirs = entries_below(plan.folder)
    own = sorted(files - plan.keep)
    stamps = {}
    for rel in own:
        try:
            stamps[rel] = _stamp(plan.folder / rel)
        except OSError:  # gone meanwhile
            continue
    _write_marker(plan.folder, complete=True, files=stamps, dirs=sorted(dirs - before_dirs))


def _write_marker(folder: Path, *, complete: bool, files: Mapping[str, list[int]], dirs: Sequence[str]) -> None:
    from tokdiag import __version__

    marker = {"written_by": "tokdiag", "tokdiag": __version__, "complete": complete,
              "about": "the files tokdiag's last run wrote here; running into this folder again deletes these "
                       "(if unchanged) and keeps every other file",
              "files": dict(files), "dirs": list(dirs)}
    tmp = folder / f"{RUN_MARKER}.tmp"
    tmp.write_text(json.dumps(marker, indent=1), encoding="utf-8")
    os.replace(tmp, folder / RUN_MARKER)


def run_writes(spec: RunSpec) -> tuple[str, ...]:
    """Names a run writes in its folder whatever its notebook does (a file of yours by that name is refused)."""
    return (f"{spec.notebook.stem}.ipynb", f"{spec.notebook.stem}.html", JOURNAL_FILE, SUMMARY_FILE)
