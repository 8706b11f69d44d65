"""Deep sizes of BPE vocabularies (``dict[bytes, int]``) in bulk, without a per-entry Python loop.

A tokenizer's vocabulary is a dict of 100k-200k ``bytes -> int`` entries;
the general walk of :mod:`tokdiag.probes.sizing` would list every entry.
When the values are pairwise distinct no two entries share an object, so
the keys' and values' sizes can be summed with numpy instead.

    >>> vocab_dict_size({b"tok%04d" % i: i for i in range(2000)}) > 2000 * 33
    True
"""

from __future__ import annotations

import sys
from itertools import islice
from typing import Any

import numpy as np

from tokdiag.probes.shallow import aligned, shallow_size

__all__ = ["VOCAB_MIN", "vocab_dict_size", "vocab_entries_size"]


# --------------------------------------------------------------------------- vocabularies


_BYTES_BASE = sys.getsizeof(b"")
_INT_ZERO = sys.getsizeof(0)
_INT_ONE_DIGIT = sys.getsizeof(1)
_INT_DIGIT = sys.getsizeof(2**30) - _INT_ONE_DIGIT  # bytes per 30-bit digit


_VOCAB_SLICE = 8192
"""Entries per numpy slice when sizing a vocabulary: 64 KiB arrays stay under
glibc's initial mmap threshold (128 KiB), so they are reused from the heap
instead of raising that threshold for the measured process (a 1.2 MB array
per vocabulary freed after each snapshot left ~6 MiB of RSS behind)."""

_VOCAB_TRIES = 3
"""Reads of a vocabulary that another thread keeps changing before the general walk takes it."""

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)
_ONLY_BYTES = {id(bytes)}
_ONLY_INT = {id(int)}


def vocab_dict_size(d: dict[Any, Any]) -> int | None:
    """Exact deep size of a ``dict[bytes, int]`` (a BPE vocabulary) without a per-entry Python loop.

    Applies only to a root dict with ``bytes`` keys and ``int`` values whose
    values are pairwise distinct: then no two entries share an object (keys
    of one dict are distinct objects; distinct values are distinct objects;
    a bytes key cannot be an int value), so no identity set is needed.
    Distinctness is checked with a bitmap over the values' range, which must
    be dense (ranks are ``0..n-1``). Returns ``None`` when the shape does not
    match; the general walk then runs.

    The dict is read in slices, with Python code in between, so another
    thread may change it half-way: the read is repeated (up to
    :data:`_VOCAB_TRIES` times) until the dict had the same size before and
    after, and otherwise left to the general walk (``None``).
    """
    for _ in range(_VOCAB_TRIES):
        n = len(d)
        if n < VOCAB_MIN:
            return None
        try:
            size = _vocab_dict_size_once(d, n)
        except (RuntimeError, ValueError):  # changed while read: "dictionary changed size", "iterator too short"
            continue
        if size is None or len(d) == n:
            return size
    return None


def _vocab_dict_size_once(d: dict[Any, Any], n: int) -> int | None:
    if set(map(id, map(type, d))) != _ONLY_BYTES or set(map(id, map(type, d.values()))) != _ONLY_INT:
        return None  # types by identity: a class is never hashed
    keys, values = iter(d), iter(d.values())
    total = shallow_size(d)
    parts: list[np.ndarray] = []
    try:
        for start in range(0, n, _VOCAB_SLICE):
            m = min(_VOCAB_SLICE, n - start)
            v = np.fromiter(islice(values, m), dtype=np.int64, count=m)
            key_sizes = np.fromiter(map(len, islice(keys, m)), dtype=np.int64, count=m) + _BYTES_BASE
            magnitude = np.abs(v)
            digits = (magnitude >= 1).astype(np.int64) + (magnitude >= 2**30) + (magnitude >= 2**60)
            value_sizes = np.where(digits == 0, _INT_ZERO, _INT_ONE_DIGIT + (digits - 1) * _INT_DIGIT)
            total += aligned(key_sizes) + aligned(value_sizes)
            parts.append(v)
    except OverflowError:  # a value beyond int64
        return None
    if next(keys, None) is not None:
        raise RuntimeError("dictionary grew while read")
    lo = min(int(v.min()) for v in parts)
    hi = max(int(v.max()) for v in parts)
    if hi - lo >= 8 * n:
        return None  # too sparse for the bitmap: the general walk decides
    bits = np.zeros((hi - lo) // 8 + 1, dtype=np.uint8)  # one bit per possible value: n / 8 bytes for ranks
    for v in parts:
        off = v - lo
        np.bitwise_or.at(bits, off >> 3, np.left_shift(1, off & 7).astype(np.uint8))
    if int(_POPCOUNT[bits].sum()) != n:
        return None  # a value repeats: two entries may share an int object
    return total


VOCAB_MIN = 1024


def vocab_entries_size(d: dict[Any, Any], ids: Any) -> int | None:
    """Bytes of the keys and values of a ``dict[bytes, int]`` vocabulary met inside a graph, in bulk.

    Same shape test as :func:`vocab_dict_size` (bytes keys, distinct int
    values, so no entry shares an object with another). When none of the
    entries was counted before (one C-level check over the keys and one
    over the values), their sizes are summed with numpy and they are marked
    counted in ``ids`` (a :class:`Seen`'s id set) so later owners do not
    count them again. Returns None when the shape does not match or some
    entry was already counted: the general walk then runs.
    """
    fast = vocab_dict_size(d)
    if fast is None:
        return None
    try:
        if ids.contains_any(d) or ids.contains_any(d.values()):
            return None
        ids.add_all(d)
        ids.add_all(d.values())
    except RuntimeError:  # another thread changed the dict between the two C loops: sizes stand
        pass
    return fast - shallow_size(d)


# --------------------------------------------------------------------------- the walk
