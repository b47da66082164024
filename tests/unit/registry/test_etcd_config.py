"""`--store etcd` and its settings: flags, environment, config file, and the errors they give."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.config import RegistryConfig
from registry.replica import open_store
from registry.server import parser
from registry.store import EmbeddedStore
from registry.store.etcd import EtcdStore
from registry.store.etcd_client import parse_endpoint, prefix_end
from tidepool.runtime.options import ConfigError


def _config(*argv: str, env: dict[str, str] | None = None) -> RegistryConfig:
    return RegistryConfig.from_args(parser().parse_args(list(argv)), env or {})


def test_the_embedded_store_stays_the_default() -> None:
    config = _config()
    assert config.store == "embedded"
    assert isinstance(open_store(config), EmbeddedStore)


def test_flags_choose_etcd_with_endpoints_prefix_and_lease() -> None:
    config = _config(
        "--store", "etcd",
        "--etcd-endpoints", "http://127.0.0.1:2379, https://etcd-1:2379",
        "--etcd-prefix", "/fleet-a",
        "--etcd-lease-ttl-s", "5",
    )  # fmt: skip
    assert config.etcd_endpoint_list == ("http://127.0.0.1:2379", "https://etcd-1:2379")
    store = open_store(config)
    assert isinstance(store, EtcdStore)
    assert store.prefix == "/fleet-a"
    assert config.etcd_lease_ttl_s == 5


def test_environment_and_config_file_set_the_same_settings(tmp_path: Path) -> None:
    env = {"TIDEPOOL_REGISTRY_STORE": "etcd", "TIDEPOOL_REGISTRY_ETCD_ENDPOINTS": "127.0.0.1:1"}
    assert _config(env=env).etcd_endpoint_list == ("127.0.0.1:1",)
    file = tmp_path / "registry.toml"
    file.write_text('store = "etcd"\netcd-endpoints = "127.0.0.1:2"\netcd-prefix = "/x"\n')
    config = _config("--config", str(file))
    assert (config.store, config.etcd_prefix) == ("etcd", "/x")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--store", "zookeeper"], "--store: must be embedded or etcd"),
        (["--store", "etcd"], "--store etcd needs --etcd-endpoints"),
        (["--etcd-endpoints", "ftp://x:1"], "scheme must be http or https"),
        (["--etcd-endpoints", "http://x"], "must name a host and a port"),
        (["--etcd-prefix", "tidepool"], "must start with '/'"),
        (["--etcd-lease-ttl-s", "1"], "2 or more"),
        (["--etcd-cert", "c.pem"], "--etcd-cert and --etcd-key must be given together"),
        (
            ["--store", "etcd", "--etcd-endpoints", "127.0.0.1:1", "--handover-grace-s", "1"],
            "--handover-grace-s must be at least --ttl-s",
        ),
    ],
)
def test_bad_etcd_settings_name_the_flag_and_rule(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(*argv)


def test_endpoints_parse_to_targets_and_tls() -> None:
    assert parse_endpoint("http://127.0.0.1:2379") == ("127.0.0.1:2379", False)
    assert parse_endpoint("https://[::1]:2379") == ("[::1]:2379", True)
    assert parse_endpoint("etcd-0:2379") == ("etcd-0:2379", False)


def test_prefix_end_covers_exactly_the_prefix() -> None:
    end = prefix_end(b"/tidepool/")
    assert end == b"/tidepool0"
    assert b"/tidepool/" <= b"/tidepool/instances/x" < end
    assert not b"/tidepool/" <= b"/tidepool-other/x" < end
    assert prefix_end(b"a\xff") == b"b"
