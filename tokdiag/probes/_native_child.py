"""Measure the native bytes of one kind of object in a fresh interpreter
(run by ``tokdiag.probes.calibration.calibrate``).

Run as a script (``python -P _native_child.py ssl <cafile|-> <n>`` or
``... tiktoken <tokens> <n>``): it imports nothing from tokdiag, so the
process holds only what the measurement needs. It makes a few objects first
(their one-off costs: code paths, caches, OpenSSL's error strings), then
``n`` more, and prints one JSON line with the bytes per object: glibc's heap
in use (``mallinfo2``: ``uordblks + hblkhd``) when it can, else ``RssAnon``,
and ``RssAnon`` too for comparison.
"""

from __future__ import annotations

import ctypes
import gc
import json
import random
import sys
from typing import Any

CL100K_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
                  r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s""")
"""tiktoken's cl100k_base split pattern (tiktoken_ext/openai_public.py): the regex compiled into every Encoding."""

WARMUP = 3


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _mallinfo2() -> Any:
    try:
        f = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    f.restype = _Mallinfo2
    f.argtypes = []
    return f


_MALLINFO2 = _mallinfo2()


def rss_anon() -> int:
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(b"RssAnon:"):
                return int(line.split()[1]) * 1024
    raise OSError("no RssAnon in /proc/self/status")


def heap_in_use() -> int | None:
    if _MALLINFO2 is None:
        return None
    m = _MALLINFO2()
    return int(m.uordblks + m.hblkhd)


def synthetic_ranks(n: int, seed: int = 0) -> dict[bytes, int]:
    """``n`` BPE tokens: the 256 single bytes, then random byte strings of cl100k-like lengths (mean ~7)."""
    rng = random.Random(seed)
    ranks = {bytes([i]): i for i in range(256)}
    while len(ranks) < n:
        length = min(1 + int(rng.expovariate(1 / 6)), 40)
        ranks.setdefault(rng.randbytes(length), len(ranks))
    return ranks


def _make(kind: str, arg: str) -> Any:
    if kind == "ssl":
        import ssl

        if arg == "-":
            return lambda: ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        return lambda: ssl.create_default_context(cafile=arg)
    if kind == "tiktoken":
        import tiktoken

        ranks = synthetic_ranks(int(arg))
        special = {"<|endoftext|>": len(ranks)}
        return lambda: tiktoken.Encoding(f"calibration-{len(ranks)}", pat_str=CL100K_PATTERN,
                                         mergeable_ranks=ranks, special_tokens=special)
    raise SystemExit(f"unknown kind {kind!r}")


def measure(kind: str, arg: str, n: int) -> dict[str, Any]:
    make = _make(kind, arg)
    warm = [make() for _ in range(WARMUP)]
    gc.collect()
    heap0, rss0 = heap_in_use(), rss_anon()
    made = [make() for _ in range(n)]
    gc.collect()
    heap1, rss1 = heap_in_use(), rss_anon()
    out: dict[str, Any] = {"kind": kind, "arg": arg, "n": n,
                           "rss_per": (rss1 - rss0) / n,
                           "heap_per": None if heap0 is None or heap1 is None else (heap1 - heap0) / n}
    if kind == "ssl":
        import _ssl

        out["certificates"] = _ssl._SSLContext.cert_store_stats(made[0])["x509"]
    del warm, made
    return out


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
