"""Native footprints: memory that types known to hold it keep outside Python's heap.

Python-level sizes do not see what a C or Rust extension allocates for an
object. For the types in :data:`REGISTRY` the native probe counts every
instance at every snapshot, whatever its growth, and estimates (or reads)
the native bytes behind them:

==========================  ========================================  ==========================================
subject (instances of it    native memory                             how
and its subclasses)
==========================  ========================================  ==========================================
``ssl.SSLContext``          OpenSSL's ``SSL_CTX`` and its X509 store  ``base + per_certificate * x509``, the
                            (the parsed CA certificates)              store's certificate count from
                                                                      ``_ssl._SSLContext.cert_store_stats``
``tiktoken.core.Encoding``  tiktoken's Rust ``CoreBPE`` (the          ``scale * structure + constant``: token
                            vocabulary a second time, hash tables,    bytes as malloc chunks and hash tables
                            compiled regexes)                         (:func:`estimate_tiktoken_native`)
``sqlite3.Connection``      SQLite's own heap (page cache, schema,    read, not estimated: ``sqlite3_memory_used()``
                            statements), all connections together     of the SQLite library ``_sqlite3`` uses
==========================  ========================================  ==========================================

Each :class:`NativeType` carries a ``calibration`` note saying how its
built-in coefficients were measured. They were fitted to the bytes of
glibc's heap in use per object (``mallinfo2``), not to RSS, so an estimate
never includes free memory the allocator keeps (the ledger's ``allocator``
owners count that). OpenSSL, CA bundles and tiktoken differ between
machines: :func:`calibrate` (``tokdiag calibrate``) re-fits the models on
this machine in fresh subprocesses, in well under a minute, and writes
them to :func:`calibration_path`; the registry uses that file's
coefficients when they were measured with the library version installed
now, and the built-in ones otherwise.

Records (probe ``native``, subject the type's name): ``count`` [objects],
``native_bytes`` [bytes], and for ``ssl.SSLContext`` ``certificates``
[entries] (the sum of the stores' certificates) and for tiktoken
``tokens`` [entries]. ``native_bytes`` is partitioned like the other
probes' bytes: an Encoding whose native estimate a cache already recorded
(``cache/<label>/native_bytes``, the cache probe runs first) is counted but
adds no bytes here. The probe's cost is ``tracker/tokdiag/native_s``.

How instances are found: one ``gc.get_referrers(*classes)`` over the
registered classes whose module is already imported (the probe imports
nothing) and their subclasses. Every instance of a heap type visits its
class when the collector traverses it, so this is one C pass over the
collector's objects, keyed by the class' identity (``type(o)`` looked up by
``id``): no ``isinstance``, no ``__eq__``, no attribute lookup on the
instances. It costs 1.5-1.8x the census (``bench/allocator.py``: 1M
agent-like objects, and real AWorld's heap, whose vocabularies add many
references to traverse); a pass over the heap list with ``issubclass`` in
C loops cost 2.3x. Each instance is then read
through its C class' own methods (``_ssl._SSLContext.cert_store_stats(ctx)``)
or through its attributes only when no class on its MRO defines them
(tiktoken's ranks dict). The pass is skipped while the classes' reference
counts show that no instance was made or freed (see :class:`NativeProbe`).
Types whose instances the collector does not track (``zlib.Compress``,
``zlib.Decompress``: ~256 KiB / ~44 KiB of zlib state each) are not in the
heap list and so not in the registry.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress, repeat
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tokdiag._clevel import instance_attr, type_dict
from tokdiag.errors import ConfigError, TokdiagError, TokdiagWarning, did_you_mean
from tokdiag.probes.base import SnapshotContext
from tokdiag.records import BYTES, ENTRIES, OBJECTS, SECONDS, Record

__all__ = [
    "REGISTRY", "Calibration", "NativeProbe", "NativeType", "calibrate", "calibration_path", "coefficients",
    "estimate_tiktoken_native", "native_types", "tiktoken_native_of",
]

_FLAGS = type.__dict__["__flags__"]
_SUBCLASSES = type.__dict__["__subclasses__"]
_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE


# ----------------------------------------------------------------------------- tiktoken

# Rust core of tiktoken (tiktoken 0.9, CoreBPE), per mergeable token: the
# token bytes are owned three times (encoder key, decoder value,
# sorted_token_bytes), each a malloc chunk of max(32, len + 8 rounded to
# 16), plus a 24-byte Vec header in sorted_token_bytes; two hashbrown
# tables of 33 bytes per bucket; plus a constant for the compiled regexes.
# Calibrated by building Encodings from already-loaded ranks and reading
# RSS (psutil) in fresh processes, 1/3/6 Encodings each:
#   cl100k_base (100,256 tokens): measured 24.73 MB/Encoding, model 20.72 MB + 4.01 MB
#   qwen       (151,643 tokens): measured 39.55 MB/Encoding, model 35.54 MB + 4.01 MB
# Re-measured for the registry (glibc heap in use per Encoding after one,
# 1-6 more, tokdiag.probes._native_child's method with the real ranks):
#   cl100k_base 25.93 MB (model -4.6%), qwen 41.49 MB (model -4.6%); synthetic
#   ranks with cl100k's pattern fit scale 1.000 and constant 5.21 MB, the
#   qwen pattern compiles to 0.7 MB more. calibrate() fits scale and constant.
_BUCKET_BYTES = 33
_TIKTOKEN_DEFAULTS = {"constant": 4_010_000.0, "scale": 1.0}


def _malloc_chunk(n: int) -> int:
    return max(32, (n + 8 + 15) & ~15)


def _token_length(t: object) -> int | None:
    if type(t) is bytes:
        return len(t)
    if type(t) is str:
        return len(t.encode())
    return None


def _tiktoken_structure(mergeable_ranks: Mapping[bytes, int], special_tokens: Mapping[str, int] | None) -> int:
    """Bytes of the Rust core's token storage and hash tables (the model without its constant)."""
    tokens = list(mergeable_ranks)  # one C loop: another thread changing the dict cannot interleave
    if special_tokens:
        tokens += list(special_tokens)
    lengths = [n for n in map(_token_length, tokens) if n is not None]
    del tokens
    if not lengths:
        return 0
    cap = max(8, len(lengths) * 8 // 7)
    buckets = 1 << (cap - 1).bit_length()
    return 2 * buckets * _BUCKET_BYTES + sum(3 * _malloc_chunk(n) + 24 for n in lengths)


def estimate_tiktoken_native(mergeable_ranks: Mapping[bytes, int], special_tokens: Mapping[str, int] | None = None,
                             *, coefficients: Mapping[str, float] | None = None) -> int:
    """Estimated bytes held by the Rust core of one ``tiktoken.Encoding`` built from these ranks.

    ``coefficients``: ``{"constant", "scale"}``; by default the built-in
    ones (~24.7 MB for cl100k_base and ~39.5 MB for qwen, measured with RSS;
    see the comment above this function in ``tokdiag/probes/native.py``),
    not a calibration file's, so the result depends only on the arguments.
    """
    structure = _tiktoken_structure(mergeable_ranks, special_tokens)
    if structure == 0:
        return 0
    c = _TIKTOKEN_DEFAULTS if coefficients is None else coefficients
    return int(round(c["scale"] * structure + c["constant"]))


_structure_memo: dict[tuple[int, int, int], int] = {}


def _tiktoken_instance(enc: object, coef: Mapping[str, float]) -> tuple[int, int]:
    """(native bytes, tokens) of one tiktoken Encoding with coefficients ``coef``.

    Reads the Encoding's ``_mergeable_ranks`` and ``_special_tokens`` only
    when they are plain dicts held by the instance itself (see
    :func:`tokdiag._clevel.instance_attr`); otherwise (0, 0). The model's walk over the
    tokens is remembered per ranks dict (keyed by its id and sizes).
    """
    ranks = instance_attr(enc, "_mergeable_ranks")
    special = instance_attr(enc, "_special_tokens")
    if type(ranks) is not dict:
        return 0, 0
    if type(special) is not dict:
        special = {}
    key = (id(ranks), len(ranks), len(special))
    structure = _structure_memo.get(key)
    if structure is None:
        structure = _tiktoken_structure(ranks, special)
        if len(_structure_memo) > 256:
            _structure_memo.clear()
        _structure_memo[key] = structure
    if structure == 0:
        return 0, len(ranks)
    return int(round(coef["scale"] * structure + coef["constant"])), len(ranks)


def tiktoken_native_of(enc: object) -> int:
    """Native bytes of one tiktoken Encoding with the coefficients in use (:func:`coefficients`); what the cache probe records."""
    return _tiktoken_instance(enc, coefficients("tiktoken"))[0]


# ----------------------------------------------------------------------------- ssl

_SSL_DEFAULTS = {"base": 13_810.0, "per_certificate": 5_840.0}


def _ssl_instance(ctx: object, coef: Mapping[str, float]) -> tuple[int, int]:
    ssl_c = sys.modules.get("_ssl")
    cls = None if ssl_c is None else ssl_c.__dict__.get("_SSLContext")
    if cls is None:
        return 0, 0
    try:
        x509 = int(type_dict(cls)["cert_store_stats"](ctx)["x509"])
    except Exception:  # a context OpenSSL cannot read (never seen): its base cost only
        x509 = 0
    return int(round(coef["base"] + coef["per_certificate"] * x509)), x509


# ----------------------------------------------------------------------------- sqlite3

_sqlite_memory_used: Callable[[], int] | None = None
_sqlite_looked = False


def _sqlite_process_bytes() -> int | None:
    """``sqlite3_memory_used()`` of the SQLite library the ``_sqlite3`` module uses, or None when unreachable."""
    global _sqlite_memory_used, _sqlite_looked
    if not _sqlite_looked:
        mod = sys.modules.get("_sqlite3")
        path = None if mod is None else mod.__dict__.get("__file__")
        if path is None:
            return None
        _sqlite_looked = True
        try:  # the loaded extension's handle: dlsym searches the libsqlite3 it links
            f = ctypes.CDLL(path).sqlite3_memory_used
            f.restype = ctypes.c_int64
            f.argtypes = []
            _sqlite_memory_used = f
        except (OSError, AttributeError):
            _sqlite_memory_used = None
    return None if _sqlite_memory_used is None else int(_sqlite_memory_used())


# ----------------------------------------------------------------------------- the registry


def _version_of(dist: str) -> Callable[[], str | None]:
    @functools.cache
    def version() -> str | None:
        try:
            from importlib.metadata import PackageNotFoundError, version as v

            return v(dist)
        except PackageNotFoundError:
            return None
    return version


def _openssl_version() -> str | None:
    mod = sys.modules.get("ssl")
    return None if mod is None else str(mod.__dict__.get("OPENSSL_VERSION"))


def _sqlite_version() -> str | None:
    mod = sys.modules.get("_sqlite3")
    return None if mod is None else str(mod.__dict__.get("sqlite_version"))


@dataclass(frozen=True)
class NativeType:
    """A type whose instances hold native memory, and how to measure it.

    ``base`` is ``"module:attr"`` of the class (instances of it and of its
    subclasses are counted under ``name``); it is looked up only when the
    module is already imported. ``per_instance(obj, coefficients)`` returns
    ``(bytes, items)`` for one instance; ``process_wide()`` returns the bytes
    of all instances together when the library keeps that count itself.
    ``kind`` keys :func:`coefficients` and the calibration file;
    ``version()`` names the library version the coefficients hold for.
    """

    name: str
    kind: str
    base: str
    holds: str
    calibration: str
    defaults: Mapping[str, float] = field(default_factory=dict)
    version: Callable[[], str | None] = lambda: None
    per_instance: Callable[[Any, Mapping[str, float]], tuple[int, int]] | None = None
    items: str | None = None
    process_wide: Callable[[], int | None] | None = None

    def resolve(self) -> type | None:
        """The base class, when its module is imported (None otherwise: the probe imports nothing)."""
        mod_name, _, attr = self.base.partition(":")
        mod = sys.modules.get(mod_name)
        if mod is None:
            return None
        t = mod.__dict__.get(attr)
        return t if type(t) is type else None  # a metaclass of its own could run code in issubclass


REGISTRY: tuple[NativeType, ...] = (
    NativeType(
        name="ssl.SSLContext", kind="ssl", base="_ssl:_SSLContext",
        holds="OpenSSL SSL_CTX and its X509 store (the parsed CA certificates)",
        calibration=(
            "calibrate('ssl') on OpenSSL 3.0.19: glibc heap in use per context (mallinfo2), 20 contexts after 3 "
            "in a fresh process per CA file of 0, 1, 10, 40, 117 (certifi) and 144 (Debian's ca-certificates) "
            "certificates: 13.81 KB + 5.84 KB per certificate, within 1.1% at 0/10/40/117/144 certificates, "
            "5.4% (1.1 KB) at 1; RSS per context within 0.5% of the heap figure"),
        defaults=_SSL_DEFAULTS, version=_openssl_version, per_instance=_ssl_instance, items="certificates"),
    NativeType(
        name="tiktoken.core.Encoding", kind="tiktoken", base="tiktoken.core:Encoding",
        holds="tiktoken's Rust CoreBPE: the vocabulary a second time, two hash tables, compiled regexes",
        calibration=(
            "RSS per Encoding in fresh processes, 1/3/6 Encodings from loaded ranks: cl100k_base 24.73 MB "
            "(model 20.72 MB + 4.01 MB), qwen 39.55 MB; see the comment above estimate_tiktoken_native"),
        defaults=_TIKTOKEN_DEFAULTS, version=_version_of("tiktoken"), per_instance=_tiktoken_instance,
        items="tokens"),
    NativeType(
        name="sqlite3.Connection", kind="sqlite3", base="_sqlite3:Connection",
        holds="SQLite's own heap (page cache, schema, prepared statements) for all connections",
        calibration=(
            "not estimated: sqlite3_memory_used() read from the library; a :memory: table growing to 11 MB "
            "moved it within 0.6% of glibc's heap in use"),
        version=_sqlite_version, process_wide=_sqlite_process_bytes),
)
"""The native-holding types the native probe knows, in the order it records them."""


def native_types(names: Iterable[str] | None = None) -> tuple[NativeType, ...]:
    """Registry entries by ``name`` (``"ssl.SSLContext"``) or ``kind`` (``"ssl"``); all when None."""
    if names is None:
        return REGISTRY
    if isinstance(names, str):
        names = [names]
    by = {t.name: t for t in REGISTRY} | {t.kind: t for t in REGISTRY}
    out: list[NativeType] = []
    for n in names:
        if n not in by:
            raise ConfigError(f"native type {n!r} is not in the registry{did_you_mean(n, by, start='; ')}; "
                              f"known: {', '.join(t.name for t in REGISTRY)}")
        if by[n] not in out:
            out.append(by[n])
    return tuple(out)


# ----------------------------------------------------------------------------- calibration file

CALIBRATION_ENV = "TOKDIAG_CALIBRATION"
"""Environment variable naming the calibration file; ``"none"`` (or empty) means the built-in coefficients only."""


def calibration_path() -> Path | None:
    """Where :func:`calibrate` writes and the registry reads coefficients (None: built-in only).

    ``$TOKDIAG_CALIBRATION`` when set (``"none"`` or empty: no file), else
    ``$XDG_CONFIG_HOME/tokdiag/native-calibration.json`` (``~/.config/...``).
    """
    env = os.environ.get(CALIBRATION_ENV)
    if env is not None:
        return None if env.strip().lower() in ("", "none") else Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "tokdiag" / "native-calibration.json"


_loaded: tuple[Path | None, dict[str, Any]] | None = None
_warned_versions: set[str] = set()


def _calibration_file() -> dict[str, Any]:
    """The calibration file's ``kinds`` (read once per path; {} when there is none or it is unreadable)."""
    global _loaded
    path = calibration_path()
    if _loaded is not None and _loaded[0] == path:
        return _loaded[1]
    kinds: dict[str, Any] = {}
    if path is not None and path.is_file():
        try:
            data = json.loads(path.read_text())
            kinds = data["kinds"] if isinstance(data, dict) and isinstance(data.get("kinds"), dict) else {}
        except (OSError, ValueError) as exc:
            warnings.warn(f"native calibration file {path} cannot be read ({exc}); using the built-in "
                          "coefficients (run `tokdiag calibrate` to write it again)", TokdiagWarning, stacklevel=3)
    _loaded = (path, kinds)
    return kinds


def coefficients(kind: str) -> dict[str, float]:
    """The coefficients the registry uses now for ``kind``: the calibration file's, or the built-in ones.

    The file's apply only when they were measured with the library version
    installed now (OpenSSL's, tiktoken's); otherwise the built-in ones, with
    one :class:`TokdiagWarning` saying to calibrate again.
    """
    entry = next((t for t in REGISTRY if t.kind == kind), None)
    if entry is None:
        raise ConfigError(f"kind={kind!r}: not a native kind; known: {', '.join(t.kind for t in REGISTRY)}")
    out = dict(entry.defaults)
    cal = _calibration_file().get(kind)
    if isinstance(cal, dict) and isinstance(cal.get("coefficients"), dict):
        now = entry.version()
        if cal.get("version") == now and set(cal["coefficients"]) == set(out):
            out.update({k: float(v) for k, v in cal["coefficients"].items()})
        elif kind not in _warned_versions:
            _warned_versions.add(kind)
            warnings.warn(f"native calibration for {kind!r} was measured with {cal.get('version')!r}, this "
                          f"process has {now!r}: using the built-in coefficients; run `tokdiag calibrate` again",
                          TokdiagWarning, stacklevel=3)
    return out


# ----------------------------------------------------------------------------- the probe


def _subclasses(base: type) -> list[type]:
    """``base`` and every subclass of it now (through ``type.__subclasses__``; compared by identity only)."""
    out = [base]
    ids = {id(base)}
    i = 0
    while i < len(out):
        for sub in _SUBCLASSES(out[i]):
            if id(sub) not in ids:
                ids.add(id(sub))
                out.append(sub)
        i += 1
    return out


@dataclass
class _Found:
    """One registry type's instances at the last full pass, by id only (nothing is kept alive)."""

    ids: list[int]
    nbytes: list[int]
    items: list[int]


class NativeProbe:
    """Count every instance of the registered native-holding types and record their native bytes.

    ``types``: registry names or kinds to measure (default: all of
    :data:`REGISTRY`). Run it after the cache probe, so an Encoding a cache
    already counted adds no bytes twice.

    Finding the instances (one ``gc.get_referrers`` over the classes, see
    the module docstring) costs 1.5-1.8x the census. It is skipped when nothing can
    have changed: every instance of a heap type holds a reference to its
    class, so when the reference counts of the registered classes and their
    subclasses are what they were at the last pass, the instances are taken
    to be the same ones and their per-instance figures are reused (an
    SSL context's store is read again only at a pass). Every ``full_every``-th
    snapshot passes anyway, in case a class' count moved for another reason
    while an instance was made. Process-wide readings (SQLite) are taken at
    every snapshot.
    """

    name = "native"

    def __init__(self, types: Sequence[str] | None = None, *, full_every: int = 10) -> None:
        if isinstance(full_every, bool) or not isinstance(full_every, int) or full_every < 1:
            raise ConfigError(f"full_every={full_every!r}: pass a number of snapshots >= 1 (1: a pass at every snapshot)")
        self.types = native_types(types)
        self.full_every = full_every
        self._signature: tuple[int, ...] | None = None
        self._found: list[_Found] = []
        self._since_pass = 0
        self.passes = 0
        """How many snapshots listed the instances (the others reused the last listing)."""

    def collect(self, ctx: SnapshotContext) -> list[Record]:
        t0 = time.perf_counter()
        recs: list[Record] = []
        active = [(t, base) for t in self.types if (base := t.resolve()) is not None]
        if active:
            recs = self._measure(active, ctx)
        del active
        recs.append(Record("tracker", "tokdiag", "native_s", time.perf_counter() - t0, SECONDS))
        return recs

    def _signature_now(self, active: list[tuple[NativeType, type]]) -> tuple[int, ...] | None:
        """The registered classes (and subclasses), with their reference counts; None when a class is not a heap type."""
        sig: list[int] = []
        for t, base in active:
            sig.append(-1 - REGISTRY.index(t))
            for k in _subclasses(base):
                if not _FLAGS.__get__(k, type) & _HEAPTYPE:  # its instances do not hold a reference to it
                    return None
                sig += (id(k), sys.getrefcount(k))
        return tuple(sig)

    def _measure(self, active: list[tuple[NativeType, type]], ctx: SnapshotContext) -> list[Record]:
        signature = self._signature_now(active)
        self._since_pass += 1
        if signature is None or signature != self._signature or self._since_pass >= self.full_every:
            self._found = self._pass(active, ctx)
            self._signature = signature  # taken before the pass, as at the next snapshot (the heap list holds the classes too)
            self._since_pass = 0
            self.passes += 1
        recs: list[Record] = []
        for (t, _base), found in zip(active, self._found):
            recs.append(Record("native", t.name, "count", float(len(found.ids)), OBJECTS))
            total = 0
            for oid, nbytes in zip(found.ids, found.nbytes):
                if oid not in ctx.native_seen:  # a cache probe counted it already
                    ctx.native_seen.add(oid)
                    total += nbytes
            if t.process_wide is not None:
                wide = t.process_wide()
                if wide is None:
                    continue
                total += wide
            recs.append(Record("native", t.name, "native_bytes", float(total), BYTES))
            if t.items is not None:
                recs.append(Record("native", t.name, t.items, float(sum(found.items)), ENTRIES))
        return recs

    @staticmethod
    def _pass(active: list[tuple[NativeType, type]], ctx: SnapshotContext) -> list[_Found]:
        """Every instance of the active types, measured (held only while this runs).

        Instances of heap types hold a reference to their class and visit it
        when the collector traverses them, so one ``gc.get_referrers(*classes)``
        finds them all (and a few other referrers of the classes: their
        subclasses, the modules' dicts, which the type check drops). Classes
        that are not heap types (none in the registry today) are looked for
        in the heap list.
        """
        index: dict[int, int] = {}
        heap_types: list[type] = []
        static: list[type] = []
        for i, (_t, base) in enumerate(active):
            for k in _subclasses(base):
                index.setdefault(id(k), i)
                (heap_types if _FLAGS.__get__(k, type) & _HEAPTYPE else static).append(k)
        objs = gc.get_referrers(*heap_types) if heap_types else []
        if static:
            heap = ctx.heap
            objs += compress(heap, map(issubclass, map(type, heap), repeat(tuple(static))))
            del heap
        out = [_Found([], [], []) for _ in active]
        coefs = [coefficients(t.kind) if t.per_instance is not None else {} for t, _b in active]
        seen: set[int] = set()
        for o in objs:
            i = index.get(id(type(o)))
            if i is None or id(o) in seen:
                continue
            seen.add(id(o))
            t = active[i][0]
            found = out[i]
            found.ids.append(id(o))
            nbytes, n = t.per_instance(o, coefs[i]) if t.per_instance is not None else (0, 0)
            found.nbytes.append(nbytes)
            found.items.append(n)
        return out


# ----------------------------------------------------------------------------- calibrate


@dataclass(frozen=True)
class Calibration:
    """The result of :func:`calibrate`: per kind, the fitted coefficients, the points and the fit's errors."""

    path: Path | None
    kinds: dict[str, dict[str, Any]]

    def report(self) -> str:
        """A few lines per kind, for the command line."""
        lines: list[str] = []
        for kind, k in self.kinds.items():
            coef = ", ".join(f"{n}={v:,.4g}" for n, v in k["coefficients"].items())
            lines.append(f"{kind} ({k['version']}): {coef}; max error {k['max_error']:.1%} over "
                         f"{len(k['points'])} points, measured as {k['measured']}")
            for p in k["points"]:
                lines.append(f"  {p['label']}: measured {p['bytes']:,.0f} B, fit {p['fit']:,.0f} B "
                             f"({p['error']:+.1%})")
        if self.path is not None:
            lines.append(f"written to {self.path}")
        return "\n".join(lines)


_CHILD = Path(__file__).with_name("_native_child.py")


def _child(kind: str, arg: str, n: int, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, "-P", str(_CHILD), kind, arg, str(n)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise TokdiagError(f"calibrate: measuring {kind} {arg!r} took more than {timeout:.0f} s; "
                           "pass a larger timeout= on a busy machine") from None
    if out.returncode != 0:
        raise TokdiagError(f"calibrate: measuring {kind} {arg!r} failed (exit {out.returncode}): "
                           f"{out.stderr.strip()[-500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _fit(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``y = a + b x``."""
    import numpy as np

    b, a = np.polyfit(np.asarray(x, dtype=float), np.asarray(y, dtype=float), 1)
    return float(a), float(b)


def _bundles(workdir: Path) -> list[tuple[str, str]]:
    """(label, cafile or "-") for the SSL points: no CA, 1/10/40 of the system bundle's certificates, the
    system bundle, certifi's when installed."""
    import importlib.util
    import ssl

    paths = ssl.get_default_verify_paths()
    system = next((p for p in (paths.cafile, paths.openssl_cafile) if p and os.path.isfile(p)), None)
    spec = importlib.util.find_spec("certifi")
    certifi = None
    if spec is not None and spec.origin:
        candidate = Path(spec.origin).with_name("cacert.pem")
        certifi = str(candidate) if candidate.is_file() else None
    source = system or certifi
    out: list[tuple[str, str]] = [("no CA file", "-")]
    if source is not None:
        end = "-----END CERTIFICATE-----"
        certs = [c + end + "\n" for c in Path(source).read_text(errors="replace").split(end) if "BEGIN" in c]
        for k in (1, 10, 40):
            if k < len(certs):
                f = workdir / f"first-{k}.pem"
                f.write_text("".join(certs[:k]))
                out.append((f"first {k} certificate(s) of {Path(source).name}", str(f)))
    if system:
        out.append((f"system bundle {system}", system))
    if certifi:
        out.append((f"certifi {certifi}", certifi))
    return out


def _calibrate_ssl(n: int, timeout: float) -> dict[str, Any]:
    import ssl

    with tempfile.TemporaryDirectory(prefix="tokdiag-calibrate-") as tmp:
        points = []
        for label, arg in _bundles(Path(tmp)):
            m = _child("ssl", arg, n, timeout)
            per = m["heap_per"] if m["heap_per"] is not None else m["rss_per"]
            points.append({"label": label, "certificates": m["certificates"], "bytes": per, "rss": m["rss_per"]})
    if len({p["certificates"] for p in points}) < 2:
        raise TokdiagError("calibrate('ssl'): no CA bundle found (neither OpenSSL's default file nor certifi's "
                           "cacert.pem), so there is nothing to fit the per-certificate cost to; install "
                           "ca-certificates or certifi")
    a, b = _fit([p["certificates"] for p in points], [p["bytes"] for p in points])
    return _summary(points, {"base": a, "per_certificate": b}, lambda p: a + b * p["certificates"],
                    version=ssl.OPENSSL_VERSION, n=n)


def _calibrate_tiktoken(n: int, timeout: float) -> dict[str, Any]:
    from tokdiag.probes._native_child import synthetic_ranks

    points = []
    for tokens in (20_000, 60_000, 100_000):
        m = _child("tiktoken", str(tokens), n, timeout)
        per = m["heap_per"] if m["heap_per"] is not None else m["rss_per"]
        ranks = synthetic_ranks(tokens)
        structure = _tiktoken_structure(ranks, {"<|endoftext|>": len(ranks)})
        points.append({"label": f"{tokens:,} synthetic tokens, cl100k's pattern", "structure": structure,
                       "bytes": per, "rss": m["rss_per"]})
    constant, scale = _fit([p["structure"] for p in points], [p["bytes"] for p in points])
    return _summary(points, {"constant": constant, "scale": scale}, lambda p: scale * p["structure"] + constant,
                    version=_version_of("tiktoken")(), n=n)


def _summary(points: list[dict[str, Any]], coef: dict[str, float], fit: Callable[[dict[str, Any]], float],
             *, version: str | None, n: int) -> dict[str, Any]:
    for p in points:
        p["fit"] = fit(p)
        p["error"] = (p["fit"] - p["bytes"]) / p["bytes"] if p["bytes"] else 0.0
    measured = (f"glibc heap in use per object (mallinfo2), {n} objects after 3 in a fresh process per point"
                if all(p["bytes"] != p["rss"] for p in points) else f"RssAnon per object, {n} objects after 3")
    return {"version": version, "coefficients": coef, "points": points,
            "max_error": max(abs(p["error"]) for p in points), "measured": measured}


_CALIBRATORS: dict[str, tuple[Callable[[int, float], dict[str, Any]], int]] = {
    "ssl": (_calibrate_ssl, 20),
    "tiktoken": (_calibrate_tiktoken, 2),
}


def calibrate(kinds: Sequence[str] | None = None, *, path: str | os.PathLike[str] | None = None,
              write: bool = True, timeout: float = 60.0) -> Calibration:
    """Re-fit the native models on this machine, in fresh subprocesses, and write them for the registry.

    ``kinds``: ``"ssl"`` (contexts with no CA file, 1/10/40 certificates,
    the system bundle and certifi's: ``base + per_certificate * x509``) and
    ``"tiktoken"`` (Encodings of 20k/60k/100k synthetic tokens with
    cl100k's pattern: ``scale * structure + constant``); default both of
    those whose library is installed. ``sqlite3`` is read, not modelled.
    Each point runs in its own interpreter (``tokdiag/probes/_native_child.py``)
    and measures glibc's heap in use per object (``RssAnon`` without glibc).
    About 10-20 s in all.

    ``path``: where to write (default :func:`calibration_path`); ``write=False``
    fits without writing. The file keeps the kinds not re-fitted now.
    Returns a :class:`Calibration` (``.report()`` for people).
    """
    import importlib.util

    if kinds is None:
        kinds = [k for k in _CALIBRATORS if k != "tiktoken" or importlib.util.find_spec("tiktoken") is not None]
    elif isinstance(kinds, str):
        kinds = [kinds]
    for k in kinds:
        if k not in _CALIBRATORS:
            raise ConfigError(f"calibrate: kind {k!r} has no calibration{did_you_mean(k, _CALIBRATORS, start='; ')}; "
                              f"pass some of {sorted(_CALIBRATORS)}")
    results = {k: _CALIBRATORS[k][0](_CALIBRATORS[k][1], timeout) for k in kinds}
    target = Path(path) if path is not None else calibration_path()
    if write:
        if target is None:
            raise ConfigError(f"calibrate: ${CALIBRATION_ENV} is 'none', so there is no file to write; pass "
                              "path=... or unset the variable")
        existing: dict[str, Any] = {}
        if target.is_file():
            try:
                existing = json.loads(target.read_text()).get("kinds", {})
            except (OSError, ValueError, AttributeError):
                existing = {}
        doc = {"format": 1, "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "python": sys.version.split()[0], "kinds": {**existing, **results}}
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        tmp.replace(target)
        global _loaded
        _loaded = None  # read again at the next snapshot
    return Calibration(target if write else None, results)
