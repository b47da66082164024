"""`tidepool ctl`'s global flags: accepted before or after the command, `-o json|wide`."""

from __future__ import annotations

import argparse

import pytest

from tidepool.ctl.flags import finish
from tidepool.ctl.main import main, parser


def _parse(*argv: str) -> argparse.Namespace:
    return finish(parser().parse_args(list(argv)))


@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "instances"],
        ["instances", "--json"],
        ["instances", "-o", "json"],
        ["-o", "json", "instances"],
        ["--output=json", "instances"],
        ["alias", "list", "--json"],
        ["drain", "e-1", "--json"],
    ],
)
def test_json_is_accepted_before_or_after_the_command(argv: list[str]) -> None:
    args = _parse(*argv)
    assert args.json
    assert not args.wide


def test_wide_output_is_not_json() -> None:
    args = _parse("instances", "-o", "wide")
    assert args.wide
    assert not args.json


def test_registry_and_token_after_the_command() -> None:
    args = _parse("instances", "--registry", "10.0.0.1:7700", "--token", "t")
    assert (args.registry, args.token) == ("10.0.0.1:7700", "t")


def test_a_flag_before_the_command_survives_when_not_repeated_after() -> None:
    args = _parse("--registry", "10.0.0.1:7700", "instances", "--state", "ready")
    assert args.registry == "10.0.0.1:7700"
    assert args.token is None
    assert args.state == ["ready"]


def test_the_flag_after_the_command_wins() -> None:
    args = _parse("--registry", "10.0.0.1:1", "instances", "--registry", "10.0.0.2:2")
    assert args.registry == "10.0.0.2:2"


def test_without_an_output_flag_it_is_a_table() -> None:
    args = _parse("instances")
    assert not args.json
    assert not args.wide


def test_selector_and_state_filters_parse() -> None:
    args = _parse("instances", "--selector", "pool=zh-public|en-public,tier=idc", "--watch")
    assert args.selector.matches({"pool": "en-public", "tier": "idc"})
    assert not args.selector.matches({"pool": "en-public"})
    assert args.watch


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["instances", "-o", "yaml"], "invalid choice: 'yaml'"),
        (["instances", "--selector", "pool"], 'term "pool" must be key=value'),
        (["instances", "--state", "asleep"], "invalid choice: 'asleep'"),
        (["weight", "e-1", "1001"], "must be 0..1000"),
        (["weight", "e-1", "-3"], "must be 0..1000"),
        (["instances", "--bogus"], "unrecognized arguments: --bogus"),
        (["nonsense"], "invalid choice: 'nonsense'"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--registry", "127.0.0.1:1", *argv], environ={})
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("tidepool ctl: ")
    assert words in err
    assert len(err.strip().splitlines()) == 1


def test_a_bad_registry_from_the_environment_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["instances"], environ={"TIDEPOOL_REGISTRY": "nowhere"}) == 2
    assert capsys.readouterr().err.startswith("tidepool ctl: TIDEPOOL_REGISTRY: expected HOST:PORT")


@pytest.mark.parametrize("command", ["instances", "drain", "restore", "weight"])
def test_every_flag_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"], environ={})
    out = capsys.readouterr().out
    assert "global flags (also accepted before the command)" in out
    for flag in ("--registry", "--token", "--json", "-o"):
        assert flag in out
    if command == "instances":
        for flag in ("--selector", "--state", "--watch"):
            assert flag in out


def _parsers(root: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [root]
    for action in root._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found += _parsers(child)
    return found


def test_every_flag_of_every_command_has_help_text() -> None:
    missing = [
        f"{p.prog} {'/'.join(a.option_strings)}"
        for p in _parsers(parser())
        for a in p._actions
        if a.option_strings and not a.help
    ]
    assert missing == []
