"""Offline vocabularies: where they are found, what is built from them, and no network ever."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest
import tiktoken
import tiktoken.load
import tiktoken.registry

from tokdiag.errors import ConfigError, VocabularyNotFound
from tokdiag_workloads import vocab
from tokdiag_workloads.sample_text import SAMPLE_TEXT, sample_texts

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
CL100K_SHA1 = hashlib.sha1(CL100K_URL.encode()).hexdigest()


def _aworld_file(name: str) -> pathlib.Path:
    spec = importlib.util.find_spec("aworld")
    assert spec is not None and spec.submodule_search_locations, "tests need the aworld extra"
    return pathlib.Path(list(spec.submodule_search_locations)[0]) / "config" / name


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a connection or let tiktoken download fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(tiktoken.load, "read_file", refuse)


@pytest.fixture
def isolated_caches(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """Empty tiktoken cache dirs and temp dir, restored afterwards."""
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


@pytest.fixture
def cold_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """tiktoken forgets its cl100k_base Encoding for this test (restored afterwards)."""
    monkeypatch.delitem(tiktoken.registry.ENCODINGS, "cl100k_base", raising=False)


def _tiny_ranks() -> dict[bytes, int]:
    ranks = {bytes([b]): b for b in range(256)}
    for word in (b"th", b"the", b"in", b"ing", b"er"):
        ranks[word] = len(ranks)
    return ranks


# --- find_vocabulary -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cl100k_base", "qwen"])
def test_finds_vocabulary_shipped_with_aworld(name: str, isolated_caches: pathlib.Path) -> None:
    found = vocab.find_vocabulary(name)
    assert found == _aworld_file(f"{name}.tiktoken")


def test_explicit_path_wins(tmp_path: pathlib.Path) -> None:
    path = vocab.write_ranks(_tiny_ranks(), tmp_path / "tiny.tiktoken")
    assert vocab.find_vocabulary("cl100k_base", path) == path


def test_explicit_missing_path_is_an_error_not_a_fallback(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "nope.tiktoken"
    with pytest.raises(VocabularyNotFound, match="nope.tiktoken"):
        vocab.find_vocabulary("cl100k_base", missing)


def test_tiktoken_cache_file_named_by_sha1_of_url_is_found_first(
    isolated_caches: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copyfile(_aworld_file("cl100k_base.tiktoken"), cache / CL100K_SHA1)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    assert vocab.find_vocabulary("cl100k_base") == cache / CL100K_SHA1


def test_default_data_gym_cache_is_searched(isolated_caches: pathlib.Path) -> None:
    cache = isolated_caches / "data-gym-cache"
    cache.mkdir()
    shutil.copyfile(_aworld_file("cl100k_base.tiktoken"), cache / CL100K_SHA1)
    assert vocab.find_vocabulary("cl100k_base") == cache / CL100K_SHA1


def test_cache_file_with_wrong_hash_is_skipped(
    isolated_caches: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    vocab.write_ranks(_tiny_ranks(), cache / CL100K_SHA1)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    assert vocab.find_vocabulary("cl100k_base") == _aworld_file("cl100k_base.tiktoken")
    monkeypatch.setattr(vocab, "_package_dir", lambda package: None)
    with pytest.raises(VocabularyNotFound, match="skipped: sha256"):
        vocab.find_vocabulary("cl100k_base")


def test_plain_named_file_in_cache_dir_is_found(
    isolated_caches: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATA_GYM_CACHE_DIR", str(tmp_path))
    path = vocab.write_ranks(_tiny_ranks(), tmp_path / "qwen.tiktoken")
    assert vocab.find_vocabulary("qwen") == path


def test_not_found_names_every_place_looked_and_the_fixes(
    isolated_caches: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tk"))
    monkeypatch.setenv("DATA_GYM_CACHE_DIR", str(tmp_path / "dg"))
    monkeypatch.setattr(vocab, "_package_dir", lambda package: None)
    with pytest.raises(VocabularyNotFound) as info:
        vocab.find_vocabulary("cl100k_base")
    message = str(info.value)
    assert str(tmp_path / "tk" / CL100K_SHA1) in message
    assert str(tmp_path / "dg" / CL100K_SHA1) in message
    assert str(isolated_caches / "data-gym-cache" / CL100K_SHA1) in message
    assert "aworld/config/cl100k_base.tiktoken" in message
    assert "path=" in message and "TIKTOKEN_CACHE_DIR" in message
    assert "pip install 'tokdiag[aworld]'" in message
    assert isinstance(info.value, FileNotFoundError)


def test_unknown_vocabulary_name_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"'o300k'.*'cl100k_base', 'qwen'"):
        vocab.find_vocabulary("o300k")


def test_finding_a_vocabulary_does_not_import_aworld() -> None:
    code = (
        "import sys; from tokdiag_workloads import vocab; vocab.find_vocabulary('qwen'); "
        "assert 'aworld' not in sys.modules, 'aworld was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=pathlib.Path(__file__).parents[1])


# --- load_ranks / write_ranks ---------------------------------------------------------------


def test_load_ranks_round_trips_a_synthetic_vocabulary(tmp_path: pathlib.Path) -> None:
    ranks = _tiny_ranks()
    path = vocab.write_ranks(ranks, tmp_path / "tiny.tiktoken")
    loaded = vocab.load_ranks(path)
    assert loaded == ranks
    assert loaded is not vocab.load_ranks(path)


def test_load_ranks_reads_the_real_vocabularies() -> None:
    cl100k = vocab.load_ranks(_aworld_file("cl100k_base.tiktoken"))
    assert len(cl100k) == 100256
    assert cl100k[b"hello"] == 15339
    assert len(vocab.load_ranks(_aworld_file("qwen.tiktoken"))) == 151643


def test_load_ranks_names_the_bad_line(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "bad.tiktoken"
    path.write_bytes(b"IQ== 0\nnot-base64!! 1\n")
    with pytest.raises(ConfigError, match=r"line 2"):
        vocab.load_ranks(path)


# --- encoding ---------------------------------------------------------------------------------


def test_cl100k_constants_match_tiktokens_constructor(
    isolated_caches: pathlib.Path, tmp_path: pathlib.Path, no_network: None
) -> None:
    from tiktoken_ext import openai_public

    vocab.offline_tiktoken(tmp_path / "cache")
    params = openai_public.cl100k_base()
    spec = vocab.VOCABULARIES["cl100k_base"]
    assert spec.pat_str == params["pat_str"]
    assert dict(spec.special_tokens) == params["special_tokens"]
    assert vocab.load_ranks(vocab.find_vocabulary("cl100k_base")) == params["mergeable_ranks"]


def test_cl100k_encoding_encodes_like_tiktoken(
    isolated_caches: pathlib.Path, tmp_path: pathlib.Path, no_network: None, cold_registry: None
) -> None:
    vocab.offline_tiktoken(tmp_path / "cache")
    ours = vocab.encoding("cl100k_base")
    theirs = tiktoken.get_encoding("cl100k_base")
    assert ours is not theirs
    assert ours.n_vocab == theirs.n_vocab == 100277
    for text in sample_texts():
        assert ours.encode(text, allowed_special="all") == theirs.encode(text, allowed_special="all")


def test_qwen_encoding_uses_aworlds_pattern_and_special_tokens(no_network: None) -> None:
    source = _aworld_file("qwen.tiktoken").parents[1] / "models" / "qwen_tokenizer.py"
    constants = {
        node.targets[0].id: node.value
        for node in ast.parse(source.read_text()).body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }
    spec = vocab.VOCABULARIES["qwen"]
    assert spec.pat_str == ast.literal_eval(constants["PAT_STR"])
    assert min(spec.special_tokens.values()) == ast.literal_eval(constants["SPECIAL_START_ID"])

    enc = vocab.encoding("qwen")
    assert enc.n_vocab == 151643 + 208
    assert enc.encode("<|im_start|>", allowed_special="all") == [151644]
    assert enc.decode(enc.encode(SAMPLE_TEXT, disallowed_special=())) == SAMPLE_TEXT


def test_encoding_from_a_synthetic_file(tmp_path: pathlib.Path) -> None:
    path = vocab.write_ranks(_tiny_ranks(), tmp_path / "tiny.tiktoken")
    enc = vocab.encoding("cl100k_base", path)
    assert enc.decode(enc.encode("the thing")) == "the thing"
    assert vocab.encoding("cl100k_base", path) is not enc


# --- offline_tiktoken ----------------------------------------------------------------------


def test_offline_tiktoken_makes_get_encoding_work_without_network(
    isolated_caches: pathlib.Path, tmp_path: pathlib.Path, no_network: None, cold_registry: None
) -> None:
    cache = vocab.offline_tiktoken(tmp_path / "cache")
    assert cache == tmp_path / "cache"
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(cache)
    assert (cache / CL100K_SHA1).read_bytes() == _aworld_file("cl100k_base.tiktoken").read_bytes()
    enc = tiktoken.get_encoding("cl100k_base")
    assert enc.encode("hello world") == [15339, 1917]
    assert tiktoken.encoding_for_model("gpt-4") is enc
    assert tiktoken.encoding_for_model("gpt-3.5-turbo") is enc
    assert tiktoken.encoding_for_model("text-embedding-ada-002") is enc


def test_offline_tiktoken_is_idempotent(
    isolated_caches: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = vocab.offline_tiktoken(tmp_path / "cache")

    def no_copy(*args: object, **kwargs: object) -> None:
        raise AssertionError("copied again")

    monkeypatch.setattr(shutil, "copyfile", no_copy)
    assert vocab.offline_tiktoken(tmp_path / "cache") == first
    assert sorted(p.name for p in first.iterdir()) == [CL100K_SHA1]


def test_offline_tiktoken_defaults_to_users_cache_dir_then_tokdiags(
    isolated_caches: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "mine"))
    assert vocab.offline_tiktoken() == tmp_path / "mine"
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR")
    default = vocab.offline_tiktoken()
    assert default.parent == isolated_caches
    assert default.name.startswith("tokdiag-tiktoken-cache")
    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(default)


def test_offline_tiktoken_refuses_a_file_with_the_wrong_hash(
    isolated_caches: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    fake = vocab.write_ranks(_tiny_ranks(), tmp_path / "cl100k_base.tiktoken")
    with pytest.raises(VocabularyNotFound, match=r"sha256 is [0-9a-f]{64}, tiktoken expects 223921b7"):
        vocab.offline_tiktoken(tmp_path / "cache", path=fake)
    assert not (tmp_path / "cache" / CL100K_SHA1).exists()


# --- sample text --------------------------------------------------------------------------------


def test_sample_text_is_english_code_and_chinese() -> None:
    english, code, chinese = sample_texts()
    assert "memory" in english and "def " in code
    assert sum("\u4e00" <= ch <= "\u9fff" for ch in chinese) > 200
    assert SAMPLE_TEXT == "\n\n".join((english, code, chinese))
    assert len(SAMPLE_TEXT.encode()) > 3000
