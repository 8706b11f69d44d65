"""Cache probe: entries, deep bytes, shared vs duplicated payloads, mutation, native bytes.

A cache is named by ``"package.module:attr"`` (dotted attributes allowed:
``"pkg.mod:Class.cache"``), by a callable returning it, or by the object
itself. ``"module:attr"`` and callables are resolved at every snapshot, so
the probe holds no reference between snapshots; an object passed directly
is held (weakly when it allows weak references). A ``"module:attr"`` target
must be a cache: a mapping, a sequence, a set, or a
``functools.lru_cache``-wrapped function (``"sys:maxsize"`` is refused with
a :class:`~tokdiag.errors.ConfigError`); to measure any other object, pass a
zero-argument function returning it (a getter): it then counts as one entry.

Metrics per cache (see :mod:`tokdiag.records`):

- ``entries``: ``len`` of the mapping, sequence or set, or
  ``cache_info().currsize`` for ``functools.lru_cache`` wrappers (with
  ``hits``, ``misses``, ``maxsize``).
- ``bytes``: deep size, partitioned with the snapshot's shared ``Seen``:
  caches are sized before watched classes, in the order given.
- ``distinct_payloads``: distinct value objects. 1,000 keys sharing one
  Encoding is one payload; 1,000 copies are 1,000.
- ``fingerprint``: a hash of the payloads' contents (for dicts: their items;
  for tiktoken Encodings: their ranks and special tokens). It changes when a
  cached value is mutated after caching, e.g. AWorld's ``extra_vocab_file``
  path writing into a shared ranks dict. It does not depend on the order of
  the payloads.
- ``native_bytes``: for tiktoken ``Encoding`` payloads, the estimated bytes
  of their Rust core, which Python-level tools cannot see
  (:func:`estimate_tiktoken_native`).

``lru_cache`` results are reached through the wrapper itself (its
``tp_traverse`` visits every cached key and result), so ``bytes`` covers
them: 50 cached strings of ~15 KB measure ~760 KB.

Nothing of the measured program runs while a cache is measured, beyond what
names the cache: a getter is called, and a mapping, sequence or set that is
not a builtin one (``cachetools.LRUCache``, say) is asked its ``len()``.
Builtin containers and their subclasses are read with the builtin C methods
(``dict.values(cache)``, never an override); the values of other mappings
are not read at all (reading them may reorder or expire entries), so they
get no payload metrics, like ``lru_cache``. Payloads are hashed only when
they are trees of exact builtin atoms (``str``, ``bytes``, ``int``,
``float``, ``bool``, ``None`` in exact tuples, lists, sets, frozensets and
dicts, checked by identity of their types); any other payload adds to its
type's count and deep size (one walk per cache: its payloads share a seen
set). Attributes are read from the instance dict or slots
(:func:`tokdiag._clevel.instance_attr`), never through ``getattr``.

A cache's payloads are read a slice at a time (:func:`_payload_slices`) and
never listed whole, and its deep size is walked in bounded batches
(:func:`tokdiag.probes.sizing.deep_sizes`), so the probe's own memory stays
small on a cache of millions of entries (issue 9, E15).
"""

from __future__ import annotations

import collections
import functools
import gc
import sys
import types
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass
from itertools import compress, islice, repeat
from operator import is_
from typing import Any

import numpy as np

from tokdiag._clevel import bare_name, distinct_types, instance_attr, is_one_of, is_subtype, module_name, type_name
from tokdiag._native import speedups
from tokdiag.errors import ConfigError
from tokdiag.probes.base import OnceWarnings, SnapshotContext
from tokdiag.probes.native import estimate_tiktoken_native, tiktoken_native_of  # noqa: F401  (the model lives there)
from tokdiag.records import BYTES, CALLS, ENTRIES, HASH, OBJECTS, Record
from tokdiag.probes.sizing import Seen, deep_sizes, unsized_message
from tokdiag.recording.targets import ATTRIBUTE, resolve

def _is_encoding_type(t: type) -> bool:
    return bare_name(t) == "Encoding" and module_name(t).startswith("tiktoken")


def _is_encoding(obj: object) -> bool:
    return _is_encoding_type(type(obj))


_ATTR_DICT_MAX = 256
"""A dict among an object's referents is searched for Encodings only up to this many entries:
attribute dicts are small; a large dict is data (a vocabulary), not where a tokenizer keeps its Encoding."""


def _encoding_tables(enc: Any) -> tuple[dict[Any, Any], dict[Any, Any]]:
    """An Encoding's ``_mergeable_ranks`` and ``_special_tokens`` as plain instance attributes (``{}`` when not dicts)."""
    ranks = instance_attr(enc, "_mergeable_ranks")
    special = instance_attr(enc, "_special_tokens")
    return (ranks if type(ranks) is dict else {}), (special if type(special) is dict else {})


_ATOM_IDS = frozenset(map(id, (str, bytes, int, float, bool, type(None))))
_MASK = (1 << 64) - 1
_ATOM_DEPTH = 6


def _py_atom_hash(obj: object, depth: int = _ATOM_DEPTH) -> int | None:
    """``tokdiag._speedups.atom_hash`` without the extension: a hash of a tree of exact builtin
    atoms, None for anything else. Each element's type is checked (by identity) on the very
    object then hashed, so only CPython's own hash functions run."""
    t = type(obj)
    if id(t) in _ATOM_IDS:
        return hash(obj)
    if depth <= 0:
        return None
    if not is_one_of(t, (tuple, list, dict, set, frozenset)):
        return None
    acc = len(obj)  # type: ignore[arg-type]
    if t is tuple or t is list:
        for x in tuple(obj):  # type: ignore[arg-type]
            h = _py_atom_hash(x, depth - 1)
            if h is None:
                return None
            acc = ((acc ^ h) * 1000003) & _MASK
        return acc
    try:
        if t is dict:
            for k, v in list(dict.items(obj)):  # type: ignore[arg-type]
                hk, hv = _py_atom_hash(k, depth - 1), _py_atom_hash(v, depth - 1)
                if hk is None or hv is None:
                    return None
                acc = (acc + ((hk * 1000003) ^ hv)) & _MASK
            return acc
        for x in list(obj):  # type: ignore[call-overload]
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


@dataclass(frozen=True)
class CacheSpec:
    """A cache to measure. Build with :func:`tokdiag.cache`."""

    label: str
    target: Any
    native: bool = True
    fingerprint: bool = True

    def resolve(self) -> Any:
        """The cache object now (``None`` when a weakly held object has died)."""
        t = self.target
        kind = type(t)
        if kind is str:
            return resolve_target(t)
        if kind is weakref.ref:
            return t()
        if kind is _Getter:
            return t.fn()
        return t


@dataclass(frozen=True)
class _Getter:
    fn: Callable[[], Any]


def resolve_target(target: str) -> Any:
    """Resolve ``"package.module:attr.sub"`` to the object, or raise :class:`TargetError` (see tokdiag.recording.targets)."""
    return resolve(target, "cache", expected=ATTRIBUTE)


_LRU = functools._lru_cache_wrapper
# Builtin containers, read with their own C methods whatever a subclass overrides.
_BUILTINS: tuple[type, ...] = (dict, list, tuple, collections.deque, set, frozenset)
_NOT_SEQUENCES: tuple[type, ...] = (str, bytes, bytearray, memoryview, range)


def _builtin_base(t: type) -> type | None:
    """The builtin container class ``t`` is (or derives from), by its MRO; None for any other class."""
    return next((b for b in _BUILTINS if is_subtype(t, b)), None)


def _cache_kind(obj: object) -> str | None:
    """``"lru"``, ``"builtin"`` (a dict, list, tuple, deque, set or frozenset, or a subclass),
    ``"abc"`` (another mapping, sequence or set, by its ABC), or None: not a cache."""
    t = type(obj)
    if t is _LRU:
        return "lru"
    if _builtin_base(t) is not None:
        return "builtin"
    if any(is_subtype(t, b) for b in _NOT_SEQUENCES):
        return None
    try:  # the ABCs' registries: a class registered as a Mapping counts
        if issubclass(t, (Mapping, Set, Sequence)):
            return "abc"
    except Exception:
        pass
    return None


def _describe(obj: object) -> str:
    """``"an int (9223372036854775807)"``, ``"a builtins.builtin_function_or_method"``: no repr of a program's object."""
    t = type(obj)
    shown = ""
    if id(t) in _ATOM_IDS:
        text = repr(obj)
        shown = f" ({text if len(text) <= 60 else text[:57] + '...'})"
    name = type_name(t) if module_name(t) != "builtins" else bare_name(t)
    return f"{'an' if name[:1] in 'aeiou' else 'a'} {name}{shown}"


def _label_of(target: Any) -> str:
    """A label for a cache passed as an object: its ``__qualname__`` when it has one as data, else type@id."""
    if is_one_of(type(target), (types.FunctionType, types.BuiltinFunctionType)):
        return target.__qualname__
    q = instance_attr(target, "__qualname__")
    return q if type(q) is str else f"{bare_name(type(target))}@{id(target):x}"


def cache(target: Any, name: str | None = None, *, native: bool = True, fingerprint: bool = True) -> CacheSpec:
    """Name a cache for the tracker to measure.

    ``target`` is ``"package.module:attr"`` (resolved and checked now, and
    again at every snapshot; it must be a mapping, a sequence, a set or an
    ``lru_cache``-wrapped function), a zero-argument callable returning the
    cache (any object: a tokenizer counts as one entry), or the cache object
    itself. ``name`` labels it in the timeline (default: the target string,
    the callable's qualified name, or the object's type).

    >>> spec = cache("tiktoken.registry:ENCODINGS")
    >>> spec.label
    'tiktoken.registry:ENCODINGS'
    >>> cache("sys:maxsize")
    Traceback (most recent call last):
    ...
    tokdiag.errors.ConfigError: cache 'sys:maxsize' resolves to an int (9223372036854775807), which is not a cache: ...
    """
    if type(target) is CacheSpec:
        return target
    if type(target) is str:
        obj = resolve_target(target)  # fail now, with the fix, rather than at step 500
        if _cache_kind(obj) is None:
            getter = (f"; if it returns the cache, pass the function itself: td.cache({target.replace(':', '.')})"
                      if callable(obj) else "")
            raise ConfigError(
                f"cache {target!r} resolves to {_describe(obj)}, which is not a cache: a cache is a mapping (dict), a sequence "
                f"(list, tuple, deque), a set, or a functools.lru_cache-wrapped function{getter}; to measure "
                "any other object, pass a zero-argument function returning it: td.cache(lambda: obj, name=...)")
        return CacheSpec(name or target, target, native, fingerprint)
    if _cache_kind(target) is not None:
        label = name or _label_of(target)
        try:
            held: Any = weakref.ref(target)
        except TypeError:
            held = target
        return CacheSpec(label, held, native, fingerprint)
    if callable(target):
        return CacheSpec(name or _label_of(target), _Getter(target), native, fingerprint)
    raise ConfigError(
        f"cache({_describe(target)}): expected 'package.module:attr', a callable returning the cache, "
        "or a dict / list / set / lru_cache-wrapped function")


def _is_lru(obj: object) -> bool:
    return type(obj) is _LRU


def _text_of(exc: BaseException) -> str:
    """``str(exc)`` for a message; an exception class of the program's may fail to say."""
    try:
        return str(exc)
    except Exception:
        return "?"


_PAYLOAD_SLICE = 8192
"""Payloads read per slice: a cache's values are never listed whole."""


def _payload_slices(obj: Any, base: type) -> Iterator[list[Any]]:
    """The values (payloads) of a builtin container or subclass, in slices of :data:`_PAYLOAD_SLICE`.

    Read by ``base``'s own C iterator, whatever a subclass overrides. When
    another thread changes the container's size between two slices the
    iterator raises; the read starts over (the caller skips what it had
    already taken, by identity), and after three tries the values are
    copied in one C call, which no thread interrupts.
    """
    for _ in range(3):
        try:
            it = iter(dict.values(obj)) if base is dict else base.__iter__(obj)
            while part := list(islice(it, _PAYLOAD_SLICE)):
                yield part
            return
        except RuntimeError:  # "changed size during iteration": another thread
            continue
    for _ in range(3):
        try:
            values = list(dict.values(obj)) if base is dict else list(base.__iter__(obj))
        except RuntimeError:
            continue
        for lo in range(0, len(values), _PAYLOAD_SLICE):
            yield values[lo:lo + _PAYLOAD_SLICE]
        return


_MIX = 0x9E3779B97F4A7C15
_NOTHING: frozenset[type] = frozenset()


class _Fingerprint:
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
            if _is_encoding_type(t):
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


def _encodings_among(payloads: list[Any]) -> list[Any]:
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
        if _is_encoding_type(t):
            found.extend(p for p in payloads if type(p) is t)
        elif _builtin_base(t) is None:
            holders.extend(p for p in payloads if type(p) is t)
    if not holders:
        return found
    refs = gc.get_referents(*holders)
    del holders
    found.extend(r for r in refs if _is_encoding_type(type(r)))
    small = [r for r in refs if type(r) is dict and len(r) <= _ATTR_DICT_MAX]
    del refs
    if small:
        found.extend(v for v in gc.get_referents(*small) if _is_encoding_type(type(v)))
    return found


class CacheProbe:
    """Measure each named cache; caches are sized first and claim their bytes first.

    A cache that cannot be measured at one snapshot (its getter raised, its
    ``"module:attr"`` no longer resolves, a mapping's ``len()`` raised) is
    skipped at that snapshot with a :class:`~tokdiag.errors.TokdiagWarning`,
    given once per run (``warned.messages``); the run goes on.
    """

    name = "cache"

    def __init__(self, specs: list[CacheSpec]) -> None:
        labels = [s.label for s in specs]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ConfigError(f"caches: label {dupes[0]!r} is used twice; pass name=... to td.cache to tell them apart")
        self.specs = list(specs)
        self.warned = OnceWarnings()

    def collect(self, ctx: SnapshotContext) -> list[Record]:
        recs: list[Record] = []
        for spec in self.specs:
            obj = None
            try:
                obj = spec.resolve()
                recs.extend(self._measure(spec, obj, ctx))
            except Exception as exc:  # one cache that cannot be measured must not end the run
                kind = bare_name(type(exc))
                self.warned.warn(f"failed {spec.label} {kind}",
                                 f"cache {spec.label!r} was not measured at some snapshots: {kind}: {_text_of(exc)}")
            finally:
                del obj
        return recs

    def _measure(self, spec: CacheSpec, obj: Any, ctx: SnapshotContext) -> list[Record]:
        label = spec.label
        if obj is None:
            return [Record("cache", label, "entries", 0.0, ENTRIES)]
        recs: list[Record] = []
        kind = _cache_kind(obj)
        base: type | None = None  # a builtin container's class: its payloads are read
        if kind == "lru":
            info = _LRU.cache_info(obj)  # the C method, whatever the object says
            recs += [Record("cache", label, "entries", float(info.currsize), ENTRIES),
                     Record("cache", label, "hits", float(info.hits), CALLS),
                     Record("cache", label, "misses", float(info.misses), CALLS)]
            if info.maxsize is not None:
                recs.append(Record("cache", label, "maxsize", float(info.maxsize), ENTRIES))
        elif kind == "builtin":
            base = _builtin_base(type(obj))
            recs.append(Record("cache", label, "entries", float(base.__len__(obj)), ENTRIES))  # type: ignore[union-attr]
        elif kind == "abc":
            recs.append(Record("cache", label, "entries", float(len(obj)), ENTRIES))  # named as a cache: its len()
            # payloads not read: reading through __getitem__ may reorder or expire entries
        else:  # one object returned by a getter (a tokenizer): one entry
            recs.append(Record("cache", label, "entries", 1.0, ENTRIES))
        unsized: dict[str, int] = {}
        recs.append(Record("cache", label, "bytes", float(deep_sizes([obj], ctx.seen, unsized)), BYTES))
        for name, n in unsized.items():
            self.warned.warn(f"unsized {name}", f"cache {label!r}: " + unsized_message({name: n}))
        if kind == "builtin" or kind is None:
            recs.extend(self._payloads(spec, obj, base, ctx))
        return recs

    def _payloads(self, spec: CacheSpec, obj: Any, base: type | None, ctx: SnapshotContext) -> list[Record]:
        """``distinct_payloads``, ``fingerprint`` and ``native_bytes``, reading the payloads a slice at a time."""
        label = spec.label
        distinct = Seen()
        fingerprint = _Fingerprint() if spec.fingerprint else None
        native: int | None = None
        for part in (_payload_slices(obj, base) if base is not None else iter([[obj]])):
            new = distinct.ids.take_new(part, _NOTHING)  # each payload once, by identity (classes left out...)
            distinct.ids.add_all(part)  # ... but counted
            del part
            if fingerprint is not None and new:
                fingerprint.add(new)
            if spec.native and new:
                for enc in _encodings_among(new):  # one Encoding in two caches is counted once
                    native = native or 0
                    if id(enc) not in ctx.native_seen:
                        ctx.native_seen.add(id(enc))
                        native += tiktoken_native_of(enc)
            del new
        recs = [Record("cache", label, "distinct_payloads", float(len(distinct)), OBJECTS)]
        if fingerprint is not None:
            recs.append(Record("cache", label, "fingerprint", float(fingerprint.value()), HASH))
        if native is not None:
            recs.append(Record("cache", label, "native_bytes", float(native), BYTES))
        return recs
