"""The side of ``tokdiag attach`` that runs inside the service: the queued bootstrap and the recording thread.

:func:`queued_code` is the Python the injector queues in the target's main
thread (:mod:`tokdiag.recording._inject`): it starts the ``tokdiag-attach``
daemon thread, which connects back to the attaching command, imports
tokdiag and runs :func:`serve_attached`. Both sides speak JSON lines over the
socket (:class:`Channel`), protocol :data:`PROTOCOL`.
"""

from __future__ import annotations

import json
import select
import socket
import time
from typing import Any

__all__ = ["PROTOCOL", "Channel", "queued_code", "serve_attached"]

PROTOCOL = 2
"""Version of the attacher <-> target messages; both sides must agree (2: ``disk``, ``limit``, ``service``)."""

# The code queued in the target's main thread: define one function in a fresh namespace and start it on a
# daemon thread. It never raises (PyRun_SimpleString would print the error; a SystemExit would end the service).
_BOOTSTRAP = r'''
def _tokdiag_attach(sock_path, paths):
    import socket, sys
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(30)
        s.connect(sock_path)
    except BaseException:
        s.close()  # the attaching command is gone (it gave up waiting): do nothing
        return
    added = []
    try:
        import importlib.util
        if importlib.util.find_spec("tokdiag") is None:
            for p in paths:
                if p not in sys.path:
                    sys.path.append(p)
                    added.append(p)
        from tokdiag.recording.attach import serve_attached
        serve_attached(s)
    except BaseException as exc:
        try:
            import importlib.util, json
            try:
                origin = importlib.util.find_spec("tokdiag").origin
            except BaseException:
                origin = None
            s.sendall((json.dumps({"event": "error", "where": "import", "message": f"{type(exc).__name__}: {exc}",
                                   "tokdiag_file": origin, "added": added,
                                   "executable": sys.executable}) + "\n").encode())
        except BaseException:
            pass
    finally:
        for p in added:
            try:
                sys.path.remove(p)
            except ValueError:
                pass
        s.close()
import threading
threading.Thread(target=_tokdiag_attach, args=(SOCK, PATHS), name="tokdiag-attach", daemon=True).start()
'''


def queued_code(sock_path: str, paths: list[str]) -> str:
    body = _BOOTSTRAP.replace("(SOCK, PATHS)", f"({sock_path!r}, {paths!r})")
    return ("try:\n"
            f"    exec({body!r}, {{'__name__': '__tokdiag_attach__'}})\n"
            "except BaseException:\n"
            "    pass\n")


class Channel:
    """JSON lines over the attach socket (either side)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = b""
        self.closed = False

    def send(self, message: dict[str, Any]) -> None:
        try:
            self.sock.sendall((json.dumps(message, default=str) + "\n").encode())
        except OSError:
            self.closed = True

    def _lines(self) -> list[dict[str, Any]]:
        out = []
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    def read(self, timeout: float) -> list[dict[str, Any]] | None:
        """Messages that arrived within ``timeout`` ([] for none); None once the other side has closed."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN | select.POLLHUP | select.POLLERR)
        if not poller.poll(max(0, int(timeout * 1000))):
            return []
        try:
            data = self.sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return None
        self._buf += data
        return self._lines()

    def wait_stop(self, timeout: float) -> tuple[str, str] | None:
        """The recorder's ``wait``: a stop message, or the attacher's end of the socket closing, stops it."""
        messages = self.read(timeout)
        if messages is None:
            return ("detached", "the attaching command went away (killed, or its terminal closed); "
                                "recording stopped")
        for m in messages:
            if "stop" in m:
                return (str(m["stop"]), str(m.get("message", "")))
        return None


def serve_attached(sock: socket.socket) -> None:
    """Run in the target, on the thread the bootstrap started: take the options, record, report; return at the end.

    Never raises: every failure is sent to the attaching command.
    """
    chan = Channel(sock)
    try:
        cfg: dict[str, Any] | None = None
        deadline = time.monotonic() + 30
        while cfg is None and time.monotonic() < deadline:
            got = chan.read(deadline - time.monotonic())
            if got is None:
                return
            cfg = next((m for m in got if "protocol" in m), None)
        if cfg is None:
            return
        import tokdiag

        if cfg["protocol"] != PROTOCOL:
            chan.send({"event": "error", "where": "version",
                       "message": f"the service imports tokdiag {tokdiag.__version__} from {tokdiag.__file__}, "
                                  f"which speaks attach protocol {PROTOCOL}, not {cfg['protocol']}"})
            return
        from tokdiag.recording.recorder import Recorder

        rec = Recorder(cfg["journal"], every_s=cfg["every_s"], for_s=cfg["for_s"], watch=cfg["watch"],
                       caches=cfg["caches"], census=cfg["census"], budget_mb=cfg["budget_mb"], max_mb=cfg["max_mb"],
                       overhead=cfg["overhead"], overwrite=cfg["overwrite"], name=cfg["name"], epoch=cfg["epoch"],
                       disk=cfg["disk"] or None, limit=cfg["limit"],
                       params={"attached_by": cfg["attacher"], "service": cfg["service"]})
        rec.listener = chan.send
        rec.run(chan.wait_stop)
    except BaseException as exc:
        chan.send({"event": "error", "where": "start", "message": f"{type(exc).__name__}: {exc}"})
