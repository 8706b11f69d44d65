"""Which processes ``tokdiag attach`` may attach to, checked from outside: Python version, children, paths.

:func:`find_targets` inspects each pid (and its Python children) through
``/proc`` (:func:`tokdiag.recording.target_process.inspect_target`);
:func:`check_versions` refuses a target whose CPython minor version differs
from this one's.
"""

from __future__ import annotations

import socket
import struct
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokdiag.errors import AttachError

__all__ = ["check_versions", "find_targets", "import_paths", "peer_pid"]

_IGNORED_CHILDREN = ("multiprocessing.resource_tracker", "multiprocessing.semaphore_tracker",
                     "multiprocessing.forkserver")


def _version(v: Sequence[int] | None) -> str:
    return "older than 3.11" if v is None else ".".join(map(str, v[:3]))


def check_versions(target: Any) -> None:
    from tokdiag.recording.target_process import SUPPORTED

    here = sys.version_info[:2]
    if here not in SUPPORTED:
        raise AttachError(f"tokdiag attach runs on Python {here[0]}.{here[1]}; it needs 3.11-3.13 for now (3.14's "
                          "sys.remote_exec is not used yet): run it with a 3.11-3.13 interpreter matching the "
                          "service's, or record from inside the service with td.record(...)")
    there = target.python
    if there is None or there[:2] not in SUPPORTED:
        raise AttachError(f"pid {target.pid} runs Python {_version(there)}; tokdiag attach supports 3.11-3.13 for now: "
                          "record from inside the service with td.record(...) instead")
    if there[:2] != here:
        raise AttachError(
            f"pid {target.pid} runs Python {_version(there)}, tokdiag attach runs on "
            f"{_version(tuple(sys.version_info[:3]))}: "
            "both must be the same minor version (the recorder imports tokdiag and its compiled parts into the "
            f"service); run attach with the service's interpreter, e.g. {target.exe} -m tokdiag attach "
            f"{target.pid} ... (with tokdiag installed for it)")


def find_targets(pids: Sequence[int], *, children: bool = True) -> list[Any]:
    """The processes to attach to: each of ``pids`` that runs Python and, with ``children``, its Python children."""
    import psutil

    from tokdiag.recording.target_process import inspect_target

    found: dict[int, Any] = {}
    for pid in pids:
        family: list[int] = []
        if children:
            try:
                family = [c.pid for c in psutil.Process(pid).children(recursive=True)]
            except psutil.Error:
                family = []
        try:
            target = inspect_target(pid)
        except AttachError as exc:
            if "is not a Python process" not in str(exc) or not family:
                raise
            target = None
        if target is not None:
            found.setdefault(pid, target)
        for child in family:
            try:
                t = inspect_target(child)
            except AttachError:
                continue  # not Python (a shell, a compiler), or gone
            if any(k in t.cmdline for k in _IGNORED_CHILDREN):
                continue
            found.setdefault(child, t)
        if target is None and not any(c in found for c in family):
            raise AttachError(f"pid {pid} is not a Python process and has no Python child process; pass the pid "
                              "of the Python interpreter running the service")
    return list(found.values())


def peer_pid(conn: socket.socket) -> int:
    pid, _uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                           struct.calcsize("3i")))
    return int(pid)


def import_paths() -> list[str]:
    """Where the target finds tokdiag and its dependencies if its own environment lacks them: ours."""
    root = str(Path(__file__).resolve().parents[2])
    paths = [root]
    for key in ("purelib", "platlib"):
        p = sysconfig.get_paths().get(key)
        if p and p not in paths:
            paths.append(p)
    return paths
