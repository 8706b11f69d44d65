"""Threads racing an empty lazy tokenizer cache: the reviewer's thread-safety point on PR #765."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from tokdiag.errors import ConfigError
from tokdiag_workloads.tokenizers import caches
from tokdiag_workloads.tokenizers.bpe import BpeTokenizer
from tokdiag_workloads.tokenizers.scenario import Scenario
from tokdiag_workloads.vocab import find_vocabulary

__all__ = ["ConcurrentFirstUse", "ConcurrentStepResult", "concurrent_first_use"]


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
        self.path = str(find_vocabulary(vocab, path))
        self.loads: list[int] = []
        self.results: list[ConcurrentStepResult] = []
        self._load_events: list[int] = []
        self.reset()

    def reset(self) -> None:
        super().reset()
        with caches._LAZY_LOCK:
            caches._LAZY_TOKENIZERS.clear()
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
            tokenizer = caches._LAZY_TOKENIZERS.get(key)
            if tokenizer is None:
                tokenizer = self._build()
                caches._LAZY_TOKENIZERS[key] = tokenizer
            return tokenizer
        # The reviewer's fix: double-checked locking.
        tokenizer = caches._LAZY_TOKENIZERS.get(key)
        if tokenizer is not None:
            return tokenizer
        with caches._LAZY_LOCK:
            tokenizer = caches._LAZY_TOKENIZERS.get(key)
            if tokenizer is None:
                tokenizer = self._build()
                caches._LAZY_TOKENIZERS[key] = tokenizer
            return tokenizer

    def __call__(self, i: int) -> int:
        with caches._LAZY_LOCK:
            caches._LAZY_TOKENIZERS.clear()  # every step is a fresh first use
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
    empties ``caches._LAZY_TOKENIZERS`` (a fresh first use), releases the threads
    together through a :class:`threading.Barrier`, and records in ``.loads``
    how many times the vocabulary was actually loaded; ``.results`` holds a
    :class:`ConcurrentStepResult` per step. ``delay_s`` sleeps inside the loader
    before the load, as a slow disk would, so the race shows up reliably.

    ``lock=False`` usually loads ``threads`` times per step (each duplicate a
    full tokenizer, alive until its thread finishes: a peak, not a leak);
    ``lock=True`` uses the reviewer's double-checked lock and loads exactly once.
    """
    return ConcurrentFirstUse(threads, lock, vocab, path, delay_s, text)
