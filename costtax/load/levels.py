"""Load levels: how answers are released to the engine within one unit.

- `batch`: every answer starts at once (the offline mode: the engine drains a full queue).
- `concurrency=C`: closed loop, C answers in flight; a new one starts when one finishes.
- `rate=R`: open loop, Poisson arrivals at R answers/s (exponential gaps from a seeded RNG);
  each answer starts at its arrival time whatever is still in flight.

Measurement choices:
- achieved answers/s is finished answers over the span from the first release to the last
  finish. For rate levels, the offered rate is the realised one (arrivals-1 over the arrival
  span), and saturation compares completion spacing with arrival spacing:
  (finished-1)/(last finish - first finish) against the offered rate, so a short level is not
  called saturated merely because its last answer still had to run after the last arrival.
- A level is `saturated` when that completion rate falls more than 10% short of the offered
  rate, or when it hit the level's time cap (unfinished answers are cancelled, never left
  running; finished rows are kept).
- A `watch` (costtax.load.oversaturation.LevelWatch) may stop a level early: it sees every release
  (with the answers then in flight) and every finish; when it names a reason, what is still
  running is cancelled like at the time cap, finished rows are kept, and the stats carry
  `stop_reason` (and `oversaturated` when the reason is over-saturation).

`--load search` (closed loop, concurrency probes) and `search=rate` (open loop, rate probes) are
not levels but a search that runs ordinary levels one after another (costtax.load.search); the mode
names live here, in `parse_search`.
"""
from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Sequence

from ..errors import ConfigError

MODES = ("batch", "concurrency", "rate")
BATCH_MODE, CONCURRENCY_MODE, RATE_MODE = MODES  # the one place mode names are spelled
LOADED_MODES = (CONCURRENCY_MODE, RATE_MODE)  # modes whose levels form a latency-vs-throughput curve
CLOSED_LOOP, OPEN_LOOP = CONCURRENCY_MODE, RATE_MODE  # the search's probe modes (costtax.load.search)
SEARCH = "search"
SEARCH_PROBE_MODES = (CLOSED_LOOP, OPEN_LOOP)  # `search` alone means concurrency (closed loop)
SATURATION_SHORTFALL = 0.10
RATE_WARMUP_ANSWERS = 4  # warm-up answers before the first repeat of a rate level (see LoadLevel.warmup_count)


@dataclass(frozen=True)
class LoadLevel:
    mode: str
    value: float | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"load mode must be one of {MODES}")
        if self.mode == "batch" and self.value is not None:
            raise ValueError("batch takes no value")
        if self.mode == "concurrency" and (self.value is None or self.value < 1 or int(self.value) != self.value):
            raise ValueError("concurrency must be an integer >= 1")
        if self.mode == "rate" and (self.value is None or not self.value > 0):
            raise ValueError("rate must be > 0 answers/s")

    @property
    def label(self) -> str:
        if self.mode == "batch":
            return "batch"
        v = int(self.value) if self.mode == "concurrency" else self.value
        return f"{self.mode}={v:g}" if isinstance(v, float) else f"{self.mode}={v}"

    @classmethod
    def from_label(cls, label: str) -> "LoadLevel":
        return parse_load((label,))[0]

    @property
    def is_batch(self) -> bool:
        """The offline level (every answer at once), the default."""
        return self.mode == "batch"

    @property
    def is_rate(self) -> bool:
        """An open-loop level (Poisson arrivals at `value` answers/s)."""
        return self.mode == "rate"

    def warmup_count(self, answers: int, cap: int) -> int:
        """Answers in the shape of the level's first real engine batch, at most `cap`: every
        answer of an offline batch, C answers at concurrency C, a few for a rate level."""
        if self.mode == "batch":
            return min(answers, cap)
        if self.mode == "concurrency":
            return min(answers, int(self.value), cap)
        return min(answers, RATE_WARMUP_ANSWERS)


BATCH = LoadLevel(BATCH_MODE)
DEFAULT_LABEL = BATCH.label  # the `load` of rows written before load levels existed


def parse_load(specs: Sequence[str], field: str = "--load") -> tuple[LoadLevel, ...]:
    """`batch`, `concurrency=1,2,4`, `rate=0.5,1`; several specs may be given. Errors name the flag."""
    levels: list[LoadLevel] = []
    for text in specs:
        raw = str(text).strip()
        if raw == "batch":
            levels.append(LoadLevel("batch"))
            continue
        mode, sep, values = raw.partition("=")
        mode = mode.strip()
        if not sep or mode not in ("concurrency", "rate"):
            raise ConfigError(field, text, "use batch, concurrency=1,2,4 (answers in flight) or rate=0.5,1 (answers/s)")
        parts = [v.strip() for v in values.split(",")]
        if not parts or any(not v for v in parts):
            raise ConfigError(field, text, f"give values after {mode}=, e.g. {mode}=1,2,4")
        for v in parts:
            try:
                num = float(v)
            except ValueError:
                raise ConfigError(field, text, f"{v!r} is not a number; e.g. {mode}=1,2,4") from None
            try:
                lvl = LoadLevel(mode, num)
            except ValueError as exc:
                raise ConfigError(field, text, str(exc)) from None
            levels.append(lvl)
    out: list[LoadLevel] = []
    for lvl in levels:
        if lvl not in out:
            out.append(lvl)
    if not out:
        raise ConfigError(field, "", "give at least one load level, e.g. --load batch")
    return tuple(out)


def parse_search(specs: Sequence[str], field: str = "--load") -> str | None:
    """The probe mode of `--load search` (`concurrency`) or `--load search=rate` (`rate`); None when
    `specs` hold no search. A search runs its own levels, so it is given alone."""
    texts = [str(t).strip() for t in specs]
    hits = [t for t in texts if t == SEARCH or t.partition("=")[0].strip() == SEARCH]
    if not hits:
        return None
    if len(texts) > 1:
        raise ConfigError(field, " ".join(texts), "--load search chooses its own levels; give it alone (run fixed levels in another run)")
    mode = CLOSED_LOOP if hits[0] == SEARCH else hits[0].partition("=")[2].strip()
    if mode not in SEARCH_PROBE_MODES:
        raise ConfigError(field, hits[0], "use search (closed loop: concurrency probes) or search=rate (open loop: rate probes)")
    return mode


def poisson_arrivals(n: int, rate: float, seed: int) -> list[float]:
    """Arrival offsets (s) of n answers: the first at 0, then exponential gaps of mean 1/rate."""
    rng = random.Random(f"arrivals|{seed}|{rate!r}")
    t, out = 0.0, []
    for i in range(n):
        if i:
            t += rng.expovariate(rate)
        out.append(t)
    return out


@dataclass
class DriveResult:
    started: int
    finished: int
    failed: int
    timed_out: bool
    t_first_release: float | None  # monotonic
    t_last_release: float | None
    t_first_finish: float | None
    t_last_finish: float | None
    errors: list[str]
    stop_reason: str | None = None  # a watch stopped the level early (over-saturation, SLO out of reach)

    def stats(self, level: LoadLevel) -> dict[str, Any]:
        span = None
        if self.t_first_release is not None and self.t_last_finish is not None:
            span = self.t_last_finish - self.t_first_release
        achieved = (self.finished / span) if span and span > 0 and self.finished else None
        offered = completion = None
        if level.mode == "rate":
            offered = level.value
            if self.started > 1 and self.t_last_release is not None and self.t_last_release > self.t_first_release:
                offered = (self.started - 1) / (self.t_last_release - self.t_first_release)
            if self.finished > 1 and self.t_last_finish > self.t_first_finish:
                completion = (self.finished - 1) / (self.t_last_finish - self.t_first_finish)
        saturated = self.timed_out or (
            offered is not None and completion is not None and completion < (1 - SATURATION_SHORTFALL) * offered
        )
        return {
            "load_mode": level.mode,
            "load_level": level.value,
            "offered_answers_per_s": offered,
            "offered_rate_nominal": level.value if level.mode == "rate" else None,
            "achieved_answers_per_s": achieved,
            "completion_answers_per_s": completion,
            "load_span_s": span,
            "started": self.started,
            "finished": self.finished,
            "failed": self.failed,
            "timed_out": self.timed_out,
            "saturated": bool(saturated),
            "stop_reason": self.stop_reason,
            "oversaturated": bool(self.stop_reason and self.stop_reason.startswith("oversaturated")),
        }


async def drive(
    level: LoadLevel,
    items: Sequence[Any],
    run_one: Callable[[Any], Awaitable[None]],
    *,
    seed: int = 0,
    timeout_s: float | None = None,
    on_release: Callable[[Any, float], None] | None = None,
    on_done: Callable[[Any], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    watch: Any = None,
    offsets: Sequence[float] | None = None,
    t0: float | None = None,
    on_admit: Callable[[Any, int, int | None], None] | None = None,
) -> DriveResult:
    """Release `items` to `run_one` according to `level`. The first exception of an answer is
    re-raised after the others are cancelled (the unit is then marked failed by the runner; rows
    already written stay). A timeout cancels what is still running and returns timed_out=True;
    a `watch` naming a stop reason does the same and returns it in `stop_reason`. A rate level
    may be given its arrival `offsets` (s after `t0`, monotonic; default now) instead of drawing
    them: a worker process's share of one schedule (costtax.run.client_workers).
    `on_admit(item, admission, slot)` is called at each release, before `on_release`: admission
    is the 0-based release order within this call, slot (closed loop only; None otherwise) the
    concurrency slot 0..C-1 that runs it (the lowest free one), so readers can group answers into
    waves (costtax.load.blocks)."""
    res = DriveResult(0, 0, 0, False, None, None, None, None, [])
    in_flight: set[asyncio.Task] = set()
    first_error: list[BaseException] = []
    stop = asyncio.Event()

    def watched(reason: str | None) -> None:
        if reason and res.stop_reason is None:
            res.stop_reason = reason
            stop.set()

    async def one(item, slot: int | None = None) -> None:
        t = clock()
        if on_admit:
            on_admit(item, res.started, slot)
        res.started += 1
        res.t_first_release = t if res.t_first_release is None else res.t_first_release
        res.t_last_release = t
        if on_release:
            on_release(item, t)
        if watch is not None:
            watched(watch.released(t, res.started - res.finished - res.failed))
        t_release = t
        try:
            await run_one(item)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            res.failed += 1
            res.errors.append(f"{type(exc).__name__}: {exc}")
            if not first_error:
                first_error.append(exc)
            raise
        t = clock()
        res.finished += 1
        res.t_first_finish = t if res.t_first_finish is None else res.t_first_finish
        res.t_last_finish = t
        if on_done:
            on_done(item)
        if watch is not None:
            watched(watch.finished(t_release, t))

    async def release_all() -> None:
        if level.mode == "batch":
            tasks = [asyncio.ensure_future(one(i)) for i in items]
            in_flight.update(tasks)
            await asyncio.gather(*tasks)
        elif level.mode == "concurrency":
            sem = asyncio.Semaphore(int(level.value))
            free = list(range(int(level.value)))  # slots not running an answer

            async def gated(item):
                async with sem:
                    slot = min(free)
                    free.remove(slot)
                    try:
                        await one(item, slot)
                    finally:
                        free.append(slot)

            tasks = [asyncio.ensure_future(gated(i)) for i in items]
            in_flight.update(tasks)
            await asyncio.gather(*tasks)
        else:
            offs = poisson_arrivals(len(items), float(level.value), seed) if offsets is None else offsets
            start = clock() if t0 is None else t0
            tasks = []
            for item, off in zip(items, offs):
                delay = start + off - clock()
                if delay > 0:
                    await sleep(delay)
                if first_error:
                    break
                task = asyncio.ensure_future(one(item))
                in_flight.add(task)
                tasks.append(task)
            await asyncio.gather(*tasks)

    main = asyncio.ensure_future(release_all())
    stopper = asyncio.ensure_future(stop.wait())
    try:
        done, _ = await asyncio.wait({main, stopper}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if main in done:
            main.result()  # the answers' first error, if any
        elif not stop.is_set():
            res.timed_out = True
    except BaseException:
        if not first_error:
            raise
    finally:
        for t in (main, stopper, *in_flight):
            if not t.done():
                t.cancel()
        await asyncio.gather(main, stopper, *in_flight, return_exceptions=True)
    if first_error:
        raise first_error[0]
    return res


def merge_results(parts: Sequence[DriveResult]) -> DriveResult:
    """One level's result from its worker processes' shares: counts added, the first release
    and finish the earliest, the last the latest, timed out if any share was, the first stop
    reason and every error."""
    def pick(fn, vals):
        vals = [v for v in vals if v is not None]
        return fn(vals) if vals else None

    return DriveResult(
        started=sum(p.started for p in parts),
        finished=sum(p.finished for p in parts),
        failed=sum(p.failed for p in parts),
        timed_out=any(p.timed_out for p in parts),
        t_first_release=pick(min, [p.t_first_release for p in parts]),
        t_last_release=pick(max, [p.t_last_release for p in parts]),
        t_first_finish=pick(min, [p.t_first_finish for p in parts]),
        t_last_finish=pick(max, [p.t_last_finish for p in parts]),
        errors=[e for p in parts for e in p.errors],
        stop_reason=next((p.stop_reason for p in parts if p.stop_reason), None),
    )


def split_level(level: LoadLevel, items: Sequence[Any], workers: int, seed: int) -> list[tuple[LoadLevel, list[Any], list[float] | None]]:
    """A concurrency or rate level split across `workers` processes: (the worker's level, its
    items, its arrival offsets or None). Items are dealt round-robin (admission order kept
    within each worker). Concurrency C: worker k holds C // N slots, the first C % N one more
    (at most C workers, so none gets 0). Rate R: one Poisson schedule of every item drawn here
    with the level's seed (the one a single process draws), its arrivals dealt round-robin, so
    the union is the same Poisson process; each worker's level keeps the rate label."""
    if level.mode not in (CONCURRENCY_MODE, RATE_MODE):
        raise ValueError(f"only concurrency and rate levels are split across workers, not {level.label}")
    n = workers if level.mode == RATE_MODE else min(workers, int(level.value))
    n = max(1, min(n, len(items)))
    if level.mode == CONCURRENCY_MODE:
        c = int(level.value)
        return [(LoadLevel(CONCURRENCY_MODE, c // n + (1 if k < c % n else 0)), list(items[k::n]), None) for k in range(n)]
    offsets = poisson_arrivals(len(items), float(level.value), seed)
    return [(level, list(items[k::n]), offsets[k::n]) for k in range(n)]
