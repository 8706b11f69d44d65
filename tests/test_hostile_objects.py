"""Hostile objects anywhere in the heap never end a run, nor fake what tokdiag reports (issue #9 C9).

Each object below made a probe (or why_alive) raise, or lie, because tokdiag
asked the object something (its hash, an attribute, its ``__class__``, its
``__sizeof__``). Measuring now asks nothing of the measured program's
objects, so each is measured like any other; what still cannot be read
(an object whose C size is above the limit) counts 0 bytes with one
warning per run.
"""

from __future__ import annotations

import gc
import sys
import types
import warnings
import weakref

import pytest

import tokdiag as td
from tokdiag.analysis.retention import why_alive
from tokdiag.errors import TokdiagWarning
from tokdiag.probes.census import take_census_c, take_census_numpy, type_name

census_mod = sys.modules["tokdiag.probes.census"]


class RaisingHashMeta(type):
    def __hash__(cls) -> int:
        raise RuntimeError("metaclass __hash__")

    def __eq__(cls, other: object) -> bool:
        raise RuntimeError("metaclass __eq__")

    def __getattribute__(cls, name: str) -> object:
        if name in ("__name__", "__qualname__", "__module__", "__mro__", "__flags__", "__dict__"):
            raise RuntimeError(f"metaclass __getattribute__({name})")
        return super().__getattribute__(name)


def _hostile_class() -> type:
    """A class whose metaclass raises on hash, ==, and reading its names: made per test (a class
    defined at import would sit in the heap of every test of this module)."""

    class HostileClassInstance(metaclass=RaisingHashMeta):
        def __init__(self) -> None:
            self.payload = [1, 2, 3]

    return HostileClassInstance


_HOSTILE_NAME = f"{__name__}._hostile_class.<locals>.HostileClassInstance"


class RaisingHash:
    def __hash__(self) -> int:
        raise RuntimeError("__hash__")


class SlotsRaisingGetattr:
    __slots__ = ("x",)

    def __init__(self) -> None:
        self.x = [0] * 100

    def __getattr__(self, name: str) -> object:
        raise RuntimeError(f"__getattr__({name})")


class Huge:
    def __sizeof__(self) -> int:
        return sys.maxsize // 2


class Target:
    pass


class _Gone:
    pass


def _dead_proxy() -> object:
    gone = _Gone()
    proxy = weakref.proxy(gone)
    del gone
    gc.collect()
    return proxy


HOSTILE: list[object] = []

def _instances_of_a_hostile_class() -> list[object]:
    cls = _hostile_class()
    return [cls() for _ in range(3)]


KINDS = {
    "__hash__ raises": lambda: [RaisingHash()],
    "__slots__ and a raising __getattr__": lambda: [SlotsRaisingGetattr()],
    "__sizeof__ says sys.maxsize // 2": lambda: [Huge()],
    "a dead weakref.proxy": lambda: [_dead_proxy()],
    "metaclass __hash__, __eq__, __getattribute__ raise": _instances_of_a_hostile_class,
}


@pytest.fixture
def hostile():
    HOSTILE[:] = [o for make in KINDS.values() for o in make()]
    yield HOSTILE
    HOSTILE.clear()


@pytest.mark.parametrize("kind", KINDS)
def test_a_run_with_a_hostile_object_in_the_heap_and_in_a_cache_completes(kind):
    objs = KINDS[kind]()
    HOSTILE[:] = objs
    cache = {i: o for i, o in enumerate(objs)}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run = td.track(lambda i: None, steps=6, every=1, progress=False, census=True,
                           watch=["HostileClassInstance", "SlotsRaisingGetattr", "Huge"],
                           caches=[td.cache(lambda: cache, name="c"), td.cache(lambda: objs[0], name="one")])
    finally:
        HOSTILE.clear()
    assert run.status == "completed"
    assert run.series("cache", "c", "entries").iloc[-1] == len(objs)
    assert run.series("cache", "c", "fingerprint").nunique() == 1
    sizes = run.timeline.query("probe in ('census', 'watch', 'cache') and metric == 'bytes'")["value"]
    assert (sizes >= 0).all() and sizes.max() < 1 << 40
    measured = [str(w.message) for w in caught if issubclass(w.category, TokdiagWarning)
                and "no class matches" not in str(w.message)]  # the class of another kind is not there
    assert not measured, measured  # measured like any other object: nothing to skip
    if kind.startswith("metaclass"):
        assert run.series("watch", _HOSTILE_NAME, "count").tolist() == [3.0] * 7


@pytest.mark.parametrize("take", [take_census_numpy, pytest.param(take_census_c, marks=pytest.mark.skipif(
    census_mod._speedups is None, reason="tokdiag._speedups not built"))])
def test_the_census_names_and_sizes_hostile_objects_without_asking_them(take, hostile):
    rows = take(list(hostile))
    assert rows[_HOSTILE_NAME][0] == 3
    huge = rows[type_name(Huge)]
    assert huge[0] == 1 and 0 < huge[1] < 1000  # its C struct, not sys.maxsize // 2
    heap = gc.get_objects()
    try:
        total = sum(b for _n, b, _u in take(heap).values())
    finally:
        del heap
    assert 0 < total < 1 << 40


def test_deep_size_of_hostile_objects(hostile):
    assert 0 < td.deep_size(hostile) < 1 << 20
    assert 0 < td.deep_size(Huge()) < 1000


class _LyingModule:
    """Says it is the os module."""

    __name__ = "os"

    @property
    def __class__(self) -> type:  # type: ignore[override]
        return types.ModuleType


class _RaisingClass:
    @property
    def __class__(self) -> type:  # type: ignore[override]
        raise RuntimeError("__class__")


class HeldByLiar:
    pass


class HeldByRaiser:
    pass


def test_why_alive_sees_through_a_lying_or_raising_class_attribute(hostile):
    liar = _LyingModule()
    liar.a = HeldByLiar()  # type: ignore[attr-defined]
    raiser = _RaisingClass()
    raiser.b = HeldByRaiser()  # type: ignore[attr-defined]
    HOSTILE.extend([liar, raiser])
    del liar, raiser
    texts = [c.text for c in why_alive(HeldByLiar)]
    assert texts and not any(t.startswith("module os") for t in texts), texts
    assert all("_LyingModule.a -> HeldByLiar" in t for t in texts), texts
    texts = [c.text for c in why_alive(HeldByRaiser)]
    assert texts and all("_RaisingClass.b -> HeldByRaiser" in t for t in texts), texts
    assert why_alive(_RaisingClass)  # a class whose instances raise on __class__ is a valid target
    assert why_alive(type(hostile[-1])) and why_alive("HostileClassInstance")


def test_a_size_that_cannot_be_read_warns_once_per_run_not_per_snapshot(monkeypatch):
    monkeypatch.setattr(census_mod, "MAX_OBJECT_BYTES", 1 << 20)  # the census believes no object above 1 MiB
    cache = {"big": [None] * 300_000}  # a 2.4 MB list: unsized in the census, 6 snapshots
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = td.track(lambda i: None, steps=5, every=1, progress=False, caches=[td.cache(lambda: cache, name="c")])
    assert run.status == "completed"
    messages = [str(w.message) for w in caught if issubclass(w.category, TokdiagWarning)]
    census_lists = [m for m in messages if m.startswith("census:") and "builtins.list" in m]
    assert len(census_lists) == 1, messages
    assert run.series("cache", "c", "bytes").iloc[-1] > 2_400_000  # the cache probe's limit is the real one
