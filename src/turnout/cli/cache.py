"""`turnout cache clear ROUTE`: a running gateway forgets a route's cached answers (the admin
endpoint POST /admin/cache/{route}/clear; with Redis state, every gateway of the fleet at
once). Exits 1 when the gateway refuses, 2 when it cannot be reached."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse

from turnout.cli.remote import Unreachable, call, error_message


def cache(args: argparse.Namespace) -> int:
    path = f"/admin/cache/{urllib.parse.quote(args.route, safe='')}/clear"
    try:
        code, body = call(args.url, path, args.key, method="POST")
    except Unreachable as exc:
        print(f"turnout cache: {exc}", file=sys.stderr)
        return 2
    if code != 200:
        print(f"turnout cache {args.action}: {error_message(body)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(body, indent=2))
    else:
        print(f"route {body['route']}: {body['cleared']} cached answers cleared")
    return 0
