"""A scenario's expect.yaml, checked against its report:

    figures:            # a figure of the JSON report, by dotted path, and its bounds
      client_failures: {max: 0}
      extra.savings_share: {min: 0.9}
    alerts:             # alert rules that must fire within `within` simulated seconds of a
      - rule: misconfigured   # traffic change (scenarios/traffic.py Change.name)
        after: scout key expires
        within: 60

Each check that does not hold is one line saying what was expected and what came out."""

from __future__ import annotations

from typing import Any


def check(expect: dict[str, Any], report: dict[str, Any]) -> list[str]:
    """What did not hold; an empty list when all of it did."""
    failed = []
    for path, bounds in (expect.get("figures") or {}).items():
        value = _figure(report, path)
        if not isinstance(value, int | float):
            failed.append(f"{path}: no such figure in the report")
            continue
        if "min" in bounds and value < bounds["min"]:
            failed.append(f"{path} = {value:g}, expected at least {bounds['min']:g}")
        if "max" in bounds and value > bounds["max"]:
            failed.append(f"{path} = {value:g}, expected at most {bounds['max']:g}")
    for rule in expect.get("alerts") or []:
        failed += _alert(rule, report)
    return failed


def _figure(report: dict[str, Any], path: str) -> Any:
    value: Any = report
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _alert(rule: dict[str, Any], report: dict[str, Any]) -> list[str]:
    name, after, within = rule["rule"], rule.get("after"), rule.get("within")
    fired = [a for a in report["alerts"] if a["rule"] == name and a["firing"]]
    if not fired:
        return [f"alert {name}: never fired"]
    if after is None:
        return []
    changed = report["changes"].get(after)
    if changed is None:
        return [f"alert {name}: the traffic change {after!r} never happened"]
    late = [a["at"] - changed for a in fired if a["at"] >= changed]
    if not late:
        return [f"alert {name}: did not fire after {after!r}"]
    if within is not None and min(late) > within:
        return [f"alert {name}: fired {min(late):.0f}s after {after!r}, expected within {within}s"]
    return []
