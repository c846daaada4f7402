"""The schema, as ordered migrations per backend: version N is the N-th entry.

Append only: never edit a migration once released, add the next one. Both lists keep the
same length and the same meaning, so a ledger moves between backends column for column.
Each migration is a tuple of statements (not one script) so it can run inside the
store's own transaction: sqlite3's executescript would commit on its own.
"""

from __future__ import annotations

Migration = tuple[str, ...]

# 2: every ledger query is a time window (started_at); no query used these two, and each
# cost a B-tree insert per request (about 1 us of the 7 us a SQLite row takes)
_DROP_UNUSED_INDEXES: Migration = (
    "DROP INDEX IF EXISTS ledger_key_id",
    "DROP INDEX IF EXISTS ledger_route",
)

# 3: the output guard's verdict on a JSON answer (ok | invalid_json | schema_mismatch)
_SQLITE_OUTPUT_CHECK: Migration = ("ALTER TABLE ledger ADD COLUMN output_check TEXT",)
_POSTGRES_OUTPUT_CHECK: Migration = ("ALTER TABLE ledger ADD COLUMN output_check text",)

# 4: the response cache: hit | miss | bypass, and what a hit saved (apart from routing's)
_SQLITE_CACHE: Migration = (
    "ALTER TABLE ledger ADD COLUMN cache TEXT",
    "ALTER TABLE ledger ADD COLUMN cache_saved_usd REAL NOT NULL DEFAULT 0",
)
_POSTGRES_CACHE: Migration = (
    "ALTER TABLE ledger ADD COLUMN cache text",
    "ALTER TABLE ledger ADD COLUMN cache_saved_usd double precision NOT NULL DEFAULT 0",
)

# 5: a semantic cache hit's similarity with the earlier prompt whose answer it got
_SQLITE_CACHE_SIMILARITY: Migration = ("ALTER TABLE ledger ADD COLUMN cache_similarity REAL",)
_POSTGRES_CACHE_SIMILARITY: Migration = (
    "ALTER TABLE ledger ADD COLUMN cache_similarity double precision",
)

SQLITE: list[Migration] = [
    (  # 1: the ledger and the gateway keys
        """CREATE TABLE ledger (
            id TEXT PRIMARY KEY,
            started_at REAL NOT NULL,
            route TEXT NOT NULL,
            dialect TEXT NOT NULL,
            stream INTEGER NOT NULL,
            status INTEGER NOT NULL,
            outcome TEXT NOT NULL,
            model TEXT,
            provider TEXT,
            attempts TEXT NOT NULL DEFAULT '[]',
            prompt_tokens INTEGER NOT NULL DEFAULT 0,
            cached_tokens INTEGER NOT NULL DEFAULT 0,
            completion_tokens INTEGER NOT NULL DEFAULT 0,
            usage_estimated INTEGER NOT NULL DEFAULT 0,
            cost_usd REAL NOT NULL DEFAULT 0,
            provider_cost_usd REAL,
            baseline_cost_usd REAL NOT NULL DEFAULT 0,
            ttft_ms REAL,
            latency_ms REAL NOT NULL DEFAULT 0,
            key_id TEXT,
            session TEXT,
            error TEXT
        )""",
        "CREATE INDEX ledger_started_at ON ledger (started_at)",
        "CREATE INDEX ledger_key_id ON ledger (key_id, started_at)",
        "CREATE INDEX ledger_route ON ledger (route, started_at)",
        """CREATE TABLE gateway_keys (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            key_hash TEXT NOT NULL UNIQUE,
            prefix TEXT NOT NULL,
            created_at REAL NOT NULL,
            revoked_at REAL,
            routes TEXT,
            rpm INTEGER,
            tpm INTEGER,
            daily_budget_usd REAL,
            monthly_budget_usd REAL,
            on_exceed TEXT NOT NULL DEFAULT 'block',
            admin INTEGER NOT NULL DEFAULT 0
        )""",
    ),
    _DROP_UNUSED_INDEXES,
    _SQLITE_OUTPUT_CHECK,
    _SQLITE_CACHE,
    _SQLITE_CACHE_SIMILARITY,
]

POSTGRES: list[Migration] = [
    (  # 1: the ledger and the gateway keys
        """CREATE TABLE ledger (
            id text PRIMARY KEY,
            started_at double precision NOT NULL,
            route text NOT NULL,
            dialect text NOT NULL,
            stream boolean NOT NULL,
            status integer NOT NULL,
            outcome text NOT NULL,
            model text,
            provider text,
            attempts jsonb NOT NULL DEFAULT '[]',
            prompt_tokens bigint NOT NULL DEFAULT 0,
            cached_tokens bigint NOT NULL DEFAULT 0,
            completion_tokens bigint NOT NULL DEFAULT 0,
            usage_estimated boolean NOT NULL DEFAULT false,
            cost_usd double precision NOT NULL DEFAULT 0,
            provider_cost_usd double precision,
            baseline_cost_usd double precision NOT NULL DEFAULT 0,
            ttft_ms double precision,
            latency_ms double precision NOT NULL DEFAULT 0,
            key_id text,
            session text,
            error text
        )""",
        "CREATE INDEX ledger_started_at ON ledger (started_at)",
        "CREATE INDEX ledger_key_id ON ledger (key_id, started_at)",
        "CREATE INDEX ledger_route ON ledger (route, started_at)",
        """CREATE TABLE gateway_keys (
            id text PRIMARY KEY,
            name text NOT NULL,
            key_hash text NOT NULL UNIQUE,
            prefix text NOT NULL,
            created_at double precision NOT NULL,
            revoked_at double precision,
            routes jsonb,
            rpm bigint,
            tpm bigint,
            daily_budget_usd double precision,
            monthly_budget_usd double precision,
            on_exceed text NOT NULL DEFAULT 'block',
            admin boolean NOT NULL DEFAULT false
        )""",
    ),
    _DROP_UNUSED_INDEXES,
    _POSTGRES_OUTPUT_CHECK,
    _POSTGRES_CACHE,
    _POSTGRES_CACHE_SIMILARITY,
]

# Created before any migration, outside the numbered list: it records the list's progress.
SQLITE_VERSIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations "
    "(version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
)
POSTGRES_VERSIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations "
    "(version integer PRIMARY KEY, applied_at double precision NOT NULL)"
)
