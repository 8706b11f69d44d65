"""A running process read from outside, without stopping it: what ``tokdiag attach`` needs to know first.

:func:`inspect_target` reads ``/proc/<pid>`` and the ELF symbol tables of
the target's interpreter: its Python version (``Py_Version``), the
addresses of the functions the injector calls, its owner. :func:`read_mem`
and :func:`write_mem` read and write its memory through ``/proc/<pid>/mem``;
:func:`permission_help` says how to get the right to ptrace it.
"""

from __future__ import annotations

import errno
import mmap as _mmap
import os
import platform
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

from tokdiag.errors import AttachError

__all__ = ["PAGE", "SUPPORTED", "Target", "inspect_target", "permission_help", "read_mem", "read_text", "write_mem"]

SUPPORTED = ((3, 11), (3, 12), (3, 13))
"""The CPython minor versions attach injects into."""

_EM_X86_64 = 62
PAGE = _mmap.PAGESIZE
"""The page size: the injector maps one page in the target."""

@dataclass(frozen=True)
class Target:
    """What attach needs to know about a process, read without stopping it."""

    pid: int
    exe: str
    cmdline: str
    python: tuple[int, int, int] | None
    """``(major, minor, micro)`` from the target's ``Py_Version``; None when it has none (Python < 3.11)."""
    symbols: dict[str, int]
    """Addresses in the target: ``Py_AddPendingCall``, ``PyRun_SimpleString``, ``Py_Version``, ``mmap``."""
    uid: int


@dataclass(frozen=True)
class _Mapping:
    start: int
    offset: int
    path: str


def read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as fh:
        return fh.read()


def _mappings(pid: int) -> list[_Mapping]:
    out = []
    for line in read_text(f"/proc/{pid}/maps").splitlines():
        parts = line.split(None, 5)
        if len(parts) < 6 or not parts[5].startswith("/"):
            continue
        start = int(parts[0].split("-", 1)[0], 16)
        out.append(_Mapping(start, int(parts[2], 16), parts[5]))
    return out


def _elf_symbols(path: str, wanted: set[str]) -> tuple[int, int, dict[str, int]]:
    """``(e_type, first PT_LOAD vaddr, {name: st_value})`` of the defined dynamic symbols in ``wanted``."""
    with open(path, "rb") as fh, _mmap.mmap(fh.fileno(), 0, access=_mmap.ACCESS_READ) as m:
        if m[:4] != b"\x7fELF" or m[4] != 2 or m[5] != 1:
            return 0, 0, {}
        e_type, e_machine = struct.unpack_from("<HH", m, 16)
        if e_machine != _EM_X86_64:
            return 0, 0, {}
        e_phoff, e_shoff = struct.unpack_from("<QQ", m, 32)
        e_phentsize, e_phnum, e_shentsize, e_shnum = struct.unpack_from("<HHHH", m, 54)
        first_load = 0
        for i in range(e_phnum):
            p_type, _flags, _off, p_vaddr = struct.unpack_from("<IIQQ", m, e_phoff + i * e_phentsize)
            if p_type == 1:  # PT_LOAD
                first_load = p_vaddr & ~(PAGE - 1)
                break
        sections = [struct.unpack_from("<IIQQQQIIQQ", m, e_shoff + i * e_shentsize) for i in range(e_shnum)]
        found: dict[str, int] = {}
        targets = {name.encode() + b"\0": name for name in wanted}
        for sh in sections:
            if sh[1] != 11:  # SHT_DYNSYM
                continue
            str_off = sections[sh[6]][4]
            sym_off, sym_size = sh[4], sh[5]
            for st_name, _info, _other, st_shndx, st_value, _size in struct.iter_unpack(
                    "<IBBHQQ", m[sym_off:sym_off + sym_size]):
                if st_shndx == 0 or not st_value:
                    continue
                for key, name in targets.items():
                    if m[str_off + st_name:str_off + st_name + len(key)] == key:
                        found.setdefault(name, st_value)
        return e_type, first_load, found


def _symbols_of(pid: int, maps: list[_Mapping], path: str, wanted: set[str]) -> dict[str, int]:
    """Addresses in process ``pid`` of ``wanted`` symbols defined by the object mapped from ``path``."""
    starts = [m.start for m in maps if m.path == path and m.offset == 0]
    if not starts:
        return {}
    for candidate in (f"/proc/{pid}/root{path}", path):
        try:
            e_type, first_load, found = _elf_symbols(candidate, wanted)
            break
        except (OSError, ValueError, struct.error):
            continue
    else:
        return {}
    bias = 0 if e_type == 2 else starts[0] - first_load  # ET_EXEC is not relocated
    return {name: bias + value for name, value in found.items()}


def read_mem(pid: int, address: int, size: int) -> bytes:
    fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    try:
        return os.pread(fd, size, address)
    finally:
        os.close(fd)


def write_mem(pid: int, address: int, data: bytes) -> None:
    fd = os.open(f"/proc/{pid}/mem", os.O_RDWR)
    try:
        if os.pwrite(fd, data, address) != len(data):
            raise OSError(errno.EIO, f"short write at {address:#x}")
    finally:
        os.close(fd)

def permission_help(pid: int, uid: int) -> str:
    me = os.geteuid()
    scope = None
    try:
        scope = read_text("/proc/sys/kernel/yama/ptrace_scope").strip()
    except OSError:
        pass
    tracer = ""
    try:
        for line in read_text(f"/proc/{pid}/status").splitlines():
            if line.startswith("TracerPid:") and line.split()[1] != "0":
                tracer = line.split()[1]
    except OSError:
        pass
    if tracer:
        return (f"pid {pid} is already being traced by pid {tracer} (a debugger or profiler); detach it first, "
                "only one tracer can attach at a time")
    parts = [f"tokdiag runs as uid {me}, pid {pid} as uid {uid}"]
    if me != 0 and me != uid:
        parts.append(f"run tokdiag attach as uid {uid} (the service's user) or as root")
    if scope is not None and scope != "0" and me != 0:
        meaning = {"1": "only a parent may trace its children", "2": "only CAP_SYS_PTRACE may trace",
                   "3": "nobody may trace"}.get(scope, "restricted")
        parts.append(f"/proc/sys/kernel/yama/ptrace_scope is {scope} ({meaning}): run as root (or with "
                     "CAP_SYS_PTRACE), or `sudo sysctl kernel.yama.ptrace_scope=0`")
    parts.append("in a container, start it with --cap-add=SYS_PTRACE (and a seccomp profile that allows ptrace)")
    return "; ".join(parts)


def inspect_target(pid: int) -> Target:
    """Read what attach needs about ``pid``; :class:`AttachError` when it cannot be attached to, with the fix."""
    if sys.platform != "linux":
        raise AttachError(f"tokdiag attach runs on Linux only (this is {sys.platform}); run the service under "
                          "td.record(...) instead, which works everywhere")
    if platform.machine() not in ("x86_64", "AMD64"):
        raise AttachError(f"tokdiag attach supports x86-64 Linux for now (this machine is {platform.machine()}); "
                          "use td.record(...) in the service instead")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise AttachError(f"pid={pid!r}: pass the process id of a running Python service, e.g. 12345")
    if pid == os.getpid():
        raise AttachError(f"pid {pid} is this tokdiag process itself; to record this process use td.record(...)")
    try:
        status = read_text(f"/proc/{pid}/status")
    except FileNotFoundError:
        raise AttachError(f"no process with pid {pid}; check the id (e.g. `pgrep -af python`)") from None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    uid = int(fields.get("Uid", "0").split()[1])  # effective uid
    tgid = fields.get("Tgid", str(pid)).strip()
    if tgid != str(pid):
        raise AttachError(f"{pid} is a thread of process {tgid}, not a process; pass {tgid}")
    if fields.get("State", "").strip().startswith(("Z", "X")):
        raise AttachError(f"pid {pid} has exited (it is a zombie waiting for its parent); nothing to attach to")
    if "shstk" in fields.get("x86_Thread_features", ""):
        raise AttachError(f"pid {pid} runs with a CET shadow stack, which tokdiag attach cannot inject into; use "
                          "td.record(...) in the service")
    try:
        cmdline = read_text(f"/proc/{pid}/cmdline").replace("\0", " ").strip()
        exe = os.readlink(f"/proc/{pid}/exe")
        maps = _mappings(pid)
    except PermissionError:
        raise AttachError(f"permission denied reading /proc/{pid}: {permission_help(pid, uid)}") from None
    except FileNotFoundError:
        raise AttachError(f"no process with pid {pid} (it exited); check the id (e.g. `pgrep -af python`)") from None
    python_objects = [exe] + sorted({m.path for m in maps if Path(m.path).name.startswith("libpython3")})
    wanted = {"Py_AddPendingCall", "PyRun_SimpleString", "Py_Version"}
    symbols: dict[str, int] = {}
    for path in python_objects:
        found = _symbols_of(pid, maps, path, wanted)
        if "Py_AddPendingCall" in found and "PyRun_SimpleString" in found:
            symbols = found
            break
    if not symbols:
        raise AttachError(
            f"pid {pid} ({cmdline[:80] or exe}) is not a Python process: neither its executable nor a mapped "
            "libpython3 exports the Python C API; pass the pid of the Python interpreter running the service "
            "(with several workers, their parent's pid or each worker's)")
    libc = sorted({m.path for m in maps if Path(m.path).name.startswith(("libc.so", "libc-", "ld-musl"))})
    for path in libc:
        mm = _symbols_of(pid, maps, path, {"mmap"})
        if "mmap" in mm:
            symbols["mmap"] = mm["mmap"]
            break
    else:
        raise AttachError(f"pid {pid}: no C library with mmap is mapped ({libc or 'none found'}); tokdiag attach "
                          "needs a dynamically linked glibc or musl")
    version = None
    if "Py_Version" in symbols:
        try:
            raw = struct.unpack("<Q", read_mem(pid, symbols["Py_Version"], 8))[0]
        except PermissionError:
            raise AttachError(f"permission denied reading the memory of pid {pid}: {permission_help(pid, uid)}") \
                from None
        except OSError as exc:
            raise AttachError(f"cannot read the memory of pid {pid}: {exc.strerror}; {permission_help(pid, uid)}") \
                from None
        version = ((raw >> 24) & 0xFF, (raw >> 16) & 0xFF, (raw >> 8) & 0xFF)
    return Target(pid=pid, exe=exe, cmdline=cmdline, python=version, symbols=symbols, uid=uid)
