"""The tidepool engine SDK: register an engine, heartbeat its load, obey directives.

Everything an engine needs is importable from here; the submodules are an
implementation detail and may move.
"""

from __future__ import annotations

from registry.sdk.agent import (
    AgentConfig,
    DirectiveHandler,
    EngineAgent,
    EngineStatus,
    LoadReport,
    LoadSource,
    new_instance_id,
)
from registry.sdk.backoff import Backoff
from registry.sdk.channel import auth_metadata, channel_options, open_channel
from registry.sdk.errors import (
    AgentError,
    AgentStateError,
    InstanceNotFoundError,
    RegistrationError,
    RegistryUnavailableError,
)
from registry.sdk.gpu import GpuSample, GpuSampler, NvmlSampler, sample_gpu
from registry.sdk.options import ConfigError, Option, add_options, resolve
from registry.sdk.signals import ShutdownSignals, run_until_signal, unless_signalled
from registry.sdk.status_http import StatusServer

__all__ = [
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
]
