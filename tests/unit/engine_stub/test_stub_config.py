"""Engine-stub settings: flags, environment, defaults, and errors that name the flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine_stub.config import EngineStubConfig, FaultConfig, parse_config, parse_labels
from tidepool.runtime.options import ConfigError


def test_defaults_bind_to_loopback() -> None:
    config = parse_config([], {})
    assert config == EngineStubConfig()
    assert (config.registry, config.listen, config.http_listen) == (
        "127.0.0.1:7700",
        "127.0.0.1:0",
        "127.0.0.1:0",
    )
    assert (config.lang, config.tier, config.weight, config.slots) == ("zh", "idc", 100, 4)
    assert (config.speed, config.model_load_s, config.drain_timeout_s) == (1.0, 2.0, 30.0)
    assert config.faults == FaultConfig()


def test_flags_map_onto_fields() -> None:
    config = parse_config(
        [
            "--registry", "10.0.0.1:7700", "--token", "t", "--lang", "en", "--tier", "serverless",
            "--weight", "60", "--slots", "8", "--speed", "0.6", "--model-load-s", "0",
            "--labels", "region=sh, gpu=a10", "--pool", "en-acme", "--instance-id", "e-1",
            "--drain-timeout-s", "5", "--fault-latency-s", "0.02", "--fault-error-rate", "0.1",
            "--fault-hang-after", "3", "--fault-crash-after", "9", "--seed", "7",
            "--advertise", "10.0.0.2",
        ],
        {},
    )  # fmt: skip
    assert config.registry == "10.0.0.1:7700"
    assert config.token == "t"
    assert (config.lang, config.tier, config.weight, config.slots) == ("en", "serverless", 60, 8)
    assert (config.speed, config.model_load_s) == (0.6, 0.0)
    assert config.labels == {"region": "sh", "gpu": "a10"}
    assert (config.pool, config.instance_id, config.drain_timeout_s) == ("en-acme", "e-1", 5.0)
    assert config.faults == FaultConfig(latency_s=0.02, error_rate=0.1, hang_after=3, crash_after=9)
    assert config.seed == 7
    assert config.registry_labels() == {
        "region": "sh",
        "gpu": "a10",
        "lang": "en",
        "tier": "serverless",
        "pool": "en-acme",
    }


def test_environment_fills_in_and_flags_win() -> None:
    environ = {
        "TIDEPOOL_REGISTRY": "10.1.1.1:7700",
        "TIDEPOOL_TOKEN": "from-env",
        "TIDEPOOL_ENGINE_WEIGHT": "250",
        "TIDEPOOL_ENGINE_LANG": "en",
    }
    config = parse_config(["--weight", "300"], environ)
    assert (config.registry, config.token, config.lang, config.weight) == (
        "10.1.1.1:7700",
        "from-env",
        "en",
        300,
    )


def test_config_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "stub.toml"
    path.write_text('slots = 2\ntier = "cvm"\nfault-error-rate = 0.5\n')
    config = parse_config(["--config", str(path)], {})
    assert (config.slots, config.tier, config.faults.error_rate) == (2, "cvm", 0.5)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--weight", "1001"], "--weight"),
        (["--weight", "heavy"], "--weight"),
        (["--slots", "0"], "--slots"),
        (["--speed", "0"], "--speed"),
        (["--lang", "fr"], "--lang"),
        (["--tier", "edge"], "--tier"),
        (["--labels", "novalue"], "--labels"),
        (["--labels", "lang=en"], "--labels"),
        (["--fault-error-rate", "1.5"], "--fault-error-rate"),
        (["--fault-hang-after", "-1"], "--fault-hang-after"),
        (["--listen", "nowhere"], "--listen"),
        (["--listen", "0.0.0.0:0"], "--advertise"),
        (["--advertise", "engine.local"], "--advertise"),
        (["--tls-cert", "c.pem"], "--tls-cert"),
        (["--model-load-s", "-1"], "--model-load-s"),
    ],
)
def test_bad_values_raise_config_error_naming_the_flag(argv: list[str], flag: str) -> None:
    with pytest.raises(ConfigError, match=f"^{flag}: "):
        parse_config(argv, {})


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="TIDEPOOL_ENGINE_SLOTS"):
        parse_config([], {"TIDEPOOL_ENGINE_SLOTS": "many"})


def test_wildcard_listen_needs_an_explicit_advertise() -> None:
    config = parse_config(["--listen", "0.0.0.0:0", "--advertise", "10.0.0.2:9000"], {})
    assert config.advertise == "10.0.0.2:9000"


def test_parse_labels() -> None:
    assert parse_labels("") == {}
    assert parse_labels("a=1,b=2,") == {"a": "1", "b": "2"}
    assert parse_labels("empty=") == {"empty": ""}
