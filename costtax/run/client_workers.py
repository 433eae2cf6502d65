"""--client-workers N: one loaded level sent from N worker processes, for when one client
process is the bottleneck (its loop lag: costtax/metering/client_gauge.py). Served engines only.

- Each worker is a spawned process with its own OpenAI engine on the same server (its own event
  loop thread and connection pool), the same technique, and a CellContext whose writer sends the
  records to the parent. The parent is the one writer: it appends every call and answer row as it
  arrives (whole lines, flushed; no two processes write a file), so the run directory is what one
  process writes, plus the rows' `worker` index.
- The level is split by costtax.load.levels.split_level: concurrency C as C // N slots per worker (the
  first C % N one more), answers dealt round-robin; rate R as one Poisson schedule drawn in the
  parent with the level's seed, arrivals dealt round-robin, every worker releasing at the same
  monotonic start (CLOCK_MONOTONIC is one clock for every process on the machine), so the union is
  the Poisson process one process would run.
- Call ids stay unique across workers: worker k of N numbers its calls k, k+N, k+2N, ... in the
  usual `<cell><unit>|c<k>` form; the parent's own calls afterwards (evaluation) continue after
  the largest.
- The over-saturation watch (costtax/load/oversaturation.py) runs once, in the parent, fed by every
  worker's releases (answers in flight counted over all workers) and finishes; a stop it decides
  is passed to the workers, which cancel what they run, as at the level's time cap.
- The workers start and open their engines before the window; the unit's window starts when the
  parent releases them all at once. Warm-up and offline batch levels run in the parent.
- Evaluation and post-unit scoring run in the parent over the answers the workers wrote, as for
  one process. Techniques that need the selection reward model during the answer (best-of-N,
  `needs_reward_model`) are not split (costtax/run/unit.py runs them in the parent): a worker has no
  reward model, and one that asks for it fails the unit with that message.
- A worker whose parent dies exits (it polls its parent id), so a killed run leaves no
  orphans; the finished rows are on disk and `--resume` works as for one process.
"""
from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..metering.client_gauge import ClientGauge, client_record, cpu_s
from ..load.levels import DriveResult, LoadLevel, merge_results, split_level

READY_TIMEOUT_S = 300.0  # a worker imports costtax and opens its engine (tokenizer included)
STOPPED = "stopped by the parent"


@dataclass(frozen=True)
class WorkerJob:
    """Everything one worker process needs (pickled to it)."""

    index: int
    workers: int
    engine_kwargs: dict[str, Any]
    spec: Any  # TechniqueSpec
    ctx_kwargs: dict[str, Any]
    level: LoadLevel  # the worker's share of the level
    items: list[Any]  # PromptInstances
    offsets: list[float] | None  # rate: arrival offsets after the common start
    seed: int
    timeout_s: float | None


class _QueueWriter:
    """A worker's RunWriter: rows go to the parent, tagged with the worker index."""

    def __init__(self, q, index: int):
        self.q, self.index = q, index

    def call(self, rec) -> None:
        self.q.put(("call", dataclasses.replace(rec, worker=self.index)))

    def answer(self, rec) -> None:
        self.q.put(("answer", dataclasses.replace(rec, worker=self.index)))

    def scored(self, row) -> None:  # pragma: no cover - scoring runs in the parent, after the window
        raise RuntimeError("post-unit scoring runs in the parent process")


class _WatchProxy:
    """drive()'s watch in a worker: releases and finishes go to the parent, which runs the
    level's one watch over every worker; a stop it decided comes back as the stop reason."""

    def __init__(self, q, index: int, stop):
        self.q, self.index, self.stop = q, index, stop

    def released(self, t: float, in_flight: int) -> str | None:
        self.q.put(("released", self.index, t))
        return STOPPED if self.stop.is_set() else None

    def finished(self, t_release: float, t: float) -> str | None:
        self.q.put(("finished", self.index, t_release, t))
        return STOPPED if self.stop.is_set() else None


class _NoScorer:
    @property
    def name(self) -> str:
        return "none"

    def __getattr__(self, item):
        raise RuntimeError("--client-workers: this technique scores with the selection reward model during the answer; "
                           "workers have none (run it with --client-workers 1)")


def _exit_with_parent(parent_pid: int) -> None:
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(3)  # the run was killed: leave no orphan sending to a dead queue

    threading.Thread(target=watch, name="costtax-worker-orphan-guard", daemon=True).start()


async def _drive_share(job: WorkerJob, ctx, technique, engine, q, stop, t0: float):
    from ..load.levels import drive

    def on_admit(inst, admission: int, slot) -> None:
        # the items were dealt round-robin, so worker k's i-th release stands at i*N + k of the
        # level's release order, and its slot s is the level's slot s*N + k: the waves the block
        # CIs resample (costtax/load/blocks.py) are then the level's, not one worker's
        n, k = job.workers, job.index
        ctx.admitted(inst, admission * n + k, None if slot is None else slot * n + k)

    with ClientGauge(engine) as gauge:
        res = await drive(job.level, job.items, lambda inst: technique.answer(inst, ctx), seed=job.seed, timeout_s=job.timeout_s,
                          on_release=ctx.arrived, watch=_WatchProxy(q, job.index, stop), offsets=job.offsets,
                          t0=t0 if job.offsets is not None else None, on_admit=on_admit)
    return res, gauge


def worker_main(job: WorkerJob, q, go, t0, stop, parent_pid: int) -> None:
    """A worker process: open the engine, say ready, wait for the common start, run the share."""
    _exit_with_parent(parent_pid)
    engine = None
    try:
        from ..techniques.context import CellContext
        from ..engines.openai import OpenAIEngine

        engine = OpenAIEngine(**job.engine_kwargs)
        engine.start()
        ctx = CellContext(engine=engine, writer=_QueueWriter(q, job.index), scorer=_NoScorer(), eval_scorer=None, **job.ctx_kwargs)
        ctx._ids = itertools.count(job.index, job.workers)  # call ids unique across workers
        technique = job.spec.build()
        q.put(("ready", job.index))
        go.wait()
        res, gauge = asyncio.run(_drive_share(job, ctx, technique, engine, q, stop, t0.value))
        q.put(("done", job.index, res, gauge.samples, gauge.cpu_s))
    except BaseException as exc:  # reported to the parent, which fails the unit
        q.put(("error", job.index, f"{type(exc).__name__}: {exc}"))
    finally:
        if engine is not None:
            engine.close()


class WorkerFailed(RuntimeError):
    """A client worker process failed (its first error)."""


def run_split(level: LoadLevel, insts: list, *, spec, ctx, engine, workers: int, seed: int, timeout_s: float | None,
              watch=None, on_done: Callable[[], None] | None = None, sample: Callable[[], None] | None = None,
              ) -> tuple[DriveResult, dict[str, Any]]:
    """Run one loaded level's `insts` on `workers` processes; the parent writes every row through
    ctx.writer and queues the answers for ctx's evaluation. Returns the merged DriveResult and
    the `client` gauges (lag pooled over the workers' loops, CPU of the parent and the workers).
    `on_done()` after each finished answer (progress); `sample()` every 0.5 s (engine gauges)."""
    import multiprocessing as mp

    shares = split_level(level, insts, workers, seed)
    mpc = mp.get_context("spawn")  # the parent has threads (engine loop): never fork them
    q, go, stop, t0 = mpc.Queue(), mpc.Event(), mpc.Event(), mpc.Value("d", 0.0)
    ctx_kwargs = {"run_id": ctx.run_id, "cell": ctx.cell, "technique": ctx.technique, "sampling": ctx.sampling, "epoch": ctx.epoch,
                  "repeats": ctx.repeats, "options": ctx.options, "session": ctx.session, "level": ctx.level,
                  "cell_repeat": ctx.cell_repeat}
    jobs = [WorkerJob(k, len(shares), engine.worker_kwargs(), spec, ctx_kwargs, lvl, items, offs, seed, timeout_s)
            for k, (lvl, items, offs) in enumerate(shares)]
    procs = [mpc.Process(target=worker_main, args=(job, q, go, t0, stop, os.getpid()), name=f"costtax-client-worker-{job.index}", daemon=True)
             for job in jobs]
    for p in procs:
        p.start()
    by_id = {i.answer_id: i for i in insts}
    done: dict[int, tuple] = {}
    errors: dict[int, str] = {}
    stop_reason: list[str] = []

    def watched(reason: str | None) -> None:
        """The first stop the watch names ends the level for every worker."""
        if reason and not stop_reason:
            stop_reason.append(reason)
            stop.set()

    in_flight = [0]
    max_call = [-1]

    def handle(msg) -> None:
        kind = msg[0]
        if kind == "call":
            rec = msg[1]
            ctx.writer.call(rec)
            tail = rec.call_id.rpartition("|c")[2]
            if tail.isdigit():
                max_call[0] = max(max_call[0], int(tail))
        elif kind == "answer":
            rec = msg[1]
            ctx.writer.answer(rec)
            ctx.adopt_answer(by_id[rec.answer_id], rec)
        elif kind == "released":
            in_flight[0] += 1
            if watch is not None:
                watched(watch.released(msg[2], in_flight[0]))
        elif kind == "finished":
            in_flight[0] -= 1
            if on_done is not None:
                on_done()
            if watch is not None:
                watched(watch.finished(msg[2], msg[3]))
        elif kind == "done":
            done[msg[1]] = msg[2:]
        elif kind == "error":
            errors[msg[1]] = msg[2]
            stop.set()

    def settled() -> bool:
        return len(done) + len(errors) >= len(procs)

    def dead_unreported() -> None:
        for k, p in enumerate(procs):
            if k not in done and k not in errors and p.exitcode is not None:
                errors[k] = f"client worker {k} exited with code {p.exitcode} before reporting"
                stop.set()

    try:
        ready: set[int] = set()
        t_wait = time.monotonic()
        while len(ready) + len(errors) < len(procs):
            try:
                msg = q.get(timeout=0.5)
            except queue.Empty:
                dead_unreported()
                if time.monotonic() - t_wait > READY_TIMEOUT_S:
                    raise WorkerFailed(f"client workers not ready after {READY_TIMEOUT_S:g} s") from None
                continue
            if msg[0] == "ready":
                ready.add(msg[1])
            else:
                handle(msg)
        if errors:
            go.set()
            stop.set()
            raise WorkerFailed(f"client worker {min(errors)}: {errors[min(errors)]}")
        cpu0 = cpu_s()
        t0.value = time.monotonic()
        go.set()
        next_sample = t0.value
        while not settled():
            if sample is not None and time.monotonic() >= next_sample:
                sample()
                next_sample += 0.5
            try:
                handle(q.get(timeout=0.1))
            except queue.Empty:
                dead_unreported()
        wall = time.monotonic() - t0.value
        parent_cpu = cpu_s() - cpu0
    finally:
        stop.set()
        go.set()
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.terminate()
                p.join(5)
        q.close()
    if max_call[0] >= 0:
        ctx._ids = itertools.count(max_call[0] + 1)  # the parent's own calls (evaluation) follow the workers'
    if errors:
        k = min(errors)
        raise WorkerFailed(f"client worker {k}: {errors[k]}")
    parts = [done[k][0] for k in sorted(done)]
    res = merge_results(parts)
    res.stop_reason = stop_reason[0] if stop_reason else (None if res.stop_reason == STOPPED else res.stop_reason)
    samples = [x for k in sorted(done) for x in done[k][1]]
    cpu = parent_cpu + sum(done[k][2] for k in done)
    loop = f"engine:costtax-openai-client x{len(procs)} processes"
    return res, client_record(samples, cpu, wall, loop, workers=len(procs))
