"""Safe model rollouts: a route's candidate model on a growing share of its traffic, promoted
or rolled back by the gateway itself (canary.py), judged by judge.py, kept by state.py."""

from turnout.rollouts.canary import RolloutError, Rollouts
from turnout.rollouts.state import FileStore, RolloutState

__all__ = ["FileStore", "RolloutError", "RolloutState", "Rollouts"]
