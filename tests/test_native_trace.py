"""alive_by_site: what a workload's steps leave alive under memray, grouped by the library frame that allocated it.

The grouping (tokdiag.analysis.attribution) is tested on hand-made traces;
the child process under memray (tokdiag.recording.native_trace) on workloads
that really leak and really don't (slow: each starts a process that imports
memray).
"""

from __future__ import annotations

import importlib.util
import os
import textwrap
from pathlib import Path

import pytest

import tokdiag as td
from tokdiag.analysis.attribution import UNSEEN, FrameClassifier, by_site, survivors_by_step, unseen_bytes
from tokdiag.errors import ConfigError, TargetError, TokdiagError
from tokdiag.recording.native_trace import AliveStack, AllocatorModel, NativeTrace, alive_by_site, measure_allocators

GLIBC = AllocatorModel(header=8, align=16, min_chunk=32, pymalloc_align=16)
PATHS = {"stdlib": ["/py/lib/python3.11"], "site": ["/py/lib/python3.11/site-packages"], "sys_path": ["/app"]}
SSL = ("create_default_context", "/py/lib/python3.11/ssl.py", 770)
HTTPX = ("create_ssl_context", "/py/lib/python3.11/site-packages/httpx/_config.py", 35)
TRANSPORT = ("__init__", "/py/lib/python3.11/site-packages/httpx/_transports/default.py", 153)
OPENAI = ("__init__", "/py/lib/python3.11/site-packages/openai/_client.py", 120)
USER = ("new_agent", "/app/service/agents.py", 42)
HANDLER = ("handle", "/app/service/api.py", 7)


def trace(stacks: list[AliveStack], *, steps: int = 4, heap_growth: int | None = None,
          model: AllocatorModel | None = GLIBC) -> NativeTrace:
    return NativeTrace(factory="app:make", kwargs={}, warmup=2, steps=steps, stacks=tuple(stacks), paths=PATHS,
                       allocators=model, python_allocators=True, native_traces=False, warmup_s=0.0, traced_s=0.0,
                       traced_cpu_s=0.0,
                       read_s=0.0, capture_bytes=0, allocations=0, python_allocator="pymalloc", memray="1.20.0",
                       heap_growth=heap_growth)


# -- grouping, on hand-made traces ----------------------------------------------------------------------


def test_frames_are_stdlib_library_or_user_by_the_folder_they_live_in() -> None:
    c = FrameClassifier(**PATHS)
    assert c.classify(SSL[1]) == ("ssl", "stdlib")
    assert c.classify(HTTPX[1]) == ("httpx._config", "library")  # site-packages, though inside the stdlib folder
    assert c.classify("/py/lib/python3.11/site-packages/openai/__init__.py") == ("openai", "library")
    assert c.classify(USER[1]) == ("service.agents", "user")
    assert c.classify("<frozen importlib._bootstrap>") == ("importlib._bootstrap", "stdlib")
    assert c.classify("/elsewhere/script.py") == ("script", "user")


def test_a_site_is_the_deepest_library_frame_and_its_owner_the_user_line_that_called_in() -> None:
    stacks = [AliveStack(frames=(SSL, HTTPX, TRANSPORT, OPENAI, USER, HANDLER), step=s, bytes=680_000, blocks=10_000,
                         allocator="MALLOC") for s in (2, 3, 4, 5)]
    stacks.append(AliveStack(frames=(USER, HANDLER), step=3, bytes=200, blocks=2, allocator="PYMALLOC_MALLOC"))
    table = by_site(trace(stacks))
    top = table.iloc[0]
    assert top["site"] == "ssl.create_default_context"
    assert top["kind"] == "stdlib" and top["library_frame"] == "ssl.py:770"
    assert top["owner"] == "service.agents.new_agent:42"
    assert top["stack_summary"] == ("ssl.create_default_context < httpx._config.create_ssl_context < "
                                    "openai._client.__init__ < service.agents.new_agent")
    assert top["allocations"] == 40_000 and top["steps"] == 4
    assert top["subject"] == "ssl.create_default_context <- service.agents.new_agent:42"
    # a user frame that allocated directly is its own site, with no library frame
    direct = table.iloc[1]
    assert (direct["site"], direct["library_frame"], direct["owner"]) == ("service.agents.new_agent", "",
                                                                          "service.agents.new_agent:42")
    assert direct["steps"] == 1 and direct["subject"] == "service.agents.new_agent:42"


def test_bytes_per_step_adds_the_allocator_overhead_of_each_block() -> None:
    stacks = [AliveStack(frames=(USER,), step=s, bytes=65_536, blocks=1, allocator="MALLOC") for s in range(2, 12)]
    stacks.append(AliveStack(frames=(HANDLER,), step=2, bytes=40 * 100, blocks=100, allocator="PYMALLOC_MALLOC"))
    table = by_site(trace(stacks, steps=10)).set_index("site")
    assert table.loc["service.agents.new_agent", "overhead_bytes"] == 10 * 16  # glibc: 8 B header, 16 B rounding
    assert table.loc["service.agents.new_agent", "bytes_per_step"] == 65_552
    assert table.loc["service.api.handle", "overhead_bytes"] == 100 * 8  # pymalloc: 40 B in a 48 B block
    arena = [AliveStack(frames=(OPENAI,), step=2, bytes=1 << 20, blocks=1, allocator="MMAP")]  # pymalloc's, mapped
    assert by_site(trace(arena)).iloc[0]["overhead_bytes"] == 0
    without = by_site(trace(stacks, steps=10, model=None)).set_index("site")
    assert without.loc["service.agents.new_agent", "bytes_per_step"] == 65_536


def test_the_allocator_model_follows_glibc_and_pymalloc() -> None:
    assert [GLIBC.overhead(n, python=False) for n in (1, 24, 25, 40, 1000, 65_536)] == [31, 8, 23, 8, 8, 16]
    assert GLIBC.overhead(200_000, python=False) == 200_704 - 200_000  # mmapped: whole pages
    assert [GLIBC.overhead(n, python=True) for n in (1, 40, 48, 512, 513)] == [15, 8, 0, 0, 15]


def test_the_allocator_is_measured_in_this_process() -> None:
    model = measure_allocators()
    if model is None:  # pragma: no cover - not glibc
        pytest.skip("needs glibc")
    assert model.align in (8, 16) and model.header in (4, 8, 16) and model.min_chunk >= 2 * model.header
    assert model.pymalloc_align in (8, 16)


def test_heap_growth_memray_did_not_see_is_its_own_row() -> None:
    seen = [AliveStack(frames=(USER,), step=s, bytes=1000, blocks=1, allocator="MALLOC") for s in (2, 3, 4, 5)]
    # a server thread's blocks are in glibc's heap too (mallinfo2 counts every arena); pymalloc's small ones are not
    seen.append(AliveStack(frames=(HANDLER,), step=None, bytes=1000, blocks=1, allocator="MALLOC", main_thread=False))
    seen.append(AliveStack(frames=(HANDLER,), step=None, bytes=400, blocks=10, allocator="PYMALLOC_MALLOC"))
    t = trace(seen, heap_growth=5 * 1008 + 4 * 65_552)
    assert unseen_bytes(t) == 4 * 65_552
    table = by_site(t)
    row = table[table["site"] == UNSEEN].iloc[0]
    assert row["bytes_per_step"] == 65_552 and row["kind"] == "unseen"
    assert table["share"].sum() == pytest.approx(1.0)
    assert UNSEEN not in by_site(trace(seen, heap_growth=5 * 1008))["site"].tolist()  # nothing unseen: no row


def test_survivors_by_step_accumulate_from_zero_at_the_capture_opening() -> None:
    stacks = [AliveStack(frames=(USER,), step=s, bytes=1000, blocks=1, allocator="MALLOC", own=False)
              for s in (2, 3, 4, 5)]
    stacks.append(AliveStack(frames=(), step=None, bytes=99, blocks=1, allocator="MALLOC", own=True))
    long = survivors_by_step(trace(stacks, model=None))
    mine = long[(long["subject"] == "service.agents.new_agent:42") & (long["metric"] == "survivor_bytes")]
    assert mine["step"].tolist() == [2, 3, 4, 5, 6]
    assert mine["value"].tolist() == [0, 1000, 2000, 3000, 4000]
    total = long[(long["subject"] == "(all sites)") & (long["metric"] == "survivor_bytes")]
    assert total["value"].iloc[-1] == 4000  # tokdiag's own loop is not the workload's


# -- the child process under memray ---------------------------------------------------------------------

needs_memray = pytest.mark.skipif(importlib.util.find_spec("memray") is None,
                                  reason="needs the native extra: pip install 'tokdiag[native]'")


@pytest.fixture()
def leak_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Workloads for the child, importable through PYTHONPATH (which the child inherits)."""
    (tmp_path / "native_leaks.py").write_text(textwrap.dedent("""
        import asyncio
        import ctypes
        import ctypes.util
        import socket

        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
        libc.strdup.restype, libc.strdup.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
        TEXT = b"x" * (64 * 1024 - 1)   # strdup copies it and its terminating zero: 64 KiB
        KEPT = []

        def grab(i):
            libc.malloc(64 * 1024)      # never freed; the pointer is dropped

        def copy_text(i):
            libc.strdup(TEXT)           # never freed

        def malloc_leak():
            def step(i):
                grab(i)
            return step

        def strdup_leak():
            def step(i):
                copy_text(i)
            return step

        def broken():
            def step(i):
                if i == 3:
                    raise RuntimeError("kaboom")
            return step

        def no_leak():
            def step(i):
                rows = [bytearray(1000) for _ in range(50)]
                index = {str(k): k for k in range(200)}
                return len(rows) + len(index)
            return step

        def async_leak():
            import anyio

            server = socket.create_server(("127.0.0.1", 0), backlog=64)   # connections wait in its backlog
            port = server.getsockname()[1]

            async def connect(i):
                KEPT.append(bytearray(30_000))
                stream = await anyio.connect_tcp("127.0.0.1", port)   # as httpx's async transport connects
                await stream.aclose()

            def step(i):
                asyncio.run(connect(i))
            step.server = server
            return step
    """))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    return "native_leaks"


@pytest.mark.slow
@needs_memray
def test_a_c_library_allocating_per_step_is_named_at_its_python_call_site(leak_module: str) -> None:
    # ctypes calls strdup, whose malloc memray sees: 64 KiB a step, never freed
    table = alive_by_site(f"{leak_module}:strdup_leak", steps=6, warmup=2)
    top = table.iloc[0]
    assert top["site"] == f"{leak_module}.copy_text" and top["owner"].startswith(f"{leak_module}.copy_text:")
    assert top["allocations"] == 6 and top["steps"] == 6
    assert top["bytes_per_step"] == pytest.approx(64 * 1024 + 16)  # glibc's chunk header and rounding
    assert table.attrs["steps"] == 6 and table.attrs["capture_bytes"] > 0 and table.attrs["read_s"] >= 0


@pytest.mark.slow
@needs_memray
def test_ctypes_malloc_that_memray_cannot_see_shows_as_unseen_heap_growth(leak_module: str) -> None:
    # libc.malloc called through ctypes jumps to glibc's malloc by the address dlsym gave, past the hooks
    # memray patches into each library: no stack records it, but glibc's heap grows by 64 KiB a step
    table = alive_by_site(f"{leak_module}:malloc_leak", steps=6, warmup=2)
    top = table.iloc[0]
    assert top["site"] == UNSEEN
    assert top["bytes_per_step"] == pytest.approx(64 * 1024 + 16, rel=0.02)
    assert table.iloc[1:]["bytes_per_step"].max() < 1024  # nothing else grows


@pytest.mark.slow
@needs_memray
def test_a_workload_that_does_not_leak_has_no_large_per_step_site(leak_module: str) -> None:
    table = alive_by_site(f"{leak_module}:no_leak", steps=8, warmup=2)
    assert table["bytes_per_step"].max() < 1024, table.head()  # it allocates ~70 KB a step and frees it


@pytest.mark.slow
@needs_memray
@pytest.mark.skipif(importlib.util.find_spec("anyio") is None, reason="needs anyio (jupyterlab and httpx use it)")
def test_every_step_is_found_after_anyio_connects(leak_module: str, tmp_path: Path) -> None:
    # on CPython 3.11 anyio.connect_tcp's frame returns without a call event; without the resync before each
    # step, memray's copy of the stack lost the step frame from the second step on (steps == 1 here)
    table = alive_by_site(f"{leak_module}:async_leak", steps=5, warmup=1, journal=tmp_path / "native.jsonl")
    leak = table[table["site"] == f"{leak_module}.connect"].iloc[0]
    assert leak["steps"] == 5 and leak["bytes_per_step"] >= 30_000
    run = td.load(tmp_path / "native.jsonl")
    assert set(run.timeline["probe"]) == {"native_trace"}  # survivor counts, not RSS
    assert set(run.timeline["metric"]) == {"survivor_bytes", "survivor_blocks"}
    series = run.series("native_trace", leak["subject"], "survivor_bytes")
    assert series.index.tolist() == [1, 2, 3, 4, 5, 6] and series.iloc[0] == 0 and series.is_monotonic_increasing
    assert run.verdicts().set_index(["subject", "metric"]).loc[(leak["subject"], "survivor_bytes"), "verdict"] == "leak"
    with pytest.raises(ConfigError, match="no process rss"):
        run.ledger()  # a memray run is not an RSS measurement: the ledger refuses it


@pytest.mark.slow
@needs_memray
def test_native_traces_name_the_c_function(leak_module: str, tmp_path: Path) -> None:
    capture = tmp_path / "kept.bin"
    table = alive_by_site(f"{leak_module}:strdup_leak", steps=3, warmup=1, native_traces=True, capture=capture)
    assert "strdup" in table.iloc[0]["native"]
    assert capture.stat().st_size > 0 and table.attrs["capture"] == str(capture)
    with pytest.raises(ConfigError, match="already exists"):
        alive_by_site(f"{leak_module}:strdup_leak", steps=3, capture=capture)


def test_bad_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="steps=0"):
        alive_by_site("tokdiag_workloads.agents:agent_workload", steps=0)
    with pytest.raises(ConfigError, match="warmup=-1"):
        alive_by_site("tokdiag_workloads.agents:agent_workload", warmup=-1)
    with pytest.raises(ConfigError, match="'nocolon'"):
        alive_by_site("nocolon")
    with pytest.raises(ConfigError, match="JSON"):
        alive_by_site("tokdiag_workloads.agents:agent_workload", {"x": object()})


@pytest.mark.slow
@needs_memray
def test_a_workload_error_is_raised_with_the_child_traceback(leak_module: str) -> None:
    with pytest.raises(TokdiagError, match="(?s)raised.*RuntimeError: kaboom"):
        alive_by_site(f"{leak_module}:broken", steps=4, warmup=1)


@pytest.mark.slow
@needs_memray
def test_a_factory_that_cannot_be_found_says_so() -> None:
    with pytest.raises(TargetError, match="did you mean 'agent_workload'"):
        alive_by_site("tokdiag_workloads.agents:agent_workloadd", steps=1)


@pytest.mark.slow
def test_missing_memray_is_an_error_with_the_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "memray.py").write_text("raise ImportError('memray hidden by the test')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    with pytest.raises(TokdiagError, match=r"pip install 'tokdiag\[native\]'"):
        alive_by_site("tokdiag_workloads.agents:agent_workload", steps=1)


# -- the real case --------------------------------------------------------------------------------------


@pytest.fixture()
def offline_aworld(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """AWorld's new-agent-per-task workload in the child, with every non-loopback connection refused."""
    (tmp_path / "offline_aworld.py").write_text(textwrap.dedent("""
        import ipaddress
        import socket

        def _loopback(address):
            host = address[0] if isinstance(address, tuple) else address
            try:
                return ipaddress.ip_address(host).is_loopback
            except ValueError:
                return host == "localhost"

        def new_agent_per_task():
            connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo
            def guarded_connect(sock, address):
                if sock.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address):
                    raise OSError(f"test guard: connection to {address!r} refused")
                return connect(sock, address)
            def guarded_getaddrinfo(host, *args, **kwargs):
                if not _loopback((host,)):
                    raise socket.gaierror(f"test guard: DNS lookup of {host!r} refused")
                return getaddrinfo(host, *args, **kwargs)
            socket.socket.connect, socket.getaddrinfo = guarded_connect, guarded_getaddrinfo
            from tokdiag_workloads.aworld import agent_step
            return agent_step()
    """))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    return "offline_aworld:new_agent_per_task"


@pytest.mark.slow
@needs_memray
@pytest.mark.skipif(importlib.util.find_spec("aworld") is None, reason="needs the aworld extra")
def test_aworld_new_agent_per_task_grows_by_its_ssl_contexts(offline_aworld: str) -> None:
    table = alive_by_site(offline_aworld, steps=3, warmup=2)
    top = table.iloc[0]
    assert top["site"] == "ssl.create_default_context"
    assert top["owner"].startswith("tokdiag_workloads.aworld.") and top["steps"] == 3
    assert "httpx._config.create_ssl_context" in top["stack_summary"]
    assert top["bytes_per_step"] > 1_000_000  # two contexts per agent, each with a parsed CA bundle
    assert top["share"] > 0.5
