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

Figures are displayed as plotly's JSON mime type (what JupyterLab draws
natively and :mod:`tokdiag.report.export` turns into offline HTML), whatever
plotly renderer is configured, so the magic never opens a browser.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from tokdiag.errors import TokdiagError

PLOTLY_MIME = "application/vnd.plotly.v1+json"

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
    def tokdiag(self, line: str, cell: str) -> None:
        """Run the cell body ``--steps`` times under tokdiag (``i`` = step index); store ``_tokdiag_run``.

        Displays the verdict table and the memory ledger afterwards. See
        :mod:`tokdiag.magic` for every option.
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
                raise UsageError(f"%%tokdiag: unknown option {option}{hint}\n{usage}\n(%%tokdiag --help lists every option)")
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

        from tokdiag.recording.tracker import Tracker

        watch, caches = _split(args.watch), _split(args.cache)
        try:
            tracker = Tracker(watch=watch, caches=caches, every=every, census=args.census, budget_mb=args.budget_mb,
                              journal=args.journal, name=args.name,
                              progress=not args.no_progress, params={"magic": line})
        except TokdiagError as exc:
            raise UsageError(f"%%tokdiag {line}: {exc}") from None

        shell = self.shell
        assert shell is not None
        source = shell.transform_cell(cell)
        try:
            filename = shell.compile.cache(source)
        except Exception:  # pragma: no cover - older IPython without the cache API
            filename = "<tokdiag cell>"
        code = compile(source, filename, "exec")
        ns = shell.user_ns
        missing = object()
        saved_i = ns.get(STEP_VARIABLE, missing)
        try:
            with tracker:
                for i in tracker.steps(args.steps):
                    ns[STEP_VARIABLE] = i
                    exec(code, ns)
        finally:
            if saved_i is missing:
                ns.pop(STEP_VARIABLE, None)
            else:
                ns[STEP_VARIABLE] = saved_i
            if tracker.run is not None:
                ns[RUN_VARIABLE] = tracker.run
        run = tracker.run
        assert run is not None
        self._show(run)

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


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%%tokdiag`` (called by ``%load_ext tokdiag``)."""
    ipython.register_magics(TokdiagMagics)


__all__ = ["RUN_VARIABLE", "STEP_VARIABLE", "TokdiagMagics", "load_ipython_extension"]
