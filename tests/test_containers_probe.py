"""Growing containers found without hints (issue 11 item 5): real-library leak patterns and bounded caches.

No test names the container it expects: the tracker's default probes must
find it from the modules, judge its ``entries`` and name it by its path.
"""

from __future__ import annotations

import functools
import gc
import logging
import re
import sys
import types
import uuid
import warnings

import pytest

import tokdiag as td
from tokdiag.probes.base import SnapshotContext
from tokdiag.probes.containers import ContainerProbe, discover, path_label

HERE = __name__  # how pytest imported this module: the root of its paths


def _verdict(run: td.Run, subject: str) -> str:
    v = run.verdicts().set_index(["probe", "subject", "metric"])["verdict"]
    return v.get(("containers", subject, "entries"), "not written")


def _owners(run: td.Run):
    led = run.ledger()
    last = led[led["step"] == led["step"].max()]
    return last.set_index("owner")


# ---------------------------------------------------------------- leaks


def test_a_logger_per_request_is_a_leak_of_logging_manager_logger_dict():
    prefix = f"req{uuid.uuid4().hex[:8]}"
    try:
        run = td.track(lambda i: logging.getLogger(f"{prefix}.{i}").debug("handled"), steps=200, every=10,
                       progress=False)
    finally:
        for name in [n for n in logging.Logger.manager.loggerDict if n.startswith(prefix)]:
            del logging.Logger.manager.loggerDict[name]
    subject = "logging:Logger.manager.loggerDict"
    assert _verdict(run, subject) == "leak"
    assert run.series("containers", subject, "entries").diff().dropna().max() >= 10
    owners = _owners(run)
    assert owners.loc[subject, "kind"] == "container" and owners.loc[subject, "bytes"] > 200 * 300


def _warn(i: int) -> None:
    warnings.warn(f"request {i}: deprecated field", UserWarning, stacklevel=1)


def test_a_warnings_registry_of_distinct_messages_is_a_leak_under_its_module():
    module = sys.modules[HERE]
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = lambda *a, **k: None
        try:
            run = td.track(_warn, steps=200, every=10, progress=False)
        finally:
            vars(module).pop("__warningregistry__", None)
    assert _verdict(run, f"{HERE}:__warningregistry__") == "leak"


def test_a_module_per_request_is_a_leak_of_sys_modules():
    prefix = f"plugin_{uuid.uuid4().hex[:8]}"
    try:
        run = td.track(lambda i: sys.modules.__setitem__(f"{prefix}_{i}", types.ModuleType(f"{prefix}_{i}")),
                       steps=200, every=10, progress=False)
    finally:
        for name in [n for n in sys.modules if n.startswith(prefix)]:
            del sys.modules[name]
    assert _verdict(run, "sys:modules") == "leak"


@functools.lru_cache(maxsize=None)
def _render(text: str) -> str:
    return text.upper() * 4


def test_an_unbounded_lru_cache_on_request_text_is_a_leak_under_its_function():
    _render.cache_clear()
    try:
        run = td.track(lambda i: _render(f"request {i} " * 20), steps=200, every=10, progress=False)
    finally:
        _render.cache_clear()
    assert _verdict(run, f"{HERE}:_render") == "leak"


_SESSIONS: dict[str, dict] = {}


def test_a_module_level_sessions_dict_is_a_leak_under_its_name():
    try:
        run = td.track(lambda i: _SESSIONS.__setitem__(f"sess-{i}", {"history": [f"turn {i}"] * 10}),
                       steps=200, every=10, progress=False)
    finally:
        _SESSIONS.clear()
    subject = f"{HERE}:_SESSIONS"
    assert _verdict(run, subject) == "leak"
    assert _owners(run).loc[subject, "bytes"] > 200 * 100


# ---------------------------------------------------------------- bounded: no leak


def test_re_compile_of_unique_patterns_fills_res_cache_which_reads_bounded():
    re.purge()
    run = td.track(lambda i: re.compile(f"item-{i}-(\\d+)"), steps=1500, every=50, progress=False)
    re.purge()
    assert _verdict(run, "re:_cache") == "bounded"
    assert run.series("containers", "re:_cache", "entries").iloc[-1] == re._MAXCACHE
    assert run.verdicts().query("probe == 'containers' and verdict == 'leak'").empty


@functools.lru_cache(maxsize=128)
def _bounded(text: str) -> str:
    return text * 3


def test_an_lru_cache_with_maxsize_128_reads_bounded():
    _bounded.cache_clear()
    try:
        run = td.track(lambda i: _bounded(f"q{i}"), steps=600, every=20, progress=False)
    finally:
        _bounded.cache_clear()
    assert _verdict(run, f"{HERE}:_bounded") == "bounded"


def test_a_noop_run_writes_no_container():
    run = td.track(lambda i: None, steps=100, every=5, progress=False)
    assert run.timeline.query("probe == 'containers'").empty


# ---------------------------------------------------------------- how it reads


class _Registry:
    items: dict[int, str] = {}  # a class attribute

    def __init__(self) -> None:
        self.plugins: list[str] = []  # an instance attribute kept inline (3.11+: no __dict__ made)


class _Holder:
    registry = _Registry()


class _Hostile(type):
    def __getattribute__(cls, name):
        raise AssertionError(f"ran {name}")


class _Lazy(types.ModuleType):
    def __getattr__(self, name):
        raise AssertionError(f"module __getattr__ ran for {name}")


class _Prop:
    @property
    def data(self):
        raise AssertionError("a property ran")

    def __init__(self) -> None:
        self.real: dict = {}


_PROP = _Prop()
_HOSTILE = _Hostile("HostileClass", (), {"__module__": HERE, "cache": {}})


def test_discovery_follows_classes_and_instances_without_running_their_code_or_making_dicts():
    lazy = _Lazy(f"lazy_{uuid.uuid4().hex[:6]}")
    lazy.table = {}
    sys.modules[lazy.__name__] = lazy
    before = gc.get_referents(_Holder.registry)
    try:
        found = discover()
    finally:
        del sys.modules[lazy.__name__]
    assert (HERE, "_Registry", "items") in found
    assert (HERE, "_Holder", "registry", "plugins") in found
    assert (HERE, "_PROP", "real") in found
    assert (HERE, "_HOSTILE", "cache") in found
    assert (lazy.__name__, "table") in found
    assert ("logging", "Logger", "manager", "loggerDict") in found
    assert ("sys", "modules") in found
    # none of tokdiag's own (tokdiag_workloads, imported by other tests of the process, is user code)
    assert not any(p[0] == "tokdiag" or p[0].startswith("tokdiag.") for p in found)
    assert gc.get_referents(_Holder.registry) == before  # no __dict__ was made for the instance


def test_the_probe_holds_no_reference_to_what_it_measured():
    holder = types.ModuleType(f"holder_{uuid.uuid4().hex[:6]}")
    holder.box = []
    sys.modules[holder.__name__] = holder
    probe = ContainerProbe()
    try:
        probe.collect(SnapshotContext())
        holder.box.extend(range(20))
        recs = probe.collect(SnapshotContext())
        assert [r.value for r in recs if r.subject == f"{holder.__name__}:box" and r.metric == "entries"] == [20]
        box = holder.box
        refs = sys.getrefcount(box)
        probe.collect(SnapshotContext())
        assert sys.getrefcount(box) == refs
    finally:
        del sys.modules[holder.__name__]


def test_one_container_under_two_paths_is_written_once_and_paths_are_targets():
    probe = ContainerProbe()
    probe.collect(SnapshotContext())
    _SESSIONS.update({f"k{i}": {} for i in range(10)})
    try:
        recs = probe.collect(SnapshotContext())
    finally:
        _SESSIONS.clear()
    subjects = {r.subject for r in recs if r.probe == "containers"}
    assert f"{HERE}:_SESSIONS" in subjects
    assert td.cache(path_label((HERE, "_SESSIONS"))).resolve() is _SESSIONS  # a path is a "module:attr" target


@pytest.mark.parametrize("arg", ["hops", "rediscover", "min_change", "max_series"])
def test_bad_arguments_are_config_errors_naming_the_value(arg):
    with pytest.raises(td.ConfigError, match=arg):
        ContainerProbe(**{arg: 0})
