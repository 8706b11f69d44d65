"""A snapshot survives another thread changing what it measures (issue #9 C8).

Services have threads. A dict of >= 1,024 entries changed by another thread
while it was sized killed the run: ``RuntimeError: dictionary changed size
during iteration`` from the vocabulary fast path, ``ValueError: iterator too
short`` from its ``numpy.fromiter(count=...)``.
"""

from __future__ import annotations

import sys
import threading
import time

import tokdiag as td
from tokdiag.probes.sizing import deep_size


class Holder:
    def __init__(self, vocab: dict[bytes, int], items: list[int], members: set[int], table: dict[int, str]) -> None:
        self.vocab = vocab
        self.items = items
        self.members = members
        self.table = table


def _churn(stop: threading.Event, holders: list[Holder]) -> None:
    """Grow and shrink every container of every holder by up to 500 entries, as fast as the GIL allows."""
    sizes = [len(h.vocab) for h in holders]
    i = 0
    while not stop.is_set():
        k = i % 500
        for h, n in zip(holders, sizes, strict=True):
            if i % 1000 < 500:
                h.vocab[b"new%04d" % k] = n + k  # distinct dense ranks: the vocabulary shape holds
                h.items.append(k)
                h.members.add(-k - 1)
                h.table[-k - 1] = "v" * 10
            else:
                h.vocab.pop(b"new%04d" % k, None)
                h.items.pop()
                h.members.discard(-k - 1)
                h.table.pop(-k - 1, None)
        i += 1


def test_a_run_survives_another_thread_changing_its_caches_and_watched_objects():
    n = 20_000
    vocab = {b"tok%06d" % i: i for i in range(n)}
    items, members = list(range(n)), set(range(n))
    table = {i: "v" * 10 for i in range(n)}
    own = [Holder({b"own%06d" % i: i for i in range(5_000)}, list(range(5_000)), set(range(5_000)),
                  {i: "w" for i in range(5_000)}) for _ in range(3)]
    shared = Holder(vocab, items, members, table)
    low = deep_size(vocab)
    stop = threading.Event()
    threads = [threading.Thread(target=_churn, args=(stop, [shared, *own]), daemon=True)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads every 10 us: many times inside every snapshot
    try:
        for t in threads:
            t.start()
        run = td.track(lambda i: time.sleep(0.001), steps=20, every=1, progress=False, watch=["Holder"],
                       caches=[td.cache(lambda: vocab, name="vocab"), td.cache(lambda: items, name="items"),
                               td.cache(lambda: members, name="members"), td.cache(lambda: table, name="table")])
    finally:
        stop.set()
        for t in threads:
            t.join()
        sys.setswitchinterval(interval)
    assert run.status == "completed"
    assert len(run.steps) == 21
    for name in ("vocab", "items", "members", "table"):
        entries = run.series("cache", name, "entries")
        assert entries.between(n, n + 500).all(), (name, entries.tolist())
    high = deep_size(vocab) + 500 * 100  # the table as the thread left it (tables do not shrink), 500 more entries
    vocab_bytes = run.series("cache", "vocab", "bytes")
    assert vocab_bytes.between(0.99 * low, high).all(), (low, high, vocab_bytes.tolist())
    watched = run.series("watch", f"{__name__}.Holder", "bytes")  # the 3 own holders; shared's are the caches'
    one = deep_size(own[0])
    assert watched.between(2.5 * one, 3.5 * one).all(), (one, watched.tolist())
    del shared
