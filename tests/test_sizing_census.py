"""deep_size against pympler, the census against a reference count."""

from __future__ import annotations

import gc
import sys
from collections import Counter
from dataclasses import dataclass, field

import pytest
from pympler import asizeof

import tokdiag as td
from tokdiag.probes.census import take_census, type_name
from tokdiag.probes.sizing import shallow_size


@dataclass
class Msg:
    role: str
    content: str
    meta: dict = field(default_factory=dict)


def _vocab(n: int) -> dict[bytes, int]:
    return {f"tok{i:06d}-{'x' * (i % 13)}".encode(): i for i in range(n)}


@pytest.mark.parametrize("shape", ["vocab", "messages", "dataclasses", "mixed"])
def test_deep_size_agrees_with_pympler_within_one_percent(shape: str):
    if shape == "vocab":
        obj: object = _vocab(150_000)
    elif shape == "messages":
        obj = [{"role": "user", "content": f"question {i} " * 20, "meta": {"i": i, "tags": ["a", "b"]}}
               for i in range(3000)]
    elif shape == "dataclasses":
        obj = [Msg("assistant", f"answer {i} " * 30, {"step": i}) for i in range(3000)]
    else:
        obj = {"history": [Msg("user", "x" * i) for i in range(300)], "blob": bytes(10_000), "n": 10**30}
    ours = td.deep_size(obj)  # first: pympler materialises instance __dict__s on 3.11
    theirs = asizeof.asizeof(obj)
    assert abs(ours - theirs) <= 0.01 * theirs, (ours, theirs)


def test_deep_size_sees_objects_the_gc_does_not_track():
    payload = {"k": "v" * 10_000}  # a dict of atoms: untracked, and so is the str
    assert not gc.is_tracked(payload)
    assert td.deep_size([payload]) > 10_000
    assert td.deep_size(b"x" * 5000) >= 5000


def test_deep_size_counts_the_str_keys_the_gc_does_not_visit():
    # CPython 3.11+ does not traverse the keys of a dict whose keys are all str: the walk must read them
    big = "x" * 10_000
    d = {big: 1}
    assert td.deep_size(d) == asizeof.asizeof(d) > 10_000  # 216 bytes when the key was missed
    from collections import OrderedDict, defaultdict

    for sub in (OrderedDict({"y" * 5000: 2}), defaultdict(list, {"z" * 5000: [1]})):
        assert td.deep_size(sub) == asizeof.asizeof(sub) > 5000
    nested = {"outer": {big + "!": 0}, "keys": [{"k" * 3000: i} for i in range(3)]}
    assert td.deep_size(nested) == asizeof.asizeof(nested)
    seen = td.Seen()  # a key shared by two dicts goes to the first owner only
    first, second = td.deep_size({big: 1}, seen), td.deep_size({big: 2}, seen)
    assert first > 10_000 > second


def test_shared_seen_splits_bytes_between_owners_without_double_counting():
    shared = bytes(50_000)
    a, b = [shared], [shared]
    seen = td.Seen()
    first, second = td.deep_size(a, seen), td.deep_size(b, seen)
    assert first > 50_000 > second
    both = [a, b]
    assert first + second == td.deep_size(both) - shallow_size(both)


def test_deep_size_does_not_follow_classes_modules_or_functions():
    class Holder:
        pass

    h = Holder()
    h.mod = sys
    h.fn = test_deep_size_sees_objects_the_gc_does_not_track
    assert td.deep_size(h) < 1000


def test_census_counts_match_a_reference_count():
    class Marker:
        pass

    keep = [Marker() for _ in range(1234)]
    gc.collect()
    heap = gc.get_objects()
    rows = take_census(heap)
    reference = Counter(type_name(type(o)) for o in heap)
    ref_bytes = Counter()
    for o in heap:
        ref_bytes[type_name(type(o))] += (sys.getsizeof(o) + 7) & ~7
    del heap
    assert rows[type_name(Marker)][0] == 1234
    for name in ("builtins.dict", "builtins.list", "builtins.function", type_name(Marker)):
        assert rows[name][0] == reference[name]
        if name in ("builtins.dict", "builtins.list"):  # another thread of the process (xdist's) may resize one
            assert rows[name][1] == pytest.approx(ref_bytes[name], abs=4096)
        else:
            assert rows[name][1] == ref_bytes[name]
    del keep


def test_census_dataframe():
    df = td.census()
    assert list(df.columns) == ["type", "count", "bytes"]
    assert df["bytes"].is_monotonic_decreasing
    assert (df["type"] == "builtins.dict").any()


def test_unowned_bytes_leave_out_what_an_owner_claimed():
    class Owned:
        pass

    objs = [Owned() for _ in range(100)]
    gc.collect()
    seen = td.Seen()
    td.deep_size(objs[:40], seen)
    heap = gc.get_objects()
    count, total, unowned = take_census(heap, seen)[type_name(Owned)]
    del heap
    assert count == 100
    assert unowned == total * 60 // 100


def test_a_vocabulary_inside_a_cache_is_sized_in_bulk_exactly_and_only_once():
    from pympler.asizeof import asizeof

    from tokdiag.probes.seen import Seen
    from tokdiag.probes.sizing import deep_sizes

    ranks = {f"tok{i:06d}".encode(): i for i in range(20_000)}
    first, second = {"path": ranks}, {"other": ranks}
    assert deep_sizes([first], Seen()) == pytest.approx(asizeof(first), rel=1e-4)
    seen = Seen()
    a = deep_sizes([first], seen)
    b = deep_sizes([second], seen)
    assert a == pytest.approx(asizeof(first), rel=1e-4)
    assert b == pytest.approx(asizeof(second) - asizeof(ranks), abs=64)  # only its own shell and key
    # a dict that shares its bytes with one already counted (a decoder) is walked, not double counted
    decoder = {v: k for k, v in ranks.items()}
    seen = Seen()
    both = deep_sizes([ranks], seen) + deep_sizes([decoder], seen)
    assert both == pytest.approx(asizeof([ranks, decoder]) - asizeof([]), rel=1e-4)


def test_the_snapshots_own_seen_set_is_not_counted_by_the_census():
    import tokdiag as td

    cache: dict[int, list[str]] = {}

    def step(i: int) -> None:
        cache[i] = [str(j) * 3 for j in range(50_000)]  # 50k objects per step, all owned by the cache

    run = td.track(step, steps=6, every=1, caches=[cache], progress=False)
    sets = run.series("census", "builtins.set", "unowned_bytes")
    # the seen set grows by ~2 MB per step here; counted, builtins.set would grow with it
    assert sets.iloc[-1] - sets.iloc[0] < 64 * 1024
    ledger = run.ledger()
    last = ledger[ledger.step == ledger.step.max()].set_index("owner")["bytes"]
    assert "builtins.set" not in last.index or last["builtins.set"] < 64 * 1024


def test_deep_size_counts_the_str_keys_of_a_dict_too_big_to_list_at_once():
    # a dict of 40,000 str keys is walked in slices (bounded memory); its keys, which its tp_traverse skips, too
    d = {("key%d" % i) * 3: [i] for i in range(40_000)}
    assert td.deep_size(d) == asizeof.asizeof(d)
