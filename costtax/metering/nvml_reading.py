"""NVML readings: the immutable records an NvmlSampler (nvml.py) produces, the per-device
sample store it fills, and the arithmetic from samples to a reading (peaks, energy, means,
totals over devices). No NVML calls here.

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

from dataclasses import dataclass
from typing import Any, Optional, Sequence

METHOD_COUNTER = "nvml_counter"
METHOD_POWER = "power_x_time"


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


class DeviceSamples:
    """What the sampler collected for one device (filled by its thread; read once at the end)."""

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


def device_reading(st: DeviceSamples) -> NvmlDeviceReading:
    """One device's reading from its samples: peak memory, energy (counter, else power x time), means."""
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
        energy_j = integrate_power(power_pts)
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


def integrate_power(points: Sequence[tuple]) -> Optional[float]:
    """Trapezoidal integral of ``(t_seconds, power_mW)`` points, in joules."""
    if len(points) < 2:
        return None
    total_mj = 0.0
    for (t0, p0), (t1, p1) in zip(points, points[1:]):
        total_mj += 0.5 * (p0 + p1) * (t1 - t0)
    if points[-1][0] <= points[0][0]:
        return None
    return total_mj / 1000.0


def aggregate(devices: tuple, wall: Optional[float], errors: tuple) -> NvmlReading:
    """The reading over all devices (totals, the weakest energy method, mean utilisation)."""
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
