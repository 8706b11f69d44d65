"""The identity set behind ``Seen``: C (tokdiag._speedups.IdSet) and Python fallback behave alike,
and a snapshot's sizing leaves nothing behind in the measured process's RSS."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest
from pympler.asizeof import asizeof

import tokdiag.probes.seen as seen_module
import tokdiag.probes.sizing as sizing
from tokdiag.probes.seen import Seen
from tokdiag.probes.sizing import deep_size, deep_sizes
from tokdiag.probes.vocab import vocab_dict_size

BACKENDS = [
    pytest.param(seen_module._PyIdSet, id="python"),
    pytest.param(
        getattr(sys.modules.get("tokdiag._speedups"), "IdSet", None),
        id="C",
        marks=pytest.mark.skipif("tokdiag._speedups" not in sys.modules, reason="tokdiag._speedups not built"),
    ),
]


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    monkeypatch.setattr(seen_module, "IdSet", request.param)
    return request.param


def test_take_new_returns_each_new_object_once_in_order_and_skips_program_structure(backend):
    ids = backend()
    a, b, c = [1], {"k": 2}, (3, [4])
    got = ids.take_new([a, b, a, len, types, int, c, b], sizing._SKIP_TYPES)
    assert [id(o) for o in got] == [id(a), id(b), id(c)]
    assert len(ids) == 3 and a in ids and len not in ids and int not in ids
    assert ids.take_new([c, a, [5]], sizing._SKIP_TYPES)[0] == [5]  # only the new list
    assert len(ids) == 4


def test_contains_any_add_all_and_ids_mean_identity_not_equality(backend):
    ids = backend()
    x, y = b"x" * int("100"), b"x" * int("100")  # equal, not the same object
    ids.add_all([x])
    assert ids.contains_any([y, 7.5]) is False
    assert ids.contains_any(iter([y, x])) is True
    ids.add_all({1000.5: None, 2000.5: None})  # any iterable
    got = set(np.frombuffer(ids.ids(), dtype=np.uint64).tolist())
    assert id(x) in got and len(got) == 3


def test_deep_sizes_agree_with_pympler_and_split_owners_with_either_backend(backend):
    payload = [f"message {i}" * 3 for i in range(500)]
    a = {"history": payload, "meta": {"n": 1}}
    b = {"same": payload, "own": list(range(300, 900))}
    assert deep_size(a) == pytest.approx(asizeof(a), rel=0.01)
    seen = Seen()
    first, second = deep_sizes([a], seen), deep_sizes([b], seen)
    assert first == pytest.approx(asizeof(a), rel=0.01)
    assert second == pytest.approx(asizeof(b) - asizeof(payload), rel=0.01)
    assert payload in seen and isinstance(seen.ids, backend)


@pytest.mark.parametrize("values", [
    pytest.param(lambda n: list(range(n)), id="ranks"),
    pytest.param(lambda n: [i - n // 2 for i in range(n)], id="negative"),
    pytest.param(lambda n: [i % 1000 for i in range(n)], id="repeated"),
    pytest.param(lambda n: [i * 1_000_003 for i in range(n)], id="sparse"),
    pytest.param(lambda n: [2**40 + i for i in range(n)], id="two-digit ints"),
])
def test_vocabulary_fast_path_is_exact_or_steps_aside(backend, values):
    n = 20_000
    vocab = {f"tok{i:06d}".encode(): v for i, v in zip(range(n), values(n), strict=True)}
    assert deep_size(vocab) == pytest.approx(asizeof(vocab), rel=1e-4)
    assert deep_sizes([{"cache": vocab}], Seen()) == pytest.approx(asizeof({"cache": vocab}), rel=1e-4)


def test_repeated_values_are_not_sized_in_bulk():
    vocab = {f"tok{i:06d}".encode(): i % 1000 for i in range(20_000)}
    assert vocab_dict_size(vocab) is None  # shared int objects: the walk must dedupe them
    ranks = {f"tok{i:06d}".encode(): i for i in range(20_000)}
    assert vocab_dict_size(ranks) == pytest.approx(asizeof(ranks), rel=1e-4)


_SNAPSHOTS_OF_A_VOCABULARY = textwrap.dedent("""
    import json, sys
    import tokdiag as td
    from tokdiag.probes import seen
    if sys.argv[1] == "python":
        seen.IdSet = seen._PyIdSet
    CACHE = {"ranks": {b"tok%06d" % i: i for i in range(200_000)},
             "decoder": {i: b"x%06d" % i for i in range(200_000)}}
    run = td.track(lambda i: None, steps=10, every=1, caches=[CACHE], census=True, progress=False)
    print(json.dumps(run.series("process", "process", "rss").tolist()))
""")


def test_snapshots_of_a_large_cache_leave_the_measured_process_rss_flat():
    """Sizing 400k entries per snapshot must not leave its temporaries in the process's RSS.

    A Python set of one int per id (the fallback) left ~15 MiB behind in glibc after the
    first snapshots and kept creeping (measured with tiktoken's registry holding
    cl100k_base), which read as growth of the workload: a one-off cache load judged a
    leak. The C id set maps its table from the OS and gives it back.
    """
    out = subprocess.run([sys.executable, "-c", _SNAPSHOTS_OF_A_VOCABULARY, "C"],
                         capture_output=True, text=True, timeout=300, check=True)
    rss = json.loads(out.stdout.strip().splitlines()[-1])
    if "tokdiag._speedups" not in sys.modules:
        pytest.skip("tokdiag._speedups not built: the Python id set keeps its allocator footprint")
    mib = [round(r / 2**20, 1) for r in rss]
    # measured: C +4.3 MiB over the first two snapshots, then flat; Python set +14.5 MiB, then +3.5 MiB more
    assert max(rss) - rss[0] < 8 * 2**20, mib
    assert rss[-1] - rss[3] < 2**20, mib  # no creep once the first snapshots are done


class _UnhashableMeta(type):
    def __eq__(cls, other):  # defines __eq__ without __hash__: its classes cannot be hashed
        return cls is other


class _Odd(metaclass=_UnhashableMeta):
    def __init__(self) -> None:
        self.payload = [1, 2, 3]


class _Even:  # the same instances, an ordinary class (pympler cannot size _Odd: it hashes the class)
    def __init__(self) -> None:
        self.payload = [1, 2, 3]


def test_objects_of_a_class_with_an_unhashable_metaclass_are_sized_and_counted(backend):
    import gc

    from tokdiag.probes.census import take_census_c, take_census_numpy, type_name

    with pytest.raises(TypeError):
        hash(_Odd)
    def holder(cls: type) -> dict:
        return {"odd": [cls() for _ in range(10)], "vocab": {b"k%05d" % i: cls() for i in range(2000)}}

    odd, even = holder(_Odd), holder(_Even)
    assert deep_size(odd) == deep_size(even) == pytest.approx(asizeof(even), rel=0.01)
    heap = gc.get_objects()
    try:
        census_paths = [take_census_numpy] + ([take_census_c] if "tokdiag._speedups" in sys.modules else [])
        for take in census_paths:
            assert take(heap)[type_name(_Odd)][0] == 2010
    finally:
        del heap


def test_take_new_accepts_any_iterable_alike(backend):
    a, b, c, d = [1], [2], [3], [4]
    ids = backend()
    assert [id(o) for o in ids.take_new(iter([a, b, c, d]), sizing._SKIP_TYPES)] == [id(a), id(b), id(c), id(d)]
    assert len(ids) == 4
