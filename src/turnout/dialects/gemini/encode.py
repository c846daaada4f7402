"""The internal Request (OpenAI Chat Completions shape) -> a Gemini GenerateContentRequest.

https://ai.google.dev/api/generate-content#request-body
"""

from __future__ import annotations

import base64
import mimetypes
from collections.abc import Iterable
from typing import Any

import orjson

from turnout.model import Request

# Gemini 3 refuses a replayed function call without the thought signature it was minted with
# (400 "Function call is missing a thought_signature"). Tool calls that come back through the
# OpenAI shape have lost theirs, so the first call of each model turn carries Google's
# documented "skip validation" value instead (docs: gemini-api/docs/thought-signatures, FAQ).
# This exact value was accepted in the recorded cassettes.
SKIP_SIGNATURE = base64.b64encode(b"context_engineering_is_the_way_to_go").decode()

_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY", "any": "ANY"}


def _text_of(content: Any) -> str:
    """The text of an OpenAI content: a string, or the text parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text") or "")
            for part in content
            if isinstance(part, dict) and part.get("type") in ("text", "input_text")
        )
    return ""


def _data_url(url: str) -> dict[str, Any] | None:
    """`data:image/png;base64,AAAA` -> inlineData, or None when `url` is not a base64 data URL."""
    if not url.startswith("data:"):
        return None
    head, _, data = url[5:].partition(",")
    mime, _, encoding = head.partition(";")
    if encoding != "base64":
        return None
    return {"inlineData": {"mimeType": mime or "application/octet-stream", "data": data}}


def _media(url: str) -> dict[str, Any]:
    inline = _data_url(url)
    if inline is not None:
        return inline
    # a URL: Gemini fetches it itself and wants to be told what it is
    mime = mimetypes.guess_type(url.split("?", 1)[0])[0] or "image/jpeg"
    return {"fileData": {"mimeType": mime, "fileUri": url}}


def _part(part: Any) -> dict[str, Any] | None:
    """One OpenAI content part -> one Gemini part (None for parts Gemini has no use for)."""
    if not isinstance(part, dict):
        return None
    kind = part.get("type")
    if kind in ("text", "input_text", "refusal"):
        return {"text": str(part.get("text") or part.get("refusal") or "")}
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        return _media(str(url or ""))
    if kind == "input_audio":
        audio = part.get("input_audio") or {}
        mime = f"audio/{audio.get('format') or 'wav'}"
        return {"inlineData": {"mimeType": mime, "data": str(audio.get("data") or "")}}
    if kind == "file":
        file = part.get("file") or {}
        return _data_url(str(file.get("file_data") or ""))
    return None


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}]
    if isinstance(content, list):
        return [p for p in map(_part, content) if p is not None]
    return []


def _args(arguments: Any) -> dict[str, Any]:
    """Tool-call arguments (JSON text) -> the object Gemini wants; {} when there is none."""
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = orjson.loads(arguments) if arguments else {}
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _signature(call: dict[str, Any]) -> str | None:
    """A thought signature a client kept the way Gemini's OpenAI endpoint hands it out."""
    extra = call.get("extra_content")
    google = extra.get("google") if isinstance(extra, dict) else None
    signature = google.get("thought_signature") if isinstance(google, dict) else None
    return signature if isinstance(signature, str) and signature else None


def _model_parts(message: dict[str, Any]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        parts.append({"text": reasoning, "thought": True})
    content = message.get("content")
    calls = [call for call in message.get("tool_calls") or [] if isinstance(call, dict)]
    if not (calls and content == ""):  # an empty text beside tool calls says nothing
        parts.extend(_parts(content))
    for i, call in enumerate(calls):
        function = call.get("function") or {}
        function_call: dict[str, Any] = {
            "name": str(function.get("name") or ""),
            "args": _args(function.get("arguments")),
        }
        if call.get("id"):
            function_call["id"] = str(call["id"])
        part: dict[str, Any] = {"functionCall": function_call}
        signature = _signature(call) or (SKIP_SIGNATURE if i == 0 else None)
        if signature:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _tool_response(content: Any) -> dict[str, Any]:
    """A tool message's content -> functionResponse.response, which must be an object."""
    text = _text_of(content)
    try:
        parsed = orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        parsed = None
    # the docs' own examples answer {"result": ...}; a JSON object is passed as it is
    return parsed if isinstance(parsed, dict) else {"result": text}


def encode_contents(
    messages: Iterable[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(systemInstruction parts, contents). Consecutive turns of one role are merged: the
    answers to parallel tool calls must arrive together in one user turn."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id -> function name, for the answers to them
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            text = _text_of(message.get("content"))
            if text:
                system.append({"text": text})
            continue
        if role == "assistant":
            for call in message.get("tool_calls") or []:
                if isinstance(call, dict) and call.get("id"):
                    names[str(call["id"])] = str((call.get("function") or {}).get("name") or "")
            turn, parts = "model", _model_parts(message)
        elif role in ("tool", "function"):
            call_id = message.get("tool_call_id")
            response: dict[str, Any] = {
                "name": names.get(str(call_id), "") or str(message.get("name") or ""),
                "response": _tool_response(message.get("content")),
            }
            if call_id:
                response["id"] = str(call_id)
            turn, parts = "user", [{"functionResponse": response}]
        else:
            turn, parts = "user", _parts(message.get("content"))
        if not parts:
            continue  # Gemini refuses a turn without parts
        if contents and contents[-1]["role"] == turn:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": turn, "parts": parts})
    return system, contents


def _function_declarations(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    declarations = []
    for tool in tools or []:
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            continue  # OpenAI's hosted tools (web_search, ...) have no Gemini function form
        function = tool.get("function") or {}
        declaration: dict[str, Any] = {"name": function.get("name")}
        if isinstance(function.get("description"), str):
            declaration["description"] = function["description"]
        if function.get("parameters"):
            # full JSON Schema ($ref, anyOf, additionalProperties), unlike `parameters`
            declaration["parametersJsonSchema"] = function["parameters"]
        declarations.append(declaration)
    return declarations


def _calling_config(tool_choice: Any) -> dict[str, Any] | None:
    if isinstance(tool_choice, str):
        mode = _MODES.get(tool_choice)
        return {"mode": mode} if mode else None
    if not isinstance(tool_choice, dict):
        return None
    if tool_choice.get("type") == "function":
        name = (tool_choice.get("function") or {}).get("name")
        return {"mode": "ANY", "allowedFunctionNames": [name]} if name else None
    if tool_choice.get("type") == "allowed_tools":
        allowed = tool_choice.get("allowed_tools") or {}
        names = [
            (tool.get("function") or {}).get("name")
            for tool in allowed.get("tools") or []
            if isinstance(tool, dict)
        ]
        # allowedFunctionNames only go with ANY or VALIDATED (AUTO with checked calls)
        mode = "ANY" if allowed.get("mode") == "required" else "VALIDATED"
        return {"mode": mode, "allowedFunctionNames": [name for name in names if name]}
    return None


def _generation_config(request: Request) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if request.max_tokens is not None:
        config["maxOutputTokens"] = request.max_tokens
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.stop:
        config["stopSequences"] = request.stop
    extra = request.extra
    for name, field in (
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("top_k", "topK"),
    ):
        if isinstance(extra.get(name), int | float) and not isinstance(extra.get(name), bool):
            config[field] = extra[name]
    response_format = request.response_format or {}
    kind = response_format.get("type")
    if kind in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if schema:
            # responseJsonSchema takes JSON Schema as clients write it ($defs, anyOf with
            # null, additionalProperties); responseSchema is an OpenAPI subset
            config["responseJsonSchema"] = schema
    return config


def encode_request(request: Request, upstream_model: str, stream: bool) -> dict[str, Any]:
    """The GenerateContentRequest body; the same for both endpoints (the URL says stream)."""
    system, contents = encode_contents(request.messages)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    config = _generation_config(request)
    if config:
        body["generationConfig"] = config
    declarations = _function_declarations(request.tools)
    if declarations:
        body["tools"] = [{"functionDeclarations": declarations}]
        calling = _calling_config(request.tool_choice)
        if calling:
            body["toolConfig"] = {"functionCallingConfig": calling}
    return body
