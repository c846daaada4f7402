"""The default store: one process, nothing to share."""

from __future__ import annotations

from typing import Any

from turnout.health.state.base import ApplyRemote, StateStore


class MemoryStore(StateStore):
    async def start(self, apply: ApplyRemote) -> None:
        return None

    def publish(self, key: str, document: dict[str, Any]) -> None:
        return None

    async def close(self) -> None:
        return None

    @property
    def shared(self) -> bool:
        return False
