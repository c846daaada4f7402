"""A prompt's exact count, still running when routing has decided (speculation).

When the bounds (routing/prompt_size.py) leave a target's window undecided and the count
is a long one (SPECULATE_BYTES or more still uncounted, ~2 ms of tokenizer time), the
selector does not wait for it: it starts the count and hands it over with its decision, and
the first attempt starts at once (the upstream's prefill of a long prompt takes far longer
than the count). A shorter count is waited for: it costs less than an upstream request it
might have to cancel. A hedged route always counts first (a hedge could go to a target the
count has not vetted). The scheduler (execute/speculate.py) then
acts on what the count says, per target, once it ends: `skip_reason` for a window the prompt
cannot fit, `clamps` for a kept target whose output must be clamped to the window.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from turnout.model import Request
from turnout.routing.prompt_size import PromptSize
from turnout.routing.targets import Target


@dataclass(slots=True)
class PendingCount:
    """The count of one request's prompt (`task`), and what the selector measured it against:
    `output`, the max_tokens asked for, and `room`, the output a window must leave (all of it on
    a strict route, one token on a clamping route)."""

    size: PromptSize
    task: asyncio.Future[int]
    request: Request
    output: int
    room: int

    @classmethod
    def start(cls, size: PromptSize, request: Request, output: int, room: int) -> PendingCount:
        task = asyncio.ensure_future(size.count())
        # nobody may await a count whose attempt was answered first: never a logged "exception
        # was never retrieved" (a count has no failure of its own to report)
        task.add_done_callback(_retrieved)
        return cls(size, task, request, output, room)

    def done(self) -> bool:
        return self.task.done()

    async def settle(self) -> int:
        """The exact count, awaited; the request learns it (later attempts' output limits are
        clamped to it, as when routing counted first). A cancelled wait leaves the count running."""
        exact = await asyncio.shield(self.task)
        self.request.prompt_tokens = exact
        return exact

    def release(self) -> None:
        """The first attempt was answered before the count ended: the count goes on in the
        background when it is already counting (its result is cached), else it is dropped."""
        if not self.task.done():
            self.size.drop_queued()

    def skip_reason(self, target: Target) -> str | None:
        """Why the counted prompt rules `target` out (the selector's own reason), or None.
        Only once settled."""
        window = target.model.context_window
        exact = self.request.prompt_tokens
        if window is None or exact is None or exact + self.room <= window:
            return None
        return f"context_length({exact}+{self.output}>{window})"

    def clamps(self, target: Target) -> bool:
        """The counted prompt fits `target` but leaves it less than the max_tokens asked for:
        it must be asked for less (a clamping route; a strict route skips it instead)."""
        window = target.model.context_window
        exact = self.request.prompt_tokens
        return window is not None and exact is not None and exact + self.output > window


def _retrieved(task: asyncio.Future[int]) -> None:
    if not task.cancelled():
        task.exception()
