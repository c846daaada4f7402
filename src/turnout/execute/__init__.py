"""The attempt loop: timeouts, failover, retries, stream relay."""

from turnout.execute.executor import (
    AllTargetsFailed,
    Attempt,
    Completion,
    Executor,
    PassThroughError,
    Stream,
)

__all__ = ["AllTargetsFailed", "Attempt", "Completion", "Executor", "PassThroughError", "Stream"]
