"""Per-answer scoring by a prompt's declared source spec (no branching on set names).

The cell runner calls :func:`evaluate_answers` once per cell, after the cell's answers are done,
with the final answer texts (and, for best-of-N, every candidate of each answer); each returned
dict is stored with its answer. :func:`costtax.report.scored_answers.summarize_scored_answers` turns a cell's
dicts into summary columns and :func:`costtax.report.scored_answers.scored_deltas` into the tax against plain.

* ``pass_at_k``: code is extracted from the chat answer (:func:`extract_code`), joined with the
  benchmark's tests into one program and run in :mod:`costtax.sandbox` (never in this process).
* ``refusal``: the phrase rule (:func:`costtax.rewards.refusal_rule.is_refusal`) always; the judge
  (:class:`costtax.rewards.refusal.RefusalJudge`) when one is given.
* ``exact``: :func:`costtax.prompts.exact_match.is_correct` against the prompt's reference answer.
* ``reward``: nothing here (the run's reward model already scores it).
"""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Sequence

from ..rewards.refusal_rule import is_refusal
from .exact_match import is_correct
from .sources import SourceSpec

if TYPE_CHECKING:  # pragma: no cover
    from ..rewards.refusal import RefusalJudge
    from ..sandbox import SandboxLimits
    from . import Prompt

# A fenced block; an unclosed last fence (the answer was cut at max_tokens) runs to the end.
_FENCE_RE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:\n[ \t]*```|\Z)", re.S)
_PY_LANGS = {"", "python", "py", "python3"}
# Column-0 lines that still look like code when cutting a bare (unfenced) function out of prose.
_CODE_LINE_RE = re.compile(
    r"^(def |async def |class |import |from |@|#|if |elif |else:|for |while |try:|except|finally:|with |return |"
    r"[A-Za-z_][\w.]*\s*(=|\+=|-=|\()|[\])}])"
)


def _defines(code: str, entry_point: str) -> bool:
    return re.search(rf"^\s*(async\s+)?def\s+{re.escape(entry_point)}\s*\(", code, re.M) is not None


def _cut_bare_code(text: str, entry_point: str) -> str:
    """From the first column-0 ``def``/``import``/``from`` line before the entry point's def, up
    to the first column-0 line that reads as prose."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if re.match(rf"\s*(async\s+)?def\s+{re.escape(entry_point)}\s*\(", ln))
    while start > 0 and re.match(r"(import |from |def |@|class )", lines[start - 1]):
        start -= 1
    kept = [lines[start]]
    for ln in lines[start + 1:]:
        if ln.strip() and not ln[0].isspace() and not _CODE_LINE_RE.match(ln):
            break
        kept.append(ln)
    return "\n".join(kept)


def extract_code(prompt: "Prompt", answer: str) -> tuple[str, str]:
    """(code to place after the prompt's code, how it was found) for a ``fenced_or_completion``
    source. ``how``: ``fenced_def`` (a fenced block that defines the entry point: the answer's
    whole function replaces the stub), ``fenced_body`` (an indented fenced block: the function's
    body), ``bare_def`` (an unfenced ``def`` of the entry point cut out of prose), ``completion``
    (anything else: the text continues the signature, as a base model writes it)."""
    ep = prompt.entry_point or ""
    blocks = [(lang.lower(), body) for lang, body in _FENCE_RE.findall(answer or "")]
    py = [b for lang, b in blocks if lang in _PY_LANGS] or [b for _, b in blocks]
    if py:
        chosen = next((b for b in py if _defines(b, ep)), py[0])
        if _defines(chosen, ep):
            return chosen, "fenced_def"
        if chosen.strip() and chosen.lstrip("\n")[:1] in (" ", "\t"):
            return chosen, "fenced_body"
    if ep and _defines(answer or "", ep):
        return _cut_bare_code(answer, ep), "bare_def"
    text = answer or ""
    code_prompt = prompt.code_prompt or ""
    if code_prompt and text.startswith(code_prompt):  # a completion that echoes the prompt
        text = text[len(code_prompt):]
    return text, "completion"


def build_program(prompt: "Prompt", answer: str) -> tuple[str, str]:
    """(the complete program run in the sandbox, how the code was extracted).

    The prompt's own code (imports, helper functions, the signature with its docstring) comes
    first, so helpers and imports the model left out are still defined; a function body that is
    only a docstring is valid Python, and a whole function from the answer simply redefines it.
    Then the benchmark's tests and ``check(<entry_point>)``."""
    if not (prompt.tests and prompt.entry_point and prompt.code_prompt is not None):
        raise ValueError(f"prompt {prompt.id!r} has no tests/entry_point/code_prompt; it is not a code prompt")
    code, how = extract_code(prompt, answer)
    head = prompt.code_prompt
    if how in ("fenced_def", "bare_def"):
        body = head.rstrip("\n") + "\n\n\n" + code.strip("\n") + "\n"
    else:
        body = head + code.rstrip() + "\n"
    program = f"{body}\n\n{prompt.tests}\n\ncheck({prompt.entry_point})\n"
    return program, how


def check_scoring_ready(prompts: Sequence["Prompt"]) -> dict[str, Any]:
    """Preflight for a run's prompts: when any prompt is scored by running code, check once that
    the sandbox works here (raises :class:`costtax.sandbox.SandboxUnavailable`, a CosttaxError:
    exit 2 before any engine starts). Returns what the run needs to know, for run.json:
    ``{"scorers": [...], "sandbox_python": path or None, "sandbox": containment facts or None}``."""
    scorers = sorted({p.effective_scorer for p in prompts})
    info: dict[str, Any] = {"scorers": scorers, "sandbox_python": None, "sandbox": None}
    if "pass_at_k" in scorers:
        from ..sandbox import check_sandbox, sandbox_facts

        info["sandbox_python"] = check_sandbox()
        info["sandbox"] = sandbox_facts()
    return info


def check_call(prompt: "Prompt") -> str:
    """The last line :func:`build_program` writes: the call whose return earns the pass marker."""
    return f"check({prompt.entry_point})"


def _run_code(jobs: Sequence[tuple[str, str]], limits: "SandboxLimits | None", workers: int, on_done=None) -> dict[tuple[str, str], Any]:
    """Sandbox results by (program, check call); identical programs (common among best-of-N
    candidates at low temperature) run once. Passing needs the check call to return (the
    sandbox's per-run marker), not just exit status 0. ``on_done()`` after each (progress display)."""
    from .. import sandbox

    lim = limits or sandbox.SandboxLimits()
    unique = list(dict.fromkeys(jobs))

    def one(job: tuple[str, str]):
        r = sandbox.run_program(job[0], lim, check_call=job[1])
        if on_done is not None:
            on_done()
        return r

    if workers <= 1 or len(unique) <= 1:
        return {j: one(j) for j in unique}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(unique, pool.map(one, unique)))


def evaluate_answers(
    prompts: Sequence["Prompt"],
    answer_texts: Sequence[str],
    candidates: Sequence[Sequence[str] | None] | None = None,
    *,
    judge: "RefusalJudge | None" = None,
    limits: "SandboxLimits | None" = None,
    workers: int = 2,
    progress=None,
) -> list[dict[str, Any]]:
    """One evaluation dict per (prompt, final answer), in order; what is in it follows each
    prompt's ``spec.scorer``. ``candidates[i]``: every sample the technique drew for answer i
    (best-of-N), or None. Sandbox runs go ``workers`` at a time; refusal judging is one batched
    judge call for the whole cell.

    Keys: always ``prompt_id``, ``scorer``, ``source``; for ``pass_at_k``: ``code_passed`` (bool),
    ``code_fail_reason`` (None or a :class:`~costtax.sandbox.SandboxResult` reason),
    ``code_extracted_by``, ``code_wall_s``, ``code_exit_code``, ``code_stage`` (where the program
    stopped: program | tests | done), ``code_exit_via`` (sys.exit | raise SystemExit | os._exit |
    None), ``code_sandbox`` (the containment path and the sample's uid_map, CapEff, CapBnd,
    NoNewPrivs) and with candidates ``candidates_n``, ``candidates_passed``,
    ``candidate_fail_reasons``; for ``refusal``: ``refusal_rule`` (bool),
    ``refusal_judge`` (bool, None without a judge), ``refusal_judge_score``; for ``exact``:
    ``correct``. ``progress(done)``: answers evaluated so far (rewards/progress.py)."""
    from ..rewards.progress import AnswerCount, batch_progress

    tick = AnswerCount(len(prompts), progress)
    if len(prompts) != len(answer_texts):
        raise ValueError("prompts and answer_texts must have equal length")
    cands = list(candidates) if candidates is not None else [None] * len(prompts)
    if len(cands) != len(prompts):
        raise ValueError("candidates must have one entry (a list or None) per answer")
    out: list[dict[str, Any]] = []
    code_jobs: list[tuple[int, tuple[str, str], list[tuple[str, str]]]] = []
    judge_idx: list[int] = []
    for i, (p, text) in enumerate(zip(prompts, answer_texts)):
        spec: SourceSpec = p.spec
        scorer = p.effective_scorer
        e: dict[str, Any] = {"prompt_id": p.id, "scorer": scorer, "source": spec.name}
        if scorer == "pass_at_k":
            program, how = build_program(p, text)
            call = check_call(p)
            cand_jobs = [(build_program(p, c)[0], call) for c in (cands[i] or [])]
            e["code_extracted_by"] = how
            code_jobs.append((i, (program, call), cand_jobs))
        elif scorer == "refusal":
            e["refusal_rule"] = is_refusal(text)
            e["refusal_judge"] = None
            if judge is not None:
                judge_idx.append(i)
        elif scorer == "exact" and p.answer is not None:
            e["correct"] = is_correct(text, p.answer)
        out.append(e)
    if code_jobs:
        jobs = [j[1] for j in code_jobs] + [c for j in code_jobs for c in j[2]]
        results = _run_code(jobs, limits, workers, tick.share(len(code_jobs), len(set(jobs))))
        for i, job, cand_jobs in code_jobs:
            r = results[job]
            out[i].update(code_passed=r.passed, code_fail_reason=None if r.passed else r.reason,
                          code_wall_s=round(r.wall_s, 4), code_exit_code=r.exit_code, code_stage=r.stage,
                          code_exit_via=r.exit_via, code_sandbox=r.containment)
            if cand_jobs:
                rs = [results[c] for c in cand_jobs]
                out[i].update(
                    candidates_n=len(rs), candidates_passed=sum(x.passed for x in rs),
                    candidate_fail_reasons=[None if x.passed else x.reason for x in rs],
                )
    if judge_idx:
        base = tick.done
        with batch_progress(judge, len(judge_idx), progress and (lambda k, _n: tick.set(base + k))):
            verdicts = judge.judge([prompts[i].text for i in judge_idx], [answer_texts[i] for i in judge_idx])
        for i, v in zip(judge_idx, verdicts):
            out[i].update(refusal_judge=v.refusal, refusal_judge_score=round(v.score, 4))
    tick.set(len(prompts))
    return out
