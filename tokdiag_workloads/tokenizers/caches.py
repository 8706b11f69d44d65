"""The module-level caches the scenarios fill, named as in AWorld with PR #765 applied.

Measure them by name, e.g. ``td.cache("tokdiag_workloads.tokenizers.caches:_BPE_CACHE")``:
``_BPE_CACHE`` (PR #765's ``_BPE_CACHE`` in ``openai_tokenizer.py`` /
``qwen_tokenizer.py``), ``_ENCODING_BY_MODEL`` (its ``_TIKTOKEN_ENCODING_CACHE``
in ``utils.py``), ``_LAZY_TOKENIZERS``, ``_SHARED_BPE_CACHE`` and
``_KEPT_TOKENIZERS`` (the list that ``keep=True`` appends to). The loaders
here are the PR's cache-through pattern over them: check, else load and store,
with no lock and no bound. :func:`reset_caches` empties them all.
"""

from __future__ import annotations

import threading

import tiktoken

from tokdiag_workloads.tokenizers import bpe
from tokdiag_workloads.tokenizers.bpe import BpeTokenizer

__all__ = ["reset_caches"]

_BPE_CACHE: dict[str, dict[bytes, int]] = {}
"""PR #765's cache in openai_tokenizer.py / qwen_tokenizer.py: BPE file path -> decoded ranks."""

_ENCODING_BY_MODEL: dict[str, tiktoken.Encoding] = {}
"""PR #765's ``_TIKTOKEN_ENCODING_CACHE`` in utils.py: model name -> Encoding."""

_LAZY_TOKENIZERS: dict[str, BpeTokenizer] = {}
"""A lazily filled tokenizer cache (vocabulary path -> tokenizer) for ``concurrent_first_use``."""

_LAZY_LOCK = threading.Lock()

_SHARED_BPE_CACHE: dict[str, dict[bytes, int]] = {}
"""The ranks cache two tokenizers share in ``shared_payload_mutation`` (same pattern as ``_BPE_CACHE``)."""

_KEPT_TOKENIZERS: list[BpeTokenizer] = []
"""Tokenizers kept alive by ``keep=True``: the leak's root."""


def reset_caches() -> None:
    """Empty every cache of this module (not tiktoken's own registry)."""
    _BPE_CACHE.clear()
    _ENCODING_BY_MODEL.clear()
    with _LAZY_LOCK:
        _LAZY_TOKENIZERS.clear()
    _SHARED_BPE_CACHE.clear()
    _KEPT_TOKENIZERS.clear()


def _load_through(cache: dict[str, dict[bytes, int]], tiktoken_bpe_file: str) -> dict[bytes, int]:
    """PR #765's pattern: check ``cache``, else load and store (no lock)."""
    if tiktoken_bpe_file in cache:
        return cache[tiktoken_bpe_file]
    result = bpe._load_tiktoken_bpe(tiktoken_bpe_file)
    cache[tiktoken_bpe_file] = result
    return result


def _cached_load_tiktoken_bpe(tiktoken_bpe_file: str) -> dict[bytes, int]:
    """PR #765's ``_load_tiktoken_bpe`` over ``_BPE_CACHE``."""
    return _load_through(_BPE_CACHE, tiktoken_bpe_file)


def _shared_load_tiktoken_bpe(tiktoken_bpe_file: str) -> dict[bytes, int]:
    """The same cached loader, over ``_SHARED_BPE_CACHE``."""
    return _load_through(_SHARED_BPE_CACHE, tiktoken_bpe_file)


def _get_cached_tiktoken_encoding(model: str) -> tiktoken.Encoding:
    """PR #765's ``aworld/models/utils.py:_get_cached_tiktoken_encoding``, over ``_ENCODING_BY_MODEL``."""
    if model not in _ENCODING_BY_MODEL:
        try:
            _ENCODING_BY_MODEL[model] = tiktoken.encoding_for_model(model)
        except KeyError:
            if "cl100k_base" not in _ENCODING_BY_MODEL:
                _ENCODING_BY_MODEL["cl100k_base"] = tiktoken.get_encoding("cl100k_base")
            _ENCODING_BY_MODEL[model] = _ENCODING_BY_MODEL["cl100k_base"]
    return _ENCODING_BY_MODEL[model]
