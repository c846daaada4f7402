"""A rollout's state (its stage, its windows, what was decided and why) and where it is kept
so that it survives a restart: a JSON file in the data directory, written whole."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from turnout.rollouts.judge import Window
from turnout.rollouts.shadow import ShadowStats

log = logging.getLogger("turnout.rollouts")

Status = Literal["running", "promoted", "rolled_back", "aborted"]
_HISTORY = 50  # decisions kept per route


@dataclass(slots=True)
class RolloutState:
    route: str
    candidate: str
    stages: tuple[float, ...]
    status: Status = "running"
    stage: int = 0  # index into stages
    started_at: float = 0.0
    stage_started_at: float = 0.0
    candidate_window: Window = field(default_factory=Window)
    primary_window: Window = field(default_factory=Window)
    history: list[dict[str, Any]] = field(default_factory=list)
    mode: str = "canary"  # canary | shadow
    shadow: ShadowStats = field(default_factory=ShadowStats)  # shadow mode's comparison
    epoch: int = 0  # moves made: of two processes' views, the one with more moves is newer
    dirty: bool = False  # changed since it was last written

    @property
    def percent(self) -> float:
        """The candidate's share of the route's requests now."""
        if self.mode == "shadow":
            return 0.0  # it answers no client: it gets copies (Rollouts.shadow_wanted)
        if self.status == "promoted":
            return 100.0
        if self.status != "running":
            return 0.0
        return self.stages[self.stage]

    def new_stage(self, stage: int, now: float) -> None:
        self.stage, self.stage_started_at = stage, now
        self.candidate_window, self.primary_window = Window(), Window()

    def record(self, decision: dict[str, Any]) -> None:
        self.history.append(decision)
        del self.history[:-_HISTORY]

    def summary(self) -> dict[str, Any]:
        """What /admin/rollouts, /health/providers and `turnout rollout status` show."""
        return {
            "route": self.route,
            "candidate": self.candidate,
            "status": self.status,
            "stage": self.stage,
            "stages": list(self.stages),
            "percent": self.percent,
            "started_at": self.started_at,
            "stage_started_at": self.stage_started_at,
            "candidate_window": self.candidate_window.figures(),
            "primary_window": self.primary_window.figures(),
            "history": self.history,
            "mode": self.mode,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "candidate": self.candidate,
            "stages": list(self.stages),
            "status": self.status,
            "stage": self.stage,
            "started_at": self.started_at,
            "stage_started_at": self.stage_started_at,
            "candidate_window": self.candidate_window.to_json(),
            "primary_window": self.primary_window.to_json(),
            "history": self.history,
            "mode": self.mode,
            "shadow": self.shadow.to_json(),
            "epoch": self.epoch,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RolloutState:
        return cls(
            route=data["route"],
            candidate=data["candidate"],
            stages=tuple(float(s) for s in data["stages"]),
            status=data["status"],
            stage=int(data["stage"]),
            started_at=float(data["started_at"]),
            stage_started_at=float(data["stage_started_at"]),
            candidate_window=Window.from_json(data["candidate_window"]),
            primary_window=Window.from_json(data["primary_window"]),
            history=list(data.get("history", [])),
            mode=str(data.get("mode", "canary")),
            shadow=ShadowStats.from_json(data["shadow"]) if "shadow" in data else ShadowStats(),
            epoch=int(data.get("epoch", 0)),
        )

    def adopt(self, other: RolloutState) -> None:
        """Another process's newer view of this rollout (a move it made): its stage, status
        and history; the windows start afresh with the stage."""
        self.stages, self.status, self.stage = other.stages, other.status, other.stage
        self.started_at, self.history, self.epoch = other.started_at, other.history, other.epoch
        self.new_stage(other.stage, other.stage_started_at)
        self.dirty = True


class FileStore:
    """Every route's rollout in one JSON file (`<data_dir>/rollouts.json`)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, RolloutState]:
        try:
            data = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, orjson.JSONDecodeError) as exc:
            log.error(
                "cannot read the rollouts' state from %s (starting afresh): %s", self.path, exc
            )
            return {}
        states = {}
        for route, document in data.items():
            try:
                states[route] = RolloutState.from_json(document)
            except (KeyError, TypeError, ValueError) as exc:
                log.error("rollout state of route %s in %s is unusable: %s", route, self.path, exc)
        return states

    def save(self, states: dict[str, RolloutState]) -> None:
        partial = self.path.with_suffix(f".{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(orjson.dumps({r: s.to_json() for r, s in states.items()}))
            partial.replace(self.path)  # whole: a crash mid-write leaves the previous file
        except OSError as exc:
            log.error("cannot save the rollouts' state to %s: %s", self.path, exc)
            with contextlib.suppress(OSError):
                partial.unlink()
