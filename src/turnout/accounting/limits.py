"""Per-key requests- and tokens-per-minute limits, over a sliding minute."""

from __future__ import annotations

from collections import deque

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
