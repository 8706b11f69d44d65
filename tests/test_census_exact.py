"""Both census implementations give, for every type, exactly the per-object reference figures."""

from __future__ import annotations

import enum
import gc
import shutil
import sys
from collections import Counter
from dataclasses import dataclass

import pytest

import tokdiag as td
from tokdiag.probes.census import take_census_c, take_census_numpy, type_name

census_mod = sys.modules["tokdiag.probes.census"]  # the module (tokdiag.probes.census is also a function)

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
    def __sizeof__(self) -> int:  # an override: must be sized per object
        return 1000 + len(self)


class Broken:
    def __sizeof__(self) -> int:  # getsizeof raises: the object counts, its bytes are 0
        raise ValueError("no size")


class Meta(type):  # instances are classes: GC header bytes depend on the instance
    pass


class Colour(enum.Enum):  # a class whose metaclass is EnumType
    RED = 1


def _getsizeof(o: object) -> int:
    try:
        return sys.getsizeof(o)
    except Exception:
        return 0


def _reference(heap: list, owned: set[int]) -> dict[str, tuple[int, int, int]]:
    count: Counter[str] = Counter()
    size: Counter[str] = Counter()
    unowned: Counter[str] = Counter()
    for o in heap:
        name = type_name(type(o))
        b = (_getsizeof(o) + 7) & ~7
        count[name] += 1
        size[name] += b
        unowned[name] += 0 if id(o) in owned else b
    return {name: (count[name], size[name], unowned[name]) for name in count}


@pytest.mark.parametrize("take_census", IMPLEMENTATIONS)
def test_every_type_matches_the_per_object_reference_across_slices_and_owners(monkeypatch, take_census):
    monkeypatch.setattr(census_mod, "_CHUNK", 997)  # numpy path: many slices, types first met mid-way
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
    assert got_owned[type_name(Sized)][1] > 1000 * got_owned[type_name(Sized)][0]
    assert got_owned[type_name(Broken)] == (3, 0, 0)
    assert got_owned[type_name(Meta)][0] == 5
    assert any(u < b for _n, b, u in got_owned.values())
    del keep


def test_the_c_census_is_built_by_the_install_when_a_compiler_is_there():
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler here: the install falls back to the numpy census, by design")
    assert census_mod.IMPLEMENTATION == "C", "pip install -e . should have built tokdiag/_speedups.c"
    from tokdiag.record.journal import make_header

    assert make_header("r", {})["speedups"] is True  # every journal records it


@pytest.mark.skipif(census_mod._speedups is None, reason="tokdiag._speedups not built")
def test_the_c_census_refuses_bad_arguments_by_name():
    with pytest.raises(TypeError):
        census_mod._speedups.count((1, 2), None, 8)  # a tuple, not a list
    with pytest.raises(ValueError, match="align=6"):
        census_mod._speedups.count([], None, 6)
    with pytest.raises(ValueError, match="sorted native int64"):
        census_mod._speedups.count([], b"abcdefgh", 8)


@pytest.mark.skipif(census_mod._speedups is None, reason="tokdiag._speedups not built")
def test_an_interrupt_inside_a_sizeof_is_not_swallowed():
    class Interrupting:
        def __sizeof__(self) -> int:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        take_census_c([Interrupting()])


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
def test_a_borrowed_c_sizeof_counts_zero_bytes_instead_of_reading_a_foreign_struct(take_census):
    objs = [Borrowed() for _ in range(3)]
    with pytest.raises(TypeError):
        sys.getsizeof(objs[0])
    assert take_census(objs)[type_name(Borrowed)] == (3, 0, 0)


@pytest.mark.parametrize("take_census", IMPLEMENTATIONS)
def test_a_sizeof_replaced_at_run_time_is_honoured_on_the_next_census(take_census, monkeypatch):
    objs = [Resized(), Resized()]
    before = take_census(objs)[type_name(Resized)][1]
    monkeypatch.setattr(Resized, "__sizeof__", lambda self: 1000, raising=False)
    after = take_census(objs)[type_name(Resized)][1]
    assert after == 2 * ((sys.getsizeof(objs[0]) + 7) & ~7) and after > before


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
