"""Every summary.csv column in one table: name -> unit -> meaning.

The docs' column reference (docs/columns.md) is generated from this table (`python scripts/columns_doc.py`;
test_report.py fails when the two differ), so the documentation cannot drift from the code.
To add a column: compute it in summary.py and append one `Column(...)` line to the right section
below (or call `add_column` from code that adds columns at run time). Columns are added, never
renamed or removed: scripts read summary.csv by name.

Units: s (seconds), 1/s, tokens, bytes, J (joules), W (watts), nats, fraction (0..1), x (multiple of
the plain cell's value), count, bool, text, reward (the reward model's own scale), BLEU 0-100. "per answer" means per final answer of the cell.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..metering.client_gauge import CLIENT_LAG_TTFT_SHARE, LAG_INTERVAL_S


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
    Column("technique", "text", "technique name, a key of costtax.techniques.REGISTRY"),
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
    Column("latency_p50_ci95_lo_s", "s", "95% interval of the median latency, low end, resampling what `latency_ci95_from` says (costtax/load/blocks.py latency_interval; the rule `costtax compare` uses)"),
    Column("latency_p50_ci95_hi_s", "s", "the same interval's high end"),
    Column("latency_ci95_from", "text", "what the row's p50/p95 intervals resampled: `repeats` (t-interval over cell repeats / search probes), `blocks` (waves of C answers in admission order, or time windows, merged where they shared a reward pass), `answers` (a batch: one batch's spread, not a rerun's), or `too few blocks` (under 5: no interval; repeat the level)"),
    Column("resumed_answers", "count", "answers finished by an earlier session of a resumed run (outside this cell's timed window)"),
    Column("prompt_tokens_per_answer", "tokens", "prompt tokens served per answer (prompt tokens x samples per request)"),
    Column("cached_prompt_tokens_per_answer", "tokens", "prompt tokens read from the prefix cache per answer"),
    Column("prefill_tokens_computed_per_answer", "tokens", "prompt tokens actually prefilled per answer (served minus cached)"),
    Column("prefix_cache_hit_rate", "fraction", "cached / served prompt tokens of generation calls"),
    Column("calls_per_answer", "count", "model calls per answer (sample, critique, revise, score; eval excluded)"),
    Column("reward_tokens_per_answer", "tokens", "tokens the reward model read for selection scoring, per answer"),
    Column("reward_tokens_computed_per_answer", "tokens", "of reward_tokens_per_answer, tokens the reward model computed (shared-prefix scoring computes a group's prompt once; the rest is read from its KV caches)"),
    Column("score_latency_s_per_answer", "s", "selection-scoring time per answer"),
    Column("score_share_of_wall", "fraction", "share of the cell's wall time the reward model spent on selection scoring (sum of its micro-batches' scoring time / wall)"),
    Column("ttft_p50_s", "s", "median time to first token of sample calls"),
    Column("ttft_source", "text", "how TTFT was measured: `engine` (per request), `batch` (HF engine: per batch) or `stream` (openai engine: first streamed chunk, HTTP included)"),
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
    Column("foreign_cpu_share", "fraction", "share of the run's CPUs that other processes kept busy during the cell (/proc/stat busy time minus the process tree's CPU, over wall x CPUs); the largest over cell repeats; above 0.10 the table warns that the cell's times are inflated by neighbours; empty without /proc/stat, for cells under 0.5 s, and with `--engine openai` against a server costtax did not start (its work would count as a neighbour's)"),
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
    Column("refusal_rate_harmful", "fraction", "share of answers that refuse (phrase rule), over prompts whose source scores refusals (SourceSpec scorer `refusal`: harmful, advbench, ...)"),
    Column("refusal_n", "count", "answers to the `harmful` set"),
    Column("distinct_1", "fraction", "distinct / all lowercased whitespace unigrams over the cell's final answers"),
    Column("distinct_2", "fraction", "distinct / all bigrams over the cell's final answers"),
    Column("self_bleu", "BLEU 0-100", "mean sacrebleu sentence-BLEU of each final answer against the others (higher: less diverse); empty without sacrebleu"),
    Column("candidate_distinct_2", "fraction", "distinct-2 over a prompt's N BoN candidates, mean over prompts"),
    Column("candidate_self_bleu", "BLEU 0-100", "self-BLEU over a prompt's N BoN candidates, mean over prompts"),
    Column("repeats_self_bleu", "BLEU 0-100", "self-BLEU over a prompt's --repeats answers, mean over prompts (empty at --repeats 1)"),
    Column("repeats_distinct_2", "fraction", "distinct-2 over a prompt's --repeats answers, mean over prompts (empty at --repeats 1)"),
    Column("truncated_rate", "fraction", "share of final answers cut by --max-tokens"),
    Column("pass_at_1", "fraction", "code sources (HumanEval): share of final answers whose extracted code passes the benchmark's tests in the sandbox"),
    Column("pass_at_1_ci_low", "fraction", "Wilson 95% interval of pass_at_1, low end"),
    Column("pass_at_1_ci_high", "fraction", "Wilson 95% interval of pass_at_1, high end"),
    Column("n_code_answers", "count", "final answers scored by running code"),
    Column("code_timeouts", "count", "of those, runs stopped by the sandbox's wall-clock limit"),
    *[Column(f"candidates_pass_at_{k}", "fraction", f"unbiased pass@{k} (Chen et al. 2021) over each problem's best-of-N candidates, mean over problems")
      for k in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)],
    Column("refusal_rate_rule", "fraction", "refusal-scored sources (harmful, AdvBench, DoNotAnswer, HarmBench): share of answers the phrase rule calls a refusal"),
    Column("refusal_rate_rule_ci_low", "fraction", "Wilson 95% interval, low end"),
    Column("refusal_rate_rule_ci_high", "fraction", "Wilson 95% interval, high end"),
    Column("refusal_rate_judge", "fraction", "share of those answers the judge model calls a refusal (empty with a scalar reward model)"),
    Column("refusal_rate_judge_ci_low", "fraction", "Wilson 95% interval, low end"),
    Column("refusal_rate_judge_ci_high", "fraction", "Wilson 95% interval, high end"),
    Column("refusal_disagreement", "fraction", "answers where the rule and the judge disagree, of those both judged"),
    Column("n_refusal_answers", "count", "answers scored for refusal"),
    Column("reward_length_rho", "—", "Spearman correlation of final answers' evaluation reward with their length in words (reward hacking's classic direction: > 0)"),
    Column("reward_length_n", "count", "answers behind reward_length_rho"),
    Column("reward_length_strong", "bool", "|reward_length_rho| >= stats.REWARD_LENGTH_STRONG_RHO over enough answers: the reward may be buying length"),
    Column("candidate_reward_length_rho", "—", "the same over every BoN candidate's selection reward and length (what selection optimises)"),
    Column("candidate_reward_length_strong", "bool", "candidate_reward_length_rho is strong"),
]

_LOAD = [
    Column("load", "text", "load level of the row: `batch` (every answer at once), `concurrency=C` (closed loop) or `rate=R` (Poisson arrivals, answers/s)"),
    Column("load_mode", "text", "`batch`, `concurrency` or `rate`"),
    Column("load_level", "—", "C answers in flight, or R offered answers/s; empty for batch"),
    Column("offered_answers_per_s", "1/s", "rate levels: the realised arrival rate ((arrivals-1) / arrival span)"),
    Column("achieved_answers_per_s", "1/s", "finished answers / (last finish - first release) of the level"),
    Column("saturated", "bool", "completion rate more than 10% below the offered rate, or the level hit --level-timeout-s"),
    Column("level_timed_out", "bool", "the level hit --level-timeout-s; unfinished answers were cancelled"),
    Column("queue_p50_s", "s", "median time generation requests waited in the engine's queue (engine-reported; empty where the engine cannot say)"),
    Column("queue_p95_s", "s", "95th percentile of the engine queueing delay"),
    Column("first_call_ttft_p50_s", "s", "median TTFT of each answer's first sample call"),
    Column("goodput_answers_per_s", "1/s", "achieved answers/s x share of answers within --slo-p95-s (empty without an SLO)"),
    Column("score_wait_p50_s", "s", "median time a score call waited in the reward micro-batcher before its batch started"),
    Column("score_batch_pairs_mean", "count", "mean prompt/response pairs per reward-model pass the score calls rode in"),
    Column("client_loop", "text", "the event loop whose lag the client columns measured: `engine:costtax-openai-client` (the openai engine's own loop thread, which sends and reads every request) or `profiler` (the unit runner's loop, in-process engines)"),
    Column("client_lag_p50_s", "s", f"median lateness of a timer re-armed every {LAG_INTERVAL_S * 1000:g} ms on that loop during the load window (an idle loop: about 1 ms, epoll's granularity); the worst cell repeat"),
    Column("client_lag_p99_s", "s", "99th percentile of that lateness; the worst cell repeat"),
    Column("client_lag_max_s", "s", "the latest firing of that timer; the worst cell repeat"),
    Column("client_cpu_share", "cores", "the client's CPU seconds (process user + system, all threads, summed over --client-workers processes) per wall second of the load window; one Python process tops out near 1; with an in-process engine the process is the engine too"),
    Column("client_workers", "count", "client processes that generated the load (--client-workers)"),
    Column("client_lag_share_of_ttft", "fraction", f"client_lag_p50_s / ttft_p50_s: the share of the measured TTFT the client's own loop may account for; at >= {CLIENT_LAG_TTFT_SHARE:g} the row raises flag_client_lag"),
]

_STEADY = [
    Column("cell_repeats", "count", "whole-cell repeats behind the row (--cell-repeats); timing columns are their median"),
    *[
        Column(f"repeat_{e}_{m}", u, f"{w} of {m} across cell repeats")
        for m, u in (("latency_p50_s", "s"), ("latency_p95_s", "s"), ("answers_per_s", "1/s"), ("achieved_answers_per_s", "1/s"), ("energy_j_per_answer", "J"))
        for e, w in (("min", "lowest"), ("max", "highest"))
    ],
    Column("cold_outlier", "bool", "repeat 1, or the first engine batch of repeat 1, took > 3x the median of the others: one-off start-up cost in the numbers"),
    Column("cold_outlier_reason", "text", "what the cold-start detector saw"),
    Column("flag_cheaper_than_plain", "bool", "generated >= 2x plain's tokens per answer at the same load yet reports lower latency or energy per answer: suspect"),
    Column("flag_nonpositive_duration", "bool", "a zero or negative answer latency, call latency or cell wall time"),
    Column("flag_cached_exceeds_prompt", "bool", "a call reports more cached prompt tokens than prompt tokens served"),
    Column("flag_energy_below_idle", "bool", "energy per answer below the idle power (measured before the first cell) x wall time / answers"),
    Column("flag_client_lag", "bool", f"the client's median loop lag is >= {CLIENT_LAG_TTFT_SHARE:g} x the median TTFT it measured (client_lag_share_of_ttft): the client, not the server, may be the bottleneck; rerun with --client-workers or a lighter load"),
    Column("accounting_violations", "count", "answers whose calls break the technique's own accounting checks (declared in its file)"),
    Column("accounting_example", "text", "the first accounting violation, if any"),
    Column("sanity_flags", "text", "the raised flags, `;`-separated (empty when every check holds)"),
    Column("aa_pairs", "count", "plain rows: consecutive plain repeats compared in the A/A check"),
    Column("aa_max_rel_diff", "fraction", "plain rows: largest relative difference between consecutive plain repeats of the median of a compared metric (time per output token where the engine reports TTFT: sampled answer lengths do not move it; else latency per answer)"),
    Column("aa_noise_band_rel", "fraction", "plain rows: the run's own noise band for that pair (1.96 x combined bootstrap standard error of the two medians, at least 5% for timer jitter; relative)"),
    Column("aa_ok", "bool", "plain rows: every consecutive pair of plain repeats agrees within the noise band on every compared metric"),
    Column("aa_metric", "text", "plain rows: the compared metric of the worst pair: `tpot_s` or `latency_s`"),
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
    *[Column(f"{m}_{suffix}", "fraction", f"{what} of {m} vs plain, paired by prompt")
      for m in ("pass_at_1", "refusal_rate_rule", "refusal_rate_judge")
      for suffix, what in (("delta", "difference (cell minus plain)"), ("delta_ci_low", "paired bootstrap 95% interval, low end"), ("delta_ci_high", "paired bootstrap 95% interval, high end"))],
    Column("eval_reward_source", "text", "`eval` (independent evaluation model), `proxy` (the selection model) or `none`"),
    Column("pareto", "bool", "on the cost/quality Pareto front of the run's ok cells"),
    Column("pareto_cost", "text", "the cost column the front used: gpu_s_per_answer when measured, else latency_p50_s"),
    Column("noise_note", "text", "a warning when the cell has too few answers for its deltas to mean much"),
]

_PROVENANCE = [
    Column("device", "text", "what ran the profile (GPU name, or CPU model)"),
    Column("engine", "text", "engine that served the run, a name in costtax.engines.ENGINES"),
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

# Capacity search and early stops (report/capacity.py; rules in costtax/load/search.py and
# costtax/load/oversaturation.py). Probe columns are set on a search's probe rows; cell columns on
# every row of a searched cell.
_CAPACITY = [
    Column("latency_p95_ci95_lo_s", "s", "95% interval of the p95 latency, low end, by the rule of `latency_ci95_from` (the search's own verdict keeps its per-probe interval: costtax/load/search.py)"),
    Column("latency_p95_ci95_hi_s", "s", "the same interval's high end"),
    Column("stop_reason", "text", "why the level was stopped early: `oversaturated: ...` (queue or latency kept rising, slope test) or `slo_out_of_reach: ...` (search probes: enough answers over the SLO that p95 cannot meet it); finished rows kept"),
    Column("oversaturated", "bool", "a repeat of the level was stopped by the over-saturation slope test"),
    Column("search_probe_index", "count", "--load search: this level's place in the cell's probe sequence (0 = first)"),
    Column("search_role", "text", "--load search: `start`, `double` (doubling phase) or `bisect`"),
    Column("search_held", "bool", "--load search: the probe met the SLO (all planned answers, not saturated or stopped, p95 <= SLO)"),
    Column("search_verdict_certain", "bool", "--load search: the p95's 95% CI lies wholly on the verdict's side of the SLO (or the probe was stopped, saturated or failed)"),
    Column("search_planned_answers", "count", "--load search: answers the probe ran: max(k x C, minimum), prompts cycled"),
    Column("search_verdict", "text", "--load search: the probe's verdict in words, with p95 and its CI"),
    Column("capacity_concurrency", "count", "--load search (closed loop): the highest concurrency that held, below the lowest that did not"),
    Column("capacity_rate", "1/s", "--load search=rate: the highest offered rate that held, below the lowest that did not"),
    Column("capacity_answers_per_s", "1/s", "--load search: achieved answers/s at the capacity level (per replica)"),
    Column("capacity_lo", "—", "capacity interval, low end (concurrency or offered answers/s): the highest probed level that held with its whole p95 CI at or below the SLO; 0 when none did"),
    Column("capacity_hi", "—", "capacity interval, high end: one below the lowest probed level that failed for certain (rate: that level); the highest probed level when none did"),
    Column("capacity_hi_bounded", "bool", "false when no probed level failed for certain (capacity_hi is then only the highest level probed)"),
    Column("capacity_answers_per_s_lo", "1/s", "achieved answers/s at capacity_lo (0 when it is 0)"),
    Column("capacity_answers_per_s_hi", "1/s", "achieved answers/s at the level just above capacity_hi (the first certain failure), an upper bound on the capacity's throughput"),
    Column("search_status", "text", "--load search: `bracketed` (a level that held next to one that did not), `hit_cap` (--search-max held), `budget` (--search-probes spent first), `infeasible` (the lowest level did not hold) or `running`"),
    Column("search_bracket", "text", "--load search: the two levels that bracket the capacity"),
    Column("search_probes", "count", "--load search: probes the cell's search ran"),
    Column("search_slo_p95_s", "s", "--load search: the p95 SLO the search ran against"),
    Column("capacity_drift_from", "text", "--load search with re-probes: the A/A band whose run-to-run drift the capacity interval includes (`calibration` of this machine, else the shipped reference `prior`; costtax/load/drift.py), or `none`"),
    Column("repeat_drift_note", "text", "with --cell-repeats >= 2, when the repeats' p95 latencies spread by more than 10 %: the range and what moved, with per-repeat numbers (reward pairs per pass, scoring share of wall, output tokens per answer, foreign_cpu_share; report/repeats.py)"),
    Column("repeat_score_pairs_per_pass", "count", "per cell repeat (`;`-separated, in repeat order): mean prompt/response pairs per reward-model pass"),
    Column("repeat_score_share_of_wall", "fraction", "per cell repeat (`;`-separated): the reward passes' scoring time / the unit's wall time"),
]

# Cost per stage and the waste ratio (report/stages.py, which defines busy-time attribution).
STAGE_COLUMNS = [
    col
    for s in ("sample", "continue", "critique", "revise", "score")
    for col in (
        Column(f"stage_{s}_tokens_per_answer", "tokens", f"{s} stage: tokens computed per answer (prefill computed + decoded; score: reward-model tokens computed)"),
        Column(f"stage_{s}_call_s_per_answer", "s", f"{s} stage: summed call latency per answer (overlapping calls each counted)"),
        Column(f"stage_{s}_latency_share", "fraction", f"{s} stage: share of an answer's latency spent in its {s} calls (mean over answers)"),
        Column(f"stage_{s}_busy_share", "fraction", f"{s} stage: share of the cell's wall time attributed to it (busy-time attribution: stages with a call in progress split each moment equally; report/stages.py)"),
        Column(f"stage_{s}_cpu_s_per_answer", "s", f"{s} stage: process-tree CPU seconds per answer x the stage's busy share"),
    )
] + [
    Column("stage_other_latency_share", "fraction", "share of an answer's latency outside its own calls (the harness between calls)"),
    Column("stage_idle_share", "fraction", "share of the cell's wall time with no call in progress; with the stages' busy shares it sums to 1"),
    Column("tokens_computed_per_answer", "tokens", "prefill computed + decoded + reward-model tokens computed, per answer"),
    Column("tokens_min_per_answer", "tokens", "the technique's analytic minimum per answer: the conversation prefilled once, each generated token once, the reward model's shared part once plus each response"),
    Column("waste_ratio", "x", "tokens_computed_per_answer / tokens_min_per_answer (1.0 = the physical minimum)"),
]

# Invariants between independent counters (report/invariants.py, which states each bound and
# tolerance); a raised flag is also listed in `sanity_flags`.
INVARIANT_COLUMNS = [
    Column("flag_reward_computed_exceeds_read", "bool", "a score call's reward model computed more tokens than it read (reward_tokens_computed > prompt_tokens)"),
    Column("flag_score_tokens_mismatch", "bool", "stage_score_tokens_per_answer differs from reward_tokens_computed_per_answer (both known)"),
    Column("flag_prefill_exceeds_prompt", "bool", "a generation call's prompt_tokens_computed exceeds prompt_tokens x n, plus one prompt when n > 1 (vLLM V1's prefix-warming request)"),
    Column("engine_prefill_tokens_computed", "tokens", "the engine's own prefix-cache counters over the row's metered windows: prefix_cache_queries - prefix_cache_hits (vLLM scheduler stats in-process, /metrics through a server); empty where the engine has none"),
    Column("costtax_prefill_tokens_computed", "tokens", "costtax's per-request sum over the same windows: generation calls' prompt_tokens_computed (+ score calls' computed tokens when the reward model is `served` on the policy's server)"),
    Column("flag_prefix_counters_disagree", "bool", "engine_prefill_tokens_computed and costtax_prefill_tokens_computed differ beyond 5% + one KV block per unit (the engine may exceed by n > 1 calls' warming prompts)"),
    Column("cpu_harness_s", "s", "CPU seconds of the harness process alone (its own CPU clock), summed over the row's metered windows"),
    Column("cpu_engine_tree_s", "s", "CPU seconds of the harness's descendants (engine core, workers, a --serve server), each from its own counters"),
    Column("flag_cpu_split_disagrees", "bool", "cpu_harness_s + cpu_engine_tree_s differs from the process-tree sampler's CPU seconds by more than 10% or 0.15 s per unit"),
    Column("flag_waste_below_one", "bool", "waste_ratio below 1 though no two answers of the row share a prompt"),
    Column("waste_below_one_reason", "text", "why a waste_ratio below 1 is legitimate: answers sharing a prompt read each other's prefix cache"),
]

COLUMNS: list[Column] = [*_CONTRACT, *_CELL, *_COST, *_LOAD, *_QUALITY, *_STEADY, *_TAX, *_PROVENANCE, *_CAPACITY, *STAGE_COLUMNS, *INVARIANT_COLUMNS]
CONTRACT_COLUMNS = [c.name for c in _CONTRACT]
PARAM_PREFIX = "param_"  # plain parameter columns, prefixed so they never collide with provenance (seed, max_tokens)


# Written only when the run's prompt sources declare a scorer that runs after the unit (pass@k,
# refusal): summary.py takes them from costtax.report.scored_answers.
SCORED_COLUMNS = frozenset(
    c.name for c in COLUMNS
    if c.name.startswith(("pass_at_1", "n_code_answers", "code_timeouts", "candidates_pass_at_", "refusal_rate_rule", "refusal_rate_judge", "refusal_disagreement", "n_refusal_answers"))
)


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


def technique_columns() -> list[Column]:
    """Columns each registered technique declares in its own file (`summary_columns`)."""
    from ..techniques import REGISTRY

    out: list[Column] = []
    for tech in REGISTRY.values():
        for name, unit, meaning in getattr(tech, "summary_columns", ()):
            if not any(c.name == name for c in out):
                out.append(Column(name, unit, f"{tech.name}: {meaning}"))
    return out


def all_columns() -> list[Column]:
    return [*COLUMNS, *technique_columns(), *param_columns()]


def markdown() -> str:
    """The column reference (docs/columns.md): one row per column."""
    lines = ["| column | unit | meaning |", "|---|---|---|"]
    for c in all_columns():
        lines.append(f"| `{c.name}` | {c.unit} | {c.meaning.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


README_BEGIN = "<!-- summary-columns: generated by scripts/columns_doc.py from costtax/report/columns.py -->"
README_END = "<!-- /summary-columns -->"


def readme_section(readme: str) -> str | None:
    """The generated part of a page (between the markers), or None without markers."""
    if README_BEGIN not in readme or README_END not in readme:
        return None
    return readme.split(README_BEGIN, 1)[1].split(README_END, 1)[0].strip("\n") + "\n"
