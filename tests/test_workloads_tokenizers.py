"""Tokenizer cache scenarios: each one does what its docstring says, checked against ground truth."""

from __future__ import annotations

import gc
import pathlib
import socket
import weakref
from collections.abc import Callable, Iterator

import pytest
import tiktoken
import tiktoken.load
import tiktoken.registry

from tokdiag.errors import ConfigError, VocabularyNotFound
from tokdiag_workloads import tokenizers as tk
from tokdiag_workloads import vocab
from tokdiag_workloads.sample_text import SAMPLE_TEXT
from tokdiag_workloads.tokenizers import bpe
from tokdiag_workloads.tokenizers import caches as tc

CL100K_SAMPLE_TOKENS = 915  # len(tiktoken cl100k_base encode(SAMPLE_TEXT)), checked below


@pytest.fixture(autouse=True)
def clean_module_state() -> Iterator[None]:
    tk.reset_caches()
    yield
    tk.reset_caches()
    gc.collect()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(tiktoken.load, "read_file", refuse)


@pytest.fixture
def tiktoken_cache(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, no_network: None) -> pathlib.Path:
    """A private TIKTOKEN_CACHE_DIR for this test (offline_tiktoken fills it)."""
    cache = tmp_path / "tiktoken-cache"
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def load_counter(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every read-and-decode of a BPE file by the scenarios, by path."""
    calls: list[str] = []
    original = bpe._load_tiktoken_bpe

    def counting(path: str) -> dict[bytes, int]:
        calls.append(path)
        return original(path)

    monkeypatch.setattr(bpe, "_load_tiktoken_bpe", counting)
    return calls


@pytest.fixture
def instances(monkeypatch: pytest.MonkeyPatch) -> list[weakref.ref[tk.BpeTokenizer]]:
    """Weak references to every BpeTokenizer the scenarios build."""
    refs: list[weakref.ref[tk.BpeTokenizer]] = []
    original = tk.BpeTokenizer.__init__

    def recording_init(self: tk.BpeTokenizer, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        refs.append(weakref.ref(self))

    monkeypatch.setattr(tk.BpeTokenizer, "__init__", recording_init)
    return refs


@pytest.fixture
def tiny_vocab(tmp_path: pathlib.Path) -> pathlib.Path:
    ranks = {bytes([b]): b for b in range(256)}
    for word in (b"th", b"the", b" the", b"in", b"ing", b"er", b" m", b" me"):
        ranks[word] = len(ranks)
    return vocab.write_ranks(ranks, tmp_path / "tiny.tiktoken")


def _alive(refs: list[weakref.ref[tk.BpeTokenizer]]) -> list[tk.BpeTokenizer]:
    gc.collect()
    return [obj for obj in (r() for r in refs) if obj is not None]


# --- the tokenizer itself -------------------------------------------------------------------------


def test_bpe_tokenizer_counts_like_tiktoken_and_owns_its_vocabulary() -> None:
    path = vocab.find_vocabulary("cl100k_base")
    a = tk.BpeTokenizer(path)
    assert a.count(SAMPLE_TEXT) == len(vocab.encoding().encode(SAMPLE_TEXT, disallowed_special=()))
    assert a.count(SAMPLE_TEXT) == CL100K_SAMPLE_TOKENS
    assert len(a.mergeable_ranks) == 100256
    assert a.decoder[a.mergeable_ranks[b"hello"]] == b"hello"
    b = tk.BpeTokenizer(path)
    assert a.mergeable_ranks is not b.mergeable_ranks and a.tokenizer is not b.tokenizer


def test_bpe_tokenizer_on_qwen() -> None:
    tok = tk.BpeTokenizer(vocab.find_vocabulary("qwen"), vocab="qwen")
    assert len(tok.mergeable_ranks) == 151643 and len(tok) == 151851
    assert tok.count(SAMPLE_TEXT) > 500


# --- 1. per_instance_load --------------------------------------------------------------------------


def test_per_instance_load_keep_retains_one_distinct_vocabulary_per_step(
    load_counter: list[str], instances: list[weakref.ref[tk.BpeTokenizer]]
) -> None:
    step = tk.per_instance_load("cl100k_base", keep=True)
    assert [step(i) for i in range(3)] == [CL100K_SAMPLE_TOKENS] * 3
    assert len(load_counter) == 3
    alive = _alive(instances)
    assert len(alive) == 3 and step.kept == alive
    assert len({id(t.mergeable_ranks) for t in alive}) == 3
    assert len({id(t.tokenizer) for t in alive}) == 3
    assert tc._KEPT_TOKENIZERS is step.kept
    del alive

    step.reset()
    assert _alive(instances) == []


def test_per_instance_load_without_keep_retains_nothing(
    load_counter: list[str], instances: list[weakref.ref[tk.BpeTokenizer]]
) -> None:
    step = tk.per_instance_load("cl100k_base", keep=False)
    for i in range(3):
        step(i)
    assert len(load_counter) == 3 and len(instances) == 3
    assert _alive(instances) == []
    assert step.kept == []


def test_a_new_factory_call_starts_clean(
    instances: list[weakref.ref[tk.BpeTokenizer]], tiny_vocab: pathlib.Path
) -> None:
    first = tk.per_instance_load(keep=True, path=tiny_vocab)
    first(0)
    first(1)
    tk.per_instance_load(keep=True, path=tiny_vocab)
    assert _alive(instances) == []


def test_missing_vocabulary_fails_at_factory_time(tmp_path: pathlib.Path) -> None:
    with pytest.raises(VocabularyNotFound, match="nope.tiktoken"):
        tk.per_instance_load(path=tmp_path / "nope.tiktoken")
    with pytest.raises(ConfigError, match="unknown vocabulary 'llama'"):
        tk.per_instance_load(vocab="llama")


# --- 2. module_cache ----------------------------------------------------------------------------


def test_module_cache_loads_the_file_once(
    load_counter: list[str], instances: list[weakref.ref[tk.BpeTokenizer]]
) -> None:
    step = tk.module_cache("cl100k_base")
    assert [step(i) for i in range(4)] == [CL100K_SAMPLE_TOKENS] * 4
    assert load_counter == [step.path]
    assert list(tc._BPE_CACHE) == [step.path]
    assert _alive(instances) == []  # keep=False: only the ranks dict stays, in the cache


def test_module_cache_shares_ranks_but_not_encodings(
    load_counter: list[str], instances: list[weakref.ref[tk.BpeTokenizer]]
) -> None:
    step = tk.module_cache("cl100k_base", keep=True)
    for i in range(3):
        step(i)
    assert len(load_counter) == 1
    kept = step.kept
    assert len(kept) == 3
    assert {id(t.mergeable_ranks) for t in kept} == {id(tc._BPE_CACHE[step.path])}
    assert len({id(t.tokenizer) for t in kept}) == 3  # the PR's cache does not share Encodings
    assert len({id(t.decoder) for t in kept}) == 3


def test_module_cache_factory_clears_the_cache(load_counter: list[str], tiny_vocab: pathlib.Path) -> None:
    tk.module_cache(path=tiny_vocab)(0)
    step = tk.module_cache(path=tiny_vocab)
    step(0)
    step(1)
    assert len(load_counter) == 2


# --- 3. registry ------------------------------------------------------------------------------------


def test_registry_returns_the_same_encoding_every_call(
    tiktoken_cache: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(tiktoken.registry.ENCODINGS, "cl100k_base", raising=False)
    reads: list[str] = []
    original = tiktoken.load.read_file_cached

    def counting(blobpath: str, expected_hash: str | None = None) -> bytes:
        reads.append(blobpath)
        return original(blobpath, expected_hash)

    monkeypatch.setattr(tiktoken.load, "read_file_cached", counting)
    step = tk.registry("gpt-4", cold=True)
    assert [step(i) for i in range(4)] == [CL100K_SAMPLE_TOKENS] * 4
    assert len(reads) == 1
    assert len(step.encoding_ids) == 1
    encoding = tiktoken.registry.ENCODINGS["cl100k_base"]
    assert step.encoding_ids == {id(encoding)}
    assert tiktoken.encoding_for_model("gpt-4") is encoding
    assert tiktoken.get_encoding("cl100k_base") is encoding


def test_registry_by_encoding_name(tiktoken_cache: pathlib.Path) -> None:
    step = tk.registry(model=None, encoding_name="cl100k_base")
    step(0)
    step(1)
    assert step.encoding_ids == {id(tiktoken.get_encoding("cl100k_base"))}


def test_registry_refuses_models_that_would_need_a_download(
    tiktoken_cache: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(tiktoken.registry.ENCODINGS, "o200k_base", raising=False)
    with pytest.raises(ConfigError, match="'gpt-4o' uses tiktoken's o200k_base"):
        tk.registry("gpt-4o")


# --- 4. model_name_keys -------------------------------------------------------------------------


def test_model_name_keys_grows_one_entry_per_step_with_one_shared_value(tiktoken_cache: pathlib.Path) -> None:
    step = tk.model_name_keys()
    for i in range(6):
        assert step(i) == CL100K_SAMPLE_TOKENS
        assert step.entries == i + 1
    assert step.distinct_values == 1
    assert list(tc._ENCODING_BY_MODEL) == [f"gpt-4-user-{i}" for i in range(6)]
    assert all(v is tiktoken.get_encoding("cl100k_base") for v in tc._ENCODING_BY_MODEL.values())
    step.reset()
    assert step.entries == 0


def test_model_name_keys_unknown_names_use_the_prs_fallback(tiktoken_cache: pathlib.Path) -> None:
    step = tk.model_name_keys(prefix="my-own-llm-")
    for i in range(3):
        step(i)
    assert step.entries == 4  # three names plus the PR's "cl100k_base" fallback entry
    assert step.distinct_values == 1


def test_model_name_keys_refuses_a_prefix_that_would_need_a_download(
    tiktoken_cache: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(tiktoken.registry.ENCODINGS, "o200k_base", raising=False)
    with pytest.raises(ConfigError, match="o200k_base"):
        tk.model_name_keys(prefix="gpt-4o-")


# --- 5. concurrent_first_use --------------------------------------------------------------------


def test_unlocked_first_use_loads_more_than_once(tiny_vocab: pathlib.Path, load_counter: list[str]) -> None:
    step = tk.concurrent_first_use(threads=8, lock=False, path=tiny_vocab, delay_s=0.05)
    totals = [step(i) for i in range(3)]
    assert len(step.loads) == 3 and len(step.results) == 3
    assert max(step.loads) > 1, step.loads
    assert sum(step.loads) == len(load_counter)
    assert any(r.distinct_tokenizers > 1 for r in step.results)
    per_thread = tk.BpeTokenizer(tiny_vocab).count(SAMPLE_TEXT)
    assert totals == [8 * per_thread] * 3
    assert [r.step for r in step.results] == [0, 1, 2]


def test_locked_first_use_loads_exactly_once_per_step(tiny_vocab: pathlib.Path, load_counter: list[str]) -> None:
    step = tk.concurrent_first_use(threads=8, lock=True, path=tiny_vocab, delay_s=0.05)
    for i in range(3):
        step(i)
    assert step.loads == [1, 1, 1]
    assert len(load_counter) == 3
    assert all(r.distinct_tokenizers == 1 and r.threads == 8 for r in step.results)


def test_locked_first_use_on_the_real_vocabulary() -> None:
    step = tk.concurrent_first_use(threads=4, lock=True, delay_s=0.0)
    assert step(0) == 4 * CL100K_SAMPLE_TOKENS
    assert step.loads == [1]
    assert list(tc._LAZY_TOKENIZERS) == [step.path]


def test_first_use_reraises_a_worker_error_without_hanging(tiny_vocab: pathlib.Path) -> None:
    step = tk.concurrent_first_use(threads=4, path=tiny_vocab, delay_s=0.0)
    tiny_vocab.unlink()
    with pytest.raises(FileNotFoundError):
        step(0)


@pytest.mark.parametrize("kwargs", [{"threads": 0}, {"threads": 2.5}, {"delay_s": -1.0}])
def test_first_use_rejects_bad_parameters(kwargs: dict[str, float], tiny_vocab: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        tk.concurrent_first_use(path=tiny_vocab, **kwargs)  # type: ignore[arg-type]


# --- 6. shared_payload_mutation -------------------------------------------------------------------


def test_shared_payload_mutation_grows_the_cached_dict_at_the_configured_step(load_counter: list[str]) -> None:
    step = tk.shared_payload_mutation("cl100k_base", mutate_at=2, extra_tokens=50)
    lengths: list[int] = []
    cached: list[int] = []
    for i in range(4):
        step(i)
        lengths.append(len(tc._SHARED_BPE_CACHE[step.path]))
        cached.append(id(tc._SHARED_BPE_CACHE[step.path]))
    assert lengths == [100256, 100256, 100306, 100306]
    assert len(set(cached)) == 1  # the same cached object, mutated in place
    assert len(tc._SHARED_BPE_CACHE) == 1
    assert len(load_counter) == 1
    assert step.mutated_at_step == 2
    assert step.base is not None and step.extended is not None
    assert step.base.mergeable_ranks is step.extended.mergeable_ranks
    assert step.stale_entries == 50
    assert step.base.tokenizer.n_vocab == 100277  # the base Encoding never saw the extra tokens
    assert step.extended.tokenizer.n_vocab == 100277 + 50


def test_shared_payload_mutation_reset_forgets_the_mutated_cache(tiny_vocab: pathlib.Path) -> None:
    step = tk.shared_payload_mutation(path=tiny_vocab, mutate_at=0, extra_tokens=5)
    step(0)
    assert len(tc._SHARED_BPE_CACHE[step.path]) == 264 + 5
    step.reset()
    assert tc._SHARED_BPE_CACHE == {} and step.base is None and step.stale_entries == 0
    step(0)
    assert len(tc._SHARED_BPE_CACHE[step.path]) == 264 + 5


@pytest.mark.parametrize("kwargs", [{"mutate_at": -1}, {"extra_tokens": 0}])
def test_shared_payload_mutation_rejects_bad_parameters(kwargs: dict[str, int], tiny_vocab: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        tk.shared_payload_mutation(path=tiny_vocab, **kwargs)  # type: ignore[arg-type]


# --- all of them ---------------------------------------------------------------------------------------


def test_reset_caches_empties_every_module_cache(tiny_vocab: pathlib.Path, tiktoken_cache: pathlib.Path) -> None:
    tk.module_cache(path=tiny_vocab)(0)
    tk.per_instance_load(path=tiny_vocab)(0)  # after module_cache: both factories clear _KEPT_TOKENIZERS
    tk.model_name_keys()(0)
    tk.concurrent_first_use(threads=2, lock=True, path=tiny_vocab, delay_s=0.0)(0)
    tk.shared_payload_mutation(path=tiny_vocab)(0)
    every = [tc._KEPT_TOKENIZERS, tc._BPE_CACHE, tc._ENCODING_BY_MODEL, tc._LAZY_TOKENIZERS, tc._SHARED_BPE_CACHE]
    assert all(len(c) == 1 for c in every)
    tk.reset_caches()
    assert all(len(c) == 0 for c in every)


def test_scenarios_registry_names_every_factory() -> None:
    factories: dict[str, Callable[..., tk.Scenario]] = dict(tk.SCENARIOS)
    assert list(factories) == [
        "per_instance_load",
        "module_cache",
        "registry",
        "model_name_keys",
        "concurrent_first_use",
        "shared_payload_mutation",
    ]
    for name, factory in factories.items():
        assert factory.__name__ == name and factory.__doc__
