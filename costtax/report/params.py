"""Columns that describe the run rather than measure it: provenance (model, device, versions,
git commit, from run.json) and one `param_<name>` column per declared technique parameter."""
from __future__ import annotations

from .columns import PARAM_PREFIX, param_columns

PROVENANCE_COLUMNS = {  # summary column -> (run.json section, key)
    "model": ("cfg", "model"),
    "dtype": ("eng", "dtype"),
    "seed": ("cfg", "seed"),
    "temperature": ("cfg", "temperature"),
    "top_p": ("cfg", "top_p"),
    "max_tokens": ("cfg", "max_tokens"),
    "prefix_caching": ("eng", "prefix_caching"),
    "torch_version": ("vers", "torch"),
    "vllm_version": ("vers", "vllm"),
    "transformers_version": ("vers", "transformers"),
    "triton_version": ("vers", "triton"),
}


def add_provenance(df, meta):
    prov = meta.get("provenance", {})
    eng = meta.get("engine", {})
    vers = prov.get("versions", {})
    cfg = meta.get("config", {})
    sources = {"cfg": cfg, "eng": eng, "vers": vers}
    df["device"] = prov.get("machine", {}).get("device")
    df["engine"] = eng.get("engine", cfg.get("engine"))
    for col, (src, key) in PROVENANCE_COLUMNS.items():
        df[col] = sources[src].get(key)
    df["git_commit"] = prov.get("git_commit")
    df["reward_model"] = (meta.get("reward_model") or {}).get("spec")
    return df


def add_params(df, cells):
    """`param_<name>` per declared technique parameter: the cell's value (its declared default when
    the record lacks it), empty for cells whose technique does not take that parameter."""
    from ..techniques import REGISTRY

    recorded = {r["cell"]: (r.get("params") or {}) for _, r in cells.iterrows()}
    for col in param_columns():
        name = col.name[len(PARAM_PREFIX):]
        values = []
        for cell, tech in zip(df["cell"], df["technique"]):
            declared = {p.name: p for p in getattr(REGISTRY.get(tech), "params", ())}
            if name not in declared:
                values.append(None)
            else:
                values.append(recorded.get(cell, {}).get(name, declared[name].default))
        df[col.name] = values
    return df


