"""A BPE tokenizer that loads its own vocabulary, as AWorld 0.3.2's tokenizers do.

:class:`BpeTokenizer` mirrors ``aworld/models/openai_tokenizer.py``'s
``OpenAITokenizer`` (and ``QWenTokenizer``): it reads and decodes the BPE file
through a loader (AWorld's ``_load_tiktoken_bpe``: :func:`_load_tiktoken_bpe`
here, a new dict per call), merges optional extra vocabulary into that dict in
place, and builds a ``tiktoken.Encoding`` and a reverse decoder from it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import tiktoken

from tokdiag.errors import ConfigError
from tokdiag_workloads import vocab as _vocab

__all__ = ["BpeTokenizer"]


def _load_tiktoken_bpe(tiktoken_bpe_file: str) -> dict[bytes, int]:
    """Read and base64-decode a BPE file into a new dict, as AWorld 0.3.2's ``_load_tiktoken_bpe`` does.

    Every call opens the file and builds a new ``{token: rank}`` dict (100,256
    entries for cl100k_base, 151,643 for qwen). Every loader of this package
    looks it up here at call time, so tests count file loads by replacing it.
    """
    return _vocab.load_ranks(tiktoken_bpe_file)


class BpeTokenizer:
    """A tokenizer that loads its own vocabulary, like AWorld's ``OpenAITokenizer`` / ``QWenTokenizer``.

    Mirrors ``aworld/models/openai_tokenizer.py:OpenAITokenizer.__init__``
    (aworld 0.3.2): reads and decodes the BPE file into ``self.mergeable_ranks``
    through ``loader`` (by default a fresh dict per instance), merges an
    optional extra vocabulary into that same dict in place, builds a
    :class:`tiktoken.Encoding` from it (which copies the vocabulary into
    tiktoken's Rust core) and a reverse ``self.decoder`` dict. So one instance
    holds the vocabulary three times: ranks dict, decoder dict, Rust core.

    Differences from AWorld, none of which changes the memory: the pattern and
    special tokens come from :data:`tokdiag_workloads.vocab.VOCABULARIES`
    (tiktoken's for cl100k_base; AWorld's OpenAITokenizer uses Qwen's pattern
    and ``<|endoftext|>`` = 100256), and AWorld's
    ``len(ranks) + len(special) == n_vocab`` assertion is left out because
    tiktoken's cl100k special ids are not contiguous with the ranks.
    """

    def __init__(
        self,
        vocab_file: str | os.PathLike[str],
        *,
        vocab: str = "cl100k_base",
        extra_vocab: str | os.PathLike[str] | Mapping[bytes, int] | None = None,
        loader: Callable[[str], dict[bytes, int]] | None = None,
    ) -> None:
        spec = _vocab.VOCABULARIES.get(vocab)
        if spec is None:
            raise ConfigError(f"unknown vocabulary {vocab!r}; known vocabularies: {', '.join(_vocab.VOCABULARIES)}")
        load = loader if loader is not None else _load_tiktoken_bpe
        self.vocab_file = os.fspath(vocab_file)
        self.mergeable_ranks: dict[bytes, int] = load(self.vocab_file)
        self.special_tokens: dict[str, int] = dict(spec.special_tokens)

        if extra_vocab is not None:
            # AWorld: "try load extra vocab from file" -- writes into self.mergeable_ranks, which is
            # the cached dict itself when the loader returns a shared one.
            if isinstance(extra_vocab, Mapping):
                extra = dict(extra_vocab)
            else:
                extra = load(os.fspath(extra_vocab))
            used_ids = set(self.mergeable_ranks.values()) | set(self.special_tokens.values())
            for token, index in extra.items():
                if token in self.mergeable_ranks or index in used_ids:
                    continue
                self.mergeable_ranks[token] = index

        self.tokenizer = tiktoken.Encoding(
            spec.encoding_name,
            pat_str=spec.pat_str,
            mergeable_ranks=self.mergeable_ranks,
            special_tokens=self.special_tokens,
        )
        self.n_mergeable_at_build = len(self.mergeable_ranks)
        self.decoder: dict[int, bytes | str] = {v: k for k, v in self.mergeable_ranks.items()}
        self.decoder.update({v: k for k, v in self.special_tokens.items()})

    def count(self, text: str) -> int:
        """Number of tokens in ``text`` (special-token text is encoded as plain text, as AWorld does)."""
        return len(self.tokenizer.encode(text, disallowed_special=()))

    def __len__(self) -> int:
        return self.tokenizer.n_vocab

    def __repr__(self) -> str:
        return f"<BpeTokenizer {self.tokenizer.name} {len(self.mergeable_ranks)} ranks>"
