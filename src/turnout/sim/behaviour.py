"""Simulated behaviours: reading them from a YAML file, and turning one into seeded faults."""

from __future__ import annotations

import random
import zlib
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from turnout.config.fields import Strict
from turnout.config.load import ConfigError, read_yaml
from turnout.sim.schema import SimBehaviour

__all__ = [
    "Fault",
    "SimBehaviour",
    "SimFile",
    "describe_errors",
    "fault_table",
    "load_sim_file",
    "model_rng",
    "parse_sim",
]


class Fault(StrEnum):
    NONE = "none"
    RATE_LIMIT = "rate_limit"
    ERROR = "error"
    HANG = "hang"
    DISCONNECT = "disconnect"
    MALFORMED = "malformed"


FaultTable = list[tuple[float, Fault, int]]


def fault_table(behaviour: SimBehaviour) -> FaultTable:
    """Cumulative (threshold, fault, status) rows for one uniform draw per request.

    One draw picks at most one fault, so each fault happens with its own probability (as long
    as they sum to <= 1; past 1 the later rows are cut off). The order is fixed, so a seed
    gives the same faults whatever dict order the config was written in.
    """
    rows: list[tuple[float, Fault, int]] = []
    total = 0.0

    def add(probability: float, fault: Fault, status: int) -> None:
        nonlocal total
        probability = min(max(probability, 0.0), 1.0)
        if probability > 0:
            total += probability
            rows.append((total, fault, status))

    add(behaviour.rate_limit_rate, Fault.RATE_LIMIT, 429)
    for status in sorted(behaviour.error_rate):
        fault = Fault.RATE_LIMIT if status == 429 else Fault.ERROR
        add(behaviour.error_rate[status], fault, status)
    add(behaviour.hang_rate, Fault.HANG, 0)
    add(behaviour.disconnect_rate, Fault.DISCONNECT, 0)
    add(behaviour.malformed_rate, Fault.MALFORMED, 200)
    return rows


def model_rng(seed: int, model: str) -> random.Random:
    """One generator per model: the seed and the name (crc32, stable across runs) combined."""
    return random.Random((seed << 32) ^ zlib.crc32(model.encode()))


class SimFile(Strict):
    seed: int = 0
    models: dict[str, SimBehaviour] = Field(default_factory=dict)


def _key_path(loc: tuple[Any, ...]) -> str:
    # drop pydantic's union-member tags (function-before[...], literal[0]) from the path
    return ".".join(str(part) for part in loc if not (isinstance(part, str) and "[" in part))


def describe_errors(exc: ValidationError) -> list[str]:
    """`key.path: problem`, once per problem."""
    lines: list[str] = []
    for error in exc.errors():
        if any(str(part).startswith("literal[") for part in error["loc"]):
            continue  # `Duration | Literal[0]`: the duration's own message says it better
        line = f"{_key_path(error['loc'])}: {error['msg'].removeprefix('Value error, ')}"
        if line not in lines:
            lines.append(line)
    return lines


def parse_sim(data: Any, source: str = "<sim>") -> tuple[dict[str, SimBehaviour], int]:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, not {type(data).__name__}")
    try:
        parsed = SimFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n".join(f"{source}: {line}" for line in describe_errors(exc))) from None
    return dict(parsed.models), parsed.seed


def load_sim_file(path: str | Path) -> tuple[dict[str, SimBehaviour], int]:
    """`{seed: 7, models: {name: SimBehaviour fields}}` -> (behaviours, seed).

    Raises ConfigError naming the file and the key path.
    """
    return parse_sim(read_yaml(path, "sim file"), str(path))
