"""The memory limit a process runs under: its cgroup's, read from ``/proc`` and ``/sys/fs/cgroup``.

A container (Docker, Kubernetes, systemd) is OOM-killed when its cgroup's
memory passes the cgroup's limit: ``memory.max`` on cgroup v2,
``memory.limit_in_bytes`` on v1. :func:`memory_limit` finds that limit for a
process the way the kernel applies it: the lowest limit on the path from
the process' cgroup up to the root of the hierarchy (a parent's limit
bounds its children).

How the files are found
-----------------------
1. ``/proc/<pid>/cgroup`` names the process' cgroup: a v1 line
   ``N:memory:/path`` (controllers may be listed together,
   ``N:cpu,memory:/path``) or the v2 line ``0::/path``. When both are present
   (the hybrid layout) the v1 memory controller is the one that limits.
2. ``/proc/<pid>/mountinfo`` says where that hierarchy is mounted and which
   of its folders the mount shows (a container without its own cgroup
   namespace sees ``/docker/<id>`` mounted as the root of
   ``/sys/fs/cgroup/memory``). Without mountinfo the usual places are
   assumed: ``/sys/fs/cgroup/memory`` (v1) and ``/sys/fs/cgroup`` (v2).
3. From the cgroup's folder up to the mount point, every limit file that
   exists is read; the lowest wins. ``max`` (v2), or a v1 value of 2**60 or
   more (v1 writes ``PAGE_COUNTER_MAX`` pages, 9223372036854771712 on 4 KiB
   pages, for "no limit"), means no limit.

What it does not see: swap (``memory.swap.max``: with swap the kernel pages
out before it kills), ``memory.high`` (throttling, not a kill), and the
machine's own RAM when no cgroup limit is set. The cgroup counts every
process in it and the page cache they use, so a service that is one of
several processes in its container reaches the limit sooner than its own
RSS says.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["MemoryLimit", "header_entry", "memory_limit"]

_V1_UNLIMITED = 1 << 60
"""A v1 limit at or above this is "no limit" (the kernel writes PAGE_COUNTER_MAX pages)."""


@dataclass(frozen=True, slots=True)
class MemoryLimit:
    """A memory limit and where it came from.

    ``bytes`` is None when no limit is set (``max``). ``source`` names the
    file it was read from (``"cgroup v2 memory.max"``) or ``"given"``;
    ``cgroup`` is the cgroup path whose limit applies (the process' own or
    an ancestor's), as ``/proc/<pid>/cgroup`` names it.
    """

    bytes: int | None
    source: str
    cgroup: str = ""

    @property
    def unlimited(self) -> bool:
        return self.bytes is None

    def as_dict(self) -> dict[str, Any]:
        return {"bytes": self.bytes, "source": self.source, "cgroup": self.cgroup}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MemoryLimit:
        b = d.get("bytes")
        return cls(None if b is None else int(b), str(d.get("source", "")), str(d.get("cgroup", "")))


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as ``\\ooo`` octal."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        code = field[i + 1:i + 4]
        if field[i] == "\\" and len(code) == 3 and all(c in "01234567" for c in code):
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _mounts(text: str | None) -> tuple[tuple[str, str] | None, tuple[str, str] | None]:
    """``((v1 memory root, mount point), (v2 root, mount point))`` from mountinfo text; None where absent."""
    v1 = v2 = None
    for line in (text or "").splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 1:
            continue
        root, point, fstype = _unescape(fields[3]), _unescape(fields[4]), tail[0]
        options = tail[2].split(",") if len(tail) > 2 else []
        if fstype == "cgroup" and "memory" in options and v1 is None:
            v1 = (root, point)
        elif fstype == "cgroup2" and v2 is None:
            v2 = (root, point)
    return v1, v2


def _parse_value(text: str, version: int) -> int | None | str:
    """Bytes, None for no limit, or ``"bad"`` for a value that is not a limit."""
    value = text.strip()
    if version == 2 and value == "max":
        return None
    try:
        n = int(value)
    except ValueError:
        return "bad"
    if n < 0 or (version == 1 and n >= _V1_UNLIMITED):
        return None
    return n


def _lowest(base: Path, mount_root: str, cgroup: str, filename: str, version: int) -> tuple[int | None, str, bool]:
    """Lowest limit from the cgroup's folder up to the mount point: ``(bytes, cgroup path, any file found)``."""
    rel = cgroup
    if mount_root not in ("", "/"):
        if cgroup == mount_root or cgroup.startswith(mount_root.rstrip("/") + "/"):
            rel = cgroup[len(mount_root.rstrip("/")):]
        else:  # the mount shows another part of the hierarchy: only its own root can be read
            rel = "/"
    parts = [p for p in rel.split("/") if p]
    best: int | None = None
    where = ""
    found = False
    for depth in range(len(parts), -1, -1):
        folder = base.joinpath(*parts[:depth])
        text = _read(folder / filename)
        if text is None:
            continue
        value = _parse_value(text, version)
        if value == "bad":
            continue
        found = True
        if isinstance(value, int) and (best is None or value < best):
            best = value
            prefix = [p for p in mount_root.split("/") if p] if mount_root not in ("", "/") else []
            where = "/" + "/".join(prefix + parts[:depth])
    return best, where, found


def memory_limit(pid: int | str = "self", *, root: str | os.PathLike[str] = "/") -> MemoryLimit | None:
    """The cgroup memory limit of process ``pid``; None when it cannot be known (no cgroup files).

    ``MemoryLimit.bytes`` is None when the cgroup sets no limit. ``root``
    is prepended to every path read (``/proc``, ``/sys/fs/cgroup`` and the
    mount points mountinfo names), for tests and for reading a container's
    files from outside it. See the module docstring for the method.

    >>> lim = memory_limit()
    >>> lim is None or lim.bytes is None or lim.bytes > 0
    True
    """
    base = Path(root)
    proc = base / "proc" / str(pid)
    text = _read(proc / "cgroup")
    if text is None:
        return None
    v1_path = v2_path = None
    for line in text.splitlines():
        hier, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if "memory" in controllers.split(","):
            v1_path = path or "/"
        elif hier == "0" and controllers == "":
            v2_path = path or "/"
    v1_mount, v2_mount = _mounts(_read(proc / "mountinfo"))

    def under(point: str) -> Path:
        return base / point.lstrip("/")

    if v1_path is not None:
        mount_root, point = v1_mount or ("/", "/sys/fs/cgroup/memory")
        limit, where, found = _lowest(under(point), mount_root, v1_path, "memory.limit_in_bytes", 1)
        if found:
            return MemoryLimit(limit, "cgroup v1 memory.limit_in_bytes", where if limit is not None else v1_path)
    if v2_path is not None:
        mount_root, point = v2_mount or ("/", "/sys/fs/cgroup")
        limit, where, found = _lowest(under(point), mount_root, v2_path, "memory.max", 2)
        if found:
            return MemoryLimit(limit, "cgroup v2 memory.max", where if limit is not None else v2_path)
        if (under(point) / "cgroup.controllers").exists():
            # a v2 hierarchy without memory.max on the path: the memory controller limits nothing here
            return MemoryLimit(None, "cgroup v2 (no memory.max on the path)", v2_path)
    return None


def header_entry(pid: int | str = "self") -> dict[str, Any] | None:
    """:func:`memory_limit` as a JSON-able dict for a journal header (``memory_limit``); never raises."""
    try:
        lim = memory_limit(pid)
    except (OSError, ValueError):  # a measuring tool must not fail to start over odd cgroup files
        return None
    return None if lim is None else lim.as_dict()
