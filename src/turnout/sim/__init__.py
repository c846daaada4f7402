"""The simulator: an OpenAI-compatible fake upstream, programmable per model and seeded so
that fault scenarios repeat. Used by tests, benchmarks, the demo and providers of kind `sim`.

- schema.py: how one simulated model behaves (SimBehaviour, SimOutage): the sim's own schema
- behaviour.py: YAML sim files, and a behaviour turned into seeded faults
- content.py: reply tokens, JSON-mode objects, tool-call arguments
- answer.py: one successful answer planned from a request
- wire.py: OpenAI wire shapes (answers, chunks, error bodies)
- state.py: per-model generators and counters
- pacing.py: cancellable answers, hangs, drops and paced streams, shared by both endpoints
- app.py: the OpenAI /v1 routes; anthropic.py: /v1/messages; admin.py: the /sim control routes
- server.py: serving it in-process (SimServer) or blocking (run_sim)
"""

from turnout.sim.app import make_sim_app
from turnout.sim.behaviour import load_sim_file, parse_sim
from turnout.sim.schema import SimBehaviour, SimOutage
from turnout.sim.server import SimServer, run_sim

__all__ = [
    "SimBehaviour",
    "SimOutage",
    "SimServer",
    "load_sim_file",
    "make_sim_app",
    "parse_sim",
    "run_sim",
]
