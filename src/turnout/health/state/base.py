"""The state-store interface: publish a state document, hear of other processes' ones.

Reads never go to the store: each process keeps the state it routes by in memory and the
store only carries changes between processes, so the hot path does no I/O."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

ApplyRemote = Callable[[str, dict[str, Any]], None]


class StateStore(ABC):
    @abstractmethod
    async def start(self, apply: ApplyRemote) -> None:
        """Load the shared state (each document through `apply`) and follow its changes."""

    @abstractmethod
    def publish(self, key: str, document: dict[str, Any]) -> None:
        """Share a changed document. Never blocks: the write happens in the background."""

    @abstractmethod
    async def close(self) -> None: ...

    @property
    @abstractmethod
    def shared(self) -> bool:
        """Whether other processes currently see what this one publishes."""
