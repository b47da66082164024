"""A damaged or lost embedded store stops the registry with one clear line, never a traceback.

Each case starts a real registry once (so the database and its `registry.id` marker
exist), stops it, damages the data directory, and starts it again: it must exit 1
with exactly one line on stderr that names the file (and the row, for a bad row).
A lost database is refused while the marker remains, unless the operator says
`--allow-empty-store true`.
"""

from __future__ import annotations

import sqlite3
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.processes import ProcessSet, python_args

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]

READY = "tidepool registry ready"
DB = "registry.sqlite3"
# Tokens for every role, so the open-roles warning does not share stderr with the error.
TOKENS = ("--engine-token", "e", "--read-token", "r", "--admin-token", "a")


def _args(data_dir: Path, *extra: str) -> list[str]:
    return python_args(
        "registry.server",
        *("--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"),
        *("--data-dir", str(data_dir)),
        *TOKENS,
        *extra,
    )


@pytest.fixture
def processes() -> Iterator[ProcessSet]:
    with ProcessSet() as started:
        yield started


def _first_start(processes: ProcessSet, data_dir: Path) -> None:
    process = processes.start(_args(data_dir), READY, 30.0)
    # One answered request: the loop has run, so the SIGTERM handler is in place.
    with urllib.request.urlopen(f"http://{process.http}/healthz", timeout=5) as answer:
        assert answer.status == 200
    # A clean stop checkpoints the WAL into the database file, so damage to that file
    # is all the damage there is (a WAL would still hold the pages this test breaks).
    process.terminate()
    assert process.wait(15.0) == 0, process.describe("a clean stop should exit 0")
    assert not (data_dir / f"{DB}-wal").exists()
    assert (data_dir / "registry.id").exists(), "the first start must leave the marker"


def _put_row(data_dir: Path, sql: str, params: tuple[str, ...]) -> None:
    with sqlite3.connect(data_dir / DB) as db:
        db.execute(sql, params)
    db.close()


def _garble(data_dir: Path) -> None:
    path = data_dir / DB
    data = bytearray(path.read_bytes())
    data[:100] = b"\xa5" * 100  # the header: sqlite no longer knows the file
    path.write_bytes(bytes(data))


def _truncate(data_dir: Path) -> None:
    (data_dir / DB).write_bytes(b"")


def _delete(data_dir: Path) -> None:
    (data_dir / DB).unlink()


def _bad_instance_json(data_dir: Path) -> None:
    _put_row(data_dir, "INSERT INTO instances VALUES (?, ?)", ("e-7", '{"id": "e-7", '))


def _bad_alias_row(data_dir: Path) -> None:
    _put_row(data_dir, "INSERT INTO aliases VALUES (?, ?)", ("zh-pub", '{"name": "zh-pub"}'))


DAMAGE: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "garbled": (_garble, (DB, "damaged")),
    "zero-bytes": (_truncate, (DB, "empty", "--allow-empty-store")),
    "deleted": (_delete, (DB, "missing", "registry.id", "--allow-empty-store")),
    "bad-json-row": (_bad_instance_json, (DB, "table instances", "'e-7'", "not JSON")),
    "row-missing-a-field": (_bad_alias_row, (DB, "table aliases", "'zh-pub'", "selector")),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_store_is_one_line_naming_it_and_exit_1(
    tmp_path: Path, processes: ProcessSet, case: str
) -> None:
    _first_start(processes, tmp_path)
    damage, expected = DAMAGE[case]
    damage(tmp_path)

    process = processes.spawn(_args(tmp_path))
    code = process.wait(30.0)
    stderr = process.stderr().strip()
    assert code == 1, process.describe(f"exit code {code}, not 1")
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{stderr}"
    for fragment in expected:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


@pytest.mark.parametrize("case", ["zero-bytes", "deleted"])
def test_allow_empty_store_starts_empty_where_a_store_was_lost(
    tmp_path: Path, processes: ProcessSet, case: str
) -> None:
    _first_start(processes, tmp_path)
    DAMAGE[case][0](tmp_path)
    processes.start(_args(tmp_path, "--allow-empty-store", "true"), READY, 30.0).kill()
    # Started empty, it is a store again: the next start needs no flag.
    processes.start(_args(tmp_path), READY, 30.0).kill()


def test_a_first_start_in_an_empty_directory_needs_no_flag(
    tmp_path: Path, processes: ProcessSet
) -> None:
    _first_start(processes, tmp_path / "fresh")
