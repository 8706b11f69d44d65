"""tokdiag: find where memory accumulates in long-running LLM agent services.

>>> import tokdiag as td
>>> run = td.track(lambda i: None, steps=5, census=False, progress=False)
>>> run.status
'completed'

The pipeline, one way: probes -> journal/timeline -> analysis -> charts ->
notebooks. See the README for the tour.
"""

from __future__ import annotations

__version__ = "0.1.0"

from tokdiag.errors import ConfigError, JournalError, TargetError, TokdiagError, TokdiagWarning, VocabularyNotFound
from tokdiag.probes import presets
from tokdiag.probes.caches import cache
from tokdiag.probes.census import census
from tokdiag.probes.seen import Seen
from tokdiag.probes.sizing import deep_size
from tokdiag.recording.recorder import record
from tokdiag.recording.run import Run, load
from tokdiag.recording.steps import atrack, track
from tokdiag.recording.tracker import Tracker

__all__ = [
    "ConfigError",
    "JournalError",
    "Run",
    "Seen",
    "TargetError",
    "TokdiagError",
    "TokdiagWarning",
    "Tracker",
    "VocabularyNotFound",
    "__version__",
    "alive_by_site",
    "atrack",
    "cache",
    "census",
    "compare",
    "deep_size",
    "load",
    "load_ipython_extension",
    "load_service",
    "presets",
    "record",
    "track",
    "track_isolated",
    "why_alive",
]

_LAZY = {"compare": "tokdiag.analysis", "why_alive": "tokdiag.analysis.retention",
         "track_isolated": "tokdiag.recording.isolated", "load_service": "tokdiag.recording.service",
         "alive_by_site": "tokdiag.recording.native_trace"}


def __getattr__(name: str) -> object:
    # Analysis entry points, imported on first use so `import tokdiag` stays light.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tokdiag' has no attribute {name!r}")


def load_ipython_extension(ipython: object) -> None:
    """IPython hook for ``%load_ext tokdiag``: registers the ``%%tokdiag`` cell magic (see :mod:`tokdiag.magic`)."""
    from tokdiag.magic import load_ipython_extension as load

    load(ipython)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
