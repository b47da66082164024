"""The requests' language: implied by the alias or the tenant's route, refused when contradicted."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loadtest.__main__ import build_parser, config_from_args, main
from loadtest.config import LangConflictError, LoadConfig, alias_lang

TARGET = "127.0.0.1:7000"


def config_for(*flags: str) -> LoadConfig:
    return config_from_args(build_parser().parse_args(["--target", TARGET, *flags]), {})


@pytest.mark.parametrize(
    ("alias", "lang"),
    [
        ("en-public", "en"),
        ("zh-public", "zh"),
        ("public-en", "en"),
        ("fleet-zh", "zh"),
        ("en-", "en"),
        ("bench", None),
        ("en", None),  # no dash: a name, not a language prefix
        ("english-public", None),
        ("public-zhx", None),
        ("eu-en-public", None),  # the language in the middle says nothing
        ("zh-to-en", None),  # both: ambiguous, so no guess
        ("EN-public", None),  # languages are lower case on the wire
    ],
)
def test_an_alias_implies_the_language_its_name_starts_or_ends_with(
    alias: str, lang: str | None
) -> None:
    assert alias_lang(alias) == lang


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", max_size=20))
def test_an_alias_never_implies_a_language_its_name_does_not_carry(middle: str) -> None:
    assert alias_lang(f"en-{middle}") in ("en", None)
    assert alias_lang(f"x{middle}x") is None


def test_the_alias_language_is_the_default_request_language() -> None:
    config = config_for("--alias", "en-public")
    assert config.request_lang == "en"
    assert config.to_dict()["request_lang"] == "en"
    assert config.metadata() == (("x-tidepool-alias", "en-public"),)


def test_an_alias_that_implies_nothing_keeps_zh_or_the_given_lang() -> None:
    assert config_for("--alias", "bench").request_lang == "zh"
    assert config_for("--alias", "bench", "--lang", "en").request_lang == "en"


def test_a_lang_that_agrees_with_the_alias_is_accepted() -> None:
    assert config_for("--alias", "en-public", "--lang", "en").request_lang == "en"


def test_the_route_lang_is_the_default_request_language_with_a_tenant() -> None:
    config = config_for("--tenant", "acme", "--route-lang", "en")
    assert config.request_lang == "en"
    assert config.metadata() == (("x-tidepool-tenant", "acme"), ("x-tidepool-lang", "en"))


def test_the_lang_is_the_default_route_lang_with_a_tenant() -> None:
    config = config_for("--tenant", "acme", "--lang", "en")
    assert config.metadata() == (("x-tidepool-tenant", "acme"), ("x-tidepool-lang", "en"))


def test_the_alias_decides_over_a_tenant_as_the_router_does() -> None:
    config = config_for("--alias", "en-public", "--tenant", "acme", "--route-lang", "zh")
    assert config.request_lang == "en"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (
            ("--lang", "zh", "--alias", "en-public"),
            "--lang zh contradicts --alias en-public (an en pool); drop --lang or pick a zh alias",
        ),
        (
            ("--alias", "public-zh", "--lang", "en"),
            "--lang en contradicts --alias public-zh (a zh pool); drop --lang or pick an en alias",
        ),
        (
            ("--tenant", "acme", "--route-lang", "en", "--lang", "zh"),
            "--lang zh contradicts --route-lang en (an en route);"
            " drop --lang or set --route-lang zh",
        ),
    ],
)
def test_a_lang_that_contradicts_the_route_exits_2_naming_both_flags(
    flags: tuple[str, ...], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--target", TARGET, *flags])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # refused before the command line is printed or anything sent
    assert captured.err == f"tidepool loadtest: {expected} (see --help)\n"


def test_the_config_itself_refuses_a_contradiction() -> None:
    with pytest.raises(LangConflictError) as caught:
        LoadConfig(target=TARGET, alias="en-public", lang="zh")
    assert (caught.value.field, caught.value.other, caught.value.implied) == ("lang", "alias", "en")


def test_route_lang_without_a_tenant_implies_nothing() -> None:
    # The router reads x-tidepool-lang only beside a tenant.
    assert config_for("--route-lang", "en", "--lang", "zh").request_lang == "zh"
