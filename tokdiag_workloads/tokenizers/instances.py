"""A tokenizer built per step, without and with PR #765's module cache.

:func:`per_instance_load`: every step builds a new
:class:`~tokdiag_workloads.tokenizers.bpe.BpeTokenizer` that reads and decodes
the BPE file itself, the pattern PR #765 set out to fix. :func:`module_cache`:
the same behind the PR's ``_BPE_CACHE``. With ``keep=True`` every instance is
kept alive in :mod:`~tokdiag_workloads.tokenizers.caches`' ``_KEPT_TOKENIZERS``.
"""

from __future__ import annotations

import os

from tokdiag_workloads.tokenizers import caches
from tokdiag_workloads.tokenizers.bpe import BpeTokenizer
from tokdiag_workloads.tokenizers.scenario import Scenario
from tokdiag_workloads.vocab import find_vocabulary

__all__ = ["ModuleCache", "PerInstanceLoad", "module_cache", "per_instance_load"]


class PerInstanceLoad(Scenario):
    """Step object of :func:`per_instance_load`."""

    name = "per_instance_load"

    def __init__(self, vocab: str, keep: bool, path: str | os.PathLike[str] | None, text: str | None) -> None:
        super().__init__(text)
        self.vocab = vocab
        self.keep = keep
        self.path = str(find_vocabulary(vocab, path))
        self.reset()

    @property
    def kept(self) -> list[BpeTokenizer]:
        """The instances kept alive so far (``caches._KEPT_TOKENIZERS``)."""
        return caches._KEPT_TOKENIZERS

    def reset(self) -> None:
        super().reset()
        caches._KEPT_TOKENIZERS.clear()

    def __call__(self, i: int) -> int:
        tokenizer = BpeTokenizer(self.path, vocab=self.vocab)
        n = tokenizer.count(self.text)
        if self.keep:
            caches._KEPT_TOKENIZERS.append(tokenizer)
        self.steps_run += 1
        return n


def per_instance_load(
    vocab: str = "cl100k_base",
    keep: bool = True,
    path: str | os.PathLike[str] | None = None,
    text: str | None = None,
) -> PerInstanceLoad:
    """Every step builds a new :class:`BpeTokenizer` that reads and decodes the BPE file itself.

    Reproduces the pattern PR #765 set out to fix: a tokenizer constructed per
    request, each calling AWorld's uncached ``_load_tiktoken_bpe``
    (``aworld/models/openai_tokenizer.py`` / ``qwen_tokenizer.py``, aworld 0.3.2).

    ``keep=True`` appends every instance to ``caches._KEPT_TOKENIZERS``
    (something holds on to them): a leak, about 43 MiB of RSS per cl100k_base
    instance, most of it tiktoken's Rust copy, which Python-level tools do not
    see. ``keep=False`` drops each instance at the end of its step: RSS rises
    over the first steps (the allocator keeps freed memory for reuse), then
    stays flat; building per call costs time, not memory. Figures:
    ``docs/workloads.md``.
    """
    return PerInstanceLoad(vocab, keep, path, text)


class ModuleCache(Scenario):
    """Step object of :func:`module_cache`."""

    name = "module_cache"

    def __init__(self, vocab: str, keep: bool, path: str | os.PathLike[str] | None, text: str | None) -> None:
        super().__init__(text)
        self.vocab = vocab
        self.keep = keep
        self.path = str(find_vocabulary(vocab, path))
        self.reset()

    @property
    def kept(self) -> list[BpeTokenizer]:
        return caches._KEPT_TOKENIZERS

    def reset(self) -> None:
        super().reset()
        caches._BPE_CACHE.clear()
        caches._KEPT_TOKENIZERS.clear()

    def __call__(self, i: int) -> int:
        tokenizer = BpeTokenizer(self.path, vocab=self.vocab, loader=caches._cached_load_tiktoken_bpe)
        n = tokenizer.count(self.text)
        if self.keep:
            caches._KEPT_TOKENIZERS.append(tokenizer)
        self.steps_run += 1
        return n


def module_cache(
    vocab: str = "cl100k_base",
    keep: bool = False,
    path: str | os.PathLike[str] | None = None,
    text: str | None = None,
) -> ModuleCache:
    """:func:`per_instance_load` behind PR #765's module-level ``_BPE_CACHE`` dict.

    Mirrors the PR's ``_load_tiktoken_bpe``: look the file path up in
    ``caches._BPE_CACHE``, else load, decode and store (no lock, no bound). The
    file is read once; every later tokenizer gets the same ranks dict.

    With ``keep=False`` (default) that is one load, then nothing. With
    ``keep=True`` it shows what the cache does *not* fix: every kept instance
    still builds its own ``tiktoken.Encoding`` (a new Rust copy) and its own
    decoder dict. The PR's cache saves the ranks dict, about a third of an
    instance; it does not stop a leak of instances (``docs/workloads.md``).
    """
    return ModuleCache(vocab, keep, path, text)
