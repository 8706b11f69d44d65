"""What the watch and cache probes are pointed at: never a silent zero, never a non-cache (issue #9 B6)."""

from __future__ import annotations

import collections
import functools
import os
import warnings

import numpy as np
import pytest

import tokdiag as td
from tokdiag.errors import ConfigError, TokdiagWarning
from tokdiag.probes.watch import WatchProbe


class RewardAgent:
    pass


class MemoryEventMessage:
    pass


LIST_CACHE: list[bytes] = [b"x" * 100]
SET_CACHE: set[str] = {"a"}
DEQUE_CACHE: collections.deque[int] = collections.deque([1, 2])
ORDERED_CACHE: collections.OrderedDict[str, int] = collections.OrderedDict(a=1)


@functools.lru_cache(maxsize=4)
def lru_function(i: int) -> str:
    return str(i)


def test_watching_a_class_whose_instances_the_gc_never_lists_warns_instead_of_counting_zero():
    arrays = [np.zeros(10) for _ in range(5)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = td.track(lambda i: None, steps=4, every=1, watch=["ndarray", "RewardAgent"], census=False,
                       progress=False)
    messages = [str(w.message) for w in caught if issubclass(w.category, TokdiagWarning)]
    about = [m for m in messages if "numpy.ndarray" in m]
    assert len(about) == 1, messages  # once per run, not per snapshot
    assert "not tracked by the garbage collector" in about[0]
    assert "numpy.ndarray" not in set(run.timeline.query("probe == 'watch'")["subject"])  # no false 0 series
    assert f"{__name__}.RewardAgent" in set(run.timeline.query("probe == 'watch'")["subject"])
    del arrays


def test_a_glob_without_a_dot_matches_bare_class_names_too():
    agents = [RewardAgent() for _ in range(4)]
    messages = [MemoryEventMessage() for _ in range(2)]
    run = td.track(lambda i: None, steps=2, every=1, watch=["Reward*", "*EventMessage"], census=False,
                   progress=False)
    assert run.series("watch", f"{__name__}.RewardAgent", "count").iloc[-1] == 4
    assert run.series("watch", f"{__name__}.MemoryEventMessage", "count").iloc[-1] == 2
    probe = WatchProbe(["Reward*", f"{__name__}.Reward*", "*.RewardAgent", "nowhere.Reward*"])
    assert list(probe.unmatched()) == ["nowhere.Reward*"]  # a glob with a dot: qualified names only
    del agents, messages


def test_a_class_is_watched_by_the_name_its_package_exports_it_under():
    import asyncio

    # asyncio.Task is _asyncio.Task (C), collections.OrderedDict is itself: both reachable by the public name
    probe = WatchProbe(["asyncio.Task", "collections.OrderedDict", "collections.abc.Mapping", "asyncio.nothing"])
    assert list(probe.unmatched()) == ["asyncio.nothing"]
    assert probe.matched["asyncio.Task"] == {"_asyncio.Task"}

    async def main() -> None:
        tasks = [asyncio.create_task(asyncio.sleep(0)) for _ in range(3)]
        await asyncio.gather(*tasks)
        run = td.track(lambda i: None, steps=2, every=1, watch=["asyncio.Task"], census=False, progress=False)
        assert run.series("watch", "_asyncio.Task", "count").iloc[-1] >= 3  # tasks (and this one) alive
        del tasks

    asyncio.run(main())


@pytest.mark.parametrize("target, what", [
    ("sys:maxsize", r"an int \(9223372036854775807\)"),
    ("os:getcwd", "a builtin_function_or_method"),
    ("os:sep", r"a str \('/'\)"),
])
def test_a_module_attr_that_is_not_a_cache_is_refused(target: str, what: str):
    pattern = rf"cache {target!r} resolves to {what}, which is not a cache: a cache is a mapping"
    with pytest.raises(ConfigError, match=pattern):
        td.cache(target)
    with pytest.raises(ConfigError, match=pattern):
        td.track(lambda i: None, steps=1, caches=[target], progress=False)


def test_every_kind_of_cache_is_accepted_and_a_getter_counts_one_entry():
    specs = [td.cache(f"{__name__}:{name}") for name in
             ("LIST_CACHE", "SET_CACHE", "DEQUE_CACHE", "ORDERED_CACHE", "lru_function")]
    specs.append(td.cache(os.getcwd, name="cwd"))  # a zero-argument callable passed as an object: a getter
    run = td.track(lambda i: lru_function(i), steps=2, every=1, census=False, caches=specs, progress=False)
    last = run.timeline.query("probe == 'cache' and metric == 'entries'").groupby("subject")["value"].last()
    assert last.to_dict() == {f"{__name__}:LIST_CACHE": 1, f"{__name__}:SET_CACHE": 1,
                              f"{__name__}:DEQUE_CACHE": 2, f"{__name__}:ORDERED_CACHE": 1,
                              f"{__name__}:lru_function": 2, "cwd": 1}
