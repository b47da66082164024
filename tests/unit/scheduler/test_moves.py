"""The move state machine: every transition of `step_move`, its timeouts and its refusals."""

from __future__ import annotations

from dataclasses import replace

import pytest

from scheduler.actions import Drain, Restore, SetPool, SwitchModel
from scheduler.fleet import Engine, Fleet, MoveView
from scheduler.moves import Step, step_move
from scheduler.policy import Policy
from tests.support.sim_fleet import make_engine, make_policy

ZH, EN = "zh-public", "en-public"
NOW = 1000.0
POLICY = make_policy()  # drain_timeout_s 10, switch_timeout_s 60; min 1, max 8 each
DRAIN_S, SWITCH_S = POLICY.loop.drain_timeout_s, POLICY.loop.switch_timeout_s


def move(
    state: str,
    *,
    instance_id: str = "en-0",
    from_pool: str = EN,
    to_pool: str = ZH,
    updated_at: float = NOW,
    started_at: float | None = None,
    langs: tuple[str, str] = ("en", "zh"),
) -> MoveView:
    return MoveView(
        id="m-1",
        instance_id=instance_id,
        from_pool=from_pool,
        to_pool=to_pool,
        state=state,
        reason="zh-public hot",
        started_at=updated_at if started_at is None else started_at,
        updated_at=updated_at,
        from_lang=langs[0],
        to_lang=langs[1],
    )


def fleet(engine: Engine, *others: Engine, moves: tuple[MoveView, ...] = ()) -> Fleet:
    spare = [make_engine("en-1", EN), make_engine("zh-0", ZH)]
    return Fleet.of([engine, *others, *spare], moves)


def step(view: MoveView, engine: Engine, *others: Engine, policy: Policy = POLICY) -> Step:
    return step_move(view, fleet(engine, *others, moves=(view,)), policy, NOW)


# -- pending: start or refuse ------------------------------------------------------------


def test_start_drains_the_engine_and_records_both_languages() -> None:
    view = replace(move("pending"), from_lang="", to_lang="")
    result = step(view, make_engine("en-0", EN))
    assert result.state == "draining"
    assert result.actions == (Drain("en-0"),)
    assert (result.from_lang, result.to_lang) == ("en", "zh")
    assert result.changes(view)


def test_refuses_a_target_that_is_not_a_pool_of_the_policy() -> None:
    result = step(move("pending", to_pool="fr-public"), make_engine("en-0", EN))
    assert result.state == "rolled_back"
    assert "'fr-public' is not a pool" in result.reason
    assert result.actions == ()


def test_refuses_an_engine_no_longer_in_the_source_pool() -> None:
    result = step(move("pending"), make_engine("en-0", ZH, lang="en"))
    assert result.state == "rolled_back"
    assert "en-0 is in zh-public, not en-public" in result.reason


def test_refuses_an_engine_in_no_pool() -> None:
    result = step(move("pending"), make_engine("en-0", "", lang="en"))
    assert "en-0 is in no pool" in result.reason


@pytest.mark.parametrize(
    ("engine", "why"),
    [
        (make_engine("en-0", EN, state="switching"), "en-0 is switching"),
        (make_engine("en-0", EN, admin_drained=True), "en-0 is ready (drained)"),
        (make_engine("en-0", EN, state="unhealthy"), "en-0 is unhealthy"),
    ],
)
def test_refuses_an_engine_that_is_not_ready(engine: Engine, why: str) -> None:
    result = step(move("pending"), engine)
    assert result.state == "rolled_back"
    assert why in result.reason


def test_refuses_to_take_the_source_below_its_min() -> None:
    policy = make_policy(en_public=(2, 8))
    # en-0 and en-1 are the only ready engines of en-public (min 2).
    result = step(move("pending"), make_engine("en-0", EN), policy=policy)
    assert result.state == "rolled_back"
    assert "below its min of 2" in result.reason


def test_min_counts_engines_that_are_already_moving_out_as_gone() -> None:
    other = move("draining", instance_id="en-1")
    view = move("pending")
    engines = [make_engine("en-0", EN), make_engine("en-1", EN), make_engine("en-2", EN)]
    policy = make_policy(en_public=(2, 8))
    result = step_move(view, Fleet.of(engines, (view, other)), policy, NOW)
    assert result.state == "rolled_back"
    assert "below its min of 2" in result.reason
    assert step_move(view, Fleet.of(engines, (view,)), policy, NOW).state == "draining"


def test_refuses_to_take_the_target_above_its_max() -> None:
    policy = make_policy(zh_public=(1, 2))
    incoming = move("switching", instance_id="en-1")
    view = move("pending")
    engines = [make_engine("en-0", EN), make_engine("en-1", EN), make_engine("en-2", EN)]
    engines.append(make_engine("zh-0", ZH))
    # zh-0 is in the pool and en-1 is on its way: en-0 would make three.
    result = step_move(view, Fleet.of(engines, (view, incoming)), policy, NOW)
    assert result.state == "rolled_back"
    assert "above its max of 2" in result.reason
    assert step_move(view, Fleet.of(engines, (view,)), policy, NOW).state == "draining"


# -- draining ----------------------------------------------------------------------------


def test_draining_sends_the_drain_again_until_it_shows() -> None:
    result = step(move("draining"), make_engine("en-0", EN, in_flight=2))
    assert result.state == "draining"
    assert result.actions == (Drain("en-0"),)
    assert not result.changes(move("draining"))


def test_draining_waits_for_in_flight_work() -> None:
    engine = make_engine("en-0", EN, in_flight=1, admin_drained=True)
    result = step(move("draining", updated_at=NOW - DRAIN_S + 1), engine)
    assert result == Step("draining", "zh-public hot")


def test_idle_engine_switches_to_the_target_language() -> None:
    engine = make_engine("en-0", EN, admin_drained=True)
    result = step(move("draining"), engine)
    assert result.state == "switching"
    assert result.actions == (SwitchModel("en-0", "zh"),)


def test_drain_timeout_runs_from_the_last_step_not_from_the_start() -> None:
    engine = make_engine("en-0", EN, in_flight=3, admin_drained=True)
    recent = move("draining", started_at=NOW - 10 * DRAIN_S, updated_at=NOW - DRAIN_S + 0.5)
    assert step(recent, engine).state == "draining"
    late = move("draining", started_at=NOW - 10 * DRAIN_S, updated_at=NOW - DRAIN_S)
    result = step(late, engine)
    assert result.state == "switching"
    assert result.actions == (SwitchModel("en-0", "zh"),)


def test_same_language_skips_the_switch() -> None:
    engine = make_engine("en-0", EN, admin_drained=True)
    view = move("draining", to_pool="en-other", langs=("en", "en"))
    result = step_move(view, fleet(engine, moves=(view,)), POLICY, NOW)
    assert result.state == "admitting"
    assert result.actions == (SetPool("en-0", "en-other", EN), Restore("en-0"))


# -- switching ---------------------------------------------------------------------------


def test_switching_waits_for_the_new_model() -> None:
    engine = make_engine("en-0", EN, lang="en", state="switching", admin_drained=True)
    assert step(move("switching", updated_at=NOW - SWITCH_S + 1), engine).state == "switching"


def test_an_engine_that_reports_the_new_language_but_still_switches_is_not_done() -> None:
    engine = make_engine("en-0", EN, lang="zh", state="switching", admin_drained=True)
    assert step(move("switching"), engine).state == "switching"


def test_switched_engine_is_labelled_into_the_target_and_restored() -> None:
    engine = make_engine("en-0", EN, lang="zh", admin_drained=True)
    result = step(move("switching"), engine)
    assert result.state == "admitting"
    # Its home stays where it came from, so it goes back first when that pool needs it.
    assert result.actions == (SetPool("en-0", ZH, EN), Restore("en-0"))


def test_admitting_keeps_an_existing_home() -> None:
    engine = make_engine("en-0", EN, lang="zh", admin_drained=True, home=ZH)
    result = step(move("switching"), engine)
    assert result.actions[0] == SetPool("en-0", ZH, ZH)


def test_switch_timeout_rolls_back_and_switches_the_model_back() -> None:
    engine = make_engine("en-0", EN, lang="zh", state="switching", admin_drained=True)
    result = step(move("switching", updated_at=NOW - SWITCH_S), engine)
    assert result.state == "rolling_back"
    assert "switch not done in 60s" in result.reason
    assert result.actions == (Drain("en-0"), SwitchModel("en-0", "en"))


def test_switch_timeout_before_the_language_changed_sends_no_switch_back() -> None:
    engine = make_engine("en-0", EN, lang="en", state="switching", admin_drained=True)
    result = step(move("switching", updated_at=NOW - SWITCH_S), engine)
    assert result.actions == (Drain("en-0"),)


# -- admitting ---------------------------------------------------------------------------


def test_admitted_ready_engine_finishes_the_move() -> None:
    engine = make_engine("en-0", ZH, lang="zh", home=EN)
    result = step(move("admitting"), engine)
    assert result == Step("done", "zh-public hot")


def test_admitting_sends_the_label_and_restore_again_until_they_show() -> None:
    engine = make_engine("en-0", EN, lang="zh", admin_drained=True)
    result = step(move("admitting", updated_at=NOW - 1), engine)
    assert result.state == "admitting"
    assert result.actions == (SetPool("en-0", ZH, EN), Restore("en-0"))


def test_engine_not_ready_in_the_target_in_time_goes_back_to_its_pool() -> None:
    engine = make_engine("en-0", ZH, lang="zh", home=EN, state="stalled")
    result = step(move("admitting", updated_at=NOW - SWITCH_S), engine)
    assert result.state == "rolling_back"
    assert f"not ready in {ZH} in time" in result.reason
    assert result.actions == (Drain("en-0"), SetPool("en-0", EN, EN), SwitchModel("en-0", "en"))


# -- engine gone or unhealthy mid-move ---------------------------------------------------


@pytest.mark.parametrize("state", ["pending", "draining", "switching", "admitting", "rolling_back"])
def test_deregistered_engine_ends_the_move(state: str) -> None:
    view = move(state)
    result = step_move(view, Fleet.of([make_engine("zh-0", ZH)], (view,)), POLICY, NOW)
    assert result.state == "rolled_back"
    assert "en-0 deregistered during the move" in result.reason
    assert result.actions == ()


@pytest.mark.parametrize(
    ("state", "engine"),
    [
        ("draining", make_engine("en-0", EN, state="unhealthy", admin_drained=True)),
        ("switching", make_engine("en-0", EN, lang="zh", state="unhealthy", admin_drained=True)),
        ("admitting", make_engine("en-0", ZH, lang="zh", state="unhealthy", home=EN)),
    ],
)
def test_engine_turning_unhealthy_mid_move_rolls_back(state: str, engine: Engine) -> None:
    result = step(move(state), engine)
    assert result.state == "rolling_back"
    assert "en-0 became unhealthy" in result.reason
    assert result.actions[0] == Drain("en-0")


def test_unhealthy_engine_in_the_target_is_labelled_back_into_its_source() -> None:
    engine = make_engine("en-0", ZH, lang="zh", state="unhealthy", home=EN)
    result = step(move("admitting"), engine)
    assert SetPool("en-0", EN, EN) in result.actions
    assert SwitchModel("en-0", "en") in result.actions


def test_engine_unhealthy_while_rolling_back_ends_the_move_without_restore() -> None:
    engine = make_engine("en-0", EN, lang="zh", state="unhealthy", admin_drained=True)
    result = step(move("rolling_back"), engine)
    assert result.state == "rolled_back"
    assert result.actions == ()


# -- rolling back ------------------------------------------------------------------------


def test_rolling_back_waits_for_the_old_model_and_keeps_asking_for_it() -> None:
    engine = make_engine("en-0", EN, lang="zh", admin_drained=True)
    result = step(move("rolling_back", updated_at=NOW - 1), engine)
    assert result.state == "rolling_back"
    assert result.actions == (Drain("en-0"), SwitchModel("en-0", "en"))


def test_rolling_back_waits_while_the_engine_still_switches() -> None:
    engine = make_engine("en-0", EN, lang="en", state="switching", admin_drained=True)
    assert step(move("rolling_back"), engine).state == "rolling_back"


def test_engine_back_in_its_pool_and_language_is_restored() -> None:
    engine = make_engine("en-0", EN, lang="en", admin_drained=True)
    result = step(move("rolling_back"), engine)
    assert result.state == "rolled_back"
    assert result.actions == (Restore("en-0"),)


def test_old_model_not_back_in_time_ends_the_rollback_still_drained() -> None:
    engine = make_engine("en-0", EN, lang="zh", state="switching", admin_drained=True)
    result = step(move("rolling_back", updated_at=NOW - SWITCH_S), engine)
    assert result.state == "rolled_back"
    assert "did not come back in time" in result.reason
    assert result.actions == ()


def test_a_move_without_a_recorded_language_rolls_back_on_the_pool_alone() -> None:
    engine = make_engine("en-0", EN, lang="zh", admin_drained=True)
    view = move("rolling_back", langs=("", ""))
    assert step(view, engine).state == "rolled_back"


def test_rollback_switches_the_model_back_and_restores_the_engine() -> None:
    """The whole path: start, drain, a switch that never finishes, and the way back."""
    view = replace(move("pending", updated_at=0.0), from_lang="", to_lang="")
    engine = make_engine("en-0", EN)
    first = step_move(view, fleet(engine, moves=(view,)), POLICY, 0.0)
    assert first.state == "draining"
    view = replace(view, state="draining", from_lang=first.from_lang, to_lang=first.to_lang)
    engine = replace(engine, admin_drained=True)
    second = step_move(view, fleet(engine, moves=(view,)), POLICY, 1.0)
    assert second.actions == (SwitchModel("en-0", "zh"),)
    view = replace(view, state="switching", updated_at=1.0)
    engine = replace(engine, lang="zh", state="switching")
    hung = step_move(view, fleet(engine, moves=(view,)), POLICY, 1.0 + SWITCH_S)
    assert hung.state == "rolling_back"
    assert SwitchModel("en-0", "en") in hung.actions
    view = replace(view, state="rolling_back", updated_at=1.0 + SWITCH_S)
    engine = replace(engine, lang="en", state="ready")
    back = step_move(view, fleet(engine, moves=(view,)), POLICY, 2.0 + SWITCH_S)
    assert back.state == "rolled_back"
    assert back.actions == (Restore("en-0"),)
