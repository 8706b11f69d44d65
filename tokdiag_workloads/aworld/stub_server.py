"""A local OpenAI-compatible chat-completions stub, for running real agents offline.

The stub binds ``127.0.0.1`` only, on a free port chosen by the kernel (port 0),
and answers with canned replies. It speaks just enough of the OpenAI HTTP API
for the ``openai`` client (and so AWorld's ``openai`` provider) to work:

- ``GET  /v1/models``: one model, :attr:`StubServer.model`.
- ``POST /v1/chat/completions``: a ``chat.completion`` with ``usage`` filled,
  or, when the request says ``"stream": true``, server-sent events
  (``chat.completion.chunk`` objects, then ``data: [DONE]``).
- Tool calls (``tool_calls=True``): when the request offers ``tools`` and the
  conversation holds no ``role: "tool"`` message yet, the reply is a call to
  the first offered tool (arguments filled from its JSON schema); once a tool
  result is in the conversation, the reply is the final answer.

Only the standard library is used (``http.server.ThreadingHTTPServer`` in a
daemon thread). The server stops, closes its socket and joins its thread when
the ``with`` block ends (or :meth:`StubServer.stop` is called)::

    with StubServer() as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="stub")
        client.chat.completions.create(model=srv.model, messages=[...])
        assert srv.request_count == 1

The stub keeps a request counter and only the last ``log_size`` request
summaries (a bounded deque), so a long tracked run does not grow the stub's
own memory.
"""

from __future__ import annotations

import collections
import http.server
import itertools
import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from tokdiag.errors import ConfigError

__all__ = ["StubRequest", "StubServer", "DEFAULT_REPLY", "HOST"]

HOST = "127.0.0.1"
"""The only address the stub ever binds."""

DEFAULT_REPLY = (
    "Score: 0.8. The trajectory reached the goal in three steps; "
    "the second step repeated a search that was not needed."
)

Reply = str | Callable[[dict[str, Any]], str]


@dataclass(frozen=True)
class StubRequest:
    """Summary of one request the stub answered (kept in a bounded log)."""

    method: str
    path: str
    model: str | None = None
    stream: bool = False
    n_messages: int = 0
    offered_tools: tuple[str, ...] = ()
    has_tool_result: bool = False
    answered_with: str = "none"  # "message", "tool_call", "models", "error"


def _words(value: Any) -> int:
    """A deterministic stand-in for a token count: whitespace-separated words."""
    if value is None:
        return 0
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_words(v.get("text") if isinstance(v, dict) else v) for v in value)
    return len(str(value).split())


def _example_arguments(schema: dict[str, Any]) -> dict[str, Any]:
    """Arguments that satisfy a tool's JSON schema well enough for a stub call."""
    props = schema.get("properties") or {}
    required = schema.get("required") or list(props)
    out: dict[str, Any] = {}
    for name in required:
        kind = (props.get(name) or {}).get("type", "string")
        out[name] = {
            "integer": 1,
            "number": 1.0,
            "boolean": True,
            "array": [],
            "object": {},
        }.get(kind, f"stub-{name}")
    return out


class StubServer:
    """OpenAI-compatible chat-completions stub on ``127.0.0.1``, free port.

    Args:
        stream: ``None`` (default) answers as the request asks (``"stream": true``
            gets server-sent events); ``True`` streams every chat completion;
            ``False`` never streams (a client that asked for a stream gets an
            HTTP 400 naming the option, so a misconfigured run fails loudly).
        tool_calls: answer the first request of a conversation that offers
            ``tools`` with a call to the first tool; answer with ``reply`` once a
            tool result is present.
        reply: the canned assistant text, or a callable taking the request body.
        model: the model id reported by ``/v1/models`` and in responses.
        chunk_words: words per streamed content chunk.
        log_size: how many request summaries :attr:`requests` keeps.

    Attributes:
        base_url: ``http://127.0.0.1:<port>/v1`` once started.
        request_count: requests answered so far (all paths).
    """

    def __init__(
        self,
        stream: bool | None = None,
        tool_calls: bool = False,
        *,
        reply: Reply = DEFAULT_REPLY,
        model: str = "stub-model",
        chunk_words: int = 4,
        log_size: int = 100,
    ) -> None:
        if chunk_words < 1:
            raise ConfigError(f"chunk_words={chunk_words!r} must be >= 1; pass e.g. chunk_words=4")
        if log_size < 0:
            raise ConfigError(f"log_size={log_size!r} must be >= 0; pass e.g. log_size=100")
        self.stream = stream
        self.tool_calls = tool_calls
        self.reply = reply
        self.model = model
        self.chunk_words = chunk_words
        self._log: collections.deque[StubRequest] = collections.deque(maxlen=log_size)
        self._count = 0
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> StubServer:
        """Bind ``127.0.0.1:0`` and serve in a daemon thread. Returns ``self``."""
        if self._httpd is not None:
            raise ConfigError("this StubServer is already running; use a new StubServer() or stop() it first")
        handler = _make_handler(self)
        httpd = http.server.ThreadingHTTPServer((HOST, 0), handler)
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"tokdiag-stub-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close the listening socket and join the thread. Idempotent."""
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout)

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the server thread is serving."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the server is bound to."""
        if self._httpd is None:
            raise ConfigError("the StubServer is not running; use `with StubServer() as srv:` or call start()")
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    @property
    def port(self) -> int:
        """The bound port."""
        return self.address[1]

    @property
    def base_url(self) -> str:
        """OpenAI ``base_url`` for clients: ``http://127.0.0.1:<port>/v1``."""
        host, port = self.address
        return f"http://{host}:{port}/v1"

    @property
    def request_count(self) -> int:
        """Requests answered so far."""
        with self._lock:
            return self._count

    @property
    def requests(self) -> list[StubRequest]:
        """The most recent request summaries (at most ``log_size``), oldest first."""
        with self._lock:
            return list(self._log)

    def _record(self, req: StubRequest) -> None:
        with self._lock:
            self._count += 1
            self._log.append(req)

    # -- responses ---------------------------------------------------------

    def _reply_text(self, body: dict[str, Any]) -> str:
        return self.reply(body) if callable(self.reply) else self.reply

    def _usage(self, body: dict[str, Any], completion: int) -> dict[str, int]:
        prompt = sum(_words(m.get("content")) for m in body.get("messages") or [] if isinstance(m, dict))
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _tool_call(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """The tool call to answer with, or None for a plain message."""
        if not self.tool_calls:
            return None
        tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("function")]
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        if not tools or any(m.get("role") == "tool" for m in messages):
            return None
        fn = tools[0]["function"]
        return {
            "id": f"call_stub_{next(self._ids)}",
            "type": "function",
            "function": {
                "name": fn.get("name", "tool"),
                "arguments": json.dumps(_example_arguments(fn.get("parameters") or {})),
            },
        }

    def completion(self, body: dict[str, Any]) -> tuple[dict[str, Any], StubRequest]:
        """The non-streamed ``chat.completion`` for a request body."""
        call = self._tool_call(body)
        if call is not None:
            message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
            finish, completion_tokens = "tool_calls", _words(call["function"]["arguments"])
        else:
            text = self._reply_text(body)
            message = {"role": "assistant", "content": text}
            finish, completion_tokens = "stop", _words(text)
        payload = {
            "id": f"chatcmpl-stub-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": self._usage(body, completion_tokens),
        }
        return payload, self._summary(body, stream=False, answered="tool_call" if call else "message")

    def chunks(self, body: dict[str, Any]) -> tuple[Iterator[dict[str, Any]], StubRequest]:
        """The ``chat.completion.chunk`` objects of a streamed answer."""
        call = self._tool_call(body)
        cid, created = f"chatcmpl-stub-{next(self._ids)}", int(time.time())
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
            out = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            }
            out.update(extra)
            return out

        def gen() -> Iterator[dict[str, Any]]:
            yield chunk({"role": "assistant", "content": ""})
            if call is not None:
                args = call["function"]["arguments"]
                yield chunk({"tool_calls": [{"index": 0, "id": call["id"], "type": "function",
                                             "function": {"name": call["function"]["name"], "arguments": ""}}]})
                yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": args}}]})
                finish, completion_tokens = "tool_calls", _words(args)
            else:
                words = self._reply_text(body).split(" ")
                for k in range(0, len(words), self.chunk_words):
                    piece = " ".join(words[k:k + self.chunk_words])
                    yield chunk({"content": piece if k == 0 else " " + piece})
                finish, completion_tokens = "stop", len(words)
            usage = self._usage(body, completion_tokens)
            if include_usage:
                yield chunk({}, finish)
                yield {"id": cid, "object": "chat.completion.chunk", "created": created,
                       "model": self.model, "choices": [], "usage": usage}
            else:
                yield chunk({}, finish, usage=usage)

        return gen(), self._summary(body, stream=True, answered="tool_call" if call else "message")

    def _summary(self, body: dict[str, Any], *, stream: bool, answered: str) -> StubRequest:
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        return StubRequest(
            method="POST",
            path="/v1/chat/completions",
            model=body.get("model"),
            stream=stream,
            n_messages=len(messages),
            offered_tools=tuple(
                str((t.get("function") or {}).get("name")) for t in body.get("tools") or [] if isinstance(t, dict)
            ),
            has_tool_result=any(m.get("role") == "tool" for m in messages),
            answered_with=answered,
        )


def _make_handler(server: StubServer) -> type[http.server.BaseHTTPRequestHandler]:
    """A request-handler class bound to one :class:`StubServer`."""

    class _Handler(http.server.BaseHTTPRequestHandler):
        # HTTP/1.0: one request per connection, so no idle keep-alive connection
        # outlives stop().
        protocol_version = "HTTP/1.0"
        server_version = "tokdiag-stub/1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            return  # quiet: the request log is server.requests

        def _send_json(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, path: str) -> None:
            server._record(StubRequest(method=self.command, path=path, answered_with="error"))
            self._send_json(status, {"error": {"message": message, "type": "invalid_request_error",
                                               "param": None, "code": None}})

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            path = self.path.split("?", 1)[0].rstrip("/")
            if path in ("/v1/models", "/models"):
                server._record(StubRequest(method="GET", path=path, answered_with="models"))
                self._send_json(200, {"object": "list", "data": [
                    {"id": server.model, "object": "model", "created": 0, "owned_by": "tokdiag"}]})
            else:
                self._error(404, f"no route GET {path}; the stub serves /v1/models and /v1/chat/completions", path)

        def do_POST(self) -> None:  # noqa: N802 - stdlib name
            path = self.path.split("?", 1)[0].rstrip("/")
            if path not in ("/v1/chat/completions", "/chat/completions"):
                self._error(404, f"no route POST {path}; the stub serves /v1/chat/completions", path)
                return
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("body is not a JSON object")
            except ValueError as exc:
                self._error(400, f"request body is not a JSON object: {exc}", path)
                return
            wants_stream = bool(body.get("stream"))
            if server.stream is False and wants_stream:
                self._error(400, "the request asked for a stream but the stub was started with stream=False; "
                                 "use StubServer(stream=None) or stream=True", path)
                return
            if wants_stream or server.stream:
                chunks, summary = server.chunks(body)
                server._record(summary)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                for c in chunks:
                    self.wfile.write(b"data: " + json.dumps(c).encode() + b"\n\n")
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
            else:
                payload, summary = server.completion(body)
                server._record(summary)
                self._send_json(200, payload)

    return _Handler
