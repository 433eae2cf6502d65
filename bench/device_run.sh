#!/usr/bin/env bash
# Everything costtax checks on a lent GPU machine, in one call (see README "GPU checks").
# The device image has torch, transformers, triton, nvidia-ml-py, pandas, typer and
# pytest-benchmark but no vLLM and no network: costtax is installed without dependencies.
# Usage (on the device): bash bench/device_run.sh "$OUT"
set -u
OUT=${1:-${OUT:-/tmp/costtax-device}}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python -c "import torch, triton, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, 'transformers', transformers.__version__)"
  pip list 2>/dev/null | grep -i -E "^(typer|rich|pandas|psutil|nvidia-ml-py|matplotlib|sacrebleu|pyyaml|hypothesis|pytest) " || true
} > "$OUT/env.txt" 2>&1
pip install -q --no-deps --no-build-isolation -e . > "$OUT/install.log" 2>&1 || echo "install failed" >> "$OUT/install.log"
# 1. kernels vs references, kernel vs the best torch expression (GPU time and host cost per
#    call), random-weight HF models; results appended to $OUT/gpu_check.jsonl step by step,
#    so even a killed run leaves what it measured (SKIP_GPU_CHECK=1 skips it)
[ "${SKIP_GPU_CHECK:-0}" = 1 ] || timeout 270 python bench/gpu_check.py --out "$OUT" --budget-s ${GPU_CHECK_BUDGET_S:-240} > "$OUT/gpu_check.log" 2>&1
# 2. the GPU-marked tests and the kernel/reward suites on compiled Triton
timeout 100 python -m pytest -q -p no:cacheprovider tests/kernels tests/rewards/test_rewards.py tests/metering/test_metering.py -x > "$OUT/pytest_gpu.log" 2>&1
# 3. the HF engine end to end on CUDA: tiny random models, plain + bon, NVML energy/memory
python -c "from costtax.tiny import build_tiny_llama as b; b('/tmp/ct-lm'); b('/tmp/ct-rm', classifier=True)" > "$OUT/hf_profile.log" 2>&1
timeout 120 python -m costtax profile --engine hf --model /tmp/ct-lm -t plain -t bon:n=4,16 \
  --reward-model scalar:/tmp/ct-rm --limit 16 --max-tokens 32 --no-judge-calibration --out /tmp/ct-run >> "$OUT/hf_profile.log" 2>&1
cp /tmp/ct-run/summary.csv "$OUT/hf_summary.csv" 2>/dev/null
cp /tmp/ct-run/run.json "$OUT/hf_run.json" 2>/dev/null
ls -la "$OUT"
