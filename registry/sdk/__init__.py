"""The tidepool engine SDK: register an engine, heartbeat its load, obey directives.

Everything an engine needs is importable from here, and only that: the helpers the
tidepool processes share live in `tidepool.runtime`, and what routers, `ctl` and the
scheduler share as registry clients in `registry.client`. The submodules are an
implementation detail and may move.
"""

from __future__ import annotations

from registry.sdk.agent import EngineAgent
from registry.sdk.config import AgentConfig, new_instance_id
from registry.sdk.directives import DirectiveHandler
from registry.sdk.errors import (
    AgentError,
    AgentStateError,
    InstanceNotFoundError,
    RegistrationError,
    RegistryUnavailableError,
)
from registry.sdk.gpu import GpuSample, GpuSampler, NvmlSampler, sample_gpu
from registry.sdk.load import EngineStatus, LoadReport, LoadSource
from registry.sdk.signals import run_until_signal
from tidepool.runtime.signals import ShutdownSignals, unless_signalled

__all__ = [
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
]
