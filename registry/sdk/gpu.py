"""GPU figures for heartbeats, read through NVML (`pynvml` from `nvidia-ml-py`).

Sampling never raises and never blocks the event loop: a missing library, a
missing driver, a lost device or a hung NVML call all become a `GpuSample` with
`present=False` and a `detail` saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

INIT_RETRY_S = 30.0
"""How long to wait before trying nvmlInit again after it failed (it is slow when it fails)."""


@dataclass(frozen=True)
class GpuSample:
    """One reading of one GPU, or why there is none."""

    present: bool
    name: str = ""
    utilization_percent: int = 0
    memory_used_bytes: int = 0
    memory_total_bytes: int = 0
    detail: str = ""

    @classmethod
    def absent(cls, detail: str) -> GpuSample:
        return cls(present=False, detail=detail)


class GpuSampler(Protocol):
    """Anything that can read the GPU synchronously (it may block; see `sample_gpu`)."""

    def sample(self) -> GpuSample: ...


class NvmlSampler:
    """Reads one device through NVML, initialising it lazily and once.

    `nvml_module` is the `pynvml` module or a stand-in with the same functions
    (tests use `FakeNvml`); None imports `pynvml` on first use.
    """

    def __init__(
        self,
        nvml_module: Any = None,
        index: int = 0,
        *,
        clock: Callable[[], float] = time.monotonic,
        init_retry_s: float = INIT_RETRY_S,
    ) -> None:
        if index < 0:
            raise ValueError(f"index: must be 0 or more, got {index}")
        self._nvml: Any = nvml_module
        self._index = index
        self._clock = clock
        self._init_retry_s = init_retry_s
        self._initialised = False
        self._failed_at: float | None = None
        self._failure = ""
        # Held for the whole of a sample; a call that finds it taken knows an
        # earlier call is stuck inside NVML and must not pile another thread on it.
        self._lock = threading.Lock()

    def sample(self) -> GpuSample:
        if not self._lock.acquire(blocking=False):
            return GpuSample.absent("NVML busy: an earlier call has not returned")
        try:
            return self._sample_locked()
        finally:
            self._lock.release()

    def close(self) -> None:
        """Release NVML (nvmlShutdown) if this sampler initialised it."""
        with self._lock:
            self._shutdown()

    def _sample_locked(self) -> GpuSample:
        failure = self._ensure_initialised()
        if failure is not None:
            return GpuSample.absent(failure)
        nvml = self._nvml
        try:
            return self._read_device(nvml)
        except nvml.NVMLError as exc:
            # The device or driver went away: start over, but not before the retry interval.
            self._shutdown()
            self._remember_failure(f"NVML error: {exc}")
            return GpuSample.absent(self._failure)
        except Exception as exc:  # a sampler must never take the heartbeat down with it
            self._shutdown()
            self._remember_failure(f"NVML failed: {type(exc).__name__}: {exc}")
            return GpuSample.absent(self._failure)

    def _ensure_initialised(self) -> str | None:
        """Initialise NVML if needed; the failure detail when it is not usable."""
        if self._initialised:
            return None
        if self._failed_at is not None and self._clock() - self._failed_at < self._init_retry_s:
            return self._failure
        try:
            if self._nvml is None:
                self._nvml = _import_pynvml()
            nvml = self._nvml
        except ImportError:
            self._remember_failure("no GPU: nvidia-ml-py (pynvml) is not installed")
            return self._failure
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            self._remember_failure(f"no GPU: {exc}")
            return self._failure
        except Exception as exc:
            self._remember_failure(f"no GPU: nvmlInit failed: {type(exc).__name__}: {exc}")
            return self._failure
        self._initialised = True
        self._failed_at = None
        return None

    def _read_device(self, nvml: Any) -> GpuSample:
        count = int(nvml.nvmlDeviceGetCount())
        if self._index >= count:
            return GpuSample.absent(f"no GPU: device {self._index} absent ({count} found)")
        handle = nvml.nvmlDeviceGetHandleByIndex(self._index)
        name = nvml.nvmlDeviceGetName(handle)
        rates = nvml.nvmlDeviceGetUtilizationRates(handle)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        return GpuSample(
            present=True,
            # Old pynvml releases return bytes here, newer ones str.
            name=name.decode() if isinstance(name, bytes) else str(name),
            utilization_percent=min(max(int(rates.gpu), 0), 100),
            memory_used_bytes=int(memory.used),
            memory_total_bytes=int(memory.total),
            detail=f"NVML device {self._index}",
        )

    def _remember_failure(self, detail: str) -> None:
        self._failure = detail
        self._failed_at = self._clock()

    def _shutdown(self) -> None:
        if self._initialised:
            self._initialised = False
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()


def _import_pynvml() -> Any:
    import pynvml  # imported lazily: importing it loads no library, but engines without it work

    return pynvml


async def sample_gpu(sampler: GpuSampler, timeout_s: float = 1.0) -> GpuSample:
    """Run `sampler.sample()` in a thread; a reading that takes over `timeout_s` is absent.

    A daemon thread rather than the loop's executor: a hung NVML call must not
    keep the process from exiting (executor threads are joined at shutdown).
    """
    loop = asyncio.get_running_loop()
    result: asyncio.Future[GpuSample] = loop.create_future()

    def settle(sample: GpuSample) -> None:
        if not result.done():
            result.set_result(sample)

    def work() -> None:
        try:
            sample = sampler.sample()
        except Exception as exc:  # a buggy sampler is reported, not raised
            sample = GpuSample.absent(f"GPU sampler failed: {type(exc).__name__}: {exc}")
        with contextlib.suppress(RuntimeError):  # the loop closed while we were blocked
            loop.call_soon_threadsafe(settle, sample)

    threading.Thread(target=work, name="tidepool-gpu-sample", daemon=True).start()
    try:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
        # that arrives just as the thread delivers its result.
        async with asyncio.timeout(timeout_s):
            return await result
    except TimeoutError:
        return GpuSample.absent("NVML timed out")
