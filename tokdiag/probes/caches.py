"""Cache probe: entries, deep bytes, shared vs duplicated payloads, mutation, native bytes.

A cache is named by ``"package.module:attr"`` (dotted attributes allowed:
``"pkg.mod:Class.cache"``), by a callable returning it, or by the object
itself. ``"module:attr"`` and callables are resolved at every snapshot, so
the probe holds no reference between snapshots; an object passed directly
is held (weakly when it allows weak references).

Metrics per cache (see :mod:`tokdiag.records`):

- ``entries``: ``len`` of the mapping, or ``cache_info().currsize`` for
  ``functools.lru_cache`` wrappers (with ``hits``, ``misses``, ``maxsize``).
- ``bytes``: deep size, partitioned with the snapshot's shared ``Seen``:
  caches are sized before watched classes, in the order given.
- ``distinct_payloads``: distinct value objects. 1,000 keys sharing one
  Encoding is one payload; 1,000 copies are 1,000.
- ``fingerprint``: a hash of the payloads' contents (for dicts: their items;
  for tiktoken Encodings: their ranks and special tokens). It changes when a
  cached value is mutated after caching, e.g. AWorld's ``extra_vocab_file``
  path writing into a shared ranks dict.
- ``native_bytes``: for tiktoken ``Encoding`` payloads, the estimated bytes
  of their Rust core, which Python-level tools cannot see
  (:func:`estimate_tiktoken_native`).

``lru_cache`` results are reached through the wrapper itself (its
``tp_traverse`` visits every cached key and result), so ``bytes`` covers
them: 50 cached strings of ~15 KB measure ~760 KB.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tokdiag.errors import ConfigError, TargetError
from tokdiag.probes.base import SnapshotContext
from tokdiag.records import BYTES, CALLS, ENTRIES, HASH, OBJECTS, Record
from tokdiag.sizing import deep_sizes
from tokdiag.targets import ATTRIBUTE, resolve

# Rust core of tiktoken (tiktoken 0.9, CoreBPE), per mergeable token: the
# token bytes are owned three times (encoder key, decoder value,
# sorted_token_bytes), each a malloc chunk of max(32, len + 8 rounded to
# 16), plus a 24-byte Vec header in sorted_token_bytes; two hashbrown
# tables of 33 bytes per bucket; plus a constant for the compiled regexes.
# Calibrated by building Encodings from already-loaded ranks and reading
# RSS (psutil) in fresh processes, 1/3/6 Encodings each:
#   cl100k_base (100,256 tokens): measured 24.73 MB/Encoding, model 20.72 MB + 4.01 MB
#   qwen       (151,643 tokens): measured 39.55 MB/Encoding, model 35.54 MB + 4.01 MB
_NATIVE_CONSTANT = 4_010_000
_BUCKET_BYTES = 33


def _malloc_chunk(n: int) -> int:
    return max(32, (n + 8 + 15) & ~15)


def estimate_tiktoken_native(mergeable_ranks: Mapping[bytes, int], special_tokens: Mapping[str, int] | None = None) -> int:
    """Estimated bytes held by the Rust core of one ``tiktoken.Encoding`` built from these ranks.

    ~24.7 MB for cl100k_base and ~39.5 MB for qwen (measured with RSS; see
    the comment above this function in ``tokdiag/probes/caches.py``).
    """
    tokens = list(mergeable_ranks)
    if special_tokens:
        tokens += [s.encode() for s in special_tokens]
    n = len(tokens)
    if n == 0:
        return 0
    cap = max(8, n * 8 // 7)
    buckets = 1 << (cap - 1).bit_length()
    per_token = sum(3 * _malloc_chunk(len(t)) + 24 for t in tokens)
    return 2 * buckets * _BUCKET_BYTES + per_token + _NATIVE_CONSTANT


def _is_encoding(obj: object) -> bool:
    t = type(obj)
    return t.__name__ == "Encoding" and t.__module__.startswith("tiktoken")


def _encodings_in(obj: object) -> list[Any]:
    """tiktoken Encodings that are ``obj`` or one of its attributes (a tokenizer wrapping one)."""
    if _is_encoding(obj):
        return [obj]
    attrs = getattr(obj, "__dict__", None)
    if isinstance(attrs, dict):
        return [v for v in attrs.values() if _is_encoding(v)]
    return []


_native_memo: dict[tuple[int, int, int], int] = {}


def _native_of(enc: Any) -> int:
    ranks = getattr(enc, "_mergeable_ranks", None) or {}
    special = getattr(enc, "_special_tokens", None) or {}
    key = (id(ranks), len(ranks), len(special))
    hit = _native_memo.get(key)
    if hit is None:
        hit = estimate_tiktoken_native(ranks, special)
        if len(_native_memo) > 256:
            _native_memo.clear()
        _native_memo[key] = hit
    return hit


def _content_hash(obj: Any) -> int:
    """A hash of a payload's contents that changes when it is mutated."""
    if _is_encoding(obj):
        return hash((_content_hash(getattr(obj, "_mergeable_ranks", {})),
                     _content_hash(getattr(obj, "_special_tokens", {}))))
    if isinstance(obj, Mapping):
        try:
            return hash((len(obj), sum(map(hash, obj.items())) & 0xFFFFFFFFFFFF))
        except TypeError:
            return hash((len(obj), deep_sizes([obj])))
    if isinstance(obj, (list, tuple, set, frozenset)):
        try:
            return hash((len(obj), sum(map(hash, obj)) & 0xFFFFFFFFFFFF))
        except TypeError:
            return hash((len(obj), deep_sizes([obj])))
    try:
        return hash(obj)
    except TypeError:
        return hash((type(obj).__name__, deep_sizes([obj])))


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
        if isinstance(t, str):
            return resolve_target(t)
        if isinstance(t, weakref.ref):
            return t()
        if isinstance(t, _Getter):
            return t.fn()
        return t


@dataclass(frozen=True)
class _Getter:
    fn: Callable[[], Any]


def resolve_target(target: str) -> Any:
    """Resolve ``"package.module:attr.sub"`` to the object, or raise :class:`TargetError` (see tokdiag.targets)."""
    return resolve(target, "cache", expected=ATTRIBUTE)


def cache(target: Any, name: str | None = None, *, native: bool = True, fingerprint: bool = True) -> CacheSpec:
    """Name a cache for the tracker to measure.

    ``target`` is ``"package.module:attr"`` (resolved and checked now, and
    again at every snapshot), a zero-argument callable returning the cache,
    or the cache object itself. ``name`` labels it in the timeline (default:
    the target string, the callable's qualified name, or the object's type).

    >>> spec = cache("tiktoken.registry:ENCODINGS")
    >>> spec.label
    'tiktoken.registry:ENCODINGS'
    """
    if isinstance(target, CacheSpec):
        return target
    if isinstance(target, str):
        resolve_target(target)  # fail now, with the fix, rather than at step 500
        return CacheSpec(name or target, target, native, fingerprint)
    if _is_lru(target) or isinstance(target, (Mapping, list, set, tuple)):
        label = name or getattr(target, "__qualname__", None) or f"{type(target).__name__}@{id(target):x}"
        try:
            held: Any = weakref.ref(target)
        except TypeError:
            held = target
        return CacheSpec(label, held, native, fingerprint)
    if callable(target):
        label = name or getattr(target, "__qualname__", repr(target))
        return CacheSpec(label, _Getter(target), native, fingerprint)
    raise ConfigError(
        f"cache({target!r}): expected 'package.module:attr', a callable returning the cache, "
        "or a dict / lru_cache-wrapped function")


def _is_lru(obj: object) -> bool:
    return callable(getattr(obj, "cache_info", None)) and callable(getattr(obj, "cache_clear", None))


class CacheProbe:
    """Measure each named cache; caches are sized first and claim their bytes first."""

    name = "cache"

    def __init__(self, specs: list[CacheSpec]) -> None:
        labels = [s.label for s in specs]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ConfigError(f"caches: label {dupes[0]!r} is used twice; pass name=... to td.cache to tell them apart")
        self.specs = list(specs)

    def collect(self, ctx: SnapshotContext) -> list[Record]:
        recs: list[Record] = []
        for spec in self.specs:
            obj = spec.resolve()
            try:
                recs.extend(self._measure(spec, obj, ctx))
            finally:
                del obj
        return recs

    def _measure(self, spec: CacheSpec, obj: Any, ctx: SnapshotContext) -> list[Record]:
        label = spec.label
        if obj is None:
            return [Record("cache", label, "entries", 0.0, ENTRIES)]
        recs: list[Record] = []
        values: list[Any]
        if _is_lru(obj):
            info = obj.cache_info()
            recs += [Record("cache", label, "entries", float(info.currsize), ENTRIES),
                     Record("cache", label, "hits", float(info.hits), CALLS),
                     Record("cache", label, "misses", float(info.misses), CALLS)]
            if info.maxsize is not None:
                recs.append(Record("cache", label, "maxsize", float(info.maxsize), ENTRIES))
            values = []
        elif isinstance(obj, Mapping):
            values = list(obj.values())
            recs.append(Record("cache", label, "entries", float(len(obj)), ENTRIES))
        elif isinstance(obj, (list, tuple, set, frozenset)):
            values = list(obj)
            recs.append(Record("cache", label, "entries", float(len(obj)), ENTRIES))
        else:
            values = [obj]
            recs.append(Record("cache", label, "entries", 1.0, ENTRIES))
        recs.append(Record("cache", label, "bytes", float(deep_sizes([obj], ctx.seen)), BYTES))
        if values or not _is_lru(obj):
            distinct = list({id(v): v for v in values}.values())
            recs.append(Record("cache", label, "distinct_payloads", float(len(distinct)), OBJECTS))
            if spec.fingerprint:
                fp = hash(tuple(sorted(_content_hash(v) for v in distinct))) & 0x1FFFFFFFFFFFFF
                recs.append(Record("cache", label, "fingerprint", float(fp), HASH))
            if spec.native:
                encodings = [e for v in distinct for e in _encodings_in(v)]
                if encodings:
                    native = 0
                    for enc in encodings:  # one Encoding in two caches is counted once
                        if id(enc) not in ctx.native_seen:
                            ctx.native_seen.add(id(enc))
                            native += _native_of(enc)
                    recs.append(Record("cache", label, "native_bytes", float(native), BYTES))
                    del encodings
            del distinct
        del values
        return recs
