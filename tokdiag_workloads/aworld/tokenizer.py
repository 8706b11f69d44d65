"""AWorld 0.3.2's token-counting paths as a step function, as shipped or under PR #765.

:func:`tokenizer_workload` drives ``aworld.models.utils.num_tokens_from_string``
/ ``num_tokens_from_messages``, a new ``OpenAITokenizer`` / ``QWenTokenizer``
per call (each construction runs the module's ``_load_tiktoken_bpe``, which
reads and base64-decodes the whole vocabulary file, then builds a new
``tiktoken.Encoding``), or the module tokenizer instances ``openai_tokenizer``
/ ``qwen_tokenizer``. With ``patched=True`` the step runs under
:class:`~tokdiag_workloads.aworld.pr765.Pr765Patch`.
:attr:`TokenizerStep.bpe_loads` counts the calls that reached AWorld's own
``_load_tiktoken_bpe`` (real file reads).

Offline: model names tiktoken maps to cl100k_base (``gpt-4``, the default, or
names it does not know) and ``"openai"`` / ``"qwen"`` run from the
vocabularies AWorld ships; a model on another encoding (``gpt-4o``:
o200k_base) would make tiktoken download it (``docs/workloads.md``).
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from tokdiag.errors import ConfigError
from tokdiag_workloads.aworld.pr765 import PATCH_LOCK, Pr765Patch, pr765_active
from tokdiag_workloads.aworld.sandbox import import_aworld
from tokdiag_workloads.sample_text import SAMPLE_TEXT

__all__ = ["TOKENIZER_CALLS", "TokenizerCall", "TokenizerStep", "tokenizer_workload"]


class _LoadCounter:
    """Wraps AWorld's original ``_load_tiktoken_bpe`` in both tokenizer modules and counts calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.users = 0
        self._saved: list[tuple[ModuleType, Callable[..., Any], Callable[..., Any]]] = []

    def acquire(self) -> None:
        with PATCH_LOCK:
            if self.users == 0:
                if pr765_active():
                    raise ConfigError("create the tokenizer workload before applying a Pr765Patch by hand, or "
                                      "use tokenizer_workload(patched=True), so real loads can be counted")
                for short in ("openai_tokenizer", "qwen_tokenizer"):
                    mod = sys.modules[f"aworld.models.{short}"]
                    original = mod._load_tiktoken_bpe
                    wrapper = self._wrap(original)
                    mod._load_tiktoken_bpe = wrapper
                    self._saved.append((mod, original, wrapper))
            self.users += 1

    def release(self) -> None:
        with PATCH_LOCK:
            if self.users == 0:
                return
            self.users -= 1
            if self.users == 0:
                for mod, original, wrapper in reversed(self._saved):
                    if mod._load_tiktoken_bpe is wrapper:
                        mod._load_tiktoken_bpe = original
                self._saved.clear()

    def _wrap(self, original: Callable[[Any], dict[bytes, int]]) -> Callable[[Any], dict[bytes, int]]:
        counter = self

        def _load_tiktoken_bpe(tiktoken_bpe_file: Any) -> dict[bytes, int]:
            counter.calls += 1
            return original(tiktoken_bpe_file)

        _load_tiktoken_bpe.__wrapped__ = original  # type: ignore[attr-defined]
        return _load_tiktoken_bpe


_LOADS = _LoadCounter()


TokenizerCall = Literal[
    "num_tokens_from_string",
    "num_tokens_from_messages",
    "new_openai_tokenizer",
    "new_qwen_tokenizer",
    "module_openai_tokenizer",
    "module_qwen_tokenizer",
]
TOKENIZER_CALLS: tuple[str, ...] = (
    "num_tokens_from_string",
    "num_tokens_from_messages",
    "new_openai_tokenizer",
    "new_qwen_tokenizer",
    "module_openai_tokenizer",
    "module_qwen_tokenizer",
)
"""The AWorld token-counting paths :func:`tokenizer_workload` can drive."""


class TokenizerStep:
    """A step function over one of AWorld's token-counting paths; see :func:`tokenizer_workload`.

    Attributes:
        call, model, unique_models, patched, keep: the options it was made with.
        kept: tokenizers constructed by ``new_*`` calls when ``keep=True``.
        last_count: the token count of the last step.
        patch: the active :class:`Pr765Patch` when ``patched=True``.
    """

    def __init__(self, call: str, model: str, unique_models: bool, patched: bool, keep: bool,
                 text: str) -> None:
        import_aworld()
        self.call, self.model, self.unique_models = call, model, unique_models
        self.patched, self.keep, self.text = patched, keep, text
        self.kept: list[Any] = []
        self.last_count = 0
        self.closed = False
        self._messages = [{"role": "system", "content": "You score agent trajectories."},
                          {"role": "user", "content": text}]
        _LOADS.acquire()
        self._loads0 = _LOADS.calls
        self.patch: Pr765Patch | None = None
        try:
            if patched:
                self.patch = Pr765Patch().apply()
        except BaseException:
            _LOADS.release()
            raise
        self._finalizer = weakref.finalize(self, _close_tokenizer_step, self.patch)

    @property
    def bpe_loads(self) -> int:
        """Calls that reached AWorld's own ``_load_tiktoken_bpe`` (file read + decode) since creation."""
        return _LOADS.calls - self._loads0

    def model_for(self, i: int) -> str:
        """The model name step ``i`` passes (``<model>-tenant-<i>`` with ``unique_models``)."""
        return f"{self.model}-tenant-{i}" if self.unique_models else self.model

    def __call__(self, i: int) -> int:
        if self.closed:
            raise ConfigError("this tokenizer workload is closed; make a new one with tokenizer_workload(...)")
        if pr765_active() != self.patched:
            state = "applied" if pr765_active() else "not applied"
            raise ConfigError(f"this workload was made with patched={self.patched} but the PR #765 patch is "
                              f"{state} now (another workload?); close the other workload first")
        utils = sys.modules["aworld.models.utils"]
        call = self.call
        if call == "num_tokens_from_string":
            n = utils.num_tokens_from_string(self.text, self.model_for(i))
        elif call == "num_tokens_from_messages":
            n = utils.num_tokens_from_messages(self._messages, self.model_for(i))
        elif call in ("new_openai_tokenizer", "new_qwen_tokenizer"):
            short = "openai_tokenizer" if call == "new_openai_tokenizer" else "qwen_tokenizer"
            mod = sys.modules[f"aworld.models.{short}"]
            cls = mod.OpenAITokenizer if short == "openai_tokenizer" else mod.QWenTokenizer
            # The same file the module instance loads; a bare cls() would look for the file in the cwd.
            vocab = Path(mod.__file__).resolve().parent.parent / "config" / cls.vocab_files_names["vocab_file"]
            tok = cls(vocab)
            n = tok.count_tokens(self.text)
            if self.keep:
                self.kept.append(tok)
        elif call == "module_openai_tokenizer":
            n = sys.modules["aworld.models.openai_tokenizer"].openai_tokenizer.count_tokens(self.text)
        else:
            n = sys.modules["aworld.models.qwen_tokenizer"].qwen_tokenizer.count_tokens(self.text)
        self.last_count = n
        return n

    def close(self) -> None:
        """Undo the patch (if any), stop counting loads, drop kept tokenizers. Idempotent."""
        self.closed = True
        self.kept.clear()
        self._finalizer()

    def __enter__(self) -> TokenizerStep:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<TokenizerStep {self.call} model={self.model!r} unique_models={self.unique_models} "
                f"patched={self.patched} keep={self.keep}>")


def _close_tokenizer_step(patch: Pr765Patch | None) -> None:
    try:
        if patch is not None:
            patch.undo()
    finally:
        _LOADS.release()


def tokenizer_workload(
    call: TokenizerCall = "num_tokens_from_string",
    *,
    model: str = "gpt-4",
    unique_models: bool = False,
    patched: bool = False,
    keep: bool = False,
    text: str | None = None,
) -> TokenizerStep:
    """A step function ``step(i)`` that counts tokens through one AWorld 0.3.2 path.

    Args:
        call: which path (:data:`TOKENIZER_CALLS`):
            ``"num_tokens_from_string"`` / ``"num_tokens_from_messages"`` —
            ``aworld.models.utils``'s functions with ``model``: ``"openai"`` and
            ``"qwen"`` use the module tokenizer instances, any other name goes
            to ``tiktoken.encoding_for_model`` (falling back to
            ``get_encoding("cl100k_base")``), whose Encodings tiktoken itself
            caches in ``tiktoken.registry.ENCODINGS``;
            ``"new_openai_tokenizer"`` / ``"new_qwen_tokenizer"`` — construct
            ``OpenAITokenizer`` / ``QWenTokenizer`` on AWorld's shipped
            vocabulary each step (one ``_load_tiktoken_bpe`` and one new
            ``tiktoken.Encoding`` per construction), then count;
            ``"module_openai_tokenizer"`` / ``"module_qwen_tokenizer"`` — the
            module-level instances AWorld builds once at import.
        model: model name for the ``num_tokens_*`` calls.
        unique_models: pass ``<model>-tenant-<i>`` at step ``i``: user-supplied
            model names, the reviewer's unbounded-cache case (under the patch,
            ``_TIKTOKEN_ENCODING_CACHE`` gains a key per step).
        patched: run under :class:`Pr765Patch` (an emulation of PR #765),
            applied now and undone by :meth:`TokenizerStep.close`, when the
            ``with`` block ends, or when the step is garbage collected.
        keep: keep every tokenizer a ``new_*`` call builds (``step.kept``).
        text: what to count; defaults to :data:`tokdiag_workloads.sample_text.SAMPLE_TEXT`.

    Example::

        with tokenizer_workload("new_openai_tokenizer", patched=True) as step:
            for i in range(5):
                step(i)
            step.bpe_loads        # 1: the PR's _BPE_CACHE served the other 4
    """
    if call not in TOKENIZER_CALLS:
        raise ConfigError(f"unknown call {call!r}; pass one of {', '.join(TOKENIZER_CALLS)}")
    if not isinstance(model, str) or not model:
        raise ConfigError(f"model={model!r} must be a non-empty model name, e.g. 'gpt-4' or 'openai'")
    if text is None:
        text = SAMPLE_TEXT
    return TokenizerStep(call, model, unique_models, patched, keep, text)
