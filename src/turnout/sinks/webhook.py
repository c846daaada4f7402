"""Sink kind `webhook`: each event POSTed as a Slack-compatible body, `{"text": <one line for
people>, "event": <the structured event>}` (Slack shows `text` and ignores the rest)."""

from __future__ import annotations

import aiohttp
import orjson

from turnout.config.sinks import WebhookSinkConfig
from turnout.sinks.base import SinkError
from turnout.sinks.exported import Exported, summary


class WebhookSink:
    max_batch: int | None = 1  # one message per POST: a retry never re-sends a delivered one

    def __init__(self, config: WebhookSinkConfig) -> None:
        self._url = config.url
        self._timeout = aiohttp.ClientTimeout(total=config.timeout)
        self._session: aiohttp.ClientSession | None = None

    async def send(self, events: list[Exported]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        for event in events:
            await self.post({"text": summary(event), "event": event.data})

    async def post(self, body: dict[str, object]) -> None:
        """One message (an alert's too); raises SinkError unless the receiver took it."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        headers = {"content-type": "application/json"}
        try:
            async with self._session.post(
                self._url.reveal(), data=orjson.dumps(body), headers=headers
            ) as response:
                if response.status >= 300:
                    # the receiver's words, short; never the URL (it is the credential)
                    text = (await response.text(errors="replace"))[:100]
                    raise SinkError(f"the webhook answered HTTP {response.status}: {text}")
        except aiohttp.ClientError as exc:
            # aiohttp's messages can hold the URL: name the failure's class only
            raise SinkError(f"webhook unreachable ({type(exc).__name__})") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
