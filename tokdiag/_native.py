"""The optional C extension, imported once: ``speedups`` is ``tokdiag._speedups``, or None when it was not built.

``pip install`` builds ``tokdiag/_speedups.c`` when a C compiler is there (see
pyproject.toml); without it, sizing and the census run Python/numpy code
with the same results. The census, the sizing id set and the journal header
all ask here, so they agree on which ran.
"""

from __future__ import annotations

from types import ModuleType

try:
    from tokdiag import _speedups as speedups
except ImportError:  # built without a C compiler (or not importable): the Python/numpy paths
    speedups: ModuleType | None = None  # type: ignore[no-redef]

__all__ = ["speedups"]
