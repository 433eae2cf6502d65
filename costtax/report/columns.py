"""Every summary.csv column in one table: name -> unit -> meaning.

README.md's column reference is generated from this table (`python scripts/columns_doc.py`;
test_report.py fails when the two differ), so the documentation cannot drift from the code.
To add a column: compute it in summary.py and append one `Column(...)` line to the right section
below (or call `add_column` from code that adds columns at run time). Columns are added, never
renamed or removed: scripts read summary.csv by name.

Units: s (seconds), 1/s, tokens, bytes, J (joules), W (watts), nats, fraction (0..1), x (multiple of
the plain cell's value), count, bool, text, reward (the reward model's own scale), BLEU 0-100. "per answer" means per final answer of the cell.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    name: str
    unit: str
    meaning: str


# Order: the contract columns first (always present, in this order), then the sections in the
# order summary.py adds them. A column is empty (null) where it does not apply to the cell.
_CONTRACT = [
    Column("run_id", "text", "run identifier (the run directory's name by default)"),
    Column("cell", "text", "canonical technique spec of the cell, e.g. `bon:n=4`"),
    Column("technique", "text", "technique name: plain, bon, cai"),
    Column("params", "text", "the cell's technique parameters as a JSON object (see also the `param_*` columns)"),
    Column("answers", "count", "final answers the cell produced"),
    Column("latency_p50_s", "s", "median end-to-end latency per final answer (all its calls, selection scoring included)"),
    Column("latency_p95_s", "s", "95th percentile of the latency per final answer"),
    Column("latency_p99_s", "s", "99th percentile of the latency per final answer"),
    Column("cell_wall_s", "s", "wall time of the cell's metered window (warm-up and evaluation scoring excluded)"),
    Column("answers_per_s", "1/s", "final answers per second of cell wall time (offline batch throughput)"),
    Column("output_tokens_per_s", "1/s", "generated tokens (sample, critique, revise) per second of cell wall time"),
    Column("output_tokens_per_answer", "tokens", "generated tokens per final answer, all candidates and rounds included"),
    Column("engine_start_s", "s", "engine cold start of the run, measured apart from every cell"),
]

_CELL = [
    Column("status", "text", "`ok` or `failed`"),
    Column("error", "text", "the failed cell's error (type: message)"),
    Column("is_baseline", "bool", "true for the plain cell every multiplier and delta is computed against"),
]

_COST = [
    Column("latency_mean_s", "s", "mean latency per final answer"),
    Column("latency_p50_ci95_lo_s", "s", "bootstrap 95% interval of the median latency, low end"),
    Column("latency_p50_ci95_hi_s", "s", "bootstrap 95% interval of the median latency, high end"),
    Column("resumed_answers", "count", "answers finished by an earlier session of a resumed run (outside this cell's timed window)"),
    Column("prompt_tokens_per_answer", "tokens", "prompt tokens served per answer (prompt tokens x samples per request)"),
    Column("cached_prompt_tokens_per_answer", "tokens", "prompt tokens read from the prefix cache per answer"),
    Column("prefill_tokens_computed_per_answer", "tokens", "prompt tokens actually prefilled per answer (served minus cached)"),
    Column("prefix_cache_hit_rate", "fraction", "cached / served prompt tokens of generation calls"),
    Column("calls_per_answer", "count", "model calls per answer (sample, critique, revise, score; eval excluded)"),
    Column("reward_tokens_per_answer", "tokens", "tokens the reward model read for selection scoring, per answer"),
    Column("score_latency_s_per_answer", "s", "selection-scoring time per answer"),
    Column("score_share_of_wall", "fraction", "share of the cell's wall time spent in selection scoring"),
    Column("ttft_p50_s", "s", "median time to first token of sample calls"),
    Column("ttft_source", "text", "how TTFT was measured: `engine` (per request) or `batch` (HF engine: per batch)"),
    Column("tpot_p50_s", "s", "median time per output token of sample calls: (latency - TTFT) / (tokens - 1)"),
    Column("rss_peak_bytes", "bytes", "peak resident memory of the whole process tree (vLLM's engine processes included)"),
    Column("memory_source", "text", "what rss_peak_bytes measured (`process_tree_rss`)"),
    Column("gpu_mem_peak_bytes", "bytes", "peak device-wide GPU memory in use (NVML); empty without an NVIDIA GPU"),
    Column("torch_peak_allocated_bytes", "bytes", "peak of this process's CUDA caching allocator; empty without CUDA"),
    Column("energy_j", "J", "GPU energy of the cell (NVML); empty without an NVIDIA GPU"),
    Column("energy_method", "text", "`nvml_counter` (energy counter) or `power_x_time` (sampled power x time)"),
    Column("power_mean_w", "W", "mean GPU power over the cell (NVML)"),
    Column("energy_j_per_answer", "J", "energy_j per answer"),
    Column("energy_j_per_output_token", "J", "energy_j per generated token"),
    Column("kv_cache_usage_peak", "fraction", "peak of vLLM's KV-cache usage gauge (fraction of the KV pool)"),
    Column("engine_prefix_cache_hits", "tokens", "vLLM's own prefix-cache hit counter over the cell (cross-checks the rows)"),
    Column("cpu_s_per_answer", "s", "process-tree CPU seconds per answer"),
    Column("gpu_s_per_answer", "s", "GPU seconds per answer: wall time x GPUs in use (NVML); empty without an NVIDIA GPU"),
    Column("peak_memory_bytes", "bytes", "gpu_mem_peak_bytes where measured, else rss_peak_bytes"),
]

_QUALITY = [
    Column("selection_reward_mean", "reward", "mean selection-model reward of the chosen answers (BoN)"),
    Column("eval_reward_mean", "reward", "mean evaluation reward of final answers (proxy: the selection model, see eval_reward_source)"),
    Column("eval_reward_ci95_lo", "reward", "bootstrap 95% interval of eval_reward_mean, low end"),
    Column("eval_reward_ci95_hi", "reward", "bootstrap 95% interval of eval_reward_mean, high end"),
    Column("eval_reward_n", "count", "answers with an evaluation reward"),
    Column("accuracy", "fraction", "share of answers whose last integer equals the reference answer (prompts with one: arith)"),
    Column("accuracy_n", "count", "answers graded for accuracy"),
    Column("accuracy_ci95_lo", "fraction", "bootstrap 95% interval of accuracy, low end"),
    Column("accuracy_ci95_hi", "fraction", "bootstrap 95% interval of accuracy, high end"),
    Column("refusal_rate_harmful", "fraction", "share of answers to the `harmful` set that refuse"),
    Column("refusal_n", "count", "answers to the `harmful` set"),
    Column("distinct_1", "fraction", "distinct / all lowercased whitespace unigrams over the cell's final answers"),
    Column("distinct_2", "fraction", "distinct / all bigrams over the cell's final answers"),
    Column("self_bleu", "BLEU 0-100", "mean sacrebleu sentence-BLEU of each final answer against the others (higher: less diverse); empty without sacrebleu"),
    Column("candidate_distinct_2", "fraction", "distinct-2 over a prompt's N BoN candidates, mean over prompts"),
    Column("candidate_self_bleu", "BLEU 0-100", "self-BLEU over a prompt's N BoN candidates, mean over prompts"),
    Column("repeats_self_bleu", "BLEU 0-100", "self-BLEU over a prompt's --repeats answers, mean over prompts (empty at --repeats 1)"),
    Column("repeats_distinct_2", "fraction", "distinct-2 over a prompt's --repeats answers, mean over prompts (empty at --repeats 1)"),
    Column("truncated_rate", "fraction", "share of final answers cut by --max-tokens"),
]

_TECHNIQUE = [
    Column("bon_kl_bound_nats", "nats", "analytic KL bound of best-of-N vs the base policy: log N - (N-1)/N"),
    Column("bon_win_rate_bound", "fraction", "win rate of best-of-N over one sample under a perfect reward: N/(N+1)"),
    Column("cai_rounds_mean", "count", "critique/revise rounds run per answer (below `rounds` with early stop)"),
    Column("cai_stopped_early_rate", "fraction", "share of answers whose loop stopped early"),
    Column("cai_correct_to_wrong", "fraction", "share of graded answers right before revision and wrong after"),
    Column("cai_wrong_to_correct", "fraction", "share of graded answers wrong before revision and right after"),
]

_TAX = [
    Column("latency_p50_x", "x", "latency_p50_s / plain's"),
    Column("latency_p95_x", "x", "latency_p95_s / plain's"),
    Column("cpu_s_per_answer_x", "x", "cpu_s_per_answer / plain's"),
    Column("gpu_s_per_answer_x", "x", "gpu_s_per_answer / plain's"),
    Column("output_tokens_per_answer_x", "x", "output_tokens_per_answer / plain's"),
    Column("energy_j_per_answer_x", "x", "energy_j_per_answer / plain's"),
    Column("peak_memory_x", "x", "peak_memory_bytes / plain's"),
    Column("win_rate_vs_plain", "fraction", "share of prompts where the evaluation reward beats plain's (ties count half); empty when the reward is a proxy"),
    Column("proxy_win_rate_vs_plain", "fraction", "the same win rate when the selection model also evaluates (proxy)"),
    Column("win_rate_n", "count", "prompt pairs compared for the win rate"),
    Column("win_rate_ci95_lo", "fraction", "bootstrap 95% interval of the win rate, low end"),
    Column("win_rate_ci95_hi", "fraction", "bootstrap 95% interval of the win rate, high end"),
    Column("eval_reward_delta_vs_plain", "reward", "mean paired evaluation-reward difference vs plain"),
    Column("eval_reward_delta_ci95_lo", "reward", "paired bootstrap 95% interval of the reward delta, low end"),
    Column("eval_reward_delta_ci95_hi", "reward", "paired bootstrap 95% interval of the reward delta, high end"),
    Column("accuracy_delta_vs_plain", "fraction", "accuracy minus plain's"),
    Column("eval_reward_source", "text", "`eval` (independent evaluation model), `proxy` (the selection model) or `none`"),
    Column("pareto", "bool", "on the cost/quality Pareto front of the run's ok cells"),
    Column("pareto_cost", "text", "the cost column the front used: gpu_s_per_answer when measured, else latency_p50_s"),
    Column("noise_note", "text", "a warning when the cell has too few answers for its deltas to mean much"),
]

_PROVENANCE = [
    Column("device", "text", "what ran the profile (GPU name, or CPU model)"),
    Column("engine", "text", "`vllm` or `hf`"),
    Column("model", "text", "the generation model (alias or directory)"),
    Column("dtype", "text", "the engine's dtype"),
    Column("seed", "count", "sampling seed (--seed)"),
    Column("temperature", "—", "sampling temperature (--temperature)"),
    Column("top_p", "fraction", "nucleus sampling (--top-p)"),
    Column("max_tokens", "tokens", "new tokens per generation (--max-tokens)"),
    Column("prefix_caching", "bool", "engine prefix caching on"),
    Column("torch_version", "text", "installed torch"),
    Column("vllm_version", "text", "installed vLLM"),
    Column("transformers_version", "text", "installed transformers"),
    Column("triton_version", "text", "installed Triton"),
    Column("git_commit", "text", "costtax source commit (when run from a git checkout)"),
    Column("reward_model", "text", "the selection reward-model spec (--reward-model)"),
]

COLUMNS: list[Column] = [*_CONTRACT, *_CELL, *_COST, *_QUALITY, *_TECHNIQUE, *_TAX, *_PROVENANCE]
CONTRACT_COLUMNS = [c.name for c in _CONTRACT]
PARAM_PREFIX = "param_"  # plain parameter columns, prefixed so they never collide with provenance (seed, max_tokens)


def add_column(name: str, unit: str, meaning: str) -> Column:
    """Register a column added at run time (the table above is the place for built-in ones)."""
    if any(c.name == name for c in COLUMNS):
        raise ValueError(f"summary column {name!r} is already defined")
    col = Column(name, unit, meaning)
    COLUMNS.append(col)
    return col


def param_columns() -> list[Column]:
    """`param_<name>` for every parameter any registered technique declares, in registry order.
    Empty for cells whose technique does not take that parameter."""
    from ..techniques import REGISTRY

    units = {int: "count", float: "—", bool: "bool", str: "text"}
    seen: dict[str, tuple[str, list[str]]] = {}
    for tech in REGISTRY.values():
        for p in tech.params:
            unit, parts = seen.setdefault(PARAM_PREFIX + p.name, (units.get(p.type, "text"), []))
            parts.append(f"{tech.name}: {p.help} (default {p.format(p.default) if p.default is not None else 'none'})")
    return [Column(name, unit, "; ".join(parts)) for name, (unit, parts) in seen.items()]


def all_columns() -> list[Column]:
    return [*COLUMNS, *param_columns()]


def markdown() -> str:
    """The README column reference: one row per column."""
    lines = ["| column | unit | meaning |", "|---|---|---|"]
    for c in all_columns():
        lines.append(f"| `{c.name}` | {c.unit} | {c.meaning.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


README_BEGIN = "<!-- summary-columns: generated by scripts/columns_doc.py from costtax/report/columns.py -->"
README_END = "<!-- /summary-columns -->"


def readme_section(readme: str) -> str | None:
    """The generated part of README.md (between the markers), or None without markers."""
    if README_BEGIN not in readme or README_END not in readme:
        return None
    return readme.split(README_BEGIN, 1)[1].split(README_END, 1)[0].strip("\n") + "\n"
