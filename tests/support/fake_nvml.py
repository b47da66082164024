"""FakeNvml: a stand-in for the `pynvml` module with real behaviour and failure modes.

It has the functions `NvmlSampler` calls, with pynvml's error codes and messages:
init reference counting, calls before init failing with "Uninitialized", no
driver, a lost device, and a hang that blocks callers until `release()`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15

_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
}


class NVMLError(Exception):
    """Like pynvml.NVMLError: carries `value`, the NVML return code."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return _MESSAGES.get(self.value, f"NVML Error with code {self.value}")


@dataclass
class FakeGpu:
    name: str = "NVIDIA H100 80GB HBM3"
    utilization_percent: int = 37
    memory_used_bytes: int = 12 * 1024**3
    memory_total_bytes: int = 80 * 1024**3
    lost: bool = False


@dataclass(frozen=True)
class FakeHandle:
    index: int


@dataclass(frozen=True)
class Utilization:
    gpu: int
    memory: int


@dataclass(frozen=True)
class MemoryInfo:
    total: int
    free: int
    used: int


class FakeNvml:
    """The pynvml surface over a list of `FakeGpu`; mutate the devices to change readings."""

    NVMLError = NVMLError

    def __init__(
        self,
        devices: list[FakeGpu] | None = None,
        *,
        library_found: bool = True,
        driver_loaded: bool = True,
    ) -> None:
        self.devices = [FakeGpu()] if devices is None else devices
        self.library_found = library_found
        self.driver_loaded = driver_loaded
        self.init_calls = 0
        self.shutdown_calls = 0
        self.refcount = 0
        self._hang = threading.Event()
        self._released = threading.Event()
        self.hung_callers = 0

    # failure modes -------------------------------------------------------------

    def hang(self) -> None:
        """Every NVML call from now on blocks until `release()` (a wedged driver)."""
        self._released.clear()
        self._hang.set()

    def release(self) -> None:
        """Unblock hung callers and stop hanging."""
        self._hang.clear()
        self._released.set()

    def lose(self, index: int = 0) -> None:
        """The device falls off the bus: calls about it fail with GPU_IS_LOST."""
        self.devices[index].lost = True

    # the pynvml functions --------------------------------------------------------

    def nvmlInit(self) -> None:
        self._maybe_hang()
        self.init_calls += 1
        if not self.library_found:
            raise NVMLError(NVML_ERROR_LIBRARY_NOT_FOUND)
        if not self.driver_loaded:
            raise NVMLError(NVML_ERROR_DRIVER_NOT_LOADED)
        self.refcount += 1

    def nvmlShutdown(self) -> None:
        self._maybe_hang()
        self._require_init()
        self.shutdown_calls += 1
        self.refcount -= 1

    def nvmlDeviceGetCount(self) -> int:
        self._maybe_hang()
        self._require_init()
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeHandle:
        self._maybe_hang()
        self._require_init()
        if not 0 <= index < len(self.devices):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        self._require_present(index)
        return FakeHandle(index)

    def nvmlDeviceGetName(self, handle: FakeHandle) -> str:
        return self._device(handle).name

    def nvmlDeviceGetUtilizationRates(self, handle: FakeHandle) -> Utilization:
        gpu = self._device(handle)
        return Utilization(gpu=gpu.utilization_percent, memory=0)

    def nvmlDeviceGetMemoryInfo(self, handle: FakeHandle) -> MemoryInfo:
        gpu = self._device(handle)
        free = gpu.memory_total_bytes - gpu.memory_used_bytes
        return MemoryInfo(total=gpu.memory_total_bytes, free=free, used=gpu.memory_used_bytes)

    # internals -------------------------------------------------------------------

    def _device(self, handle: FakeHandle) -> FakeGpu:
        self._maybe_hang()
        self._require_init()
        self._require_present(handle.index)
        return self.devices[handle.index]

    def _require_init(self) -> None:
        if self.refcount <= 0:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)

    def _require_present(self, index: int) -> None:
        if self.devices[index].lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)

    def _maybe_hang(self) -> None:
        if self._hang.is_set():
            self.hung_callers += 1
            self._released.wait()
