"""why_alive on real-library leak patterns: each chain names the real holder.

Issue 11 item 7. Each pattern is built the way the library does it: a logger
per request (``logging.getLogger``), a bound method registered with
``atexit`` (opentelemetry's ``TracerProvider``), a module registered in
``sys.modules`` per request, sessions in a module-level dict, asyncio tasks
kept in a module-level set. The search runs three ways with the same
results: the C walk on the collector's lists, the C walk on a
``gc.get_objects()`` list, and the Python walk used without a compiler.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import json
import logging
import sys
import types
import weakref

import pytest

import tokdiag as td
from tokdiag.analysis.retention import HELD_OUTSIDE, UNREACHABLE, Chain, Edge, walk, why_alive
from tokdiag.errors import ConfigError

MODULE = f"module {__name__}"


@pytest.fixture(params=["direct", "list", "python"])
def engine(request, monkeypatch):
    """The walk under test: C on the collector's lists, C on a list, or Python."""
    if request.param == "direct" and not walk.DIRECT:
        pytest.skip("the C walk cannot read the collector's lists on this Python")
    if request.param in ("list", "python") and walk._heapwalk is not None:
        monkeypatch.setattr(walk, "DIRECT", False)
    if request.param == "python":
        monkeypatch.setattr(walk, "_heapwalk", None)
    if request.param != "python" and walk._heapwalk is None:
        pytest.skip("tokdiag._heapwalk was not built")
    return request.param


# --------------------------------------------------------------------------- sessions in a module-level dict


class Session:
    pass


_SESSIONS: dict[str, Session] = {}


def test_chains_through_different_keys_of_one_dict_are_one_chain_with_a_count(engine):
    for key in ("sess-1", "sess-2", "sess-3"):
        _SESSIONS[key] = Session()
    try:
        chains = why_alive(Session)
        assert [c.text for c in chains] == [f"{MODULE} -> _SESSIONS[*] (x3) -> Session"]
        assert chains[0].count == 3 and chains[0].edges[1] == Edge("key", "*", "dict")
        back = Chain.from_dict(json.loads(json.dumps(chains[0].as_dict())))  # journals carry the count
        assert back == chains[0] and back.text == chains[0].text
        del _SESSIONS["sess-2"], _SESSIONS["sess-3"]
        assert [c.text for c in why_alive(Session)] == [f'{MODULE} -> _SESSIONS["sess-1"] -> Session']
    finally:
        _SESSIONS.clear()


def test_a_chain_from_an_old_journal_without_a_count_still_loads():
    old = {"root": "module app", "root_kind": "module", "target_type": "Session", "text": "module app -> S -> Session",
           "edges": [{"kind": "attr", "label": "S", "source_type": "module"}]}
    c = Chain.from_dict(old)
    assert c.count == 1 and c.text == "module app -> S -> Session"
    with pytest.raises(ConfigError, match="count"):
        Chain.from_dict({**old, "count": 0})


# --------------------------------------------------------------------------- a logger per request


def _drop_loggers(prefix: str) -> None:
    manager = logging.Logger.manager
    for name in [n for n in manager.loggerDict if n == prefix or n.startswith(prefix + ".")]:
        del manager.loggerDict[name]


def test_a_logger_per_request_is_traced_to_the_logging_manager(tmp_path):
    def handle(i: int) -> None:
        logging.getLogger(f"tokdiag-test.req.{i}").debug("request %d", i)

    try:
        td.track(handle, steps=12, every=4, watch=["logging.Logger"], census=False, progress=False,
                 journal=tmp_path / "loggers.jsonl")
        chains = td.load(tmp_path / "loggers.jsonl").why_alive("logging.Logger")
    finally:
        _drop_loggers("tokdiag-test")
    # the loggers made during the run (not the library loggers made at import) and their real holder;
    # a library imported lazily during the run may add one of its own
    first = chains[0]
    assert first.text == f"class logging.Logger -> manager -> Manager.loggerDict[*] (x{first.count}) -> Logger", \
        [c.text for c in chains]
    assert first.count >= 12


def test_newer_than_samples_only_what_appeared_after_a_mark(engine):
    mark: list[object] = []
    for i in range(4):
        logging.getLogger(f"tokdiag-test.mark.{i}")
    try:
        texts = [c.text for c in why_alive(logging.Logger, newer_than=mark)]
        assert texts == ["class logging.Logger -> manager -> Manager.loggerDict[*] (x4) -> Logger"]
    finally:
        _drop_loggers("tokdiag-test")
    with pytest.raises(ConfigError, match="newer_than"):
        why_alive(logging.Logger, newer_than=5)


# --------------------------------------------------------------------------- held from C: atexit


class TracerProvider:
    """As opentelemetry's: registers its own shutdown with atexit (a bound method held by C state only)."""

    def __init__(self) -> None:
        self._atexit_handler = atexit.register(self.shutdown)

    def shutdown(self) -> None:
        pass


def _providers(n: int) -> list[weakref.ref[TracerProvider]]:
    return [weakref.ref(TracerProvider()) for _ in range(n)]


def test_objects_held_only_from_c_state_are_explained_with_their_cycle(engine):
    refs = _providers(3)
    try:
        gc.collect()
        assert all(r() is not None for r in refs), "atexit holds them"
        chains = why_alive(TracerProvider)
        assert [c.text for c in chains] == [
            f"{HELD_OUTSIDE}, in a cycle back through TracerProvider._atexit_handler -> method.__self__ -> "
            "TracerProvider (x3)"]
        assert chains[0].root_kind == "c"
        one = why_alive(refs[0]())  # the same for one instance passed in
        assert one[0].text.startswith(f"{HELD_OUTSIDE}, in a cycle back through TracerProvider._atexit_handler")
        del one, chains
    finally:
        for r in refs:
            p = r()
            if p is not None:
                atexit.unregister(p.shutdown)
            del p
    gc.collect()
    assert all(r() is None for r in refs)


class Orphan:
    pass


def test_garbage_is_left_out_or_called_unreachable(engine):
    o = Orphan()
    o.me = o  # type: ignore[attr-defined]
    ref = weakref.ref(o)
    del o
    gc.collect()  # the cycle was made; now make it again, as garbage the collector has not seen
    o = Orphan()
    o.me = o  # type: ignore[attr-defined]
    ref = weakref.ref(o)
    del o
    chains = why_alive(Orphan, collect=False)
    assert ref() is not None
    assert [(c.root_kind, c.text) for c in chains] == [
        ("gc", f"{UNREACHABLE}, in a cycle back through Orphan.me -> Orphan")]
    del chains
    assert why_alive(Orphan) == []  # collect=True: garbage is not explained (and is collected)
    assert ref() is None


# --------------------------------------------------------------------------- modules per request


class Handler:
    pass


def test_a_module_registered_per_request_is_a_chain_from_sys_modules(engine):
    mark: list[object] = []
    names = [f"tokdiag_test_plugin_{i}" for i in range(3)]

    def register(name: str) -> None:
        m = types.ModuleType(name)
        m.handler = Handler()  # type: ignore[attr-defined]
        sys.modules[name] = m

    for name in names:
        register(name)
    try:
        assert [c.text for c in why_alive(Handler)] == ["sys.modules[*] (x3) -> module.handler -> Handler"]
        assert [c.text for c in why_alive(types.ModuleType, newer_than=mark)] == ["sys.modules[*] (x3) -> module"]
        del sys.modules[names[1]], sys.modules[names[2]]
        assert [c.text for c in why_alive(types.ModuleType, newer_than=mark)] == \
            [f'sys.modules["{names[0]}"] -> module']
        assert [c.text for c in why_alive(Handler)] == [f"module {names[0]} -> handler -> Handler"]
    finally:
        for name in names:
            sys.modules.pop(name, None)


def _importers(names: list[str]) -> None:
    registry = {f"k{i}": Handler() for i in range(3)}
    for name in names:  # one registry, bound in several modules (``from app.base import REGISTRY``)
        m = types.ModuleType(name)
        m.REGISTRY = registry  # type: ignore[attr-defined]
        sys.modules[name] = m


def test_an_object_several_modules_import_is_held_from_one_of_them(engine):
    names = [f"tokdiag_test_importer_{i}" for i in range(3)]
    _importers(names)
    try:
        assert [c.text for c in why_alive(Handler)] == [f"module {names[0]} -> REGISTRY[*] (x3) -> Handler"]
    finally:
        for name in names:
            sys.modules.pop(name, None)


# --------------------------------------------------------------------------- asyncio tasks kept in a set


_TASKS: set[asyncio.Task[int]] = set()


def test_asyncio_tasks_kept_in_a_module_level_set_are_traced_to_it():
    async def handle(i: int) -> int:
        return i

    async def serve() -> None:
        for i in range(3):
            _TASKS.add(asyncio.ensure_future(handle(i)))  # kept "so it is not collected", never discarded
        await asyncio.sleep(0)

    asyncio.run(serve())
    try:
        texts = [c.text for c in why_alive(asyncio.Task)]
        assert texts[0] == f"{MODULE} -> _TASKS{{member}} (x3) -> Task", texts
    finally:
        _TASKS.clear()
