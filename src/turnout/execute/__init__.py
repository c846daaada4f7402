"""The attempt loop: timeouts, failover, retries, stream relay, all-down behaviour."""

from turnout.execute.attempts import AllTargetsFailed, PassThroughError
from turnout.execute.executor import Completion, Executor
from turnout.execute.stream import Stream

__all__ = ["AllTargetsFailed", "Completion", "Executor", "PassThroughError", "Stream"]
