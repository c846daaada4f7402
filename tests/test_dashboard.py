"""GET /dashboard in a real headless browser (Debian's chromium, driven by Playwright) against
a live gateway whose primary is down (an upstream that answers 500 to everything) and whose
fallback is the simulator: real requests through the openai SDK, then the page must show the
primary as down, the fallback as active and a fallback rate above zero, and keep itself up to
date. With auth on, the data needs an admin key (refusals in OpenAI's error shape) and the
page asks for one.

TURNOUT_DASHBOARD_SCREENSHOT=docs/dashboard.png writes the screenshot of the failover state
there too (how docs/dashboard.png is made); otherwise it goes to the test's tmp directory."""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # without the test extra: the browser fixture skips
    expect = sync_playwright = None

from tests.conftest import HTTPResult, ask, sdk_client, sim_config, turnout_cli
from tests.upstreams import fixed_error_upstream, serve_app, shared_sim
from turnout.accounting.records import LedgerRow
from turnout.config.schema import Config
from turnout.dashboard.aggregator import Aggregator
from turnout.events import HealthChanged, HealthState, RequestFinished

CHROMIUM = "/usr/bin/chromium"  # Debian's package: `apt-get install -y chromium`
SCREENSHOT_ENV = "TURNOUT_DASHBOARD_SCREENSHOT"
PRICES = {"primary": {"input": 3.0, "output": 15.0}, "backup": {"input": 0.5, "output": 1.5}}
BACKUP = {"reply": "backup answered", "tokens_per_second": 5000}
# two failures open the primary's breaker, and it stays open for the whole test
HEALTH = {"breaker": {"consecutive_failures": 2, "open_for": "120s"}}
WAIT_MS = 15_000  # how long the page may take to show something (it polls every 3 s)


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Debian chromium (never a browser Playwright downloads); skips without it."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no {CHROMIUM}: install Debian's chromium (apt-get install -y chromium)")
    if sync_playwright is None:
        pytest.skip("no playwright: pip install -e '.[test]'")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield browser
        finally:
            browser.close()


def _get(url: str, key: str | None = None) -> HTTPResult:
    request = urllib.request.Request(url)
    if key is not None:
        request.add_header("authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return HTTPResult(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as exc:
        return HTTPResult(exc.code, dict(exc.headers.items()), exc.read())


def _config(down_port: int, sim_url: str, **extra: Any) -> dict[str, Any]:
    """`primary` on an upstream that always answers 500, `backup` on the simulator."""
    return {
        "providers": {
            "down": {"kind": "openai", "base_url": f"http://127.0.0.1:{down_port}/v1"},
            "sim": {"kind": "openai", "base_url": sim_url},
        },
        "models": {
            "primary": {"provider": "down", "price": PRICES["primary"]},
            "backup": {"provider": "sim", "price": PRICES["backup"]},
        },
        "routes": {"chat": {"targets": ["primary", "backup"], "baseline": "primary"}},
        "health": HEALTH,
        **extra,
    }


@pytest.fixture
def upstreams() -> Iterator[tuple[int, str]]:
    """(port of the 500-ing primary, base URL of the simulator serving the backup)."""
    failing = fixed_error_upstream(500, {"message": "upstream is down", "type": "server_error"})
    with serve_app(failing) as down_port, shared_sim({"backup": BACKUP}) as sim:
        yield down_port, sim.base_url


def _row(page: Any, model: str) -> Any:
    return page.locator(f'section[data-route="chat"] tr[data-model="{model}"]')


def test_dashboard_shows_the_primary_down_and_the_fallback_active(
    gateway_factory, upstreams, browser, tmp_path: Path
) -> None:
    gateway = gateway_factory(_config(*upstreams))
    for stream in (False, False, False, True, True, True):  # streams: TTFT samples
        text, headers = ask(gateway, stream=stream)
        assert text == "backup answered" and headers["x-turnout-model"] == "backup"

    page = browser.new_page(viewport={"width": 1200, "height": 660})
    page.goto(gateway.url + "/dashboard")
    primary, backup = _row(page, "primary"), _row(page, "backup")
    primary.wait_for(timeout=WAIT_MS)
    assert page.locator("#login").is_hidden()  # auth is off: no key asked for

    assert primary.get_attribute("data-role") == "down"
    assert primary.get_attribute("data-state") == "open"
    assert primary.locator(".badge").inner_text() == "down"
    assert backup.get_attribute("data-role") == "active"
    assert backup.locator(".badge").inner_text() == "active"
    route = page.locator('section[data-route="chat"]')
    assert route.locator(".active-model").inner_text() == "backup"
    rate = route.locator(".fallback-rate")
    assert float(rate.get_attribute("data-value")) > 0
    assert rate.inner_text() == "100%"  # every answer came from the fallback
    assert route.locator(".requests").inner_text() == "6"
    assert route.locator(".errors").inner_text() == "0"
    ttft = backup.locator("td.num").nth(0).inner_text()
    assert ttft.endswith(" ms")  # the fallback's TTFT p50, from the streamed answers
    # spend today, and savings: the fallback is cheaper than the route's baseline (the primary)
    assert float(route.locator(".spend").get_attribute("data-value")) > 0
    assert float(route.locator(".savings").get_attribute("data-value")) > 0
    assert route.locator(".savings").inner_text().startswith("$0.000")
    events = page.locator("#events tbody").inner_text()
    assert "primary: opened (server_error)" in events
    assert "chat: primary=server_error(500) → backup" in events
    assert "chat: primary=open(" in events  # then skipped while its breaker is open

    # it refreshes itself: a request made now shows up without reloading the page
    assert (
        sdk_client(gateway)
        .chat.completions.create(model="chat", messages=[{"role": "user", "content": "again"}])
        .choices[0]
        .message.content
        == "backup answered"
    )
    expect(route.locator(".requests")).to_have_text("7", timeout=WAIT_MS)

    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get(SCREENSHOT_ENV):
        shutil.copyfile(shot, os.environ[SCREENSHOT_ENV])


def _create_key(config_path: Path, tmp_path: Path, name: str, *options: str) -> str:
    env = {"TURNOUT_DATA_DIR": str(tmp_path)}
    result = turnout_cli("keys", "--config", str(config_path), "create", name, *options, env=env)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines() if ":" in line)
    return lines["key"].strip()


def test_with_auth_on_the_data_needs_an_admin_key_and_the_page_asks_for_one(
    gateway_factory, upstreams, browser, tmp_path: Path
) -> None:
    config = _config(*upstreams, auth={"required": True})
    config_path = tmp_path / "keys.yaml"
    config_path.write_text(yaml.safe_dump(config))
    plain = _create_key(config_path, tmp_path, "app")
    admin = _create_key(config_path, tmp_path, "ops", "--admin")
    gateway = gateway_factory(config)

    for key in (None, "sk-not-a-key-of-this-gateway"):
        refused = _get(gateway.url + "/dashboard/data", key)
        assert refused.status == 401
        error = refused.json()["error"]  # OpenAI's error shape
        assert error["type"] == "authentication_error" and error["message"]
        assert "sk-not-a-key" not in refused.body.decode()
    refused = _get(gateway.url + "/dashboard/data", plain)
    assert refused.status == 403
    assert refused.json()["error"]["type"] == "permission_error"
    assert _get(gateway.url + "/dashboard/data", admin).json()["routes"][0]["name"] == "chat"
    # the page itself is served to anyone: a static shell with no data in it
    shell = _get(gateway.url + "/dashboard")
    assert shell.status == 200 and shell.headers["Content-Type"].startswith("text/html")
    assert b"primary" not in shell.body and b"backup" not in shell.body

    context = browser.new_context()
    page = context.new_page()
    page.goto(gateway.url + "/dashboard")
    page.locator("#login").wait_for(timeout=WAIT_MS)
    page.fill("#key", plain)
    page.click("#open")
    expect(page.locator("#auth-error")).to_contain_text("admin key", timeout=WAIT_MS)
    assert page.locator('section[data-route="chat"]').count() == 0

    page.fill("#key", admin)
    page.click("#open")
    _row(page, "backup").wait_for(timeout=WAIT_MS)
    assert page.locator("#login").is_hidden()
    assert page.evaluate("sessionStorage.getItem('turnout.dashboard.key')") == admin
    assert admin not in page.url
    page.reload()  # the key lives as long as the tab: no asking again
    _row(page, "backup").wait_for(timeout=WAIT_MS)
    assert page.locator("#login").is_hidden()
    context.close()

    other = browser.new_context()  # another session: asked again
    page = other.new_page()
    page.goto(gateway.url + "/dashboard")
    page.locator("#login").wait_for(timeout=WAIT_MS)
    other.close()


# --- the figures behind the page: bounded, and following reloads ---------------------------


def _data(gateway: Any) -> dict[str, Any]:
    result = _get(gateway.url + "/dashboard/data")
    assert result.status == 200, result.body
    return result.json()


def _wait_for_data(gateway: Any, predicate: Any) -> dict[str, Any]:
    """The data once predicate(data) holds: the aggregator is a queued subscriber."""
    deadline = time.monotonic() + 15
    while not predicate(data := _data(gateway)):
        assert time.monotonic() < deadline, f"not reached: {data}"
        time.sleep(0.05)
    return data


def test_names_clients_make_up_share_one_bucket_and_reloads_show(
    gateway_factory, tmp_path: Path
) -> None:
    config = sim_config(
        {"primary": {"reply": "primary answered"}}, {"chat": {"targets": ["primary"]}}
    )
    gateway = gateway_factory(config)
    assert ask(gateway)[0] == "primary answered"
    made_up = f"made-up-{uuid.uuid4().hex}"
    client = sdk_client(gateway)
    for n in range(30):
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(
                model=f"{made_up}-{n}", messages=[{"role": "user", "content": "hi"}]
            )

    data = _wait_for_data(gateway, lambda d: d["other"] and d["other"]["today"]["requests"] == 30)
    assert [route["name"] for route in data["routes"]] == ["chat"]
    assert data["routes"][0]["today"]["requests"] == 1
    assert data["other"]["today"]["errors"] == 30
    assert made_up not in json.dumps(data)  # no name a client sent is kept, let alone shown

    # a reload that adds a route: the route appears, and so does the reload among the events
    (tmp_path / f"turnout-{gateway.port}.yaml").write_text(
        yaml.safe_dump(
            {**config, "routes": {**config["routes"], "second": {"targets": ["primary"]}}}
        )
    )
    assert gateway.post("/admin/reload", b"").status == 200
    data = _wait_for_data(gateway, lambda d: any(e["kind"] == "reload" for e in d["events"]))
    assert [route["name"] for route in data["routes"]] == ["chat", "second"]
    reload = next(e for e in data["events"] if e["kind"] == "reload")
    assert reload["ok"] and reload["version"] == data["config"]["version"] != reload["previous"]


def _row_at(at: float, route: str = "chat", outcome: str = "ok", **fields: Any) -> LedgerRow:
    row = LedgerRow(uuid.uuid4().hex, at, route, "openai", False, 200, outcome, **fields)
    row.latency_ms = 20.0
    return row


def test_the_aggregator_keeps_fifteen_minutes_fifty_events_and_configured_routes() -> None:
    config = Config.model_validate(
        sim_config({"a": {}, "b": {}}, {"chat": {"targets": ["a", "b"]}})
    )
    now = [time.time()]
    aggregator = Aggregator(lambda: config, clock=lambda: now[0])
    start = now[0]

    fell_back = [{"model": "a", "reason": "server_error(500)"}]
    aggregator.on_event(RequestFinished(_row_at(start, model="b", attempts=fell_back)))
    for n in range(9):  # the same failover again and again: one line, counted
        passed = [{"model": "a", "reason": f"open({59 - n}.0s)"}]
        aggregator.on_event(RequestFinished(_row_at(start, model="b", attempts=passed)))
    aggregator.on_event(RequestFinished(_row_at(start, outcome="error", model=None)))
    for n in range(500):  # names clients made up: one shared bucket, however many
        aggregator.on_event(RequestFinished(_row_at(start, route=f"made-up-{n}")))
    assert list(aggregator.routes) == ["chat"]

    window = aggregator.figures("chat")["window"]
    assert (window["requests"], window["ok"], window["errors"]) == (11, 10, 1)
    assert window["fallbacks"] == 10 and window["fallback_rate"] == 1.0
    assert aggregator.figures(None)["window"]["requests"] == 500
    events = aggregator.last_events()
    assert [(e["kind"], e["count"]) for e in events] == [("fallback", 9), ("fallback", 1)]
    assert events[0]["passed"] == [{"model": "a", "reason": "open(51.0s)"}]  # the latest

    for n in range(120):  # events: only the last fifty are kept
        state = HealthState.OPENED if n % 2 else HealthState.CLOSED
        aggregator.on_event(HealthChanged(f"m{n}", "sim", state, None, start))
    events = aggregator.last_events()
    assert len(events) == 50 and events[0]["model"] == "m119" and events[-1]["model"] == "m70"

    now[0] = start + 16 * 60  # sixteen minutes later: out of the window
    figures = aggregator.figures("chat")
    assert len(figures["minutes"]) == 15 and figures["window"]["requests"] == 0
    aggregator.on_event(RequestFinished(_row_at(now[0])))
    assert aggregator.figures("chat")["window"]["requests"] == 1


def test_a_rollout_and_its_moves_show_on_the_page(gateway_factory, browser) -> None:
    config = sim_config(
        {"primary": {"reply": "primary answered"}, "newer": {"reply": "newer answered"}},
        {
            "chat": {
                "targets": ["primary"],
                "rollout": {"candidate": "newer", "stages": [50, 100], "min_requests": 1000},
            }
        },
    )
    gateway = gateway_factory(config)
    page = browser.new_page()
    page.goto(gateway.url + "/dashboard")
    rollout = page.locator('section[data-route="chat"] .rollout')
    expect(rollout).to_have_text(
        "rollout: newer, running, 50% of requests (stage 1 of 2)", timeout=WAIT_MS
    )
    assert gateway.post("/admin/rollouts/chat/rollback", b"").status == 200
    expect(rollout).to_have_text("rollout: newer, rolled_back, 0% of requests", timeout=WAIT_MS)
    expect(page.locator("#events tbody")).to_contain_text(
        "chat: newer rolled back, now 0%", timeout=WAIT_MS
    )
