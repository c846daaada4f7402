"""The chaos soak's clients: the official openai and anthropic SDKs (async), streaming and not,
clients that abort (close mid-stream, time out before the answer) and raw hostile bodies.

Every request carries a unique `x-turnout-session` tag, which the gateway writes into the
ledger row: rows can then be matched to requests that never saw a response header (client
timeouts), and a request with two rows would show."""

from __future__ import annotations

import asyncio
import inspect
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
import anthropic
import httpx2
import openai

MESSAGES = [{"role": "user", "content": "Say something about gateways."}]
JSON_MESSAGES = [{"role": "user", "content": "Give me a JSON object describing a gateway."}]
REFUSED_PAUSE_S = 0.25  # a client refused a connection waits before it tries again
# JSON answers are asked for by schema: json_object reaches an Anthropic upstream as a system
# instruction, which the sim cannot follow (it would answer text, and the guard fail it)
JSON_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "gateway",
        "schema": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "hops": {"type": "integer"}},
            "required": ["name", "hops"],
        },
    },
}
CLIENT_TIMEOUT_S = 0.4  # the `slow` route's model answers after 1.5 s
SDK_TIMEOUT_S = 30.0
# kind -> weight in the mix
KINDS: dict[str, int] = {
    "openai": 22,
    "openai-stream": 20,
    "openai-json": 8,
    "openai-json-stream": 4,
    "anthropic": 16,
    "anthropic-stream": 14,
    "abort-mid-stream-openai": 5,
    "abort-mid-stream-anthropic": 3,
    "client-timeout": 4,
    "hostile-body": 4,
}
ABORTING = {"abort-mid-stream-openai", "abort-mid-stream-anthropic", "client-timeout"}
HOSTILE_BODIES = [  # (path, body): malformed JSON, wrong types; each must be a 400
    ("/v1/chat/completions", b'{"model": "chat", "messages": [{"role": "user", "content": "hi"'),
    ("/v1/chat/completions", b'{"model": "chat", "messages": "not a list"}'),
    ("/v1/messages", b'{"model": "chat", "max_tokens": 50, "messages": [{"role": "user",'),
    ("/v1/messages", b'{"model": "chat", "max_tokens": "many", "messages": []}'),
]


@dataclass
class Result:
    """One request as the client saw it. `state`:
    ok, aborted (the client meant to), failed, not_reached (connection refused),
    no_response (the connection broke before any response: reached or not, the ledger says)."""

    tag: str
    kind: str
    route: str
    t0: float
    t1: float = 0.0
    state: str = "failed"
    request_id: str | None = None
    status: int | None = None
    model: str | None = None  # x-turnout-model
    content_seen: bool = False  # content reached the client before it failed
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Failed(Exception):
    """The answer came back but is not a proper one (empty, unfinished, not JSON)."""


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]


def _take_headers(result: Result, headers: Any) -> None:
    result.request_id = headers.get("x-turnout-request-id") or result.request_id
    result.model = headers.get("x-turnout-model") or result.model


def _cause_chain(exc: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _connection_state(exc: BaseException, result: Result) -> str:
    if result.request_id is not None or result.content_seen:
        return "failed"  # the response had started: it reached the gateway and broke
    if any(isinstance(e, httpx2.ConnectError | ConnectionRefusedError) for e in _cause_chain(exc)):
        return "not_reached"
    return "no_response"


class Clients:
    def __init__(self, base_url: str, seed: int) -> None:
        self.base_url = base_url
        self.rng = random.Random(seed)
        self.counter = 0
        self.openai = openai.AsyncOpenAI(
            base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=SDK_TIMEOUT_S
        )
        self.anthropic = anthropic.AsyncAnthropic(
            base_url=base_url, api_key="unused", max_retries=0, timeout=SDK_TIMEOUT_S
        )
        self.http: aiohttp.ClientSession | None = None
        kinds = list(KINDS)
        self._kinds, self._weights = kinds, [KINDS[k] for k in kinds]

    async def close(self) -> None:
        await self.openai.close()
        await self.anthropic.close()
        if self.http is not None:
            await self.http.close()

    def next_kind(self) -> str:
        return self.rng.choices(self._kinds, self._weights)[0]

    async def send(self, kind: str, clock: Callable[[], float]) -> Result:
        self.counter += 1
        tag = f"soak-{self.counter:07d}"
        route = "slow" if kind == "client-timeout" else "chat"
        result = Result(tag, kind, route, clock())
        run: Callable[[Result], Awaitable[None]] = getattr(self, "_" + kind.replace("-", "_"))
        try:
            await run(result)
            result.state = "aborted" if kind in ABORTING else "ok"
        except (openai.APITimeoutError, anthropic.APITimeoutError) as exc:
            result.error = _short(exc)
            result.state = "aborted" if kind == "client-timeout" else "failed"
        except (openai.APIConnectionError, anthropic.APIConnectionError) as exc:
            result.error = _short(exc)
            result.state = _connection_state(exc, result)
        except (openai.APIStatusError, anthropic.APIStatusError) as exc:
            _take_headers(result, exc.response.headers)
            result.status, result.error = exc.status_code, _short(exc)
        except (openai.APIError, anthropic.APIError, Failed) as exc:
            result.error = _short(exc)  # an error event inside a 200 stream, or a bad answer
        except (aiohttp.ClientConnectorError, ConnectionRefusedError) as exc:
            result.error, result.state = _short(exc), "not_reached"
        except (aiohttp.ClientError, OSError) as exc:
            result.error = _short(exc)
            result.state = "failed" if result.request_id else "no_response"
        except Exception as exc:  # noqa: BLE001 - anything else the SDKs raise is a failure too
            result.error = _short(exc)
        result.t1 = clock()
        return result

    def _headers(self, result: Result) -> dict[str, str]:
        return {"x-turnout-session": result.tag}

    # --- openai ---------------------------------------------------------------------------

    async def _openai(self, result: Result, json_mode: bool = False) -> None:
        extra: dict[str, Any] = {"response_format": JSON_FORMAT} if json_mode else {}
        raw = await self.openai.chat.completions.with_raw_response.create(
            model=result.route,
            messages=JSON_MESSAGES if json_mode else MESSAGES,
            extra_headers=self._headers(result),
            **extra,
        )
        _take_headers(result, raw.headers)
        result.status = raw.status_code
        choice = (await _parsed(raw)).choices[0]
        _check_text(choice.message.content or "", json_mode)
        if choice.finish_reason is None:
            raise Failed("no finish_reason")

    async def _openai_json(self, result: Result) -> None:
        await self._openai(result, json_mode=True)

    async def _openai_stream(
        self, result: Result, json_mode: bool = False, abort: bool = False
    ) -> None:
        extra: dict[str, Any] = {"response_format": JSON_FORMAT} if json_mode else {}
        async with self.openai.chat.completions.with_streaming_response.create(
            model=result.route,
            messages=JSON_MESSAGES if json_mode else MESSAGES,
            stream=True,
            extra_headers=self._headers(result),
            **extra,
        ) as response:
            _take_headers(result, response.headers)
            result.status = response.status_code
            text, finished = [], False
            async for chunk in await response.parse():
                for choice in chunk.choices:
                    if choice.delta.content:
                        text.append(choice.delta.content)
                        result.content_seen = True
                    finished = finished or choice.finish_reason is not None
                if abort and result.content_seen:
                    return  # leaving the block closes the connection mid-stream
        if abort:
            raise Failed("the stream ended before the client could abort it")
        _check_text("".join(text), json_mode)
        if not finished:
            raise Failed("stream ended without a finish_reason")

    async def _openai_json_stream(self, result: Result) -> None:
        await self._openai_stream(result, json_mode=True)

    async def _abort_mid_stream_openai(self, result: Result) -> None:
        await self._openai_stream(result, abort=True)

    async def _client_timeout(self, result: Result) -> None:
        client = self.openai.with_options(timeout=CLIENT_TIMEOUT_S)
        await client.chat.completions.create(
            model=result.route, messages=MESSAGES, extra_headers=self._headers(result)
        )
        raise Failed("the slow model answered before the client's timeout")

    # --- anthropic ------------------------------------------------------------------------

    async def _anthropic(self, result: Result) -> None:
        raw = await self.anthropic.messages.with_raw_response.create(
            model=result.route,
            max_tokens=256,
            messages=MESSAGES,
            extra_headers=self._headers(result),
        )
        _take_headers(result, raw.headers)
        result.status = raw.status_code
        message = await _parsed(raw)
        _check_text("".join(b.text for b in message.content if b.type == "text"), False)
        if message.stop_reason is None:
            raise Failed("no stop_reason")

    async def _anthropic_stream(self, result: Result, abort: bool = False) -> None:
        async with self.anthropic.messages.with_streaming_response.create(
            model=result.route,
            max_tokens=256,
            messages=MESSAGES,
            stream=True,
            extra_headers=self._headers(result),
        ) as response:
            _take_headers(result, response.headers)
            result.status = response.status_code
            text, stopped = [], False
            async for event in await response.parse():
                if event.type == "content_block_delta" and event.delta.type == "text_delta":
                    text.append(event.delta.text)
                    result.content_seen = True
                stopped = stopped or event.type == "message_stop"
                if abort and result.content_seen:
                    return
        if abort:
            raise Failed("the stream ended before the client could abort it")
        _check_text("".join(text), False)
        if not stopped:
            raise Failed("stream ended without message_stop")

    async def _abort_mid_stream_anthropic(self, result: Result) -> None:
        await self._anthropic_stream(result, abort=True)

    # --- raw ------------------------------------------------------------------------------

    async def _hostile_body(self, result: Result) -> None:
        """Malformed or mistyped JSON: a 400 in the endpoint's own error shape is the pass."""
        if self.http is None:
            self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SDK_TIMEOUT_S))
        path, body = self.rng.choice(HOSTILE_BODIES)
        result.route = f"hostile {path}"
        headers = {"content-type": "application/json", **self._headers(result)}
        async with self.http.post(self.base_url + path, data=body, headers=headers) as response:
            _take_headers(result, response.headers)
            result.status = response.status
            payload = await response.read()
        if result.status != 400 or not _error_shape(path, payload):
            raise Failed(f"{result.status}: {payload[:200]!r}")


async def _parsed(raw: Any) -> Any:
    """The SDKs' async raw responses parse synchronously (openai) or as a coroutine (anthropic)."""
    parsed = raw.parse()
    return await parsed if inspect.isawaitable(parsed) else parsed


def _check_text(text: str, json_mode: bool) -> None:
    if not text:
        raise Failed("empty answer")
    if json_mode:
        try:
            value = json.loads(text)
        except ValueError:
            raise Failed(f"JSON mode answer is not JSON: {text[:80]!r}") from None
        if not isinstance(value, dict):
            raise Failed("JSON mode answer is not an object")


def _error_shape(path: str, payload: bytes) -> bool:
    try:
        body = json.loads(payload)
    except ValueError:
        return False
    if path == "/v1/messages":
        error = body.get("error") if isinstance(body, dict) else None
        return body.get("type") == "error" and isinstance(error, dict) and "message" in error
    error = body.get("error") if isinstance(body, dict) else None
    return isinstance(error, dict) and {"message", "type", "param", "code"} <= set(error)


async def client_loop(
    clients: Clients,
    stop_at: float,
    clock: Callable[[], float],
    results: list[Result],
    think_s: float,
) -> None:
    """One of the concurrent clients: request after request until the run ends."""
    while clock() < stop_at:
        result = await clients.send(clients.next_kind(), clock)
        results.append(result)
        refused = result.state == "not_reached"
        await asyncio.sleep(REFUSED_PAUSE_S if refused else think_s)


def monotonic_clock(start: float) -> Callable[[], float]:
    return lambda: time.monotonic() - start
