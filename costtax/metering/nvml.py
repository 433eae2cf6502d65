"""GPU memory / power / energy sampling through NVML (package ``nvidia-ml-py``, import ``pynvml``).

``NvmlSampler`` is a context manager.  On enter it initialises NVML, resolves the device
indices to sample, takes one synchronous sample, reads the total-energy counter and starts a
daemon thread that samples every ``interval_s``.  On exit it stops the thread, takes a final
synchronous sample, reads the energy counter again and stores an immutable
:class:`NvmlReading` on ``sampler.reading``.

Never raises.  If ``pynvml`` is missing, ``nvmlInit`` fails, or device discovery fails, ONE
``RuntimeWarning`` naming the reason is emitted on enter and the reading has every numeric
field ``None``, ``available=False`` and ``reason`` set.  If individual NVML calls fail during
the window (other than ``NVMLError_NotSupported``, which is a capability, not a failure), the
sampler carries on with the samples that did succeed and emits ONE ``RuntimeWarning`` on exit
summarising the failures; they are also listed in ``reading.errors``.

What the numbers mean (and do not mean):

* ``gpu_mem_*`` is ``nvmlDeviceGetMemoryInfo(handle).used``: device-wide memory in use by
  *every* process (and the driver/context reservations), not just this process tree.  The peak
  is the maximum over samples, so allocations that live shorter than ``interval_s`` can be
  missed.  The total is the sum of per-device peaks (an upper bound on simultaneous use).
* ``energy_j`` with ``energy_method="nvml_counter"`` is the delta of
  ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since driver load, Volta+).  If the counter is
  unsupported, did not advance (window shorter than its update period) or went backwards
  (reset / wrap), it falls back to trapezoidal integration of the sampled
  ``nvmlDeviceGetPowerUsage`` (mW) over time, ``energy_method="power_x_time"``; note that on
  many GPUs that power value is itself a ~1 s moving average.  ``None`` when neither works.
  The total's method is the weakest method used by any device (``power_x_time`` if any device
  fell back), and the total energy is ``None`` if any device's energy is ``None``.
* ``power_mean_w`` is the arithmetic mean of the power samples; the total is the sum over
  devices.  ``util_mean_pct`` is the mean of ``nvmlDeviceGetUtilizationRates().gpu``; the total
  is the mean over devices.
* Device indices are NVML indices.  By default all devices are sampled, or the integer entries
  of ``CUDA_VISIBLE_DEVICES`` (up to the first negative entry, as CUDA does; an empty value
  means no devices).  NVML enumerates in PCI bus order, so this mapping is only exact with
  ``CUDA_DEVICE_ORDER=PCI_BUS_ID``.  Non-integer entries (UUIDs, MIG ids) fall back to all
  devices.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any, Optional, Sequence

DEFAULT_INTERVAL_S = 0.05
MIN_INTERVAL_S = 0.01
MAX_INTERVAL_S = 1.0

METHOD_COUNTER = "nvml_counter"
METHOD_POWER = "power_x_time"


def clamp_interval(interval_s: Any) -> float:
    """Clamp a sampling interval to ``[0.01, 1.0]`` seconds; non-numbers/NaN give the default."""
    try:
        value = float(interval_s)
    except (TypeError, ValueError):
        return DEFAULT_INTERVAL_S
    if math.isnan(value):
        return DEFAULT_INTERVAL_S
    return min(MAX_INTERVAL_S, max(MIN_INTERVAL_S, value))


@dataclass(frozen=True)
class NvmlDeviceReading:
    index: int
    name: Optional[str]
    gpu_mem_peak_bytes: Optional[int]
    gpu_mem_start_bytes: Optional[int]
    energy_j: Optional[float]
    energy_method: Optional[str]
    power_mean_w: Optional[float]
    util_mean_pct: Optional[float]
    samples: int


@dataclass(frozen=True)
class NvmlReading:
    available: bool
    reason: Optional[str]
    devices: tuple  # tuple[NvmlDeviceReading, ...]
    gpu_mem_peak_bytes: Optional[int]
    gpu_mem_start_bytes: Optional[int]
    energy_j: Optional[float]
    energy_method: Optional[str]
    power_mean_w: Optional[float]
    util_mean_pct: Optional[float]
    samples: int  # sampling ticks with at least one successful read (max over devices)
    wall_s: Optional[float]
    errors: tuple = ()  # tuple[str, ...], de-duplicated, first occurrence order

    @property
    def n_devices(self) -> int:
        return len(self.devices)

    @classmethod
    def unavailable(cls, reason: str, wall_s: Optional[float] = None) -> "NvmlReading":
        return cls(
            available=False,
            reason=reason,
            devices=(),
            gpu_mem_peak_bytes=None,
            gpu_mem_start_bytes=None,
            energy_j=None,
            energy_method=None,
            power_mean_w=None,
            util_mean_pct=None,
            samples=0,
            wall_s=wall_s,
        )


_PKG_DIR = os.path.dirname(os.path.abspath(__file__))


def _caller_stacklevel() -> int:
    """stacklevel for warnings.warn that points at the first frame outside this package."""
    level = 1
    try:
        frame = sys._getframe(1)
        while frame is not None and os.path.dirname(
                os.path.abspath(frame.f_code.co_filename)) == _PKG_DIR:
            frame = frame.f_back
            level += 1
    except Exception:  # noqa: BLE001
        return 2
    return level


def _describe(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # pynvml's __str__ may itself call into NVML
        text = ""
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def visible_device_indices(count: int, env: Optional[dict] = None) -> list[int]:
    """NVML indices to sample by default, honouring integer ``CUDA_VISIBLE_DEVICES``."""
    env = os.environ if env is None else env
    raw = env.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return list(range(count))
    raw = raw.strip()
    if raw == "":
        return []
    parts = [p.strip() for p in raw.split(",")]
    try:
        ints = [int(p) for p in parts]
    except ValueError:
        return list(range(count))  # UUIDs / MIG identifiers: not resolved here
    out: list[int] = []
    for i in ints:
        if i < 0:
            break  # CUDA ignores everything from the first invalid entry on
        if i < count and i not in out:
            out.append(i)
    return out


class _DeviceState:
    __slots__ = ("index", "handle", "name", "t", "mem", "power_mw", "util",
                 "energy_start_mj", "energy_end_mj", "samples")

    def __init__(self, index: int, handle: Any, name: Optional[str]):
        self.index = index
        self.handle = handle
        self.name = name
        self.t: list[float] = []
        self.mem: list[Optional[int]] = []
        self.power_mw: list[Optional[float]] = []
        self.util: list[Optional[float]] = []
        self.energy_start_mj: Optional[int] = None
        self.energy_end_mj: Optional[int] = None
        self.samples = 0


class NvmlSampler:
    """Sample GPU memory, power and utilisation via NVML in a background thread.

    Usage::

        with NvmlSampler() as s:
            run_workload()
        s.reading  # NvmlReading
    """

    def __init__(self, devices: Optional[Sequence[int]] = None,
                 interval_s: float = DEFAULT_INTERVAL_S):
        self.devices = None if devices is None else [int(d) for d in devices]
        self.interval_s = clamp_interval(interval_s)
        self.reading: Optional[NvmlReading] = None
        self._nvml: Any = None
        self._inited = False
        self._states: list[_DeviceState] = []
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._errors: list[str] = []  # failures that warrant a warning
        self._notes: list[str] = []   # NotSupported etc.: recorded, not warned
        self._lock = threading.Lock()
        self._warned = False
        self._fail_reason: Optional[str] = None
        self._t0: Optional[float] = None

    # -- helpers -------------------------------------------------------------------------
    def _warn(self, message: str) -> None:
        if self._warned:
            return
        self._warned = True
        warnings.warn(message, RuntimeWarning, stacklevel=_caller_stacklevel())

    def _is_not_supported(self, exc: BaseException) -> bool:
        cls = getattr(self._nvml, "NVMLError_NotSupported", None)
        return isinstance(cls, type) and isinstance(exc, cls)

    def _record(self, what: str, index: int, exc: BaseException) -> None:
        msg = f"device {index}: {what}: {_describe(exc)}"
        with self._lock:
            target = self._notes if self._is_not_supported(exc) else self._errors
            if msg not in target:
                target.append(msg)

    def _call(self, what: str, state: _DeviceState, fn_name: str):
        try:
            fn = getattr(self._nvml, fn_name)
            return fn(state.handle)
        except Exception as exc:  # noqa: BLE001 - never raise from the sampler
            self._record(what, state.index, exc)
            return None

    def _sample_once(self) -> None:
        now = time.perf_counter()
        for st in self._states:
            mem_info = self._call("nvmlDeviceGetMemoryInfo", st, "nvmlDeviceGetMemoryInfo")
            mem = getattr(mem_info, "used", None) if mem_info is not None else None
            power = self._call("nvmlDeviceGetPowerUsage", st, "nvmlDeviceGetPowerUsage")
            util_info = self._call("nvmlDeviceGetUtilizationRates", st,
                                   "nvmlDeviceGetUtilizationRates")
            util = getattr(util_info, "gpu", None) if util_info is not None else None
            st.t.append(now)
            st.mem.append(int(mem) if mem is not None else None)
            st.power_mw.append(float(power) if power is not None else None)
            st.util.append(float(util) if util is not None else None)
            if mem is not None or power is not None or util is not None:
                st.samples += 1

    def _read_energy(self, st: _DeviceState) -> Optional[int]:
        value = self._call("nvmlDeviceGetTotalEnergyConsumption", st,
                           "nvmlDeviceGetTotalEnergyConsumption")
        return int(value) if value is not None else None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._sample_once()
            except Exception as exc:  # noqa: BLE001
                with self._lock:
                    self._errors.append(f"sampling thread: {_describe(exc)}")

    # -- context manager -----------------------------------------------------------------
    def __enter__(self) -> "NvmlSampler":
        self.reading = None
        self._states = []
        self._errors = []
        self._notes = []
        self._warned = False
        self._fail_reason = None
        self._inited = False
        self._stop = threading.Event()
        self._thread = None
        self._t0 = time.perf_counter()
        try:
            self._setup()
        except Exception as exc:  # noqa: BLE001
            self._fail(f"NVML setup failed: {_describe(exc)}")
        return self

    def _fail(self, reason: str) -> None:
        self._fail_reason = reason
        self._states = []
        self._shutdown()
        self._warn(f"NVML unavailable ({reason}); GPU memory/energy fields will be None")

    def _setup(self) -> None:
        try:
            import pynvml  # noqa: WPS433 - optional, imported lazily
        except Exception as exc:  # noqa: BLE001
            self._fail(f"pynvml not importable: {_describe(exc)}")
            return
        self._nvml = pynvml
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # noqa: BLE001
            self._fail(f"nvmlInit failed: {_describe(exc)}")
            return
        self._inited = True
        try:
            count = int(pynvml.nvmlDeviceGetCount())
        except Exception as exc:  # noqa: BLE001
            self._fail(f"nvmlDeviceGetCount failed: {_describe(exc)}")
            return
        if self.devices is None:
            indices = visible_device_indices(count)
        else:
            indices = []
            for i in self.devices:
                if i not in indices:
                    indices.append(i)
        if not indices:
            self._fail(f"no NVML devices to sample ({count} present)")
            return
        states = []
        for i in indices:
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            except Exception as exc:  # noqa: BLE001
                self._fail(f"nvmlDeviceGetHandleByIndex({i}) failed: {_describe(exc)}")
                return
            name = None
            try:
                raw = pynvml.nvmlDeviceGetName(handle)
                name = raw.decode() if isinstance(raw, bytes) else str(raw)
            except Exception:  # noqa: BLE001 - cosmetic only
                name = None
            states.append(_DeviceState(i, handle, name))
        self._states = states
        for st in states:
            st.energy_start_mj = self._read_energy(st)
        self._sample_once()
        self._thread = threading.Thread(target=self._run, name="costtax-nvml-sampler",
                                        daemon=True)
        self._thread.start()

    def _shutdown(self) -> None:
        if self._inited and self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001
                pass
        self._inited = False

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            self.reading = self._finish()
        except Exception as err:  # noqa: BLE001 - last resort
            self._warn(f"NVML sampler failed on exit ({_describe(err)}); GPU fields are None")
            self.reading = NvmlReading.unavailable(f"exit failed: {_describe(err)}")
            self._shutdown()
        return False

    def _finish(self) -> NvmlReading:
        t_end = time.perf_counter()
        wall = t_end - self._t0 if self._t0 is not None else None
        if self._fail_reason is not None or not self._states:
            return NvmlReading.unavailable(self._fail_reason or "not entered", wall)
        self._stop.set()
        thread_alive = False
        if self._thread is not None:
            self._thread.join(timeout=max(2.0, 4 * self.interval_s))
            thread_alive = self._thread.is_alive()
        if thread_alive:
            self._errors.append("sampling thread did not stop (NVML call hung?)")
        else:
            self._sample_once()
        for st in self._states:
            st.energy_end_mj = self._read_energy(st)
        if not thread_alive:
            self._shutdown()  # otherwise leave NVML up rather than pull it from under a call

        devices = tuple(self._device_reading(st) for st in self._states)
        errors = tuple(self._errors) + tuple(self._notes)
        if self._errors:
            more = f" (+{len(self._errors) - 1} more)" if len(self._errors) > 1 else ""
            self._warn(f"NVML sampling errors, continuing with the samples that succeeded: "
                       f"{self._errors[0]}{more}")
        return _aggregate(devices, wall, errors)

    def _device_reading(self, st: _DeviceState) -> NvmlDeviceReading:
        mems = [m for m in st.mem if m is not None]
        utils = [u for u in st.util if u is not None]
        power_pts = [(t, p) for t, p in zip(st.t, st.power_mw) if p is not None]
        energy_j: Optional[float] = None
        method: Optional[str] = None
        e0, e1 = st.energy_start_mj, st.energy_end_mj
        if e0 is not None and e1 is not None and e1 > e0:
            energy_j = (e1 - e0) / 1000.0
            method = METHOD_COUNTER
        else:
            energy_j = _integrate_power(power_pts)
            method = METHOD_POWER if energy_j is not None else None
        return NvmlDeviceReading(
            index=st.index,
            name=st.name,
            gpu_mem_peak_bytes=max(mems) if mems else None,
            gpu_mem_start_bytes=st.mem[0] if st.mem and st.mem[0] is not None else None,
            energy_j=energy_j,
            energy_method=method,
            power_mean_w=(sum(p for _, p in power_pts) / len(power_pts) / 1000.0
                          if power_pts else None),
            util_mean_pct=sum(utils) / len(utils) if utils else None,
            samples=st.samples,
        )


def _integrate_power(points: Sequence[tuple]) -> Optional[float]:
    """Trapezoidal integral of ``(t_seconds, power_mW)`` points, in joules."""
    if len(points) < 2:
        return None
    total_mj = 0.0
    for (t0, p0), (t1, p1) in zip(points, points[1:]):
        total_mj += 0.5 * (p0 + p1) * (t1 - t0)
    if points[-1][0] <= points[0][0]:
        return None
    return total_mj / 1000.0


def _aggregate(devices: tuple, wall: Optional[float], errors: tuple) -> NvmlReading:
    def total_int(attr: str) -> Optional[int]:
        vals = [getattr(d, attr) for d in devices]
        return sum(vals) if vals and all(v is not None for v in vals) else None

    energies = [d.energy_j for d in devices]
    energy = sum(energies) if energies and all(e is not None for e in energies) else None
    methods = {d.energy_method for d in devices}
    if energy is None:
        method = None
    elif methods == {METHOD_COUNTER}:
        method = METHOD_COUNTER
    else:
        method = METHOD_POWER
    powers = [d.power_mean_w for d in devices]
    power = sum(powers) if powers and all(p is not None for p in powers) else None
    utils = [d.util_mean_pct for d in devices if d.util_mean_pct is not None]
    return NvmlReading(
        available=True,
        reason=None,
        devices=devices,
        gpu_mem_peak_bytes=total_int("gpu_mem_peak_bytes"),
        gpu_mem_start_bytes=total_int("gpu_mem_start_bytes"),
        energy_j=energy,
        energy_method=method,
        power_mean_w=power,
        util_mean_pct=sum(utils) / len(utils) if utils else None,
        samples=max((d.samples for d in devices), default=0),
        wall_s=wall,
        errors=errors,
    )
