"""Provider kind `echo`, defined by the test suite alone: it answers with the last user
message, streaming or not (and crashes with a bug of its own when told "crash"). The whole kind is this one file (its config model, its provider
and one `register` call); a gateway loads it with `TURNOUT_PLUGINS=tests.echo_kind`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

from turnout.config.schema import ProviderConfig
from turnout.model import Delta, Request, Response, Usage
from turnout.providers.base import Call, Provider
from turnout.providers.registry import register


class EchoConfig(ProviderConfig):
    kind: Literal["echo"] = "echo"
    prefix: str = ""  # put before every answer: shows the kind's own fields reach it


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    return "".join(p.get("text", "") for p in parts if isinstance(p, dict))


class EchoProvider(Provider):
    config: EchoConfig

    def _answer(self, request: Request) -> str:
        users = [m for m in request.messages if m.get("role") == "user"]
        said = _text(users[-1].get("content")) if users else ""
        if said == "crash":  # a provider with a bug: what the gateway does about its own
            raise RuntimeError("a bug in the echo provider")
        if said == "crash with key" and self.config.api_key is not None:
            # a worse bug: its traceback shows the key (the log filter must catch it)
            raise RuntimeError(f"a bug that shows the key {self.config.api_key.reveal()}")
        return self.config.prefix + said

    def _usage(self, request: Request, answer: str) -> Usage:
        return Usage(len(request.messages), len(answer.split()))

    async def complete(self, request: Request, call: Call) -> Response:
        call.status = 200
        answer = self._answer(request)
        usage = self._usage(request, answer)
        return Response(id="echo-1", model=call.upstream_model, content=answer, usage=usage)

    async def stream(self, request: Request, call: Call) -> AsyncIterator[Delta]:
        call.status = 200
        answer = self._answer(request)
        first, *rest = answer.split(" ")
        # a word per event, like an upstream streaming its tokens
        yield Delta(role="assistant", content=first)
        for word in rest:
            yield Delta(content=" " + word)
        yield Delta(finish_reason="stop", usage=self._usage(request, answer))


register("echo", EchoConfig, EchoProvider)
