"""What the built-in workloads cost per step, each variant in a fresh interpreter.

The figures in ``docs/workloads.md`` come from this script. Every variant runs
in its own ``python bench/workloads.py --one <suite> <variant>`` child, so
memory freed by one variant is not reused by the next (a process keeps freed
memory in its allocator, and a second tiktoken vocabulary reuses the pages of
the first); the parent prints one line per variant. Memory is read with
psutil (RSS) after ``gc.collect()`` and with tracemalloc; no tokdiag probe
runs during the measured steps, so these are the workloads' own costs, the
reference the tracked runs of the notebooks are checked against.

Suites (default: ``tokenizers agents``; ``aworld`` needs the aworld extra and
takes several minutes, most of it waiting on AWorld's event loop):

``tokenizers``
    Each scenario of :mod:`tokdiag_workloads.tokenizers` for ``steps`` steps:
    MiB of RSS added by step 0, by step 1, and per step over the rest; then a
    tokenizer's build time and what ``pympler.asizeof`` sees of it, and the
    bytes per key of PR #765's model-name cache (tracemalloc, 100,000 names).
``agents``
    The pure-Python agent app (:mod:`tokdiag_workloads.agents`), all
    retention paths on, each alone, and fixed: RSS and tracemalloc KB per task
    over 1,000 tasks after 100 warm-up tasks.
``aworld``
    Real AWorld agent tasks (:mod:`tokdiag_workloads.aworld`) in six
    variants: import cost, seconds per task, RSS and tracemalloc KB per task,
    agents alive, and the why-alive chains of a kept agent
    (:func:`tokdiag.why_alive`); the reused agent once more under
    ``td.track`` (what the watched agent reaches, per task); then the RSS of
    one sync + async ``openai`` client pair, which each AWorld agent builds.

Run: ``.venv/bin/python bench/workloads.py [suite ...] [--steps N]``
(``--steps``: tokenizer steps per scenario, default 10; ``--one
tokenizers '<variant>' --steps 60`` prints one variant's RSS trace).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import psutil

_PROC = psutil.Process()


def _rss_mb() -> float:
    gc.collect()
    return _PROC.memory_info().rss / 2**20


# --------------------------------------------------------------------------- tokenizers


def _tokenizer_variants() -> dict[str, Callable[[], Callable[[int], object]]]:
    from tokdiag_workloads import tokenizers as tk

    return {
        "per_instance_load(cl100k_base, keep=True)": lambda: tk.per_instance_load("cl100k_base", keep=True),
        "per_instance_load(qwen, keep=True)": lambda: tk.per_instance_load("qwen", keep=True),
        "per_instance_load(cl100k_base, keep=False)": lambda: tk.per_instance_load("cl100k_base", keep=False),
        "module_cache(cl100k_base, keep=False)": lambda: tk.module_cache("cl100k_base", keep=False),
        "module_cache(cl100k_base, keep=True)": lambda: tk.module_cache("cl100k_base", keep=True),
        "module_cache(qwen, keep=True)": lambda: tk.module_cache("qwen", keep=True),
        "registry(gpt-4, cold=True)": lambda: tk.registry("gpt-4", cold=True),
        "model_name_keys()": lambda: tk.model_name_keys(),
    }


_TOKENIZER_EXTRAS = ("BpeTokenizer(cl100k_base): build time, pympler sizes",
                     "BpeTokenizer(qwen): build time, pympler sizes",
                     "model_name_keys(text='hi'), 100,000 names: tracemalloc")


def measure_tokenizers(variant: str, steps: int) -> Any:
    """RSS in MiB after ``gc.collect()``: before step 0, then after each of ``steps`` steps.

    The extras: a tokenizer's build time (median of 5) and what ``pympler.asizeof``
    sees of it; the bytes per key of PR #765's model-name cache over 100,000 names.
    """
    if variant in _TOKENIZER_EXTRAS[:2]:
        return _tokenizer_sizes(variant[len("BpeTokenizer("):variant.index(")")])
    if variant == _TOKENIZER_EXTRAS[2]:
        return _model_name_key_bytes(100_000)
    step = _tokenizer_variants()[variant]()
    trace = [_rss_mb()]
    for i in range(steps):
        step(i)
        trace.append(_rss_mb())
    return trace


def _tokenizer_sizes(vocab: str) -> dict[str, float]:
    import statistics

    from pympler import asizeof

    from tokdiag_workloads.tokenizers import BpeTokenizer
    from tokdiag_workloads.vocab import find_vocabulary

    path = find_vocabulary(vocab)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        tok = BpeTokenizer(path, vocab=vocab)
        times.append(time.perf_counter() - t)
    return {"build_s": statistics.median(times), "ranks": asizeof.asizeof(tok.mergeable_ranks) / 2**20,
            "decoder": asizeof.asizeof(tok.decoder) / 2**20,
            "both": asizeof.asizeof(tok.mergeable_ranks, tok.decoder) / 2**20}


def _model_name_key_bytes(names: int) -> dict[str, float]:
    from tokdiag_workloads.tokenizers import model_name_keys

    step = model_name_keys(text="hi")
    step(0)  # the shared Encoding is built before tracing
    gc.collect()
    tracemalloc.start()
    m0 = tracemalloc.get_traced_memory()[0]
    for i in range(1, names + 1):
        step(i)
    gc.collect()
    per_key = (tracemalloc.get_traced_memory()[0] - m0) / names
    tracemalloc.stop()
    return {"names": names, "bytes_per_key": per_key, "entries": step.entries, "distinct": step.distinct_values}


def show_tokenizers(variant: str, trace: Any) -> str:
    if variant in _TOKENIZER_EXTRAS[:2]:
        return (f"{variant:45s} built in {trace['build_s']:.2f} s; pympler: mergeable_ranks {trace['ranks']:.1f} MiB, "
                f"decoder {trace['decoder']:.1f} MiB, both together {trace['both']:.1f} MiB")
    if variant == _TOKENIZER_EXTRAS[2]:
        return (f"{variant:45s} {trace['bytes_per_key']:.0f} bytes per key; {trace['entries']} entries, "
                f"{trace['distinct']} distinct Encoding")
    rest = (trace[-1] - trace[2]) / (len(trace) - 3)
    return f"{variant:45s} {trace[1] - trace[0]:10.1f} {trace[2] - trace[1]:10.1f} {rest:12.1f}"


# --------------------------------------------------------------------------- agents


def _agent_variants() -> dict[str, dict[str, Any]]:
    from tokdiag_workloads.agents import TOGGLES

    return {"all on": {}, **{f"{t} alone": {k: k == t for k in TOGGLES} for t in TOGGLES}, "fixed": {"fixed": True}}


def measure_agents(variant: str, tasks: int = 1000, warmup: int = 100) -> dict[str, float]:
    """Bytes per task of one app variant after ``warmup`` tasks: RSS, then tracemalloc over as many more."""
    from tokdiag_workloads.agents import AgentApp

    with AgentApp(**_agent_variants()[variant]) as app:
        for i in range(warmup):
            app.run_task(i)
        r0 = _rss_mb()
        for i in range(warmup, warmup + tasks):
            app.run_task(i)
        rss = (_rss_mb() - r0) * 2**20 / tasks
        tracemalloc.start()
        t0 = tracemalloc.get_traced_memory()[0]
        for i in range(warmup + tasks, warmup + 2 * tasks):
            app.run_task(i)
        gc.collect()
        traced = (tracemalloc.get_traced_memory()[0] - t0) / tasks
        tracemalloc.stop()
    return {"rss": rss, "traced": traced}


def show_agents(variant: str, res: dict[str, float]) -> str:
    return f"{variant:28s} RSS {res['rss'] / 1024:6.1f} KB/task   tracemalloc {res['traced'] / 1024:6.1f} KB/task"


# --------------------------------------------------------------------------- aworld

_AWORLD_VARIANTS: dict[str, dict[str, Any]] = {
    "new agent per task": {},
    "new agent, unregistered": {"unregister_agents": True},
    "one reused agent": {"reuse_agent": True},
    "reused agent, 1 session": {"reuse_agent": True, "session_id": "tokdiag-one-session"},
    "new agent, 1 tool call": {"tool_calls": True},
    "new agent, streamed": {"stream": True},
}


def measure_aworld(variant: str, tasks: int = 25, warmup: int = 3, traced: int = 10) -> dict[str, Any]:
    """Import cost, then per-task time and growth of one AWorld agent variant.

    RSS per task over ``tasks`` tasks after ``warmup``; tracemalloc per task
    over ``traced`` further tasks (tracing slows the tasks, so it is apart);
    CPU seconds per task (user + system) against wall seconds shows how much
    of a task is waiting.
    """
    if variant == "openai client pair":
        return {"kb": _openai_client_pair_kb()}
    import tokdiag as td
    from tokdiag_workloads.aworld import aworld_agent_workload, import_aworld

    t0 = time.perf_counter()
    import_aworld()
    from tokdiag_workloads.aworld.agents import RewardAgent

    if variant == "one reused agent, tracked by tokdiag":
        return _tracked_reused_agent(RewardAgent)

    options = _AWORLD_VARIANTS[variant]
    out: dict[str, Any] = {"import_s": time.perf_counter() - t0, "import_rss_mb": _PROC.memory_info().rss / 2**20}
    with aworld_agent_workload(None, **options) as step:
        for i in range(warmup):
            step(i)
        r0, c0, w0 = _rss_mb(), sum(_PROC.cpu_times()[:2]), time.perf_counter()
        times = []
        for i in range(warmup, warmup + tasks):
            t = time.perf_counter()
            step(i)
            times.append(time.perf_counter() - t)
        out["cpu_share"] = (sum(_PROC.cpu_times()[:2]) - c0) / (time.perf_counter() - w0)
        out["rss_kb_per_task"] = (_rss_mb() - r0) * 1024 / tasks
        out["first5_s"] = sum(times[:5]) / 5
        out["last5_s"] = sum(times[-5:]) / 5
        tracemalloc.start()
        m0 = tracemalloc.get_traced_memory()[0]
        for i in range(warmup + tasks, warmup + tasks + traced):
            step(i)
        gc.collect()
        out["traced_kb_per_task"] = (tracemalloc.get_traced_memory()[0] - m0) / traced / 1024
        tracemalloc.stop()
        out["requests"] = step.server.request_count
    gc.collect()
    out["tasks"] = warmup + tasks + traced
    out["alive"] = sum(1 for o in gc.get_objects() if type(o) is RewardAgent)
    out["registered"] = _registered(RewardAgent)
    if not options.get("reuse_agent"):
        out["chains"] = [c.text for c in td.why_alive(RewardAgent, max_chains=2)]
    return out


def _registered(cls: type) -> int:
    """Instances of ``cls`` in AWorld's agent registry (a function of its own: no frame of the caller holds it)."""
    from aworld.core.agent.base import AgentFactory

    return sum(1 for a in list(AgentFactory._agent_instance.values()) if type(a) is cls)


def _tracked_reused_agent(cls: type, tasks: int = 8) -> dict[str, Any]:
    """``td.track`` on the reused-agent variant: what the watched RewardAgent reaches, per task."""
    import tokdiag as td
    from tokdiag_workloads.aworld import aworld_agent_workload

    name = f"{cls.__module__}.{cls.__qualname__}"
    with aworld_agent_workload(None, reuse_agent=True) as step:
        run = td.track(step, steps=tasks, every=1, watch=[name], census=False, progress=False, why_alive=False)
    v = run.verdicts().set_index(["probe", "subject", "metric"])
    return {"tasks": tasks, "bytes": v.loc[("watch", name, "bytes")][["verdict", "per_step"]].tolist(),
            "rss": v.loc[("process", "process", "rss")][["verdict", "per_step"]].tolist()}


def _openai_client_pair_kb(pairs: int = 20) -> float:
    """RSS per sync + async ``openai`` client pair, as each AWorld agent builds (kept alive)."""
    import openai

    openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="x")  # warm up imports and lazy state
    r0 = _rss_mb()
    kept = [(openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="x"),
             openai.AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key="x")) for _ in range(pairs)]
    kb = (_rss_mb() - r0) * 1024 / pairs
    del kept
    return kb


def show_aworld(variant: str, res: dict[str, Any]) -> str:
    if variant == "openai client pair":
        return f"{variant:24s} RSS {res['kb']:.0f} KB per sync + async pair"
    if "tracked" in variant:
        (bv, bs), (rv, rs) = res["bytes"], res["rss"]
        return (f"{variant:24s} td.track, {res['tasks']} tasks: RewardAgent reachable bytes {bv}, "
                f"{bs / 1024:.0f} KB/task; RSS {rv}, {rs / 1024:.0f} KB/task")
    line = (f"{variant:24s} import {res['import_s']:.2f} s, RSS {res['import_rss_mb']:.0f} MB | task "
            f"{res['first5_s']:.2f} -> {res['last5_s']:.2f} s, CPU {res['cpu_share']:.0%} of wall | "
            f"RSS {res['rss_kb_per_task']:.0f} KB/task, tracemalloc {res['traced_kb_per_task']:.0f} KB/task | "
            f"RewardAgents alive {res['alive']}/{res['tasks']} tasks, registered {res['registered']}, "
            f"{res['requests']} requests")
    return "\n".join([line, *(f"{'':24s} {chain}" for chain in res.get("chains", []))])


# --------------------------------------------------------------------------- the harness

SUITES: dict[str, tuple[Callable[[], list[str]], str]] = {
    "tokenizers": (lambda: [*_tokenizer_variants(), *_TOKENIZER_EXTRAS],
                   f"{'scenario (RSS after gc.collect)':45s} {'step 0 MiB':>10s} {'step 1 MiB':>10s} "
                   f"{'MiB/step 2+':>12s}"),
    "agents": (lambda: list(_agent_variants()), "agent app variant (1,000 tasks after 100)"),
    "aworld": (lambda: [*_AWORLD_VARIANTS, "one reused agent, tracked by tokdiag", "openai client pair"],
               "AWorld agent variant (3 warm-up tasks, 25, then 10 traced)"),
}


def _measure(suite: str, variant: str, steps: int) -> Any:
    if suite == "tokenizers":
        return measure_tokenizers(variant, steps)
    if suite == "agents":
        return measure_agents(variant)
    return measure_aworld(variant)


def _show(suite: str, variant: str, res: Any) -> str:
    return {"tokenizers": show_tokenizers, "agents": show_agents, "aworld": show_aworld}[suite](variant, res)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suites", nargs="*", default=["tokenizers", "agents"], help=f"any of {', '.join(SUITES)}")
    parser.add_argument("--steps", type=int, default=10, help="tokenizer steps per scenario (>= 4)")
    parser.add_argument("--one", nargs=2, metavar=("SUITE", "VARIANT"), help="measure one variant here, print JSON")
    args = parser.parse_args(argv)
    unknown = [s for s in args.suites if s not in SUITES]
    if unknown or args.steps < 4:
        parser.error(f"unknown suite {unknown[0]!r}; pass any of {', '.join(SUITES)}" if unknown
                     else f"--steps {args.steps}: pass 4 or more")
    if args.one:
        print(json.dumps(_measure(*args.one, args.steps)))
        return 0
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (other processes inflate "
          f"all timings)")
    for suite in args.suites:
        variants, header = SUITES[suite]
        print(f"== {suite}\n{header}", flush=True)
        for variant in variants():
            child = subprocess.run([sys.executable, __file__, "--one", suite, variant, "--steps", str(args.steps)],
                                   check=True, capture_output=True, text=True)
            print(_show(suite, variant, json.loads(child.stdout.strip().splitlines()[-1])), flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
