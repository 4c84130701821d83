#!/usr/bin/env bash
# The prepared GPU check (issue 31): one script, under 8 minutes on one GPU.
#   1. the `gpu` tests (tests/test_gpu.py): every family's tiny recipe a few steps on CUDA in fp32,
#      bf16 and compiled with finite losses near fp32's, CUDA samplers equal to the CPU's, exact
#      resume on CUDA, no host sync in a training step (torch.cuda.set_sync_debug_mode);
#   2. bench/gpu.py: per family, ms per step on the CPU and on CUDA in fp32, bf16 and compiled,
#      peak GPU memory, examples or tokens per second and the GPT's model-FLOPs utilisation,
#      written to bench/results/gpu.json.
# Without a GPU it measures the CPU column only (to $TMPDIR), says there is no GPU and exits 0.
#   bash bench/gpu_check.sh   (PY=path/to/python: another interpreter; GPU_CHECK_FAMILIES=a,b: some
#                              families only, in the CPU part)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export PYTHONPATH="src:tests${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); running the CPU part only" >&2
  "$PY" bench/gpu.py --quick ${GPU_CHECK_FAMILIES:+--families "$GPU_CHECK_FAMILIES"} || exit $?
  echo "gpu_check: no GPU, so the gpu tests and the CUDA columns were skipped; nothing written to bench/results" >&2
  exit 0
fi
"$PY" -c 'import torch; print("gpu_check:", torch.cuda.get_device_name(), "torch", torch.__version__)'
status=0
timeout 300 "$PY" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py tests/test_host_syncs.py \
  2>&1 | tee /tmp/gpu_tests.log || status=1
timeout 240 "$PY" bench/gpu.py --steps 20 --warm 3 || status=1
cp /tmp/gpu_tests.log bench/results/gpu_tests.log 2>/dev/null || true
exit $status
