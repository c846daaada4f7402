"""Canary rollouts: a route's candidate model answers a growing share of its requests, stage
by stage, and is promoted or rolled back by the gateway itself.

- **Share.** A request goes to the candidate when its stickiness key (the workflow session,
  else the OpenAI `user`, else the caller's key) hashes below the stage's percentage, so
  one workflow does not flip between models mid-way; a request with none of these is drawn
  at random. The route's own targets stay behind the candidate as its fallback: a candidate
  failure fails over like any other and the client never sees it.
- **Judgement.** Every attempt on the route by the candidate or by the route's primary (its
  first configured target) is counted in the stage's two windows; after each of the
  candidate's, `judge.judge` says wait, promote or roll back (see judge.py: a plain breach
  rolls back at once, the stage is judged whole at `min_requests`).
- **Record.** Each move is an event (RolloutChanged) and a line of the route's history, and
  the state is written to the data directory, so that a restart resumes where it was.
- **Fleet.** With the Redis state backend, every process (each worker of `--workers N`,
  each replica) shares its rollouts through the state store: a move is a document of the
  route's state (the view with more moves, its `epoch`, wins; a rollback wins a tie), and
  each process posts its windows' counts every second, so each judges on the fleet's
  counts. A process that restarts takes the fleet's state, and its earlier windows are
  still counted from the store.

The hot path pays one dictionary lookup for a route without a rollout."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import random
import time
import uuid
from typing import Any

from turnout import clock
from turnout.config.rollout import RolloutConfig
from turnout.config.schema import Config
from turnout.events import AttemptFinished, Publish, RolloutChanged
from turnout.health.state import StateStore
from turnout.model import Request
from turnout.rollouts.judge import Window, judge
from turnout.rollouts.shadow import Pair
from turnout.rollouts.state import FileStore, RolloutState
from turnout.routing import Plan
from turnout.routing.capabilities import Needs

log = logging.getLogger("turnout.rollouts")

_SAVE_EVERY = 5.0  # seconds: counters are written this often (decisions at once)
_POST_EVERY = 1.0  # seconds: each process posts its windows to the fleet this often
_SHARED_SAMPLES = 200  # timings posted per window (enough for a p95 with the others')
_EMPTY_WINDOWS = {"candidate_window": Window().to_json(), "primary_window": Window().to_json()}


class RolloutError(Exception):
    """A control action that does not apply (no rollout on the route, already ended...)."""


class Rollouts:
    def __init__(
        self, store: FileStore, publish: Publish, shared: StateStore | None = None
    ) -> None:
        self.store = store
        self.publish = publish
        self.shared = shared  # the fleet's state store (Redis), or None for one process
        self.states: dict[str, RolloutState] = store.load()  # every route's, ended ones too
        if shared is not None:
            for state in self.states.values():
                # the fleet's store still counts what this process posted before it restarted
                state.candidate_window, state.primary_window = Window(), Window()
        self._configs: dict[str, RolloutConfig] = {}
        self._primaries: dict[str, str] = {}
        # the routes whose rollout gives the candidate a share now: what `route` looks up
        self._live: dict[str, RolloutState] = {}
        self._shadows: dict[str, RolloutState] = {}  # the routes copying to a candidate
        self._saved_at = 0.0
        self.origin = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        # other processes' windows: route -> origin -> (epoch, candidate window, primary window)
        self._remote: dict[str, dict[str, tuple[int, Window, Window]]] = {}
        self._posting: asyncio.Task[None] | None = None
        self._fleet_epochs: dict[str, int] = {}  # the newest move the fleet's store holds
        self._joined = False  # the fleet's state has been read: ours may be shared now

    # --- the fleet ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self.shared is None:
            return
        await self.shared.start(self._apply_remote)  # adopts the fleet's newer moves
        self._joined = True
        for route, state in self.states.items():
            if state.epoch > self._fleet_epochs.get(route, -1):
                self._share_state(state)  # a move the fleet has not heard of (or a first)
        self._posting = asyncio.create_task(self._post_windows(), name="rollout-windows")

    async def close(self) -> None:
        if self._posting is not None:
            self._posting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._posting
            self._post_now()
        if self.shared is not None:
            await self.shared.close()
        self.save(force=True)

    async def _post_windows(self) -> None:
        while True:
            await asyncio.sleep(_POST_EVERY)
            self._post_now()

    def _post_now(self) -> None:
        assert self.shared is not None
        for route, state in self._live.items():
            if state.candidate_window.requests or state.primary_window.requests:
                self._post(route, state)

    def _post(self, route: str, state: RolloutState) -> None:
        """This process's windows of the route, for the fleet (the store writes the newest
        document per key in the background: posting often costs a dict assignment)."""
        assert self.shared is not None
        self.shared.publish(
            f"window:{route}:{self.origin}",
            {
                "epoch": state.epoch,
                "candidate": state.candidate_window.to_json(_SHARED_SAMPLES),
                "primary": state.primary_window.to_json(_SHARED_SAMPLES),
            },
        )

    def _share_state(self, state: RolloutState) -> None:
        # (before joining, a move made from this process's file could be older than the
        # fleet's and overwrite it: start() shares what is newer once it has read the fleet's)
        if self.shared is not None and self._joined:
            document = state.to_json()
            del document["candidate_window"], document["primary_window"]
            self.shared.publish(f"state:{state.route}", document)

    def _apply_remote(self, key: str, document: dict[str, Any]) -> None:
        """Another process's move, or its windows (from the store: on start, then as they
        change)."""
        kind, _, rest = key.partition(":")
        try:
            if kind == "state":
                self._adopt(rest, document)
            elif kind == "window":
                route, _, origin = rest.rpartition(":")
                if origin != self.origin:
                    windows = (
                        int(document["epoch"]),
                        Window.from_json(document["candidate"]),
                        Window.from_json(document["primary"]),
                    )
                    self._remote.setdefault(route, {})[origin] = windows
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring an unusable shared rollout document %s: %s", key, exc)

    def _adopt(self, route: str, document: dict[str, Any]) -> None:
        theirs = RolloutState.from_json({**document, **_EMPTY_WINDOWS})
        self._fleet_epochs[route] = max(theirs.epoch, self._fleet_epochs.get(route, -1))
        mine = self.states.get(route)
        if mine is not None and mine.candidate == theirs.candidate:
            newer = theirs.epoch > mine.epoch or (
                theirs.epoch == mine.epoch
                and mine.status == "running"
                and theirs.status in ("rolled_back", "aborted")
            )
            if not newer:
                return
            mine.adopt(theirs)
        elif mine is None or route not in self._configs:
            self.states[route] = theirs
        else:
            return  # another candidate than this process's config names: not ours to follow
        self._refresh()
        self.save(force=True)

    def _remote_windows(self, state: RolloutState) -> list[tuple[int, Window, Window]]:
        """Other processes' latest windows of the state's stage (`epoch`)."""
        return [w for w in self._remote.get(state.route, {}).values() if w[0] == state.epoch]

    def _windows(self, state: RolloutState) -> tuple[Window, Window]:
        """The stage's windows of the whole fleet: this process's and the others' posts."""
        remote = self._remote_windows(state)
        if not remote:
            return state.candidate_window, state.primary_window
        return (
            state.candidate_window.merged([w[1] for w in remote]),
            state.primary_window.merged([w[2] for w in remote]),
        )

    # --- config -------------------------------------------------------------------------------

    def configure(self, config: Config) -> None:
        """The rollouts of this config (at start, and on each reload). A route's state carries
        on when its candidate is unchanged (a restart resumes the stage it was in); a new
        candidate starts at the first stage; a rollout no longer configured stops."""
        now = clock.now()
        self._configs = {n: r.rollout for n, r in config.routes.items() if r.rollout is not None}
        self._primaries = {n: config.routes[n].targets[0] for n in self._configs}
        for route, rollout in self._configs.items():
            state = self.states.get(route)
            if state is None or (state.candidate, state.mode) != (rollout.candidate, rollout.mode):
                state = self.states[route] = RolloutState(
                    route, rollout.candidate, tuple(rollout.stages), started_at=now
                )
                state.mode = rollout.mode
                state.new_stage(0, now)
                self._moved(state, "started", now)
            else:
                state.stages = tuple(rollout.stages)
                state.stage = min(state.stage, len(state.stages) - 1)
        for route, state in self.states.items():
            if route not in self._configs and state.status == "running":
                state.status = "aborted"
                self._moved(state, "aborted", now, reason="no longer in the config")
        self._refresh()
        self.save(force=True)

    def _refresh(self) -> None:
        self._live = {
            route: state
            for route, state in self.states.items()
            if route in self._configs and state.percent > 0
        }
        self._shadows = {
            route: state
            for route, state in self.states.items()
            if route in self._configs and state.mode == "shadow" and state.status == "running"
        }

    # --- shadow mode --------------------------------------------------------------------------

    def shadow_wanted(self, route: str, request: Request, key_id: str | None) -> bool:
        """Whether this answered request's copy goes to the route's shadow candidate: in its
        share, and under the day's spending cap."""
        state = self._shadows.get(route)
        if state is None:
            return False
        config = self._configs[route]
        if _bucket(request.session or request.user or key_id) >= config.share:
            return False
        return state.shadow.under_cap(config.daily_cap_usd, clock.now())

    def shadow_busy(self, route: str) -> None:
        """A copy not sent: too many were in flight."""
        state = self._shadows.get(route)
        if state is not None:
            state.shadow.busy += 1

    def shadowed(self, route: str, pair: Pair) -> None:
        """A copy's answer (or failure) beside the client's: counted in the comparison."""
        state = self._shadows.get(route)
        if state is not None:
            state.shadow.add(pair, clock.now())
            state.dirty = True
            self.save()

    # --- routing (per request) ----------------------------------------------------------------

    def route(self, plan: Plan, request: Request, key_id: str | None) -> Plan:
        """The plan with the candidate first when this request falls in its share."""
        state = self._live.get(plan.route)
        if state is None or plan.candidate is None:
            return plan
        candidate = plan.candidate
        if candidate.name in request.exclude or not _can_serve(candidate, request):
            return plan
        if _bucket(request.session or request.user or key_id) >= state.percent:
            return plan
        return dataclasses.replace(plan, targets=(candidate, *plan.targets))

    # --- judging (per attempt, inline on the bus) ---------------------------------------------

    def on_attempt(self, event: AttemptFinished) -> None:
        outcome = event.outcome
        state = self._live.get(outcome.route)
        if state is None or outcome.probe or state.status != "running":
            return
        if outcome.model == state.candidate:
            state.candidate_window.add(outcome)
            if not outcome.ok and self._joined:
                # a failure is what rolls back: the fleet hears of it now, not at the next
                # second's post, so that every process judges on all of them
                self._post(outcome.route, state)
        elif outcome.model == self._primaries.get(outcome.route):
            state.primary_window.add(outcome)
            state.dirty = True
            return
        else:
            return
        state.dirty = True
        config = self._configs[outcome.route]
        candidate, primary = self._windows(state)
        verdict = judge(candidate, primary, config.slo, config.min_requests)
        now = clock.now()
        if verdict.action == "rollback":
            state.status = "rolled_back"
            self._moved(
                state,
                "rolled_back",
                now,
                objective=verdict.objective,
                observed=verdict.observed,
                limit=verdict.limit,
            )
        elif verdict.action == "promote":
            self._advance(state, now)
        else:
            self.save()
            return
        self._refresh()
        self.save(force=True)

    def _advance(self, state: RolloutState, now: float, reason: str | None = None) -> None:
        figures = self._figures(state)
        if state.stage + 1 < len(state.stages):
            state.new_stage(state.stage + 1, now)
            self._moved(state, "stage_entered", now, figures=figures, reason=reason)
        else:
            state.status = "promoted"
            self._moved(state, "promoted", now, figures=figures, reason=reason)

    def _moved(
        self,
        state: RolloutState,
        action: str,
        now: float,
        *,
        objective: str | None = None,
        observed: float | None = None,
        limit: float | None = None,
        figures: dict[str, Any] | None = None,
        reason: str | None = None,
    ) -> None:
        figures = figures if figures is not None else self._figures(state)
        state.epoch += 1
        state.record(
            {
                "at": now,
                "action": action,
                "stage": state.stage,
                "percent": state.percent,
                "objective": objective,
                "observed": observed,
                "limit": limit,
                "reason": reason,
                **figures,
            }
        )
        state.dirty = True
        self.publish(
            RolloutChanged(
                state.route,
                state.candidate,
                action,
                state.stage,
                state.percent,
                objective,
                observed,
                limit,
                figures,
                now,
            )
        )
        self._share_state(state)

    # --- control (admin endpoints, `turnout rollout`) ----------------------------------------

    def status(self) -> list[dict[str, Any]]:
        summaries = []
        for state in self.states.values():
            summary = state.summary()
            candidate, primary = self._windows(state)  # the fleet's, with other processes'
            summary["candidate_window"] = candidate.figures()
            summary["primary_window"] = primary.figures()
            summary["candidate_requests_here"] = state.candidate_window.requests
            config = self._configs.get(state.route)
            if state.mode == "shadow" and config is not None:
                summary["shadow"] = state.shadow.report(config)
            summaries.append(summary)
        return summaries

    def control(self, route: str, action: str) -> dict[str, Any]:
        """start (again, from the first stage) | promote (to the next stage now) | rollback |
        abort. Raises RolloutError when the action does not apply."""
        if route not in self._configs:
            raise RolloutError(f"route {route!r} has no rollout in the config")
        state, now = self.states[route], clock.now()
        if action == "start":
            state.status, state.started_at = "running", now
            state.new_stage(0, now)
            self._moved(state, "started", now, reason="operator")
        elif state.status != "running":
            raise RolloutError(f"the rollout on {route!r} is {state.status}, not running")
        elif action == "promote" and state.mode == "shadow":
            raise RolloutError(
                f"the rollout on {route!r} is a shadow: it answers no client, so it has no stage"
                " to promote; set `mode: canary` in the config to start serving with it"
            )
        elif action == "promote":
            self._advance(state, now, reason="operator")
        elif action in ("rollback", "abort"):
            state.status = "rolled_back" if action == "rollback" else "aborted"
            self._moved(state, state.status, now, reason="operator")
        else:
            raise RolloutError(f"unknown action {action!r}: start, promote, rollback or abort")
        self._refresh()
        self.save(force=True)
        return state.summary()

    def _figures(self, state: RolloutState) -> dict[str, Any]:
        candidate, primary = self._windows(state)
        processes = 1 + len(self._remote_windows(state))  # whose windows were counted
        return {
            "candidate": candidate.figures(),
            "primary": primary.figures(),
            "processes": processes,
        }

    # --- persistence ------------------------------------------------------------------------

    def save(self, force: bool = False) -> None:
        """Write the states when something changed: at once when `force`d (a decision), else
        at most every few seconds (counters)."""
        now = time.monotonic()
        if not force and now - self._saved_at < _SAVE_EVERY:
            return
        if force or any(state.dirty for state in self.states.values()):
            self.store.save(self.states)
            for state in self.states.values():
                state.dirty = False
        self._saved_at = now


def _bucket(key: str | None) -> float:
    """The request's place in [0, 100): the same for every request of one session or key."""
    if key is None:
        return random.random() * 100
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest) % 10_000 / 100


def _can_serve(target: Any, request: Request) -> bool:
    needs = Needs.of(request)
    if needs is None:
        return True
    supports = target.model.supports
    return (not needs.tools or "tools" in supports) and (
        not needs.vision or "vision" in supports
    )  # JSON: the output guard checks the answer, as for any target
