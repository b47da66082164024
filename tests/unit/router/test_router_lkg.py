"""The last known good view on disk: round trip, atomic replacement, lenient reading."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from router.lkg import FORMAT_VERSION, encode_view, load_view, save_view
from router.view import AliasRule, InstanceInfo, RegistryView
from tidepool.registry.v1 import registry_pb2 as pb


def _view(revision: int = 42) -> RegistryView:
    instances = [
        InstanceInfo("a", "speech", "10.0.0.1:7000", 100, {"lang": "zh"}, pb.INSTANCE_STATE_READY),
        InstanceInfo(
            "b", "speech", "10.0.0.2:7000", 60, {"lang": "zh"}, pb.INSTANCE_STATE_UNHEALTHY
        ),
        InstanceInfo("c", "speech", "10.0.0.3:7000", 0, {"lang": "en"}, pb.INSTANCE_STATE_DRAINING),
    ]
    return RegistryView(
        instances={i.id: i for i in instances},
        aliases={
            "zh": AliasRule.of("zh", "speech", "lang=zh"),
            "en": AliasRule.of("en", "speech", "lang=en|EN"),
        },
        tenants={("acme", "zh"): ("zh-acme", "zh")},
        revision=revision,
    )


def _leftovers(folder: Path, keep: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p != keep)


def test_save_then_load_gives_the_same_view_and_when_it_was_saved(tmp_path: Path) -> None:
    path = tmp_path / "view.json"
    before = time.time()
    save_view(path, encode_view(_view()))
    after = time.time()
    loaded = load_view(path)
    assert loaded is not None
    view, saved_at = loaded
    assert view == _view()
    assert before <= saved_at <= after


def test_the_file_names_its_format_version() -> None:
    document = json.loads(encode_view(_view()))
    assert document["version"] == FORMAT_VERSION
    assert document["view"] == _view().to_json()


def test_saving_replaces_the_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "router" / "state" / "view.json"  # folders are made as needed
    save_view(path, encode_view(_view(revision=1)))
    save_view(path, encode_view(_view(revision=2)))
    loaded = load_view(path)
    assert loaded is not None
    assert loaded[0].revision == 2
    assert _leftovers(path.parent, path) == []


def test_a_failed_write_keeps_the_previous_file_and_cleans_up(tmp_path: Path) -> None:
    path = tmp_path / "view.json"
    save_view(path, encode_view(_view(revision=1)))
    with pytest.raises(TypeError):
        save_view(path, "not bytes")  # type: ignore[arg-type]
    loaded = load_view(path)
    assert loaded is not None
    assert loaded[0].revision == 1
    assert _leftovers(tmp_path, path) == []


def test_a_missing_file_is_no_view_and_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="router.lkg"):
        assert load_view(tmp_path / "absent.json") is None
    assert caplog.records == []


def _document(**changes: object) -> bytes:
    document = json.loads(encode_view(_view()))
    document.update(changes)
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"",
        b"\xff\xfe\x00garbage",
        b"[1, 2, 3]",
        b'"a string"',
        _document(version=FORMAT_VERSION + 1),
        _document(version=None),
        _document(view=None),
        _document(view={"revision": 1}),
        _document(saved_at="yesterday"),
        _document(view={"revision": 1, "instances": [{"id": "a"}], "aliases": [], "tenants": []}),
    ],
    ids=[
        "truncated",
        "empty",
        "binary",
        "list",
        "string",
        "future-version",
        "no-version",
        "null-view",
        "partial-view",
        "bad-saved-at",
        "partial-instance",
    ],
)
def test_an_unreadable_file_is_no_view_and_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    path = tmp_path / "view.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="router.lkg"):
        assert load_view(path) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(path) in warnings[0].getMessage()


def test_a_folder_in_place_of_the_file_is_no_view_and_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "view.json"
    path.mkdir()
    with caplog.at_level(logging.WARNING, logger="router.lkg"):
        assert load_view(path) is None
    assert len(caplog.records) == 1
