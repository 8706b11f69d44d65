"""Encodings looked up by name: tiktoken's own registry, and PR #765's model-name cache.

:func:`registry` calls ``tiktoken.encoding_for_model`` / ``get_encoding``
per step (PR #765's central claim was that this builds a new Encoding every
call); :func:`model_name_keys` feeds the PR's ``_TIKTOKEN_ENCODING_CACHE``
(``caches._ENCODING_BY_MODEL``) a new user-supplied model name per step (the
reviewer's unbounded-cache point). Both read cl100k_base offline.
"""

from __future__ import annotations

import tiktoken

from tokdiag.errors import ConfigError
from tokdiag_workloads.tokenizers import caches
from tokdiag_workloads.tokenizers.scenario import Scenario
from tokdiag_workloads.vocab import offline_tiktoken

__all__ = ["ModelNameKeys", "Registry", "model_name_keys", "registry"]


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
        self.cache_dir = offline_tiktoken()
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
    a one-off step (the first cl100k_base load), then flat (``docs/workloads.md``).
    ``encoding_ids`` collects ``id()`` of every Encoding returned (expect one).

    Calls :func:`tokdiag_workloads.vocab.offline_tiktoken` first so tiktoken
    reads cl100k_base from disk. ``cold=True`` removes the encoding from
    tiktoken's registry when the factory runs, so the first step pays the load
    even if something in this process loaded it before. Models on other
    encodings (gpt-4o uses o200k_base) are refused unless already loaded,
    since they would need a download.
    """
    return Registry(model, encoding_name, cold, text)


class ModelNameKeys(Scenario):
    """Step object of :func:`model_name_keys`."""

    name = "model_name_keys"

    def __init__(self, prefix: str, text: str | None) -> None:
        super().__init__(text)
        _offline_encoding_name(f"{prefix}0")
        self.prefix = prefix
        self.cache_dir = offline_tiktoken()
        self.reset()

    @property
    def entries(self) -> int:
        """Keys in ``caches._ENCODING_BY_MODEL``."""
        return len(caches._ENCODING_BY_MODEL)

    @property
    def distinct_values(self) -> int:
        """Distinct Encoding objects among its values."""
        return len({id(v) for v in caches._ENCODING_BY_MODEL.values()})

    def reset(self) -> None:
        super().reset()
        caches._ENCODING_BY_MODEL.clear()

    def __call__(self, i: int) -> int:
        encoding = caches._get_cached_tiktoken_encoding(f"{self.prefix}{i}")
        self.steps_run += 1
        return len(encoding.encode(self.text, disallowed_special=()))


def model_name_keys(prefix: str = "gpt-4-user-", text: str | None = None) -> ModelNameKeys:
    """PR #765's model-name cache fed a new, user-supplied model name every step.

    Mirrors ``_get_cached_tiktoken_encoding`` from the PR's
    ``aworld/models/utils.py`` (module-level ``_TIKTOKEN_ENCODING_CACHE``, here
    ``caches._ENCODING_BY_MODEL``), called with ``f"{prefix}{i}"``: the
    reviewer's denial-of-service point. Every name resolves to the one shared
    cl100k_base Encoding (``gpt-4-...`` by tiktoken's prefix table, unknown
    names by the PR's fallback), so ``distinct_values`` stays 1 while
    ``entries`` grows by one per step without bound: a leak in entries whose
    bytes per key are small (about a hundred), which RSS does not show over a
    short run; only an entries count catches it (``docs/workloads.md``).
    """
    return ModelNameKeys(prefix, text)
