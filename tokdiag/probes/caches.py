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

A cache's payloads are read a slice at a time (:func:`payload_slices`) and
never listed whole, and its deep size is walked in bounded batches
(:func:`tokdiag.probes.sizing.deep_sizes`), so the probe's own memory stays
small on a cache of millions of entries (issue 9, E15).
"""

from __future__ import annotations

import functools
import types
import weakref
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any

from tokdiag._clevel import bare_name, instance_attr, is_one_of, is_subtype, module_name, type_name
from tokdiag.errors import ConfigError
from tokdiag.probes.base import OnceWarnings, SnapshotContext
from tokdiag.probes.native import estimate_tiktoken_native, tiktoken_native_of  # noqa: F401  (the model lives there)
from tokdiag.probes.payloads import ATOM_TYPE_IDS, Fingerprint, builtin_base, encodings_among, payload_slices
from tokdiag.probes.seen import Seen
from tokdiag.probes.sizing import deep_sizes, unsized_message
from tokdiag.recording.targets import ATTRIBUTE, resolve
from tokdiag.records import BYTES, CALLS, ENTRIES, HASH, OBJECTS, Record

_NOT_SEQUENCES: tuple[type, ...] = (str, bytes, bytearray, memoryview, range)
_NOTHING: frozenset[type] = frozenset()


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
    """Resolve ``"package.module:attr.sub"`` to the object, or raise :class:`TargetError`.

    See :mod:`tokdiag.recording.targets`.
    """
    return resolve(target, "cache", expected=ATTRIBUTE)


_LRU = functools._lru_cache_wrapper


def _cache_kind(obj: object) -> str | None:
    """``"lru"``, ``"builtin"`` (a dict, list, tuple, deque, set or frozenset, or a subclass),
    ``"abc"`` (another mapping, sequence or set, by its ABC), or None: not a cache."""
    t = type(obj)
    if t is _LRU:
        return "lru"
    if builtin_base(t) is not None:
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
    """``"an int (9223372036854775807)"``, ``"a builtins.builtin_function_or_method"``.

    No repr of a program's object.
    """
    t = type(obj)
    shown = ""
    if id(t) in ATOM_TYPE_IDS:
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
                f"cache {target!r} resolves to {_describe(obj)}, which is not a cache: a cache is a mapping (dict), "
                f"a sequence (list, tuple, deque), a set, or a functools.lru_cache-wrapped function{getter}; "
                "to measure any other object, pass a zero-argument function returning it: "
                "td.cache(lambda: obj, name=...)"
            )
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
            base = builtin_base(type(obj))
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
        fingerprint = Fingerprint() if spec.fingerprint else None
        native: int | None = None
        for part in (payload_slices(obj, base) if base is not None else iter([[obj]])):
            new = distinct.ids.take_new(part, _NOTHING)  # each payload once, by identity (classes left out...)
            distinct.ids.add_all(part)  # ... but counted
            del part
            if fingerprint is not None and new:
                fingerprint.add(new)
            if spec.native and new:
                for enc in encodings_among(new):  # one Encoding in two caches is counted once
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
