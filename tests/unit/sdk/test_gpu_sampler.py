"""NvmlSampler against FakeNvml and the real pynvml; sample_gpu never blocks the loop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from registry.sdk.gpu import INIT_RETRY_S, GpuSample, NvmlSampler, sample_gpu
from tests.support.fake_nvml import FakeGpu, FakeNvml
from tests.support.processes import wait_until_async


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def nvml() -> Iterator[FakeNvml]:
    gpu = FakeGpu("NVIDIA L4", utilization_percent=42, memory_used_bytes=3 << 30)
    gpu.memory_total_bytes = 24 << 30
    fake = FakeNvml([gpu])
    yield fake
    fake.release()  # never leave a thread hung inside the fake


def test_reads_the_device_figures(nvml: FakeNvml, clock: FakeClock) -> None:
    sample = NvmlSampler(nvml, clock=clock).sample()
    assert sample == GpuSample(
        present=True,
        name="NVIDIA L4",
        utilization_percent=42,
        memory_used_bytes=3 << 30,
        memory_total_bytes=24 << 30,
        detail="NVML device 0",
    )


def test_initialises_nvml_once(nvml: FakeNvml, clock: FakeClock) -> None:
    sampler = NvmlSampler(nvml, clock=clock)
    for _ in range(5):
        assert sampler.sample().present
    assert nvml.init_calls == 1


def test_follows_changing_figures(nvml: FakeNvml, clock: FakeClock) -> None:
    sampler = NvmlSampler(nvml, clock=clock)
    nvml.devices[0].utilization_percent = 99
    assert sampler.sample().utilization_percent == 99


def test_reads_the_chosen_device_index(clock: FakeClock) -> None:
    nvml = FakeNvml([FakeGpu(name="first"), FakeGpu(name="second")])
    assert NvmlSampler(nvml, index=1, clock=clock).sample().name == "second"


def test_missing_device_index_is_absent(nvml: FakeNvml, clock: FakeClock) -> None:
    sample = NvmlSampler(nvml, index=3, clock=clock).sample()
    assert not sample.present
    assert "device 3 absent (1 found)" in sample.detail


def test_no_library_is_absent_with_a_clear_detail(clock: FakeClock) -> None:
    sample = NvmlSampler(FakeNvml(library_found=False), clock=clock).sample()
    assert sample == GpuSample.absent("no GPU: NVML Shared Library Not Found")


def test_no_driver_is_absent_and_init_is_retried_at_most_every_30_s(clock: FakeClock) -> None:
    nvml = FakeNvml(driver_loaded=False)
    sampler = NvmlSampler(nvml, clock=clock)
    assert sampler.sample().detail == "no GPU: Driver Not Loaded"
    clock.now += INIT_RETRY_S - 1
    assert not sampler.sample().present
    assert nvml.init_calls == 1
    nvml.driver_loaded = True
    clock.now += 1
    assert sampler.sample().present
    assert nvml.init_calls == 2


def test_lost_device_is_absent_then_recovers_after_the_retry_interval(
    nvml: FakeNvml, clock: FakeClock
) -> None:
    sampler = NvmlSampler(nvml, clock=clock)
    assert sampler.sample().present
    nvml.lose(0)
    assert sampler.sample() == GpuSample.absent("NVML error: GPU is lost")
    assert nvml.refcount == 0, "a lost device must release NVML so it can start over"
    nvml.devices[0].lost = False
    assert not sampler.sample().present
    clock.now += INIT_RETRY_S
    assert sampler.sample().present


def test_missing_pynvml_module_is_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_pynvml(name: str, *args: object, **kwargs: object) -> object:
        if name == "pynvml":
            raise ImportError("No module named 'pynvml'")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_pynvml)
    sample = NvmlSampler().sample()
    assert sample == GpuSample.absent("no GPU: nvidia-ml-py (pynvml) is not installed")


def test_close_shuts_nvml_down(nvml: FakeNvml, clock: FakeClock) -> None:
    sampler = NvmlSampler(nvml, clock=clock)
    sampler.sample()
    sampler.close()
    assert nvml.shutdown_calls == 1
    assert nvml.refcount == 0


async def test_sample_gpu_returns_the_reading(nvml: FakeNvml) -> None:
    sample = await sample_gpu(NvmlSampler(nvml), timeout_s=5)
    assert sample.present


async def test_hung_nvml_times_out_without_blocking_the_loop(nvml: FakeNvml) -> None:
    sampler = NvmlSampler(nvml)
    sampler.sample()
    nvml.hang()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    sample = await sample_gpu(sampler, timeout_s=0.2)
    ticker.cancel()
    assert sample == GpuSample.absent("NVML timed out")
    assert ticks > 10, "the event loop kept running while NVML hung"


async def test_a_second_sample_while_hung_does_not_pile_up_threads(nvml: FakeNvml) -> None:
    sampler = NvmlSampler(nvml)
    sampler.sample()
    nvml.hang()
    await sample_gpu(sampler, timeout_s=0.1)
    second = await sample_gpu(sampler, timeout_s=1.0)
    assert second == GpuSample.absent("NVML busy: an earlier call has not returned")
    assert nvml.hung_callers == 1
    nvml.release()

    async def recovered() -> bool:
        return (await sample_gpu(sampler, timeout_s=5)).present

    await wait_until_async(recovered, 5, "the sampler did not recover after NVML was released")


async def test_a_raising_sampler_is_reported_absent() -> None:
    class Broken:
        def sample(self) -> GpuSample:
            raise RuntimeError("boom")

    sample = await sample_gpu(Broken(), timeout_s=5)
    assert sample == GpuSample.absent("GPU sampler failed: RuntimeError: boom")


def test_real_pynvml_never_raises() -> None:
    sample = NvmlSampler().sample()
    assert isinstance(sample, GpuSample)
    if not sample.present:
        assert sample.detail.startswith("no GPU"), sample.detail


_REAL = NvmlSampler().sample()


@pytest.mark.gpu
@pytest.mark.skipif(not _REAL.present, reason=f"needs a real GPU ({_REAL.detail})")
def test_real_gpu_reports_figures() -> None:
    sample = NvmlSampler().sample()
    assert sample.present
    assert sample.name
    assert 0 <= sample.utilization_percent <= 100
    assert 0 < sample.memory_used_bytes <= sample.memory_total_bytes
