"""Resource metering: wall/CPU time, process-tree RSS, NVML GPU memory/power/energy, torch peaks.

All samplers are context managers that never raise; missing NVML or torch yields ``None``
fields (with one ``RuntimeWarning`` for NVML).  Nothing here imports torch at import time.
"""

from .meter import MeterReading, ResourceMeter
from .nvml import NvmlSampler
from .nvml_reading import NvmlDeviceReading, NvmlReading
from .process import ProcessReading, ProcessTreeSampler
from .torch_mem import TorchMemReading, TorchPeakMemory, torch_peak_memory

__all__ = [
    "MeterReading",
    "NvmlDeviceReading",
    "NvmlReading",
    "NvmlSampler",
    "ProcessReading",
    "ProcessTreeSampler",
    "ResourceMeter",
    "TorchMemReading",
    "TorchPeakMemory",
    "torch_peak_memory",
]
