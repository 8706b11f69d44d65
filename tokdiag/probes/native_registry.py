"""The registry of native-holding types, and the coefficients its models use now.

:data:`REGISTRY` lists the :class:`NativeType` entries the native probe
records; :func:`coefficients` gives a kind's coefficients: the calibration
file's (:func:`calibration_path`, written by
:func:`tokdiag.probes.calibration.calibrate`) when they were measured with the
library version installed now, the built-in ones otherwise.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokdiag.errors import ConfigError, TokdiagWarning, did_you_mean
from tokdiag.probes.native_models import (
    SSL_DEFAULTS,
    TIKTOKEN_DEFAULTS,
    openssl_version,
    sqlite_process_bytes,
    sqlite_version,
    ssl_instance,
    tiktoken_instance,
    version_of,
)

__all__ = [
    "CALIBRATION_ENV", "REGISTRY", "NativeType", "calibration_file", "calibration_path", "coefficients",
    "forget_calibration_file", "native_types", "tiktoken_native_of",
]


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
        defaults=SSL_DEFAULTS, version=openssl_version, per_instance=ssl_instance, items="certificates"),
    NativeType(
        name="tiktoken.core.Encoding", kind="tiktoken", base="tiktoken.core:Encoding",
        holds="tiktoken's Rust CoreBPE: the vocabulary a second time, two hash tables, compiled regexes",
        calibration=(
            "RSS per Encoding in fresh processes, 1/3/6 Encodings from loaded ranks: cl100k_base 24.73 MB "
            "(model 20.72 MB + 4.01 MB), qwen 39.55 MB; see the comment above estimate_tiktoken_native"),
        defaults=TIKTOKEN_DEFAULTS, version=version_of("tiktoken"), per_instance=tiktoken_instance,
        items="tokens"),
    NativeType(
        name="sqlite3.Connection", kind="sqlite3", base="_sqlite3:Connection",
        holds="SQLite's own heap (page cache, schema, prepared statements) for all connections",
        calibration=(
            "not estimated: sqlite3_memory_used() read from the library; a :memory: table growing to 11 MB "
            "moved it within 0.6% of glibc's heap in use"),
        version=sqlite_version, process_wide=sqlite_process_bytes),
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


def calibration_file() -> dict[str, Any]:
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
    cal = calibration_file().get(kind)
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


def forget_calibration_file() -> None:
    """Read the calibration file again at the next :func:`coefficients` (after :func:`calibrate` wrote it)."""
    global _loaded
    _loaded = None


def tiktoken_native_of(enc: object) -> int:
    """Native bytes of one tiktoken Encoding with the coefficients in use (:func:`coefficients`); what the cache
    probe records."""
    return tiktoken_instance(enc, coefficients("tiktoken"))[0]
