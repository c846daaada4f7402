"""Calling a running gateway's admin endpoints from the command line (`status`, `reload`)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any


class Unreachable(Exception):
    """The gateway did not answer at all (not running, wrong address)."""


def call(base_url: str, path: str, key: str | None, method: str = "GET") -> tuple[int, Any]:
    """(status, decoded JSON body) of one admin call; `key` defaults to $TURNOUT_KEY. An
    error status is returned, not raised: its body says why in OpenAI's error shape."""
    url = base_url.rstrip("/") + path
    key = key or os.environ.get("TURNOUT_KEY")
    headers = {"authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(
        url, method=method, headers=headers, data=b"" if method == "POST" else None
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read())
        except ValueError:
            return exc.code, {"error": {"message": exc.reason}}
    except (urllib.error.URLError, OSError) as exc:
        raise Unreachable(f"cannot reach {url}: {exc}") from None


def error_message(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message"))
    return str(body)
