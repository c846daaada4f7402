"""Per-key requests- and tokens-per-minute limits, over a sliding minute; failed
authentications per client address."""

from __future__ import annotations

from collections import OrderedDict, deque

from turnout.accounting.records import KeyRecord

_MINUTE = 60.0


class KeyLimiter:
    def __init__(self) -> None:
        self._requests: dict[str, deque[float]] = {}
        self._tokens: dict[str, deque[tuple[float, int]]] = {}

    def admit(self, key: KeyRecord, now: float) -> float | None:
        """None to let the request in; else seconds until it would be."""
        if key.rpm is not None:
            times = self._requests.setdefault(key.id, deque())
            while times and times[0] <= now - _MINUTE:
                times.popleft()
            if len(times) >= key.rpm:
                return times[0] + _MINUTE - now
        if key.tpm is not None:
            used = self._tokens.setdefault(key.id, deque())
            while used and used[0][0] <= now - _MINUTE:
                used.popleft()
            if sum(tokens for _, tokens in used) >= key.tpm:
                return used[0][0] + _MINUTE - now
        if key.rpm is not None:
            self._requests[key.id].append(now)
        return None

    def spent_tokens(self, key: KeyRecord, now: float, tokens: int) -> None:
        if key.tpm is not None and tokens:
            self._tokens.setdefault(key.id, deque()).append((now, tokens))


class FailureLimiter:
    """Failed authentications per client address over a sliding window, so that an address
    guessing keys is refused for a while (429) instead of being answered as fast as it asks.

    Memory is bounded: at most `max_failures` times per address, and the `max_addresses`
    most recently failing addresses (the least recent is forgotten first)."""

    def __init__(
        self, max_failures: int = 10, window: float = 60.0, max_addresses: int = 10_000
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.max_addresses = max_addresses
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def blocked_for(self, address: str, now: float) -> float | None:
        """Seconds until this address may try again; None if it may now."""
        times = self._failures.get(address)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[address]
            return None
        if len(times) < self.max_failures:
            return None
        return times[0] + self.window - now

    def failed(self, address: str, now: float) -> None:
        times = self._failures.pop(address, None)
        if times is None:
            times = deque(maxlen=self.max_failures)
        times.append(now)
        self._failures[address] = times  # now the most recent
        if len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)
