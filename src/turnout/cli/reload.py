"""`turnout reload`: a running gateway reads its config again (every worker of --workers N).
Exits 0 when the new config serves (or nothing changed), 1 when it was refused (the old one
keeps serving; the error names the file and key path), 2 when the gateway cannot be reached."""

from __future__ import annotations

import argparse
import json
import sys

from turnout.cli.remote import Unreachable, call, error_message


def reload(args: argparse.Namespace) -> int:
    try:
        status, body = call(args.url, "/admin/reload", args.key, method="POST")
    except Unreachable as exc:
        print(f"turnout reload: {exc}", file=sys.stderr)
        return 2
    if status != 200:
        print(f"turnout reload: {error_message(body)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(body, indent=2))
    elif body["changed"]:
        print(f"reloaded {body['source']}: version {body['version']} (was {body['previous']})")
    else:
        print(f"{body['source']} unchanged: version {body['version']}")
    if body["restart_needed"]:
        print(
            "these sections changed but take effect only on a restart: "
            + ", ".join(body["restart_needed"]),
            file=sys.stderr,
        )
    return 0
