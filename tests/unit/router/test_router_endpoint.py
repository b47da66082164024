"""Endpoint: validation, immutability and routability."""

from __future__ import annotations

import dataclasses

import pytest

from router.endpoint import Endpoint


def test_labels_are_a_private_read_only_copy() -> None:
    labels = {"lang": "zh"}
    endpoint = Endpoint("e-1", "10.0.0.1:7000", 100, labels)
    labels["lang"] = "en"
    assert endpoint.labels == {"lang": "zh"}
    with pytest.raises(TypeError):
        endpoint.labels["lang"] = "en"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        endpoint.weight = 5  # type: ignore[misc]


def test_equal_endpoints_hash_alike() -> None:
    a = Endpoint("e-1", "10.0.0.1:7000", 100, {"tier": "idc"})
    b = Endpoint("e-1", "10.0.0.1:7000", 100, {"tier": "idc"})
    assert a == b
    assert hash(a) == hash(b)


def test_routable_means_healthy_with_weight() -> None:
    assert Endpoint("e-1", "a:1", 1).routable
    assert not Endpoint("e-1", "a:1", 0).routable
    assert not Endpoint("e-1", "a:1", 100, healthy=False).routable


@pytest.mark.parametrize("weight", [-1, 1001, 1.5, True])
def test_rejects_a_weight_out_of_range(weight: object) -> None:
    with pytest.raises(ValueError, match="weight"):
        Endpoint("e-1", "a:1", weight)  # type: ignore[arg-type]


def test_rejects_an_empty_id() -> None:
    with pytest.raises(ValueError, match="id"):
        Endpoint("", "a:1", 1)
