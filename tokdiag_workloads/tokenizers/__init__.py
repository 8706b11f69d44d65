"""Tokenizer cache scenarios on real BPE vocabularies: the AWorld PR #765 debate, reproduced.

AWorld's PR #765 ("add caches to tiktoken to fix a memory leak") claimed that
building tokenizers per call leaks memory, and added module-level dict caches
in ``aworld/models/openai_tokenizer.py``, ``qwen_tokenizer.py`` (``_BPE_CACHE``)
and ``utils.py`` (``_TIKTOKEN_ENCODING_CACHE``); the reviewer (gemini-code-assist)
answered that the caches are unbounded and not thread-safe, and the author
that the real leaks were elsewhere (agents and event messages, see
:mod:`tokdiag_workloads.agents`). Each scenario isolates one of those claims
so a tracked run can confirm or refute it:

==========================================  ============================================================
factory (module)                            reproduces
==========================================  ============================================================
:func:`per_instance_load` (instances)       a new tokenizer per step that reads and decodes the BPE file
                                            itself (AWorld's ``_load_tiktoken_bpe``); kept or dropped
:func:`module_cache` (instances)            the same behind PR #765's ``_BPE_CACHE`` dict
:func:`registry` (lookups)                  ``tiktoken.encoding_for_model`` / ``get_encoding`` per call
:func:`model_name_keys` (lookups)           PR #765's ``_TIKTOKEN_ENCODING_CACHE`` fed a new model name
                                            per step (the reviewer's unbounded-cache point)
:func:`concurrent_first_use` (races)        N threads racing an unlocked lazy cache (the reviewer's
                                            thread-safety point), and the same with a lock
:func:`shared_payload_mutation` (mutation)  a cached ranks dict mutated in place by AWorld's
                                            ``extra_vocab_file`` path
==========================================  ============================================================

Each factory returns a step object: call it as ``step(i)``; it counts the
tokens of real text (:data:`tokdiag_workloads.sample_text.SAMPLE_TEXT`) and returns
the count, so every step does honest work. Each factory starts from a clean
state: it clears the module-level caches it uses. ``step.reset()`` does the
same at any time; :func:`reset_caches` clears them all. The caches live in
:mod:`~tokdiag_workloads.tokenizers.caches` (measure them with
``td.cache("tokdiag_workloads.tokenizers.caches:_BPE_CACHE")``), the tokenizer
in :mod:`~tokdiag_workloads.tokenizers.bpe`.

aworld 0.3.2 itself builds exactly one ``OpenAITokenizer`` and one
``QWenTokenizer`` at import and its ``num_tokens_from_*`` functions reuse
them, so :func:`per_instance_load` is the pattern PR #765 guards against, not
what aworld does on its own; :mod:`tokdiag_workloads.aworld` runs the real
thing. What each scenario measured, and the command: ``docs/workloads.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from tokdiag_workloads.tokenizers.bpe import BpeTokenizer
from tokdiag_workloads.tokenizers.caches import reset_caches
from tokdiag_workloads.tokenizers.instances import ModuleCache, PerInstanceLoad, module_cache, per_instance_load
from tokdiag_workloads.tokenizers.lookups import ModelNameKeys, Registry, model_name_keys, registry
from tokdiag_workloads.tokenizers.mutation import SharedPayloadMutation, shared_payload_mutation
from tokdiag_workloads.tokenizers.races import ConcurrentFirstUse, ConcurrentStepResult, concurrent_first_use
from tokdiag_workloads.tokenizers.scenario import Scenario

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

SCENARIOS: Mapping[str, Callable[..., Scenario]] = {
    "per_instance_load": per_instance_load,
    "module_cache": module_cache,
    "registry": registry,
    "model_name_keys": model_name_keys,
    "concurrent_first_use": concurrent_first_use,
    "shared_payload_mutation": shared_payload_mutation,
}
"""Every scenario factory by name, for notebooks that take the scenario as a parameter."""
