"""``td.track`` and ``td.atrack``: call a step function under a :class:`~tokdiag.Tracker`, plain or ``async``.

::

    run = td.track(step, steps=500, watch=["RewardAgent"])          # def step(i) or async def step(i)
    run = await td.atrack(step, steps=500, watch=["RewardAgent"])   # where an event loop already runs (Jupyter)

``step`` is called with the step index. A plain function's return value
is ignored, unless it is an awaitable. An ``async def`` step (a partial
of one, an object with an ``async def __call__``, a function returning a
coroutine) has each step's coroutine run to completion before the next
snapshot:

- ``td.track`` runs them on one event loop made for the run
  (:class:`StepLoop`, an :class:`asyncio.Runner`), not ``asyncio.run``
  per step: a step's tasks, connections and loop-bound caches live from
  one step to the next, as in a service. Snapshots are taken between
  steps, while the loop is not running. At the end the loop is closed as
  ``asyncio.run`` closes its own: tasks still pending are cancelled.
- Where an event loop is already running in this thread (a Jupyter
  kernel, an async caller), ``td.track`` cannot block on it and says so;
  ``await td.atrack(...)`` awaits the steps on that loop, whose other
  tasks go on while a step awaits (a snapshot blocks the loop while it
  runs, like any synchronous call).

Tasks a step starts and does not await are the workload's: they run
whenever later steps let the loop run, and a snapshot counts them like
any object (``watch=["Task"]``): tasks kept in a module-level set are a
``leak``. Generator functions (sync or async) are refused: calling one
runs none of its body.
"""

from __future__ import annotations

import asyncio
import collections.abc
import inspect
import os
from collections.abc import Callable
from typing import Any

from tokdiag.errors import ConfigError, TokdiagError
from tokdiag.recording.run import Run
from tokdiag.recording.tracker import Tracker

__all__ = ["StepLoop", "atrack", "track"]

_ATRACK_HINT = "in a notebook cell (or any coroutine) write: run = await td.atrack(step, steps=N)"


def _running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread (a Jupyter kernel's, an async caller's), or None."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _name(step: Any) -> str:
    return str(getattr(step, "__qualname__", None) or repr(step))


def _call_attr(step: Any) -> Any:
    """The ``__call__`` of a callable instance's class, read statically (no user code runs)."""
    return None if inspect.isfunction(step) else inspect.getattr_static(type(step), "__call__", None)


def _is_async(step: Any) -> bool:
    """Whether calling ``step`` makes a coroutine (``async def``, a partial of one, an async ``__call__``)."""
    return inspect.iscoroutinefunction(step) or inspect.iscoroutinefunction(_call_attr(step))


def _is_awaitable(result: Any) -> bool:
    return issubclass(type(result), collections.abc.Awaitable)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


class StepLoop:
    """One event loop for every step of a run: :meth:`run` runs a step's awaitable to completion on it.

    The loop is made on the first awaitable (a run of plain steps never
    makes one) and kept until :meth:`close`, so a step's tasks, connections
    and loop-bound caches live across steps as they would in a service;
    between two steps the loop is not running, and a snapshot sees the
    tasks a step left behind. :meth:`close` ends it as ``asyncio.run``
    does: tasks still pending are cancelled, async generators and the
    default executor shut down. ``what`` names the caller in errors.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._runner: asyncio.Runner | None = None

    def run(self, awaitable: Any) -> Any:
        """``awaitable``'s result, run to completion on the run's loop (a ConfigError if a loop already runs here)."""
        if _running_loop() is not None:
            if inspect.iscoroutine(awaitable):
                awaitable.close()  # no "never awaited" warning on top of the error
            raise ConfigError(
                f"{self.what} returned {type(awaitable).__name__}, an awaitable, and an event loop is already "
                "running in this thread (a Jupyter kernel runs one), so tokdiag cannot run it to completion here "
                f"without blocking that loop; {_ATRACK_HINT}")
        if self._runner is None:
            self._runner = asyncio.Runner()
        return self._runner.run(awaitable if inspect.iscoroutine(awaitable) else _awaited(awaitable))

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None


def _check_step_callable(step: Any) -> Callable[[int], Any]:
    if not callable(step):
        raise ConfigError(
            f"step={step!r} is not callable; pass a function taking the step index, e.g. "
            "td.track(lambda i: handle_request(i), steps=500)")
    if inspect.isasyncgenfunction(step) or inspect.isasyncgenfunction(_call_attr(step)):
        raise ConfigError(
            f"step={_name(step)!r} is an async generator function: calling it runs none of its body; make it an "
            "async def that returns, or consume it in the step: async def step(i): [x async for x in gen(i)]")
    if inspect.isgeneratorfunction(step):
        raise ConfigError(
            f"step={_name(step)!r} is a generator function: calling it runs none of its "
            "body; make it a plain function, or consume it in the step: td.track(lambda i: list(step(i)), steps=N)")
    try:
        sig = inspect.signature(step)
    except (TypeError, ValueError):
        return step
    try:
        sig.bind(0)
    except TypeError:
        raise ConfigError(
            f"step={_name(step)!r}{sig} cannot be called with the step index; "
            "it must accept one positional argument, e.g. def step(i): ...") from None
    return step


def track(step: Callable[[int], Any], steps: int, **options: Any) -> Run:
    """Run ``step(i)`` for ``i`` in ``range(steps)`` under a :class:`Tracker` and return the :class:`Run`.

    Options are the :class:`Tracker` parameters. If ``step`` raises, the
    journal records the error and the exception propagates with a note
    naming the journal that holds the run so far (kept even when it is the
    default temporary one).

    ``step`` may be an ``async def`` (or return an awaitable): each step's
    coroutine is run to completion on one event loop made for the run
    (:class:`StepLoop`), and the snapshots are taken between steps, while
    the loop is not running. Where an event loop is already running in this
    thread (a Jupyter kernel), ``td.track`` cannot block on it: use
    ``await`` :func:`atrack` there.

    >>> import tokdiag as td
    >>> run = td.track(lambda i: None, steps=3, census=False, progress=False)
    >>> run.status, run.steps
    ('completed', [0, 1, 2, 3])
    """
    step = _check_step_callable(step)
    if _is_async(step) and _running_loop() is not None:
        raise ConfigError(
            f"step={_name(step)!r} is an async function and an event loop is already running in this thread (a "
            f"Jupyter kernel runs one): td.track cannot block on it; {_ATRACK_HINT}")
    tracker = Tracker(**options)
    loop = StepLoop(f"step={_name(step)!r}")
    try:
        with tracker:
            for i in tracker.steps(steps):
                result = step(i)
                if result is not None and _is_awaitable(result):
                    loop.run(result)
    finally:
        loop.close()
    return _tracked(tracker)


async def atrack(step: Callable[[int], Any], steps: int, **options: Any) -> Run:
    """:func:`track` for a caller whose event loop is running (a notebook cell).

    ``run = await td.atrack(step, steps=N)``.

    Each step's coroutine (``async def step(i)``; a plain ``step`` works too)
    is awaited on the running loop, so other tasks on it (the kernel's, the
    step's own) go on while a step awaits. Snapshots are taken between
    steps and block the loop while they run, like any synchronous call.
    Options are the :class:`Tracker` parameters.

    >>> import asyncio, tokdiag as td
    >>> async def step(i):
    ...     await asyncio.sleep(0)
    >>> asyncio.run(td.atrack(step, steps=3, census=False, progress=False)).steps
    [0, 1, 2, 3]
    """
    step = _check_step_callable(step)
    tracker = Tracker(**options)
    with tracker:
        for i in tracker.steps(steps):
            result = step(i)
            if result is not None and _is_awaitable(result):
                await result
    return _tracked(tracker)


def _tracked(tracker: Tracker) -> Run:
    """The run a finished ``td.track`` / ``td.atrack`` loop recorded."""
    if tracker.run is None:  # a fork() made during a step came back into this loop
        raise TokdiagError(
            f"td.track: process {os.getpid()} is a fork() made during a step of the run its parent process "
            "tracks; the run and its journal belong to the parent, so this one recorded nothing. "
            "End a forked child with os._exit(0) when its work is done")
    return tracker.run
