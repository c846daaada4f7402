"""An upstream that streams without end of event: one endless line, or data lines that never
meet their blank line. The gateway must not buffer it without bound: past MAX_EVENT_BYTES the
stream is broken, and the request fails over to the next model as for any broken stream."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from tests.conftest import sdk_client
from tests.upstreams import serve_app
from turnout.dialects.sse import MAX_EVENT_BYTES, SSEParser
from turnout.model import ErrorClass, UpstreamError

MIB = 1024 * 1024


class Endless:
    """Streams `line` and then `piece` over and over, never an event boundary, until the
    gateway hangs up (or 8 times MAX_EVENT_BYTES, so a gateway that buffers it all still
    ends); `sent` is how much went out."""

    def __init__(self, line: bytes, piece: bytes) -> None:
        self.line, self.piece, self.sent = line, piece, 0

    def app(self) -> web.Application:
        async def chat(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await response.prepare(request)
            await response.write(self.line)
            while self.sent < 8 * MAX_EVENT_BYTES:
                try:
                    await response.write(self.piece)
                except ConnectionError:  # the gateway hung up: as it should
                    break
                self.sent += len(self.piece)
            return response

        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        return app


@pytest.mark.parametrize(
    ("line", "piece"),
    [(b"data: ", b"x" * MIB), (b"", b"data: " + b"y" * (MIB - 7) + b"\n")],
    ids=["one-endless-line", "data-lines-without-end"],
)
def test_an_endless_upstream_event_fails_over(gateway_factory, line: bytes, piece: bytes) -> None:
    upstream = Endless(line, piece)
    with serve_app(upstream.app()) as port:
        config: dict[str, Any] = {
            "providers": {
                "endless": {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1"},
                "sim": {"kind": "sim", "sim": {"backup": {"reply": "backup answered"}}},
            },
            "models": {"primary": {"provider": "endless"}, "backup": {"provider": "sim"}},
            "routes": {"chat": {"targets": ["primary", "backup"]}},
        }
        gateway = gateway_factory(config)
        client = sdk_client(gateway)
        with client.chat.completions.with_streaming_response.create(
            model="chat", messages=[{"role": "user", "content": "hello"}], stream=True
        ) as response:
            text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
            assert text == "backup answered"
            assert response.headers["x-turnout-model"] == "backup"
            assert "primary=stream_broken" in response.headers["x-turnout-fallback"]
        assert gateway.get("/health").status == 200  # and it keeps serving
    # it hung up soon after the limit (socket buffers hold a few MiB more), not at the end
    assert MAX_EVENT_BYTES <= upstream.sent < 2 * MAX_EVENT_BYTES, upstream.sent


def test_the_parser_refuses_an_event_past_the_limit() -> None:
    parser = SSEParser()
    parser.feed(b"data: " + b"z" * (MAX_EVENT_BYTES // 2))
    with pytest.raises(UpstreamError) as refused:
        parser.feed(b"z" * (MAX_EVENT_BYTES // 2 + 1))
    assert refused.value.error_class is ErrorClass.STREAM_BROKEN


def test_the_parser_reads_a_stream_the_same_however_it_is_cut() -> None:
    stream = b"".join(
        b': keep-alive\r\nevent: delta\r\ndata: {"n": %d}\ndata: more\n\n' % n for n in range(300)
    )
    whole = [(e.event, e.data) for e in SSEParser().feed(stream)]
    parser = SSEParser()
    byte_by_byte = [
        (e.event, e.data) for i in range(len(stream)) for e in parser.feed(stream[i : i + 1])
    ]
    assert whole == byte_by_byte
    assert len(whole) == 300 and whole[7] == ("delta", '{"n": 7}\nmore')
