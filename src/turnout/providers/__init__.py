"""Transports to upstream models: pooled HTTP, the in-process local model, the simulator."""

from turnout.config.schema import register_kind_section
from turnout.sim.schema import sim_models

# Kind `sim`: its `sim:` section is the simulator's own schema, checked when a config loads
# (with key paths, like the rest of it). Registered here, on the first import of anything
# of this layer, so that no provider can be built from a config validated without it.
register_kind_section("sim", sim_models)
