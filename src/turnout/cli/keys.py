"""`turnout keys create|list|revoke`: gateway API keys, in the ledger's database."""

from __future__ import annotations

import argparse
import asyncio
import time

from rich.console import Console
from rich.table import Table

from turnout.accounting.keys import new_key
from turnout.cli.common import configured_store


async def _run(args: argparse.Namespace, store) -> int:
    console = Console()
    await store.start()
    try:
        if args.action == "create":
            key, record = new_key(
                args.name,
                routes=[r.strip() for r in args.routes.split(",")] if args.routes else None,
                rpm=args.rpm,
                tpm=args.tpm,
                daily_budget_usd=args.daily_budget,
                monthly_budget_usd=args.monthly_budget,
                on_exceed=args.on_exceed,
                admin=args.admin,
            )
            await store.create_key(record)
            print(f"id:  {record.id}\nkey: {key}\n(the key is shown only now: keep it)")
            return 0
        if args.action == "revoke":
            if await store.revoke_key(args.key_id):
                print(f"revoked {args.key_id}")
                return 0
            print(f"turnout keys: no active key {args.key_id}")
            return 1
        table = Table(title="gateway keys")
        for column in (
            "id",
            "name",
            "prefix",
            "routes",
            "rpm",
            "tpm",
            "daily $",
            "monthly $",
            "admin",
            "state",
        ):
            table.add_column(column)
        for k in await store.list_keys():
            state = (
                "revoked " + time.strftime("%Y-%m-%d", time.localtime(k.revoked_at))
                if (k.revoked_at)
                else "active"
            )
            table.add_row(
                k.id,
                k.name,
                k.prefix + "…",
                ",".join(k.routes or ["*"]),
                str(k.rpm or "-"),
                str(k.tpm or "-"),
                str(k.daily_budget_usd or "-"),
                str(k.monthly_budget_usd or "-"),
                "yes" if k.admin else "",
                state,
            )
        console.print(table)
        return 0
    finally:
        await store.close()


def keys(args: argparse.Namespace) -> int:
    store = configured_store(args.config, "keys")
    if store is None:
        return 2
    return asyncio.run(_run(args, store))
