"""The embedded store: one SQLite file in WAL mode under the data directory.

SQLite gives atomic, crash-safe writes (a kill -9 mid-write leaves the previous
state); WAL lets readers and the single writer proceed together. All calls run
on one dedicated thread because a sqlite3 connection belongs to its thread and
the event loop must never block on disk.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from registry.errors import StoreUnavailableError
from registry.records import (
    AliasRecord,
    InstanceRecord,
    MoveRecord,
    RetiredOverrides,
    StoreSnapshot,
    TenantRecord,
)
from registry.store.codec import alias_from_json as _alias_from_json
from registry.store.codec import alias_to_json, move_to_json, retired_to_json, tenant_to_json
from registry.store.codec import instance_from_json as _instance_from_json
from registry.store.codec import instance_to_json as _instance_to_json
from registry.store.codec import move_from_json as _move_from_json
from registry.store.codec import retired_from_json as _retired_from_json
from registry.store.codec import tenant_from_json as _tenant_from_json

T = TypeVar("T")
FILE_NAME = "registry.sqlite3"
MARKER_NAME = "registry.id"
"""Written beside the database at its first start: a store existed here, so a missing or
empty database later is a loss to refuse, not a first start."""
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS instances (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS aliases (name TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tenants (
    tenant TEXT NOT NULL, lang TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (tenant, lang)
);
CREATE TABLE IF NOT EXISTS moves (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS retired (id TEXT PRIMARY KEY, body TEXT NOT NULL);
"""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _write_marker(path: Path) -> None:
    """Write the marker atomically: a torn marker must not read as "no store before"."""
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w") as handle:
        handle.write(f"{uuid.uuid4()}\n")
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)


class EmbeddedStore:
    """Store implementation on a local SQLite database."""

    def __init__(self, data_dir: str | Path, *, allow_empty: bool = False) -> None:
        self._path = Path(data_dir) / FILE_NAME
        self._marker = Path(data_dir) / MARKER_NAME
        self._allow_empty = allow_empty
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
        self._refuse_lost_store()
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            self._prepare(db)
        except sqlite3.Error as exc:
            db.close()
            if isinstance(exc, sqlite3.OperationalError):
                raise  # locked, unreadable, disk full: not damage
            raise self._damaged(f"{exc}") from exc
        except BaseException:
            db.close()
            raise
        if not self._marker.exists():
            _write_marker(self._marker)
        return db

    def _refuse_lost_store(self) -> None:
        if self._allow_empty or not self._marker.exists():
            return
        if not self._path.exists():
            problem = "is missing"
        elif _size(self._path) == 0 and _size(self._path.with_name(FILE_NAME + "-wal")) == 0:
            problem = "is empty (0 bytes)"
        else:
            return
        raise StoreUnavailableError(
            f"embedded store {self._path} {problem}, but {self._marker} says a store was kept"
            " here before; restore the database, or start with --allow-empty-store true to"
            " begin again with no aliases, tenants or overrides"
        )

    def _damaged(self, problem: str) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"embedded store {self._path} is damaged: {problem}; restore it from a backup, or"
            " move it aside and start with --allow-empty-store true"
        )

    def _prepare(self, db: sqlite3.Connection) -> None:
        (check,) = db.execute("PRAGMA quick_check(1)").fetchone()
        if check != "ok":
            raise sqlite3.DatabaseError(f"integrity check failed: {check}")
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

    async def load(self) -> StoreSnapshot:
        def read(db: sqlite3.Connection) -> StoreSnapshot:
            rows = db.execute("SELECT id, body FROM instances")
            instances = self._decode("instances", "id", rows, _instance_from_json)
            rows = db.execute("SELECT name, body FROM aliases")
            aliases = self._decode("aliases", "name", rows, _alias_from_json)
            rows = db.execute("SELECT tenant || '/' || lang, body FROM tenants")
            tenants = self._decode("tenants", "tenant/lang", rows, _tenant_from_json)
            rows = db.execute("SELECT id, body FROM moves")
            moves = self._decode("moves", "id", rows, _move_from_json)
            fence = db.execute("SELECT 'fence', value FROM meta WHERE key='fence'")
            (fence_value,) = self._decode("meta", "key", fence, int) or (0,)
            rows = db.execute("SELECT id, body FROM retired")
            retired = self._decode("retired", "id", rows, _retired_from_json)
            return StoreSnapshot(
                tuple(instances),
                tuple(aliases),
                tuple(tenants),
                tuple(moves),
                fence_value,
                tuple(retired),
            )

        return await self._run(read)

    def _decode(
        self,
        table: str,
        key: str,
        rows: Iterable[tuple[str, str]],
        parse: Callable[[str], T],
    ) -> list[T]:
        """Parse every row, or name the first bad one (table, key) in a damaged-store error."""
        decoded = []
        for name, body in rows:
            row = f"table {table}, row {key}={name!r}"
            try:
                decoded.append(parse(body))
            except json.JSONDecodeError as exc:
                raise self._damaged(f"{row}: not JSON ({exc})") from None
            except KeyError as exc:
                raise self._damaged(f"{row}: no field {exc}") from None
            except (ValueError, TypeError, AttributeError) as exc:
                raise self._damaged(f"{row}: {exc}") from None
        return decoded

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
        body = alias_to_json(alias)
        await self._write("INSERT OR REPLACE INTO aliases VALUES (?, ?)", (alias.name, body))

    async def delete_alias(self, name: str) -> None:
        await self._write("DELETE FROM aliases WHERE name = ?", (name,))

    async def put_tenant(self, tenant: TenantRecord) -> None:
        body = tenant_to_json(tenant)
        await self._write(
            "INSERT OR REPLACE INTO tenants VALUES (?, ?, ?)", (tenant.tenant, tenant.lang, body)
        )

    async def delete_tenant(self, tenant: str, lang: str) -> None:
        await self._write("DELETE FROM tenants WHERE tenant = ? AND lang = ?", (tenant, lang))

    async def put_retired(self, retired: RetiredOverrides) -> None:
        body = retired_to_json(retired)
        await self._write("INSERT OR REPLACE INTO retired VALUES (?, ?)", (retired.id, body))

    async def delete_retired(self, instance_id: str) -> None:
        await self._write("DELETE FROM retired WHERE id = ?", (instance_id,))

    async def put_move(self, move: MoveRecord) -> None:
        body = move_to_json(move)
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
