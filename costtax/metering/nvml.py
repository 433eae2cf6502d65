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

What the numbers mean, and the arithmetic from samples to a reading: nvml_reading.py.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
import warnings
from typing import Any, Optional, Sequence

from .nvml_reading import DeviceSamples, NvmlReading, aggregate, device_reading

DEFAULT_INTERVAL_S = 0.05
MIN_INTERVAL_S = 0.01
MAX_INTERVAL_S = 1.0


def clamp_interval(interval_s: Any) -> float:
    """Clamp a sampling interval to ``[0.01, 1.0]`` seconds; non-numbers/NaN give the default."""
    try:
        value = float(interval_s)
    except (TypeError, ValueError):
        return DEFAULT_INTERVAL_S
    if math.isnan(value):
        return DEFAULT_INTERVAL_S
    return min(MAX_INTERVAL_S, max(MIN_INTERVAL_S, value))


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
        self._states: list[DeviceSamples] = []
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

    def _call(self, what: str, state: DeviceSamples, fn_name: str):
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

    def _read_energy(self, st: DeviceSamples) -> Optional[int]:
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
            states.append(DeviceSamples(i, handle, name))
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

        devices = tuple(device_reading(st) for st in self._states)
        errors = tuple(self._errors) + tuple(self._notes)
        if self._errors:
            more = f" (+{len(self._errors) - 1} more)" if len(self._errors) > 1 else ""
            self._warn(f"NVML sampling errors, continuing with the samples that succeeded: "
                       f"{self._errors[0]}{more}")
        return aggregate(devices, wall, errors)
