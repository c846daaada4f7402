"""Long prompts (issue 16, item 5): counted only when the bounds cannot decide, earlier
messages' counts cached, and a long count off the event loop.

The counting itself is checked against tiktoken directly (bounds, cache, split counts); the
routing decisions on a real Gateway's selector, against the decision the exact count makes;
the serving behaviour through a real `turnout serve` process."""

from __future__ import annotations

import asyncio
import json
import random
import sys
from typing import Any

import aiohttp
import anthropic
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import sdk_client, sim_config
from tests.fuzz_strategies import fuzz_settings
from tests.upstreams import serve_app
from turnout.config import parse_config
from turnout.gateway import Gateway
from turnout.model import Request
from turnout.model.tokens import PER_MESSAGE, prompt_parts
from turnout.routing import prompt_size
from turnout.routing.prompt_size import (
    CACHE,
    MAX_TOKEN_BYTES,
    PromptSize,
    bytes_per_token_bound,
    count_text,
    lower_bound,
)

# Unicode's White_Space property: what `\s` means in tiktoken's (Rust) pre-tokenizer pattern
WHITE_SPACE = {
    *range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
    0x2028, 0x2029, 0x202F, 0x205F, 0x3000,
}  # fmt: skip
# texts whose tokens are long, short, or odd: words, code, digits, runs of one character,
# CJK, emoji, every kind of whitespace, special-token text, the separators str.split knows
UNITS = [
    "The quick brown fox jumps over the lazy dog. ",
    "def f(x):\n    return x * 2  # double\n",
    "1234567890",
    "=" * 40,
    " " * 33,
    "\t\n\r\n",
    "東京は日本の首都です。",
    "💥🙂",
    "\u00a0\u3000\u2028x\u205f",
    "<|endoftext|><|fim_prefix|>",
    "a\x1cb\x1d!\x1e?\x1f",
    "ﬁ%$#@! ~~~ ",
    "'s 're 'll ",
    "\ud800z",  # a lone surrogate (JSON allows one): counted as U+FFFD, 3 bytes
]
texts = st.lists(
    st.tuples(st.sampled_from(UNITS), st.integers(0, 400)), min_size=1, max_size=4
).map(lambda runs: "".join(unit * n for unit, n in runs))


def _messages(parts: list[str]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": part} for part in parts]


def _fresh(request: Request) -> int:
    """The count with no cache and no bounds: every text through tiktoken."""
    parts = prompt_parts(request)
    return sum(count_text(p) for p in parts) + PER_MESSAGE * len(request.messages)


# --- the counting ---------------------------------------------------------------------------


def test_the_byte_bound_is_cl100k_longest_token() -> None:
    assert bytes_per_token_bound() == MAX_TOKEN_BYTES


def test_str_split_whitespace_is_the_patterns_whitespace_but_four_separators() -> None:
    """The word bound relies on it (prompt_size's doc): str.split separates at `\\s` and at
    U+001C-U+001F, which a text must not contain for the word bound to count."""
    python = {c for c in range(sys.maxunicode + 1) if chr(c).isspace()}
    assert python - WHITE_SPACE == {0x1C, 0x1D, 0x1E, 0x1F}
    assert WHITE_SPACE <= python


@fuzz_settings(150)
@given(texts)
def test_bounds_hold_and_the_count_is_tiktokens(text: str) -> None:
    exact = count_text(text)
    encoding = prompt_size._encoding()
    assert exact == len(encoding.encode(text, disallowed_special=()))  # as counted before
    size = len(text.encode(errors="surrogatepass"))
    assert lower_bound(text, size) <= exact <= size
    assert lower_bound(text, size, scan=len(text) // 3) <= exact  # a prefix's words too


@fuzz_settings(150)
@given(texts, st.integers(2, 5), st.integers(2, 4000))
def test_split_counts_add_up_to_the_whole(text: str, pieces: int, min_chars: int) -> None:
    chunks = prompt_size._split(text, pieces, min_chars)
    assert "".join(chunks) == text
    assert sum(count_text(c) for c in chunks) == count_text(text)


def test_a_long_text_is_split_into_the_pieces_asked() -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 10_000
    chunks = prompt_size._split(text, 3)
    assert len(chunks) == 3 and "".join(chunks) == text
    assert sum(count_text(c) for c in chunks) == count_text(text)


def test_cached_counts_equal_fresh_counts_as_a_conversation_grows() -> None:
    rng = random.Random(5)
    # each turn 3-40 KB: the new turn is counted inline or on the pool, the rest is cached
    turns = ["".join(rng.choice(UNITS) for _ in range(rng.randint(300, 1500))) for _ in range(8)]
    for n in range(1, len(turns) + 1):
        request = Request(model="chat", messages=_messages(turns[:n]))
        counted = asyncio.run(PromptSize.of(request).count())
        assert counted == _fresh(request)
        cached = PromptSize.of(request)
        cached.refine()  # every text seen: exact from the cache alone, no tokenizer
        assert cached.exact == counted


def test_a_large_uncached_text_is_counted_on_the_pool_exactly() -> None:
    text = "".join(random.Random(9).choice(UNITS) for _ in range(9000))  # ~300 KB
    request = Request(model="chat", messages=_messages([text, "and a question?"]))
    assert len(text.encode()) > prompt_size.INLINE_BYTES
    assert asyncio.run(PromptSize.of(request).count()) == _fresh(request)


def test_many_short_messages_are_counted_in_a_few_batches_exactly() -> None:
    rng = random.Random(11)
    parts = ["".join(rng.choice(UNITS) for _ in range(rng.randint(1, 6))) for _ in range(600)]
    request = Request(model="chat", messages=_messages(parts))
    assert sum(len(p.encode(errors="surrogatepass")) for p in parts) > prompt_size.INLINE_BYTES
    assert asyncio.run(PromptSize.of(request).count()) == _fresh(request)
    chunks = [(i, p) for i, p in enumerate(parts)]
    batches = prompt_size._batches(chunks, 2)
    assert len(batches) == 2 and sorted(c for b in batches for c in b) == sorted(chunks)


def test_a_small_lru_drops_the_least_recently_used() -> None:
    cache = prompt_size.CountCache(entries=2)
    cache.put(b"a", 1)
    cache.put(b"b", 2)
    assert cache.get(b"a") == 1  # a is now the most recent
    cache.put(b"c", 3)
    assert (cache.get(b"a"), cache.get(b"b"), cache.get(b"c")) == (1, None, 3)


# --- the routing decision ---------------------------------------------------------------------

WINDOWS = {"w500": 500, "w3k": 3_000, "w20k": 20_000, "w60k": 60_000}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Gateway:
    upstream = {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}  # never called
    models: dict[str, Any] = {
        n: {"provider": "up", "context_window": w} for n, w in WINDOWS.items()
    }
    models["unbounded"] = {"provider": "up"}  # no window: the selection is never empty
    targets = [*WINDOWS, "unbounded"]
    config = {
        "providers": {"up": upstream},
        "models": models,
        "routes": {
            "chat": {"targets": targets},
            "strict": {"targets": targets, "max_tokens": "strict"},
        },
        "ledger": {"backend": "off"},
        "data_dir": str(tmp_path_factory.mktemp("data")),
    }
    return Gateway(parse_config(config))


@fuzz_settings(120)
@given(
    st.lists(texts, min_size=1, max_size=3),
    st.sampled_from([None, 1, 100, 2_000, 30_000]),
    st.sampled_from(["chat", "strict"]),
    st.booleans(),
)
def test_the_bounds_never_change_the_routing_decision(
    gateway: Gateway, parts: list[str], max_tokens: int | None, route: str, clear: bool
) -> None:
    """Whatever the bounds and the cache settle without counting, the selection is the one
    the exact count makes: the same targets skipped, and a kept target's output limit
    clamped only when it is known (when it was not counted, nothing kept needs clamping).
    A count routing did not wait for (speculation) skips the rest once it ends."""
    if clear:
        CACHE._counts.clear()  # (else texts of earlier examples are cached)
    plan = gateway.planner.plan(route)
    assert plan is not None
    request = Request(model=route, messages=_messages(parts), max_tokens=max_tokens)
    selection, counted_out = asyncio.run(_select(gateway, plan, request))
    exact = _fresh(request)
    output = max_tokens or 0
    room = output if route == "strict" else 1
    skipped = {a.model for a in selection.skipped if a.reason.startswith("context_length")}
    assert skipped | counted_out == {n for n, window in WINDOWS.items() if exact + room > window}
    if request.prompt_tokens is not None:
        assert request.prompt_tokens == exact
    kept = [
        t for t in selection.plan.targets if t.model.context_window and t.name not in counted_out
    ]
    for target in kept:
        window = target.model.context_window
        assert window is not None
        if request.prompt_tokens is None:
            assert exact + output <= window  # uncounted: max_tokens fits as asked
        elif exact + output > window:
            assert target.output_limit(request) == max(window - exact, 1)


async def _select(gateway: Gateway, plan: Any, request: Request) -> tuple[Any, set[str]]:
    """The selection, and the targets its pending count (if any) rules out once it ends."""
    selection = await gateway.selector.select(plan, request)
    pending = selection.pending
    if pending is None:
        return selection, set()
    await pending.settle()
    return selection, {t.name for t in selection.plan.targets if pending.skip_reason(t)}


# --- through a gateway process ----------------------------------------------------------------

FOX = "The quick brown fox jumps over the lazy dog. "  # 10 tokens, 9 words, 45 bytes


def test_a_long_prompt_goes_past_the_small_window_to_the_large_one(gateway_factory) -> None:
    config = sim_config(
        {
            "small": {"context_window": 3_800, "reply": "from small"},
            "tiny": {"context_window": 2_000, "reply": "from tiny"},
            "big": {"context_window": 200_000, "reply": "from big"},
        },
        {"chat": {"targets": ["small", "big"]}, "tight": {"targets": ["tiny", "big"]}},
    )
    gateway = gateway_factory(config)
    client = sdk_client(gateway)
    messages = [{"role": "user", "content": FOX * 400}]  # 4,000 tokens, 3,600 words, 18 KB
    # 2,000: the words alone (3,600) prove it too long, so it is not counted (and not cached)
    raw = client.chat.completions.with_raw_response.create(
        model="tight", messages=messages, max_tokens=100
    )
    assert raw.parse().choices[0].message.content == "from big"
    assert raw.headers["x-turnout-fallback"] == "tiny=context_length(at least 3604+100>2000)"
    # 3,800: between the bounds (3,600 words < 3,804 < 18,000 bytes), so it is counted now,
    # and the reason says the count
    raw = client.chat.completions.with_raw_response.create(
        model="chat", messages=messages, max_tokens=100
    )
    assert raw.parse().choices[0].message.content == "from big"
    reason = raw.headers["x-turnout-fallback"]
    assert reason.startswith("small=context_length(") and reason.endswith("+100>3800)")
    counted = int(reason.split("(")[1].split("+")[0])
    assert counted == count_text(FOX * 400) + PER_MESSAGE
    # a short prompt still fits the small model: no count is even needed
    raw = client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=100
    )
    assert raw.parse().choices[0].message.content == "from small"


def test_count_tokens_counts_a_long_prompt_exactly_cold_and_cached(gateway_factory) -> None:
    gateway = gateway_factory(
        sim_config({"m": {"context_window": 200_000}}, {"chat": {"targets": ["m"]}})
    )
    client = anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0)
    text = FOX * 2_000  # 90 KB: counted on the counting threads, then from the cache
    expected = count_text(text) + PER_MESSAGE
    for _ in range(2):
        counted = client.messages.count_tokens(
            model="chat", messages=[{"role": "user", "content": text}]
        )
        assert counted.input_tokens == expected


def _answering_upstream() -> web.Application:
    """Answers at once."""

    async def handler(request: web.Request) -> web.Response:
        await request.read()
        body = {
            "id": "x",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "ok"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        return web.json_response(body)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", handler)
    app.router.add_post("/long/v1/chat/completions", handler)
    return app


def test_a_long_count_does_not_hold_up_a_small_request(gateway_factory) -> None:
    """Small requests sent after the long prompt was fully sent, one after another, complete
    while the long prompt is still being counted (the gateway logs the moment its count ends:
    the long request itself does not wait for it, tests/test_speculative_count.py). Counted
    on the event loop, none could: the loop would serve them only after the count."""
    rng = random.Random(3)
    words = [w for unit in UNITS[:3] for w in unit.split()] + ["gateway", "routing", "window"]
    text = " ".join(rng.choice(words) for _ in range(1_200_000))  # ~7 MB, ~1.3M tokens
    with serve_app(_answering_upstream()) as port:
        base = f"http://127.0.0.1:{port}"
        config = {
            "providers": {
                "up": {"kind": "openai", "base_url": base + "/v1"},
                "longup": {"kind": "openai", "base_url": base + "/long/v1"},
            },
            "models": {
                # between the bounds: a window the prompt fits only once counted
                "big": {"provider": "longup", "context_window": 3_000_000},
                "fast": {"provider": "up"},
            },
            "routes": {"long": {"targets": ["big"]}, "chat": {"targets": ["fast"]}},
            "log_level": "debug",  # (the count's end is logged at debug level)
        }
        gateway = gateway_factory(config)

        def counted() -> bool:
            return "prompt counted:" in gateway.log()

        before, total = asyncio.run(_small_requests_during_long_count(gateway, text, counted))
    assert total >= before >= 5, f"{before} of {total} small requests before the count ended"


async def _small_requests_during_long_count(
    gateway: Any, text: str, counted: Any
) -> tuple[int, int]:
    body = json.dumps({"model": "long", "messages": [{"role": "user", "content": text}]}).encode()
    small = json.dumps({"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
    sent = asyncio.Event()

    async def chunks() -> Any:
        for start in range(0, len(body), 1 << 20):
            yield body[start : start + (1 << 20)]
        sent.set()

    url = gateway.base_url + "/chat/completions"
    json_headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession() as session:

        async def long_request() -> int:
            async with session.post(url, data=chunks(), headers=json_headers) as response:
                await response.read()
                return response.status

        task = asyncio.create_task(long_request())
        await sent.wait()
        before = total = 0
        while not counted() and total < 2000:
            async with session.post(url, data=small, headers=json_headers) as response:
                assert response.status == 200
                await response.read()
            total += 1
            before += not counted()
        assert await task == 200
        for _ in range(6000):  # a count did run (and ends): up to a minute
            if counted():
                break
            await asyncio.sleep(0.01)
        assert counted()
    return before, total
