"""The ``%%tokdiag`` cell magic for JupyterLab and IPython.

Load it with ``%load_ext tokdiag``, then::

    %%tokdiag --steps 300 --every 10 --watch RewardAgent,MemoryEventMessage --cache app.cache:_CACHE
    app.handle_task(i)

The cell body is **one step** of the workload. It runs ``--steps`` times in
the notebook's namespace, with ``i`` set to the step index, under a
:class:`tokdiag.Tracker` (its progress line shows RSS as it goes: in a notebook an
output updated in place, in a terminal tqdm).
``i`` is the only name the magic sets, and when the cell ends it is put
back as it was (removed if the notebook had none): a notebook's own ``i``
survives, and a body may call the notebook's own function named ``step``
(``step(i)``). Afterwards the magic displays the verdict table and the
memory ledger, and stores the :class:`tokdiag.Run` in the notebook
namespace as ``_tokdiag_run`` for further charts
(``tokdiag.charts.counts(_tokdiag_run)``). If the cell raises, the run up
to that step is still stored, then the exception propagates.

Options
-------
``--steps N``           how many times to run the cell body (required)
``--every K``           snapshot every K steps, or ``auto`` (default)
``--watch A,B``         classes to count and size (qualified, bare or glob); repeatable
``--cache module:attr`` a cache to follow; comma-separated or repeatable
``--census``            also count every type on the heap (slower)
``--budget-mb MB``      stop cleanly when RSS passes MB MiB
``--journal PATH``      keep the journal at PATH (default: a temporary file)
``--name NAME``         the run's name
``--no-progress``       no progress bar

``await`` in the body makes each step a coroutine, run to completion
before the next snapshot::

    %%tokdiag --steps 200 --watch RewardAgent
    await agent.run_task(i)

In a Jupyter kernel (its event loop is already running) the cell is run
through IPython's autoawait: ``%load_ext tokdiag`` registers an input
transformer that turns such a cell into ``await`` of the magic, which
then awaits each step on the kernel's loop (tasks the steps start keep
running between cells, as in any cell). Where no loop is running (a
terminal IPython with ``%autoawait off``, a script), the steps run on one
event loop made for the cell, as in :func:`tokdiag.track`.

Figures are displayed as plotly's JSON mime type (what JupyterLab draws
natively and :mod:`tokdiag.report.export` turns into offline HTML), whatever
plotly renderer is configured, so the magic never opens a browser.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import json
from collections.abc import Coroutine
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from tokdiag.errors import TokdiagError
from tokdiag.report.export import PLOTLY_MIME

RUN_VARIABLE = "_tokdiag_run"
"""Name of the notebook variable the magic stores its :class:`tokdiag.Run` in."""

STEP_VARIABLE = "i"
"""The step index's name in the cell body; restored to its value from before the cell when the cell ends."""

_NOISE_METRICS = ("gc_gen0", "gc_gen1", "gc_gen2")  # collector bookkeeping, not memory: left out of the table


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for group in values or [] for v in group.split(",") if v.strip()]


def _display_figure(fig: Any) -> None:
    """Display a plotly figure as its JSON mime type plus a one-line text fallback."""
    from IPython.display import display

    spec = json.loads(fig.to_json())
    title = (spec.get("layout", {}).get("title") or {}).get("text", "")
    text = f"<plotly figure: {title.split('<br>')[0]}>" if title else "<plotly figure>"
    display({PLOTLY_MIME: spec, "text/plain": text}, raw=True)


@magics_class
class TokdiagMagics(Magics):
    """``%%tokdiag``: track the memory of a cell run as a repeated step."""

    @magic_arguments()
    @argument("--steps", type=int, required=True, help="how many times to run the cell body (the step count)")
    @argument("--every", default="auto", help="snapshot every K steps, or 'auto' (default)")
    @argument("--watch", action="append", metavar="A,B", help="classes to count and size; comma-separated")
    @argument("--cache", action="append", metavar="module:attr", help="caches to follow; comma-separated")
    @argument("--census", action="store_true", help="count and size every type on the heap (slower)")
    @argument("--budget-mb", type=float, default=None, help="stop cleanly when RSS passes this many MiB")
    @argument("--journal", default=None, help="keep the journal at this path (default: a temporary file)")
    @argument("--name", default="cell", help="name of the run (default: cell)")
    @argument("--no-progress", action="store_true", help="do not show the progress bar")
    @cell_magic
    def tokdiag(self, line: str, cell: str) -> Coroutine[Any, Any, None] | None:
        """Run the cell body ``--steps`` times under tokdiag (``i`` = step index); store ``_tokdiag_run``.

        Displays the verdict table and the memory ledger afterwards. See
        :mod:`tokdiag.magic` for every option. A body with ``await`` in a
        thread whose event loop is running returns the coroutine of the run,
        which the cell awaits (see the module docstring).
        """
        parser = self.tokdiag.parser
        words = line.split()
        if {"-h", "--help"} & set(words):
            raise UsageError(parser.format_help().replace("%tokdiag", "%%tokdiag"))
        usage = "usage: " + " ".join(parser.format_usage().replace("::", "").split()).replace("%tokdiag", "%%tokdiag")
        known = {o for a in parser._actions for o in a.option_strings}
        for w in words:
            option = w.split("=", 1)[0]
            if option.startswith("-") and option not in known and not option.lstrip("-").replace(".", "").isdigit():
                close = difflib.get_close_matches(option, sorted(known), n=1)
                hint = f"; did you mean {close[0]}?" if close else ""
                raise UsageError(
                    f"%%tokdiag: unknown option {option}{hint}\n{usage}\n(%%tokdiag --help lists every option)"
                )
        try:
            args = parse_argstring(self.tokdiag, line)
        except UsageError as exc:
            raise UsageError(f"{exc}\n{usage}\n(%%tokdiag --help lists every option)") from None
        every = self._every(args.every)
        if args.steps <= 0:
            raise UsageError(f"--steps {args.steps}: must be a positive number of steps, e.g. --steps 200")
        if args.budget_mb is not None and not args.budget_mb > 0:
            raise UsageError(f"--budget-mb {args.budget_mb:g}: must be a positive number of MiB, e.g. --budget-mb 4096")
        if not cell.strip():
            raise UsageError("%%tokdiag needs a cell body: the code of one step, e.g. handle_request(i)")

        from tokdiag.recording.steps import StepLoop
        from tokdiag.recording.tracker import Tracker

        shell = self.shell
        assert shell is not None
        code = _compile_body(shell, cell)
        awaits = bool(code.co_flags & inspect.CO_COROUTINE)
        in_loop = awaits and _loop_running()
        if in_loop and not _autoawaits(shell):
            raise UsageError("%%tokdiag: the cell body awaits, and this thread's event loop is already running, so "
                             "the steps can only be awaited on it through IPython's autoawait, which is off: turn it "
                             "on with %autoawait asyncio (or await td.atrack(step, steps=N) in the cell)")

        watch, caches = _split(args.watch), _split(args.cache)
        try:
            tracker = Tracker(watch=watch, caches=caches, every=every, census=args.census, budget_mb=args.budget_mb,
                              journal=args.journal, name=args.name,
                              progress=not args.no_progress, params={"magic": line})
        except TokdiagError as exc:
            raise UsageError(f"%%tokdiag {line}: {exc}") from None

        ns = shell.user_ns
        if in_loop:
            return self._run_awaited(tracker, code, ns, args.steps)
        loop = StepLoop("the %%tokdiag cell body")
        saved_i = ns.get(STEP_VARIABLE, _MISSING)
        try:
            with tracker:
                for i in tracker.steps(args.steps):
                    ns[STEP_VARIABLE] = i
                    result = eval(code, ns)  # the body's module code; a coroutine when it awaits
                    if awaits:
                        loop.run(result)
        finally:
            loop.close()
            self._restore(ns, saved_i, tracker)
        assert tracker.run is not None
        self._show(tracker.run)
        return None

    async def _run_awaited(self, tracker: Any, code: Any, ns: dict[str, Any], steps: int) -> None:
        """The run of a body that awaits, each step awaited on the running loop (the cell awaits this)."""
        saved_i = ns.get(STEP_VARIABLE, _MISSING)
        try:
            with tracker:
                for i in tracker.steps(steps):
                    ns[STEP_VARIABLE] = i
                    await eval(code, ns)
        finally:
            self._restore(ns, saved_i, tracker)
        assert tracker.run is not None
        self._show(tracker.run)

    @staticmethod
    def _restore(ns: dict[str, Any], saved_i: Any, tracker: Any) -> None:
        if saved_i is _MISSING:
            ns.pop(STEP_VARIABLE, None)
        else:
            ns[STEP_VARIABLE] = saved_i
        if tracker.run is not None:
            ns[RUN_VARIABLE] = tracker.run

    @staticmethod
    def _every(value: str) -> int | str:
        if value == "auto":
            return value
        try:
            k = int(value)
        except ValueError:
            k = 0
        if k <= 0:
            raise UsageError(f"--every {value}: must be a positive number of steps between snapshots, or auto")
        return k

    @staticmethod
    def _show(run: Any) -> None:
        from IPython.display import display

        from tokdiag import charts

        display({"text/plain": f"{run!r}; stored as {RUN_VARIABLE}"}, raw=True)
        verdicts = run.verdicts()
        verdicts = verdicts[~((verdicts["probe"] == "process") & verdicts["metric"].isin(_NOISE_METRICS))]
        _display_figure(charts.verdict_table(verdicts))
        _display_figure(charts.ledger(run))


_MISSING = object()


def _compile_body(shell: Any, cell: str) -> Any:
    """The cell body as module code; ``await`` at its top level makes it a coroutine's code (CO_COROUTINE)."""
    source = shell.transform_cell(cell)
    try:
        filename = shell.compile.cache(source)
    except Exception:  # pragma: no cover - older IPython without the cache API
        filename = "<tokdiag cell>"
    return compile(source, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def _loop_running() -> bool:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _autoawaits(shell: Any) -> bool:
    """Whether IPython runs a cell with top-level ``await`` on an asyncio loop (what ipykernel needs to await it)."""
    from IPython.core.interactiveshell import _asyncio_runner

    return bool(shell.autoawait) and shell.loop_runner is _asyncio_runner


class AwaitTokdiagCells:
    """IPython input transformer: ``%%tokdiag`` whose body awaits becomes ``await`` of the magic.

    IPython runs a cell on its event loop (autoawait) only when the cell's
    code has a top-level ``await``; a cell magic's call never has one, the
    ``await`` is inside its body string. This adds it in front of the call,
    so the kernel awaits the run the magic returns. Any other cell, and any
    cell when autoawait is off, is left as it is.
    """

    def __init__(self, shell: Any) -> None:
        self.shell = shell

    def __call__(self, lines: list[str]) -> list[str]:
        text = "".join(lines)
        if "run_cell_magic" not in text or not _autoawaits(self.shell):
            return lines
        try:
            tree = ast.parse(text)
        except SyntaxError:
            return lines
        if len(tree.body) != 1 or type(tree.body[0]) is not ast.Expr:
            return lines
        call = tree.body[0].value
        if not (type(call) is ast.Call and type(call.func) is ast.Attribute and call.func.attr == "run_cell_magic"
                and len(call.args) == 3):
            return lines
        name, _, body = (a.value if type(a) is ast.Constant else None for a in call.args)
        if name != "tokdiag" or type(body) is not str:
            return lines
        try:
            source = self.shell.input_transformer_manager.transform_cell(body)
            flags = compile(source, "<tokdiag cell>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT).co_flags
        except (SyntaxError, ValueError):
            return lines  # the magic reports it
        if not flags & inspect.CO_COROUTINE:
            return lines
        return ["await " + text.lstrip()]


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%%tokdiag`` and its autoawait transformer (called by ``%load_ext tokdiag``)."""
    ipython.register_magics(TokdiagMagics)
    transforms = ipython.input_transformers_post
    transforms[:] = [t for t in transforms if type(t).__name__ != AwaitTokdiagCells.__name__]  # a reload replaces it
    transforms.append(AwaitTokdiagCells(ipython))


__all__ = ["RUN_VARIABLE", "STEP_VARIABLE", "AwaitTokdiagCells", "TokdiagMagics", "load_ipython_extension"]
