"""The SDK's public surface: everything in __all__ exists, and nothing leaks in unnoticed."""

from __future__ import annotations

import registry.sdk as sdk

EXPECTED = {
    "AgentConfig",
    "AgentError",
    "AgentStateError",
    "Backoff",
    "ConfigError",
    "DirectiveHandler",
    "EngineAgent",
    "EngineStatus",
    "GpuSample",
    "GpuSampler",
    "InstanceNotFoundError",
    "LoadReport",
    "LoadSource",
    "NvmlSampler",
    "Option",
    "RegistrationError",
    "RegistryUnavailableError",
    "ShutdownSignals",
    "StatusServer",
    "add_options",
    "auth_metadata",
    "channel_options",
    "new_instance_id",
    "open_channel",
    "resolve",
    "run_until_signal",
    "sample_gpu",
    "unless_signalled",
}


def test_all_lists_exactly_the_public_names() -> None:
    assert set(sdk.__all__) == EXPECTED


def test_every_exported_name_exists() -> None:
    missing = [name for name in sdk.__all__ if not hasattr(sdk, name)]
    assert not missing
