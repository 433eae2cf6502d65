"""vLLM's Prometheus `/metrics` page read into costtax's server counters (prefix-cache queries
and hits, tokens, preemptions, queue time, KV-cache usage, requests running/waiting). The text
format is parsed here: no Prometheus client dependency."""
from __future__ import annotations

from typing import Any

# vLLM Prometheus metric -> counters() key. Counters are exposed with a `_total` suffix.
_COUNTERS = {
    "vllm:prefix_cache_queries_total": "prefix_cache_queries",
    "vllm:prefix_cache_hits_total": "prefix_cache_hits",
    "vllm:prompt_tokens_total": "prompt_tokens",
    "vllm:generation_tokens_total": "generation_tokens",
    "vllm:num_preemptions_total": "num_preemptions",
    "vllm:request_success_total": "requests_finished",
    "vllm:request_queue_time_seconds_sum": "request_queue_time_s_sum",
    "vllm:request_queue_time_seconds_count": "request_queue_time_count",
}
_GAUGES = {
    "vllm:kv_cache_usage_perc": "kv_cache_usage",
    "vllm:num_requests_waiting": "num_requests_waiting",
    "vllm:num_requests_running": "num_requests_running",
}


def parse_prometheus_text(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text exposition format -> {sample name: [(labels, value), ...]}.

    Enough of the format for vLLM's exporter: comments, optional labels (quoted values with
    escapes), an optional timestamp after the value; malformed lines are skipped."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        labels: dict[str, str] = {}
        if "{" in line:
            name, rest = line.split("{", 1)
            i, key, buf = 0, None, ""
            # label block: k="v",k2="v2"} value
            while i < len(rest) and rest[i] != "}":
                j = rest.find("=", i)
                if j < 0:
                    break
                key = rest[i:j].strip().lstrip(",").strip()
                if j + 1 >= len(rest) or rest[j + 1] != '"':
                    break
                k, buf = j + 2, ""
                while k < len(rest) and rest[k] != '"':
                    if rest[k] == "\\" and k + 1 < len(rest):
                        buf += {"n": "\n", "\\": "\\", '"': '"'}.get(rest[k + 1], rest[k + 1])
                        k += 2
                    else:
                        buf += rest[k]
                        k += 1
                labels[key] = buf
                i = k + 1
                while i < len(rest) and rest[i] in ", ":
                    i += 1
            if i >= len(rest) or rest[i] != "}":
                continue
            value_part = rest[i + 1 :].split()
        else:
            parts = line.split()
            name, value_part = parts[0], parts[1:]
        if not value_part:
            continue
        try:
            value = float(value_part[0])
        except ValueError:
            continue
        out.setdefault(name.strip(), []).append((labels, value))
    return out


def counters_from_metrics(text: str) -> dict[str, Any]:
    """The counters() dict from a vLLM `/metrics` page: counters summed over label sets (one per
    engine under data parallelism), request gauges summed, KV-cache usage the max over engines."""
    fam = parse_prometheus_text(text)
    out: dict[str, Any] = {}
    for metric, key in _COUNTERS.items():
        if metric in fam:
            out[key] = sum(v for _, v in fam[metric])
    for metric, key in _GAUGES.items():
        if metric in fam:
            vals = [v for _, v in fam[metric]]
            out[key] = max(vals) if key == "kv_cache_usage" else sum(vals)
    for key in ("prefix_cache_queries", "prefix_cache_hits", "prompt_tokens", "generation_tokens",
                "num_preemptions", "requests_finished", "request_queue_time_count",
                "num_requests_waiting", "num_requests_running"):
        if key in out:
            out[key] = int(out[key])
    return out
