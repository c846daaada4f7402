"""The output guard on a streamed JSON answer, as it streams (routes without
`guard.buffer_streams`).

Before the commit, `hold()` keeps the stream's first content back only until its first
non-whitespace character is known: one that cannot start the JSON asked for ("Sure! Here
is", a Markdown code fence, `[` where the schema wants an object) fails the attempt with
`invalid_output` and the next target gets the request before any byte reached the client.
A good stream commits on that same character: no latency is added.

After the commit, `relayed()` feeds every content delta to the incremental checker on its
way to the client; when the stream ends, `conclude()` gives the verdict the ledger records
(`output_check`) and, for an answer that must count against the model, the failure its
attempt records. What was sent stays sent: a header cannot be added after the fact.

A code fence is failed over, not repaired: repairing it in a stream would mean holding
back every chunk that might be its closing fence. A tool call as the answer is not
checked (its arguments are the client's to check, as for a whole answer); a stream whose
first output is reasoning commits on it as any stream does, its content checked after.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

import orjson

from turnout.execute import guard
from turnout.execute.json_stream import INVALID, JsonStreamChecker
from turnout.execute.stream import close_quietly
from turnout.model import Delta, ErrorClass, Request, UpstreamError

# what the ledger records in `output_check` (None: the answer was not checked)
OK: Final = "ok"
INVALID_JSON: Final = "invalid_json"
SCHEMA_MISMATCH: Final = "schema_mismatch"

_NUMBER_START = "-0123456789"
_STARTS = {
    "object": "{",
    "array": "[",
    "string": '"',
    "number": _NUMBER_START,
    "integer": _NUMBER_START,
    "boolean": "tf",
    "null": "n",
}


def first_characters(schema: dict[str, Any] | None) -> str | None:
    """The characters the JSON may start with, from the schema's root `type`; None when
    any JSON value may do (no schema, no root type, or one this cannot tell)."""
    kind = schema.get("type") if schema else None
    kinds = [kind] if isinstance(kind, str) else kind
    if not isinstance(kinds, list) or not kinds:
        return None
    starts = [_STARTS.get(k) if isinstance(k, str) else None for k in kinds]
    return None if None in starts else "".join(s for s in starts if s)


@dataclass(frozen=True, slots=True)
class Checked:
    """The verdict on an answer checked whole before it was sent (`buffer_streams`)."""

    verdict: str | None
    error: UpstreamError | None = None


class StreamCheck:
    """One streamed attempt's JSON check, from the first delta to the verdict."""

    __slots__ = (
        "_checker",
        "_concluded",
        "_counted_schema",
        "_finish_reason",
        "_pieces",
        "_request",
        "_schema",
        "_starts",
        "_tool_call",
        "error",
        "verdict",
    )

    def __init__(self, request: Request, route_schema: dict[str, Any] | None) -> None:
        self._request = request
        self._schema = guard.schema_for(request, route_schema)
        # the route's own schema is the operator's: a committed answer that misses it counts
        # against the model. A client's may be one no model can satisfy (the guard's rule for
        # whole answers): a miss is recorded in the ledger, but opens no breaker.
        self._counted_schema = route_schema is not None
        self._starts = first_characters(self._schema)
        self._checker = JsonStreamChecker()
        # the text, kept only when a schema has to be checked against it at the end
        self._pieces: list[str] | None = [] if self._schema is not None else None
        self._tool_call = False
        self._finish_reason: str | None = None
        self._concluded = False
        self.verdict: str | None = None  # OK, INVALID_JSON, SCHEMA_MISMATCH; None: unchecked
        self.error: UpstreamError | None = None  # what the attempt records, when it counts

    # --- before the commit ------------------------------------------------------------------

    async def hold(self, source: AsyncIterator[Delta], buffered: list[Delta]) -> None:
        """Read on (into `buffered`) until the answer's first character is known; raises
        the attempt's failure when it cannot start the JSON asked for. Runs within the
        attempt's TTFT deadline."""
        for delta in buffered:
            if self._decided(delta):
                return
        async for delta in source:
            buffered.append(delta)
            if self._decided(delta):
                return
        raise self._failure()  # the stream ended with no answer at all

    def _decided(self, delta: Delta) -> bool:
        if delta.finish_reason:
            self._finish_reason = delta.finish_reason
        if delta.content:
            self._feed(delta.content)
            checker = self._checker
            if checker.status == INVALID:
                raise self._failure()
            first = checker.first
            if first is not None:
                if self._starts is not None and first not in self._starts:
                    raise UpstreamError(
                        ErrorClass.INVALID_OUTPUT,
                        "the streamed answer cannot match the schema's root type:"
                        f" it starts with {first!r}",
                        status=200,
                        detail="schema",
                    )
                return True
        if delta.tool_calls:
            self._tool_call = True
            return True  # a tool call is the answer: commit, unchecked
        if delta.reasoning:
            return True  # reasoning first: commit on it, the content is checked as it comes
        if delta.finish_reason:
            raise self._failure()  # finished with nothing but whitespace
        return False

    def _failure(self) -> UpstreamError:
        checker = self._checker
        if checker.status != INVALID:
            checker.finish()
        if self._finish_reason == "length" and self._request.max_tokens is not None:
            return guard.cut_by_client(self._request.max_tokens)
        return UpstreamError(
            ErrorClass.INVALID_OUTPUT,
            f"the streamed answer is not valid JSON: {checker.reason} at offset {checker.offset}",
            status=200,
            detail="json",
        )

    # --- after the commit -------------------------------------------------------------------

    def relayed(self, source: AsyncIterator[Delta]) -> CheckedSource:
        """`source`'s deltas, each checked on its way; the verdict once it ended well (a
        stream that broke, or whose client left, gets none)."""
        return CheckedSource(self, source)

    def see(self, delta: Delta) -> None:
        """One delta after the commit."""
        if delta.content:
            self._feed(delta.content)
        if delta.tool_calls:
            self._tool_call = True
        if delta.finish_reason:
            self._finish_reason = delta.finish_reason

    def _feed(self, text: str) -> None:
        if self._pieces is not None:
            self._pieces.append(text)
        self._checker.feed(text)  # once invalid it stays so, at the cost of one comparison

    def conclude(self) -> None:
        """The verdict on the whole answer, and the failure to record when it counts."""
        if self._concluded:
            return
        self._concluded = True
        checker = self._checker
        if self._tool_call and checker.first is None:
            return  # a tool call was the answer: not checked
        if checker.finish() == INVALID:
            self.verdict = INVALID_JSON
            if self._finish_reason == "length" and self._request.max_tokens is not None:
                return  # cut off at the client's own max_tokens: the client's doing
            self.error = self._failure()
            return
        if self._schema is None or self._pieces is None:
            self.verdict = OK
            return
        try:
            value = orjson.loads("".join(self._pieces))
        except orjson.JSONDecodeError as exc:  # the checker is as strict as orjson: never
            self.verdict = INVALID_JSON
            self.error = UpstreamError(
                ErrorClass.INVALID_OUTPUT, f"the answer is not valid JSON: {exc}", status=200
            )
            return
        mismatch = guard.schema_error(value, self._schema)
        self.verdict = SCHEMA_MISMATCH if mismatch else OK
        if mismatch and self._counted_schema:
            self.error = mismatch


class CheckedSource:
    """A committed stream's source with each delta seen by its check on the way: an
    iterator, not an async generator, so that closing it closes the upstream even when
    it was never started (a client that left during the replay of the held deltas)."""

    __slots__ = ("_check", "_source")

    def __init__(self, check: StreamCheck, source: AsyncIterator[Delta]) -> None:
        self._check = check
        self._source = source

    def __aiter__(self) -> CheckedSource:
        return self

    async def __anext__(self) -> Delta:
        try:
            delta = await self._source.__anext__()
        except StopAsyncIteration:
            self._check.conclude()  # the stream ended well
            raise
        self._check.see(delta)
        return delta

    async def aclose(self) -> None:
        await close_quietly(self._source)
