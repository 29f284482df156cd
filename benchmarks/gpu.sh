#!/usr/bin/env bash
# kerastl on one NVIDIA GPU: every backend's speed, one JSON.
#
#   benchmarks/gpu.sh [OUTPUT_DIR]        # default: gpu-bench/
#   KERASTL_GPU_DRY_RUN=1 benchmarks/gpu.sh   # print the plan, run nothing
#
# From the repository root, on a machine with an NVIDIA GPU (sized for one
# H200 in under 8 minutes). It
#   1. installs kerastl with the GPU builds of JAX, TensorFlow and PyTorch
#      into $KERASTL_GPU_VENV (default .venv-gpu; reused when present);
#   2. runs `kerastl bench` on jax, tensorflow and torch for ResNet-50 and
#      ViT-B/16 (random weights) at 224 px, in float32 and mixed_bfloat16,
#      with the photo pipeline rows once (they do not depend on the backend);
#   3. runs a smoke `kerastl fit recipes/pets.py` on each backend;
#   4. records `kerastl info` and `nvidia-smi`, and writes everything to
#      OUTPUT_DIR/gpu-bench.json (each step's log beside it).
# A step that fails is recorded with its exit status and the rest go on.
set -euo pipefail

OUT=${1:-gpu-bench}
VENV=${KERASTL_GPU_VENV:-.venv-gpu}
DRY_RUN=${KERASTL_GPU_DRY_RUN:-0}
BACKENDS=(jax tensorflow torch)
MODELS=(resnet50 vit_base)
POLICIES=(float32 mixed_bfloat16)
# Enough steps for a steady GPU rate, few enough to fit the time budget.
BENCH_ARGS=(--image-size 224 --batch-size 64 --steps 20 --warmup 3
  --repeats 2 --cache-epochs 0)

if [[ ! -f pyproject.toml || ! -d kerastl ]]; then
  echo "Run benchmarks/gpu.sh from the kerastl repository root." >&2
  exit 2
fi
if [[ $DRY_RUN != 1 ]] &&
  ! { command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | grep -q GPU; }; then
  echo "benchmarks/gpu.sh measures kerastl on an NVIDIA GPU, and" \
    "nvidia-smi finds none here. Run it on a GPU machine, or use" \
    "'kerastl bench' for this machine's CPU numbers." >&2
  exit 2
fi

run() {
  # run NAME COMMAND...: logs to OUT/NAME.log, records the exit status.
  local name=$1
  shift
  if [[ $DRY_RUN == 1 ]]; then
    echo "$name: $*"
    return 0
  fi
  local start=$SECONDS status=0
  echo "== $name: $*"
  "$@" >"$OUT/$name.log" 2>&1 || status=$?
  echo "$name $status $((SECONDS - start))" >>"$OUT/steps.txt"
  echo "   exit $status in $((SECONDS - start)) s"
}

if [[ $DRY_RUN != 1 ]]; then
  mkdir -p "$OUT"
  : >"$OUT/steps.txt"
  if [[ ! -x $VENV/bin/kerastl ]]; then
    python3 -m venv "$VENV"
    # The constraints pin torch to a CPU build; the GPU wheels come from
    # PyPI's default (CUDA) torch, jax[cuda12] and tensorflow[and-cuda].
    grep -v '^torch==' constraints.txt >"$OUT/gpu-constraints.txt"
    "$VENV/bin/python" -m pip install -q -c "$OUT/gpu-constraints.txt" \
      -e ".[all]" "jax[cuda12]" "tensorflow[and-cuda]" torch
  fi
  export PATH="$PWD/$VENV/bin:$PATH"
  nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
fi

photos=16
for backend in "${BACKENDS[@]}"; do
  run "info-$backend" env KERAS_BACKEND="$backend" kerastl info
  for model in "${MODELS[@]}"; do
    for policy in "${POLICIES[@]}"; do
      run "bench-$backend-$model-$policy" env KERAS_BACKEND="$backend" \
        kerastl bench --model "$model" --dtype-policy "$policy" \
        "${BENCH_ARGS[@]}" --photos "$photos" \
        --output "$OUT/bench-$backend-$model-$policy.json"
      photos=0
    done
  done
  run "fit-$backend" env KERAS_BACKEND="$backend" \
    kerastl fit recipes/pets.py --smoke --output-dir "$OUT/runs-$backend"
done

if [[ $DRY_RUN == 1 ]]; then
  exit 0
fi
python3 benchmarks/gpu_collect.py "$OUT"
