"""``async def`` steps: td.track runs them on one loop, td.atrack awaits them on a running one (issue 13 item 4).

The magic's ``await`` cells are in tests/test_magic.py; a real kernel in tests/test_async_kernel.py.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import warnings
from pathlib import Path

import pytest

import tokdiag as td

OPTS = {"census": False, "progress": False, "why_alive": False}

_BACKGROUND: set[asyncio.Task[bytes]] = set()
"""Tasks kept by a module, as services keep fire-and-forget tasks (the asyncio docs' recipe)."""


class AsyncLeak:
    pass


_KEPT: list[AsyncLeak] = []


def _count_verdict(run: td.Run, name: str) -> str:
    v = run.verdicts()
    return str(v[(v.probe == "watch") & (v.subject == name) & (v.metric == "count")].verdict.iloc[0])


def test_async_steps_run_to_completion_on_one_loop_for_the_whole_run():
    ran: list[int] = []
    loops: set[int] = set()

    async def step(i: int) -> None:
        loops.add(id(asyncio.get_running_loop()))
        await asyncio.sleep(0)
        ran.append(i)

    run = td.track(step, steps=6, every=2, **OPTS)
    assert ran == list(range(6)) and run.status == "completed" and run.steps == [0, 2, 4, 6]
    assert len(loops) == 1  # one loop, not asyncio.run per step

    class Handler:
        async def __call__(self, i: int) -> None:
            await asyncio.sleep(0)
            ran.append(i)

    ran.clear()
    td.track(functools.partial(step), steps=2, **OPTS)
    td.track(Handler(), steps=2, **OPTS)
    td.track(lambda i: step(i), steps=2, **OPTS)  # a plain function returning a coroutine
    assert ran == [0, 1] * 3


def test_an_async_step_that_keeps_objects_is_a_leak_and_one_that_lets_go_is_not():
    async def leaky(i: int) -> None:
        await asyncio.sleep(0)
        _KEPT.append(AsyncLeak())

    async def clean(i: int) -> None:
        item = AsyncLeak()
        await asyncio.sleep(0)
        del item

    try:
        assert (
            _count_verdict(td.track(leaky, steps=24, every=3, watch=["AsyncLeak"], **OPTS), "test_async.AsyncLeak")
            == "leak"
        )
        _KEPT.clear()
        assert (
            _count_verdict(td.track(clean, steps=24, every=3, watch=["AsyncLeak"], **OPTS), "test_async.AsyncLeak")
            == "flat"
        )
    finally:
        _KEPT.clear()


async def _work(i: int) -> bytes:
    await asyncio.sleep(0)
    return bytes(100)


def test_tasks_kept_in_a_module_level_set_are_a_leak_and_discarded_ones_are_not():
    async def fire_and_keep(i: int) -> None:
        _BACKGROUND.add(asyncio.create_task(_work(i)))
        await asyncio.sleep(0)

    async def fire_and_forget(i: int) -> None:
        task = asyncio.create_task(_work(i))
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)
        await asyncio.sleep(0)

    try:
        assert (
            _count_verdict(td.track(fire_and_keep, steps=24, every=3, watch=["Task"], **OPTS), "_asyncio.Task")
            == "leak"
        )
        _BACKGROUND.clear()
        assert (
            _count_verdict(td.track(fire_and_forget, steps=24, every=3, watch=["Task"], **OPTS), "_asyncio.Task")
            == "flat"
        )
    finally:
        _BACKGROUND.clear()


def test_tasks_left_pending_run_between_steps_and_are_cancelled_when_the_run_ends(recwarn):
    started: list[asyncio.Task[None]] = []
    ticks: list[int] = []

    async def ticker() -> None:
        while True:
            ticks.append(1)
            await asyncio.sleep(0)

    async def step(i: int) -> None:
        if i == 0:
            started.append(asyncio.create_task(ticker()))
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    td.track(step, steps=5, every=1, **OPTS)
    assert len(ticks) >= 5  # it ran while later steps awaited
    assert started[0].cancelled()  # as asyncio.run does at its end
    gc.collect()
    assert not [w for w in recwarn if "destroyed but it is pending" in str(w.message)]


def test_an_async_step_that_raises_keeps_the_run_and_names_the_journal(tmp_path: Path):
    async def step(i: int) -> None:
        await asyncio.sleep(0)
        if i == 3:
            raise ValueError("bad request")

    with pytest.raises(ValueError, match="bad request") as info:
        td.track(step, steps=10, every=1, journal=tmp_path / "a.jsonl", **OPTS)
    assert any("a.jsonl" in note for note in info.value.__notes__)
    run = td.load(tmp_path / "a.jsonl")
    assert run.status == "error" and run.steps == [0, 1, 2, 3]


def test_in_a_running_event_loop_track_refuses_and_says_to_await_atrack():
    ran: list[int] = []

    async def step(i: int) -> None:
        ran.append(i)

    async def main() -> None:
        with pytest.raises(td.ConfigError, match=r"event loop is already running.*await td\.atrack\(step, steps=N\)"):
            td.track(step, steps=3, **OPTS)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(td.ConfigError, match=r"returned coroutine.*await td\.atrack"):
                td.track(lambda i: step(i), steps=3, **OPTS)
            gc.collect()
        assert not [w for w in caught if "never awaited" in str(w.message)]
        assert td.track(lambda i: ran.append(i), steps=2, **OPTS).status == "completed"  # plain steps still run

    asyncio.run(main())
    assert ran == [0, 1]


def test_atrack_awaits_each_step_on_the_running_loop_while_its_other_tasks_go_on():
    loops: set[int] = set()
    ticks: list[int] = []

    async def step(i: int) -> None:
        loops.add(id(asyncio.get_running_loop()))
        await asyncio.sleep(0.001)
        _KEPT.append(AsyncLeak())

    async def main() -> tuple[td.Run, int]:
        async def ticker() -> None:
            while True:
                ticks.append(1)
                await asyncio.sleep(0)

        other = asyncio.create_task(ticker())
        run = await td.atrack(step, steps=24, every=3, watch=["AsyncLeak"], **OPTS)
        other.cancel()
        return run, id(asyncio.get_running_loop())

    try:
        run, outer = asyncio.run(main())
    finally:
        _KEPT.clear()
    assert loops == {outer} and len(ticks) >= 24
    assert run.status == "completed" and _count_verdict(run, "test_async.AsyncLeak") == "leak"
    plain = asyncio.run(td.atrack(lambda i: None, steps=2, **OPTS))  # a plain step is fine too
    assert plain.steps == [0, 1, 2]


def test_generators_and_async_generators_stay_refused():
    def gen(i: int):
        yield i

    async def agen(i: int):
        yield i

    with pytest.raises(td.ConfigError, match=r"generator function.*list\(step\(i\)\)"):
        td.track(gen, steps=3, **OPTS)
    with pytest.raises(td.ConfigError, match=r"async generator function.*async for"):
        td.track(agen, steps=3, **OPTS)
    with pytest.raises(td.ConfigError, match=r"async generator function"):
        asyncio.run(td.atrack(agen, steps=3, **OPTS))
