"""Behaviour of the pure-Python agent application (tokdiag_workloads.agents).

Live instances are counted with ``gc.get_objects()`` filtered by type, as a
user would; bytes with ``tokdiag.probes.sizing.deep_sizes``. Counts are taken as
deltas against a baseline taken before the app is created, so apps of other
tests cannot disturb them.
"""

from __future__ import annotations

import gc
import importlib
import weakref
from typing import Any

import pytest
import tiktoken

from tokdiag.errors import ConfigError
from tokdiag.probes.sizing import deep_sizes
from tokdiag_workloads import agents
from tokdiag_workloads.agents import (
    BOUNDED,
    GROUND_TRUTH,
    TOGGLES,
    AgentApp,
    ChatTurn,
    MemoryEventMessage,
    PageSnapshot,
    RewardAgent,
    agent_workload,
    objects,
)
from tokdiag_workloads.agents import app as app_module

CLASSES: dict[str, type] = {
    f"{c.__module__}.{c.__qualname__}": c for c in (RewardAgent, MemoryEventMessage, PageSnapshot, ChatTurn)
}
N1, N2 = 15, 45  # tasks at the first and second measurement; bounded store (50) / history (20) are full by N1


def _live(cls: type) -> list[Any]:
    gc.collect()
    return [o for o in gc.get_objects() if type(o) is cls]


def _counts() -> dict[str, int]:
    gc.collect()
    objs = gc.get_objects()
    out = {name: 0 for name in CLASSES}
    by_type = {cls: name for name, cls in CLASSES.items()}
    for o in objs:
        name = by_type.get(type(o))
        if name is not None:
            out[name] += 1
    del objs
    return out


def _bytes(names: frozenset[str]) -> int:
    """Bytes reachable from all live instances of the named classes (each byte once)."""
    objs = [o for name in sorted(names) for o in _live(CLASSES[name])]
    try:
        return deep_sizes(objs)
    finally:
        del objs


def _only(toggle: str) -> dict[str, bool]:
    return {t: t == toggle for t in TOGGLES}


def test_ground_truth_names_real_classes_in_this_module() -> None:
    assert set(GROUND_TRUTH) == set(TOGGLES)
    mod = importlib.import_module("tokdiag_workloads.agents.objects")
    for names in GROUND_TRUTH.values():
        for name in names:
            module, _, qualname = name.rpartition(".")
            assert module == "tokdiag_workloads.agents.objects"
            assert isinstance(getattr(mod, qualname), type)
    assert "tokdiag_workloads.agents.objects:_ENCODINGS" in BOUNDED


@pytest.mark.parametrize("toggle", TOGGLES)
def test_each_toggle_alone_leaks_exactly_its_ground_truth(toggle: str) -> None:
    base = _counts()
    app = AgentApp(**_only(toggle))
    for i in range(N1):
        app.run_task(i)
    c1 = _counts()
    b1 = _bytes(GROUND_TRUTH[toggle])
    for i in range(N1, N2):
        app.run_task(i)
    c2 = _counts()
    b2 = _bytes(GROUND_TRUTH[toggle])
    per_task = {
        f"{objects.__name__}.RewardAgent": 1,
        f"{objects.__name__}.MemoryEventMessage": app.messages_per_task,
        f"{objects.__name__}.PageSnapshot": 1,
        f"{objects.__name__}.ChatTurn": 2,
    }
    for name in CLASSES:
        grew = c2[name] - c1[name]
        if name in GROUND_TRUTH[toggle]:
            assert c2[name] - base[name] == N2 * per_task[name], name
            assert grew == (N2 - N1) * per_task[name], name
        else:
            assert grew == 0, f"{name} grew by {grew} with only {toggle} on"
    growth = (b2 - b1) / (N2 - N1)
    # Per-task growth of the leaking owners measured with this test's own _bytes (15 -> 45 tasks):
    # keep_agents 3.8 KB, keep_messages 6.0 KB, keep_browser 33.6 KB, unbounded_history 3.6 KB.
    if toggle == "keep_browser":
        assert 20_000 <= growth <= 52_000
    else:
        assert 500 <= growth <= 10_000
    app.close()


def test_fixed_app_stays_bounded_in_counts_and_bytes() -> None:
    base = _counts()
    app = AgentApp(fixed=True)
    assert not any(app.toggles.values())
    for i in range(N1):
        app.run_task(i)
    c1 = _counts()
    everything = frozenset(CLASSES)
    b1 = _bytes(everything)
    for i in range(N1, N2 + 30):
        app.run_task(i)
    c2 = _counts()
    b2 = _bytes(everything)
    assert c2 == c1
    limit = app.bus.store.limit
    assert c2[f"{objects.__name__}.MemoryEventMessage"] - base[f"{objects.__name__}.MemoryEventMessage"] == limit
    assert (
        c2[f"{objects.__name__}.RewardAgent"] - base[f"{objects.__name__}.RewardAgent"]
        == limit // app.messages_per_task
    )
    assert c2[f"{objects.__name__}.PageSnapshot"] == base[f"{objects.__name__}.PageSnapshot"]
    assert c2[f"{objects.__name__}.ChatTurn"] - base[f"{objects.__name__}.ChatTurn"] == 20
    # Contents are replaced, not accumulated: what is left is jitter from text lengths (seen: -13 KB),
    # well under what the smallest leak adds over the same 60 tasks (60 x >= 500 B).
    assert b2 - b1 < 20_000
    app.close()


def test_default_is_all_on_and_fixed_conflicts_with_a_toggle() -> None:
    app = AgentApp()
    assert all(app.toggles.values()) and not app.fixed
    with pytest.raises(ConfigError, match="keep_agents=True"):
        AgentApp(fixed=True, keep_agents=True)
    with pytest.raises(ConfigError, match="store_limit=0"):
        AgentApp(store_limit=0)


def test_reused_agent_is_one_agent_even_when_messages_are_kept() -> None:
    base = _counts()
    app = AgentApp(reuse_agent=True)
    for i in range(N1):
        app.run_task(i)
    c = _counts()
    assert c[f"{objects.__name__}.RewardAgent"] - base[f"{objects.__name__}.RewardAgent"] == 1
    assert c[f"{objects.__name__}.MemoryEventMessage"] - base[f"{objects.__name__}.MemoryEventMessage"] == N1 * 5
    app.close()


def test_messages_hold_their_agent_and_agents_hold_no_app_state() -> None:
    with AgentApp() as app:
        app.run_task(3)
        msgs = list(app.bus.store._messages)
        assert len(msgs) == app.messages_per_task
        assert {m.agent.agent_id for m in msgs} == {f"{app.name}/reward-3"}
        agent = msgs[0].agent
        assert agent.page is None
        # Nothing the agent reaches is the app's: no Encoding, no store, no browser.
        reachable = gc.get_referents(*gc.get_referents(agent))
        assert not any(isinstance(o, (tiktoken.Encoding, agents.MemoryStore, agents.BrowserSession))
                       for o in reachable)


def test_apps_are_independent_and_released_by_close_or_drop() -> None:
    base = _counts()
    a, b = AgentApp(), AgentApp()
    for i in range(10):
        a.run_task(i)
    assert len(b.bus.store) == 0 and len(b.registry) == 0 and len(b.browser) == 0
    ref_a, ref_agent = weakref.ref(a), weakref.ref(a.registry._agents[f"{a.name}/reward-0"])
    a.close()
    assert len(a.registry) == len(a.bus.store) == len(a.browser) == len(a.conversation.history) == 0
    with pytest.raises(ConfigError, match="closed"):
        a.run_task(11)
    del a
    gc.collect()
    assert ref_a() is None and ref_agent() is None
    for i in range(10):
        b.run_task(i)
    ref_b = weakref.ref(b)
    del b  # dropped without close()
    gc.collect()
    assert ref_b() is None
    assert _counts() == base


def test_one_encoding_for_the_whole_process() -> None:
    apps = [AgentApp(), AgentApp(fixed=True)]
    for app in apps:
        for i in range(3):
            app.run_task(i)
    assert list(objects._ENCODINGS) == ["cl100k_base"]
    enc = objects._ENCODINGS["cl100k_base"]
    assert isinstance(enc, tiktoken.Encoding)
    assert agents.count_tokens("hello world") == 2
    assert objects._ENCODINGS["cl100k_base"] is enc
    for app in apps:
        app.close()


def test_workload_step_registers_app_with_a_readable_chain_and_releases_it() -> None:
    step = agent_workload(keep_browser=False)
    assert callable(step)
    for i in range(4):
        step(i)
    app = step.app
    name = app.name
    # module tokdiag_workloads.agents.app -> _APPS[name] -> .bus -> .store -> ._messages[k] -> .agent -> RewardAgent
    msg = app_module._APPS[name].bus.store._messages[7]
    assert isinstance(msg, MemoryEventMessage) and isinstance(msg.agent, RewardAgent)
    assert len(app.browser) == 0 and len(app.registry) == 4
    ref = weakref.ref(app)
    del app, msg, step
    gc.collect()
    assert name not in app_module._APPS
    assert ref() is None


def test_workload_close_unregisters() -> None:
    step = agent_workload(fixed=True)
    step(0)
    name = step.app.name
    step.app.close()
    assert name not in app_module._APPS


def test_tasks_are_deterministic() -> None:
    with AgentApp() as a, AgentApp() as b:
        assert [a.run_task(i) for i in range(5)] == [b.run_task(i) for i in range(5)]
        sizes = [p.nbytes for p in a.browser._pages.values()]
        assert all(20_000 <= s <= 50_000 for s in sizes)
