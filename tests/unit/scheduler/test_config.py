"""`tidepool scheduler run` flags: --dry-run as a switch or a boolean, --policy required."""

from __future__ import annotations

import pytest

from scheduler.config import parse_config
from tidepool.runtime.options import ConfigError


@pytest.mark.parametrize(
    ("argv", "environ", "dry_run"),
    [
        (["--policy", "p.toml"], {}, False),
        (["--dry-run", "--policy", "p.toml"], {}, True),
        (["--policy", "p.toml", "--dry-run"], {}, True),
        (["--policy", "p.toml", "--dry-run", "false"], {}, False),
        (["--policy", "p.toml"], {"TIDEPOOL_SCHEDULER_DRY_RUN": "yes"}, True),
    ],
)
def test_dry_run_is_a_switch_on_the_command_line_and_a_boolean_elsewhere(
    argv: list[str], environ: dict[str, str], dry_run: bool
) -> None:
    assert parse_config(argv, environ).dry_run is dry_run


def test_the_policy_is_required_and_the_error_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="--policy"):
        parse_config([], {})


def test_an_id_that_is_not_a_holder_name_is_refused_naming_the_flag() -> None:
    with pytest.raises(ConfigError, match="--id"):
        parse_config(["--policy", "p.toml", "--id", "no spaces please"], {})


def test_the_default_id_is_host_and_pid() -> None:
    config = parse_config(["--policy", "p.toml"], {})
    assert config.id.rsplit("-", 1)[1].isdigit()
