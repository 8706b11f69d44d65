"""AWorld PR #765, emulated: its module-level caches patched into aworld 0.3.2 at run time.

The PR ("为tiktoken新增缓存,修复内存泄漏问题") was never merged and its diff is not
shipped; :class:`Pr765Patch` reproduces what the PR page describes (the
``_BPE_CACHE`` dicts in both tokenizer modules, ``_TIKTOKEN_ENCODING_CACHE``
and ``_get_cached_tiktoken_encoding`` in ``aworld.models.utils``, the token
functions using it) and undoes it exactly. One patch at a time per process.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

from tokdiag.errors import ConfigError, TokdiagError
from tokdiag_workloads.aworld.sandbox import import_aworld

__all__ = ["PATCH_LOCK", "Pr765Patch", "pr765_active"]


PATCH_LOCK = threading.RLock()
"""Held while AWorld's tokenizer modules are patched or unpatched (by :class:`Pr765Patch` or a load counter)."""

_ACTIVE_PATCH: Pr765Patch | None = None


def pr765_active() -> bool:
    """Whether :class:`Pr765Patch` is applied in this process right now."""
    return _ACTIVE_PATCH is not None


class Pr765Patch:
    """An emulation of AWorld PR #765 ("为tiktoken新增缓存,修复内存泄漏问题"), applied at run time.

    This is not the PR's code: the PR was never merged and its diff is not
    shipped. It reproduces what the PR page describes, against aworld 0.3.2:

    - ``aworld.models.openai_tokenizer`` and ``aworld.models.qwen_tokenizer``
      each get a module-level ``_BPE_CACHE = {}``, and their
      ``_load_tiktoken_bpe(tiktoken_bpe_file)`` returns the cached dict for a
      file it has loaded before (keyed by the argument as passed), else calls
      the original loader and caches the result. Unbounded and unlocked, as
      in the PR.
    - ``aworld.models.utils`` gets ``_TIKTOKEN_ENCODING_CACHE = {}`` and
      ``_get_cached_tiktoken_encoding(model)``, copied from the PR's review
      thread: ``tiktoken.encoding_for_model(model)`` cached per model name;
      on ``KeyError`` the ``cl100k_base`` Encoding, cached under
      ``"cl100k_base"`` and under the model name (every unknown name adds a
      key: the reviewer's unbounded-cache point).
    - ``num_tokens_from_string``, ``num_tokens_from_messages`` and
      ``truncate_tokens_from_messages`` get the Encoding from that helper
      instead of calling tiktoken directly. aworld 0.3.2's ``"qwen"`` and
      ``"openai"`` branches (module tokenizer instances) are kept as shipped.
      Modules that imported these functions by name (``aworld.memory.main``,
      ``aworld.logs.prompt_log``, ...) get the patched ones too, as a source
      change would have given them.

    :meth:`undo` (or leaving the ``with`` block) puts every attribute back
    exactly as it was. Only one patch can be active per process.
    """

    def __init__(self) -> None:
        self._saved: list[tuple[ModuleType, str, bool, Any, Any]] = []  # module, attr, had, old, new
        self.bpe_caches: dict[str, dict[Any, dict[bytes, int]]] = {}
        self.encoding_cache: dict[str, Any] = {}

    @property
    def applied(self) -> bool:
        return bool(self._saved)

    def _set(self, module: ModuleType, attr: str, value: Any) -> None:
        had = hasattr(module, attr)
        self._saved.append((module, attr, had, getattr(module, attr, None), value))
        setattr(module, attr, value)

    def apply(self) -> Pr765Patch:
        """Apply the patch. Raises :class:`~tokdiag.errors.ConfigError` if one is already active."""
        global _ACTIVE_PATCH
        import_aworld()
        with PATCH_LOCK:
            if _ACTIVE_PATCH is not None:
                raise ConfigError("a Pr765Patch is already applied in this process; undo() it (or close the "
                                  "workload that applied it) before applying another")
            try:
                self._apply()
            except BaseException:
                self._restore()
                raise
            _ACTIVE_PATCH = self
        return self

    def _apply(self) -> None:
        utils = sys.modules["aworld.models.utils"]
        for short in ("openai_tokenizer", "qwen_tokenizer"):
            mod = sys.modules[f"aworld.models.{short}"]
            cache: dict[Any, dict[bytes, int]] = {}
            self.bpe_caches[short] = cache
            self._set(mod, "_BPE_CACHE", cache)
            self._set(mod, "_load_tiktoken_bpe", _cached_loader(mod._load_tiktoken_bpe, cache))

        enc_cache: dict[str, Any] = self.encoding_cache
        get_cached = _make_get_cached_tiktoken_encoding(enc_cache, utils)
        self._set(utils, "_TIKTOKEN_ENCODING_CACHE", enc_cache)
        self._set(utils, "_get_cached_tiktoken_encoding", get_cached)
        replacements = _make_patched_utils(utils, get_cached)
        originals = {name: getattr(utils, name) for name in replacements}
        for name, fn in replacements.items():
            self._set(utils, name, fn)
        # Modules that did `from aworld.models.utils import <name>` hold the original function.
        for modname, mod in list(sys.modules.items()):
            if mod is None or mod is utils or not modname.startswith("aworld"):
                continue
            for name, orig in originals.items():
                if getattr(mod, name, None) is orig:
                    self._set(mod, name, replacements[name])

    def _restore(self) -> None:
        for module, attr, had, old, _new in reversed(self._saved):
            if had:
                setattr(module, attr, old)
            else:
                with contextlib.suppress(AttributeError):
                    delattr(module, attr)
        self._saved.clear()

    def undo(self) -> None:
        """Put back every attribute the patch changed. Idempotent.

        Raises :class:`~tokdiag.errors.TokdiagError` (after restoring anyway)
        when something else replaced a patched attribute in the meantime.
        """
        global _ACTIVE_PATCH
        with PATCH_LOCK:
            if not self._saved:
                return
            moved = [f"{m.__name__}.{a}" for m, a, _h, _o, new in self._saved if getattr(m, a, None) is not new]
            self._restore()
            if _ACTIVE_PATCH is self:
                _ACTIVE_PATCH = None
        if moved:
            raise TokdiagError(f"while Pr765Patch was applied, something else replaced {', '.join(moved)}; "
                               f"they were restored to aworld's originals anyway. Undo patches in reverse order")

    def __enter__(self) -> Pr765Patch:
        return self.apply()

    def __exit__(self, *exc: object) -> None:
        self.undo()


def _cached_loader(original: Callable[[Any], dict[bytes, int]],
                   cache: dict[Any, dict[bytes, int]]) -> Callable[[Any], dict[bytes, int]]:
    def _load_tiktoken_bpe(tiktoken_bpe_file: Any) -> dict[bytes, int]:
        """Load tiktoken BPE file with caching to prevent memory leaks. (PR #765, emulated by tokdiag)"""
        if tiktoken_bpe_file in cache:
            return cache[tiktoken_bpe_file]
        result = original(tiktoken_bpe_file)
        cache[tiktoken_bpe_file] = result
        return result

    return _load_tiktoken_bpe


def _make_get_cached_tiktoken_encoding(cache: dict[str, Any], utils: ModuleType) -> Callable[[str], Any]:
    def _get_cached_tiktoken_encoding(model: str) -> Any:
        """Get cached tiktoken encoding to prevent memory leaks. (PR #765, emulated by tokdiag)"""
        if model not in cache:
            import tiktoken

            try:
                cache[model] = tiktoken.encoding_for_model(model)
                utils.logger.debug(f"Created and cached tiktoken encoding for model: {model}")
            except KeyError:
                utils.logger.debug(f"{model} model not found. Using cl100k_base encoding.")
                if "cl100k_base" not in cache:
                    cache["cl100k_base"] = tiktoken.get_encoding("cl100k_base")
                cache[model] = cache["cl100k_base"]
        return cache[model]

    return _get_cached_tiktoken_encoding


def _make_patched_utils(utils: ModuleType, get_cached: Callable[[str], Any]) -> dict[str, Callable[..., Any]]:
    """aworld 0.3.2's three token functions with the Encoding taken from the PR's cache."""

    def num_tokens_from_string(string: str, model: str = "openai") -> int:
        """Return the number of tokens used by a list of messages. (PR #765, emulated by tokdiag)"""
        if model.lower() == "qwen":
            encoding = utils.qwen_tokenizer
        elif model.lower() == "openai":
            encoding = utils.openai_tokenizer
        else:
            encoding = get_cached(model)
        return len(utils._encoding_encode(encoding, string))

    def num_tokens_from_messages(messages: Any, model: str = "openai") -> int:
        """Return the number of tokens used by a list of messages. (PR #765, emulated by tokdiag)"""
        utils.import_package("tiktoken")
        if model.lower() == "qwen":
            encoding = utils.qwen_tokenizer
        elif model.lower() == "openai":
            encoding = utils.openai_tokenizer
        else:
            encoding = get_cached(model)
        tokens_per_message = 3
        tokens_per_name = 1
        num_tokens = 0
        enc_fn = utils._encoding_encode
        for message in messages:
            num_tokens += tokens_per_message
            if isinstance(message, str):
                num_tokens += len(enc_fn(encoding, message))
            else:
                for key, value in message.items():
                    num_tokens += len(enc_fn(encoding, str(value)))
                    if key == "name":
                        num_tokens += tokens_per_name
        num_tokens += 3
        return num_tokens

    def truncate_tokens_from_messages(messages: Any, max_tokens: int, keep_both_sides: bool = False,
                                      model: str = "gpt-4o") -> Any:
        """As aworld 0.3.2, with the Encoding from the cache. (PR #765, emulated by tokdiag)"""
        utils.import_package("tiktoken")
        if model.lower() == "qwen":
            return utils.qwen_tokenizer.truncate(messages, max_tokens, keep_both_sides)
        elif model.lower() == "openai":
            return utils.openai_tokenizer.truncate(messages, max_tokens, keep_both_sides)
        encoding = get_cached(model)
        return encoding.truncate(messages, max_tokens, keep_both_sides)

    return {
        "num_tokens_from_string": num_tokens_from_string,
        "num_tokens_from_messages": num_tokens_from_messages,
        "truncate_tokens_from_messages": truncate_tokens_from_messages,
    }
