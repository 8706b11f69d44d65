"""A Starlette app under uvicorn for the middleware test; run as ``python asgi_service.py KEEP JOURNAL``.

``KEEP``: ``leak`` keeps one ``LeakRecord`` per request in a module dict,
``clean`` drops it. The recorder (``td.record(per="request")``) starts and
stops with the app's lifespan, behind :class:`ASGIMiddleware`. Binds
127.0.0.1 on a free port, prints it, serves ``GET /work`` and
``GET /threads`` until SIGTERM (uvicorn's graceful shutdown).
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

import tokdiag as td
from tokdiag.recording.middleware import ASGIMiddleware


class LeakRecord:
    """What one request makes: kept forever by the leaking service."""

    def __init__(self, i: int) -> None:
        self.i = i
        self.payload = bytearray(2048)


KEPT: dict[int, LeakRecord] = {}
KEEP = sys.argv[1] == "leak"
_count = 0
recorder = td.record(sys.argv[2], per="request", every_s=30, every_requests=25, watch=["LeakRecord"], census=False)


async def work(request):
    global _count
    _count += 1
    made = LeakRecord(_count)
    if KEEP:
        KEPT[_count] = made
    return PlainTextResponse("ok")


async def threads(request):
    return JSONResponse(sorted(t.name for t in threading.enumerate()))


@contextlib.asynccontextmanager
async def lifespan(app):
    yield
    recorder.stop()


app = Starlette(routes=[Route("/work", work), Route("/threads", threads)], lifespan=lifespan,
                middleware=[Middleware(ASGIMiddleware, recorder=recorder)])

sock = socket.socket()
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on")).run(sockets=[sock])
