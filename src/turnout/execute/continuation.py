"""Continuing a broken stream on another model (route `on_stream_break: continue`).

A committed stream that breaks or stalls has already sent part of its answer. The next
available target of the plan is asked to carry on from there: the partial answer goes as an
assistant prefill where the target continues one (Anthropic natively; OpenAI-compatible
servers whose model says `supports: [prefill]`, with vLLM's `continue_final_message`), else
with an instruction to continue exactly from it. The continuing model may repeat the last
words: only what is new reaches the client (the longest suffix of the sent text that is a
prefix of the new text, within OVERLAP_BOUND characters, is cut), and the client sees one
stream that ends normally, with the usage and cost of both models at its end.

Never for a stream that was sending tool calls (a half-written call cannot be continued),
nor for a JSON answer under an output check (the check saw only the first model's part): the
client then gets the explicit error event. Each continuation is a `Part` the ledger row
records beside the first model (`Part.record`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from turnout import clock
from turnout.accounting.cost import cost_usd
from turnout.config.schema import Price
from turnout.events import Publish
from turnout.execute.attempt import UpstreamAttempt
from turnout.execute.deadlines import Deadlines
from turnout.execute.stream import Stream
from turnout.health import HealthEngine
from turnout.model import Attempt, Delta, Request, UpstreamError, Usage
from turnout.model.tokens import estimate_prompt_tokens
from turnout.routing import Plan, Target

if TYPE_CHECKING:
    from turnout.accounting.records import LedgerRow

CONTINUE = "continue"  # the route's `on_stream_break` that turns continuation on
# how much of the sent text a continuing model may repeat and still have it cut: a sentence
# or two. A model that starts over from the beginning of a long answer is not trimmed whole.
OVERLAP_BOUND = 400
INSTRUCTION = (
    "Your previous reply above was cut off. Continue it exactly from where it stops, even "
    "mid-word or mid-sentence: do not repeat any of it, do not comment, write only the rest."
)


# --- which target, asked what -----------------------------------------------------------------


def candidates(
    plan: Plan, broken: Target, attempts: list[Attempt], broke: set[str]
) -> list[Target]:
    """The plan's targets after the broken one, then those before it; none that already
    failed, was skipped, or broke (`broke`) on this request."""
    targets = list(plan.targets)
    at = next((i for i, t in enumerate(targets) if t.key == broken.key), len(targets))
    tried = {a.model for a in attempts} | broke | {broken.key}
    return [t for t in targets[at + 1 :] + targets[:at] if t.key not in tried]


def prefilled(request: Request, target: Target, text: str, written: int) -> Request:
    """The request that asks `target` to continue an answer that begins with `text`
    (`written`: about how many tokens of it were written, taken off max_tokens)."""
    max_tokens = request.max_tokens
    if max_tokens is not None:
        max_tokens = max(1, max_tokens - written)
    request = dataclasses.replace(request, max_tokens=max_tokens, stream=True)
    if not text.strip():
        return request  # nothing to continue from (it broke while thinking): ask afresh
    dialect = getattr(target.provider, "dialect", None)
    hook = getattr(dialect, "prefilled", None)
    if hook is not None and (
        getattr(dialect, "prefills_natively", False) or "prefill" in target.model.supports
    ):
        continued: Request = hook(request, text)
        return continued
    messages = [
        *request.messages,
        {"role": "assistant", "content": text},
        {"role": "user", "content": INSTRUCTION},
    ]
    return dataclasses.replace(request, messages=messages)


# --- only the new text --------------------------------------------------------------------------


def overlap(tail: str, new: str) -> int:
    """The length of the longest prefix of `new` that `tail` ends with."""
    for k in range(min(len(tail), len(new)), 0, -1):
        if tail.endswith(new[:k]):
            return k
    return 0


class Overlap:
    """Holds the continuing model's first text back only until the repeat (if any) is
    known, then hands on the rest. A longer repeat is still possible while the text so far
    occurs in the sent tail short of its end; once it does not, the longest one is cut."""

    __slots__ = ("_held", "_tail", "done")

    def __init__(self, sent: str, bound: int = OVERLAP_BOUND) -> None:
        self._tail = sent[max(len(sent) - bound, 0) :]
        self._held = ""
        self.done = not self._tail

    def feed(self, text: str) -> str:
        """What of `text` (with what was held) can go to the client now: "" while held."""
        held = self._held + text
        if len(held) < len(self._tail) and held in self._tail[:-1]:
            self._held = held
            return ""
        self._held = held
        return self.flush()

    def flush(self) -> str:
        """Decide now (the continuing model's text ended, or something else came)."""
        held, self._held, self.done = self._held, "", True
        return held[overlap(self._tail, held) :]


# --- the ledger's view ------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class Part:
    """One model that continued the answer: what it cost, for the client's closing usage
    and the ledger row."""

    model: str
    provider: str
    after: str  # why the stream before it broke (its error's reason)
    price: Price
    prompt_estimate: int  # the continuation's prompt (the partial answer included)
    usage: Usage | None = None  # as its upstream reported it
    pieces: int = 0  # content deltas relayed, for an estimate when it reported no usage

    def final_usage(self) -> tuple[Usage, bool]:
        """Its usage, and whether it is an estimate."""
        if self.usage is not None:
            return self.usage, False
        return Usage(self.prompt_estimate, self.pieces), True

    def cost(self) -> float:
        return cost_usd(self.price, self.final_usage()[0])

    def entry(self) -> dict[str, Any]:
        """Its line among the row's attempts."""
        usage, estimated = self.final_usage()
        return {
            "model": self.model,
            "provider": self.provider,
            "reason": f"continued({self.after})",
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "cost_usd": self.cost(),
            "usage_estimated": estimated,
        }

    def record(self, row: LedgerRow, baseline: Price | None) -> None:
        """Add this part to a ledger row priced for the first model: `model` stays the
        first model, the row's tokens and costs become the sums, `attempts` lists this."""
        usage, estimated = self.final_usage()
        cost = self.cost()
        row.attempts.append(self.entry())
        row.prompt_tokens += usage.prompt_tokens
        row.cached_tokens += usage.cached_tokens
        row.completion_tokens += usage.completion_tokens
        row.usage_estimated = row.usage_estimated or estimated
        row.cost_usd += cost
        row.baseline_cost_usd += cost_usd(baseline, usage) if baseline is not None else cost


def total_usage(first: Stream, usage: Usage | None, pieces: int, parts: list[Part]) -> Usage | None:
    """The usage a continued stream's client is told at its end: every model's, summed
    (the first's estimated when it broke before reporting any), with the summed cost."""
    if first.request is None:
        return usage
    head = usage if usage is not None else Usage(estimate_prompt_tokens(first.request), pieces)
    cost = head.cost if head.cost is not None else cost_usd(first.target.price, head)
    total = Usage(
        head.prompt_tokens,
        head.completion_tokens,
        head.cached_tokens,
        head.reasoning_tokens,
    )
    for part in parts:
        more = part.final_usage()[0]
        total.prompt_tokens += more.prompt_tokens
        total.completion_tokens += more.completion_tokens
        total.cached_tokens += more.cached_tokens
        total.reasoning_tokens += more.reasoning_tokens
        cost += part.cost()
    total.cost = cost
    return total


# --- the continuing stream ----------------------------------------------------------------------


class Continued:
    """What makes a stream a continuation: its deltas lose what was already sent (the
    overlap, a role, reasoning), and its usage goes to its Part, not to the first model."""

    __slots__ = ("_overlap", "part")

    def __init__(self, sent: str, part: Part) -> None:
        self.part = part
        self._overlap = Overlap(sent)

    async def relayed(self, deltas: AsyncGenerator[Delta, None]) -> AsyncGenerator[Delta, None]:
        part, trim = self.part, self._overlap
        try:
            async for delta in deltas:
                if delta.usage is not None:
                    part.usage = delta.usage
                text = delta.content
                if not trim.done:
                    if text:
                        text = trim.feed(text)
                    elif delta.tool_calls or delta.finish_reason:
                        text = trim.flush()
                if not (text or delta.tool_calls or delta.finish_reason):
                    continue
                if text:
                    part.pieces += 1
                yield Delta(
                    content=text or None,
                    tool_calls=delta.tool_calls,
                    finish_reason=delta.finish_reason,
                )
            if not trim.done and (rest := trim.flush()):
                part.pieces += 1
                yield Delta(content=rest)
        finally:
            await deltas.aclose()  # the upstream call is released however this ends


async def continue_stream(
    stream: Stream,
    error: UpstreamError,
    health: HealthEngine,
    publish: Publish,
    deadlines: Deadlines,
) -> Stream | None:
    """A stream on the next available target that carries on `stream`'s answer, or None
    when the route does not continue, the answer cannot be, or no target could."""
    plan, request = stream.plan, stream.request
    if plan is None or request is None or plan.on_stream_break != CONTINUE:
        return None
    sent = stream.sent
    if sent.tool_calls or stream.checked or stream.stale_age is not None:
        return None
    text = sent.text()
    sent.broke.add(stream.target.key)
    for target in candidates(plan, stream.target, stream.attempts, sent.broke):
        now = clock.now()
        if target.provider.unavailable_reason() or health.skip_reason(target.key, now):
            continue
        asked = prefilled(request, target, text, len(sent.pieces))
        attempt = UpstreamAttempt(plan, target, asked, publish, deadlines)
        try:
            opened = await attempt.open(stream.attempts, stream.tries)
        except BaseException:
            await attempt.cancel()  # cancelled (the shutdown): close what was opened
            raise
        if isinstance(opened, UpstreamError):
            # the header is long sent: the ledger row's attempts say what was tried
            stream.attempts.append(Attempt(target.key, f"continuation({opened.reason})"))
            continue
        opened.plan, opened.request, opened.sent = plan, request, sent
        part = Part(
            target.name,
            target.provider.name,
            error.reason,
            target.price,
            estimate_prompt_tokens(asked),
        )
        opened.continued = Continued(text, part)
        return opened
    return None
