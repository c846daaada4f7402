"""Any OpenAI-compatible upstream over pooled keep-alive HTTP (OpenRouter, Groq, Cerebras,
vLLM, Ollama, llama.cpp's server, Cloudflare /ai/v1, Gemini's OpenAI endpoint, the sim)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import orjson

from turnout.config.schema import ProviderConfig
from turnout.config.secrets import redact
from turnout.dialects.openai import upstream as dialect
from turnout.dialects.sse import SSEParser
from turnout.model import Delta, ErrorClass, Request, Response, UpstreamError
from turnout.providers.base import Call, Provider


class OpenAICompatibleProvider(Provider):
    def __init__(self, name: str, config: ProviderConfig) -> None:
        super().__init__(name, config)
        self.base_url = (config.base_url or "").rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._headers = {"content-type": "application/json", **config.headers}

    async def start(self) -> None:
        if self.config.api_key is not None and self.config.api_key.is_set:
            self._headers["authorization"] = f"Bearer {self.config.api_key.reveal()}"
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            json_serialize=lambda obj: orjson.dumps(obj).decode(),
            auto_decompress=True,
            skip_auto_headers=("user-agent",),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _redacted(self, error: UpstreamError) -> UpstreamError:
        error.message = redact(error.message, self.secrets)
        return error

    async def _post(self, request: Request, call: Call, stream: bool) -> aiohttp.ClientResponse:
        assert self._session is not None, "provider not started"
        body = orjson.dumps(dialect.encode_request(request, call.upstream_model, stream))
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=call.timeouts.connect, connect=call.timeouts.connect
        )
        try:
            response = await self._session.post(
                self.base_url + "/chat/completions",
                data=body,
                headers=self._headers,
                timeout=timeout,
            )
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamError(
                ErrorClass.TIMEOUT, f"connect timed out: {exc}", detail="connect"
            ) from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(ErrorClass.CONNECTION, f"{type(exc).__name__}: {exc}") from None
        call.status = response.status
        call.headers = dict(response.headers)
        if response.status >= 400:
            try:
                raw = await response.read()
            except aiohttp.ClientError:
                raw = b""
            finally:
                response.release()
            raise self._redacted(dialect.decode_error(response.status, raw, response.headers))
        return response

    async def complete(self, request: Request, call: Call) -> Response:
        response = await self._post(request, call, stream=False)
        try:
            raw = await response.read()
        except aiohttp.ClientError as exc:
            raise UpstreamError(ErrorClass.CONNECTION, f"{type(exc).__name__}: {exc}") from None
        finally:
            response.release()
        try:
            return dialect.decode_response(raw)
        except UpstreamError as exc:
            raise self._redacted(exc) from None

    async def stream(self, request: Request, call: Call) -> AsyncIterator[Delta]:
        response = await self._post(request, call, stream=True)
        parser = SSEParser()
        finished = False
        try:
            async for chunk in response.content.iter_any():
                for event in parser.feed(chunk):
                    delta = dialect.decode_chunk(event.data)
                    if delta is None:
                        return
                    if delta.finish_reason:
                        finished = True
                    yield delta
            for event in parser.flush():
                delta = dialect.decode_chunk(event.data)
                if delta is None:
                    return
                finished = finished or bool(delta.finish_reason)
                yield delta
        except UpstreamError as exc:
            raise self._redacted(exc) from None
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise UpstreamError(
                ErrorClass.STREAM_BROKEN, f"stream broke: {type(exc).__name__}: {exc}"
            ) from None
        finally:
            response.close() if not finished else response.release()
        if not finished:
            raise UpstreamError(ErrorClass.STREAM_BROKEN, "stream ended before the answer finished")
