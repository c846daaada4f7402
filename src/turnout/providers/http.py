"""Upstreams over pooled keep-alive HTTP, in whatever wire format their dialect speaks:
OpenAI-compatible hosts (OpenRouter, Groq, Cerebras, vLLM, Ollama, llama.cpp's server,
Cloudflare /ai/v1, Gemini's OpenAI endpoint, the sim), Anthropic, Gemini, Cloudflare."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator

import aiohttp
import orjson
import yarl

from turnout import clock
from turnout.config.schema import ProviderConfig
from turnout.dialects.base import UpstreamDialect
from turnout.dialects.openai import embeddings
from turnout.dialects.openai.upstream import UPSTREAM as OPENAI
from turnout.dialects.sse import SSEParser
from turnout.model import Delta, ErrorClass, Request, Response, ToolCallDelta, UpstreamError
from turnout.model.embeddings import EmbeddingRequest, EmbeddingResult
from turnout.providers.base import Call, Provider
from turnout.providers.keepalive import KeepAliveClient


def _streams(dialect: UpstreamDialect, request: Request) -> bool:
    """The optional dialect hook `streams(request) -> bool`; dialects without it always
    stream. Not part of the UpstreamDialect protocol so that existing dialects need nothing."""
    streams = getattr(dialect, "streams", None)
    return streams is None or bool(streams(request))


def _as_deltas(response: Response) -> list[Delta]:
    """A whole answer as a stream: everything in one delta, then finish reason and usage."""
    calls = [
        ToolCallDelta(i, call.id, call.name, call.arguments)
        for i, call in enumerate(response.tool_calls)
    ]
    first = Delta(
        content=response.content,
        reasoning=response.reasoning,
        tool_calls=calls or None,
        role="assistant",
    )
    return [first, Delta(finish_reason=response.finish_reason, usage=response.usage)]


@functools.lru_cache(maxsize=64)
def _connect_timeout(seconds: float) -> aiohttp.ClientTimeout:
    """The connect timeout; the total is the scheduler's (it spans every provider kind)."""
    return aiohttp.ClientTimeout(total=None, sock_connect=seconds, connect=seconds)


@functools.lru_cache(maxsize=1024)
def _url(url: str) -> yarl.URL | str:
    """The parsed URL (a provider has one or a few: one per model where it is in the path):
    aiohttp takes a URL object as it is, where a string is parsed again on every call. One
    that does not parse stays a string, for aiohttp to refuse as it always has."""
    try:
        return yarl.URL(url)
    except ValueError:
        return url


class HTTPProvider(Provider):
    def __init__(
        self, name: str, config: ProviderConfig, dialect: UpstreamDialect = OPENAI
    ) -> None:
        super().__init__(name, config)
        self.dialect = dialect
        self.base_url = (config.base_url or dialect.default_base_url or "").rstrip("/")
        self._session: aiohttp.ClientSession | None = None  # streams, embeddings
        self._whole: KeepAliveClient | None = None  # whole answers (providers/keepalive.py)
        self._headers = {"content-type": "application/json", **config.headers}
        # the client wire format this dialect's answers already are (the optional dialect hook
        # `answer_format`, with `pass_through(body) -> Response`): such a client may get the
        # upstream's answer as it is (Call.pass_through)
        self._answer_format: str | None = getattr(dialect, "answer_format", None)

    async def start(self) -> None:
        key = self.config.api_key
        self._headers.update(
            self.dialect.auth_headers(key.reveal() if key and key.is_set else None)
        )
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, ttl_dns_cache=300)
        # the headers as the session's defaults: aiohttp copies them per call as they are,
        # where a per-call dict is converted and merged into them on every request
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=self._headers,
            auto_decompress=True,
            skip_auto_headers=("user-agent",),
        )
        self._whole = KeepAliveClient(self._headers)

    async def close(self) -> None:
        if self._whole is not None:
            self._whole.close()
        if self._session is not None:
            await self._session.close()

    def _redacted(self, error: UpstreamError) -> UpstreamError:
        """The error with every string a client, a log or a health page could see cleaned of
        secrets: upstreams echo keys in any field, and connection errors carry URLs (which
        hold the key where a provider takes it as a query parameter)."""
        redact = self.redactor
        if redact:
            error.message = redact(error.message)
            error.code = redact.optional(error.code)
            error.param = redact.optional(error.param)
            error.error_type = redact.optional(error.error_type)
            error.args = (error.message,)  # str(error) and tracebacks print args
        return error

    def _encoded(self, request: Request, call: Call, stream: bool) -> tuple[str, bytes]:
        """The upstream's URL and body for this request (not a coroutine: on the hot path
        every coroutine level costs, so the callers await the sending themselves)."""
        body = orjson.dumps(self.dialect.encode_request(request, call.upstream_model, stream))
        return self.dialect.url(self.base_url, call.upstream_model, stream), body

    def _connection_error(self, exc: Exception) -> UpstreamError:
        return self._redacted(UpstreamError(ErrorClass.CONNECTION, f"{type(exc).__name__}: {exc}"))

    def _connect_timed_out(self, exc: Exception) -> UpstreamError:
        return self._redacted(
            UpstreamError(ErrorClass.TIMEOUT, f"connect timed out: {exc}", detail="connect")
        )

    async def _send(self, url: str, body: bytes, call: Call) -> aiohttp.ClientResponse:
        """POST `body`; the response once its status is 2xx, else its error, classified."""
        assert self._session is not None, "provider not started"
        timeout = _connect_timeout(call.timeouts.connect)
        try:
            response = await self._session.post(_url(url), data=body, timeout=timeout)
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise self._connect_timed_out(exc) from None
        except aiohttp.ClientError as exc:
            raise self._connection_error(exc) from None
        if self._refused(response, call):
            raise await self._refusal(response)
        return response

    def _refused(self, response: aiohttp.ClientResponse, call: Call) -> bool:
        """Notes the answer's status and headers in `call`; True for an error status."""
        call.status = response.status
        call.headers = response.headers  # read-only view: rate-limit headers are read later
        call.headers_at = clock.now()
        return response.status >= 400

    async def _refusal(self, response: aiohttp.ClientResponse) -> UpstreamError:
        """An error answer's body, classified (the connection is released)."""
        try:
            raw = await response.read()
        except aiohttp.ClientError:
            raw = b""
        finally:
            response.release()
        error = self.dialect.decode_error(response.status, raw, response.headers)
        return self._redacted(error)

    async def complete(self, request: Request, call: Call) -> Response:
        assert self._whole is not None, "provider not started"
        url, body = self._encoded(request, call, False)
        target = _url(url)
        if not isinstance(target, yarl.URL):
            raise self._connection_error(ValueError(f"not a valid URL: {url}"))
        try:
            answer = await self._whole.post(target, body, call.timeouts.connect)
        except TimeoutError as exc:
            raise self._connect_timed_out(exc) from None
        except (OSError, ValueError) as exc:  # ConnectionError is an OSError
            raise self._connection_error(exc) from None
        call.status = answer.status
        call.headers = answer.headers
        call.headers_at = answer.headers_at
        try:
            if answer.status >= 400:
                raise self.dialect.decode_error(answer.status, answer.body, answer.headers)
            if call.pass_through is not None and call.pass_through == self._answer_format:
                return self.dialect.pass_through(answer.body)  # type: ignore[attr-defined]
            return self.dialect.decode_response(answer.body)
        except UpstreamError as exc:
            raise self._redacted(exc) from None

    async def embed(self, request: EmbeddingRequest, call: Call) -> EmbeddingResult:
        """`POST {base_url}/embeddings` on kinds whose config says they serve it (the
        OpenAI-compatible ones); other kinds refuse, as every Provider does."""
        if not self.config.embeddings:
            return await super().embed(request, call)
        body = orjson.dumps(embeddings.encode_request(request, call.upstream_model))
        response = await self._send(embeddings.url(self.base_url), body, call)
        try:
            raw = await response.read()
        except aiohttp.ClientError as exc:
            raise self._connection_error(exc) from None
        finally:
            response.release()
        try:
            return embeddings.decode_response(raw, len(request.inputs))
        except UpstreamError as exc:
            raise self._redacted(exc) from None

    async def stream(self, request: Request, call: Call) -> AsyncIterator[Delta]:
        """The answer as deltas. A dialect may say it cannot stream a request (the optional
        hook `streams(request) -> bool`, e.g. Workers AI in JSON mode): the answer is then
        fetched whole and handed on as one content delta, then finish and usage."""
        if not _streams(self.dialect, request):
            for delta in _as_deltas(await self.complete(request, call)):
                yield delta
            return
        response = await self._send(*self._encoded(request, call, True), call)
        parser = SSEParser()
        decoder = self.dialect.stream_decoder()
        try:
            async for chunk in response.content.iter_any():
                for event in parser.feed(chunk):
                    for delta in decoder.event(event):
                        yield delta
                    if decoder.done:
                        return
            for event in parser.flush():
                for delta in decoder.event(event):
                    yield delta
        except UpstreamError as exc:
            raise self._redacted(exc) from None
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise self._redacted(
                UpstreamError(
                    ErrorClass.STREAM_BROKEN, f"stream broke: {type(exc).__name__}: {exc}"
                )
            ) from None
        finally:
            if decoder.finished:
                response.release()  # the connection goes back to the pool
            else:
                response.close()
        if not decoder.finished:
            raise UpstreamError(ErrorClass.STREAM_BROKEN, "stream ended before the answer finished")
