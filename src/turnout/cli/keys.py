"""`turnout keys create|list|revoke`: gateway API keys, in the ledger's database."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from rich.console import Console
from rich.table import Table
from rich.text import Text

from turnout.accounting.keys import new_key
from turnout.accounting.records import KeyRecord
from turnout.cli.common import configured_store
from turnout.cli.tables import fit

# narrow terminal: what goes first (id, name and state always stay: `revoke` takes the id)
_DROP = ("prefix", "limits", "routes", "admin")


async def _create(args: argparse.Namespace, store) -> int:
    # a duplicate name is warned about, not refused: rotating a key is creating its successor
    # under the same name, then revoking the old one once clients have moved. But it is a
    # mistake as often, and a JWT's `sub` names one key: so say which keys share the name.
    same = [k.id for k in await store.list_keys() if k.name == args.name and not k.revoked_at]
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
    if same:
        print(
            f"turnout keys: warning: an active key is already named {args.name!r}"
            f" ({', '.join(same)}); each works until `turnout keys revoke ID`",
            file=sys.stderr,
        )
    print(f"id:  {record.id}\nkey: {key}\n(the key is shown only now: keep it)")
    return 0


def _limits(k: KeyRecord) -> str:
    parts = [f"{k.rpm} rpm" if k.rpm else "", f"{k.tpm} tpm" if k.tpm else ""]
    parts += [f"${k.daily_budget_usd}/day" if k.daily_budget_usd else ""]
    parts += [f"${k.monthly_budget_usd}/month" if k.monthly_budget_usd else ""]
    limits = ", ".join(filter(None, parts)) or "-"
    return limits + (" (downgrade)" if limits != "-" and k.on_exceed == "downgrade" else "")


def _table(records: list[KeyRecord], width: int) -> Table:
    table = Table(title="gateway keys")
    for column in ("id", "name", "state", "admin", "routes", "limits", "prefix"):
        table.add_column(column)
    for k in records:
        revoked = time.strftime("%Y-%m-%d", time.localtime(k.revoked_at)) if k.revoked_at else ""
        table.add_row(
            Text(k.id),
            Text(k.name),
            f"revoked {revoked}" if revoked else "active",
            "yes" if k.admin else "",
            Text(", ".join(k.routes or ["*"])),
            Text(_limits(k)),
            Text(k.prefix + "…"),
        )
    return fit(table, width, fold=("routes", "limits"), drop=_DROP)


async def _run(args: argparse.Namespace, store) -> int:
    await store.start()
    try:
        if args.action == "create":
            return await _create(args, store)
        if args.action == "revoke":
            if await store.revoke_key(args.key_id):
                print(f"revoked {args.key_id}")
                return 0
            print(f"turnout keys: no active key {args.key_id}")
            return 1
        console = Console()
        console.print(_table(await store.list_keys(), console.width))
        return 0
    finally:
        await store.close()


def keys(args: argparse.Namespace) -> int:
    store = configured_store(args.config, "keys")
    if store is None:
        return 2
    return asyncio.run(_run(args, store))
