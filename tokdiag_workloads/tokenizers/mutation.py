"""A cached ranks dict mutated in place by AWorld's ``extra_vocab_file`` path, under PR #765's cache."""

from __future__ import annotations

import os
from collections.abc import Mapping

from tokdiag.errors import ConfigError
from tokdiag_workloads.tokenizers import caches
from tokdiag_workloads.tokenizers.bpe import BpeTokenizer
from tokdiag_workloads.tokenizers.scenario import Scenario
from tokdiag_workloads.vocab import find_vocabulary

__all__ = ["SharedPayloadMutation", "shared_payload_mutation"]


def _extra_vocabulary(ranks: Mapping[bytes, int], specials: Mapping[str, int], n: int) -> dict[bytes, int]:
    """``n`` new tokens with ids after every id in use, like an ``extra_vocab_file``."""
    start = max(max(ranks.values(), default=-1), max(specials.values(), default=-1)) + 1
    return {f" tokdiag_term_{k}".encode(): start + k for k in range(n)}


class SharedPayloadMutation(Scenario):
    """Step object of :func:`shared_payload_mutation`."""

    name = "shared_payload_mutation"

    def __init__(
        self, vocab: str, path: str | os.PathLike[str] | None, mutate_at: int, extra_tokens: int, text: str | None
    ) -> None:
        if not isinstance(mutate_at, int) or mutate_at < 0:
            raise ConfigError(f"mutate_at={mutate_at!r}: expected a step index >= 0, such as 5")
        if not isinstance(extra_tokens, int) or extra_tokens < 1:
            raise ConfigError(f"extra_tokens={extra_tokens!r}: expected a positive integer, such as 100")
        super().__init__(text)
        self.vocab = vocab
        self.path = str(find_vocabulary(vocab, path))
        self.mutate_at = mutate_at
        self.extra_tokens = extra_tokens
        self.base: BpeTokenizer | None = None
        self.extended: BpeTokenizer | None = None
        self.mutated_at_step: int | None = None
        self.reset()

    @property
    def stale_entries(self) -> int:
        """Entries in the base tokenizer's ``mergeable_ranks`` that its Encoding was not built with."""
        if self.base is None:
            return 0
        return len(self.base.mergeable_ranks) - self.base.n_mergeable_at_build

    def reset(self) -> None:
        super().reset()
        caches._SHARED_BPE_CACHE.clear()
        self.base = None
        self.extended = None
        self.mutated_at_step = None

    def __call__(self, i: int) -> int:
        if self.base is None:
            self.base = BpeTokenizer(self.path, vocab=self.vocab, loader=caches._shared_load_tiktoken_bpe)
        if self.extended is None and i >= self.mutate_at:
            extra = _extra_vocabulary(self.base.mergeable_ranks, self.base.special_tokens, self.extra_tokens)
            self.extended = BpeTokenizer(
                self.path, vocab=self.vocab, loader=caches._shared_load_tiktoken_bpe, extra_vocab=extra
            )
            self.mutated_at_step = i
        n = self.base.count(self.text)
        if self.extended is not None:
            n += self.extended.count(self.text)
        self.steps_run += 1
        return n


def shared_payload_mutation(
    vocab: str = "cl100k_base",
    path: str | os.PathLike[str] | None = None,
    mutate_at: int = 5,
    extra_tokens: int = 100,
    text: str | None = None,
) -> SharedPayloadMutation:
    """Two tokenizers share one cached ranks dict, and the second adds extra vocabulary to it.

    With PR #765's cache, ``_load_tiktoken_bpe`` returns the *cached* dict, and
    AWorld's ``extra_vocab_file`` branch (``OpenAITokenizer.__init__`` /
    ``QWenTokenizer.__init__``: ``self.mergeable_ranks[token] = index``)
    writes into it. Step 0 builds the base tokenizer through
    ``caches._SHARED_BPE_CACHE``; at step ``mutate_at`` a second tokenizer with
    ``extra_tokens`` extra entries is built through the same cache, and the
    cached dict grows by ``extra_tokens`` entries in place. The base
    tokenizer's ``mergeable_ranks`` now holds tokens its Encoding was never
    built with (``stale_entries``), and every later load from the cache gets
    the extended vocabulary. A cache probe on
    ``"tokdiag_workloads.tokenizers.caches:_SHARED_BPE_CACHE"`` should see its
    payload fingerprint change at that step while the entry count stays 1.
    """
    return SharedPayloadMutation(vocab, path, mutate_at, extra_tokens, text)
