"""Router settings: defaults, flags, environment, config file, and errors that name the flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from router import server
from router.config import RouterConfig, parse_config
from router.proxy import DEFAULT_UNARY_METHODS
from router.slow_start import SlowStartConfig
from tidepool.runtime.options import ConfigError


def test_no_flags_give_the_documented_defaults() -> None:
    config = parse_config([], {})
    assert config == RouterConfig()
    assert config.registry == "127.0.0.1:7700"
    assert (config.listen, config.http_listen) == ("127.0.0.1:7710", "127.0.0.1:7711")
    assert config.balancer == "wrr"
    assert config.max_attempts == 3
    assert config.idempotent_methods == DEFAULT_UNARY_METHODS
    assert config.state_path == Path(".tidepool/router/view.json")
    assert config.token is None


def test_flags_map_onto_fields() -> None:
    config = parse_config(
        [
            "--balancer", "least-loaded",
            "--max-attempts", "5",
            "--panic-threshold-percent", "30",
            "--slow-start-s", "0",
            "--listen", "[::1]:0",
            "--idempotent-methods", "/a.B/C, /a.B/D",
            "--state-file", "",
            "--log-level", "debug",
        ],
        {},
    )  # fmt: skip
    assert config.balancer == "least-loaded"
    assert config.max_attempts == 5
    assert isinstance(config.max_attempts, int)
    assert config.panic_threshold_percent == 30.0
    assert config.listen == "[::1]:0"
    assert config.idempotent_methods == ("/a.B/C", "/a.B/D")
    assert config.state_path is None
    assert config.log_level == "debug"
    assert config.table().slow_start is None


def test_the_table_and_retry_settings_follow_the_flags() -> None:
    config = parse_config(
        [
            "--slow-start-s", "4",
            "--ejection-base-s", "1",
            "--ejection-max-s", "8",
            "--max-ejection-percent", "25",
            "--panic-threshold-percent", "10",
            "--max-attempts", "2",
        ],
        {},
    )  # fmt: skip
    table = config.table()
    assert table.slow_start == SlowStartConfig(window_s=4.0)
    assert (table.outlier.base_ejection_s, table.outlier.max_ejection_s) == (1.0, 8.0)
    assert table.outlier.max_ejection_percent == 25.0
    assert table.outlier.panic_threshold_percent == 10.0
    assert config.retry_policy().max_attempts == 2


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--balancer", "x"], "--balancer"),
        (["--max-attempts", "0"], "--max-attempts"),
        (["--max-attempts", "11"], "--max-attempts"),
        (["--max-attempts", "2.5"], "--max-attempts"),
        (["--panic-threshold-percent", "101"], "--panic-threshold-percent"),
        (["--panic-threshold-percent", "nan"], "--panic-threshold-percent"),
        (["--max-ejection-percent", "-1"], "--max-ejection-percent"),
        (["--retry-budget-percent", "many"], "--retry-budget-percent"),
        (["--listen", "nope"], "--listen"),
        (["--http-listen", "127.0.0.1:70000"], "--http-listen"),
        (["--registry", ":7700"], "--registry"),
        (["--idempotent-methods", "Evaluate"], "--idempotent-methods"),
        (["--unary-methods", "/a.B/C/D"], "--unary-methods"),
        (["--ejection-base-s", "0"], "--ejection-base-s"),
        (["--ejection-max-s", "1", "--ejection-base-s", "2"], "--ejection-max-s"),
        (["--slow-start-s", "-1"], "--slow-start-s"),
        (["--slow-start-s", "inf"], "--slow-start-s"),
        (["--ejection-max-s", "inf"], "--ejection-max-s"),
        (["--attempt-timeout-max-s", "Infinity"], "--attempt-timeout-max-s"),
        (["--default-deadline-s", "0"], "--default-deadline-s"),
        (["--stream-idle-s", "-5"], "--stream-idle-s"),
        (["--max-message-bytes", "10"], "--max-message-bytes"),
        (["--processes", "65"], "--processes"),
        (["--log-level", "loud"], "--log-level"),
    ],
)
def test_a_bad_flag_is_a_config_error_naming_it(argv: list[str], flag: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(argv, {})
    assert str(caught.value).startswith(f"{flag}:")
    assert "\n" not in str(caught.value)


def test_environment_variables_are_respected_and_flags_beat_them() -> None:
    environ = {
        "TIDEPOOL_ROUTER_BALANCER": "least-loaded",
        "TIDEPOOL_REGISTRY": "10.0.0.5:7700",
        "TIDEPOOL_TOKEN": "s3cret",
        "TIDEPOOL_ROUTER_MAX_ATTEMPTS": "4",
    }
    config = parse_config([], environ)
    assert (config.balancer, config.registry, config.token) == (
        "least-loaded",
        "10.0.0.5:7700",
        "s3cret",
    )
    assert config.max_attempts == 4
    assert parse_config(["--balancer", "wrr"], environ).balancer == "wrr"


def test_a_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^TIDEPOOL_ROUTER_BALANCER: .*'x'"):
        parse_config([], {"TIDEPOOL_ROUTER_BALANCER": "x"})
    with pytest.raises(ConfigError, match=r"^TIDEPOOL_REGISTRY: "):
        parse_config([], {"TIDEPOOL_REGISTRY": "nowhere"})


def test_a_toml_config_file_works_below_environment_and_flags(tmp_path: Path) -> None:
    config_file = tmp_path / "router.toml"
    config_file.write_text(
        'balancer = "least-loaded"\n'
        "max-attempts = 5\n"
        "panic_threshold_percent = 30\n"
        'listen = "127.0.0.1:0"\n'
        'idempotent-methods = "/a.B/C"\n'
    )
    config = parse_config(["--config", str(config_file)], {})
    assert config.balancer == "least-loaded"
    assert config.max_attempts == 5
    assert config.panic_threshold_percent == 30.0
    assert config.listen == "127.0.0.1:0"
    assert config.idempotent_methods == ("/a.B/C",)
    environ = {"TIDEPOOL_ROUTER_MAX_ATTEMPTS": "2", "TIDEPOOL_CONFIG": str(config_file)}
    config = parse_config(["--listen", "127.0.0.1:1"], environ)
    assert config.balancer == "least-loaded"  # file
    assert config.max_attempts == 2  # environment over file
    assert config.listen == "127.0.0.1:1"  # flag over file


def test_a_bad_config_file_value_or_key_is_a_config_error(tmp_path: Path) -> None:
    bad_value = tmp_path / "bad-value.toml"
    bad_value.write_text("max_attempts = 0\n")
    with pytest.raises(ConfigError, match="max_attempts"):
        parse_config(["--config", str(bad_value)], {})
    bad_key = tmp_path / "bad-key.toml"
    bad_key.write_text("balancr = 'wrr'\n")
    with pytest.raises(ConfigError, match=r"^--config: unknown key 'balancr'"):
        parse_config(["--config", str(bad_key)], {})
    with pytest.raises(ConfigError, match=r"^--config: .*does not exist"):
        parse_config(["--config", str(tmp_path / "absent.toml")], {})


def test_main_reports_a_bad_flag_in_one_line_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert server.main(["--balancer", "x"], {}) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.endswith("\n")
    assert "--balancer" in captured.err
    assert captured.err.startswith("tidepool router: ")


def test_main_reports_an_unknown_flag_in_one_line_and_exits_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert server.main(["--no-such-flag"], {}) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1
    assert "--no-such-flag" in captured.err
