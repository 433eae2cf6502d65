"""One context manager for wall time, CPU, RSS, GPU memory, power/energy and torch peaks.

``ResourceMeter`` nests :class:`~costtax.metering.torch_mem.TorchPeakMemory`,
:class:`~costtax.metering.nvml.NvmlSampler` and
:class:`~costtax.metering.process.ProcessTreeSampler`, and times the block with
``time.perf_counter``.  After the block ``meter.reading`` is a frozen :class:`MeterReading`
with flat fields (see each module for exactly what its numbers include)::

    with ResourceMeter() as m:
        engine.generate(prompts)
    row = m.reading.as_dict()

Field notes:

* ``wall_s``: perf_counter time of the block only (samplers start before and stop after it).
* ``cpu_s``, ``rss_peak_bytes`` (``memory_source="process_tree_rss"``): this process tree.
* ``gpu_mem_peak_bytes`` (``gpu_mem_source="nvml"``): device-wide NVML memory in use, sum of
  per-device peaks; ``None`` (and source ``None``) without NVML.
* ``energy_j`` / ``energy_method``: ``"nvml_counter"`` or ``"power_x_time"`` or ``None``.
* ``gpu_s``: deliberately simple: ``wall_s * n_devices`` sampled when NVML is available (GPU
  time *reserved*, not GPU time busy; multiply by ``gpu_util_mean_pct/100`` for a busy
  estimate), else ``None``.
* ``torch_peak_*``: this process's CUDA caching allocator only, ``None`` without CUDA torch.
* ``nvml_available`` / ``nvml_reason``: why GPU fields are ``None``.
* ``harness_cpu_s`` / ``engine_cpu_s``: this process's own CPU and its descendants', each
  from its own counter (:mod:`~costtax.metering.cpu_split`), not shares of ``cpu_s``.
* ``foreign_cpu_share``: share of this process's CPUs that *other* processes kept busy during
  the block (:mod:`~costtax.metering.contention`): the neighbour gauge on shared machines.

Sampling threads sleep with ``Event.wait`` between samples, so they hold the GIL only while
taking a sample.  The meter never raises; an exception inside the block propagates unchanged
and the reading is still recorded.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

from .nvml import DEFAULT_INTERVAL_S, NvmlSampler, clamp_interval
from .nvml_reading import NvmlReading
from .contention import ContentionGauge
from .cpu_split import CpuSplit
from .process import MEMORY_SOURCE, ProcessReading, ProcessTreeSampler
from .torch_mem import TorchMemReading, TorchPeakMemory


@dataclass(frozen=True)
class MeterReading:
    wall_s: float
    cpu_s: Optional[float]
    rss_peak_bytes: Optional[int]
    memory_source: Optional[str]
    gpu_mem_peak_bytes: Optional[int]
    gpu_mem_source: Optional[str]
    energy_j: Optional[float]
    energy_method: Optional[str]
    power_mean_w: Optional[float]
    gpu_util_mean_pct: Optional[float]
    gpu_s: Optional[float]
    torch_peak_allocated_bytes: Optional[int]
    torch_peak_reserved_bytes: Optional[int]
    nvml_available: bool
    nvml_reason: Optional[str]
    # share of our CPUs' capacity that other processes used during the block (contention.py);
    # None without /proc/stat or without a process-tree CPU reading
    foreign_cpu_share: Optional[float] = None
    # the CPU split by two independent counters (cpu_split.py): this process's own CPU time and
    # its descendants' (engine core, workers, a --serve server); None where unreadable
    harness_cpu_s: Optional[float] = None
    engine_cpu_s: Optional[float] = None

    def as_dict(self) -> dict:
        return asdict(self)


DEFAULT_PROCESS_INTERVAL_S = 0.25


class ResourceMeter:
    """Measure a block of code; result in ``.reading`` (also returned by :meth:`result`)."""

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S,
                 devices: Optional[Sequence[int]] = None,
                 process_interval_s: float = DEFAULT_PROCESS_INTERVAL_S):
        self.interval_s = clamp_interval(interval_s)
        # The process-tree walk (psutil over the main process, vLLM's engine core and workers)
        # holds the GIL for milliseconds; at 50 ms it measurably slowed vLLM's output loop on a
        # 2-core machine (bench/results/FIDELITY.md). NVML reads stay at `interval_s`.
        self.process_interval_s = clamp_interval(process_interval_s)
        self.devices = devices
        self.reading: Optional[MeterReading] = None
        self.nvml_reading: Optional[NvmlReading] = None
        self.process_reading: Optional[ProcessReading] = None
        self.torch_reading: Optional[TorchMemReading] = None
        self._torch: Optional[TorchPeakMemory] = None
        self._nvml: Optional[NvmlSampler] = None
        self._proc: Optional[ProcessTreeSampler] = None
        self._contention: Optional[ContentionGauge] = None
        self._split: Optional[CpuSplit] = None
        self._t0 = 0.0

    def __enter__(self) -> "ResourceMeter":
        self.reading = None
        self._torch = TorchPeakMemory()
        self._nvml = NvmlSampler(devices=self.devices, interval_s=self.interval_s)
        self._proc = ProcessTreeSampler(interval_s=self.process_interval_s)
        self._torch.__enter__()
        self._nvml.__enter__()
        self._proc.__enter__()
        self._contention = ContentionGauge()
        self._contention.start()
        self._split = CpuSplit()
        self._split.start()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        wall = time.perf_counter() - self._t0
        try:
            self._split.stop()
        except Exception:  # noqa: BLE001 - a diagnostic; its fields stay None
            pass
        try:
            self._contention.stop()
        except Exception:  # noqa: BLE001 - the gauge is a diagnostic; never fail the block for it
            self._contention.busy_s = None
        for part in (self._proc, self._nvml, self._torch):
            try:
                part.__exit__(exc_type, exc, tb)
            except Exception:  # noqa: BLE001 - parts never raise; belt and braces
                pass
        proc = self._proc.reading or ProcessReading(None, None, None, None, 0, 0)
        nv = self._nvml.reading or NvmlReading.unavailable("no reading")
        tm = self._torch.reading or TorchMemReading(None, None)
        self.process_reading, self.nvml_reading, self.torch_reading = proc, nv, tm
        self.reading = MeterReading(
            wall_s=wall,
            cpu_s=proc.cpu_s,
            rss_peak_bytes=proc.rss_peak_bytes,
            memory_source=MEMORY_SOURCE if proc.rss_peak_bytes is not None else None,
            gpu_mem_peak_bytes=nv.gpu_mem_peak_bytes,
            gpu_mem_source="nvml" if nv.gpu_mem_peak_bytes is not None else None,
            energy_j=nv.energy_j,
            energy_method=nv.energy_method,
            power_mean_w=nv.power_mean_w,
            gpu_util_mean_pct=nv.util_mean_pct,
            gpu_s=wall * nv.n_devices if nv.available and nv.n_devices else None,
            torch_peak_allocated_bytes=tm.peak_allocated_bytes,
            torch_peak_reserved_bytes=tm.peak_reserved_bytes,
            nvml_available=nv.available,
            nvml_reason=nv.reason,
            foreign_cpu_share=self._contention.share(proc.cpu_s, wall),
            harness_cpu_s=self._split.harness_cpu_s,
            engine_cpu_s=self._split.engine_cpu_s,
        )
        return False

    def result(self) -> Optional[MeterReading]:
        return self.reading
