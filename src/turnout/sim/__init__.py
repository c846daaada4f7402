"""The simulator: an OpenAI-compatible fake upstream, programmable per model and seeded so
that fault scenarios repeat. Used by tests, benchmarks, the demo and providers of kind `sim`.

- behaviour.py: YAML sim files, and a behaviour turned into seeded faults
- content.py: reply tokens, JSON-mode objects, tool-call arguments, prompt-token estimate
- answer.py: one successful answer planned from a request
- wire.py: OpenAI wire shapes (answers, chunks, error bodies)
- state.py: per-model generators and counters
- app.py: the /v1 routes; admin.py: the /sim control routes
- server.py: serving it in-process (SimServer) or blocking (run_sim)
"""

from turnout.config.schema import SimBehaviour
from turnout.sim.app import make_sim_app
from turnout.sim.behaviour import load_sim_file, parse_sim
from turnout.sim.server import SimServer, run_sim

__all__ = ["SimBehaviour", "SimServer", "load_sim_file", "make_sim_app", "parse_sim", "run_sim"]
