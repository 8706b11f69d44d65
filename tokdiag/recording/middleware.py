"""ASGI and WSGI middleware that count requests as the steps of a recorder, so verdicts read "per request".

ASGI (Starlette, FastAPI, any ASGI app; uvicorn, hypercorn)::

    import tokdiag as td
    from tokdiag.recording.middleware import ASGIMiddleware

    rec = td.record("service-{pid}.jsonl", per="request", every_s=60, watch=["RewardAgent"])
    app.add_middleware(ASGIMiddleware, recorder=rec)      # Starlette / FastAPI
    # or: app = ASGIMiddleware(app, rec)                   # any ASGI app
    # at shutdown (lifespan): rec.stop()

WSGI (Flask, Django, any WSGI app; gunicorn, wsgiref)::

    from tokdiag.recording.middleware import WSGIMiddleware
    app = WSGIMiddleware(app, td.record("service-{pid}.jsonl", per="request"))

A request is counted when its response is done: for ASGI when the app
returns from an ``http`` scope (websocket and lifespan scopes are not
requests), for WSGI when the server closes the response iterable, as
PEP 3333 requires it to (or when the app raises). The count is one locked
integer increment; snapshots are taken on the recorder's own thread, never
in a request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tokdiag.errors import ConfigError
from tokdiag.recording.recorder import Recorder

__all__ = ["ASGIMiddleware", "WSGIMiddleware"]


def _check(recorder: Any, what: str) -> Recorder:
    if type(recorder) is not Recorder:
        raise ConfigError(f"{what}(recorder={recorder!r}): pass the recorder td.record(..., per='request') returned")
    if recorder.per != "request":
        raise ConfigError(f"{what}: the recorder counts steps per {recorder.per!r}; start it with "
                          "td.record(..., per='request') so that requests are its steps")
    return recorder


class ASGIMiddleware:
    """Count every finished HTTP request of ``app`` as one step of ``recorder``."""

    def __init__(self, app: Callable[..., Any], recorder: Recorder) -> None:
        self.app = app
        self.recorder = _check(recorder, "ASGIMiddleware")

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.recorder.count_request()


class WSGIMiddleware:
    """Count every finished request of the WSGI ``app`` as one step of ``recorder``."""

    def __init__(self, app: Callable[..., Iterable[bytes]], recorder: Recorder) -> None:
        self.app = app
        self.recorder = _check(recorder, "WSGIMiddleware")

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            body = self.app(environ, start_response)
        except BaseException:
            self.recorder.count_request()
            raise
        return _Counted(body, self.recorder)


class _Counted:
    """The app's response iterable; counts the request when the server closes it."""

    def __init__(self, body: Iterable[bytes], recorder: Recorder) -> None:
        self._body = body
        self._recorder = recorder
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            close = getattr(self._body, "close", None)  # the WSGI protocol: the app's iterable may have close()
            if close is not None:
                close()
        finally:
            self._recorder.count_request()
