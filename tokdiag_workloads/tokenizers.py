"""Tokenizer cache scenarios on real BPE vocabularies: the AWorld PR #765 debate, reproduced.

AWorld's PR #765 ("add caches to tiktoken to fix a memory leak") claimed that
building tokenizers per call leaks memory, and added module-level dict caches
in ``aworld/models/openai_tokenizer.py``, ``qwen_tokenizer.py`` (``_BPE_CACHE``)
and ``utils.py`` (``_TIKTOKEN_ENCODING_CACHE``); the reviewer (gemini-code-assist)
answered that the caches are unbounded and not thread-safe, and the author
that the real leaks were elsewhere (agents and event messages, see
``tokdiag_workloads.agents``). Each scenario here isolates one of
those claims so a tracked run can confirm or refute it:

====================================  ============================================================
factory                               reproduces
====================================  ============================================================
:func:`per_instance_load`             a new tokenizer per step that reads and decodes the BPE file
                                      itself (AWorld's ``_load_tiktoken_bpe``); kept or dropped
:func:`module_cache`                  the same behind PR #765's ``_BPE_CACHE`` dict
:func:`registry`                      ``tiktoken.encoding_for_model`` / ``get_encoding`` per call
:func:`model_name_keys`               PR #765's ``_TIKTOKEN_ENCODING_CACHE`` fed a new model name
                                      per step (the reviewer's unbounded-cache point)
:func:`concurrent_first_use`          N threads racing an unlocked lazy cache (the reviewer's
                                      thread-safety point), and the same with a lock
:func:`shared_payload_mutation`       a cached ranks dict mutated in place by AWorld's
                                      ``extra_vocab_file`` path
====================================  ============================================================

Each factory returns a step object: call it as ``step(i)``; it counts the
tokens of real text (:data:`tokdiag_workloads.vocab.SAMPLE_TEXT`) and returns
the count, so every step does honest work. Each factory starts from a clean
state: it clears the module-level caches it uses. ``step.reset()`` does the same
at any time; :func:`reset_caches` clears every cache in this module.

Module-level caches (watch them with ``td.cache("tokdiag_workloads.tokenizers:<name>")``):
``_BPE_CACHE``, ``_ENCODING_BY_MODEL``, ``_LAZY_TOKENIZERS``, ``_SHARED_BPE_CACHE``, and
``_KEPT_TOKENIZERS`` (the list that ``keep=True`` appends to).

Figures quoted in this module were measured on the 2-core development
machine (Linux, Python 3.11, tiktoken 0.9, the vocabularies shipped in aworld
0.3.2) by::

    .venv/bin/python -m tokdiag_workloads.tokenizers   # runs _measure(); same figures on two runs

which runs each scenario for 10 steps in its own fresh interpreter and reads
RSS (psutil) after ``gc.collect()``:

==========================================  =========  =========  ===========
scenario                                    step 0 MB  step 1 MB  MB/step 2-9
==========================================  =========  =========  ===========
per_instance_load(cl100k_base, keep=True)        50.8       43.6         42.9
per_instance_load(qwen, keep=True)               69.1       62.4         62.1
per_instance_load(cl100k_base, keep=False)       23.7       18.3          0.0
module_cache(cl100k_base, keep=False)            37.6       13.3          0.0
module_cache(cl100k_base, keep=True)             50.8       30.0         29.9
module_cache(qwen, keep=True)                    69.1       44.8         44.8
registry(gpt-4, cold=True)                       41.1        0.0          0.0
model_name_keys()                                41.1        0.0          0.0
==========================================  =========  =========  ===========

Of a kept cl100k_base instance's ~43 MB, ``pympler.asizeof`` sees 17.1 MB
(``mergeable_ranks`` and ``decoder`` together, 12.1 MB each alone, sharing
their bytes keys); qwen: 20.8 MB of ~62 MB. The rest, about 26 MB (cl100k)
and 41 MB (qwen) per instance, is tiktoken's Rust core, which Python-level
tools do not see.

Note on AWorld itself: aworld 0.3.2 builds exactly one ``OpenAITokenizer`` and
one ``QWenTokenizer`` at import (``openai_tokenizer.py:237``,
``qwen_tokenizer.py:245``) and its ``num_tokens_from_*`` functions reuse them,
so :func:`per_instance_load` is the pattern PR #765 guards against, not what
aworld 0.3.2 does on its own; ``tokdiag_workloads.aworld`` runs the real thing.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import tiktoken

from tokdiag.errors import ConfigError
from tokdiag_workloads import vocab as _vocab

if TYPE_CHECKING:
    import pathlib

__all__ = [
    "SCENARIOS",
    "BpeTokenizer",
    "ConcurrentFirstUse",
    "ConcurrentStepResult",
    "ModelNameKeys",
    "ModuleCache",
    "PerInstanceLoad",
    "Registry",
    "Scenario",
    "SharedPayloadMutation",
    "concurrent_first_use",
    "model_name_keys",
    "module_cache",
    "per_instance_load",
    "registry",
    "reset_caches",
    "shared_payload_mutation",
]


# --- module-level state, as in AWorld with PR #765 applied ---------------------------------------

_BPE_CACHE: dict[str, dict[bytes, int]] = {}
"""PR #765's cache in openai_tokenizer.py / qwen_tokenizer.py: BPE file path -> decoded ranks."""

_ENCODING_BY_MODEL: dict[str, tiktoken.Encoding] = {}
"""PR #765's ``_TIKTOKEN_ENCODING_CACHE`` in utils.py: model name -> Encoding."""

_LAZY_TOKENIZERS: dict[str, BpeTokenizer] = {}
"""A lazily filled tokenizer cache (vocabulary path -> tokenizer) for :func:`concurrent_first_use`."""

_LAZY_LOCK = threading.Lock()

_SHARED_BPE_CACHE: dict[str, dict[bytes, int]] = {}
"""The ranks cache two tokenizers share in :func:`shared_payload_mutation` (same pattern as ``_BPE_CACHE``)."""

_KEPT_TOKENIZERS: list[BpeTokenizer] = []
"""Tokenizers kept alive by ``keep=True``: the leak's root."""


def reset_caches() -> None:
    """Empty every module-level cache of this module (not tiktoken's own registry)."""
    _BPE_CACHE.clear()
    _ENCODING_BY_MODEL.clear()
    with _LAZY_LOCK:
        _LAZY_TOKENIZERS.clear()
    _SHARED_BPE_CACHE.clear()
    _KEPT_TOKENIZERS.clear()


# --- loaders ------------------------------------------------------------------------------------


def _load_tiktoken_bpe(tiktoken_bpe_file: str) -> dict[bytes, int]:
    """Read and base64-decode a BPE file into a new dict, as AWorld 0.3.2's ``_load_tiktoken_bpe`` does.

    Every call opens the file and builds a new ``{token: rank}`` dict (100,256
    entries for cl100k_base, 151,643 for qwen). Tests count file loads by
    wrapping this function.
    """
    return _vocab.load_ranks(tiktoken_bpe_file)


def _load_through(cache: dict[str, dict[bytes, int]], tiktoken_bpe_file: str) -> dict[bytes, int]:
    """PR #765's pattern: check ``cache``, else load and store (no lock)."""
    if tiktoken_bpe_file in cache:
        return cache[tiktoken_bpe_file]
    result = _load_tiktoken_bpe(tiktoken_bpe_file)
    cache[tiktoken_bpe_file] = result
    return result


def _cached_load_tiktoken_bpe(tiktoken_bpe_file: str) -> dict[bytes, int]:
    """PR #765's ``_load_tiktoken_bpe`` over ``_BPE_CACHE``."""
    return _load_through(_BPE_CACHE, tiktoken_bpe_file)


def _shared_load_tiktoken_bpe(tiktoken_bpe_file: str) -> dict[bytes, int]:
    """The same cached loader, over ``_SHARED_BPE_CACHE``."""
    return _load_through(_SHARED_BPE_CACHE, tiktoken_bpe_file)


# --- the tokenizer ----------------------------------------------------------------------------


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


# --- scenarios ----------------------------------------------------------------------------------


class Scenario:
    """Base of the step objects: ``step(i) -> int`` (tokens counted) and ``reset()``.

    Module-level state is shared between step objects of the same scenario:
    creating or resetting one clears what the others built.
    """

    name: str = "scenario"

    def __init__(self, text: str | None) -> None:
        self.text = _vocab.SAMPLE_TEXT if text is None else text
        self.steps_run = 0

    def __call__(self, i: int) -> int:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget everything this scenario built, including the module-level caches it uses."""
        self.steps_run = 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} after {self.steps_run} steps>"


def _locate(vocab: str, path: str | os.PathLike[str] | None) -> pathlib.Path:
    return _vocab.find_vocabulary(vocab, path)


class PerInstanceLoad(Scenario):
    """Step object of :func:`per_instance_load`."""

    name = "per_instance_load"

    def __init__(self, vocab: str, keep: bool, path: str | os.PathLike[str] | None, text: str | None) -> None:
        super().__init__(text)
        self.vocab = vocab
        self.keep = keep
        self.path = str(_locate(vocab, path))
        self.reset()

    @property
    def kept(self) -> list[BpeTokenizer]:
        """The instances kept alive so far (the module-level ``_KEPT_TOKENIZERS``)."""
        return _KEPT_TOKENIZERS

    def reset(self) -> None:
        super().reset()
        _KEPT_TOKENIZERS.clear()

    def __call__(self, i: int) -> int:
        tokenizer = BpeTokenizer(self.path, vocab=self.vocab)
        n = tokenizer.count(self.text)
        if self.keep:
            _KEPT_TOKENIZERS.append(tokenizer)
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

    ``keep=True`` appends every instance to the module-level
    ``_KEPT_TOKENIZERS`` (something holds on to them): a leak of about 43 MB of
    RSS per cl100k_base instance and 62 MB per qwen instance, of which
    Python-level tools see 17 and 21 MB; the rest is tiktoken's Rust copy
    (measured, see the table in the module docstring).

    ``keep=False`` drops each instance at the end of its step: does RSS come
    back? Not to the baseline: RSS rose 23.7 MB at step 0 and 18.3 MB at step 1
    (the allocator keeps freed memory for reuse), then stayed flat (0.0 MB per
    step over steps 2-9, and flat through 60 steps: ``python -m
    tokdiag_workloads.tokenizers --one "per_instance_load(cl100k_base,
    keep=False)" 60`` prints the RSS trace). Bounded, not a leak: building per
    call costs time (about 0.1 s per cl100k_base instance, timed with
    ``time.perf_counter``), not memory, unless something keeps the instances.
    """
    return PerInstanceLoad(vocab, keep, path, text)


class ModuleCache(Scenario):
    """Step object of :func:`module_cache`."""

    name = "module_cache"

    def __init__(self, vocab: str, keep: bool, path: str | os.PathLike[str] | None, text: str | None) -> None:
        super().__init__(text)
        self.vocab = vocab
        self.keep = keep
        self.path = str(_locate(vocab, path))
        self.reset()

    @property
    def kept(self) -> list[BpeTokenizer]:
        return _KEPT_TOKENIZERS

    def reset(self) -> None:
        super().reset()
        _BPE_CACHE.clear()
        _KEPT_TOKENIZERS.clear()

    def __call__(self, i: int) -> int:
        tokenizer = BpeTokenizer(self.path, vocab=self.vocab, loader=_cached_load_tiktoken_bpe)
        n = tokenizer.count(self.text)
        if self.keep:
            _KEPT_TOKENIZERS.append(tokenizer)
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
    ``_BPE_CACHE``, else load, decode and store (no lock, no bound). The file is
    read once; every later tokenizer gets the same ranks dict.

    With ``keep=False`` (default) that is one load, then nothing: measured, RSS
    rose 37.6 MB at step 0 and 13.3 MB at step 1, then 0.0 MB per step (the
    cache holds one ranks dict, 12.1 MB by pympler for cl100k_base). With
    ``keep=True`` it shows what the cache does *not* fix: every kept instance
    still builds its own ``tiktoken.Encoding`` (a new Rust copy) and its own
    decoder dict: 29.9 MB per kept cl100k_base instance (44.8 MB qwen) against
    42.9 MB (62.1 MB) without the cache. The PR's cache saves the ranks dict,
    about a third; it does not stop a leak of instances (table in the module
    docstring).
    """
    return ModuleCache(vocab, keep, path, text)


def _offline_encoding_name(model: str) -> str:
    """The tiktoken encoding for ``model``, refusing ones that would need a download."""
    import tiktoken.model
    import tiktoken.registry

    try:
        name = tiktoken.model.encoding_name_for_model(model)
    except KeyError:
        name = "cl100k_base"  # PR #765 and AWorld fall back to cl100k_base for unknown models
    if name != "cl100k_base" and name not in tiktoken.registry.ENCODINGS:
        raise ConfigError(
            f"model {model!r} uses tiktoken's {name} encoding, which tokdiag cannot provide offline "
            f"(only cl100k_base ships with the aworld extra); use a cl100k_base model such as 'gpt-4' "
            f"or 'gpt-3.5-turbo'"
        )
    return name


class Registry(Scenario):
    """Step object of :func:`registry`."""

    name = "registry"

    def __init__(self, model: str | None, encoding_name: str, cold: bool, text: str | None) -> None:
        super().__init__(text)
        import tiktoken.registry

        self.model = model
        self.encoding_name = _offline_encoding_name(model) if model is not None else encoding_name
        if self.encoding_name != "cl100k_base" and self.encoding_name not in tiktoken.registry.ENCODINGS:
            raise ConfigError(
                f"encoding_name={encoding_name!r} cannot be loaded offline; use 'cl100k_base'"
            )
        if cold and self.encoding_name != "cl100k_base":
            raise ConfigError(
                f"cold=True would drop {self.encoding_name} from tiktoken's registry, and it cannot be "
                f"reloaded offline; use cold=False or a cl100k_base model such as 'gpt-4'"
            )
        self.cache_dir = _vocab.offline_tiktoken()
        self.cold = cold
        self.encoding_ids: set[int] = set()
        if cold:
            with tiktoken.registry._lock:
                tiktoken.registry.ENCODINGS.pop(self.encoding_name, None)

    def reset(self) -> None:
        super().reset()
        self.encoding_ids.clear()

    def __call__(self, i: int) -> int:
        if self.model is not None:
            encoding = tiktoken.encoding_for_model(self.model)
        else:
            encoding = tiktoken.get_encoding(self.encoding_name)
        self.encoding_ids.add(id(encoding))
        self.steps_run += 1
        return len(encoding.encode(self.text, disallowed_special=()))


def registry(
    model: str | None = "gpt-4",
    encoding_name: str = "cl100k_base",
    cold: bool = False,
    text: str | None = None,
) -> Registry:
    """``tiktoken.encoding_for_model(model)`` (or ``get_encoding(encoding_name)`` when ``model=None``) per step.

    Tests PR #765's central claim, that ``encoding_for_model`` "creates a new
    5-10 MB Encoding on every call". It does not: ``tiktoken.registry.get_encoding``
    keeps every Encoding it builds in ``tiktoken.registry.ENCODINGS`` (under a
    lock) and returns the same object on every later call, so this workload is
    a one-off step (measured: +41.1 MB of RSS at the first cl100k_base load,
    then 0.0 MB per step) then flat.
    ``encoding_ids`` collects ``id()`` of every Encoding returned (expect one).

    Calls :func:`tokdiag_workloads.vocab.offline_tiktoken` first so tiktoken
    reads cl100k_base from disk. ``cold=True`` removes the encoding from
    tiktoken's registry when the factory runs, so the first step pays the load
    even if something in this process loaded it before. Models on other
    encodings (gpt-4o uses o200k_base) are refused unless already loaded,
    since they would need a download.
    """
    return Registry(model, encoding_name, cold, text)


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


class ModelNameKeys(Scenario):
    """Step object of :func:`model_name_keys`."""

    name = "model_name_keys"

    def __init__(self, prefix: str, text: str | None) -> None:
        super().__init__(text)
        _offline_encoding_name(f"{prefix}0")
        self.prefix = prefix
        self.cache_dir = _vocab.offline_tiktoken()
        self.reset()

    @property
    def entries(self) -> int:
        """Keys in ``_ENCODING_BY_MODEL``."""
        return len(_ENCODING_BY_MODEL)

    @property
    def distinct_values(self) -> int:
        """Distinct Encoding objects among its values."""
        return len({id(v) for v in _ENCODING_BY_MODEL.values()})

    def reset(self) -> None:
        super().reset()
        _ENCODING_BY_MODEL.clear()

    def __call__(self, i: int) -> int:
        encoding = _get_cached_tiktoken_encoding(f"{self.prefix}{i}")
        self.steps_run += 1
        return len(encoding.encode(self.text, disallowed_special=()))


def model_name_keys(prefix: str = "gpt-4-user-", text: str | None = None) -> ModelNameKeys:
    """PR #765's model-name cache fed a new, user-supplied model name every step.

    Mirrors ``_get_cached_tiktoken_encoding`` from the PR's
    ``aworld/models/utils.py`` (module-level ``_TIKTOKEN_ENCODING_CACHE``, here
    ``_ENCODING_BY_MODEL``), called with ``f"{prefix}{i}"``: the reviewer's
    denial-of-service point. Every name resolves to the one shared cl100k_base
    Encoding (``gpt-4-...`` by tiktoken's prefix table, unknown names by the
    PR's fallback), so ``distinct_values`` stays 1 while ``entries`` grows by one
    per step without bound: a leak in entries whose bytes per key are small.
    Measured: 100,000 names added 103 bytes per key (tracemalloc around
    100,000 steps with ``text="hi"``; the key
    string and the dict's growth) with one distinct value; over 10 steps RSS
    does not move at MB resolution, so only an entries count catches it.
    """
    return ModelNameKeys(prefix, text)


@dataclass(frozen=True)
class ConcurrentStepResult:
    """What happened in one step of :func:`concurrent_first_use`."""

    step: int
    threads: int
    loads: int
    """Times the vocabulary was loaded and a tokenizer built (1 is correct)."""
    distinct_tokenizers: int
    """Distinct tokenizer objects the threads ended up using."""
    tokens: int
    """Tokens counted by all threads together."""


class ConcurrentFirstUse(Scenario):
    """Step object of :func:`concurrent_first_use`: ``.loads`` and ``.results`` per step."""

    name = "concurrent_first_use"

    def __init__(
        self,
        threads: int,
        lock: bool,
        vocab: str,
        path: str | os.PathLike[str] | None,
        delay_s: float,
        text: str | None,
    ) -> None:
        if not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"threads={threads!r}: expected a positive integer such as 8")
        if delay_s < 0:
            raise ConfigError(f"delay_s={delay_s!r}: expected a duration in seconds >= 0, such as 0.05")
        super().__init__(text)
        self.threads = threads
        self.lock = lock
        self.vocab = vocab
        self.delay_s = delay_s
        self.path = str(_locate(vocab, path))
        self.loads: list[int] = []
        self.results: list[ConcurrentStepResult] = []
        self._load_events: list[int] = []
        self.reset()

    def reset(self) -> None:
        super().reset()
        with _LAZY_LOCK:
            _LAZY_TOKENIZERS.clear()
        self.loads.clear()
        self.results.clear()

    def _build(self) -> BpeTokenizer:
        self._load_events.append(1)  # list.append is atomic under the GIL
        if self.delay_s:
            time.sleep(self.delay_s)  # a slow disk or a busy core: widens the check-then-store window
        return BpeTokenizer(self.path, vocab=self.vocab)

    def _get(self) -> BpeTokenizer:
        key = self.path
        if not self.lock:
            # The unlocked lazy cache: check, miss, load, store.
            tokenizer = _LAZY_TOKENIZERS.get(key)
            if tokenizer is None:
                tokenizer = self._build()
                _LAZY_TOKENIZERS[key] = tokenizer
            return tokenizer
        # The reviewer's fix: double-checked locking.
        tokenizer = _LAZY_TOKENIZERS.get(key)
        if tokenizer is not None:
            return tokenizer
        with _LAZY_LOCK:
            tokenizer = _LAZY_TOKENIZERS.get(key)
            if tokenizer is None:
                tokenizer = self._build()
                _LAZY_TOKENIZERS[key] = tokenizer
            return tokenizer

    def __call__(self, i: int) -> int:
        with _LAZY_LOCK:
            _LAZY_TOKENIZERS.clear()  # every step is a fresh first use
        self._load_events = []
        barrier = threading.Barrier(self.threads)
        used: list[int] = [0] * self.threads
        counts: list[int] = [0] * self.threads
        errors: list[BaseException] = []

        def worker(k: int) -> None:
            try:
                barrier.wait(timeout=60)
                tokenizer = self._get()
                used[k] = id(tokenizer)
                counts[k] = tokenizer.count(self.text)
            except BaseException as exc:  # re-raised in the stepping thread below
                errors.append(exc)
                barrier.abort()

        workers = [
            threading.Thread(target=worker, args=(k,), name=f"tokdiag-first-use-{k}", daemon=True)
            for k in range(self.threads)
        ]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        if errors:
            first = next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)), errors[0])
            raise first
        loads = len(self._load_events)
        self.loads.append(loads)
        result = ConcurrentStepResult(i, self.threads, loads, len(set(used)), sum(counts))
        self.results.append(result)
        self.steps_run += 1
        return result.tokens


def concurrent_first_use(
    threads: int = 8,
    lock: bool = False,
    vocab: str = "cl100k_base",
    path: str | os.PathLike[str] | None = None,
    delay_s: float = 0.05,
    text: str | None = None,
) -> ConcurrentFirstUse:
    """``threads`` threads ask an empty lazy tokenizer cache for the same vocabulary at the same moment.

    The reviewer's thread-safety point on PR #765: its ``_BPE_CACHE`` check
    (``if path in cache: return``; load; store) has no lock, so threads that
    arrive before the first load finishes all miss and all load. Every step
    empties ``_LAZY_TOKENIZERS`` (a fresh first use), releases the threads
    together through a :class:`threading.Barrier`, and records in ``.loads``
    how many times the vocabulary was actually loaded; ``.results`` holds a
    :class:`ConcurrentStepResult` per step. ``delay_s`` sleeps inside the loader
    before the load, as a slow disk would, so the race shows up reliably.

    ``lock=False`` usually loads ``threads`` times per step (each duplicate a
    full tokenizer, alive until its thread finishes: a peak, not a leak);
    ``lock=True`` uses the reviewer's double-checked lock and loads exactly once.
    """
    return ConcurrentFirstUse(threads, lock, vocab, path, delay_s, text)


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
        self.path = str(_locate(vocab, path))
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
        _SHARED_BPE_CACHE.clear()
        self.base = None
        self.extended = None
        self.mutated_at_step = None

    def __call__(self, i: int) -> int:
        if self.base is None:
            self.base = BpeTokenizer(self.path, vocab=self.vocab, loader=_shared_load_tiktoken_bpe)
        if self.extended is None and i >= self.mutate_at:
            extra = _extra_vocabulary(self.base.mergeable_ranks, self.base.special_tokens, self.extra_tokens)
            self.extended = BpeTokenizer(
                self.path, vocab=self.vocab, loader=_shared_load_tiktoken_bpe, extra_vocab=extra
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
    ``_SHARED_BPE_CACHE``; at step ``mutate_at`` a second tokenizer with
    ``extra_tokens`` extra entries is built through the same cache, and the
    cached dict grows by ``extra_tokens`` entries in place. The base
    tokenizer's ``mergeable_ranks`` now holds tokens its Encoding was never
    built with (``stale_entries``), and every later load from the cache gets
    the extended vocabulary. A cache probe on
    ``"tokdiag_workloads.tokenizers:_SHARED_BPE_CACHE"`` should see its payload
    fingerprint change at that step while the entry count stays 1.
    """
    return SharedPayloadMutation(vocab, path, mutate_at, extra_tokens, text)


SCENARIOS: Mapping[str, Callable[..., Scenario]] = {
    "per_instance_load": per_instance_load,
    "module_cache": module_cache,
    "registry": registry,
    "model_name_keys": model_name_keys,
    "concurrent_first_use": concurrent_first_use,
    "shared_payload_mutation": shared_payload_mutation,
}
"""Every scenario factory by name, for notebooks that take the scenario as a parameter."""


# --- the measurement behind the figures in the docstrings ---------------------------------------

_MEASURE_PLANS: dict[str, Callable[[], Scenario]] = {
    "per_instance_load(cl100k_base, keep=True)": lambda: per_instance_load("cl100k_base", keep=True),
    "per_instance_load(qwen, keep=True)": lambda: per_instance_load("qwen", keep=True),
    "per_instance_load(cl100k_base, keep=False)": lambda: per_instance_load("cl100k_base", keep=False),
    "module_cache(cl100k_base, keep=False)": lambda: module_cache("cl100k_base", keep=False),
    "module_cache(cl100k_base, keep=True)": lambda: module_cache("cl100k_base", keep=True),
    "module_cache(qwen, keep=True)": lambda: module_cache("qwen", keep=True),
    "registry(gpt-4, cold=True)": lambda: registry("gpt-4", cold=True),
    "model_name_keys()": lambda: model_name_keys(),
}


def _measure_one(label: str, steps: int) -> list[float]:  # pragma: no cover - run by hand
    """RSS in MB after ``gc.collect()``: before step 0, then after each of ``steps`` steps."""
    import psutil

    process = psutil.Process()

    def rss() -> float:
        gc.collect()
        return process.memory_info().rss / 2**20

    step = _MEASURE_PLANS[label]()
    trace = [rss()]
    for i in range(steps):
        step(i)
        trace.append(rss())
    return trace


def _measure(steps: int = 10) -> dict[str, tuple[float, float, float]]:  # pragma: no cover - run by hand
    """Per plan, in its own fresh interpreter (freed memory is not reused across plans):
    MB added by step 0, MB added by step 1, mean MB added per step over steps 2..steps-1."""
    import json
    import subprocess
    import sys

    figures: dict[str, tuple[float, float, float]] = {}
    for label in _MEASURE_PLANS:
        out = subprocess.run(
            [sys.executable, "-m", "tokdiag_workloads.tokenizers", "--one", label, str(steps)],
            check=True, capture_output=True, text=True,
        ).stdout
        trace = json.loads(out)
        figures[label] = (trace[1] - trace[0], trace[2] - trace[1], (trace[-1] - trace[2]) / (steps - 2))
    return figures


if __name__ == "__main__":  # pragma: no cover
    import json
    import sys

    if len(sys.argv) == 4 and sys.argv[1] == "--one":
        print(json.dumps(_measure_one(sys.argv[2], int(sys.argv[3]))))
    else:
        print(f"{'scenario (10 steps, RSS after gc.collect)':45s} {'step 0 MB':>10s} {'step 1 MB':>10s} "
              f"{'MB/step 2-9':>12s}")
        for key, (first, second, per_step) in _measure().items():
            print(f"{key:45s} {first:10.1f} {second:10.1f} {per_step:12.1f}")
