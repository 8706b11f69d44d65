"""Ready-made cache lists for the tokenizers people argue about.

>>> [c.label for c in tiktoken()]
['tiktoken.registry:ENCODINGS']
"""

from __future__ import annotations

import functools
import importlib.util

from tokdiag.errors import TargetError
from tokdiag.probes.caches import CacheSpec, _cache_kind, cache, resolve_target

__all__ = ["aworld", "tiktoken"]

# AWorld 0.3.2: the module-level tokenizer instances, and the caches PR #765 adds
# (present only while that PR, or an emulation of it, is applied).
_AWORLD_TOKENIZERS = (
    "aworld.models.qwen_tokenizer:qwen_tokenizer",
    "aworld.models.openai_tokenizer:openai_tokenizer",
)
_PR765_CACHES = (
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
    'tokdiag[aworld]'``). The targets are resolved by name like any other
    cache, which imports aworld's tokenizer modules if nothing has yet:
    measuring them takes that, since they load their vocabularies at import.
    Importing aworld creates files as aworld does: its log files under
    ``$AWORLD_LOG_PATH`` (by default ``./logs``, 8 files, in the working
    directory) and it reads ``.env``. To keep them out of the working
    directory, import aworld first through a sandbox that sets those
    variables, e.g. ``tokdiag_workloads.aworld.import_aworld()`` (the
    built-in AWorld workload's sandbox; call it before this). The
    ``_BPE_CACHE`` / ``_TIKTOKEN_ENCODING_CACHE`` specs are included only
    while PR #765 (or an emulation of it) is applied, so call this after
    applying it. Raises :class:`~tokdiag.errors.TargetError` when
    aworld is installed but its tokenizer modules cannot be imported.
    """
    if importlib.util.find_spec("aworld") is None:
        return []
    specs = [_spec(target) for target in _AWORLD_TOKENIZERS]  # resolved now: a missing tokenizer raises
    for target in _PR765_CACHES:
        try:
            specs.append(_spec(target))
        except TargetError:  # PR #765 is not applied
            continue
    return specs


def _spec(target: str) -> CacheSpec:
    """A cache spec for ``target``: the cache itself, or one object (a tokenizer) measured through a getter."""
    obj = resolve_target(target)
    if _cache_kind(obj) is None:  # a module-level tokenizer: one object, labelled by its target
        return cache(functools.partial(resolve_target, target), name=target)
    return cache(target)
