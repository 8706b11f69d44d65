"""The census counts what the gc does not track, and writes slow growers (issue 11 items 3 and 4).

A leak of objects the garbage collector never lists (``bytearray``, ``str``,
tuples of atoms) used to be 100% "unexplained" in the ledger: the census
counted ``gc.get_objects()`` only. A class made once per step only reached
the journal after its count moved by 50.
"""

from __future__ import annotations

import collections
import gc
import sys
import warnings

import pytest

import tokdiag as td
from tokdiag.analysis import UNEXPLAINED, ledger
from tokdiag.probes import AllocatorProbe, CensusProbe
from tokdiag.probes.census import IMPLEMENTATION, take_census_c, take_census_numpy, type_name
from tokdiag.probes.sizing import shallow_size

CENSUSES = [pytest.param(take_census_numpy, id="numpy"),
            pytest.param(take_census_c, id="C", marks=pytest.mark.skipif(IMPLEMENTATION != "C", reason="no C build"))]


def _reference_untracked(heap: list, owned: set[int]) -> dict[str, tuple[int, int, int]]:
    """Per type, the untracked objects reachable from ``heap``, each once: referents plus dict keys."""
    met: set[int] = set()
    out: collections.Counter = collections.Counter()
    stack: list = []
    for o in heap:
        stack.extend(gc.get_referents(o))
        if issubclass(type(o), dict):
            stack.extend(dict.keys(o))
        while stack:
            r = stack.pop()
            if gc.is_tracked(r) or issubclass(type(r), type) or id(r) in met:
                continue
            met.add(id(r))
            name = type_name(type(r))
            size = shallow_size(r)
            out[name, 0] += 1
            out[name, 1] += size
            out[name, 2] += 0 if id(r) in owned else size
            stack.extend(gc.get_referents(r))
            if issubclass(type(r), dict):
                stack.extend(dict.keys(r))
    names = {name for name, _ in out}
    return {name: (out[name, 0], out[name, 1], out[name, 2]) for name in names}


class Holder:
    def __init__(self, i: int, shared: str) -> None:
        self.blob = bytearray(100 + i)
        self.text = f"text-{i}" * 3
        self.shared = shared
        self.pair = (i * 1000, float(i))


@pytest.mark.parametrize("take_census", CENSUSES)
def test_untracked_objects_reachable_from_the_heap_are_counted_once_each_by_type(take_census):
    shared = "shared" * 50
    keep: list = [Holder(i, shared) for i in range(50)]
    keep += [{"k" * (i + 20): bytes(i)} for i in range(30)]  # str keys: dict_traverse skips them
    keep += [{i: ("a" * i, (i, str(i)))} for i in range(30)]  # untracked nested tuples
    keep += [collections.OrderedDict({"o" * (i + 40): shared}) for i in range(10)]  # a dict subclass
    keep += [[shared, shared, bytearray(7)] for _ in range(10)]
    gc.collect()  # untracks the tuples and dicts of atoms
    keep += [vars(h) for h in keep[:5]]  # materialised instance dicts (of atoms: untracked, reached from the holders)
    heap = [keep] + [o for o in keep if gc.is_tracked(o)]  # what gc.get_objects() lists: tracked objects
    seen = td.Seen()
    td.deep_size(keep[:20], seen)
    owned = set(seen.sorted_ids().tolist())
    tracked_only = take_census(heap, seen)
    got = take_census(heap, seen, untracked=True)
    want = _reference_untracked(heap, owned)
    assert want[type_name(bytearray)][0] == 60 and want[type_name(str)][1] > 50 * 20
    for name in set(got) | set(want) | set(tracked_only):
        n0, b0, u0 = tracked_only.get(name, (0, 0, 0))
        n, b, u = want.get(name, (0, 0, 0))
        assert got.get(name) == (n0 + n, b0 + b, u0 + u), name
    assert got[type_name(str)][2] < got[type_name(str)][1]  # owned strings are left out of unowned bytes


@pytest.mark.parametrize("take_census", CENSUSES)
def test_the_referents_of_objects_in_skip_are_not_walked(take_census):
    ids = {10**12 + i for i in range(1000)}  # like the numpy path's Python id set: ints nobody else holds
    gc.collect()
    with_ints = take_census([ids], untracked=True)
    without = take_census([ids], untracked=True, skip=[ids])
    assert with_ints[type_name(int)][0] == 1000
    assert type_name(int) not in without and without[type_name(set)][0] == 1


def _last_owners(run: td.Run):
    # from the first snapshot: what grew over the whole run (the warm-up baseline follows the RSS curve, which
    # depends on what earlier tests of the process freed)
    led = run.ledger(since="start")
    return led[led["step"] == led["step"].max()].set_index("owner")["bytes"]


def _give_back_free_pages() -> None:
    import ctypes

    gc.collect()
    ctypes.CDLL(None).malloc_trim(0)  # glibc: free pages anywhere in the heap go back to the OS


def test_a_bytearray_leak_with_no_hints_is_owned_by_builtins_bytearray():
    # the sink is a local: no module reaches it, so the containers probe cannot own it (a module-level
    # sink is owned by its path, tests/test_containers_probe.py) and only the census sees the bytearrays
    sink: list = []
    _give_back_free_pages()  # what earlier tests freed would absorb the leak's first MBs without RSS moving
    try:
        # 20 MB: RSS at the first snapshot is read before that snapshot's own work, which leaves ~1 MB
        # resident in a test process (as on main): a 10% bar on a smaller leak would measure that instead
        run = td.track(lambda i: sink.append(bytearray(10_000)), steps=2000, every=100, progress=False,
                       probes=[AllocatorProbe()])
    finally:
        sink.clear()
    owners = _last_owners(run)
    growth = owners.sum()
    assert growth > 0.8 * 2000 * 10_000
    assert owners.drop(UNEXPLAINED).idxmax() == "builtins.bytearray"
    assert owners["builtins.bytearray"] == pytest.approx(1999 * 10_064, rel=0.01)  # 10,000 B + the object
    assert abs(owners[UNEXPLAINED]) <= 0.10 * growth
    v = run.verdicts().set_index(["probe", "subject", "metric"])["verdict"]
    assert v["census", "builtins.bytearray", "unowned_bytes"] == "leak"


def _warn(i: int) -> None:
    warnings.warn(f"request {i} failed: " + "x" * 8000, UserWarning, stacklevel=1)


def test_a_warnings_registry_of_distinct_messages_is_owned_by_the_strings_it_keeps():
    module = sys.modules[__name__]
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # each distinct message shown once: its text kept in __warningregistry__
        warnings.showwarning = lambda *a, **k: None
        try:
            # containers=False: the containers probe owns a module's registry by its path
            # (tests/test_containers_probe.py); here the census alone must see its strings
            run = td.track(_warn, steps=200, every=10, progress=False, containers=False,
                           probes=[AllocatorProbe()])
            assert len(vars(module)["__warningregistry__"]) > 200
        finally:
            vars(module).pop("__warningregistry__", None)
    owners = _last_owners(run)
    kinds = run.ledger().drop_duplicates("owner").set_index("owner")["kind"]
    python = owners[kinds[owners.index].isin(["census", "container", "watch", "cache"])]
    assert python.idxmax() == "builtins.str"
    assert owners["builtins.str"] == pytest.approx(199 * 8056, rel=0.05)  # each message's text, kept
    # RSS grows by as much, or the strings take memory glibc kept free (an earlier test's): either way owned
    assert abs(owners[UNEXPLAINED]) <= 0.10 * owners["builtins.str"]
    v = run.verdicts().set_index(["probe", "subject", "metric"])["verdict"]
    assert v["census", "builtins.str", "unowned_bytes"] == "leak"


class SlowGrower:
    pass


_SLOW: list = []


def test_a_class_made_once_per_step_is_journaled_within_three_snapshots():
    _SLOW.clear()
    try:
        run = td.track(lambda i: _SLOW.append(SlowGrower()), steps=30, every=3, progress=False)
    finally:
        _SLOW.clear()
    name = type_name(SlowGrower)
    counts = run.series("census", name, "count")
    assert counts.index[0] <= 9 and counts.tolist()[-1] == 30
    v = run.verdicts().set_index(["probe", "subject", "metric"])["verdict"]
    assert v["census", name, "count"] == "leak"


def test_a_type_written_late_brings_its_start_and_the_ledger_counts_growth_from_it():
    baseline = [bytearray(1000) for _ in range(40)]  # 40 objects, ~41 KB at the start: below min_bytes/min_count
    probe = CensusProbe()
    run = td.track(lambda i: baseline.append(bytearray(1000)), steps=40, every=4, census=False, progress=False,
                   probes=[probe])
    counts = run.series("census", "builtins.bytearray", "count")
    assert counts.index[0] == 8  # written once 8 more were made
    start = run.series("census", "builtins.bytearray", "count_at_start")
    assert start.tolist() == [counts.iloc[0] - 8] and start.iloc[0] >= 40
    assert not run.verdicts()["metric"].str.endswith("_at_start").any()
    led = ledger(run.timeline, min_bytes=0, max_census_owners=10_000)
    mine = led[(led["owner"] == "builtins.bytearray") & (led["step"] == 40)]["bytes"].iloc[0]
    assert mine == pytest.approx(40 * shallow_size(bytearray(1000)), rel=0.02)  # growth only, not the first 40


def test_a_whole_object_graph_growing_by_one_per_step_is_written_at_once():
    # a new agent per task: ~100 classes of equal size each +1 per step (real AWorld: 81 pass +8 at one snapshot)
    classes = [type(f"Node{i}", (), {}) for i in range(90)]
    keep: list = []
    run = td.track(lambda i: keep.extend(c() for c in classes), steps=12, every=4, census=False, progress=False,
                   probes=[CensusProbe()])
    firsts = {s: g["step"].min() for s, g in run.timeline.query("probe == 'census' and metric == 'count'")
              .groupby("subject") if ".Node" in s}
    assert len(firsts) == 90 and set(firsts.values()) == {8}  # +8 at step 8, not 20 a snapshot


def test_growers_are_bounded_per_snapshot_and_per_run():
    classes = [type(f"Grow{i}", (), {}) for i in range(30)]
    keep: list = []
    probe = CensusProbe(max_new=5, max_growers=12)
    with pytest.warns(td.TokdiagWarning, match="max_new=5, max_growers=12"):
        run = td.track(lambda i: keep.extend(c() for c in classes for _ in range(10)), steps=6, every=1,
                       census=False, progress=False, probes=[probe])
    grown = {s for s in run.timeline.query("probe == 'census'")["subject"] if ".Grow" in s}
    assert len(grown) == 12

