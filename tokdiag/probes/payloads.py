"""A cache's payloads: read a slice at a time, fingerprinted, searched for tiktoken Encodings.

What :class:`~tokdiag.probes.caches.CacheProbe` does with the values of a
cache, apart from sizing the cache as a whole. Nothing of the measured
program runs: values are read by the builtin containers' own C iterators,
hashed only when they are trees of exact builtin atoms (CPython's own hash
functions), and searched through their C-level referents.

A cache of millions of entries is never listed whole (issue 9, E15): its
values come :data:`PAYLOAD_SLICE` at a time (:func:`payload_slices`), the
fingerprint is an order-free sum (:class:`Fingerprint`: no list of hashes to
sort), and the caller counts distinct payloads in an id set.
"""

from __future__ import annotations

import collections
import gc
import sys
from collections.abc import Iterator
from itertools import compress, islice, repeat
from operator import is_
from typing import Any

import numpy as np

from tokdiag._clevel import bare_name, distinct_types, instance_attr, is_one_of, is_subtype, module_name, type_name
from tokdiag._native import speedups
from tokdiag.probes.seen import Seen
from tokdiag.probes.sizing import deep_sizes

__all__ = ["ATOM_TYPE_IDS", "BUILTINS", "PAYLOAD_SLICE", "Fingerprint", "builtin_base", "encodings_among",
           "is_encoding_type", "payload_slices"]


BUILTINS: tuple[type, ...] = (dict, list, tuple, collections.deque, set, frozenset)
"""Builtin containers: a cache that is one of them (or a subclass) is read with their own C methods."""


def builtin_base(t: type) -> type | None:
    """The builtin container class ``t`` is (or derives from), by its MRO; None for any other class."""
    return next((b for b in BUILTINS if is_subtype(t, b)), None)


def is_encoding_type(t: type) -> bool:
    """Whether ``t`` is tiktoken's ``Encoding`` (by its names, read from the C struct)."""
    return bare_name(t) == "Encoding" and module_name(t).startswith("tiktoken")


def _is_encoding(obj: object) -> bool:
    return is_encoding_type(type(obj))


_ATTR_DICT_MAX = 256
"""A dict among an object's referents is searched for Encodings only up to this many entries:
attribute dicts are small; a large dict is data (a vocabulary), not where a tokenizer keeps its Encoding."""


def _encoding_tables(enc: Any) -> tuple[dict[Any, Any], dict[Any, Any]]:
    """An Encoding's ``_mergeable_ranks`` and ``_special_tokens`` as plain instance attributes.

    Each is ``{}`` when not a dict.
    """
    ranks = instance_attr(enc, "_mergeable_ranks")
    special = instance_attr(enc, "_special_tokens")
    return (ranks if type(ranks) is dict else {}), (special if type(special) is dict else {})


ATOM_TYPE_IDS = frozenset(map(id, (str, bytes, int, float, bool, type(None))))
"""``id`` of the exact builtin atom types (checked by identity: no class is hashed)."""
_MASK = (1 << 64) - 1
_ATOM_DEPTH = 6


def _py_atom_hash(obj: object, depth: int = _ATOM_DEPTH) -> int | None:
    """``tokdiag._speedups.atom_hash`` without the extension: a hash of a tree of exact builtin
    atoms, None for anything else. Each element's type is checked (by identity) on the very
    object then hashed, so only CPython's own hash functions run."""
    t = type(obj)
    if id(t) in ATOM_TYPE_IDS:
        return hash(obj)
    if depth <= 0:
        return None
    if not is_one_of(t, (tuple, list, dict, set, frozenset)):
        return None
    c: Any = obj  # exactly one of the five builtin containers (checked by type identity above)
    acc = len(c)
    if t is tuple or t is list:
        for x in tuple(c):
            h = _py_atom_hash(x, depth - 1)
            if h is None:
                return None
            acc = ((acc ^ h) * 1000003) & _MASK
        return acc
    try:
        if t is dict:
            for k, v in list(dict.items(c)):
                hk, hv = _py_atom_hash(k, depth - 1), _py_atom_hash(v, depth - 1)
                if hk is None or hv is None:
                    return None
                acc = (acc + ((hk * 1000003) ^ hv)) & _MASK
            return acc
        for x in list(c):
            h = _py_atom_hash(x, depth - 1)
            if h is None:
                return None
            acc = (acc + h * 1000003) & _MASK
        return acc
    except RuntimeError:  # changed size while read (another thread)
        return None


def _atom_hash(obj: object) -> int | None:
    if speedups is not None:
        return speedups.atom_hash(obj, _ATOM_DEPTH)
    return _py_atom_hash(obj)


def _content_hash(obj: Any, seen: Seen) -> int:
    """A hash of a payload's contents that changes when it is mutated, running none of its code.

    Trees of exact builtin atoms are hashed (:func:`_atom_hash`); an
    Encoding by its ranks and special tokens; anything else by its type
    name and deep size, walked with ``seen`` (shared by the payloads of one
    cache, so what they share is walked once: one walk of the cache at most).
    """
    if _is_encoding(obj):
        ranks, special = _encoding_tables(obj)
        return hash((_content_hash(ranks, seen), _content_hash(special, seen)))
    h = _atom_hash(obj)
    if h is not None:
        return h
    return hash((type_name(type(obj)), deep_sizes([obj], seen, {})))


PAYLOAD_SLICE = 8192
"""Payloads read per slice: a cache's values are never listed whole."""


def payload_slices(obj: Any, base: type[Any]) -> Iterator[list[Any]]:
    """The values (payloads) of a builtin container or subclass, in slices of :data:`PAYLOAD_SLICE`.

    Read by ``base``'s own C iterator, whatever a subclass overrides. When
    another thread changes the container's size between two slices the
    iterator raises; the read starts over (the caller skips what it had
    already taken, by identity), and after three tries the values are
    copied in one C call, which no thread interrupts.
    """
    for _ in range(3):
        try:
            it = iter(dict.values(obj)) if base is dict else base.__iter__(obj)
            while part := list(islice(it, PAYLOAD_SLICE)):
                yield part
            return
        except RuntimeError:  # "changed size during iteration": another thread
            continue
    for _ in range(3):
        try:
            values = list(dict.values(obj)) if base is dict else list(base.__iter__(obj))
        except RuntimeError:
            continue
        for lo in range(0, len(values), PAYLOAD_SLICE):
            yield values[lo:lo + PAYLOAD_SLICE]
        return


_MIX = 0x9E3779B97F4A7C15


class Fingerprint:
    """An order-free hash of a cache's distinct payloads, fed a slice at a time.

    Trees of builtin atoms add their content hash; tiktoken Encodings the
    hash of their ranks and special tokens; every other payload adds to
    its type's count and deep size (sized in bulk with one seen set of
    their own, so what they share is walked once). A payload mutated in
    place changes its hash or its type's size, so the fingerprint changes.
    """

    def __init__(self) -> None:
        self.acc = 0
        self.seen = Seen()
        self.by_type: dict[str, list[int]] = {}  # type name -> [count, deep bytes]

    def add(self, payloads: list[Any]) -> None:
        hashes = (list(map(speedups.atom_hash, payloads, repeat(_ATOM_DEPTH))) if speedups is not None
                  else list(map(_py_atom_hash, payloads)))
        atoms = [h for h in hashes if h is not None]
        if atoms:
            mixed = np.fromiter(atoms, dtype=np.uint64, count=len(atoms)) * np.uint64(_MIX)
            self.acc = (self.acc + int(mixed.sum(dtype=np.uint64))) & _MASK
        rest = list(compress(payloads, map(is_, hashes, repeat(None))))
        del hashes, atoms
        for t in distinct_types(rest):
            group = list(compress(rest, map(is_, map(type, rest), repeat(t))))
            if is_encoding_type(t):
                for enc in group:
                    self.acc = (self.acc + (_content_hash(enc, self.seen) & _MASK) * _MIX) & _MASK
            else:
                entry = self.by_type.setdefault(type_name(t), [0, 0])
                entry[0] += len(group)
                entry[1] += deep_sizes(group, self.seen, {})
            del group

    def value(self) -> int:
        acc = self.acc
        for name, (n, size) in self.by_type.items():
            acc = (acc + (hash((name, n, size)) & _MASK) * _MIX) & _MASK
        return hash(acc) & 0x1FFFFFFFFFFFFF


def encodings_among(payloads: list[Any]) -> list[Any]:
    """tiktoken Encodings that are among ``payloads`` or attributes of them (a tokenizer wrapping one).

    Attributes are the payloads' referents (``gc.get_referents``: inline
    values, slots) and the values of small dicts among them (materialised
    instance dicts): nothing of their classes runs. Builtin containers are
    not searched (their items are payloads of their own). One
    ``gc.get_referents`` for all the payloads that may hold one, one more
    for the small dicts; nothing at all while tiktoken is not imported.
    """
    if not any(m == "tiktoken" or m.startswith("tiktoken.") for m in list(sys.modules)):
        return []  # no Encoding can exist
    found: list[Any] = []
    holders: list[Any] = []
    for t in distinct_types(payloads):
        if is_encoding_type(t):
            found.extend(p for p in payloads if type(p) is t)
        elif builtin_base(t) is None:
            holders.extend(p for p in payloads if type(p) is t)
    if not holders:
        return found
    refs = gc.get_referents(*holders)
    del holders
    found.extend(r for r in refs if is_encoding_type(type(r)))
    small = [r for r in refs if type(r) is dict and len(r) <= _ATTR_DICT_MAX]
    del refs
    if small:
        found.extend(v for v in gc.get_referents(*small) if is_encoding_type(type(v)))
    return found
