"""Run one notebook in its own kernel with papermill (private; used by batch, cli and export).

Two things papermill leaves to its caller are settled here:

* **Which Python runs the kernel.** Every notebook runs in a fresh
  ``ipykernel`` started with *the interpreter running tokdiag*
  (``sys.executable``), whatever kernelspecs are installed: a stale
  ``python3`` kernelspec in ``~/.local/share/jupyter`` cannot send a run to
  another environment that lacks tokdiag. When tokdiag is imported from a
  source checkout, that checkout goes first on the kernel's ``PYTHONPATH`` so
  the kernel imports the same tokdiag as its caller.
* **Where the kernel runs.** The kernel's working directory is set through
  nbclient's ``resources["metadata"]["path"]``, not papermill's ``cwd``
  argument (which calls ``os.chdir`` on the whole process and so cannot be used
  from several threads at once).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokdiag.errors import ConfigError, TokdiagError, did_you_mean

KERNEL_NAME = "python3"
"""The kernel name written into executed notebooks (the spec itself is always this Python)."""


def source_root() -> Path | None:
    """The folder holding the ``tokdiag`` package when it is a source checkout, else None."""
    root = Path(__file__).resolve().parents[2]
    if root.name in {"site-packages", "dist-packages"}:
        return None
    return root


def _kernel_manager_class() -> type:
    """An AsyncKernelManager whose kernelspec is always ipykernel on ``sys.executable``."""
    from ipykernel.kernelspec import RESOURCES, get_kernel_dict
    from jupyter_client.kernelspec import KernelSpec
    from jupyter_client.manager import AsyncKernelManager

    class SamePythonKernelManager(AsyncKernelManager):
        """Starts ``sys.executable -m ipykernel_launcher`` regardless of installed kernelspecs.

        Where jupyter_client and libzmq support it, the kernel's local TCP
        transport is CurveZMQ-encrypted (``transport_encryption="auto"``),
        which also keeps ipykernel's "running over TCP without encryption"
        warning out of the batch's output.
        """

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            if _curve_supported(self):
                self.transport_encryption = "auto"

        @property
        def kernel_spec(self) -> KernelSpec:
            if self._kernel_spec is None:
                spec: dict[str, Any] = dict(get_kernel_dict())
                env: dict[str, str] = {"PYDEVD_DISABLE_FILE_VALIDATION": "1"}
                # The kernel starts in the run's folder; the user's own modules (``-p target
                # mypkg.jobs:handle``) live where tokdiag was started: keep that folder importable.
                root = source_root()
                parts = [str(root)] if root is not None else []
                parts += [os.getcwd(), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
                env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
                spec["env"] = env
                self._kernel_spec = KernelSpec(resource_dir=RESOURCES, **spec)
            return self._kernel_spec

    return SamePythonKernelManager


def _curve_supported(manager: Any) -> bool:
    import zmq

    return bool(manager.has_trait("transport_encryption") and zmq.has("curve"))


class _PapermillNoise(logging.Filter):
    """Drops papermill's warnings about parameter lines it cannot read.

    tokdiag reads those lines itself (:func:`_assigned`) and checks every
    parameter before a run, so "Unable to parse line" and "Passed unknown
    parameter" would only be noise on the batch's stderr.
    """

    NOISE = ("Unable to parse line", "Passed unknown parameter")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOISE)


class _ShutdownRace(logging.Filter):
    """Shortens pyzmq's "Uncaught exception in ZMQStream callback" to one line.

    When a cell fails, papermill stops the kernel while a reply may still be
    in flight; pyzmq then logs the closed channel's error with a full
    traceback (seen about once in a few hundred failed runs under load). The
    run's own failure line already says what went wrong, so the record keeps
    its message and the exception's one-line summary, not the traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and str(record.msg).startswith("Uncaught exception in ZMQStream callback"):
            exc = record.exc_info[1]
            record.msg = f"{record.msg} while the kernel stopped: {type(exc).__name__}: {exc}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def _quiet_papermill() -> None:
    for name, noise in (("papermill", _PapermillNoise), ("papermill.translators", _PapermillNoise),
                        ("tornado.general", _ShutdownRace)):  # filters do not apply to records of child loggers
        log = logging.getLogger(name)
        if not any(isinstance(f, noise) for f in log.filters):
            log.addFilter(noise())


@dataclass(frozen=True, slots=True)
class NotebookParameter:
    """One documented parameter of a notebook's ``parameters`` cell."""

    name: str
    type_name: str
    default: str
    help: str

    def describe(self) -> str:
        """``name (type, default 300): help`` for error messages and ``--help`` text."""
        kind = f"{self.type_name}, " if self.type_name not in ("", "None") else ""
        text = f"{self.name} ({kind}default {self.default})"
        return f"{text}: {self.help}" if self.help else text


def _read_notebook(path: Path) -> Any:
    import nbformat

    if not path.exists():
        raise ConfigError(f"notebook {str(path)!r} does not exist; check the path "
                          "(relative paths are relative to the current folder or, in a plan, to the plan's folder)")
    if path.is_dir() or path.suffix != ".ipynb":
        raise ConfigError(f"{str(path)!r} is not a notebook; give the path of an .ipynb file")
    try:
        return nbformat.read(path, as_version=4)
    except Exception as exc:  # nbformat raises several unrelated types on bad JSON
        raise ConfigError(f"notebook {str(path)!r} cannot be read ({type(exc).__name__}: {exc}); "
                          "is it a valid .ipynb file?") from None


def has_parameters_cell(nb: Any) -> bool:
    """True when some cell of ``nb`` is tagged ``parameters``."""
    return any("parameters" in cell.get("metadata", {}).get("tags", []) for cell in nb.cells)


def notebook_parameters(path: str | Path) -> dict[str, NotebookParameter] | None:
    """The documented parameters of the notebook at ``path``, or None if it has no ``parameters`` cell.

    Uses :func:`papermill.inspect_notebook`, so the names, inferred types,
    defaults and ``# comment`` help are exactly what papermill sees.
    """
    import papermill

    path = Path(path)
    nb = _read_notebook(path)
    if not has_parameters_cell(nb):
        return None
    _quiet_papermill()
    found = papermill.inspect_notebook(str(path))
    documented = {name: NotebookParameter(name=name, type_name=str(p.get("inferred_type_name", "None")),
                                          default=str(p.get("default", "")), help=str(p.get("help", "")))
                  for name, p in found.items()}
    in_order: dict[str, NotebookParameter] = {}
    for cell in nb.cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            for parameter in _assigned(cell.source):
                in_order.setdefault(parameter.name, documented.get(parameter.name, parameter))
    return {**in_order, **documented}


def _assigned(source: str) -> list[NotebookParameter]:
    """Top-level names a parameters cell assigns, read with :mod:`ast`.

    papermill's own reader skips any line with more than one ``=`` (e.g. a
    comment such as ``# "" = off``) although it injects such a parameter
    fine; this finds those so they are not reported as unknown.
    """
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython magics and the like: papermill's reading is all we have
        return []
    lines = source.splitlines()
    found = []
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        line = lines[node.end_lineno - 1] if node.end_lineno else ""
        help_text = line.split("#", 1)[1].strip() if "#" in line[value.end_col_offset or 0:] else ""
        for target in targets:
            if isinstance(target, ast.Name):
                found.append(NotebookParameter(name=target.id, type_name="None",
                                               default=ast.get_source_segment(source, value) or "", help=help_text))
    return found


def check_parameters(notebook: Path, parameters: Mapping[str, object], *,
                     reserved: tuple[str, ...] = (), where: str = "") -> dict[str, NotebookParameter] | None:
    """Raise :class:`ConfigError` if ``parameters`` names something ``notebook`` does not document.

    ``reserved`` names are set by tokdiag itself (e.g. ``output_dir``) and may
    not be given by the user. ``where`` prefixes messages (e.g. ``"plan.yaml,
    runs[2]: "``). Returns the documented parameters (None: no parameters cell).
    """
    documented = notebook_parameters(notebook)
    for name in parameters:
        if name in reserved:
            raise ConfigError(f"{where}parameter {name!r} is set by tokdiag (to the run's folder or a file "
                              "in it); remove it and choose the folder with -o DIR")
    if not parameters:
        return documented
    if documented is None:
        raise ConfigError(f"{where}notebook {notebook.name!r} has no cell tagged 'parameters', so it takes no "
                          f"parameters (given: {', '.join(sorted(parameters))}); tag its first cell 'parameters' "
                          "or drop the parameters")
    for name in parameters:
        if name not in documented:
            hint = did_you_mean(name, documented, end=" ")
            listing = "; ".join(p.describe() + (" [set by tokdiag]" if p.name in reserved else "")
                                for p in documented.values()) or "(none)"
            raise ConfigError(f"{where}notebook {notebook.name!r} has no parameter {name!r}; {hint}"
                              f"its documented parameters are: {listing}")
    return documented


@dataclass(frozen=True, slots=True)
class ExecutionFailure:
    """Why a run failed: where (cell of the source notebook, ``In [n]``) and the exception.

    ``cell_index`` is the 0-based index of the failing cell in the notebook as
    written (papermill's injected-parameters cell not counted); ``exec_count``
    is the ``In [n]`` number shown in the executed notebook and its HTML.
    """

    ename: str
    evalue: str
    cell_index: int | None = None
    exec_count: int | None = None

    @property
    def where(self) -> str:
        """``In [4], cell 2`` (empty when the failure is not in a cell, e.g. the kernel did not start)."""
        parts = []
        if self.exec_count is not None:
            parts.append(f"In [{self.exec_count}]")
        if self.cell_index is not None:
            parts.append(f"cell {self.cell_index}")
        return ", ".join(parts)

    def describe(self) -> str:
        """``In [4], cell 2: ZeroDivisionError: division by zero``."""
        what = f"{self.ename}: {self.evalue}" if self.evalue else self.ename
        return f"{self.where}: {what}" if self.where else what


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    """The outcome of :func:`execute`: the executed notebook's path, failure (if any) and wall time."""

    output: Path
    duration_s: float
    failure: ExecutionFailure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


def execute(notebook: Path, output: Path, parameters: Mapping[str, object], *, cwd: Path,
            timeout: float | None = None, start_timeout: float = 120) -> ExecutionResult:
    """Execute ``notebook`` into ``output`` with ``parameters`` in a new kernel whose cwd is ``cwd``.

    Never raises for a failure inside the notebook: a cell error, a kernel
    death or a timeout becomes :attr:`ExecutionResult.failure`. Validate the
    parameters first with :func:`check_parameters`.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    _quiet_papermill()
    output.parent.mkdir(parents=True, exist_ok=True)
    cwd.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    failure: ExecutionFailure | None = None
    try:
        papermill.execute_notebook(
            str(notebook.resolve()), str(output.resolve()), parameters=dict(parameters),
            kernel_name=KERNEL_NAME, language="python", progress_bar=False, log_output=False,
            start_timeout=start_timeout, execution_timeout=timeout,
            kernel_manager_class=_kernel_manager_class(),
            resources={"metadata": {"path": str(cwd.resolve())}},
        )
    except PapermillExecutionError as exc:
        failure = ExecutionFailure(ename=str(exc.ename), evalue=_one_line(str(exc.evalue)),
                                   cell_index=_source_index(output, exc.cell_index), exec_count=exc.exec_count)
    except TokdiagError:
        raise
    except Exception as exc:  # kernel died, timed out, could not start: the run failed, the batch goes on
        failure = ExecutionFailure(ename=type(exc).__name__, evalue=_one_line(str(exc)))
    return ExecutionResult(output=output, duration_s=time.perf_counter() - started, failure=failure)


def _source_index(executed: Path, index: int) -> int:
    """Map a cell index of the executed notebook back to the notebook as written."""
    import nbformat

    try:
        nb = nbformat.read(executed, as_version=4)
    except Exception:  # the index is still useful as is
        return index
    # papermill computes the index before it inserts its error banner cells, so
    # drop those; then only the injected-parameters cell separates the numberings.
    cells = [cell for cell in nb.cells
             if "papermill-error-cell-tag" not in cell.get("metadata", {}).get("tags", [])]
    injected = [i for i, cell in enumerate(cells)
                if "injected-parameters" in cell.get("metadata", {}).get("tags", [])]
    return index - sum(1 for i in injected if i < index)


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
