"""Ready-made cache lists for the tokenizers people argue about.

>>> [c.label for c in tiktoken()]
['tiktoken.registry:ENCODINGS']
"""

from __future__ import annotations

import functools
import importlib.util

from tokdiag.probes.caches import CacheSpec, _cache_kind, cache, resolve_target
from tokdiag.errors import TargetError

__all__ = ["aworld", "tiktoken"]

# AWorld 0.3.2: module-level tokenizer instances, and the caches PR #765 adds
# (present only when that PR, or tokdiag's emulation of it, is applied).
_AWORLD_TARGETS = (
    "aworld.models.qwen_tokenizer:qwen_tokenizer",
    "aworld.models.openai_tokenizer:openai_tokenizer",
    "aworld.models.utils:_TIKTOKEN_ENCODING_CACHE",
    "aworld.models.openai_tokenizer:_BPE_CACHE",
    "aworld.models.qwen_tokenizer:_BPE_CACHE",
)


def tiktoken() -> list[CacheSpec]:
    """tiktoken's own registry of Encodings (``tiktoken.registry.ENCODINGS``)."""
    return [cache("tiktoken.registry:ENCODINGS")]


def aworld() -> list[CacheSpec]:
    """AWorld's module-level tokenizers and, when present, PR #765's caches.

    Returns an empty list when aworld is not installed (``pip install
    'tokdiag[aworld]'``). Importing the modules is what measuring them
    takes: aworld's tokenizer modules load their vocabularies at import.
    They are imported through :func:`tokdiag.workloads.aworld.import_aworld`,
    which points AWorld's log, memory and tool files into a private temporary
    directory first; a plain import would create ``./logs`` (8 log files) in
    the working directory. The ``_BPE_CACHE`` / ``_TIKTOKEN_ENCODING_CACHE``
    specs are included only while PR #765 (or
    ``tokenizer_workload(patched=True)``) is applied, so call this after
    creating a patched workload.
    """
    if importlib.util.find_spec("aworld") is None:
        return []
    from tokdiag.workloads.aworld import import_aworld  # lazy: only when aworld is installed

    import_aworld()
    specs: list[CacheSpec] = []
    for target in _AWORLD_TARGETS:
        try:
            obj = resolve_target(target)
        except TargetError:
            continue
        if _cache_kind(obj) is None:  # a module-level tokenizer: one object, measured through a getter
            specs.append(cache(functools.partial(resolve_target, target), name=target))
        else:
            specs.append(cache(target))
        del obj
    return specs
