"""The scenarios that ship with turnout: one folder each beside this module (its name with
underscores; the command line's with dashes), holding

- `config.yaml`: the gateway config the story runs (providers of kind `sim` at the story's list
  prices). Top-level keys starting with `x-` are YAML anchors' homes, dropped before loading.
- `traffic.py`: `STORY` (one line), `DURATION` (simulated seconds), `calls(rng)` (the client
  requests, scenarios/traffic.py `Call`) and `CHANGES` (what happens to the upstreams when);
  optionally `SPEED`, its default speed (a story told in minutes runs slower than a day's).
- `expect.yaml`: what the run must show (scenarios/expect.py).
- optionally `figures.py`: `figures(run) -> dict`, the story's own figures (report's `extra`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

HERE = Path(__file__).parent


@dataclass(frozen=True)
class Scenario:
    name: str  # as typed on the command line: expired-key
    folder: Path
    traffic: ModuleType
    figures: ModuleType | None

    @property
    def story(self) -> str:
        return str(self.traffic.STORY)

    def config_data(self) -> dict[str, Any]:
        """config.yaml as data, without its `x-` anchor keys."""
        data = yaml.safe_load((self.folder / "config.yaml").read_text()) or {}
        return {k: v for k, v in data.items() if not str(k).startswith("x-")}

    def expect(self) -> dict[str, Any]:
        return yaml.safe_load((self.folder / "expect.yaml").read_text()) or {}


def names() -> list[str]:
    """Every scenario shipped, by its command-line name."""
    return sorted(p.name.replace("_", "-") for p in HERE.iterdir() if (p / "config.yaml").is_file())


def load(name: str) -> Scenario:
    """The scenario named `name` (dashes); KeyError naming the known ones when there is none."""
    if name not in names():
        raise KeyError(f"no scenario {name!r} (scenarios: {', '.join(names())})")
    module = name.replace("-", "_")
    traffic = importlib.import_module(f"turnout.scenarios.{module}.traffic")
    figures = None
    if (HERE / module / "figures.py").is_file():
        figures = importlib.import_module(f"turnout.scenarios.{module}.figures")
    return Scenario(name, HERE / module, traffic, figures)
