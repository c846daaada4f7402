"""Running a plan: upstream attempts, the scheduler that orders them (timeouts, failover,
retries, all-down behaviour) and the relay of a committed stream to its client."""

from turnout.execute.attempt import UpstreamAttempt
from turnout.execute.no_answer import AllTargetsFailed, PassThroughError
from turnout.execute.relay import Relay, RelayEnd
from turnout.execute.scheduler import Completion, Scheduler
from turnout.execute.stream import Stream

__all__ = [
    "AllTargetsFailed",
    "Completion",
    "PassThroughError",
    "Relay",
    "RelayEnd",
    "Scheduler",
    "Stream",
    "UpstreamAttempt",
]
