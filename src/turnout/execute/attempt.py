"""One upstream attempt: one try at one target, with a lifecycle of its own.

`complete()` asks for a whole answer; `open()` starts a stream and waits for its first
content token (the commit) within the TTFT timeout, then hands the rest to a Stream (a JSON
answer commits once its first character shows it can be the JSON asked for, and is checked
as it streams: execute/stream_check.py);
`cancel()` abandons it. Each attempt records its own outcome exactly once, as an
AttemptFinished event (health learns only from these). An attempt cancelled because it lost
a race or its client left records nothing: that says nothing about the model.

The scheduler decides which attempts to make and when; attempts know nothing of each other,
which is what lets two run at once (hedging) or one take over a broken stream
(continuation) without changing this file.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator

from turnout import clock
from turnout.dialects.classify import output_limit_in
from turnout.events import AttemptFinished, Publish
from turnout.execute import guard
from turnout.execute.accumulate import Accumulator
from turnout.execute.deadlines import Deadlines
from turnout.execute.failures import timeout_error
from turnout.execute.stale import StaleCache
from turnout.execute.stream import Stream, close_quietly
from turnout.execute.stream_check import OK, Checked, StreamCheck
from turnout.model import Delta, ErrorClass, Outcome, Request, Response, UpstreamError, Usage
from turnout.providers.base import Call
from turnout.routing import Plan, Target
from turnout.routing.targets import learn_output_limit


def _rewritten(deltas: list[Delta], content: str) -> list[Delta]:
    """A buffered stream whose text is replaced by `content` (in its first content delta)."""
    out, placed = [], False
    for delta in deltas:
        if delta.content is not None:
            if placed:
                delta = dataclasses.replace(delta, content=None)
            else:
                delta, placed = dataclasses.replace(delta, content=content), True
        out.append(delta)
    return out


class UpstreamAttempt:
    __slots__ = (
        "_asked_less",
        "_check",
        "_deadlines",
        "_held",
        "_publish",
        "_recorded",
        "_source",
        "_stale",
        "_t0",
        "call",
        "plan",
        "probe",
        "request",
        "started",
        "target",
        "ttft",
        "usage_seen",
    )

    def __init__(
        self,
        plan: Plan,
        target: Target,
        request: Request,
        publish: Publish,
        deadlines: Deadlines,
        stale: StaleCache | None = None,
        held: list[Outcome] | None = None,
        probe: bool = False,
    ) -> None:
        self.plan = plan
        self.probe = probe  # a synthetic request of health's: its latency is not the model's
        self.target = target
        limit = target.output_limit(request)
        # more max_tokens than this target can give: it is asked for what it can (clamp
        # routes; strict routes never try it)
        self.request = request if limit is None else dataclasses.replace(request, max_tokens=limit)
        self.call = Call(target.upstream_model, target.timeouts)
        self.started = clock.now()  # epoch seconds, for the outcome and the ledger
        self.ttft: float | None = None  # seconds to the first content token, once known
        # usage a stream reported before its first token (Anthropic's message_start): what
        # an attempt cancelled then (a lost hedge race) is known to have cost
        self.usage_seen: Usage | None = None
        self._t0 = time.perf_counter()
        self._publish = publish
        self._deadlines = deadlines
        # invalid answers are held back until another model answers this request validly:
        # a schema no model can satisfy is the client's doing and must not open breakers
        self._held = held
        self._stale = stale  # where a route with stale_if_error keeps good answers
        self._source: AsyncIterator[Delta] | None = None
        self._check: StreamCheck | Checked | None = None  # a streamed JSON answer's check
        self._recorded = False
        self._asked_less = False  # asked again with the output limit the upstream stated

    # --- whole answers ----------------------------------------------------------------------

    async def complete(self, guarded: bool = False) -> Response | UpstreamError:
        """The whole answer, checked by the output guard when `guarded`; or why not."""
        if not guarded and self.plan.stale_max_age is None:
            self.call.pass_through = self.request.answer_format  # nothing here reads the answer
        try:
            with self._deadlines.timeout(self.target.timeouts.total):
                response = await self.target.provider.complete(self.request, self.call)
        except TimeoutError:
            return self.failed(timeout_error("total"))
        except UpstreamError as exc:
            if self._asks_less(exc):
                return await self.complete(guarded)
            return self.failed(exc)
        invalid = guarded and guard.check(response, self.request, self.plan.output_schema)
        if invalid:
            return self.failed(invalid)
        self.record(usage=response.usage)
        self._keep(response)
        return response

    # --- streams ----------------------------------------------------------------------------

    async def open(self, attempts: list, tries: int) -> Stream | UpstreamError:
        """Start a stream and wait for its first content token within the TTFT timeout.
        A stream that breaks or stalls before then is this attempt's failure, invisible to
        the client; after it, the Stream carries the rest (and records the outcome)."""
        target, request, plan = self.target, self.request, self.plan
        loop, _ = self._deadlines.task()
        deadline = loop.time() + target.timeouts.total
        ttft_deadline = min(deadline, loop.time() + target.timeouts.ttft)
        source = self._source = target.provider.stream(request, self.call)
        buffered: list[Delta] = []
        guarded = guard.applies(request, plan.output_schema)
        check: StreamCheck | None = None
        try:
            async with self._deadlines.timeout_at(ttft_deadline):
                async for delta in source:
                    buffered.append(delta)
                    if delta.has_content or delta.finish_reason:
                        break
                    if delta.usage is not None:
                        self.usage_seen = delta.usage
                else:
                    if not buffered:
                        raise UpstreamError(ErrorClass.STREAM_BROKEN, "stream ended empty")
                self.ttft = time.perf_counter() - self._t0
                first_token_at = clock.now()  # (started + ttft would mix in a real duration)
                if guarded and not plan.buffer_streams:
                    # JSON asked for: held until its first character says it can be JSON
                    check = self._check = StreamCheck(request, plan.output_schema)
                    await check.hold(source, buffered)
            if guarded and plan.buffer_streams:
                buffered = await self._whole_and_checked(source, buffered, deadline)
        except TimeoutError:
            error = timeout_error("ttft" if ttft_deadline < deadline else "total")
        except UpstreamError as exc:
            error = exc
        else:
            return Stream(
                target,
                attempts,
                tries,
                buffered,
                source if check is None else check.relayed(source),
                self.finished,
                deadline,
                plan.stale_max_age is not None,
                self._deadlines,
                first_token_at=first_token_at,
                check=self._check,
            )
        await close_quietly(source)
        if self._asks_less(error):
            return await self.open(attempts, tries)
        return self.failed(error)

    def _asks_less(self, error: UpstreamError) -> bool:
        """The upstream refused a max_tokens larger than the model can write and said how
        much it can: learn it (later requests are clamped before they are sent) and, on a
        clamping route, ask again, once, for that much (said in x-turnout-max-tokens)."""
        asked = self.request.max_tokens
        refused = error.error_class in (ErrorClass.CLIENT_ERROR, ErrorClass.CONTEXT_LENGTH)
        if not refused or asked is None or self._asked_less:
            return False
        limit = output_limit_in(error.message)
        if limit is None or limit >= asked:
            return False
        learn_output_limit(self.target, limit)
        if self.plan.strict_max_tokens:
            return False  # the client's max_tokens stands: the refusal goes back to it
        self._asked_less = True
        self.request = dataclasses.replace(self.request, max_tokens=limit)
        return True

    async def _whole_and_checked(
        self, source: AsyncIterator[Delta], buffered: list[Delta], deadline: float
    ) -> list[Delta]:
        """The client asked for JSON and the route validates streams: the whole answer is
        read and checked before the first byte goes out (raises the guard's error)."""
        async with self._deadlines.timeout_at(deadline):
            buffered += [delta async for delta in source]
        whole = Accumulator()
        for delta in buffered:
            whole.add(delta)
        answer = whole.response("", self.target.name)
        invalid = guard.check(answer, self.request, self.plan.output_schema)
        if invalid:
            raise invalid
        if answer.content is not None:  # (a tool call as the answer is not checked)
            self._check = Checked(OK)
            # the guard may have unwrapped a code fence
            return _rewritten(buffered, answer.content)
        return buffered

    def finished(
        self, error: UpstreamError | None, usage: Usage | None, kept: Accumulator | None
    ) -> None:
        """A committed stream ended (well, or broken after its first token)."""
        check = self._check
        if error is None and check is not None and check.error is not None:
            # a committed answer that is not the JSON asked for: the client has it already,
            # no other answer to this request will vouch for or against it, so it counts now
            self._held = None
            self.record(check.error, usage)
            return
        self.record(error, usage)
        if kept is not None and (check is None or check.verdict in (None, OK)):
            self._keep(kept.response("", self.target.name))

    async def cancel(self) -> None:
        """Abandon the attempt (it lost a race, or nobody waits for it): the upstream call is
        closed and nothing is recorded."""
        self._recorded = True
        if self._source is not None:
            await close_quietly(self._source)

    # --- the outcome --------------------------------------------------------------------------

    def failed(self, error: UpstreamError) -> UpstreamError:
        self.record(error)
        return error

    def record(self, error: UpstreamError | None = None, usage: Usage | None = None) -> None:
        """This attempt's outcome, published once (health subscribes)."""
        if self._recorded:
            return
        self._recorded = True
        outcome = Outcome(
            route=self.plan.route,
            model=self.target.name,
            provider=self.target.provider.name,
            ok=error is None,
            error_class=error.error_class if error else None,
            status=error.status if error else self.call.status,
            message=error.message if error else None,
            started=self.started,
            ttft=self.ttft,
            latency=time.perf_counter() - self._t0,
            usage=usage,
            headers=self.call.headers,
            retry_after=error.retry_after if error else None,
            probe=self.probe,
            deployment=self.target.deployment,
            request_id=self.request.request_id,
            headers_at=self.call.headers_at,
            ended=clock.now(),
        )
        if (
            self._held is not None
            and error is not None
            and error.error_class is ErrorClass.INVALID_OUTPUT
        ):
            self._held.append(outcome)
            return
        self._publish(AttemptFinished(outcome))

    def _keep(self, response: Response) -> None:
        if self._stale is not None and self.plan.stale_max_age is not None:
            self._stale.put(self.plan.route, self.request, response, self.target.name)
