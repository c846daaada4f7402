"""`turnout sim`: a simulated OpenAI-compatible upstream with programmable faults."""

from __future__ import annotations

import argparse
import sys

from turnout.config import ConfigError
from turnout.sim import load_sim_file, run_sim
from turnout.sim.schema import SimBehaviour

# with no file: one well-behaved model and one that fails a third of the time
_DEFAULT = {
    "steady": SimBehaviour(ttft=0.05, reply="Hello from the steady simulated model."),
    "flaky": SimBehaviour(ttft=0.05, error_rate={500: 0.2, 429: 0.1}, retry_after=2),
}


def sim(args: argparse.Namespace) -> int:
    behaviours, seed = _DEFAULT, 0
    if args.config:
        try:
            behaviours, seed = load_sim_file(args.config)
        except ConfigError as exc:
            print(f"turnout sim: config error\n{exc}", file=sys.stderr)
            return 2
    try:
        run_sim(args.host, args.port, behaviours, seed)
    except OSError as exc:
        print(f"turnout sim: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0
