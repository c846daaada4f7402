"""Provider kinds are modules registered by name (providers/registry.py): the config picks
each provider section's model by its `kind`, and a kind defined outside turnout (the test
suite's `echo`, in the one file tests/echo_kind.py) works end to end once imported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai as openai_sdk
import pytest
import yaml

from tests.conftest import ledger_rows, sdk_client, turnout_cli
from turnout.config import ConfigError, parse_config
from turnout.providers import anthropic, cloudflare, gemini, local, openai, sim
from turnout.providers.http import HTTPProvider
from turnout.providers.registry import make_provider

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = {"TURNOUT_PLUGINS": "tests.echo_kind", "PYTHONPATH": str(ROOT)}
BUILT_IN = ["anthropic", "cloudflare", "gemini", "local", "openai", "sim"]


def _providers(**sections: dict[str, Any]) -> dict[str, Any]:
    return {"providers": sections}


def test_each_section_is_validated_by_its_kinds_model() -> None:
    config = parse_config(
        _providers(
            o={"kind": "openai", "base_url": "http://x"},
            a={"kind": "anthropic", "max_tokens": 100},
            g={"kind": "gemini"},
            c={"kind": "cloudflare", "account_id": "acc"},
            l={"kind": "local", "threads": 1},
            s={"kind": "sim", "seed": 3},
        )
    )
    models = {name: type(section) for name, section in config.providers.items()}
    assert models == {
        "o": openai.OpenAIConfig,
        "a": anthropic.AnthropicConfig,
        "g": gemini.GeminiConfig,
        "c": cloudflare.CloudflareConfig,
        "l": local.LocalConfig,
        "s": sim.SimConfig,
    }
    assert isinstance(make_provider("a", config.providers["a"]), HTTPProvider)
    assert isinstance(make_provider("l", config.providers["l"]), local.LocalProvider)


@pytest.mark.parametrize(
    ("section", "error"),
    [
        (
            {"kind": "nosuch"},
            f"f: providers.p.kind: unknown provider kind 'nosuch' (known: {', '.join(BUILT_IN)})",
        ),
        # a field of another kind is not this kind's: refused where it is written
        ({"kind": "openai", "base_url": "http://x", "seed": 1}, "f: providers.p.seed: Extra"),
        ({"kind": "gemini", "model_path": "m.gguf"}, "f: providers.p.model_path: Extra"),
        ({"kind": "openai"}, "f: providers.p: base_url is required for kind 'openai'"),
        ({"kind": "anthropic", "max_tokens": 0}, "f: providers.p.max_tokens: Input should be"),
        ({"base_url": "http://x"}, "f: providers.p.kind: Field required"),
    ],
)
def test_bad_provider_sections_name_their_key_path(section: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError) as bad:
        parse_config(_providers(p=section), "f")
    assert str(bad.value).startswith(error), bad.value


def _echo_config(prefix: str = "echo: ") -> dict[str, Any]:
    free = {"input": 0, "output": 0}
    return {
        "providers": {
            "flaky": {"kind": "sim", "seed": 1, "sim": {"broken": {"error_rate": {500: 1.0}}}},
            "parrots": {"kind": "echo", "prefix": prefix},
        },
        "models": {
            "broken": {"provider": "flaky", "price": free},
            "parrot": {"provider": "parrots", "price": free},
        },
        "routes": {"chat": {"targets": ["broken", "parrot"]}},
    }


def test_a_kind_defined_in_the_test_suite_serves_and_takes_over(gateway_factory) -> None:
    """`echo` lives in tests/echo_kind.py only: a real `turnout serve` imports it as a plugin,
    and the openai SDK gets its answers, streaming and not, after the sim model fails."""
    gateway = gateway_factory(_echo_config(), env=PLUGIN)
    client = sdk_client(gateway)
    messages = [{"role": "user", "content": "say it back"}]

    raw = client.chat.completions.with_raw_response.create(model="chat", messages=messages)
    assert raw.parse().choices[0].message.content == "echo: say it back"
    assert raw.headers["x-turnout-model"] == "parrot"
    assert raw.headers["x-turnout-fallback"].startswith("broken=server_error(500)")

    with client.chat.completions.with_streaming_response.create(
        model="chat", messages=messages, stream=True
    ) as response:
        chunks = [c.choices[0].delta.content or "" for c in response.parse() if c.choices]
        assert response.headers["x-turnout-model"] == "parrot"
        assert response.headers["x-turnout-fallback"].startswith("broken=")
    assert "".join(chunks) == "echo: say it back"
    assert len([c for c in chunks if c]) == 4  # streamed word by word, not in one piece

    forced = client.chat.completions.create(model="parrot", messages=messages, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in forced if c.choices) == (
        "echo: say it back"
    )


def test_a_bug_in_a_provider_is_a_500_with_its_ledger_row(gateway_factory, tmp_path) -> None:
    """An exception that is not an upstream's error (a bug) reaches the client as a 500 in its
    shape; the request still has its ledger row and the gateway keeps serving."""
    gateway = gateway_factory(_echo_config(), env=PLUGIN)
    client = sdk_client(gateway)
    for stream in (False, True):
        with pytest.raises(openai_sdk.InternalServerError) as failed:
            client.chat.completions.create(
                model="parrot", messages=[{"role": "user", "content": "crash"}], stream=stream
            )
        assert failed.value.status_code == 500
    answer = client.chat.completions.create(
        model="parrot", messages=[{"role": "user", "content": "still here"}]
    )
    assert answer.choices[0].message.content == "echo: still here"
    gateway.stop()  # the ledger is drained on exit
    rows = ledger_rows("sqlite", str(tmp_path / "turnout.db"))
    assert sorted((r.status, r.outcome) for r in rows) == [
        (200, "ok"),
        (500, "error"),
        (500, "error"),
    ]


def _serve(tmp_path: Path, config: dict[str, Any], env: dict[str, str]) -> str:
    """Start `turnout serve` expecting a config error: its stderr."""
    path = tmp_path / "turnout.yaml"
    path.write_text(yaml.safe_dump(config))
    result = turnout_cli(
        "serve",
        "--config",
        str(path),
        "--port",
        "0",
        env={"TURNOUT_DATA_DIR": str(tmp_path), **env},
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    return result.stderr


def test_without_the_plugin_the_kind_is_unknown(tmp_path: Path) -> None:
    stderr = _serve(tmp_path, _echo_config(), {"TURNOUT_PLUGINS": ""})
    known = ", ".join(BUILT_IN)
    assert f"providers.parrots.kind: unknown provider kind 'echo' (known: {known})" in stderr


def test_a_plugin_kinds_own_fields_are_checked(tmp_path: Path) -> None:
    config = _echo_config()
    config["providers"]["parrots"]["volume"] = 11
    stderr = _serve(tmp_path, config, PLUGIN)
    assert f"{tmp_path / 'turnout.yaml'}: providers.parrots.volume: Extra inputs" in stderr


@pytest.mark.parametrize(
    ("plugins", "error"),
    [
        ("tests/echo_kind.py", "'tests/echo_kind.py' is not a module name"),
        ("os; import sys", "'os; import sys' is not a module name"),
        ("tests.no_such_kind", "cannot import tests.no_such_kind: ModuleNotFoundError"),
    ],
)
def test_plugins_are_module_names_only(tmp_path: Path, plugins: str, error: str) -> None:
    stderr = _serve(tmp_path, _echo_config(), {**PLUGIN, "TURNOUT_PLUGINS": plugins})
    assert f"TURNOUT_PLUGINS: {error}" in stderr
