"""A run's report: the figures (one JSON-ready dict, taken from the ledger and the bus) and
their renderings: a rich table, JSON, or one self-contained HTML page."""

from __future__ import annotations

import html
from collections import Counter
from typing import Any

import orjson
from rich.console import Group
from rich.table import Table
from rich.text import Text

from turnout.scenarios.expect import check
from turnout.scenarios.runner import Run
from turnout.sinks.exported import fell_back


def percentile(values: list[float], pct: float) -> float | None:
    """The nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil, at least the first
    return round(ordered[int(rank) - 1], 1)


def figures(run: Run) -> dict[str, Any]:
    """The report as data: what `--report json` prints and expect.yaml is checked against."""
    rows = run.rows
    served = Counter(r.model for r in rows if r.status == 200 and r.model)
    spend = sum(r.cost_usd for r in rows)
    baseline = sum(r.baseline_cost_usd for r in rows)
    routes = run.config.routes.values()
    report: dict[str, Any] = {
        "scenario": run.scenario.name,
        "story": run.scenario.story,
        "speed": run.speed,
        "simulated_seconds": float(run.scenario.traffic.DURATION),
        "real_seconds": round(run.real_seconds, 1),
        "requests": len(rows),
        "client_failures": len(run.failures),
        "failures": run.failures[:20],
        "ledger_not_ok": sum(r.outcome != "ok" for r in rows),
        "models": {
            m: {"requests": n, "share": round(n / len(rows), 4)} for m, n in served.most_common()
        },
        "fallbacks": sum(fell_back(r) for r in rows),
        "fallback_rate": round(sum(fell_back(r) for r in rows) / max(len(rows), 1), 4),
        # as the client saw it (streams, real time): the ledger's ttft_ms is taken from epoch
        # timestamps, which are simulated here (an ms of queueing is seconds at full speed)
        "ttft_ms": {
            "p50": percentile(run.client_ttft_ms, 50),
            "p95": percentile(run.client_ttft_ms, 95),
            "streams": len(run.client_ttft_ms),
        },
        "spend_usd": round(spend, 6),
        "baseline": sorted({r.baseline for r in routes if r.baseline}),
        "baseline_usd": round(baseline, 6),
        "savings_usd": round(baseline - spend, 6),
        "savings_share": round((baseline - spend) / baseline, 4) if baseline else None,
        "alerts": [
            {k: a[k] for k in ("rule", "firing", "subject", "message", "at")} for a in run.alerts
        ],
        "webhook_deliveries": run.delivered,
        "events": run.events,
        "changes": {name: round(at, 3) for name, at in run.changes.items()},
    }
    if run.scenario.figures is not None:
        report["extra"] = run.scenario.figures.figures(run)
    failed = check(run.scenario.expect(), report)
    report["expect"] = {"ok": not failed, "failed": failed}
    return report


def as_json(report: dict[str, Any]) -> str:
    return orjson.dumps(report, option=orjson.OPT_INDENT_2).decode()


def _money(value: float) -> str:
    return f"${value:,.4f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def duration(seconds: float) -> str:
    """A duration for people, in the largest unit it fills: `39.8 s`, `40 min`, `2.5 h`."""
    for unit, size in (("h", 3600.0), ("min", 60.0)):
        value = round(seconds / size, 1)
        if abs(value) >= 1:  # (3599 s is `1 h`, not `60 min`)
            return f"{value:g} {unit}"
    return f"{round(seconds, 1):g} s"


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _extra(key: str, value: Any) -> str:
    """A story's own figure, by its name's unit: `_usd` money, `_s` seconds, `_ms` ms."""
    if isinstance(value, float) and key.endswith("_usd"):
        return _money(value)
    if isinstance(value, (int, float)) and key.endswith("_s"):
        return duration(value)
    if isinstance(value, (int, float)) and key.endswith("_ms"):
        return _ms(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def lines(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The report as (figure, value) rows: the table's and the HTML page's."""
    models = ", ".join(
        f"{m} {v['requests']} ({v['share']:.1%})" for m, v in report["models"].items()
    )
    out = [
        ("story", report["story"]),
        ("simulated", f"{duration(report['simulated_seconds'])} in {report['real_seconds']} s"),
        ("requests", str(report["requests"])),
        ("client-visible failures", str(report["client_failures"])),
        ("served by", models or "-"),
        ("fallback rate", f"{report['fallback_rate']:.1%} ({report['fallbacks']} requests)"),
        ("TTFT p50 / p95", f"{_ms(report['ttft_ms']['p50'])} / {_ms(report['ttft_ms']['p95'])}"),
        ("spend", _money(report["spend_usd"])),
    ]
    if report["baseline"]:
        share = report["savings_share"]
        out.append(
            (
                f"savings vs {', '.join(report['baseline'])}-only",
                f"{_money(report['savings_usd'])}"
                + (f" ({share:.1%})" if share is not None else "")
                + f" of {_money(report['baseline_usd'])}",
            )
        )
    for name, at in report["changes"].items():
        out.append((f"change at {_hms(at)}", name))
    for alert in report["alerts"]:
        kind = "alert" if alert["firing"] else "recovered"
        out.append((f"{kind} at {_hms(alert['at'])}", alert["message"]))
    out.append(("webhook deliveries", str(report["webhook_deliveries"])))
    for key, value in (report.get("extra") or {}).items():
        if key == "headline":
            continue
        out.append((key.replace("_", " "), _extra(key, value)))
    if report.get("extra", {}).get("headline"):
        out.append(("in short", report["extra"]["headline"]))
    expect = report["expect"]
    out.append(("expected outcome", "held" if expect["ok"] else "FAILED"))
    out += [("  failed", line) for line in expect["failed"]]
    return out


def as_table(report: dict[str, Any]) -> Group:
    table = Table(title=f"turnout scenario {report['scenario']}", show_header=False)
    table.add_column("figure", style="bold")
    table.add_column("value", overflow="fold")
    for name, value in lines(report):
        table.add_row(name, Text(value))
    return Group(table)


def as_html(report: dict[str, Any]) -> str:
    """One page, no outside resources: the table, then the whole JSON report."""
    rows = "\n".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in lines(report)
    )
    title = f"turnout scenario {html.escape(report['scenario'])}"
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>{title}</title><style>"
        "body{font:15px system-ui,sans-serif;margin:2em;max-width:70em}"
        "th{text-align:left;padding:.3em 1em .3em 0;vertical-align:top}"
        "td{padding:.3em 0}pre{background:#f4f4f4;padding:1em;overflow:auto}"
        f"</style></head><body><h1>{title}</h1><table>{rows}</table>"
        f"<h2>Report (JSON)</h2><pre>{html.escape(as_json(report))}</pre></body></html>\n"
    )
