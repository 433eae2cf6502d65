"""Run-to-run drift: how far identical runs on one machine move apart, as the A/A bands recorded
for this machine (`costtax compare A A2 --record-noise`) or, without one, the reference machine's
shipped with costtax (costtax/data/noise_prior.json, scripts/noise_prior.py). `costtax compare`
judges changes against these bands (costtax/compare/noise.py); the capacity search's interval
draws a common drift factor per bootstrap replicate from them (costtax/load/search_interval.py),
since re-probes inside one run share that run's conditions and cannot see it.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

PRIOR_FILE = "data/noise_prior.json"
Z975 = 1.959964


def machine_key(machine: Mapping[str, Any] | None) -> str | None:
    """A short stable name for a machine (provenance.machine(): host, CPU, cores, GPUs)."""
    if not isinstance(machine, Mapping) or not machine:
        return None
    ident = {k: machine.get(k) for k in ("hostname", "cpu", "cpu_count", "gpus")}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]


def noise_dir() -> Path:
    return Path(os.environ.get("COSTTAX_NOISE_DIR") or Path.home() / ".cache" / "costtax" / "noise").expanduser()


def calibration_path(machine: Mapping[str, Any] | None, version: str | None) -> Path | None:
    key = machine_key(machine)
    if key is None or not version:
        return None
    return noise_dir() / f"{key}-{version}.json"


def load_calibration(machine: Mapping[str, Any] | None, version: str | None) -> dict[str, Any] | None:
    """The recorded A/A calibration of this machine and costtax version, or None."""
    p = calibration_path(machine, version)
    if p is None or not p.is_file():
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("bands"), dict):
        return None
    data["path"] = str(p)
    return data


def load_prior() -> dict[str, Any] | None:
    """The A/A bands a machine without a calibration is judged by: the reference machine's, shipped
    with costtax (costtax/data/noise_prior.json); `$COSTTAX_NOISE_PRIOR` names another file of the
    same shape (a fleet's own reference A/A) or is `none` (no prior: block CIs, else the limit)."""
    from importlib import resources

    env = os.environ.get("COSTTAX_NOISE_PRIOR", "").strip()
    if env.lower() == "none":
        return None
    if env:
        from ..errors import ConfigError

        try:
            data = json.loads(Path(env).expanduser().read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError("COSTTAX_NOISE_PRIOR", env, f"unreadable ({type(exc).__name__}): name a JSON file "
                              "like costtax/data/noise_prior.json, or `none`") from None
        if not isinstance(data, dict) or not isinstance(data.get("bands"), dict):
            raise ConfigError("COSTTAX_NOISE_PRIOR", env, 'needs a "bands" object of metric: fraction, as costtax/data/noise_prior.json')
        data["path"] = env
        return data
    try:
        data = json.loads(resources.files("costtax").joinpath(PRIOR_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("bands"), dict):
        return None
    data["path"] = "costtax/" + PRIOR_FILE
    return data


def record_calibration(machine: Mapping[str, Any] | None, version: str | None, bands: Mapping[str, float],
                       sources: tuple[str, str], when: str) -> Path:
    """Write (or widen) the calibration of this machine and version; returns its path."""
    p = calibration_path(machine, version)
    if p is None:
        raise ValueError("the runs record no machine or costtax version: cannot key a calibration")
    old = load_calibration(machine, version) or {}
    merged = dict(old.get("bands") or {})
    for k, v in bands.items():
        if isinstance(v, (int, float)) and v == v and v >= 0:
            merged[k] = max(float(v), float(merged.get(k, 0.0)))
    data = {
        "machine": {k: (machine or {}).get(k) for k in ("hostname", "cpu", "cpu_count", "gpus", "device")},
        "costtax_version": version,
        "bands": merged,
        "recorded": [*(old.get("recorded") or []), {"when": when, "old": sources[0], "new": sources[1], "bands": dict(bands)}],
        "what": "largest 'worse by' per metric between identical runs, either direction (costtax/compare/noise.py)",
    }
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, p)
    return p




def drift_sd(machine: Mapping[str, Any] | None, version: str | None, metric: str = "latency_p95_s") -> tuple[float, str]:
    """(sd, source) of one run's log drift in `metric`: the A/A band (this machine's calibration,
    else the shipped prior) read as the 95% range of the difference of two runs, so
    sd = log(1 + band) / (1.96 x sqrt 2); (0.0, "none") without a band."""
    for src, data in (("calibration", load_calibration(machine, version)), ("prior", load_prior())):
        band = (data or {}).get("bands", {}).get(metric)
        if isinstance(band, (int, float)) and band == band and band > 0:
            return math.log1p(float(band)) / (Z975 * math.sqrt(2)), f"{src} ±{float(band):.1%} ({data.get('path')})"
    return 0.0, "none"
