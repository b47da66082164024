"""The SDK's public surface is what an engine needs: everything in __all__ exists, and
nothing leaks in unnoticed (the shared process helpers live in tidepool.runtime)."""

from __future__ import annotations

import registry.sdk as sdk

EXPECTED = {
    "AgentConfig",
    "AgentError",
    "AgentStateError",
    "DirectiveHandler",
    "EngineAgent",
    "EngineStatus",
    "GpuSample",
    "GpuSampler",
    "InstanceNotFoundError",
    "LoadReport",
    "LoadSource",
    "NvmlSampler",
    "RegistrationError",
    "RegistryUnavailableError",
    "ShutdownSignals",
    "new_instance_id",
    "run_until_signal",
    "sample_gpu",
    "unless_signalled",
}


def test_all_lists_exactly_the_public_names() -> None:
    assert set(sdk.__all__) == EXPECTED


def test_every_exported_name_exists() -> None:
    missing = [name for name in sdk.__all__ if not hasattr(sdk, name)]
    assert not missing
