"""pytest plugin: regression tests that guard what an alignment technique costs AND what it buys.

Registered through the `pytest11` entry point (name `costtax.pytest_plugin`), so it loads in every
pytest run of an environment where costtax is installed. Importing it stays light: pytest and the
standard library only; costtax's engines, reward models and pandas load when a fixture needs them.

    from costtax.pytest_plugin import assert_cost, assert_quality

    def test_bon4(costtax_profile):
        result = costtax_profile(technique="bon:n=4", prompts="helpful", limit=8)
        assert_cost(result, max_latency_p95_x=6, max_tokens_per_answer_x=4.2)
        assert_quality(result, min_win_rate=0.6)

Settings (command line wins over ini): --costtax-model / costtax_model, --costtax-engine /
costtax_engine, --costtax-reward-model / costtax_reward_model, --costtax-runs / costtax_runs
(where run directories go; default: pytest's tmp dir), and for tests and custom engines
--costtax-engine-factory / --costtax-scorer-factory (`module:callable`, called with no arguments,
returning an object with the Engine / RewardModel protocol). They are checked at collection when a
collected test uses a costtax fixture: a bad one stops the session with one line.

Fixtures: `costtax_engine` (session: started once, closed at the end), `costtax_scorer` (session,
loaded on first use), `costtax_profile` (function: call it to run one cell). The plain baseline
that the ×plain columns need runs once per session per (prompts, limit, sampling) and is shared:
each cell's run reuses it through profile(..., baseline_from=DIR). The result type and the
assertions live in costtax/compare/assertions.py and are re-exported here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pytest

from .compare.assertions import CellResult, CosttaxLimitError, assert_cost, assert_quality, cell_result  # noqa: F401  (public here)

_FIXTURES = ("costtax_engine", "costtax_scorer", "costtax_profile", "costtax_session")
# name -> (command-line flag, ini key, default, help)
_SETTINGS = {
    "model": ("--costtax-model", "costtax_model", None, "local HF model directory or embedded alias (default: costtax's default model)"),
    "engine": ("--costtax-engine", "costtax_engine", "vllm", "vllm | hf (default vllm)"),
    "reward_model": ("--costtax-reward-model", "costtax_reward_model", "judge", "reward model spec for selection and evaluation (default judge)"),
    "runs": ("--costtax-runs", "costtax_runs", None, "directory for the run directories (default: pytest's tmp dir)"),
    "engine_factory": ("--costtax-engine-factory", "costtax_engine_factory", None, "module:callable returning an engine (tests, custom engines)"),
    "scorer_factory": ("--costtax-scorer-factory", "costtax_scorer_factory", None, "module:callable returning a reward model (tests)"),
}


# -- options and their validation -------------------------------------------------------------------
def pytest_addoption(parser):
    group = parser.getgroup("costtax", "costtax: cost and quality regression tests for alignment techniques")
    for name, (flag, ini, default, help_) in _SETTINGS.items():
        group.addoption(flag, dest=f"costtax_{name}", default=None, help=help_)
        parser.addini(ini, help=help_, default=None)


def pytest_configure(config):
    config.addinivalue_line("markers", "costtax: a test that profiles alignment techniques with the costtax plugin")


@dataclass(frozen=True)
class Settings:
    model: str
    engine: str
    reward_model: str
    runs: str | None
    engine_factory: str | None
    scorer_factory: str | None
    source: Mapping[str, str] = field(default_factory=dict)  # name -> "--flag" or "ini key" (for errors)


def settings(config) -> Settings:
    values, source = {}, {}
    for name, (flag, ini, default, _) in _SETTINGS.items():
        v = config.getoption(f"costtax_{name}", None)
        where = flag
        if v is None:
            v = config.getini(ini) or None
            where = f"{ini} (ini)"
        if v is None:
            v = default
            where = flag
        values[name] = v.strip() if isinstance(v, str) else v
        source[name] = where
    if values["model"] is None:
        from .model_files import DEFAULT_MODEL

        values["model"] = DEFAULT_MODEL
    return Settings(**values, source=source)


def _load_factory(spec: str, field_: str):
    import importlib

    mod, sep, attr = spec.partition(":")
    if not sep or not mod or not attr:
        raise _usage(field_, spec, "write module:callable, e.g. mypkg.engines:make_engine")
    try:
        obj = importlib.import_module(mod)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise _usage(field_, spec, f"cannot import it ({type(exc).__name__}: {exc})") from None
    if not callable(obj):
        raise _usage(field_, spec, "is not callable")
    return obj


def _usage(field_: str, value, fix: str) -> pytest.UsageError:
    return pytest.UsageError(f"costtax: {field_}: bad value {value!r}: {fix}")


def validate(s: Settings) -> None:
    """Raise pytest.UsageError (one line) for a bad setting. File checks only, no model load."""
    from .config import ENGINE_NAMES
    from .errors import ConfigError
    from .run.preflight import check_model

    if s.engine not in ENGINE_NAMES:
        raise _usage(s.source["engine"], s.engine, f"use one of: {', '.join(ENGINE_NAMES)}")
    if s.engine_factory is None:
        try:
            check_model(s.model, field=s.source["model"])
        except ConfigError as exc:
            raise pytest.UsageError(f"costtax: {exc}") from None
    for name in ("engine_factory", "scorer_factory"):
        if getattr(s, name):
            _load_factory(getattr(s, name), s.source[name])
    if s.scorer_factory is None:
        from .rewards import validate_reward_spec

        try:
            validate_reward_spec(s.reward_model, field=s.source["reward_model"])
        except ConfigError as exc:
            raise pytest.UsageError(f"costtax: {exc}") from None


def pytest_collection_modifyitems(session, config, items):
    # Only sessions that use the plugin pay for (and can fail on) its settings: it loads in every
    # pytest run of the environment.
    if any(any(f in getattr(item, "fixturenames", ()) for f in _FIXTURES) for item in items):
        validate(settings(config))


# -- the session: engine, scorer, cached baselines ---------------------------------------------------
class _SharedScorer:
    """The session's reward model as profile() sees it: profile closes the scorers it is given at
    the end of every run, which must not unload the shared one."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def close(self) -> None:
        pass


class CosttaxSession:
    def __init__(self, s: Settings, runs_dir: Path):
        self.settings = s
        self.runs_dir = Path(runs_dir)
        self._engine = None
        self._scorer = None
        self._baselines: dict[tuple, Path] = {}
        self._counter = 0

    def engine(self):
        if self._engine is None:
            s = self.settings
            if s.engine_factory:
                engine = _load_factory(s.engine_factory, s.source["engine_factory"])()
            else:
                from .engines import make_engine
                from .model_files import resolve_model

                # Same engine arguments as `costtax profile` with its defaults.
                kwargs: dict[str, Any] = dict(seed=0, max_model_len=2048, trust_remote_code=False)
                if s.engine == "vllm":
                    kwargs["enable_prefix_caching"] = True
                engine = make_engine(s.engine, str(resolve_model(s.model)), **kwargs)
            engine.start()
            self._engine = engine
        return self._engine

    def scorer(self):
        if self._scorer is None:
            s = self.settings
            if s.scorer_factory:
                scorer = _load_factory(s.scorer_factory, s.source["scorer_factory"])()
            else:
                from .rewards import make_reward_model

                scorer = make_reward_model(s.reward_model)
            scorer.load()
            self._scorer = scorer
        return self._scorer

    def next_dir(self, label: str) -> Path:
        self._counter += 1
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)[:60].strip("_") or "cell"
        return self.runs_dir / f"{self._counter:03d}-{safe}"

    def baseline(self, config) -> Path:
        """The plain run for these prompts and sampling, run once per session."""
        key = (config.prompts, config.limit, config.repeats, config.max_tokens, config.temperature, config.top_p, config.seed)
        if key not in self._baselines:
            import dataclasses

            base = dataclasses.replace(config, techniques=("plain",))
            out = self.next_dir("baseline-plain")
            result = _run_cell(base, engine=self.engine(), scorer=_SharedScorer(self.scorer()), baseline_dir=None, out=out)
            if result.cells_failed:
                raise RuntimeError(f"the plain baseline failed; see {out / 'run.json'}")
            self._baselines[key] = out
        return self._baselines[key]

    def close(self) -> None:
        for obj in (self._engine, self._scorer):
            if obj is not None:
                try:
                    obj.close()
                except Exception:
                    pass
        self._engine = self._scorer = None


def _run_cell(config, *, engine, scorer, baseline_dir: Path | None, out: Path):
    """Run one cell on the shared engine into a new run directory `out`; returns the RunResult.
    With `baseline_dir`, profile() reuses that run's plain cell (profile(baseline_from=...))."""
    import dataclasses

    from .run.profile import profile

    config = dataclasses.replace(config, out=str(out))
    return profile(config, engine=engine, scorer=scorer, baseline_from=baseline_dir)


@pytest.fixture(scope="session")
def costtax_session(request, tmp_path_factory):
    s = settings(request.config)
    runs = Path(s.runs).expanduser() if s.runs else tmp_path_factory.mktemp("costtax-runs")
    runs.mkdir(parents=True, exist_ok=True)
    sess = CosttaxSession(s, runs)
    yield sess
    sess.close()


@pytest.fixture(scope="session")
def costtax_engine(costtax_session):
    """The session's engine, started on first use (one cold start per test session)."""
    return costtax_session.engine()


@pytest.fixture(scope="session")
def costtax_scorer(costtax_session):
    """The session's reward model (selection and evaluation), loaded on first use."""
    return costtax_session.scorer()


class Profiler:
    """The callable `costtax_profile` fixture: one cell per call, on the session's engine."""

    def __init__(self, request, session: CosttaxSession):
        self._request = request
        self._session = session

    def _fail(self, what: str) -> None:
        __tracebackhide__ = True
        pytest.fail(f"{self._request.node.nodeid}: costtax_profile: {what}", pytrace=False)

    def __call__(
        self,
        technique: str = "bon:n=4",
        prompts: str | tuple[str, ...] = "helpful",
        limit: int = 8,
        *,
        max_tokens: int = 64,
        temperature: float = 0.7,
        top_p: float = 1.0,
        seed: int = 0,
        repeats: int = 1,
        constitution: str | None = None,
        benchmark=None,
        rounds: int = 1,
        warmup_rounds: int = 0,
    ) -> CellResult:
        """Run `technique` (one cell, e.g. "bon:n=4") on the first `limit` prompts of `prompts`.

        With `benchmark` (pytest-benchmark's fixture) the cell is timed with benchmark.pedantic:
        `rounds` timed runs after `warmup_rounds` untimed ones, each a fresh run of the cell, and
        the last round's cost and quality fields go to benchmark.extra_info.
        """
        __tracebackhide__ = True
        from .config import RunConfig
        from .errors import ConfigError, CosttaxError

        args = dict(technique=technique, prompts=prompts, limit=limit, max_tokens=max_tokens, temperature=temperature,
                    top_p=top_p, seed=seed, repeats=repeats)
        if isinstance(prompts, str):
            prompts = (prompts,)
        for name, v in (("limit", limit), ("max_tokens", max_tokens), ("repeats", repeats), ("rounds", rounds), ("warmup_rounds", warmup_rounds)):
            if isinstance(v, bool) or not isinstance(v, int):
                self._fail(f"{name}={v!r}: use an integer")
        if rounds < 1 or warmup_rounds < 0:
            self._fail(f"rounds={rounds!r}, warmup_rounds={warmup_rounds!r}: use rounds >= 1 and warmup_rounds >= 0")
        if not isinstance(technique, str):
            self._fail(f"technique={technique!r}: use a technique spec string such as 'bon:n=4'")
        try:
            config = RunConfig(
                model=self._session.settings.model, engine=self._session.settings.engine, techniques=(technique,),
                prompts=tuple(prompts), limit=limit, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                seed=seed, repeats=repeats, reward_model=self._session.settings.reward_model, constitution=constitution,
                judge_calibration=False,
            )
        except ConfigError as exc:
            arg = exc.field.lstrip("-").replace("-", "_")
            arg = {"techniques": "technique"}.get(arg, arg)
            problem = f"{arg}={args.get(arg, exc.value)!r}: {exc.fix}"
        else:
            problem = None
        if problem:  # failed outside the except block: no chained traceback in the report
            self._fail(problem)
        cells = [c.cell for c in config.cells if c.cell != "plain"] or ["plain"]
        if len(cells) != 1:
            self._fail(f"technique={technique!r} expands to {len(cells)} cells ({', '.join(cells)}); profile one per call")
        cell = cells[0]
        test = self._request.node.nodeid
        label = f"{self._request.node.name}-{cell}"
        try:
            # Prompt sources are checked before any engine starts (a typo fails in a second).
            from .prompts import load_prompts

            load_prompts(config.prompts, limit=config.limit, seed=config.seed)
            baseline = self._session.baseline(config)
            if cell == "plain" and benchmark is None:
                return cell_result(baseline, "plain", test)
            engine = self._session.engine()
            scorer = _SharedScorer(self._session.scorer())
            done: list[Any] = []

            def one_round():
                out = self._session.next_dir(label)
                if cell == "plain":
                    res = _run_cell(config, engine=engine, scorer=scorer, baseline_dir=None, out=out)
                else:
                    res = _run_cell(config, engine=engine, scorer=scorer, baseline_dir=baseline, out=out)
                done.append(res)

            if benchmark is not None:
                benchmark.pedantic(one_round, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)
            else:
                one_round()
        except ConfigError as exc:
            arg = {"--prompts": "prompts", "--constitution": "constitution"}.get(exc.field, exc.field)
            problem = f"{arg}: bad value {exc.value!r}: {exc.fix}"
        except CosttaxError as exc:
            problem = str(exc)
        if problem:
            self._fail(problem)
        res = done[-1]
        if res.cells_failed:
            from .store.rundata import RunData

            errs = [f["error"] for f in RunData.open(res.run_dir, records=False).meta.get("failures", []) if f.get("cell") == cell]
            self._fail(f"cell {cell} failed: {errs[-1] if errs else 'see run.json'} (run dir {res.run_dir})")
        result = cell_result(res.run_dir, cell, test)
        if benchmark is not None:
            benchmark.extra_info.update(result.extra_info())
        return result


@pytest.fixture
def costtax_profile(request, costtax_session) -> Profiler:
    """Call it: costtax_profile(technique="bon:n=4", prompts="helpful", limit=8, ...) -> CellResult."""
    return Profiler(request, costtax_session)
