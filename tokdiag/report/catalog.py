"""The notebooks that ship with tokdiag and with other packages, found by name, without importing those packages.

``tokdiag run your_workload`` and a plan's ``notebook: agent_objects`` name
a notebook; :func:`resolve` turns the name (or a path) into its file, and
:func:`notebooks` lists every one (``tokdiag notebooks``).

Where notebooks are found, in this order
----------------------------------------
1. **tokdiag's own** folder, ``tokdiag/report/notebooks/`` (package data):
   the generic notebooks (``your_workload``, ``compare_runs``,
   ``journal_report``, ...).
2. **Entry points** of the group :data:`ENTRY_POINT_GROUP`
   (``tokdiag.notebooks``), read from the installed distributions' metadata
   with :func:`importlib.metadata.entry_points`: metadata, not code. An entry
   point's value names a folder of ``.ipynb`` files as a dotted path below a
   package, e.g. in ``pyproject.toml``::

       [project.entry-points."tokdiag.notebooks"]
       tokdiag_workloads = "tokdiag_workloads.notebooks"

   The folder is located with :func:`importlib.util.find_spec` on the
   top-level package (``tokdiag_workloads``), which finds where a top-level
   package lives without running it, then the path below it: the built-in
   workloads' notebooks are found while the tool never imports
   ``tokdiag_workloads``, and any installed package can add notebooks the
   same way.
3. **A source checkout**: when tokdiag is imported from a folder whose
   ``pyproject.toml`` names the project ``tokdiag`` (a clone used with
   ``PYTHONPATH``, or installed before an entry point was added), that
   file's ``[project.entry-points."tokdiag.notebooks"]`` table is read too:
   the same declaration, from its source.

A notebook's name is its file name without ``.ipynb``. Two folders holding
the same name make that name ambiguous (:func:`resolve` says so and asks for
the path). What a notebook answers is its ``metadata.tokdiag.answers``
string, else its first Markdown heading.
"""

from __future__ import annotations

import importlib.util
import os
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tokdiag.errors import ConfigError, did_you_mean

__all__ = ["ENTRY_POINT_GROUP", "OWN_FOLDER", "NotebookInfo", "describe", "file_kind", "folders", "notebooks",
           "resolve"]

ENTRY_POINT_GROUP = "tokdiag.notebooks"
"""The entry point group whose values name folders of notebooks (see the module docstring)."""

OWN_FOLDER = Path(__file__).parent / "notebooks"
"""tokdiag's own notebooks (package data)."""

_FILE_KINDS = {".jsonl": "a journal: make a report from it with `tokdiag report {path}`",
               ".json": "not a notebook (a summary.json is what a run wrote; its HTML is beside it)",
               ".yaml": "a plan: run it with `tokdiag batch {path}`",
               ".yml": "a plan: run it with `tokdiag batch {path}`",
               ".html": "a report page: open it in a browser", ".py": "a Python file: run a function of it with "
                        "`tokdiag run your_workload -p target MODULE:FUNCTION`",
               ".ipynb": "a notebook: run it with `tokdiag run {path}`"}


def file_kind(path: Path, label: str = "") -> str | None:
    """What the file at ``path`` is, as a phrase naming the command that takes it; None when tokdiag cannot tell.

    Told by its suffix, and for ``.json`` by its content (a run's
    ``summary.json``, a batch's ``index.json``). ``label``: the path as the
    user gave it, shown in the command.

    >>> file_kind(Path("nightly.yaml"))
    'a plan: run it with `tokdiag batch nightly.yaml`'
    """
    shown = label or str(path)
    if path.suffix.lower() == ".json":
        import json

        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            content = None
        if isinstance(content, dict) and "tokdiag_summary" in content:
            return ("a run's summary.json (its answer and headlines, for the batch index); the run's report is "
                    "the .html beside it, its journals the .jsonl files")
        if isinstance(content, dict) and content.get("generator") == "tokdiag" and "runs" in content:
            return "a batch's index.json (for programs); open the index.html beside it"
    kind = _FILE_KINDS.get(path.suffix.lower())
    return kind.format(path=shown) if kind else None


@dataclass(frozen=True, slots=True)
class NotebookInfo:
    """A notebook found by :func:`notebooks`: its ``name``, file, and where it came from (``source``)."""

    name: str
    path: Path
    source: str


def _located(value: str) -> Path | None:
    """The folder a dotted value (``"pkg.notebooks"``) names, located without importing ``pkg``; None if absent."""
    top, *rest = value.strip().split(".")
    if not top.isidentifier() or not all(p.isidentifier() for p in rest):
        return None
    try:
        spec = importlib.util.find_spec(top)  # a top-level name: found, never executed
    except (ImportError, ValueError):
        return None
    places = list(spec.submodule_search_locations or []) if spec is not None else []
    for place in places:
        folder = Path(place).joinpath(*rest)
        if folder.is_dir():
            return folder
    return None


def _checkout_table() -> dict[str, str]:
    """``[project.entry-points."tokdiag.notebooks"]`` of the checkout tokdiag is imported from ({} if none)."""
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    except (OSError, ValueError):
        return {}
    if project.get("name") != "tokdiag":
        return {}
    table = project.get("entry-points", {}).get(ENTRY_POINT_GROUP, {})
    return {str(k): str(v) for k, v in table.items()} if isinstance(table, dict) else {}


def folders() -> tuple[tuple[str, Path], ...]:
    """``(source, folder)`` of every notebook folder, in the order of the module docstring, each once."""
    from importlib.metadata import entry_points

    found: list[tuple[str, Path]] = [("tokdiag", OWN_FOLDER)]
    declared = [(ep.name, ep.value) for ep in entry_points(group=ENTRY_POINT_GROUP)]
    declared += list(_checkout_table().items())
    for source, value in declared:
        folder = _located(value)
        if folder is not None and all(folder.resolve() != f.resolve() for _, f in found):
            found.append((source, folder))
    return tuple(found)


def notebooks() -> tuple[NotebookInfo, ...]:
    """Every notebook of every folder (:func:`folders`), by folder, then by name."""
    return tuple(NotebookInfo(p.stem, p, source) for source, folder in folders()
                 for p in sorted(folder.glob("*.ipynb")) if p.is_file())


def _by_name(found: Iterable[NotebookInfo]) -> dict[str, list[NotebookInfo]]:
    out: dict[str, list[NotebookInfo]] = {}
    for info in found:
        out.setdefault(info.name, []).append(info)
    return out


def resolve(label: str, *, base_dirs: Sequence[str | os.PathLike[str]] = (".",), where: str = "") -> Path:
    """The notebook ``label`` names: a path (tried in each of ``base_dirs``), else the name of a shipped notebook.

    ``label`` may be a path (``notebooks/x.ipynb``, absolute, or relative to
    one of ``base_dirs``) or a name (``agent_objects``, ``agent_objects.ipynb``).
    Raises :class:`ConfigError` (its message prefixed with ``where``) for a
    file that is not a notebook (a journal, a plan: with the command that
    takes it), a name that two folders ship, and a name or path that is not
    found: with the closest name, and ``tokdiag notebooks`` to list them.
    """
    if not isinstance(label, str) or not label.strip():
        raise ConfigError(f"{where}notebook {label!r}: give a notebook's name (see `tokdiag notebooks`) "
                          "or the path of an .ipynb file")
    given = Path(label).expanduser()
    candidates = [given] if given.is_absolute() else [Path(b) / given for b in base_dirs]
    for candidate in candidates:
        if candidate.is_file():
            if candidate.suffix != ".ipynb":
                kind = file_kind(candidate, label) or "not a notebook"
                raise ConfigError(f"{where}{label!r} is {kind}; `tokdiag run` takes a notebook: "
                                  "a name from `tokdiag notebooks` or an .ipynb file")
            return candidate.resolve()
    name = given.name[: -len(".ipynb")] if given.name.endswith(".ipynb") else given.name
    shipped = _by_name(notebooks())
    is_path = given.is_absolute() or len(given.parts) > 1
    if name in shipped and not is_path:
        hits = shipped[name]
        if len(hits) > 1:
            places = " and ".join(f"{h.path} ({h.source})" for h in hits)
            raise ConfigError(f"{where}notebook name {name!r} is ambiguous: {places}; give the path of the one to run")
        return hits[0].path
    shown = " or ".join(dict.fromkeys(repr(os.path.relpath(c) if not given.is_absolute() else str(c))
                                      for c in candidates))
    if name in shipped:  # an old path (the notebooks/ folder of a checkout) to a notebook that ships by name
        hint = f"; a notebook named {name!r} ships with tokdiag: give its name, e.g. `tokdiag run {name}`"
    else:
        hint = (did_you_mean(name, shipped, start="; ") or ";") + " `tokdiag notebooks` lists the shipped notebooks"
    nor = "" if is_path else f", and no shipped notebook is named {name!r}"
    raise ConfigError(f"{where}notebook {label!r} not found (no file {shown}{nor}){hint}")


def describe(info: NotebookInfo) -> tuple[str, tuple[str, ...]]:
    """What a notebook answers (one line), and its parameters as ``name=default`` (those tokdiag sets left out)."""
    import nbformat

    from tokdiag.report.kernel import notebook_parameters

    try:
        nb = nbformat.read(info.path, as_version=4)
    except Exception as exc:  # nbformat raises several unrelated types on bad JSON
        return f"(cannot be read: {type(exc).__name__})", ()
    answers = str((nb.metadata.get("tokdiag") or {}).get("answers", "")).strip()
    if not answers:
        heading = next((line for cell in nb.cells if cell.cell_type == "markdown"
                        for line in cell.source.splitlines() if line.startswith("#")), "")
        answers = heading.lstrip("#").strip()
    from tokdiag.report.plan import RUN_FOLDER_PARAMETERS

    try:
        documented = notebook_parameters(info.path) or {}
    except (ConfigError, ValueError) as exc:  # e.g. no kernelspec in its metadata: papermill cannot inspect it
        return answers, (f"(cannot be inspected: {exc})",)
    shown = tuple(f"{p.name}={p.default}" for p in documented.values() if p.name not in RUN_FOLDER_PARAMETERS)
    return answers, shown
