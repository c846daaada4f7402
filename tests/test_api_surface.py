"""Endpoints clients call besides chat (issue 13, item 3): `GET /v1/models/{id}` through the
openai SDK's `models.retrieve`, and Anthropic's `POST /v1/messages/count_tokens` through the
anthropic SDK's `messages.count_tokens`, against a real gateway process."""

from __future__ import annotations

import anthropic
import openai
import pytest

from tests.conftest import sdk_client, sim_config
from turnout.model import Request
from turnout.routing.capabilities import prompt_tokens

MESSAGES = [{"role": "user", "content": "How many tokens is this sentence, roughly?"}]


@pytest.fixture
def gateway(gateway_factory):
    config = sim_config(
        {"primary": {"reply": "hi"}, "meta-llama/llama-4-scout": {"reply": "hi"}},
        {"chat": {"targets": ["primary", "meta-llama/llama-4-scout"]}},
    )
    return gateway_factory(config)


def test_models_retrieve_gives_a_route_or_a_model(gateway) -> None:
    client = sdk_client(gateway)
    route = client.models.retrieve("chat")
    assert (route.id, route.object, route.owned_by) == ("chat", "model", "turnout")
    model = client.models.retrieve("meta-llama/llama-4-scout")  # an id with a slash
    assert model.id == "meta-llama/llama-4-scout" and model.owned_by == "sim"
    listed = {m.id for m in client.models.list()}
    assert {"chat", "primary", "meta-llama/llama-4-scout"} <= listed
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("no-such-model")
    assert missing.value.code == "model_not_found"
    assert "no-such-model" in missing.value.message


def test_anthropic_count_tokens_counts_the_prompt_for_the_route(gateway) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0)
    raw = client.messages.with_raw_response.count_tokens(
        model="chat", messages=MESSAGES, system="Be brief."
    )
    counted = raw.parse()
    expected = prompt_tokens(
        Request(model="chat", messages=[{"role": "system", "content": "Be brief."}, *MESSAGES])
    )
    assert counted.input_tokens == expected > 0
    assert raw.headers["x-turnout-model"] == "primary"
    assert raw.headers["x-turnout-token-count"] == "estimate (cl100k_base)"

    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.count_tokens(model="no-such-route", messages=MESSAGES)
    assert missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.count_tokens(model="chat", messages=[{"role": "user", "content": 5}])
    assert bad.value.body["type"] == "error"
    assert gateway.get("/health").status == 200  # and it keeps serving
