"""The shared-timer timeouts behave like asyncio.timeout: cut off, pass through, nest."""

from __future__ import annotations

import asyncio

import pytest

from turnout.execute.deadlines import Deadlines

deadlines = Deadlines()  # shared by every test, each on its own loop, as in the gateway's tests


async def test_a_body_past_its_deadline_raises_timeout_error():
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        async with deadlines.timeout(0.05) as deadline:
            await asyncio.sleep(5)
    assert deadline.expired
    assert loop.time() - started >= 0.05
    assert asyncio.current_task().cancelling() == 0  # the cancel it used is taken back


async def test_a_body_that_finishes_in_time_is_untouched():
    async with deadlines.timeout(5) as deadline:
        await asyncio.sleep(0.01)
    assert not deadline.expired
    await asyncio.sleep(0.1)  # no cancellation left behind to hit a later await


async def test_none_never_times_out():
    async with deadlines.timeout_at(None) as deadline:
        await asyncio.sleep(0.08)
    assert not deadline.expired


async def test_a_deadline_already_past_cancels_at_the_first_await():
    loop = asyncio.get_running_loop()
    reached = []
    with pytest.raises(TimeoutError):
        async with deadlines.timeout_at(loop.time() - 1):
            reached.append("body")
            await asyncio.sleep(1)
            reached.append("after the await")
    assert reached == ["body"]


async def test_a_cancellation_from_outside_passes_through():
    async def body():
        async with deadlines.timeout(5):
            await asyncio.sleep(5)

    task = asyncio.create_task(body())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_inner_of_two_deadlines_fires_and_only_it():
    async with deadlines.timeout(5) as outer:
        with pytest.raises(TimeoutError):
            async with deadlines.timeout(0.05):
                await asyncio.sleep(5)
        await asyncio.sleep(0.01)  # the outer body goes on
    assert not outer.expired


async def test_the_outer_deadline_fires_through_an_inner_one():
    with pytest.raises(TimeoutError):
        async with deadlines.timeout(0.05), deadlines.timeout(5) as inner:
            await asyncio.sleep(5)
    assert not inner.expired


async def test_tasks_of_the_same_loop_share_one_deadlines_object():
    mine = Deadlines()

    async def one(delay: float) -> bool:
        async with mine.timeout(delay) as deadline:
            await asyncio.sleep(0.01)
        return deadline.expired

    assert await asyncio.gather(one(5), one(5)) == [False, False]
    assert mine.pending == {}  # nothing left behind once the bodies end


async def test_many_concurrent_deadlines_each_fire_for_their_own_task():
    async def one(delay: float, work: float) -> str:
        try:
            async with deadlines.timeout(delay):
                await asyncio.sleep(work)
        except TimeoutError:
            return "timed out"
        return "done"

    results = await asyncio.gather(
        *(one(0.05, 5) for _ in range(50)), *(one(5, 0.01) for _ in range(50))
    )
    assert results == ["timed out"] * 50 + ["done"] * 50


async def test_a_call_outside_any_task_leaves_other_deadlines_pending():
    mine = Deadlines()
    loop = asyncio.get_running_loop()
    refused = loop.create_future()

    def outside_a_task() -> None:
        try:
            mine.task()
        except RuntimeError as exc:
            refused.set_result(exc)

    with pytest.raises(TimeoutError):
        async with mine.timeout(0.1):
            loop.call_soon(outside_a_task)
            assert isinstance(await refused, RuntimeError)
            assert len(mine.pending) == 1  # still there: it fires below
            await asyncio.sleep(5)


async def test_a_plain_with_cuts_off_and_passes_cancellation_through_as_async_with():
    # (the attempt's whole-answer deadline is entered with `with`: no coroutines on entry)
    with pytest.raises(TimeoutError), deadlines.timeout(0.05) as deadline:
        await asyncio.sleep(5)
    assert deadline.expired
    assert asyncio.current_task().cancelling() == 0

    async def body():
        with deadlines.timeout(5):
            await asyncio.sleep(5)

    task = asyncio.create_task(body())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
