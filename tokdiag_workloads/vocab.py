"""Real BPE vocabularies, found on disk and turned into tiktoken Encodings offline.

tiktoken downloads its ``*.tiktoken`` files from ``openaipublic.blob.core.windows.net``
the first time an encoding is used and keeps them in a cache directory. tokdiag
never downloads anything: it looks for a vocabulary file that is already on this
machine, in this order (:func:`find_vocabulary`):

1. an explicit ``path=...``;
2. tiktoken's cache: ``$TIKTOKEN_CACHE_DIR``, ``$DATA_GYM_CACHE_DIR`` and
   ``<tempdir>/data-gym-cache``, where tiktoken names the file by the sha1 of its
   download URL (``tiktoken/load.py:read_file_cached``); a file there whose sha256
   is not the one tiktoken expects is skipped, as tiktoken itself would discard it.
   A plain ``<name>.tiktoken`` file in those directories is accepted too;
3. files shipped inside installed packages: the ``aworld`` package (the
   ``tokdiag[aworld]`` extra) ships ``aworld/config/cl100k_base.tiktoken`` and
   ``aworld/config/qwen.tiktoken``. The package directory is found with
   :func:`importlib.util.find_spec` without importing ``aworld``.

When nothing is found, :class:`~tokdiag.errors.VocabularyNotFound` lists every
place looked and the three fixes.

Example::

    from tokdiag_workloads import vocab
    enc = vocab.encoding("cl100k_base")           # a new tiktoken.Encoding, no network
    len(enc.encode("hello world"))
    vocab.offline_tiktoken()                      # now tiktoken.get_encoding("cl100k_base") works offline
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
import pathlib
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from tokdiag.errors import ConfigError, VocabularyNotFound

if TYPE_CHECKING:
    import tiktoken

__all__ = [
    "VOCABULARIES",
    "VocabularySpec",
    "encoding",
    "find_vocabulary",
    "load_ranks",
    "offline_tiktoken",
    "tiktoken_cache_dirs",
    "write_ranks",
]

_INSTALL_HINT = "pip install 'tokdiag[aworld]'"


@dataclass(frozen=True)
class VocabularySpec:
    """What tokdiag knows about one named vocabulary.

    ``url`` and ``sha256`` are tiktoken's download address and expected hash
    (``tiktoken_ext/openai_public.py``); ``None`` for vocabularies tiktoken does
    not know. ``shipped`` lists ``(package, relative path)`` of copies that
    installed packages carry. ``encoding_name``, ``pat_str`` and
    ``special_tokens`` are the :class:`tiktoken.Encoding` constructor arguments.
    """

    name: str
    filename: str
    encoding_name: str
    pat_str: str
    special_tokens: Mapping[str, int]
    url: str | None = None
    sha256: str | None = None
    shipped: tuple[tuple[str, str], ...] = field(default=())


# Copied from tiktoken_ext/openai_public.py:cl100k_base (tiktoken 0.9); tests/test_vocab.py
# checks these against the constructor so a tiktoken upgrade that changes them is noticed.
_CL100K = VocabularySpec(
    name="cl100k_base",
    filename="cl100k_base.tiktoken",
    encoding_name="cl100k_base",
    pat_str=(
        r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
        r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
    ),
    special_tokens=MappingProxyType(
        {
            "<|endoftext|>": 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            "<|endofprompt|>": 100276,
        }
    ),
    url="https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
    sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    shipped=(("aworld", "config/cl100k_base.tiktoken"),),
)

# Copied from aworld/models/qwen_tokenizer.py (aworld 0.3.2): PAT_STR, and SPECIAL_TOKENS =
# <|endoftext|>, <|im_start|>, <|im_end|>, <|extra_0|> .. <|extra_204|> numbered from 151643.
_QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>") + tuple(
    f"<|extra_{i}|>" for i in range(205)
)
_QWEN = VocabularySpec(
    name="qwen",
    filename="qwen.tiktoken",
    encoding_name="Qwen",
    pat_str=(
        r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
        r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
    ),
    special_tokens=MappingProxyType({tok: 151643 + i for i, tok in enumerate(_QWEN_SPECIALS)}),
    shipped=(("aworld", "config/qwen.tiktoken"),),
)

VOCABULARIES: Mapping[str, VocabularySpec] = MappingProxyType({"cl100k_base": _CL100K, "qwen": _QWEN})
"""The vocabularies tokdiag can locate and build, by name."""


def _spec(name: str) -> VocabularySpec:
    try:
        return VOCABULARIES[name]
    except KeyError:
        known = ", ".join(repr(n) for n in VOCABULARIES)
        raise ConfigError(f"unknown vocabulary {name!r}; known vocabularies: {known}") from None


def _sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tiktoken_cache_dirs() -> list[pathlib.Path]:
    """Directories where tiktoken keeps (or would keep) downloaded vocabularies.

    ``$TIKTOKEN_CACHE_DIR`` and ``$DATA_GYM_CACHE_DIR`` when set and non-empty
    (an empty value disables tiktoken's cache), then tiktoken's default
    ``<tempdir>/data-gym-cache``. tiktoken itself uses only the first that is
    set; tokdiag looks in all of them.
    """
    dirs: list[pathlib.Path] = []
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        value = os.environ.get(var)
        if value:
            dirs.append(pathlib.Path(value))
    dirs.append(pathlib.Path(tempfile.gettempdir()) / "data-gym-cache")
    unique: list[pathlib.Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def _cache_key(url: str) -> str:
    # tiktoken/load.py:read_file_cached names cached files by the sha1 of the blob URL.
    return hashlib.sha1(url.encode()).hexdigest()


def _package_dir(package: str) -> pathlib.Path | None:
    """The directory of an installed top-level package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        return pathlib.Path(location)
    return None


def find_vocabulary(name: str = "cl100k_base", path: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """Locate the BPE file of vocabulary ``name`` on disk; never downloads.

    Looks at ``path`` first (and only there, when given), then tiktoken's
    cache directories, then copies shipped inside installed packages (see the
    module docstring for the order). Returns the first file found.

    Raises :class:`~tokdiag.errors.VocabularyNotFound` naming every place
    looked and how to fix it, and :class:`~tokdiag.errors.ConfigError` for an
    unknown ``name``.
    """
    spec = _spec(name)
    if path is not None:
        candidate = pathlib.Path(path)
        if candidate.is_file():
            return candidate
        raise VocabularyNotFound(
            f"no {name} vocabulary at path={os.fspath(path)!r} (no such file); "
            f"pass the path of an existing {spec.filename}, or omit path= to search "
            f"tiktoken's cache and installed packages"
        )

    looked: list[str] = []
    for cache_dir in tiktoken_cache_dirs():
        if spec.url is not None:
            candidate = cache_dir / _cache_key(spec.url)
            if candidate.is_file():
                if spec.sha256 is None or _sha256(candidate) == spec.sha256:
                    return candidate
                looked.append(f"{candidate} (tiktoken cache; skipped: sha256 is not {spec.sha256})")
            else:
                looked.append(f"{candidate} (tiktoken cache, sha1 of {spec.url})")
        candidate = cache_dir / spec.filename
        if candidate.is_file():
            return candidate
        looked.append(f"{candidate}")

    for package, relative in spec.shipped:
        package_dir = _package_dir(package)
        if package_dir is None:
            looked.append(f"{package}/{relative} (package {package!r} is not installed)")
            continue
        candidate = package_dir / relative
        if candidate.is_file():
            return candidate
        looked.append(f"{candidate} (shipped with {package})")

    places = "\n  ".join(looked)
    raise VocabularyNotFound(
        f"no {name} vocabulary found on this machine (tokdiag never downloads one). Looked in:\n  "
        f"{places}\n"
        f"Fix: pass path=... to a {spec.filename} file, or set TIKTOKEN_CACHE_DIR to a directory "
        f"holding it, or install the AWorld extra that ships it: {_INSTALL_HINT}"
    )


def load_ranks(path: str | os.PathLike[str]) -> dict[bytes, int]:
    """Read a tiktoken BPE file (``<base64 token> <rank>`` per line) into ``{token: rank}``.

    The same result as :func:`tiktoken.load.load_tiktoken_bpe`, without its
    hash check, cache or network access: the file is read and every line
    base64-decoded, as AWorld's ``_load_tiktoken_bpe`` does. Every call builds
    a new dict.
    """
    contents = pathlib.Path(path).read_bytes()
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(contents.splitlines(), start=1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError as exc:
            raise ConfigError(
                f"{os.fspath(path)}, line {lineno}: {line[:60]!r} is not '<base64 token> <rank>'; "
                f"pass a tiktoken BPE vocabulary file"
            ) from exc
    return ranks


def write_ranks(ranks: Mapping[bytes, int], path: str | os.PathLike[str]) -> pathlib.Path:
    """Write ``{token: rank}`` as a tiktoken BPE file (ordered by rank); the inverse of :func:`load_ranks`."""
    target = pathlib.Path(path)
    lines = [
        base64.b64encode(tok) + b" " + str(rank).encode() for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1])
    ]
    target.write_bytes(b"\n".join(lines) + b"\n")
    return target


def encoding(name: str = "cl100k_base", path: str | os.PathLike[str] | None = None) -> tiktoken.Encoding:
    """Build a new :class:`tiktoken.Encoding` for vocabulary ``name`` from a file on disk.

    ``cl100k_base`` gets tiktoken's own pattern and special tokens, so it
    encodes exactly like ``tiktoken.get_encoding("cl100k_base")``; ``qwen``
    gets AWorld's ``qwen_tokenizer`` pattern and its 208 special tokens. Each
    call builds a new Encoding (and a new copy of the vocabulary inside
    tiktoken's Rust core): cache it if you call this more than once.
    """
    import tiktoken

    spec = _spec(name)
    ranks = load_ranks(find_vocabulary(name, path))
    return tiktoken.Encoding(
        spec.encoding_name,
        pat_str=spec.pat_str,
        mergeable_ranks=ranks,
        special_tokens=dict(spec.special_tokens),
    )


def _default_cache_dir() -> pathlib.Path:
    suffix = f"-{os.getuid()}" if hasattr(os, "getuid") else ""
    return pathlib.Path(tempfile.gettempdir()) / f"tokdiag-tiktoken-cache{suffix}"


def offline_tiktoken(
    cache_dir: str | os.PathLike[str] | None = None,
    path: str | os.PathLike[str] | None = None,
) -> pathlib.Path:
    """Make ``tiktoken.get_encoding("cl100k_base")`` work without network access.

    Copies the located cl100k_base vocabulary (:func:`find_vocabulary`, or
    ``path``) into ``cache_dir`` under the file name tiktoken looks for (the
    sha1 of its download URL), after checking its sha256 against the hash
    tiktoken expects, and sets ``os.environ["TIKTOKEN_CACHE_DIR"]`` to that
    directory. From then on ``get_encoding("cl100k_base")`` and
    ``encoding_for_model`` for the models tiktoken maps to cl100k_base
    (gpt-4, gpt-3.5-turbo, text-embedding-ada-002, ...) load from disk.
    Models on other encodings (gpt-4o -> o200k_base) still need their own file.

    ``cache_dir`` defaults to ``$TIKTOKEN_CACHE_DIR`` when it is already set
    and non-empty (the user's cache is respected), else to a per-user
    ``<tempdir>/tokdiag-tiktoken-cache-<uid>``. Idempotent: a second call finds
    the file in place and only sets the variable. Returns the cache directory.

    Raises :class:`~tokdiag.errors.VocabularyNotFound` when no vocabulary is
    found or the one found is not byte-identical to tiktoken's cl100k_base.
    """
    spec = _CL100K
    assert spec.url is not None and spec.sha256 is not None
    if cache_dir is None:
        cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR") or _default_cache_dir()
    target_dir = pathlib.Path(cache_dir)
    target = target_dir / _cache_key(spec.url)

    if path is None and target.is_file() and _sha256(target) == spec.sha256:
        os.environ["TIKTOKEN_CACHE_DIR"] = str(target_dir)
        return target_dir

    source = find_vocabulary(spec.name, path)
    digest = _sha256(source)
    if digest != spec.sha256:
        raise VocabularyNotFound(
            f"{source} is not tiktoken's cl100k_base vocabulary: its sha256 is {digest}, tiktoken "
            f"expects {spec.sha256}. tiktoken would discard it and try to download the original. "
            f"Fix: pass path=... to the original cl100k_base.tiktoken, or {_INSTALL_HINT}"
        )
    if not (target.is_file() and _sha256(target) == spec.sha256):
        target_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = target_dir / f"{target.name}.{uuid.uuid4().hex}.tmp"
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(target_dir)
    return target_dir
