"""The `tidepool` dispatcher: --version, component help, and the banner's command prefix."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from importlib.metadata import version

import pytest

from router.config import FLAG_GROUPS, OPTIONS, build_parser
from tidepool.cli import main
from tidepool.up import command_prefix


def test_version_is_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"tidepool {version('tidepool')}\n"


@pytest.mark.parametrize(
    ("component", "subcommand"), [("router", "serve"), ("registry", "serve"), ("scheduler", "run")]
)
def test_component_help_lists_its_subcommands(
    component: str, subcommand: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([component, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: tidepool {component} COMMAND")
    assert f"\n  {subcommand} " in out
    assert f"tidepool {component} {subcommand} --help" in out


def test_a_component_without_a_subcommand_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["router"]) == 2
    assert "usage: tidepool router COMMAND" in capsys.readouterr().err


def test_every_router_option_is_in_exactly_one_help_group() -> None:
    grouped = [name for _, names in FLAG_GROUPS for name in names]
    assert sorted(grouped) == sorted(option.name for option in OPTIONS)


def test_router_serve_help_groups_flags_and_shows_choices() -> None:
    text = build_parser().format_help()
    for title, _ in FLAG_GROUPS:
        assert f"\n{title}:\n" in text
    assert "--balancer {wrr,least-loaded}" in text
    assert "--data-path {grpc,relay}" in text


def test_router_flags_still_parse_into_the_same_fields() -> None:
    args = build_parser().parse_args(["--balancer", "least-loaded", "--max-attempts", "2"])
    assert isinstance(args, argparse.Namespace)
    assert (args.balancer, args.max_attempts) == ("least-loaded", "2")


def _which(found: dict[str, str]) -> Callable[[str], str | None]:
    return found.get


def test_python_dash_m_gives_python_dash_m_as_found_on_path() -> None:
    prefix = command_prefix(
        "/repo/tidepool/__main__.py",
        "tidepool.__main__",
        _which({"python": "/repo/.venv/bin/python"}),
        "/repo/.venv/bin/python",
    )
    assert prefix == "python -m tidepool"


def test_python_dash_m_with_an_interpreter_not_on_path_gives_its_path() -> None:
    prefix = command_prefix(
        "/repo/tidepool/__main__.py",
        "tidepool.__main__",
        _which({"python": "/usr/bin/python"}),
        "/opt/venv/bin/python",
    )
    assert prefix == "/opt/venv/bin/python -m tidepool"


def test_a_script_not_on_path_gives_the_path_it_was_run_by() -> None:
    prefix = command_prefix(".venv/bin/tidepool", "", _which({}), "/x/python")
    assert prefix == ".venv/bin/tidepool"


def test_a_script_found_on_path_gives_its_name() -> None:
    which = _which({"tidepool": "/usr/local/bin/tidepool"})
    prefix = command_prefix("/usr/local/bin/tidepool", "", which, "/x/python")
    assert prefix == "tidepool"
