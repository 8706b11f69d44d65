"""The cache probe: entries, shared vs copied payloads, mutation, native memory."""

from __future__ import annotations

import functools

import tiktoken

import tokdiag as td
from tokdiag.probes.caches import estimate_tiktoken_native

SHARED: dict[str, object] = {}


def _encoding(n: int = 2000) -> tiktoken.Encoding:
    ranks = {bytes([i]): i for i in range(256)}
    for i in range(256, n):
        ranks[f"tok{i}".encode()] = i
    return tiktoken.Encoding("tiny", pat_str=r"\S+|\s+", mergeable_ranks=ranks, special_tokens={})


def _last(run: td.Run, subject: str, metric: str) -> float:
    return run.series("cache", subject, metric).iloc[-1]


def test_many_keys_sharing_one_payload_vs_copies():
    payload = {"vocab": list(range(1000))}
    shared = {f"model-{i}": payload for i in range(50)}
    copies = {f"model-{i}": {"vocab": list(range(1000))} for i in range(50)}
    run = td.track(lambda i: None, steps=1, census=False, progress=False,
                   caches=[td.cache(lambda: shared, name="shared"), td.cache(lambda: copies, name="copies")])
    assert _last(run, "shared", "entries") == 50 == _last(run, "copies", "entries")
    assert _last(run, "shared", "distinct_payloads") == 1
    assert _last(run, "copies", "distinct_payloads") == 50
    assert _last(run, "copies", "bytes") > 20 * _last(run, "shared", "bytes")


def test_fingerprint_changes_when_a_cached_payload_is_mutated():
    ranks = {f"t{i}".encode(): i for i in range(500)}
    SHARED.clear()
    SHARED["cl100k"] = ranks

    def step(i: int) -> None:
        if i == 5:
            ranks[b"<extra>"] = 10_000  # AWorld's extra_vocab_file path writes into the shared dict

    run = td.track(step, steps=10, every=1, census=False, progress=False, caches=[f"{__name__}:SHARED"])
    fp = run.series("cache", f"{__name__}:SHARED", "fingerprint")
    assert fp.loc[0] == fp.loc[5]  # nothing changed before step 5 ran
    assert fp.loc[6] != fp.loc[5]  # step index 5 is the 6th step
    assert fp.loc[10] == fp.loc[6]
    entries = run.series("cache", f"{__name__}:SHARED", "entries")
    assert entries.nunique() == 1  # same number of cache entries: only the fingerprint tells
    SHARED.clear()


def test_lru_cache_wrapper_reports_cache_info():
    @functools.lru_cache(maxsize=8)
    def f(i: int) -> str:
        return "v" * 1000 + str(i)

    def step(i: int) -> None:
        f(i % 12)

    run = td.track(step, steps=30, every=10, census=False, progress=False, caches=[td.cache(f, name="f")])
    assert _last(run, "f", "entries") == 8
    assert _last(run, "f", "maxsize") == 8
    assert _last(run, "f", "hits") + _last(run, "f", "misses") == 30
    assert _last(run, "f", "bytes") > 8 * 1000


def test_native_bytes_for_tiktoken_encodings_counted_once_across_caches():
    enc = _encoding()
    a = {"gpt-4": enc}
    b = {"gpt-4o": enc, "gpt-4-turbo": enc}
    run = td.track(lambda i: None, steps=1, census=False, progress=False,
                   caches=[td.cache(lambda: a, name="a"), td.cache(lambda: b, name="b")])
    expected = estimate_tiktoken_native(enc._mergeable_ranks, enc._special_tokens)
    assert _last(run, "a", "native_bytes") == expected
    assert _last(run, "b", "native_bytes") == 0  # the same Encoding, already counted under "a"


def test_native_estimate_matches_the_calibration_points():
    # RSS per Encoding measured in fresh processes (see the comment in tokdiag/probes/caches.py)
    from tokdiag_workloads.vocab import find_vocabulary, load_ranks

    for name, measured in (("cl100k_base", 24.73e6), ("qwen", 39.55e6)):
        est = estimate_tiktoken_native(load_ranks(find_vocabulary(name)))
        assert abs(est - measured) < 0.03 * measured, (name, est)


def test_presets():
    assert [c.label for c in td.presets.tiktoken()] == ["tiktoken.registry:ENCODINGS"]


class _Agent:
    def __init__(self, registry: dict[int, list[str]]) -> None:
        self.registry = registry
        self.state: list[int] = []


def test_fingerprint_of_payloads_that_are_not_atoms_follows_their_contents_and_calls_nothing():
    registry = {i: [str(i)] for i in range(100)}
    cache = {i: _Agent(registry) for i in range(20)}

    def step(i: int) -> None:
        if i == 3:
            cache[7].state.append(i)  # a payload mutated in place: same objects, same keys

    run = td.track(step, steps=6, every=1, census=False, progress=False, caches=[td.cache(lambda: cache, name="c")])
    changed = run.series("cache", "c", "fingerprint").diff().fillna(0).ne(0).tolist()
    assert changed == [False, False, False, False, True, False, False]
