"""Tests for costtax.metering: NVML sampler against a fake pynvml, process-tree sampler with a
real child process, and ResourceMeter against the real pynvml (no GPU on CI machines)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import types
import warnings
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from costtax.metering import (
    MeterReading,
    NvmlSampler,
    ProcessTreeSampler,
    ResourceMeter,
)
from costtax.metering.nvml import clamp_interval, visible_device_indices
from costtax.metering.nvml_reading import integrate_power as _integrate_power
from costtax.metering.torch_mem import TorchMemReading, torch_peak_memory

pytestmark = pytest.mark.integration

MB = 1024 * 1024


# --------------------------------------------------------------------------------------
# Fake pynvml
# --------------------------------------------------------------------------------------
def _make_error_classes(mod: types.ModuleType) -> None:
    """Mimic pynvml: NVMLError base carrying .value, one subclass per error code."""

    class NVMLError(Exception):
        _strings = {
            1: "Uninitialized",
            3: "Not Supported",
            12: "NVML Shared Library Not Found",
            999: "Unknown Error",
        }

        def __new__(cls, value=None, *args):
            obj = Exception.__new__(cls)
            obj.value = value
            return obj

        def __init__(self, value=None, *args):
            super().__init__(value)

        def __str__(self):
            return self._strings.get(self.value, f"NVML Error with code {self.value}")

    def sub(name: str, code: int):
        def new(cls, *args):
            return NVMLError.__new__(cls, code)

        def init(self, *args):
            NVMLError.__init__(self, code)

        return type(name, (NVMLError,), {"__new__": new, "__init__": init})

    mod.NVMLError = NVMLError
    mod.NVMLError_Uninitialized = sub("NVMLError_Uninitialized", 1)
    mod.NVMLError_NotSupported = sub("NVMLError_NotSupported", 3)
    mod.NVMLError_LibraryNotFound = sub("NVMLError_LibraryNotFound", 12)
    mod.NVMLError_Unknown = sub("NVMLError_Unknown", 999)


class FakeNvml:
    """Scriptable stand-in for pynvml; installed as sys.modules['pynvml']."""

    def __init__(self, n_devices=1, init_error=None, energy=None, energy_error=None,
                 power_mw=100_000.0, power_fail_on_call=None, mem_values=None):
        self.mod = types.ModuleType("pynvml")
        _make_error_classes(self.mod)
        self.n_devices = n_devices
        self.init_error = init_error
        self.energy = list(energy) if energy is not None else [0, 1_000]  # mJ, per call
        self.energy_calls_by_handle: dict = {}
        self.energy_error = energy_error
        self.power_mw = power_mw
        self.power_fail_on_call = power_fail_on_call
        self.mem_values = mem_values or [1000 * MB, 3000 * MB, 5000 * MB, 2000 * MB]
        self.initialised = 0
        self.init_calls = 0
        self.shutdown_calls = 0
        self.mem_calls = 0
        self.power_calls = 0
        self.energy_calls = 0
        self.mem_returned: list[int] = []
        m = self.mod
        for name in ("nvmlInit", "nvmlShutdown", "nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex",
                     "nvmlDeviceGetName", "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetPowerUsage",
                     "nvmlDeviceGetUtilizationRates", "nvmlDeviceGetTotalEnergyConsumption"):
            setattr(m, name, getattr(self, name))

    def _check(self):
        if not self.initialised:
            raise self.mod.NVMLError_Uninitialized()

    def nvmlInit(self):
        self.init_calls += 1
        if self.init_error is not None:
            raise getattr(self.mod, self.init_error)()
        self.initialised += 1

    def nvmlShutdown(self):
        self._check()
        self.shutdown_calls += 1
        self.initialised -= 1

    def nvmlDeviceGetCount(self):
        self._check()
        return self.n_devices

    def nvmlDeviceGetHandleByIndex(self, i):
        self._check()
        return ("handle", i)

    def nvmlDeviceGetName(self, handle):
        self._check()
        return f"Fake GPU {handle[1]}"

    def nvmlDeviceGetMemoryInfo(self, handle):
        self._check()
        v = self.mem_values[min(self.mem_calls, len(self.mem_values) - 1)]
        self.mem_calls += 1
        self.mem_returned.append(v)
        return types.SimpleNamespace(used=v, total=80_000 * MB, free=80_000 * MB - v)

    def nvmlDeviceGetPowerUsage(self, handle):
        self._check()
        self.power_calls += 1
        if self.power_fail_on_call is not None and self.power_calls == self.power_fail_on_call:
            raise self.mod.NVMLError_Unknown()
        return self.power_mw

    def nvmlDeviceGetUtilizationRates(self, handle):
        self._check()
        return types.SimpleNamespace(gpu=50, memory=10)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        self._check()
        self.energy_calls += 1
        if self.energy_error is not None:
            raise getattr(self.mod, self.energy_error)()
        n = self.energy_calls_by_handle.get(handle, 0)
        self.energy_calls_by_handle[handle] = n + 1
        return self.energy[min(n, len(self.energy) - 1)]  # per device: enter, exit, ...


@pytest.fixture
def fake_nvml(monkeypatch):
    def install(**kwargs):
        fake = FakeNvml(**kwargs)
        monkeypatch.setitem(sys.modules, "pynvml", fake.mod)
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        return fake

    return install


def _run_sampler(duration=0.15, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with NvmlSampler(interval_s=0.01, **kwargs) as s:
            time.sleep(duration)
    runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    return s.reading, runtime


# --------------------------------------------------------------------------------------
# NvmlSampler with the fake
# --------------------------------------------------------------------------------------
def test_library_missing_warns_once_all_none(fake_nvml):
    fake = fake_nvml(init_error="NVMLError_LibraryNotFound")
    r, warns = _run_sampler(duration=0.03)
    assert len(warns) == 1
    assert "NVML Shared Library Not Found" in str(warns[0].message)
    assert r.available is False
    assert "LibraryNotFound" in r.reason
    for f in ("gpu_mem_peak_bytes", "gpu_mem_start_bytes", "energy_j", "energy_method",
              "power_mean_w", "util_mean_pct"):
        assert getattr(r, f) is None, f
    assert r.devices == ()
    assert fake.shutdown_calls == 0  # never initialised by us -> no shutdown


def test_pynvml_not_importable(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    r, warns = _run_sampler(duration=0.01)
    assert len(warns) == 1 and r.available is False and "not importable" in r.reason


def test_counter_delta_and_peak_memory(fake_nvml):
    fake = fake_nvml(energy=[1_000_000, 1_012_500])  # 12.5 J
    r, warns = _run_sampler()
    assert warns == []
    assert r.available and r.reason is None
    assert r.energy_method == "nvml_counter"
    assert r.energy_j == pytest.approx(12.5)
    assert r.gpu_mem_peak_bytes == max(fake.mem_returned) == 5000 * MB
    assert r.gpu_mem_start_bytes == 1000 * MB
    assert r.power_mean_w == pytest.approx(100.0)
    assert r.util_mean_pct == pytest.approx(50.0)
    assert r.samples >= 3
    assert len(r.devices) == 1 and r.devices[0].name == "Fake GPU 0"
    assert fake.shutdown_calls == 1 and fake.initialised == 0
    with pytest.raises(FrozenInstanceError):
        r.energy_j = 0.0


def _expected_power_energy(r):
    # 100 W constant, trapezoid over [first sample, last sample] ~ the window
    return 100.0 * r.wall_s


def test_counter_reset_falls_back_to_power(fake_nvml):
    fake_nvml(energy=[5_000_000, 1_000])  # went backwards
    r, warns = _run_sampler()
    assert warns == []
    assert r.energy_method == "power_x_time"
    assert r.energy_j == pytest.approx(_expected_power_energy(r), rel=0.25)
    assert r.energy_j > 0


def test_short_window_counter_unchanged_falls_back(fake_nvml):
    fake_nvml(energy=[7_000_000, 7_000_000])
    r, warns = _run_sampler(duration=0.02)
    assert warns == []
    assert r.energy_method == "power_x_time"
    assert r.energy_j == pytest.approx(_expected_power_energy(r), rel=0.5)


def test_energy_counter_not_supported_falls_back_without_warning(fake_nvml):
    fake_nvml(energy_error="NVMLError_NotSupported")
    r, warns = _run_sampler()
    assert warns == []  # NotSupported is a capability, not a failure
    assert r.energy_method == "power_x_time" and r.energy_j > 0
    assert any("Not Supported" in e for e in r.errors)


def test_sampling_error_mid_run_carries_on(fake_nvml):
    fake = fake_nvml(energy=[0, 3_000], power_fail_on_call=3)
    r, warns = _run_sampler()
    assert len(warns) == 1
    assert "nvmlDeviceGetPowerUsage" in str(warns[0].message)
    assert r.available is True
    assert r.energy_method == "nvml_counter" and r.energy_j == pytest.approx(3.0)
    assert r.power_mean_w == pytest.approx(100.0)  # from the samples that worked
    assert r.gpu_mem_peak_bytes == max(fake.mem_returned)
    assert any("Unknown" in e for e in r.errors)
    assert fake.power_calls > 3  # kept sampling after the failure


def test_neither_energy_method_gives_none(fake_nvml):
    fake = fake_nvml(energy_error="NVMLError_NotSupported")
    fake.mod.nvmlDeviceGetPowerUsage = lambda h: (_ for _ in ()).throw(
        fake.mod.NVMLError_NotSupported())
    r, warns = _run_sampler(duration=0.03)
    assert r.available and r.energy_j is None and r.energy_method is None
    assert r.power_mean_w is None and r.gpu_mem_peak_bytes is not None


def test_multi_device_totals_and_visible_devices(fake_nvml, monkeypatch):
    fake = fake_nvml(n_devices=4, energy=[1_000, 2_000])  # each device: 1 J
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")
    r, warns = _run_sampler(duration=0.05)
    assert warns == []
    assert [d.index for d in r.devices] == [1, 3]
    assert r.energy_j == pytest.approx(2.0) and r.energy_method == "nvml_counter"
    assert r.power_mean_w == pytest.approx(200.0)
    assert r.gpu_mem_peak_bytes == sum(d.gpu_mem_peak_bytes for d in r.devices)
    assert fake.initialised == 0


def test_visible_device_parsing_and_interval_clamp():
    assert visible_device_indices(4, {}) == [0, 1, 2, 3]
    assert visible_device_indices(4, {"CUDA_VISIBLE_DEVICES": "2, 0"}) == [2, 0]
    assert visible_device_indices(4, {"CUDA_VISIBLE_DEVICES": "1,-1,2"}) == [1]
    assert visible_device_indices(4, {"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_device_indices(2, {"CUDA_VISIBLE_DEVICES": "GPU-abc"}) == [0, 1]
    assert visible_device_indices(2, {"CUDA_VISIBLE_DEVICES": "0,7"}) == [0]
    assert clamp_interval(0.0001) == 0.01
    assert clamp_interval(5) == 1.0
    assert clamp_interval(float("nan")) == 0.05
    assert _integrate_power([(0.0, 1000.0), (1.0, 3000.0)]) == pytest.approx(2.0)
    assert _integrate_power([(0.0, 1000.0)]) is None


def test_no_visible_devices_is_unavailable(fake_nvml, monkeypatch):
    fake = fake_nvml(n_devices=2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    r, warns = _run_sampler(duration=0.01)
    assert len(warns) == 1 and r.available is False
    assert fake.initialised == 0  # we shut down what we initialised


# --------------------------------------------------------------------------------------
# ProcessTreeSampler
# --------------------------------------------------------------------------------------
_ALLOC_CHILD = textwrap.dedent(
    """
    import sys, time
    buf = b"\\x01" * (100 * 1024 * 1024)  # touched, so it is resident
    print("ready", flush=True)
    time.sleep(30)
    """
)


def test_process_tree_peak_includes_child():
    import psutil

    own_rss = psutil.Process().memory_info().rss
    with ProcessTreeSampler(interval_s=0.02) as s:
        child = subprocess.Popen([sys.executable, "-c", _ALLOC_CHILD], stdout=subprocess.PIPE,
                                 text=True)
        try:
            assert child.stdout.readline().strip() == "ready"
            time.sleep(0.15)
        finally:
            child.kill()
            child.wait()
    r = s.reading
    assert r.memory_source == "process_tree_rss"
    assert r.rss_peak_bytes - own_rss >= 50 * MB
    assert r.cpu_s is not None and r.cpu_s >= 0
    assert r.n_processes_max >= 2
    assert r.samples >= 3
    assert r.rss_start_bytes is not None and r.wall_s > 0


_BURN_CHILD = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"


@pytest.mark.parametrize("interval_s", [0.02, 1.0])
def test_process_tree_counts_reaped_child_cpu(interval_s):
    # interval 1.0: the child starts and is reaped between the enter and exit samples and is
    # never seen; its time must still arrive through this process's children_* counters.
    with ProcessTreeSampler(interval_s=interval_s) as s:
        subprocess.run([sys.executable, "-c", _BURN_CHILD], check=True)
    assert s.reading.cpu_s >= 0.25
    assert s.reading.cpu_s < s.reading.wall_s * os.cpu_count() + 0.1


# --------------------------------------------------------------------------------------
# torch + ResourceMeter with the real pynvml
# --------------------------------------------------------------------------------------
def test_torch_peak_memory():
    """None without an initialised CUDA context (this CPU machine); the real peak with one."""
    import torch

    live = torch.cuda.is_available() and torch.cuda.is_initialized()
    with torch_peak_memory() as t:
        if live:
            x = torch.empty(1 << 20, dtype=torch.float32, device="cuda")
            del x
    if live:
        assert t.reading.peak_allocated_bytes >= 4 << 20
    else:
        assert t.reading == TorchMemReading(None, None)


def test_resource_meter_real_pynvml_no_gpu():
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("a GPU/NVML is present; this test covers the no-GPU path")
    torch_was_imported = "torch" in sys.modules
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ResourceMeter(interval_s=0.02) as m:
            sum(i * i for i in range(200_000))
            time.sleep(0.05)
    runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(runtime) == 1 and "NVML" in str(runtime[0].message)
    assert runtime[0].filename == __file__  # points at the caller, not metering internals
    r = m.reading
    assert isinstance(r, MeterReading)
    assert r.wall_s >= 0.05 and r.cpu_s is not None and r.cpu_s >= 0
    assert r.rss_peak_bytes > 0 and r.memory_source == "process_tree_rss"
    assert r.nvml_available is False and r.nvml_reason
    for f in ("gpu_mem_peak_bytes", "gpu_mem_source", "energy_j", "energy_method",
              "power_mean_w", "gpu_util_mean_pct", "gpu_s", "torch_peak_allocated_bytes",
              "torch_peak_reserved_bytes"):
        assert getattr(r, f) is None, f
    d = r.as_dict()
    assert set(d) == {
        "wall_s", "cpu_s", "rss_peak_bytes", "memory_source", "gpu_mem_peak_bytes",
        "gpu_mem_source", "energy_j", "energy_method", "power_mean_w", "gpu_util_mean_pct",
        "gpu_s", "torch_peak_allocated_bytes", "torch_peak_reserved_bytes", "nvml_available",
        "nvml_reason", "foreign_cpu_share", "harness_cpu_s", "engine_cpu_s",
    }
    assert d["foreign_cpu_share"] is None or 0.0 <= d["foreign_cpu_share"] <= 1.0
    assert ("torch" in sys.modules) == torch_was_imported  # the meter never imports torch


def test_resource_meter_with_fake_gpu_and_exception_in_block(fake_nvml):
    fake_nvml(n_devices=2, energy=[0, 500])
    with pytest.raises(ValueError):
        with ResourceMeter(interval_s=0.01) as m:
            time.sleep(0.03)
            raise ValueError("boom")
    r = m.reading
    assert r.nvml_available and r.nvml_reason is None
    assert r.gpu_mem_source == "nvml" and r.gpu_mem_peak_bytes > 0
    assert r.energy_method == "nvml_counter" and r.energy_j == pytest.approx(1.0)
    assert r.gpu_s == pytest.approx(2 * r.wall_s)
    assert r.gpu_util_mean_pct == pytest.approx(50.0)


def test_no_sampler_threads_left_behind(fake_nvml):
    import threading

    fake_nvml()
    with ResourceMeter(interval_s=0.01):
        time.sleep(0.02)
    names = [t.name for t in threading.enumerate()]
    # the meter's own samplers (other costtax threads, e.g. an engine's batching worker, belong
    # to whoever started them)
    assert not any(n in ("costtax-proc-sampler", "costtax-nvml-sampler") for n in names)


def test_metering_import_does_not_import_torch():
    code = "import sys, costtax.metering; print('torch' in sys.modules)"
    repo = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo)
    assert out.stdout.strip() == "False"
