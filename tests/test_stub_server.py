"""Behaviour of the local OpenAI-compatible stub (tokdiag_workloads.aworld.stub_server)."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import psutil
import pytest
from late_imports import lazy

from tokdiag.errors import ConfigError
from tokdiag_workloads.aworld.stub_server import StubServer

openai = lazy("openai")  # at first use, not at collection (tests/late_imports.py)

TOOLS = [{
    "type": "function",
    "function": {
        "name": "score_trajectory",
        "description": "Score a trajectory.",
        "parameters": {
            "type": "object",
            "properties": {"trajectory_id": {"type": "string"}, "steps": {"type": "integer"}},
            "required": ["trajectory_id", "steps"],
        },
    },
}]


def _client(srv: StubServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base_url, api_key="stub", max_retries=0, timeout=10)


def _listening_ips(port: int) -> set[str]:
    conns = psutil.Process().net_connections(kind="inet")
    return {c.laddr.ip for c in conns if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


def test_starts_binds_loopback_only_and_closes_port_on_exit() -> None:
    with StubServer() as srv:
        host, port = srv.address
        assert host == "127.0.0.1"
        assert srv.base_url == f"http://127.0.0.1:{port}/v1"
        assert srv.running
        assert _listening_ips(port) == {"127.0.0.1"}
    assert not srv.running
    assert _listening_ips(port) == set()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_stop_is_idempotent_and_address_needs_a_running_server() -> None:
    srv = StubServer().start()
    srv.stop()
    srv.stop()
    with pytest.raises(ConfigError, match="not running"):
        _ = srv.base_url


def test_models_and_plain_completion_parse_with_openai_client() -> None:
    with StubServer(reply="Score: 0.5 for this one") as srv:
        client = _client(srv)
        assert [m.id for m in client.models.list()] == [srv.model]
        resp = client.chat.completions.create(
            model=srv.model, messages=[{"role": "user", "content": "score trajectory 7 please"}])
        assert resp.choices[0].message.content == "Score: 0.5 for this one"
        assert resp.choices[0].finish_reason == "stop"
        assert resp.usage is not None
        assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (4, 5, 9)
        assert srv.request_count == 2
        assert [r.answered_with for r in srv.requests] == ["models", "message"]


def test_streaming_yields_chunks_then_done_and_usage() -> None:
    reply = "one two three four five six seven eight nine"
    with StubServer(reply=reply, chunk_words=2) as srv:
        stream = _client(srv).chat.completions.create(
            model=srv.model, messages=[{"role": "user", "content": "hi"}], stream=True,
            stream_options={"include_usage": True})
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == reply
        assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 5
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 9
        assert srv.requests[-1].stream is True


def test_raw_sse_ends_with_done() -> None:
    with StubServer() as srv:
        req = urllib.request.Request(
            srv.base_url + "/chat/completions",
            data=json.dumps({"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.headers["Content-Type"] == "text/event-stream"
            events = [line for line in resp.read().decode().split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events)


@pytest.mark.parametrize("stream", [False, True])
def test_tool_call_then_final_answer(stream: bool) -> None:
    with StubServer(tool_calls=True) as srv:
        client = _client(srv)
        messages: list[dict] = [{"role": "user", "content": "score trajectory t1"}]
        if stream:
            chunks = list(client.chat.completions.create(
                model=srv.model, messages=messages, tools=TOOLS, stream=True))
            calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
            name = calls[0].function.name
            call_id = calls[0].id
            args = "".join(tc.function.arguments or "" for tc in calls)
            finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
        else:
            first = client.chat.completions.create(model=srv.model, messages=messages, tools=TOOLS)
            call = first.choices[0].message.tool_calls[0]
            name, call_id, args = call.function.name, call.id, call.function.arguments
            finish = first.choices[0].finish_reason
        assert finish == "tool_calls"
        assert name == "score_trajectory"
        assert json.loads(args) == {"trajectory_id": "stub-trajectory_id", "steps": 1}
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}]},
            {"role": "tool", "tool_call_id": call_id, "content": "0.8"},
        ]
        final = client.chat.completions.create(model=srv.model, messages=messages, tools=TOOLS)
        assert final.choices[0].message.tool_calls is None
        assert final.choices[0].message.content
        assert [r.answered_with for r in srv.requests] == ["tool_call", "message"]
        assert srv.requests[-1].has_tool_result


def test_tool_calls_without_offered_tools_answer_plainly() -> None:
    with StubServer(tool_calls=True) as srv:
        resp = _client(srv).chat.completions.create(model=srv.model, messages=[{"role": "user", "content": "x"}])
        assert resp.choices[0].message.content


def test_stream_false_rejects_stream_request_with_a_clear_message() -> None:
    with StubServer(stream=False) as srv:
        with pytest.raises(openai.BadRequestError, match="stream=False"):
            list(_client(srv).chat.completions.create(
                model=srv.model, messages=[{"role": "user", "content": "x"}], stream=True))


def test_unknown_route_is_404_and_request_log_is_bounded() -> None:
    with StubServer(log_size=3) as srv:
        for _ in range(5):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/v1/nothing", timeout=5)
            assert err.value.code == 404
        assert srv.request_count == 5
        assert len(srv.requests) == 3


def test_bad_options_name_the_value() -> None:
    with pytest.raises(ConfigError, match="chunk_words=0"):
        StubServer(chunk_words=0)
