"""The sliced census gives, for every type, exactly the per-object reference figures."""

from __future__ import annotations

import gc
import sys
from collections import Counter
from dataclasses import dataclass

import tokdiag as td
import tokdiag.probes.census  # noqa: F401  (the module, not the census() function)
from tokdiag.probes.census import take_census, type_name


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


def _reference(heap: list, owned: set[int]) -> dict[str, tuple[int, int, int]]:
    count: Counter[str] = Counter()
    size: Counter[str] = Counter()
    unowned: Counter[str] = Counter()
    for o in heap:
        name = type_name(type(o))
        b = (sys.getsizeof(o) + 7) & ~7
        count[name] += 1
        size[name] += b
        unowned[name] += 0 if id(o) in owned else b
    return {name: (count[name], size[name], unowned[name]) for name in count}


def test_every_type_matches_the_per_object_reference_across_slices_and_owners(monkeypatch):
    monkeypatch.setattr(sys.modules["tokdiag.probes.census"], "_CHUNK", 997)  # many slices, types first met mid-way
    keep = []
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
        got_owned = take_census(heap, seen.ids)
        got_plain = take_census(heap)
        want = _reference(heap, seen.ids)
    finally:
        del heap
    assert got_owned == want
    assert got_plain == {name: (n, b, b) for name, (n, b, _u) in want.items()}
    assert got_owned[type_name(Sized)][1] > 1000 * got_owned[type_name(Sized)][0]
    assert any(u < b for _n, b, u in got_owned.values())
    del keep
