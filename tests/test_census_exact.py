"""Both census implementations give, for every type, exactly the per-object reference figures.

The reference size of an object is its C-level size: the first ``__sizeof__``
on its class's MRO that is a C method of a class it derives from, plus the
GC header and pre-header bytes ``sys.getsizeof`` adds. For a class that does
not override ``__sizeof__`` in Python that is ``sys.getsizeof`` itself (the
reference asserts it object by object); a ``__sizeof__`` written in Python is
never called (it runs the measured program's code: pandas builds Series in
it, a MagicMock makes child mocks).
"""

from __future__ import annotations

import enum
import gc
import shutil
import struct
import sys
import types
from collections import Counter
from dataclasses import dataclass

import pytest

import tokdiag as td
from tokdiag.probes.census import take_census_c, take_census_numpy, type_name

census_mod = sys.modules["tokdiag.probes.census"]  # the module (tokdiag.probes.census is also a function)
sizing_mod = sys.modules["tokdiag.probes.shallow"]  # C-level sizes by type (rows_numpy, CHUNK)

IMPLEMENTATIONS = [
    pytest.param(take_census_numpy, id="numpy"),
    pytest.param(take_census_c, id="C",
                 marks=pytest.mark.skipif(census_mod._speedups is None, reason="tokdiag._speedups not built")),
]


class Plain:
    def __init__(self, i: int) -> None:
        self.i = i


class Slotted:
    __slots__ = ("a", "b")


@dataclass
class Rec:
    name: str
    items: list


class Attrs(dict):  # C-level __sizeof__ plus an instance __dict__: more header bytes than a dict
    pass


class Sized(list):
    def __sizeof__(self) -> int:  # a Python override: never called, sized as the list it is
        return 1000 + len(self)


class Broken:
    def __sizeof__(self) -> int:  # getsizeof raises; never called: the object counts its C struct
        raise ValueError("no size")


class Meta(type):  # instances are classes: GC header bytes depend on the instance
    pass


class Colour(enum.Enum):  # a class whose metaclass is EnumType
    RED = 1


_MRO = type.__dict__["__mro__"].__get__  # the heap may hold classes whose metaclass is hostile
_VARS = type.__dict__["__dict__"].__get__
_FLAGS = type.__dict__["__flags__"].__get__
_GC_HEAD = 2 * struct.calcsize("P")  # sizeof(PyGC_Head), default build
_MANAGED = (1 << 4) | ((1 << 3) if sys.version_info >= (3, 12) else 0)  # managed dict (3.12+: or weakref)


def _header(o: object) -> int:
    """What _PySys_GetSizeOf adds to __sizeof__ (CPython 3.11-3.13)."""
    t = type(o)
    if sys.version_info >= (3, 13) and t is type and not _FLAGS(o) & (1 << 9):
        return 0  # a static type
    f = _FLAGS(t)
    return (_GC_HEAD if f & (1 << 14) else 0) + (2 * struct.calcsize("P") if f & _MANAGED else 0)


def _c_level_size(o: object) -> int:
    t = type(o)
    defined = [_VARS(k)["__sizeof__"] for k in _MRO(t) if "__sizeof__" in _VARS(k)]
    c = next(d for d in defined if type(d) is types.MethodDescriptorType and issubclass(t, d.__objclass__))
    try:
        size = c(o) + _header(o)
    except Exception:
        return 0
    if c is defined[0]:  # not overridden in Python: exactly sys.getsizeof
        assert size == sys.getsizeof(o), (t, size, sys.getsizeof(o))
    return size


def _reference(heap: list, owned: set[int]) -> dict[str, tuple[int, int, int]]:
    count: Counter[str] = Counter()
    size: Counter[str] = Counter()
    unowned: Counter[str] = Counter()
    for o in heap:
        name = type_name(type(o))
        b = (_c_level_size(o) + 7) & ~7
        count[name] += 1
        size[name] += b
        unowned[name] += 0 if id(o) in owned else b
    return {name: (count[name], size[name], unowned[name]) for name in count}


@pytest.mark.parametrize("take_census", IMPLEMENTATIONS)
def test_every_type_matches_the_per_object_reference_across_slices_and_owners(monkeypatch, take_census):
    monkeypatch.setattr(sizing_mod, "CHUNK", 997)  # numpy path: many slices, types first met mid-way
    keep: list = [Meta("Made", (), {}) for _ in range(5)] + [Broken() for _ in range(3)]
    for i in range(6000):
        keep.append({"k": [i, str(i)], "n": {"i": i}} if i % 3 else (i, [i] * (i % 7)))
        keep.append(Plain(i) if i % 2 else Slotted())
        keep.append(Rec(f"r{i}", [{"x": i}]))
        if i % 50 == 0:
            keep.append(Sized(range(i % 9)))
            keep.append({i, i + 1, frozenset({i})})
            attrs = Attrs(a=list(range(i % 11)))
            attrs.note = "x"
            keep.append(attrs)
    gc.collect()
    seen = td.Seen()
    td.deep_size(keep[::5], seen)
    heap = gc.get_objects()
    try:
        got_owned = take_census(heap, seen)
        ids = set(seen.sorted_ids().tolist())
        got_by_ids = take_census(heap, ids)  # a plain set of ids means the same
        got_plain = take_census(heap)
        want = _reference(heap, ids)
    finally:
        del heap
    assert got_owned == want
    assert got_by_ids == want
    assert got_plain == {name: (n, b, b) for name, (n, b, _u) in want.items()}
    assert got_owned[type_name(Sized)][1] < 1000 * got_owned[type_name(Sized)][0]  # the override never ran
    broken = (object.__sizeof__(keep[5]) + _header(keep[5]) + 7) & ~7
    assert got_owned[type_name(Broken)][:2] == (3, 3 * broken)
    assert got_owned[type_name(Meta)][0] == 5
    assert any(u < b for _n, b, u in got_owned.values())
    del keep


def test_the_c_census_is_built_by_the_install_when_a_compiler_is_there():
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler here: the install falls back to the numpy census, by design")
    assert census_mod.IMPLEMENTATION == "C", "pip install -e . should have built tokdiag/_speedups.c"
    from tokdiag.recording.journal import make_header

    assert make_header("r", {})["speedups"] is True  # every journal records it


@pytest.mark.skipif(census_mod._speedups is None, reason="tokdiag._speedups not built")
def test_the_c_census_refuses_bad_arguments_by_name():
    with pytest.raises(TypeError):
        census_mod._speedups.count((1, 2), None, 8)  # a tuple, not a list
    with pytest.raises(ValueError, match="align=6"):
        census_mod._speedups.count([], None, 6)
    with pytest.raises(ValueError, match="sorted native int64"):
        census_mod._speedups.count([], b"abcdefgh", 8)


@pytest.mark.parametrize("take_census", IMPLEMENTATIONS)
def test_a_python_sizeof_is_never_called_not_even_one_that_interrupts(take_census):
    class Interrupting:
        def __sizeof__(self) -> int:
            raise KeyboardInterrupt

    obj = Interrupting()
    size = (_c_level_size(obj) + 7) & ~7
    assert take_census([obj])[type_name(Interrupting)] == (1, size, size)


@pytest.mark.skipif(census_mod._speedups is None, reason="tokdiag._speedups not built")
def test_the_c_census_keeps_no_reference_to_what_it_counted():
    class Counted:
        pass

    objs = [Counted() for _ in range(10)]
    before = [sys.getrefcount(o) for o in objs] + [sys.getrefcount(Counted)]
    rows = take_census_c(list(objs))
    del rows
    after = [sys.getrefcount(o) for o in objs] + [sys.getrefcount(Counted)]
    assert after == before


class Borrowed:  # a dict's C __sizeof__ on an object that is not a dict: getsizeof raises TypeError
    __slots__ = ("a", "b", "c")
    __sizeof__ = dict.__sizeof__


class Resized:
    pass


@pytest.mark.parametrize("take_census", IMPLEMENTATIONS)
def test_a_borrowed_c_sizeof_is_passed_over_instead_of_reading_a_foreign_struct(take_census):
    objs = [Borrowed() for _ in range(3)]
    with pytest.raises(TypeError):
        sys.getsizeof(objs[0])
    own = (object.__sizeof__(objs[0]) + _header(objs[0]) + 7) & ~7  # its own struct: 3 slots
    assert take_census(objs)[type_name(Borrowed)] == (3, 3 * own, 3 * own)


@pytest.mark.parametrize("take_census", IMPLEMENTATIONS)
def test_a_python_sizeof_set_at_run_time_is_not_called_either(take_census, monkeypatch):
    objs = [Resized(), Resized()]
    before = take_census(objs)[type_name(Resized)][1]
    calls: list[object] = []
    monkeypatch.setattr(Resized, "__sizeof__", lambda self: calls.append(self) or 1000, raising=False)
    after = take_census(objs)[type_name(Resized)][1]
    assert after == before == 2 * ((object.__sizeof__(objs[0]) + _header(objs[0]) + 7) & ~7)
    assert calls == []


@pytest.mark.skipif(census_mod._speedups is None, reason="tokdiag._speedups not built")
def test_owned_ids_must_be_a_sorted_native_int64_array():
    import numpy as np

    objs = [object(), object()]
    ids = np.array(sorted(map(id, objs)), dtype=np.int64)
    assert census_mod._speedups.count(objs, ids, 8)[0][3] == 32  # both owned
    for bad in (ids[::-1].copy(), ids.astype(np.float64), ids.astype(np.int32)):
        with pytest.raises(ValueError, match="sorted native int64"):
            census_mod._speedups.count(objs, bad, 8)
    with pytest.raises(ValueError, match="align="):
        census_mod._speedups.count(objs, None, 2**62)


ROWS = [
    pytest.param(lambda heap, limit: sizing_mod.rows_numpy(heap, None, limit), id="numpy"),
    pytest.param(lambda heap, limit: census_mod._speedups.count(heap, None, 8, limit), id="C",
                 marks=pytest.mark.skipif(census_mod._speedups is None, reason="tokdiag._speedups not built")),
]


@pytest.mark.parametrize("rows", ROWS)
def test_a_size_above_the_limit_is_not_believed_and_counted_as_unsized(rows):
    lists = [[0] * n for n in range(40)]  # 56 + 8n bytes each
    plain = [Plain(i) for i in range(3)]  # a fixed size above the limit: every instance unsized
    limit = 56 + 8 * 20
    got = {t: (n, b, ob, bad) for t, n, b, ob, bad in rows(lists + plain, limit)}
    assert got[list] == (40, sum(56 + 8 * n for n in range(21)), 0, 19)
    plain_size = (object.__sizeof__(plain[0]) + _header(plain[0]) + 7) & ~7
    assert got[Plain] == ((3, 3 * plain_size, 0, 0) if plain_size <= limit else (3, 0, 0, 3))
    assert rows(plain, 8)[0][1:] == (3, 0, 0, 3)


def test_the_census_reports_unsized_objects_by_type_name(monkeypatch):
    objs = [list(range(n)) for n in range(5)]
    monkeypatch.setattr(census_mod, "MAX_OBJECT_BYTES", 60)  # only the empty list is believed
    for take in [take_census_numpy] + ([take_census_c] if census_mod._speedups is not None else []):
        unsized: dict[str, int] = {}
        assert take(objs, None, unsized)["builtins.list"] == (5, 56, 56)
        assert unsized == {"builtins.list": 4}


@pytest.mark.parametrize("identity", [True, False], ids=["classes as keys", "ids as keys"])
def test_the_numpy_path_keys_classes_by_id_only_when_a_metaclass_defines_hash_or_eq(monkeypatch, identity):
    """Classes as dict keys (C speed) are safe only while no metaclass has a __hash__/__eq__ of its own."""
    objs = [Plain(i) for i in range(50)] + [[i] for i in range(50)] + [Slotted(), Meta("M", (), {})] * 3
    want = sizing_mod.rows_numpy(objs)
    monkeypatch.setattr(sizing_mod, "classes_hash_by_identity", lambda: identity)
    assert sizing_mod.rows_numpy(objs) == want

    class Hashing(type):
        def __hash__(cls) -> int:
            raise RuntimeError("metaclass __hash__")

    from tokdiag._clevel import classes_hash_by_identity

    assert classes_hash_by_identity() is False  # Hashing exists now: the census must key by id
    del Hashing
