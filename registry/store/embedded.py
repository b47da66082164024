"""The embedded store: one SQLite file in WAL mode under the data directory.

SQLite gives atomic, crash-safe writes (a kill -9 mid-write leaves the previous
state); WAL lets readers and the single writer proceed together. All calls run
on one dedicated thread because a sqlite3 connection belongs to its thread and
the event loop must never block on disk.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from registry.errors import StoreUnavailableError
from registry.records import (
    AliasRecord,
    InstanceRecord,
    MoveRecord,
    StoreSnapshot,
    TenantRecord,
    frozen_labels,
)

T = TypeVar("T")
FILE_NAME = "registry.sqlite3"
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS instances (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS aliases (name TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tenants (
    tenant TEXT NOT NULL, lang TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (tenant, lang)
);
CREATE TABLE IF NOT EXISTS moves (id TEXT PRIMARY KEY, body TEXT NOT NULL);
"""


def _instance_to_json(record: InstanceRecord) -> str:
    return json.dumps(
        {
            "id": record.id,
            "service": record.service,
            "address": record.address,
            "weight": record.weight,
            "capacity": record.capacity,
            "engine_labels": dict(record.engine_labels),
            "registered_at": record.registered_at,
            "label_overrides": dict(record.label_overrides),
            "weight_override": record.weight_override,
            "admin_drained": record.admin_drained,
        },
        sort_keys=True,
    )


def _instance_from_json(body: str) -> InstanceRecord:
    data: dict[str, Any] = json.loads(body)
    return InstanceRecord(
        id=data["id"],
        service=data["service"],
        address=data["address"],
        weight=data["weight"],
        capacity=data["capacity"],
        engine_labels=frozen_labels(data["engine_labels"]),
        registered_at=data["registered_at"],
        label_overrides=dict(data["label_overrides"]),
        weight_override=data["weight_override"],
        admin_drained=data["admin_drained"],
    )


class EmbeddedStore:
    """Store implementation on a local SQLite database."""

    def __init__(self, data_dir: str | Path) -> None:
        self._path = Path(data_dir) / FILE_NAME
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tidepool-store")
        self._db: sqlite3.Connection | None = None

    @property
    def path(self) -> Path:
        return self._path

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._db is None:
                self._db = self._open()
            return work(self._db)

        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, call)
        except sqlite3.Error as exc:
            raise StoreUnavailableError(f"embedded store {self._path}: {exc}") from exc

    def _open(self) -> sqlite3.Connection:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed change survives power loss, not only a process crash.
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(SCHEMA)
        row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"schema version {row[0]} is not the supported {SCHEMA_VERSION}"
            )
        return db

    async def load(self) -> StoreSnapshot:
        def read(db: sqlite3.Connection) -> StoreSnapshot:
            instances = [
                _instance_from_json(b) for (b,) in db.execute("SELECT body FROM instances")
            ]
            aliases = [
                AliasRecord(**json.loads(b)) for (b,) in db.execute("SELECT body FROM aliases")
            ]
            tenants = []
            for (body,) in db.execute("SELECT body FROM tenants"):
                data = json.loads(body)
                tenants.append(TenantRecord(data["tenant"], data["lang"], tuple(data["aliases"])))
            moves = [MoveRecord(**json.loads(b)) for (b,) in db.execute("SELECT body FROM moves")]
            row = db.execute("SELECT value FROM meta WHERE key='fence'").fetchone()
            return StoreSnapshot(
                tuple(instances),
                tuple(aliases),
                tuple(tenants),
                tuple(moves),
                int(row[0]) if row else 0,
            )

        return await self._run(read)

    async def _write(self, sql: str, params: tuple[object, ...]) -> None:
        def write(db: sqlite3.Connection) -> None:
            db.execute(sql, params)

        await self._run(write)

    async def put_instance(self, record: InstanceRecord) -> None:
        await self._write(
            "INSERT OR REPLACE INTO instances VALUES (?, ?)", (record.id, _instance_to_json(record))
        )

    async def delete_instance(self, instance_id: str) -> None:
        await self._write("DELETE FROM instances WHERE id = ?", (instance_id,))

    async def put_alias(self, alias: AliasRecord) -> None:
        body = json.dumps(
            {"name": alias.name, "selector": alias.selector, "service": alias.service}
        )
        await self._write("INSERT OR REPLACE INTO aliases VALUES (?, ?)", (alias.name, body))

    async def delete_alias(self, name: str) -> None:
        await self._write("DELETE FROM aliases WHERE name = ?", (name,))

    async def put_tenant(self, tenant: TenantRecord) -> None:
        body = json.dumps(
            {"tenant": tenant.tenant, "lang": tenant.lang, "aliases": list(tenant.aliases)}
        )
        await self._write(
            "INSERT OR REPLACE INTO tenants VALUES (?, ?, ?)", (tenant.tenant, tenant.lang, body)
        )

    async def delete_tenant(self, tenant: str, lang: str) -> None:
        await self._write("DELETE FROM tenants WHERE tenant = ? AND lang = ?", (tenant, lang))

    async def put_move(self, move: MoveRecord) -> None:
        body = json.dumps(dataclasses.asdict(move), sort_keys=True)
        await self._write("INSERT OR REPLACE INTO moves VALUES (?, ?)", (move.id, body))

    async def delete_move(self, move_id: str) -> None:
        await self._write("DELETE FROM moves WHERE id = ?", (move_id,))

    async def next_fence(self) -> int:
        def bump(db: sqlite3.Connection) -> int:
            db.execute(
                "INSERT INTO meta VALUES ('fence', '1') "
                "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
            )
            (value,) = db.execute("SELECT value FROM meta WHERE key='fence'").fetchone()
            return int(value)

        return await self._run(bump)

    async def close(self) -> None:
        def shut(db: sqlite3.Connection) -> None:
            db.close()

        if self._db is not None:
            await self._run(shut)
            self._db = None
        self._executor.shutdown(wait=True)
