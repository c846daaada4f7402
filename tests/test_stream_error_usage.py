"""An error inside a 200 stream that says what was spent (OpenRouter's, recorded): the ledger
counts the upstream's own usage, not an estimate (issue 13, item 5). A real gateway process
in front of the recorded stream, driven by the openai SDK."""

from __future__ import annotations

import openai
import pytest
import yaml

from tests.conftest import ledger_rows, sdk_client
from tests.upstreams import CassetteUpstream, serve_app
from tests.vectors import cassette


def test_usage_reported_with_an_in_stream_error_is_counted(gateway_factory, tmp_path) -> None:
    recorded = cassette("openrouter", "test_openrouter_stream_error.yaml")
    upstream = CassetteUpstream(yaml.safe_load(recorded.read_text())["interactions"])
    with serve_app(upstream.app()) as port:
        config = {
            "providers": {"or": {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1"}},
            "models": {"minimax": {"provider": "or", "model": "minimax/minimax-m2:free"}},
            "routes": {"chat": {"targets": ["minimax"]}},
        }
        gateway = gateway_factory(config)
        chunks = sdk_client(gateway).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        with pytest.raises(openai.APIError, match="Token limit reached"):
            for _ in chunks:
                pass
        gateway.stop()  # the ledger is drained on exit
    [row] = ledger_rows("sqlite", str(tmp_path / "turnout.db"))
    assert row.outcome == "stream_failed"
    assert (row.prompt_tokens, row.completion_tokens) == (43, 10)  # the upstream's figures
    assert row.usage_estimated is False
    assert row.model == "minimax"
