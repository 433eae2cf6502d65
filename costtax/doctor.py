"""`costtax doctor`: what is installed, what each missing piece disables. Never imports vllm
(that costs seconds and may fail loudly); checks distributions and light imports only."""
from __future__ import annotations

import importlib.util
import os
import sys

from . import provenance
from .console.display import NO_GPU_NOTE


def _has(mod: str) -> bool:
    try:
        return importlib.util.find_spec(mod) is not None
    except (ImportError, ValueError):
        return False


def run_doctor(stop_leftovers: bool = False) -> list[str]:
    v = provenance.versions()
    lines = [f"python        {sys.version.split()[0]} ({sys.executable})"]
    checks = [
        ("torch", v["torch"], "engines, reward models and kernels"),
        ("transformers", v["transformers"], "the hf engine, reward models and the embedded-model conversion"),
        ("vllm", v["vllm"], "the vllm engine (use --engine hf)"),
        ("triton", v["triton"], "Triton kernels (torch reference paths are used instead)"),
        ("nvidia-ml-py", v["nvidia-ml-py"], "GPU memory/energy sampling"),
    ]
    for name, ver, disables in checks:
        lines.append(f"{name:<13} {ver or 'MISSING':<12}" + ("" if ver else f" -> disables {disables}"))
    if _has("gguf"):
        lines.append("gguf          ok")
    else:
        lines.append("gguf          MISSING      -> disables converting the embedded GGUF model")
    from .model_files import list_models

    for m in list_models():
        state = "converted" if m["converted"] else ("installed, converts on first use" if m["installed"] else "NOT INSTALLED")
        lines.append(f"model         {m['alias']}: {state}")
    gpus = provenance.gpu_names()
    lines.append("nvml          " + (f"{len(gpus)} GPU(s): {', '.join(gpus)}" if gpus else f"unavailable -> {NO_GPU_NOTE}"))
    cuda = None
    if v["torch"]:
        try:
            import torch

            cuda = torch.cuda.is_available()
            lines.append(f"cuda          {'available: ' + torch.cuda.get_device_name(0) if cuda else 'not available'}")
        except Exception as exc:  # broken torch install
            lines.append(f"cuda          torch import failed: {exc}")
    interp = os.environ.get("TRITON_INTERPRET") == "1"
    if cuda:
        path = "triton (compiled)"
    elif interp and v["triton"]:
        path = "triton interpreter (TRITON_INTERPRET=1; slow, for tests)"
    else:
        path = "torch reference (no CUDA; kernels fall back)"
    lines.append(f"kernels       {path}")
    lines.append(f"cpu           {provenance.cpu_name()} x{os.cpu_count()} flags: {' '.join(provenance.cpu_flags())}")
    if not cuda and "avx512_bf16" not in provenance.cpu_flags() and "amx_bf16" not in provenance.cpu_flags():
        lines.append("              no bf16 units: engines run float32 on this CPU")
    lines.append(f"cache         {__import__('costtax.model_files', fromlist=['cache_root']).cache_root()}")
    from .metering.contention import our_cpus, sample_now
    from .report.table import CONTENTION_WARN_SHARE

    share = sample_now(1.0)
    if share is None:
        lines.append("neighbours    unknown (no /proc/stat): foreign_cpu_share columns stay empty")
    else:
        verdict = "busy: timings measured now would be inflated" if share > CONTENTION_WARN_SHARE else "quiet enough to measure"
        lines.append(f"neighbours    other processes use {share:.0%} of this process's {len(our_cpus())} CPUs (1 s sample): {verdict}")
    lines.append(noise_line(provenance.machine(), v.get("costtax")))
    return lines + leftover_lines(stop=stop_leftovers)


def noise_line(machine, version) -> str:
    """Which A/A band `costtax compare` and the capacity search will use on this machine
    (costtax/load/drift.py): its own calibration, else the shipped reference prior."""
    from .load.drift import load_calibration, load_prior

    cal = load_calibration(machine, version)
    if cal:
        return f"noise         A/A calibration of this machine: {cal['path']} (p95 ±{cal['bands'].get('latency_p95_s', float('nan')):.0%})"
    prior = load_prior()
    if prior:
        return (f"noise         no A/A calibration: compare uses the reference machine's ({prior['path']}, "
                f"p95 ±{prior['bands'].get('latency_p95_s', float('nan')):.0%}); record this one: costtax compare A A2 --record-noise")
    return "noise         no A/A calibration and no prior: compare judges single runs on block CIs and limits"


def leftover_lines(stop: bool = False) -> list[str]:
    """Servers `--serve` started whose costtax is gone (engines/server_record.py finds them by
    the owner tag in their environment: processes of this user only). Reported; with `stop`,
    stopped (SIGTERM to the group, SIGKILL after 20 s)."""
    from .engines.server_record import find_leftovers, stop_found

    try:
        found = find_leftovers()
    except OSError as exc:  # no /proc
        return [f"servers       cannot look for leftover servers ({exc})"]
    if not found:
        return ["servers       no leftover server of a costtax that is gone"]
    lines = []
    for g in found:
        what = f"process group {g['pgid']} ({len(g['pids'])} processes, {g['rss_mb']:.0f} MB RSS, run {g['run_dir']})"
        if stop:
            lines.append(f"servers       leftover {what}: {stop_found(g)}")
        else:
            lines.append(f"servers       leftover {what}: stop it with `costtax doctor --stop-leftovers`")
    return lines
