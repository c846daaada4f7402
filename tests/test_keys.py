"""Gateway keys, JWTs, per-key limits and budgets, through a real gateway process; keys made
and revoked with the real `turnout keys` command against the same database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import jwt
import openai
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.upstreams import shared_sim

CHEAP = {"input": 0.08, "output": 0.30}
DEAR = {"input": 1.00, "output": 5.00}
SECRET = "jwt-test-secret-0123456789abcdef0123456789"
MESSAGES = [{"role": "user", "content": "hello"}]


def _config(sim, auth: dict | None = None, targets=("scout", "haiku")) -> dict:
    return {
        "providers": {"sim": {"kind": "openai", "base_url": sim.base_url}},
        "models": {
            "scout": {"provider": "sim", "price": CHEAP},
            "haiku": {"provider": "sim", "price": DEAR},
        },
        "routes": {"chat": {"targets": list(targets)}, "other": {"targets": ["scout"]}},
        "auth": auth or {"required": True},
    }


class Keys:
    """`turnout keys ...` against the gateway's config and data directory."""

    def __init__(self, tmp_path, config: dict) -> None:
        self.path = tmp_path / "keys-config.yaml"
        self.path.write_text(yaml.safe_dump(config))
        self.env = {
            **os.environ,
            "TURNOUT_DATA_DIR": str(tmp_path),
            "JWT_SECRET": SECRET,
            "COLUMNS": "200",
        }

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "turnout.cli.main", "keys", "--config", str(self.path), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=self.env,
        )

    def create(self, name: str, *options: str) -> tuple[str, str]:
        result = self.run("create", name, *options)
        assert result.returncode == 0, result.stderr
        pairs = (line.split(":", 1) for line in result.stdout.splitlines())
        lines = {name.strip(): value.strip() for name, value in pairs}
        return lines["id"], lines["key"]


def _client(gateway, key: str | None) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=key or "none", max_retries=0)


@pytest.fixture
def setup(gateway_factory, tmp_path):
    with shared_sim({"scout": {"reply": "cheap"}, "haiku": {"reply": "dear"}}) as sim:

        def start(auth: dict | None = None, targets=("scout", "haiku")):
            config = _config(sim, auth, targets)
            keys = Keys(tmp_path, config)
            gateway = gateway_factory(config, env={"JWT_SECRET": SECRET})
            return gateway, keys

        yield start


def test_keys_create_use_revoke(setup) -> None:
    gateway, keys = setup()
    with pytest.raises(openai.AuthenticationError) as missing:
        _client(gateway, None).chat.completions.create(model="chat", messages=MESSAGES)
    assert missing.value.status_code == 401
    with pytest.raises(openai.AuthenticationError) as bad:
        _client(gateway, "tk-not-a-real-key").chat.completions.create(
            model="chat", messages=MESSAGES
        )
    assert bad.value.code == "invalid_api_key"

    key_id, key = keys.create("app-one", "--routes", "chat")
    answer = _client(gateway, key).chat.completions.create(model="chat", messages=MESSAGES)
    assert answer.choices[0].message.content == "cheap"
    with pytest.raises(openai.PermissionDeniedError):  # not one of its routes
        _client(gateway, key).chat.completions.create(model="other", messages=MESSAGES)
    listing = keys.run("list")
    assert key_id in listing.stdout and key not in listing.stdout  # never the key itself

    assert keys.run("revoke", key_id).returncode == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            _client(gateway, key).chat.completions.create(model="chat", messages=MESSAGES)
        except openai.AuthenticationError as exc:
            assert exc.code == "revoked_api_key"
            break
        time.sleep(0.2)
    else:
        pytest.fail("a revoked key kept working")
    assert key not in gateway.log()


def test_per_key_rpm_limit(setup) -> None:
    gateway, keys = setup()
    _, key = keys.create("chatty", "--rpm", "3")
    client = _client(gateway, key)
    for _ in range(3):
        client.chat.completions.create(model="chat", messages=MESSAGES)
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="chat", messages=MESSAGES)
    assert limited.value.code == "key_rate_limited"
    assert int(limited.value.response.headers["retry-after"]) >= 1
    _, other = keys.create("quiet", "--rpm", "3")  # one key's limit is not another's
    _client(gateway, other).chat.completions.create(model="chat", messages=MESSAGES)


def test_budget_blocks_once_spent(setup) -> None:
    gateway, keys = setup()
    _, key = keys.create("tight", "--daily-budget", "0.0000001")
    client = _client(gateway, key)
    client.chat.completions.create(model="chat", messages=MESSAGES)  # spends past it
    with pytest.raises(openai.RateLimitError) as blocked:
        client.chat.completions.create(model="chat", messages=MESSAGES)
    assert blocked.value.code == "budget_exceeded"
    assert "daily budget of key" in blocked.value.message


def test_budget_downgrades_to_the_cheaper_targets(setup) -> None:
    gateway, keys = setup(targets=("haiku", "scout"))  # the dear model first
    _, key = keys.create("frugal", "--daily-budget", "0.0000001", "--on-exceed", "downgrade")
    client = _client(gateway, key)
    first = client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
    assert first.headers["x-turnout-model"] == "haiku"
    second = client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
    assert second.headers["x-turnout-model"] == "scout"
    assert second.headers["x-turnout-fallback"] == "haiku=excluded"


def test_usage_shows_only_the_callers_own_spend(setup) -> None:
    gateway, keys = setup()
    id_a, key_a = keys.create("a")
    id_b, key_b = keys.create("b")
    _client(gateway, key_a).chat.completions.create(model="chat", messages=MESSAGES)
    import urllib.request

    def usage(key: str) -> dict:
        request = urllib.request.Request(
            gateway.base_url + "/usage", headers={"authorization": f"Bearer {key}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    mine, theirs = usage(key_a), usage(key_b)
    assert mine["key"] == id_a and mine["daily"]["spent_usd"] > 0
    assert theirs["key"] == id_b and theirs["daily"]["spent_usd"] == 0
    assert id_a not in json.dumps(theirs)


def test_admin_endpoints_need_an_admin_key(setup) -> None:
    gateway, keys = setup()
    _, plain = keys.create("plain")
    _, admin = keys.create("ops", "--admin")
    import urllib.error
    import urllib.request

    def get(path: str, key: str | None) -> int:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        request = urllib.request.Request(gateway.url + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert get("/health", None) == 200  # liveness stays open
    assert get("/health/providers", None) == 401
    assert get("/health/providers", plain) == 403
    assert get("/health/providers", admin) == 200
    assert get("/admin/keys", plain) == 403
    assert get("/admin/keys", admin) == 200
    status = subprocess.run(
        [sys.executable, "-m", "turnout.cli.main", "status", "--url", gateway.url, "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "TURNOUT_KEY": admin},
    )
    assert status.returncode == 0, status.stderr
    assert "chat" in json.loads(status.stdout)["routes"]


def test_jwt_hs256(setup) -> None:
    gateway, keys = setup(auth={"required": True, "jwt": {"secret": "${JWT_SECRET}"}})
    keys.create("svc-billing")
    now = int(time.time())
    good = jwt.encode({"sub": "svc-billing", "exp": now + 60}, SECRET, algorithm="HS256")
    answer = _client(gateway, good).chat.completions.create(model="chat", messages=MESSAGES)
    assert answer.choices[0].message.content == "cheap"
    forged = jwt.encode(
        {"sub": "svc-billing", "exp": now + 60}, "wrong-secret-" * 3, algorithm="HS256"
    )
    with pytest.raises(openai.AuthenticationError) as refused:
        _client(gateway, forged).chat.completions.create(model="chat", messages=MESSAGES)
    assert refused.value.code == "invalid_token"
    expired = jwt.encode({"sub": "svc-billing", "exp": now - 10}, SECRET, algorithm="HS256")
    with pytest.raises(openai.AuthenticationError) as late:
        _client(gateway, expired).chat.completions.create(model="chat", messages=MESSAGES)
    assert late.value.code == "expired_token"
    stranger = jwt.encode({"sub": "nobody", "exp": now + 60}, SECRET, algorithm="HS256")
    with pytest.raises(openai.AuthenticationError):
        _client(gateway, stranger).chat.completions.create(model="chat", messages=MESSAGES)


def test_a_jwt_names_the_newest_active_key_of_a_reused_name(setup) -> None:
    """A key rotated under the same name: the JWT's subject is the successor (its limits
    apply) while both are active, and still after the old one is revoked."""
    gateway, keys = setup(auth={"required": True, "jwt": {"secret": "${JWT_SECRET}"}})
    old_id, _ = keys.create("svc-rotated", "--routes", "nowhere")  # it may use no route
    time.sleep(0.01)
    keys.create("svc-rotated")  # the successor may use every route
    time.sleep(2.5)  # the gateway's key table refreshes every 2 s
    token = jwt.encode(
        {"sub": "svc-rotated", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256"
    )
    answer = _client(gateway, token).chat.completions.create(model="chat", messages=MESSAGES)
    assert answer.choices[0].message.content == "cheap"
    assert keys.run("revoke", old_id).returncode == 0
    time.sleep(2.5)  # the gateway's key table refreshes every 2 s
    answer = _client(gateway, token).chat.completions.create(model="chat", messages=MESSAGES)
    assert answer.choices[0].message.content == "cheap"


def test_jwt_rs256_with_a_jwks_file(setup, tmp_path) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(
        json.dumps({"keys": [{**public_jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]})
    )
    auth = {
        "required": True,
        "jwt": {"algorithm": "RS256", "jwks_file": str(jwks), "claim": "client_id"},
    }
    gateway, keys = setup(auth=auth)
    keys.create("partner")
    claims = {"client_id": "partner", "exp": int(time.time()) + 60}
    token = jwt.encode(claims, private, algorithm="RS256", headers={"kid": "k1"})
    answer = _client(gateway, token).chat.completions.create(model="chat", messages=MESSAGES)
    assert answer.choices[0].message.content == "cheap"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims, other, algorithm="RS256", headers={"kid": "k1"})
    with pytest.raises(openai.AuthenticationError):
        _client(gateway, forged).chat.completions.create(model="chat", messages=MESSAGES)


def test_auth_off_only_on_loopback(tmp_path) -> None:
    config = {"server": {"host": "0.0.0.0", "port": 0}, "auth": {"required": False}}
    path = tmp_path / "open.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "turnout.cli.main", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "auth.required" in result.stderr and "loopback" in result.stderr


def test_route_budget_alerts_at_soft_then_blocks(gateway_factory, tmp_path) -> None:
    with shared_sim({"scout": {"reply": "cheap"}, "haiku": {"reply": "dear"}}) as sim:
        config = _config(sim, auth={"required": False})
        config["budgets"] = [
            {
                "scope": "route",
                "name": "chat",
                "daily_usd": 0.0000001,
                "soft": 0.5,
                "on_exceed": "block",
            }
        ]
        gateway = gateway_factory(config)
        client = _client(gateway, None)
        client.chat.completions.create(model="chat", messages=MESSAGES)  # spends past it
        with pytest.raises(openai.RateLimitError) as blocked:
            client.chat.completions.create(model="chat", messages=MESSAGES)
        assert "daily budget of route chat" in blocked.value.message
        # another route has its own budget (none here): still served
        client.chat.completions.create(model="other", messages=MESSAGES)
        events = json.loads(urllib.request.urlopen(gateway.url + "/admin/events").read())
        assert [e["type"] for e in events] == ["budget_soft_limit"]
        assert (events[0]["scope"], events[0]["name"], events[0]["period"]) == (
            "route",
            "chat",
            "daily",
        )
        assert any("budget of route chat" in line for line in gateway.log().splitlines())


def test_only_admin_keys_may_override_the_route_policy(setup) -> None:
    gateway, keys = setup(targets=("haiku", "scout"))  # priority: the dear model first
    _, plain = keys.create("app")
    _, admin = keys.create("ops", "--admin")
    cheapest = {"x-turnout-route-policy": "cheapest"}
    with pytest.raises(openai.PermissionDeniedError):
        _client(gateway, plain).chat.completions.create(
            model="chat", messages=MESSAGES, extra_headers=cheapest
        )
    raw = _client(gateway, admin).chat.completions.with_raw_response.create(
        model="chat", messages=MESSAGES, extra_headers=cheapest
    )
    assert raw.headers["x-turnout-model"] == "scout"
    default = _client(gateway, admin).chat.completions.with_raw_response.create(
        model="chat", messages=MESSAGES
    )
    assert default.headers["x-turnout-model"] == "haiku"
    with pytest.raises(openai.BadRequestError):
        _client(gateway, admin).chat.completions.create(
            model="chat", messages=MESSAGES, extra_headers={"x-turnout-route-policy": "random"}
        )
