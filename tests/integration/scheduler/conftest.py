"""The fixture every scheduler process test starts from: a registry on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fleet_harness import Fleet


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """A registry with short leases; every process the test starts is killed afterwards."""
    with Fleet(tmp_path) as started:
        started.start_registry()
        yield started
