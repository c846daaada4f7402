"""Running an embeddings request over its plan: failover across targets, retries on the same
target, health's skips, and one outcome per attempt, published as AttemptFinished so that
breakers, cooldowns and latency learn from embeddings as they do from chat.

Why not the chat Scheduler: its attempts are chat attempts through and through (output
limits, the output guard, streams and their commit, stale answers, context windows), and its
hot path is benchmarked. An embeddings call is one request and one answer, so this is the
scheduler's failover loop alone, built on the same pieces: `failures` (retry and backoff),
the error POLICY table, health's `skip_reason`, and the same AllTargetsFailed and
PassThroughError the core already renders.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from turnout import clock
from turnout.events import AttemptFinished, Publish
from turnout.execute.failures import backoff_delay, should_retry_same_target, timeout_error
from turnout.execute.no_answer import AllTargetsFailed, PassThroughError
from turnout.health import HealthEngine
from turnout.model import Attempt, Outcome, UpstreamError, Usage
from turnout.model.embeddings import EmbeddingRequest, EmbeddingResult
from turnout.model.tokens import CHARS_PER_TOKEN
from turnout.providers.base import Call
from turnout.routing import Plan, Target
from turnout.routing.capabilities import count_tokens

_PROBE = EmbeddingRequest(model="", inputs=["ping"])
_COUNT_OFF_LOOP = 256 * 1024  # inputs larger than this (characters) are counted on a thread


@dataclass(slots=True)
class Embedded:
    result: EmbeddingResult  # its usage always set: the upstream's, or counted here
    target: Target
    attempts: list[Attempt]  # the targets skipped or failed before it, and why
    tries: int
    usage_estimated: bool = False  # the upstream did not report usage


def estimate_tokens(request: EmbeddingRequest) -> int:
    """The inputs' tokens, cheaply: token ids counted, texts at four characters a token."""
    if request.tokenized:
        return sum(len(tokens) for tokens in request.inputs)
    return sum(len(text) for text in request.inputs) // CHARS_PER_TOKEN + 1


def _counted_tokens(request: EmbeddingRequest) -> int:
    """The inputs' tokens: token ids counted, texts with the routing tokenizer."""
    if request.tokenized:
        return estimate_tokens(request)
    return sum(count_tokens(text) for text in request.inputs if isinstance(text, str))


async def input_tokens(request: EmbeddingRequest) -> int:
    """`_counted_tokens`, on a thread for large inputs (never stalling the event loop)."""
    if request.tokenized or sum(len(t) for t in request.inputs) <= _COUNT_OFF_LOOP:
        return _counted_tokens(request)
    return await asyncio.to_thread(_counted_tokens, request)


class Embedder:
    def __init__(self, health: HealthEngine, publish: Publish) -> None:
        self.health = health
        self.publish = publish

    async def embed(
        self, plan: Plan, request: EmbeddingRequest, skipped: list[Attempt], estimate: int
    ) -> Embedded:
        """The first target's vectors that answers; AllTargetsFailed or PassThroughError.
        `estimate`: the inputs' tokens, for health's rate-limit windows."""
        attempts, errors, tries = list(skipped), [], 0
        for target in plan.targets:
            skip = self._skip_reason(target, estimate)
            if skip:
                attempts.append(Attempt(target.key, skip))
                continue
            for attempt in range(plan.retry.attempts):
                tries += 1
                result = await self._try(plan, target, request)
                if not isinstance(result, UpstreamError):
                    return await self._embedded(result, target, attempts, tries, request)
                error = result
                if not error.error_class.fails_over:  # model.errors.POLICY
                    raise PassThroughError(error, attempts, target, tries)
                if not should_retry_same_target(error, attempt, plan.retry):
                    break
                await asyncio.sleep(backoff_delay(error, attempt, plan.retry))
            errors.append(error)
            attempts.append(Attempt(target.key, error.reason))
        raise AllTargetsFailed(plan, attempts, errors, self._retry_after(plan, errors), tries)

    async def probe(self, plan: Plan, target: Target) -> None:
        """A one-word embedding that tells a half-open or misconfigured model's fate (a chat
        probe would fail on an embeddings model and keep its breaker open)."""
        await self._try(plan, target, _PROBE, probe=True)

    # --- one attempt ---------------------------------------------------------------------------

    async def _try(
        self, plan: Plan, target: Target, request: EmbeddingRequest, probe: bool = False
    ) -> EmbeddingResult | UpstreamError:
        call = Call(target.upstream_model, target.timeouts)
        started, t0 = clock.now(), time.perf_counter()
        error: UpstreamError | None = None
        result: EmbeddingResult | None = None
        try:
            async with asyncio.timeout(target.timeouts.total):
                result = await target.provider.embed(request, call)
        except TimeoutError:
            error = timeout_error("total")
        except UpstreamError as exc:
            error = exc
        self.publish(
            AttemptFinished(
                Outcome(
                    route=plan.route,
                    model=target.name,
                    provider=target.provider.name,
                    ok=error is None,
                    error_class=error.error_class if error else None,
                    status=error.status if error else call.status,
                    message=error.message if error else None,
                    started=started,
                    latency=time.perf_counter() - t0,
                    usage=result.usage if result else None,
                    headers=call.headers,
                    retry_after=error.retry_after if error else None,
                    probe=probe,
                    deployment=target.deployment,
                    request_id=request.request_id,
                    headers_at=call.headers_at,
                    ended=clock.now(),
                )
            )
        )
        if error is not None:
            return error
        assert result is not None
        return result

    async def _embedded(
        self,
        result: EmbeddingResult,
        target: Target,
        attempts: list[Attempt],
        tries: int,
        request: EmbeddingRequest,
    ) -> Embedded:
        estimated = result.usage is None or not result.usage.prompt_tokens
        if estimated:
            result.usage = Usage(prompt_tokens=await input_tokens(request))
        return Embedded(result, target, attempts, tries, estimated)

    # --- health --------------------------------------------------------------------------------

    def _skip_reason(self, target: Target, tokens: int) -> str | None:
        reason = target.provider.unavailable_reason()
        if reason:
            return f"misconfigured({reason})"
        return self.health.skip_reason(target.key, clock.now(), tokens, 0)

    def _retry_after(self, plan: Plan, errors: list[UpstreamError]) -> float:
        """When the first target is expected back (as the chat scheduler tells its clients)."""
        now = clock.now()
        back = [self.health.available_at(t.key, now) - now for t in plan.targets]
        back += [e.retry_after for e in errors if e.retry_after is not None]
        known = [b for b in back if b > 0]
        return min(known) if known else self.health.config.rate_limit_cooldown
