"""Assemble a streamed answer into one Response (for the stale cache, and output checks)."""

from __future__ import annotations

from turnout.model import Delta, Response, ToolCall, ToolCallDelta, Usage


class Accumulator:
    __slots__ = ("_calls", "_content", "_reasoning", "finish_reason", "usage")

    def __init__(self) -> None:
        self._content: list[str] = []
        self._reasoning: list[str] = []
        self._calls: dict[int, list[str]] = {}  # index -> [id, name, arguments]
        self.finish_reason: str | None = None
        self.usage: Usage | None = None

    def add(self, delta: Delta) -> None:
        if delta.content:
            self._content.append(delta.content)
        if delta.reasoning:
            self._reasoning.append(delta.reasoning)
        for call in delta.tool_calls or ():
            slot = self._calls.setdefault(call.index, ["", "", ""])
            slot[0] = call.id or slot[0]
            slot[1] = call.name or slot[1]
            slot[2] += call.arguments
        if delta.finish_reason:
            self.finish_reason = delta.finish_reason
        if delta.usage is not None:
            self.usage = delta.usage

    def response(self, response_id: str, model: str) -> Response:
        return Response(
            id=response_id,
            model=model,
            content="".join(self._content) if self._content or not self._calls else None,
            tool_calls=[ToolCall(*self._calls[i]) for i in sorted(self._calls)],
            finish_reason=self.finish_reason or "stop",
            usage=self.usage or Usage(),
            reasoning="".join(self._reasoning) or None,
        )


def replay(response: Response) -> list[Delta]:
    """A stored answer as the deltas of a stream."""
    first = Delta(role="assistant", content=response.content, reasoning=response.reasoning)
    if response.tool_calls:
        first.tool_calls = [
            ToolCallDelta(i, call.id, call.name, call.arguments)
            for i, call in enumerate(response.tool_calls)
        ]
    return [first, Delta(finish_reason=response.finish_reason), Delta(usage=response.usage)]
