"""The scheduler policy file: the documented example, defaults, errors naming key and line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.policy import (
    DEFAULT_POLICY_TEXT,
    LoopPolicy,
    Policy,
    PolicyError,
    PoolPolicy,
    load_policy,
    parse_policy,
)

EXAMPLE = """\
[scheduler]
interval_s = 1.0          # control-loop period
window_s = 10.0           # utilisation smoothing window
cooldown_s = 30.0         # per pool, after a move or a scale step
min_stay_s = 60.0         # an engine that moved stays at least this long
drain_timeout_s = 30.0    # in-flight work an engine may finish before its switch
switch_timeout_s = 120.0  # a switch not done by then is rolled back

[[pools]]
name = "zh-public"        # also the alias name; its rule is pool=zh-public
lang = "zh"
min = 1
max = 20
target_utilization = 0.6
high_watermark = 0.8      # above: the pool needs capacity
low_watermark = 0.3       # below: the pool can lend
lend_to = ["en-public"]   # pools that may borrow engines from this one

[[pools]]
name = "en-public"
lang = "en"
min = 1
max = 20
target_utilization = 0.6
high_watermark = 0.8
low_watermark = 0.3
lend_to = ["zh-public"]

[[tenants]]               # published as tenant alias lists, in this order
tenant = "acme"
lang = "zh"
aliases = ["zh-acme", "zh-public"]

[providers.local]          # see Scaling
tiers = ["cvm", "serverless"]
start_s = { cvm = 5.0, serverless = 1.0 }
price_per_hour = { idc = 0.0, cvm = 1.0, serverless = 2.5 }
"""

SECOND_POOL = '[[pools]]\nname = "en-public"'
TENANT = "[[tenants]]               # published as tenant alias lists, in this order"
PROVIDER = "[providers.local]          # see Scaling"
EXTRA_TENANT = '\n[[tenants]]\ntenant = "acme"\nlang = "zh"\naliases = ["zh-public"]\n'


def edit(old: str, new: str, text: str = EXAMPLE) -> str:
    """`text` with the first `old` replaced by `new`; `old` must be there."""
    assert old in text, old
    return text.replace(old, new, 1)


def set_key(header: str, key: str, value: str, text: str = EXAMPLE) -> str:
    """`text` with `key = value` in the first table `header`, replacing the key's line if any."""
    start = text.index(header + "\n") + len(header) + 1
    end = text.find("\n[", start)
    end = len(text) if end < 0 else end
    body = text[start:end]
    line = re.search(rf"^{re.escape(key)} = .*$", body, flags=re.MULTILINE)
    if line is None:
        body = f"{key} = {value}\n{body}"
    else:
        body = body[: line.start()] + f"{key} = {value}" + body[line.end() :]
    return text[:start] + body + text[end:]


def line_of(text: str, snippet: str) -> int:
    """The 1-based line where `snippet` first starts in `text`."""
    return text[: text.index(snippet)].count("\n") + 1


def error_of(text: str) -> PolicyError:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, source="policy.toml")
    return caught.value


def minimal(low: float, target: float, high: float) -> str:
    return (
        "[scheduler]\ninterval_s = 1\nwindow_s = 10\ncooldown_s = 0\nmin_stay_s = 0\n"
        "drain_timeout_s = 5\nswitch_timeout_s = 60\n\n"
        '[[pools]]\nname = "p"\nlang = "en"\nmin = 0\nmax = 1\n'
        f"target_utilization = {target!r}\nhigh_watermark = {high!r}\nlow_watermark = {low!r}\n"
    )


# -- what parses ---------------------------------------------------------------------------------


def test_the_documented_example_parses_to_its_values() -> None:
    policy = parse_policy(EXAMPLE)
    loop = policy.loop
    assert (loop.interval_s, loop.window_s, loop.cooldown_s) == (1.0, 10.0, 30.0)
    assert (loop.min_stay_s, loop.drain_timeout_s, loop.switch_timeout_s) == (60.0, 30.0, 120.0)
    assert [pool.name for pool in policy.pools] == ["zh-public", "en-public"]
    zh = policy.pools[0]
    assert (zh.lang, zh.min, zh.max) == ("zh", 1, 20)
    assert (zh.low_watermark, zh.target_utilization, zh.high_watermark) == (0.3, 0.6, 0.8)
    assert zh.lend_to == ("en-public",)
    assert zh.scale is True
    assert policy.pools[1].lend_to == ("zh-public",)
    (tenant,) = policy.tenants
    assert (tenant.tenant, tenant.lang, tenant.aliases) == ("acme", "zh", ("zh-acme", "zh-public"))
    provider = policy.provider
    assert provider is not None
    assert provider.name == "local"
    assert provider.tiers == ("cvm", "serverless")
    assert dict(provider.start_s) == {"cvm": 5.0, "serverless": 1.0}
    assert dict(provider.price_per_hour) == {"idc": 0.0, "cvm": 1.0, "serverless": 2.5}


def test_optional_keys_take_their_documented_defaults() -> None:
    policy = parse_policy(set_key(PROVIDER, "price_per_hour", "{ cvm = 1.0, serverless = 2.5 }"))
    loop = policy.loop
    assert (loop.leader_ttl_s, loop.expected_switch_s) == (3.0, 5.0)
    assert (loop.start_within_s, loop.urgent_start_within_s) == (60.0, 10.0)
    assert loop.max_moves_per_tick == 2
    provider = policy.provider
    assert provider is not None
    assert (provider.max_engines, provider.slots, provider.speed, provider.model_load_s) == (
        8,
        4,
        1.0,
        1.0,
    )
    assert provider.price_per_hour["idc"] == 0.0
    assert dict(provider.weight) == {"cvm": 100, "serverless": 100}
    assert provider.weight_for("serverless") == 100
    assert provider.weight_for("idc") == 100


def test_optional_keys_are_read_when_given() -> None:
    extra = "leader_ttl_s = 4\nexpected_switch_s = 2.5\nstart_within_s = 30\n"
    text = edit(
        "[[pools]]\n", extra + "urgent_start_within_s = 0\nmax_moves_per_tick = 5\n[[pools]]\n"
    )
    text = edit('lend_to = ["zh-public"]\n', "scale = false\n", text)
    text += (
        "max_engines = 0\nslots = 2\nweight = { cvm = 1, serverless = 1000 }\n"
        "speed = 2\nmodel_load_s = 0\n"
    )
    policy = parse_policy(text)
    loop = policy.loop
    assert (loop.leader_ttl_s, loop.expected_switch_s, loop.start_within_s) == (4.0, 2.5, 30.0)
    assert (loop.urgent_start_within_s, loop.max_moves_per_tick) == (0.0, 5)
    en = policy.pools[1]
    assert (en.lend_to, en.scale) == ((), False)
    provider = policy.provider
    assert provider is not None
    assert (provider.max_engines, provider.slots, provider.speed, provider.model_load_s) == (
        0,
        2,
        2.0,
        0.0,
    )
    assert (provider.weight_for("cvm"), provider.weight_for("serverless")) == (1, 1000)


def test_toml_integers_are_accepted_where_numbers_are_expected() -> None:
    policy = parse_policy(edit("interval_s = 1.0", "interval_s = 1"))
    assert policy.loop.interval_s == 1.0
    assert isinstance(policy.loop.interval_s, float)


def test_default_policy_text_parses_to_the_documented_values() -> None:
    policy = parse_policy(DEFAULT_POLICY_TEXT)
    loop = policy.loop
    assert (loop.interval_s, loop.window_s, loop.cooldown_s, loop.min_stay_s) == (
        1.0,
        10.0,
        15.0,
        30.0,
    )
    assert (loop.drain_timeout_s, loop.switch_timeout_s) == (10.0, 60.0)
    assert [(pool.name, pool.min, pool.max) for pool in policy.pools] == [
        ("zh-public", 1, 8),
        ("en-public", 1, 8),
    ]
    assert policy.tenants == ()
    assert policy.provider is not None
    assert policy.provider.tiers == ("cvm", "serverless")
    assert policy.provider.max_engines == 4
    assert dict(policy.provider.price_per_hour) == {"idc": 0.0, "cvm": 1.0, "serverless": 2.5}


def test_no_providers_table_means_no_scaling() -> None:
    text = EXAMPLE[: EXAMPLE.index("[providers.local]")]
    assert parse_policy(text).provider is None


def test_pool_finds_by_name_and_lenders_to_lists_the_lending_pools() -> None:
    text = EXAMPLE + (
        '\n[[pools]]\nname = "zh-batch"\nlang = "zh"\nmin = 0\nmax = 4\n'
        "target_utilization = 0.5\nhigh_watermark = 0.9\nlow_watermark = 0.1\n"
        'lend_to = ["zh-public", "en-public"]\n'
    )
    policy = parse_policy(text)
    zh = policy.pool("zh-public")
    assert zh is not None
    assert zh.lang == "zh"
    assert policy.pool("zh-acme") is None
    assert [pool.name for pool in policy.lenders_to("zh-public")] == ["en-public", "zh-batch"]
    assert [pool.name for pool in policy.lenders_to("en-public")] == ["zh-public", "zh-batch"]
    assert policy.lenders_to("zh-batch") == ()


def test_a_policy_is_immutable_and_hashable() -> None:
    policy = parse_policy(EXAMPLE)
    assert hash(policy) == hash(parse_policy(EXAMPLE))
    assert policy == parse_policy(EXAMPLE)
    assert policy.provider is not None
    with pytest.raises(TypeError):
        policy.provider.start_s["cvm"] = 0.0  # type: ignore[index]


# -- errors: where and why -----------------------------------------------------------------------


def test_an_error_reads_source_line_key_rule_and_value() -> None:
    text = set_key(SECOND_POOL, "high_watermark", "0.2")
    error = error_of(text)
    line = line_of(text, "high_watermark = 0.2")
    assert str(error) == (
        f"policy.toml:{line}: pools[1].high_watermark: "
        "must be between low_watermark (0.3) and 1.0, got 0.2"
    )
    assert (error.key, error.line) == ("pools[1].high_watermark", line)


def test_unknown_key_in_scheduler_names_key_and_line() -> None:
    text = edit("window_s = 10.0", "window_s = 10.0\nwindow_sec = 10.0")
    error = error_of(text)
    assert error.key == "scheduler.window_sec"
    assert error.line == line_of(text, "window_sec")
    assert "unknown key" in str(error)
    assert "interval_s" in str(error)


def test_unknown_key_in_second_pool_names_key_and_line() -> None:
    text = set_key(SECOND_POOL, "lend-to", "[]")
    error = error_of(text)
    assert error.key == "pools[1].lend-to"
    assert error.line == line_of(text, "lend-to")


@pytest.mark.parametrize(
    ("header", "key", "value", "path"),
    [
        ("[scheduler]", "interval", "1", "scheduler.interval"),
        (TENANT, "alias", '"x"', "tenants[0].alias"),
        (PROVIDER, "zone", "1", "providers.local.zone"),
        (PROVIDER, "start_s", "{ cvm = 5.0, idc = 0.0 }", "providers.local.start_s.idc"),
        (PROVIDER, "price_per_hour", "{ gpu = 0.0 }", "providers.local.price_per_hour.gpu"),
        (PROVIDER, "weight", "{ spot = 5 }", "providers.local.weight.spot"),
    ],
)
def test_unknown_keys_are_named_with_their_line(
    header: str, key: str, value: str, path: str
) -> None:
    text = set_key(header, key, value)
    error = error_of(text)
    assert error.key == path
    assert error.line == line_of(text, f"{key} = {value}")
    assert error.message.startswith("unknown key; known: ")


def test_an_unknown_top_level_key_is_named() -> None:
    text = "colour = 1\n" + EXAMPLE
    error = error_of(text)
    assert (error.key, error.line) == ("colour", 1)
    assert "known: scheduler, pools, tenants, providers" in error.message


def test_unknown_provider_is_named() -> None:
    text = EXAMPLE + '\n[providers.k8s]\ntiers = ["cvm"]\n'
    error = error_of(text)
    assert "providers.k8s: unknown provider; known: local" in str(error)
    assert error.line == line_of(text, "[providers.k8s]")


def test_a_toml_syntax_error_reports_tomllibs_line() -> None:
    text = edit("min = 1\n", "min = = 1\n")
    error = error_of(text)
    assert error.line == line_of(text, "min = = 1")
    assert "invalid TOML" in str(error)


def test_load_policy_on_a_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(path) in str(caught.value)


def test_load_policy_reads_the_file_and_names_it_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(EXAMPLE, encoding="utf-8")
    assert load_policy(str(path)) == parse_policy(EXAMPLE)
    path.write_text(edit("min = 1", "min = -1"), encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(caught.value).startswith(f"{path}:{line_of(EXAMPLE, 'min = 1')}: pools[0].min:")


def test_a_missing_required_key_is_named_at_its_table() -> None:
    text = edit('lang = "en"\n', "")
    error = error_of(text)
    assert error.key == "pools[1].lang"
    assert "missing" in error.message
    assert error.line == line_of(text, SECOND_POOL)


@pytest.mark.parametrize(
    ("header", "key", "value", "path", "message"),
    [
        ("[scheduler]", "interval_s", '"fast"', "scheduler.interval_s", "a number, got 'fast'"),
        ("[scheduler]", "interval_s", "nan", "scheduler.interval_s", "a finite number, got nan"),
        ("[scheduler]", "interval_s", "true", "scheduler.interval_s", "a number, got true"),
        ("[scheduler]", "max_moves_per_tick", "2.0", "scheduler.max_moves_per_tick", "an integer"),
        ("[scheduler]", "x", "{ y = 1 }", "scheduler.x", "unknown key"),
        ("[[pools]]", "min", "1.0", "pools[0].min", "must be an integer, got 1.0"),
        ("[[pools]]", "min", "true", "pools[0].min", "must be an integer, got true"),
        ("[[pools]]", "max", '"20"', "pools[0].max", "must be an integer, got '20'"),
        ("[[pools]]", "lang", "1", "pools[0].lang", "must be a string, got 1"),
        ("[[pools]]", "name", "7", "pools[0].name", "must be a string, got 7"),
        ("[[pools]]", "lend_to", '"en-public"', "pools[0].lend_to", "an array of strings"),
        ("[[pools]]", "lend_to", "[1]", "pools[0].lend_to[0]", "must be a string, got 1"),
        ("[[pools]]", "scale", '"yes"', "pools[0].scale", "must be true or false, got 'yes'"),
        (PROVIDER, "start_s", '{ cvm = "5" }', "providers.local.start_s.cvm", "a number"),
        (PROVIDER, "start_s", "5", "providers.local.start_s", "must be a table, got 5"),
        (PROVIDER, "weight", "{ cvm = 1.5 }", "providers.local.weight.cvm", "an integer"),
        (PROVIDER, "slots", "2.0", "providers.local.slots", "must be an integer"),
        (PROVIDER, "tiers", '"cvm"', "providers.local.tiers", "an array of strings"),
    ],
)
def test_wrong_types_are_named(header: str, key: str, value: str, path: str, message: str) -> None:
    text = set_key(header, key, value)
    error = error_of(text)
    assert error.key == path
    assert message in error.message
    assert error.line == line_of(text, f"{key} = {value}")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("interval_s", "0", "must be > 0, got 0.0"),
        ("window_s", "0.5", "must be >= interval_s (1.0), got 0.5"),
        ("cooldown_s", "-1", "must be >= 0, got -1.0"),
        ("min_stay_s", "-1", "must be >= 0, got -1.0"),
        ("drain_timeout_s", "0", "must be > 0, got 0.0"),
        ("switch_timeout_s", "-5", "must be > 0, got -5.0"),
        ("leader_ttl_s", "1.0", "must be > interval_s (1.0), got 1.0"),
        ("expected_switch_s", "-1", "must be >= 0, got -1.0"),
        ("start_within_s", "-1", "must be >= 0, got -1.0"),
        ("urgent_start_within_s", "-1", "must be >= 0, got -1.0"),
        ("max_moves_per_tick", "0", "must be >= 1, got 0"),
    ],
)
def test_loop_rules_are_enforced(key: str, value: str, message: str) -> None:
    text = set_key("[scheduler]", key, value)
    error = error_of(text)
    assert (error.key, error.message) == (f"scheduler.{key}", message)
    assert error.line == line_of(text, f"{key} = {value}")


def test_a_missing_scheduler_table_is_an_error() -> None:
    text = EXAMPLE[EXAMPLE.index("[[pools]]") :]
    assert error_of(text).key == "scheduler"


def test_a_missing_duration_is_an_error() -> None:
    error = error_of(edit("switch_timeout_s = 120.0", ""))
    assert (error.key, error.line) == ("scheduler.switch_timeout_s", 1)


@pytest.mark.parametrize(
    ("key", "value", "path", "message"),
    [
        ("name", '"zh public"', "name", "must be 1 to 63 characters"),
        ("name", '"-zh"', "name", "must be 1 to 63 characters"),
        ("name", f'"{"p" * 64}"', "name", "must be 1 to 63 characters"),
        ("lang", '"fr"', "lang", "must be one of zh, en, got 'fr'"),
        ("min", "-1", "min", "must be between 0 and max (20), got -1"),
        ("min", "21", "min", "must be between 0 and max (20), got 21"),
        ("max", "0", "max", "must be >= 1, got 0"),
        ("low_watermark", "0.0", "low_watermark", "must be between 0 and 1.0 (exclusive), got 0.0"),
        ("high_watermark", "1.1", "high_watermark", "between low_watermark (0.3) and 1.0, got 1.1"),
        ("target_utilization", "0.9", "target_utilization", "high_watermark (0.8), got 0.9"),
        ("target_utilization", "0.3", "target_utilization", "low_watermark (0.3)"),
        ("lend_to", '["zh-public"]', "lend_to[0]", "a pool cannot lend to itself"),
        ("lend_to", '["en-public", "en-public"]', "lend_to[1]", "repeats 'en-public'"),
        ("lend_to", '["en-acme"]', "lend_to[0]", "names no pool in this policy, got 'en-acme'"),
    ],
)
def test_pool_rules_are_enforced(key: str, value: str, path: str, message: str) -> None:
    text = set_key("[[pools]]", key, value)
    error = error_of(text)
    assert error.key == f"pools[0].{path}"
    assert message in error.message
    assert error.line == line_of(text, f"{key} = {value}")


def test_pool_names_are_unique() -> None:
    text = EXAMPLE + "\n" + EXAMPLE[EXAMPLE.index(SECOND_POOL) : EXAMPLE.index("[[tenants]]")]
    error = error_of(text)
    assert error.key == "pools[2].name"
    assert "repeats 'en-public' (also pools[1])" in error.message
    assert error.line == text.count("\n", 0, text.rindex(SECOND_POOL)) + 2


def test_at_least_one_pool_is_required() -> None:
    text = "[scheduler]\ninterval_s = 1\nwindow_s = 1\ncooldown_s = 0\nmin_stay_s = 0\n"
    text += "drain_timeout_s = 1\nswitch_timeout_s = 1\n"
    error = error_of(text)
    assert error.key == "pools"
    assert "at least one" in error.message


def test_pools_must_be_an_array_of_tables() -> None:
    error = error_of('pools = "zh-public"\n' + EXAMPLE[: EXAMPLE.index("[[pools]]")])
    assert error.key == "pools"
    assert "array of tables" in error.message


@pytest.mark.parametrize(
    ("key", "value", "path", "message"),
    [
        ("tenant", '"ac me"', "tenant", "must be 1 to 63 characters"),
        ("lang", '"jp"', "lang", "must be one of zh, en, got 'jp'"),
        ("aliases", "[]", "aliases", "must list 1 to 16 aliases, got 0"),
        ("aliases", str([f"a{i}" for i in range(17)]), "aliases", "got 17"),
        ("aliases", '["zh-acme", "zh-acme"]', "aliases[1]", "repeats 'zh-acme'"),
        ("aliases", '["zh-acme", "zh/x"]', "aliases[1]", "must be 1 to 63 characters"),
    ],
)
def test_tenant_rules_are_enforced(key: str, value: str, path: str, message: str) -> None:
    text = set_key(TENANT, key, value)
    error = error_of(text)
    assert error.key == f"tenants[0].{path}"
    assert message in error.message
    assert error.line == line_of(text, f"{key} = {value}")


def test_a_tenant_has_one_alias_list_per_language() -> None:
    text = EXAMPLE + EXTRA_TENANT
    error = error_of(text)
    assert error.key == "tenants[1]"
    assert "repeats tenant 'acme' for lang zh (also tenants[0])" in error.message
    assert error.line == line_of(text, EXTRA_TENANT.strip())
    other_lang = EXTRA_TENANT.replace('lang = "zh"', 'lang = "en"')
    assert len(parse_policy(EXAMPLE + other_lang).tenants) == 2


@pytest.mark.parametrize(
    ("key", "value", "path", "message"),
    [
        ("tiers", "[]", "tiers", "must list at least one tier"),
        ("tiers", '["idc", "cvm"]', "tiers[0]", "idc is the fixed fleet"),
        ("tiers", '["cvm", "gpu"]', "tiers[1]", "must be one of cvm, serverless, got 'gpu'"),
        ("tiers", '["cvm", "cvm"]', "tiers[1]", "repeats 'cvm'"),
        ("start_s", "{ cvm = 5.0 }", "start_s.serverless", "missing"),
        ("start_s", "{ cvm = -5.0, serverless = 1.0 }", "start_s.cvm", "must be >= 0, got -5.0"),
        ("price_per_hour", "{ cvm = 1.0 }", "price_per_hour.serverless", "missing"),
        ("price_per_hour", "{ cvm = -1, serverless = 1 }", "price_per_hour.cvm", "must be >= 0"),
        ("price_per_hour", "{ idc = -0.5, cvm = 1, serverless = 1 }", "price_per_hour.idc", ">= 0"),
        ("weight", "{ cvm = 0 }", "weight.cvm", "must be between 1 and 1000, got 0"),
        ("weight", "{ cvm = 1001 }", "weight.cvm", "must be between 1 and 1000, got 1001"),
        ("max_engines", "-1", "max_engines", "must be >= 0, got -1"),
        ("slots", "0", "slots", "must be >= 1, got 0"),
        ("speed", "0", "speed", "must be > 0, got 0.0"),
        ("model_load_s", "-1", "model_load_s", "must be >= 0, got -1.0"),
    ],
)
def test_provider_rules_are_enforced(key: str, value: str, path: str, message: str) -> None:
    text = set_key(PROVIDER, key, value)
    error = error_of(text)
    assert error.key == f"providers.local.{path}"
    assert message in error.message
    assert error.line == line_of(text, f"{key} = {value}")


def test_a_provider_needs_its_tiers_and_start_times() -> None:
    for key in ("tiers", "start_s"):
        text = EXAMPLE.replace(f"\n{key} = ", "\n# ", 1)
        error = error_of(text)
        assert error.key == f"providers.local.{key}"
        assert "missing" in error.message
        assert error.line == line_of(text, PROVIDER)


def test_dataclasses_built_in_code_apply_the_same_rules() -> None:
    loop = LoopPolicy(1.0, 10.0, 0.0, 0.0, 5.0, 60.0)
    with pytest.raises(PolicyError, match="high_watermark"):
        PoolPolicy("p", "en", 0, 1, 0.5, 0.4, 0.3)
    pool = PoolPolicy("p", "en", 0, 1, 0.5, 0.8, 0.3, lend_to=("q",))
    with pytest.raises(PolicyError, match=r"pools\[0\]\.lend_to\[0\]"):
        Policy(loop, (pool,))


# -- properties ----------------------------------------------------------------------------------

fractions = st.floats(min_value=0.0, max_value=1.0, exclude_min=True)
anything = st.floats(min_value=-0.5, max_value=1.5, allow_nan=False)


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(fractions, min_size=3, max_size=3, unique=True).map(sorted))
def test_any_ordered_watermark_triple_parses(triple: list[float]) -> None:
    low, target, high = triple
    (pool,) = parse_policy(minimal(low, target, high)).pools
    assert (pool.low_watermark, pool.target_utilization, pool.high_watermark) == (low, target, high)


@settings(max_examples=300, deadline=None, database=None)
@given(anything, anything, anything)
def test_watermarks_parse_exactly_when_ordered(low: float, target: float, high: float) -> None:
    text = minimal(low, target, high)
    if 0 < low < target < high <= 1.0:
        assert parse_policy(text).pools[0].high_watermark == high
    else:
        with pytest.raises(PolicyError) as caught:
            parse_policy(text)
        assert caught.value.key.startswith("pools[0].")
        assert caught.value.key.endswith(("watermark", "target_utilization"))
