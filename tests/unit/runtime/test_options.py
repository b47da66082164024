"""Flag > environment > config file > default, with errors that name the source."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.config import OPTIONS, RegistryConfig
from tidepool.runtime.options import (
    CommandParser,
    ConfigError,
    add_options,
    parse_host_port,
    resolve,
)


def _parse(argv: list[str]) -> object:
    parser = CommandParser(prog="test")
    add_options(parser, OPTIONS)
    return parser.parse_args(argv)


def test_renamed_settings_are_read_under_their_new_names(tmp_path: Path) -> None:
    config_file = tmp_path / "registry.toml"
    config_file.write_text("stall_after_s = 20\n")
    env = {"TIDEPOOL_REGISTRY_HEARTBEAT_INTERVAL_S": "2"}
    values = resolve(OPTIONS, _parse(["--ttl-s", "9", "--config", str(config_file)]), env)  # type: ignore[arg-type]
    assert (values["ttl_s"], values["heartbeat_interval_s"], values["stall_after_s"]) == (9, 2, 20)


def test_old_names_are_not_shown_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parse(["--help"])
    shown = capsys.readouterr().out
    assert "--ttl-s" in shown
    assert "--ttl " not in shown
    assert "--heartbeat-interval " not in shown


def test_old_names_still_work_flag_beats_environment_beats_file_beats_default(
    tmp_path: Path,
) -> None:
    config_file = tmp_path / "registry.toml"
    config_file.write_text("ttl = 7.0\nheartbeat-interval = 2.0\nstall_after = 20\n")
    env = {"TIDEPOOL_REGISTRY_TTL": "8", "TIDEPOOL_REGISTRY_HEARTBEAT_INTERVAL": "3"}
    values = resolve(OPTIONS, _parse(["--ttl", "9", "--config", str(config_file)]), env)  # type: ignore[arg-type]
    assert values["ttl_s"] == 9.0  # flag
    assert values["heartbeat_interval_s"] == 3.0  # environment over file
    assert values["stall_after_s"] == 20.0  # file over default
    assert values["forget_after_s"] == 300.0  # default


def test_config_file_from_environment_variable(tmp_path: Path) -> None:
    config_file = tmp_path / "r.toml"
    config_file.write_text('listen = "127.0.0.1:9999"\n')
    values = resolve(OPTIONS, _parse([]), {"TIDEPOOL_CONFIG": str(config_file)})  # type: ignore[arg-type]
    assert values["listen"] == "127.0.0.1:9999"


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="TIDEPOOL_REGISTRY_TTL: must be a number"):
        resolve(OPTIONS, _parse([]), {"TIDEPOOL_REGISTRY_TTL": "soon"})  # type: ignore[arg-type]


def test_unknown_config_key_is_refused(tmp_path: Path) -> None:
    config_file = tmp_path / "r.toml"
    config_file.write_text("tll = 3\n")
    with pytest.raises(ConfigError, match="unknown key 'tll'"):
        resolve(OPTIONS, _parse(["--config", str(config_file)]), {})  # type: ignore[arg-type]


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        resolve(OPTIONS, _parse(["--config", str(tmp_path / "nope.toml")]), {})  # type: ignore[arg-type]


def test_ttl_shorter_than_two_heartbeats_is_refused() -> None:
    with pytest.raises(ConfigError, match="--ttl-s must be at least twice"):
        RegistryConfig(heartbeat_interval_s=1.0, ttl_s=1.5)


def test_tls_needs_both_certificate_and_key() -> None:
    with pytest.raises(ConfigError, match="--tls-cert and --tls-key"):
        RegistryConfig(tls_cert="cert.pem")


def test_bad_flag_is_one_line_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        _parse(["--no-such-flag"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--no-such-flag" in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:80", ("127.0.0.1", 80)), ("[::1]:0", ("::1", 0)), ("host:7700", ("host", 7700))],
)
def test_host_port_parsing(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1", ":80", "a:b", "a:70000"])
def test_host_port_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError, match=r"HOST:PORT|port must be"):
        parse_host_port(text)
