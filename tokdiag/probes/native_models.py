"""The models of native memory behind the types of the native registry, one per library.

tiktoken's Rust ``CoreBPE`` is estimated from the vocabulary
(:func:`estimate_tiktoken_native`), an ``ssl.SSLContext`` from its
certificate count (:func:`ssl_instance`), and SQLite's heap is read from the
library itself (:func:`sqlite_process_bytes`); each with the version
function its coefficients are keyed by. The registry that ties them to
types is :mod:`tokdiag.probes.native_registry`.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable, Mapping

from tokdiag._clevel import instance_attr, type_dict

__all__ = [
    "SSL_DEFAULTS", "TIKTOKEN_DEFAULTS", "estimate_tiktoken_native", "openssl_version", "sqlite_process_bytes",
    "sqlite_version", "ssl_instance", "tiktoken_instance", "tiktoken_structure", "version_of",
]


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
TIKTOKEN_DEFAULTS: dict[str, float] = {"constant": 4_010_000.0, "scale": 1.0}


def _malloc_chunk(n: int) -> int:
    return max(32, (n + 8 + 15) & ~15)


def _token_length(t: object) -> int | None:
    if type(t) is bytes:
        return len(t)
    if type(t) is str:
        return len(t.encode())
    return None


def tiktoken_structure(mergeable_ranks: Mapping[bytes, int], special_tokens: Mapping[str, int] | None) -> int:
    """Bytes of the Rust core's token storage and hash tables (the model without its constant)."""
    tokens: list[object] = list(mergeable_ranks)  # one C loop: another thread changing the dict cannot interleave
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
    structure = tiktoken_structure(mergeable_ranks, special_tokens)
    if structure == 0:
        return 0
    c = TIKTOKEN_DEFAULTS if coefficients is None else coefficients
    return int(round(c["scale"] * structure + c["constant"]))


_structure_memo: dict[tuple[int, int, int], int] = {}


def tiktoken_instance(enc: object, coef: Mapping[str, float]) -> tuple[int, int]:
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
        structure = tiktoken_structure(ranks, special)
        if len(_structure_memo) > 256:
            _structure_memo.clear()
        _structure_memo[key] = structure
    if structure == 0:
        return 0, len(ranks)
    return int(round(coef["scale"] * structure + coef["constant"])), len(ranks)
# ----------------------------------------------------------------------------- ssl

SSL_DEFAULTS: dict[str, float] = {"base": 13_810.0, "per_certificate": 5_840.0}


def ssl_instance(ctx: object, coef: Mapping[str, float]) -> tuple[int, int]:
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


def sqlite_process_bytes() -> int | None:
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


# ----------------------------------------------------------------------------- library versions


def version_of(dist: str) -> Callable[[], str | None]:
    @functools.cache
    def version() -> str | None:
        try:
            from importlib.metadata import PackageNotFoundError
            from importlib.metadata import version as v

            return v(dist)
        except PackageNotFoundError:
            return None
    return version


def openssl_version() -> str | None:
    mod = sys.modules.get("ssl")
    return None if mod is None else str(mod.__dict__.get("OPENSSL_VERSION"))


def sqlite_version() -> str | None:
    mod = sys.modules.get("_sqlite3")
    return None if mod is None else str(mod.__dict__.get("sqlite_version"))
