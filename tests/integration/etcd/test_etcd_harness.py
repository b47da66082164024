"""The etcd test harness itself: skips locally without etcd, fails in CI, finds the leader."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import etcd_harness
from tests.support.etcd_harness import etcd_cluster

pytestmark = pytest.mark.etcd


def test_a_missing_etcd_skips_locally_with_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(etcd_harness.shutil, "which", lambda _name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install etcd-server"):
        etcd_harness.etcd_binary()


def test_a_missing_etcd_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(etcd_harness.shutil, "which", lambda _name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="not on PATH in CI"):
        etcd_harness.etcd_binary()


@pytest.mark.timeout(60)
def test_three_members_elect_a_new_leader_after_a_kill(tmp_path: Path) -> None:
    with etcd_cluster(tmp_path, members=3) as cluster:
        leader = cluster.leader()
        cluster.kill(leader)
        assert not leader.running
        successor = cluster.leader()
        assert successor is not leader
        assert successor.running
        cluster.etcdctl("put", "/k", "v")
    assert not any(m.running for m in cluster.members)
