"""A standard-library WSGI service for the service tests; run as ``python wsgi_service.py KEEP MODE [JOURNAL]``.

``KEEP``: ``leak`` keeps one ``LeakRecord`` per request in a module dict,
``clean`` drops it. ``MODE``: ``plain`` (no tokdiag: ``tokdiag attach``
finds it), ``record`` (``td.record`` every second) or ``middleware``
(``td.record(per="request")`` behind the WSGI middleware), both writing
``JOURNAL``. Prints its port, serves ``GET /work`` (one request's work) and
``GET /threads`` (the names of its threads, as JSON) until SIGTERM, then
stops its recorder and exits.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server


class LeakRecord:
    """What one request makes: kept forever by the leaking service."""

    def __init__(self, i: int) -> None:
        self.i = i
        self.payload = bytearray(2048)


KEPT: dict[int, LeakRecord] = {}
KEEP = sys.argv[1] == "leak"
MODE = sys.argv[2]
_count = 0


def app(environ, start_response):
    global _count
    if environ["PATH_INFO"] == "/threads":
        body = json.dumps(sorted(t.name for t in threading.enumerate())).encode()
    else:
        _count += 1
        made = LeakRecord(_count)
        if KEEP:
            KEPT[_count] = made
        body = b"ok"
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


recorder = None
if MODE in ("record", "middleware"):
    import tokdiag as td

    if MODE == "record":
        recorder = td.record(sys.argv[3], every_s=1, watch=["LeakRecord"], census=False)
    else:
        from tokdiag.recording.middleware import WSGIMiddleware

        recorder = td.record(sys.argv[3], per="request", every_s=30, every_requests=25, watch=["LeakRecord"],
                             census=False)
        app = WSGIMiddleware(app, recorder)


server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
# SIGTERM: finish the request in hand, then leave serve_forever (shutdown() waits for it: another thread)
signal.signal(signal.SIGTERM, lambda signum, frame: threading.Thread(target=server.shutdown).start())
print(server.server_port, flush=True)
try:
    server.serve_forever(poll_interval=0.2)
finally:
    server.server_close()
    if recorder is not None:
        recorder.stop()
