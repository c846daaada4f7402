"""Heavy-tailed time to first token: what real providers look like, for hedging to cut.

`ttft_distribution: lognormal` makes `ttft` the median of a lognormal with shape
`ttft_sigma`; `slow_rate` of the requests are then `slow_factor` times slower (a provider's
overloaded replica, a cold cache). Drawn from a generator of their own, so turning them on
leaves the fault sequence of a seed as it was.
"""

from __future__ import annotations

import math
import random

from turnout.sim.schema import SimBehaviour


def heavy_tailed(behaviour: SimBehaviour) -> bool:
    return behaviour.ttft_distribution == "lognormal" or behaviour.slow_rate > 0


def draw_ttft(behaviour: SimBehaviour, base: float, rng: random.Random) -> float:
    """Seconds to the first token: `base` (the uniform draw) or a lognormal around `ttft`,
    then the slow share stretched. Always two draws, so sequences stay aligned."""
    normal = rng.gauss(0.0, 1.0)
    slow = rng.random() < behaviour.slow_rate
    ttft = base
    if behaviour.ttft_distribution == "lognormal":
        ttft = behaviour.ttft * math.exp(behaviour.ttft_sigma * normal)
    return ttft * behaviour.slow_factor if slow else ttft
