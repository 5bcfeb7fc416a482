#!/usr/bin/env bash
# `make gpu-check`: the checks that need a GPU, in at most ~8 minutes on one GPU. Writes
# everything to results/bench/ (gpu-check.log, gpu-tests.txt, cuda.md, cuda.json,
# gpu-smoke/). Each step has its own time limit so a slow step cannot eat the others;
# the exit status is the first failing step's.
#   1. the `gpu`-marked tests (tests/test_gpu.py): CUDA == CPU in fp32, bf16 trains
#      (trainer.precision), compile keeps the search's sigmas (trainer.compile), resume;
#   2. scripts/bench_epoch.py on CUDA: ResNet18 (compiled too) and DenseNet121 at width 1.0
#      on the full training set, fewer steps a turn than a whole epoch;
#   3. concurrent runs on the GPU (1, 2, 4, 8): the best jobs_per_gpu of the local launcher;
#   4. one short real run: bgd-run ... trainer.device=cuda budget=smoke.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
BGD_RUN=${BGD_RUN:-$(dirname "$PY")/bgd-run}
OUT=${OUT_DIR:-results/bench}
DATA=${BGD_CIFAR10_ROOT:-../shared/data/cifar10-jpeg.tar.gz}
mkdir -p "$OUT"
LOG="$OUT/gpu-check.log"
: >"$LOG"
status=0

step() {  # step <name> <seconds> <command...>
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s): $*" | tee -a "$LOG"
    local began=$SECONDS
    timeout --signal=TERM --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - began))s" | tee -a "$LOG"
    if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then status=$rc; fi
}

if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu-check: no CUDA device here; nothing to check (the gpu tests skip on CPU)" | tee -a "$LOG"
    exit 1
fi
"$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name(), 'torch', torch.__version__)" \
    | tee -a "$LOG"

step "gpu tests" 140 "$PY" -m pytest -q -m gpu tests/test_gpu.py -rs \
    --junitxml="$OUT/gpu-tests.xml"

step "epoch benchmark" 190 "$PY" scripts/bench_epoch.py --device cuda --data "$DATA" \
    --model resnet18,densenet121 --compile-models resnet18 --steps 40 --repeats 2 \
    --out "$OUT"

step "runs per GPU" 90 "$PY" scripts/bench_runs_per_gpu.py --device cuda --counts 1,2,4,8 \
    --steps 40 --warmup 10 --out "$OUT"

# The smoke run reads the real archive where it exists, else tiny generated CIFAR files.
SMOKE_DATA=$DATA
if [ ! -e "$SMOKE_DATA" ]; then
    SMOKE_DATA=$(mktemp -d)
    PYTHONPATH=tests "$PY" -c "from datagen import write_torchvision_cifar as w; \
w('$SMOKE_DATA', 'cifar10', 30, 12, 0)"
fi
step "bgd-run smoke on cuda" 60 "$BGD_RUN" optimizer=mbt_nag budget=smoke trainer.device=cuda \
    trainer.progress=plain "dataset.root=$SMOKE_DATA" "results_dir=$OUT/gpu-smoke"

echo "gpu-check: exit $status; log $LOG" | tee -a "$LOG"
exit "$status"
