"""tokdiag's built-in workloads: the situations argued about in AWorld PR #765, offline.

A workload is a step function: ``step(i)`` does one unit of work for step
index ``i``. tokdiag measures these exactly as it measures your code: by
name (``td.track_isolated("tokdiag_workloads.agents:agent_workload", ...)``,
``watch=["tokdiag_workloads.agents.RewardAgent"]``); the tool itself never
imports this package. What each workload reproduces, the figures measured
on it and the commands that measured them: ``docs/workloads.md``.

``tokdiag_workloads.vocab``
    Offline BPE vocabularies: :func:`~tokdiag_workloads.vocab.find_vocabulary`
    (explicit path, tiktoken's cache, files shipped in installed packages),
    :func:`~tokdiag_workloads.vocab.encoding`,
    :func:`~tokdiag_workloads.vocab.offline_tiktoken`.

``tokdiag_workloads.sample_text``
    ``SAMPLE_TEXT``: English prose, Python code and Chinese prose to count tokens of.

``tokdiag_workloads.tokenizers``
    Tokenizer cache scenarios, each a factory returning a step function.

``tokdiag_workloads.agents``
    ``agent_workload(...)``: a pure-Python agent application (``RewardAgent``,
    ``MemoryEventMessage``, an event bus, history, browser snapshots) with one
    toggle per retention path.

``tokdiag_workloads.aworld``
    The real ``aworld`` 0.3.2 package (the ``tokdiag[aworld]`` extra): its
    tokenizer functions with and without PR #765's caches, and agent tasks
    against a local chat-completions stub.

Submodules are imported on first use (``tokdiag_workloads.tokenizers`` after
``import tokdiag_workloads`` works), so importing this package stays cheap and
never imports ``aworld``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__: list[str] = []

_SUBMODULES = ("agents", "aworld", "sample_text", "tokenizers", "vocab")


def __getattr__(name: str) -> ModuleType:
    """Import the workload submodules lazily (PEP 562)."""
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_SUBMODULES})
