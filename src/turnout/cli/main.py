"""`turnout` entry point: parses the command line and hands off to one module per command."""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="turnout", description="A self-hosted LLM gateway.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", "-c", help="YAML config file (default: embedded defaults)")
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--workers", type=int, default=1, help="processes sharing the port (SO_REUSEPORT)"
    )
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)

    check = commands.add_parser("check", help="send one tiny request to every configured model")
    check.add_argument("--config", "-c", help="YAML config file (default: embedded defaults)")
    check.add_argument("--json", action="store_true", help="print JSON instead of a table")

    sim = commands.add_parser("sim", help="run a simulated OpenAI-compatible upstream")
    sim.add_argument("--config", "-c", help="YAML file of simulated models and their faults")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=9100)

    status = commands.add_parser("status", help="a running gateway's health, as a table")
    status.add_argument("--url", default="http://127.0.0.1:8080", help="the gateway's address")
    status.add_argument("--json", action="store_true", help="print the raw JSON")

    demo = commands.add_parser("demo", help="watch failover happen, in under a minute")
    demo.add_argument("--speed", type=float, default=1.0, help="run the story faster (2 = twice)")
    demo.add_argument("--port", type=int, default=0, help="gateway port (default: any free)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        from turnout.cli.serve import serve

        return serve(args, argv if argv is not None else sys.argv[1:])
    if args.command == "check":
        from turnout.cli.check import check

        return check(args)
    if args.command == "sim":
        from turnout.cli.sim import sim

        return sim(args)
    if args.command == "status":
        from turnout.cli.status import status

        return status(args)
    from turnout.cli.demo import demo

    return demo(args)


if __name__ == "__main__":
    sys.exit(main())
