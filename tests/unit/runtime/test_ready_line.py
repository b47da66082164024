"""The ready line every tidepool process prints, as the child supervisor reads it."""

from __future__ import annotations

import pytest

from tidepool.runtime.children import ChildError, is_ready_line, parse_fields


@pytest.mark.parametrize(
    "line",
    [
        "tidepool registry ready grpc=127.0.0.1:7700 http=127.0.0.1:7701 pid=12",
        "tidepool scheduler ready role=leader id=a pid=3",
        "loadtest engine ready id=lt-1 address=127.0.0.1:9",
        "tidepool nginx ready",
    ],
)
def test_program_component_ready_is_a_ready_line(line: str) -> None:
    assert is_ready_line(line)


@pytest.mark.parametrize(
    "line",
    ["", "ready", "tidepool ready grpc=1", "demo parent child=1 ready", "tidepool router is ready"],
)
def test_other_lines_are_not_ready_lines(line: str) -> None:
    assert not is_ready_line(line)


def test_fields_split_at_the_first_equals_sign() -> None:
    line = "tidepool router ready grpc=127.0.0.1:1 labels=a=b,c=d pid=1,2"
    assert parse_fields(line) == {"grpc": "127.0.0.1:1", "labels": "a=b,c=d", "pid": "1,2"}


def test_a_child_error_quotes_the_last_output_after_its_reason() -> None:
    error = ChildError("engine-0 exited with status 3", name="engine-0", output_tail="no model")
    assert error.reason == "engine-0 exited with status 3"
    assert str(error) == "engine-0 exited with status 3\n--- last output of engine-0 ---\nno model"
    assert str(ChildError("plain")) == "plain"
