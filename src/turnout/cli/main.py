"""`turnout` entry point: parses the command line and hands off to one module per command."""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, version


def _version() -> str:
    try:
        return version("turnout")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _add_config(parser: argparse.ArgumentParser, text: str) -> None:
    """`--config/-c` on this parser. Its default is no attribute at all (SUPPRESS), so that a
    sub-command's parser does not reset what its parent's took: `turnout keys -c F list` and
    `turnout keys list -c F` both work; `main` sets the shared default, None."""
    parser.add_argument("--config", "-c", default=argparse.SUPPRESS, help=text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="turnout", description="A self-hosted LLM gateway.")
    parser.add_argument("--version", action="version", version=f"turnout {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    _add_config(serve, "YAML config file (default: embedded defaults)")
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)"
    )
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    serve.add_argument(
        "--watch", action="store_true", help="reload the config file when it changes"
    )

    check = commands.add_parser("check", help="send one tiny request to every configured model")
    _add_config(check, "YAML config file (default: embedded defaults)")
    check.add_argument("--json", action="store_true", help="print JSON instead of a table")

    from turnout.cli.sim import CONFIG_HELP, DESCRIPTION  # light: the server loads on use

    sim = commands.add_parser(
        "sim",
        help="run a simulated OpenAI-compatible upstream",
        description=DESCRIPTION,
        epilog=CONFIG_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config(sim, "YAML file of simulated models and their faults")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=9100)

    status = commands.add_parser("status", help="a running gateway's health, as a table")
    status.add_argument("--url", default="http://127.0.0.1:8080", help="the gateway's address")
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    status.add_argument("--key", help="an admin key (default: $TURNOUT_KEY), when auth is on")

    replay = commands.add_parser(
        "replay", help="send a route's captured requests to a candidate model, and compare"
    )
    _add_config(replay, "YAML config file (its data directory holds the captures)")
    replay.add_argument("--route", required=True, help="the route whose captures are replayed")
    replay.add_argument("--candidate", required=True, help="a model of the config")
    replay.add_argument("--since", default="7d", help="7d, 24h, 30m or an ISO date")
    replay.add_argument("--limit", type=int, default=200, help="the last N captured requests")
    replay.add_argument("--concurrency", type=int, default=4, help="replays at once")
    replay.add_argument("--format", choices=["table", "json"], default="table")
    replay.add_argument("--html", help="also write an HTML report to this file")

    reload = commands.add_parser(
        "reload", help="a running gateway reads its config again (SIGHUP does the same)"
    )
    reload.add_argument("--url", default="http://127.0.0.1:8080", help="the gateway's address")
    reload.add_argument("--json", action="store_true", help="print the raw JSON")
    reload.add_argument("--key", help="an admin key (default: $TURNOUT_KEY), when auth is on")

    rollout = commands.add_parser(
        "rollout", help="a running gateway's canary rollouts: status, start, promote, rollback"
    )
    rollout.add_argument("action", choices=["status", "start", "promote", "rollback", "abort"])
    rollout.add_argument("route", nargs="?", help="the route (all of them, for status)")
    rollout.add_argument("--url", default="http://127.0.0.1:8080", help="the gateway's address")
    rollout.add_argument("--json", action="store_true", help="print the raw JSON")
    rollout.add_argument("--key", help="an admin key (default: $TURNOUT_KEY), when auth is on")

    cache = commands.add_parser("cache", help="a running gateway's response cache: clear")
    cache.add_argument("action", choices=["clear"])
    cache.add_argument("route", help="the route whose cached answers are forgotten")
    cache.add_argument("--url", default="http://127.0.0.1:8080", help="the gateway's address")
    cache.add_argument("--json", action="store_true", help="print the raw JSON")
    cache.add_argument("--key", help="an admin key (default: $TURNOUT_KEY), when auth is on")

    keys = commands.add_parser("keys", help="create, list and revoke gateway API keys")
    _add_config(keys, "YAML config file (its ledger holds the keys)")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="make a key; it is printed once")
    create.add_argument("name")
    create.add_argument("--routes", help="comma list of routes it may use (default: all)")
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--tpm", type=int, help="tokens per minute")
    create.add_argument("--daily-budget", type=float, help="USD per UTC day")
    create.add_argument("--monthly-budget", type=float, help="USD per calendar month")
    create.add_argument("--on-exceed", choices=["block", "downgrade"], default="block")
    create.add_argument("--admin", action="store_true", help="may use the admin endpoints")
    listing = actions.add_parser("list", help="list keys (never the keys themselves)")
    revoke = actions.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    for action in (create, listing, revoke):
        _add_config(action, "YAML config file (its ledger holds the keys)")
    report = commands.add_parser("report", help="spend, savings and fallbacks from the ledger")
    _add_config(report, "YAML config file (its ledger is read)")
    report.add_argument("--since", default="7d", help="7d, 24h, 30m or an ISO date")
    report.add_argument("--format", choices=["table", "json", "csv"], default="table")
    demo = commands.add_parser("demo", help="watch failover happen, in under a minute")
    demo.add_argument("--speed", type=float, default=1.0, help="run the story faster (2 = twice)")
    demo.add_argument("--port", type=int, default=0, help="gateway port (default: any free)")
    from turnout.cli.scenario import add_parser as add_scenario  # light: runs load on use

    add_scenario(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not hasattr(args, "config"):
        args.config = None  # the shared default of every --config (see _add_config)
    if args.command == "serve":
        from turnout.cli.serve import serve

        return serve(args, argv if argv is not None else sys.argv[1:])
    if args.command == "check":
        from turnout.cli.check import check

        return check(args)
    if args.command == "sim":
        from turnout.cli.sim import sim

        return sim(args)
    if args.command == "keys":
        from turnout.cli.keys import keys

        return keys(args)
    if args.command == "report":
        from turnout.cli.report import report

        return report(args)
    if args.command == "status":
        from turnout.cli.status import status

        return status(args)
    if args.command == "rollout":
        from turnout.cli.rollout import rollout

        return rollout(args)
    if args.command == "cache":
        from turnout.cli.cache import cache

        return cache(args)
    if args.command == "replay":
        from turnout.cli.replay import replay_command

        return replay_command(args)
    if args.command == "scenario":
        from turnout.cli.scenario import scenario

        return scenario(args)
    if args.command == "reload":
        from turnout.cli.reload import reload

        return reload(args)
    from turnout.cli.demo import demo

    return demo(args)


if __name__ == "__main__":
    sys.exit(main())
