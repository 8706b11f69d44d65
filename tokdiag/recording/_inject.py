"""Queue one string of Python code to run in another CPython process (x86-64 Linux, CPython 3.11-3.13).

How, in one ptrace session of a few milliseconds:

1. find ``Py_AddPendingCall``, ``PyRun_SimpleString`` and ``Py_Version`` in
   the target's python executable or ``libpython3.X.so`` (its ELF dynamic
   symbols plus the load address from ``/proc/PID/maps``), and ``mmap`` in
   its libc; read ``Py_Version`` through ``/proc/PID/mem``;
2. ``PTRACE_SEIZE`` + ``PTRACE_INTERRUPT`` the main thread only (the others
   keep running), save its registers and its whole XSAVE area (the size the
   kernel reports, AMX tiles included);
3. call ``mmap`` in it for one private page, write the code there, and call
   ``Py_AddPendingCall(PyRun_SimpleString, page)``; each call returns to
   address 0, whose fault stops the thread for us, and is then undone;
4. restore the registers and the XSAVE area exactly (an interrupted system
   call restarts as the kernel intends) and detach.

The code then runs in the main thread at the interpreter's next check of
its eval breaker, with the GIL held, between two bytecodes: the moment a
Python signal handler would run, and the contract of Python 3.14's
``sys.remote_exec``. Nothing Python runs in a thread stopped at an
arbitrary instruction (where the heap or the gc lists can be half updated);
only ``mmap`` (a system call) and ``Py_AddPendingCall`` (documented as safe
without the GIL, from any thread) are called there. If the main thread
never runs bytecode again (blocked in one long C call) the code never runs.

Why not gdb, as ``memray attach`` does: Debian 12's gdb 13.1 cannot call a
function in a process on CPUs with AMX (Sapphire Rapids and later Xeons):
it writes a 2,696-byte XSAVE area where the kernel requires its full size
(11,008 bytes with AMX tiles), ``PTRACE_SETREGSET`` fails with EFAULT
("Couldn't write extended state status: Bad address"), and the half-made
call leaves the interrupted system call unrestartable: the target dies with
``OSError: [Errno 514]``. Measured on the development machine; gdb 15 and
later size the area from CPUID.

The page (4 KiB) stays mapped in the target: freeing it would need a second
session. Every failure raises :class:`~tokdiag.errors.AttachError` naming
the cause and the fix; a failure after the thread was stopped restores it
first.
"""
from __future__ import annotations

import ctypes
import os
import signal
import struct
import time

from tokdiag.errors import AttachError
from tokdiag.recording.target_process import PAGE, SUPPORTED, Target, inspect_target, permission_help, write_mem

__all__ = ["SUPPORTED", "Target", "inspect_target", "queue_code"]


_PTRACE_CONT = 7
_PTRACE_GETREGS = 12
_PTRACE_SETREGS = 13
_PTRACE_DETACH = 17
_PTRACE_GETREGSET = 0x4204
_PTRACE_SETREGSET = 0x4205
_PTRACE_SEIZE = 0x4206
_PTRACE_INTERRUPT = 0x4207
_PTRACE_EVENT_STOP = 128
_NT_PRFPREG = 2
_NT_X86_XSTATE = 0x202
_WALL = 0x40000000
_RETURN_ADDRESS = 0  # a called function returns here: the fault stops the thread
_STOP_TIMEOUT_S = 5.0


class _Regs(ctypes.Structure):
    """``struct user_regs_struct`` of x86-64 Linux."""

    _fields_ = [(name, ctypes.c_ulonglong) for name in (
        "r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs eflags rsp ss "
        "fs_base gs_base ds es fs gs").split()]


class _IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


_libc: ctypes.CDLL | None = None


def _ptrace(request: int, pid: int, addr: int | None, data: object) -> int:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.ptrace.restype = ctypes.c_long
        _libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    ctypes.set_errno(0)
    r = _libc.ptrace(request, pid, addr, data)
    if r == -1 and ctypes.get_errno():
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(r)


# -- the ptrace session ------------------------------------------------------------------------

def _wait_stop(tid: int, timeout: float) -> int:
    """The wait status of ``tid``'s next stop; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.0002
    while True:
        try:
            got, status = os.waitpid(tid, os.WNOHANG | _WALL)
        except ChildProcessError:
            raise AttachError(f"pid {tid} vanished while tokdiag was attached to it") from None
        if got:
            if os.WIFEXITED(status) or os.WIFSIGNALED(status):
                raise AttachError(f"pid {tid} exited while tokdiag was attached to it (status {status:#x})")
            return status
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(delay)
        delay = min(delay * 2, 0.01)


class _Session:
    """One thread of the target, stopped; undone by :meth:`close` whatever happened."""

    def __init__(self, tid: int) -> None:
        self.tid = tid
        self.pending_signals: list[int] = []
        self._seized = False
        self._saved: _Regs | None = None
        self._xstate: ctypes.Array[ctypes.c_char] | None = None
        self._xstate_len = 0
        self._xstate_note = _NT_X86_XSTATE

    def stop(self) -> None:
        _ptrace(_PTRACE_SEIZE, self.tid, None, None)
        self._seized = True
        _ptrace(_PTRACE_INTERRUPT, self.tid, None, None)
        try:
            status = _wait_stop(self.tid, _STOP_TIMEOUT_S)
        except TimeoutError:
            raise AttachError(f"pid {self.tid} did not stop within {_STOP_TIMEOUT_S:.0f} s of PTRACE_INTERRUPT "
                              "(is it in uninterruptible sleep, state D?); try again") from None
        if status >> 16 != _PTRACE_EVENT_STOP:
            # a signal arrived first: this stop serves as well; the signal is delivered when we leave
            self.pending_signals.append(os.WSTOPSIG(status))
        regs = _Regs()
        _ptrace(_PTRACE_GETREGS, self.tid, None, ctypes.addressof(regs))
        self._saved = regs
        buf = ctypes.create_string_buffer(1 << 16)
        iov = _IOVec(ctypes.cast(buf, ctypes.c_void_p), len(buf))
        try:
            _ptrace(_PTRACE_GETREGSET, self.tid, _NT_X86_XSTATE, ctypes.addressof(iov))
        except OSError:  # no XSAVE: the legacy FXSAVE area
            self._xstate_note = _NT_PRFPREG
            iov = _IOVec(ctypes.cast(buf, ctypes.c_void_p), 512)
            _ptrace(_PTRACE_GETREGSET, self.tid, _NT_PRFPREG, ctypes.addressof(iov))
        self._xstate, self._xstate_len = buf, int(iov.len)

    def call(self, function: int, *args: int, timeout: float = _STOP_TIMEOUT_S) -> int:
        """Call ``function(*args)`` (integers and pointers) in the stopped thread; its return value."""
        assert self._saved is not None and len(args) <= 6
        regs = _Regs()
        ctypes.memmove(ctypes.addressof(regs), ctypes.addressof(self._saved), ctypes.sizeof(_Regs))
        sp = ((self._saved.rsp - 2048) & ~0xF) - 8  # below the red zone; 16-aligned at the callee's entry
        write_mem(self.tid, sp, struct.pack("<Q", _RETURN_ADDRESS))
        regs.rsp = sp
        regs.rip = function
        for name, value in zip(("rdi", "rsi", "rdx", "rcx", "r8", "r9"), args, strict=False):
            setattr(regs, name, value & 0xFFFFFFFFFFFFFFFF)
        regs.rax = 0
        regs.orig_rax = 0xFFFFFFFFFFFFFFFF  # not in a system call: the kernel must not restart one here
        regs.eflags &= ~0x400  # the ABI wants the direction flag clear
        _ptrace(_PTRACE_SETREGS, self.tid, None, ctypes.addressof(regs))
        _ptrace(_PTRACE_CONT, self.tid, None, None)
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = _wait_stop(self.tid, max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                _ptrace(_PTRACE_INTERRUPT, self.tid, None, None)
                _wait_stop(self.tid, _STOP_TIMEOUT_S)
                raise AttachError(f"a call injected into pid {self.tid} did not return within {timeout:.0f} s; "
                                  "it was undone, the process is as before; try again") from None
            sig = os.WSTOPSIG(status)
            if status >> 16 == _PTRACE_EVENT_STOP:  # the interrupt of stop(), or a group stop: go on
                _ptrace(_PTRACE_CONT, self.tid, None, None)
                continue
            _ptrace(_PTRACE_GETREGS, self.tid, None, ctypes.addressof(regs))
            if sig == 11 and regs.rip == _RETURN_ADDRESS:
                return int(regs.rax)
            if sig in (4, 7, 8, 11):  # SIGILL, SIGBUS, SIGFPE, SIGSEGV inside the call: undone by close()
                raise AttachError(f"a call injected into pid {self.tid} faulted (signal {sig} at {regs.rip:#x}); "
                                  "it was undone, the process is as before")
            self.pending_signals.append(sig)  # delivered after we leave
            _ptrace(_PTRACE_CONT, self.tid, None, None)

    def close(self) -> None:
        """Put the thread back as it was and let it go; signals that arrived meanwhile are delivered."""
        if not self._seized:
            return
        try:
            if self._saved is not None:
                _ptrace(_PTRACE_SETREGS, self.tid, None, ctypes.addressof(self._saved))
            if self._xstate is not None:
                iov = _IOVec(ctypes.cast(self._xstate, ctypes.c_void_p), self._xstate_len)
                _ptrace(_PTRACE_SETREGSET, self.tid, self._xstate_note, ctypes.addressof(iov))
        finally:
            first = self.pending_signals[0] if self.pending_signals else 0
            try:
                _ptrace(_PTRACE_DETACH, self.tid, None, first)
            except OSError:
                pass
            for sig in self.pending_signals[1:]:
                try:
                    os.kill(self.tid, sig)
                except OSError:
                    pass
            self._seized = False


def queue_code(target: Target, code: str) -> None:
    """Have ``target`` run ``PyRun_SimpleString(code)`` in its main thread at its next eval-breaker check.

    ``code`` must not raise (``PyRun_SimpleString`` would print the error;
    a ``SystemExit`` would end the process): wrap it in ``try/except
    BaseException``. Raises :class:`AttachError` naming the cause and the fix.
    """
    data = code.encode("utf-8") + b"\0"
    size = -(-len(data) // PAGE) * PAGE
    session = _Session(target.pid)
    # no Ctrl-C or SIGTERM in the middle of a call: they wait until the thread is restored (SIGKILL cannot be
    # held: killing this process during these milliseconds leaves the target in the injected call)
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        try:
            session.stop()
        except PermissionError:
            raise AttachError(f"ptrace of pid {target.pid} was refused: {permission_help(target.pid, target.uid)}") \
                from None
        except ProcessLookupError:
            raise AttachError(f"no process with pid {target.pid} (it exited)") from None
        page = session.call(target.symbols["mmap"], 0, size, 0x3, 0x22, 0xFFFFFFFFFFFFFFFF, 0)  # RW, PRIVATE|ANON
        if page >= 0xFFFFFFFFFFFFF001 or page == 0:
            raise AttachError(f"mmap of {size} bytes in pid {target.pid} failed (errno {(-page) & 0xFFF}); "
                              "is the process out of memory or address space?")
        write_mem(target.pid, page, data)
        queued = session.call(target.symbols["Py_AddPendingCall"], target.symbols["PyRun_SimpleString"], page)
        if queued & 0xFFFFFFFF:
            raise AttachError(f"pid {target.pid} refused the pending call (its queue of 32 is full, or the "
                              "interpreter is shutting down); try again in a moment")
    finally:
        try:
            session.close()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
