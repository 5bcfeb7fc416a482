#!/usr/bin/env bash
# `make gpu-check`: the checks that need a GPU, in at most 7 min 20 s on one GPU.
#   tests  the `gpu`-marked tests (tests/test_gpu.py): CUDA == CPU in fp32, bf16 trains,
#          compile keeps the search's sigmas, a killed bgd-run resumes;
#   smoke  one short MBT-NAG run: python -m bgd_experiments.cli ... budget=smoke;
#   epoch  scripts/bench_epoch.py: ResNet18 (compiled too) and DenseNet121 at width 1.0 on
#          the full training set, fewer steps a turn than a whole epoch;
#   runs   scripts/bench_runs_per_gpu.py: 1, 2, 4, 8 concurrent runs, the best jobs_per_gpu.
# Each step has its own time limit and a failing step does not stop the others; the exit
# status is the first failing step's. Every result goes to $GPU_OUT (at most 8 small files:
# gpu-check.log, gpu-check.json with each step's status and seconds and the provenance,
# gpu-tests.xml, smoke-metrics.jsonl, <device>.md/.json, runs_per_gpu.md/.json).
#
# Modes (docs/gpu.md):
#   default    PY=.venv/bin/python, the project installed as usual;
#   OFFLINE=1  a bare machine without registries: PY (default python3) is the machine's own
#              Python; the wheels in $WHEELS (.whl) are installed into a temporary folder that
#              goes on PYTHONPATH with the repository; data from .data/ (make device-bundle);
#   DRY=1      OFFLINE on this CPU machine at toy size (make gpu-check-dry): the same path
#              with the stand-in image's Python, DEVICE=cpu, and the out folder checked
#              against what a device call brings back.
# GPU_STEPS picks steps (default "tests smoke epoch runs"), e.g. GPU_STEPS=runs for a rerun.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
DRY=${DRY:-0}
OFFLINE=${OFFLINE:-$DRY}
[ "$DRY" = 1 ] && OFFLINE=1
if [ "$OFFLINE" = 1 ]; then
    PY=${PY:-python3}
    DATA=${DATA:-$ROOT/.data/cifar10-jpeg.tar.gz}
else
    PY=${PY:-.venv/bin/python}
    DATA=${DATA:-${BGD_CIFAR10_ROOT:-../shared/data/cifar10-jpeg.tar.gz}}
fi
DEVICE=${DEVICE:-$([ "$DRY" = 1 ] && echo cpu || echo cuda)}
WHEELS=${WHEELS:-.whl}
GPU_OUT=${GPU_OUT:-results/bench}
STEPS=${GPU_STEPS:-tests smoke epoch runs}

offline_env() {  # as on a machine that reaches no registry, whatever this one's pip is told
    export PIP_NO_INDEX=1 PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
    unset PIP_FIND_LINKS PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_CONSTRAINT
    # The repository itself, not an installed copy: bgd_experiments, hydra_plugins.
    export PYTHONPATH="$ROOT:$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
}

preflight() {
    set -e
    echo "python $PY, device $DEVICE, data $DATA$([ "$OFFLINE" = 1 ] && echo ", wheels $WHEELS")"
    if [ "$OFFLINE" != 1 ]; then
        "$PY" scripts/gpu_check_support.py preflight --device "$DEVICE"
        return
    fi
    offline_env
    compgen -G "$WHEELS/*.whl" >/dev/null \
        || { echo "no wheels in $WHEELS: run make device-bundle first" >&2; return 1; }
    [ -f "$DATA" ] || { echo "no $DATA: run make device-bundle first" >&2; return 1; }
    (cd "$WHEELS" && sha256sum --quiet --strict -c SHA256SUMS)
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --target "$WORK/site" "$WHEELS"/*.whl
    # Checks that need not stop a GPU run (its steps then fail or not on their own), but do
    # stop the dry run, which is where they are meant to be caught.
    local strict=()
    [ "$DRY" = 1 ] && strict=(--strict)
    if ! (cd "$(dirname "$DATA")" && sha256sum --quiet --strict -c SHA256SUMS); then
        echo "WARNING: $DATA is not the archive the bundle recorded"
        [ "$DRY" = 1 ] && return 1
    fi
    # pyproject.toml's dependencies are all met by this Python and the wheels alone.
    "$PY" scripts/gpu_check_support.py requirements >"$WORK/requirements.txt"
    if ! "$PY" -m pip install -q --dry-run --no-index --find-links "$WHEELS" \
        -r "$WORK/requirements.txt"; then
        echo "WARNING: pip cannot meet pyproject.toml's dependencies offline here"
        [ "$DRY" = 1 ] && return 1
    fi
    "$PY" scripts/gpu_check_support.py preflight --site "$WORK/site" --device "$DEVICE" \
        "${strict[@]}"
}

if [ "${1:-}" = --preflight ]; then  # this script again, under the preflight's time limit
    preflight
    exit
fi

mkdir -p "$GPU_OUT"
GPU_OUT=$(cd "$GPU_OUT" && pwd)
RESULTS=$GPU_OUT
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
# An out folder inside the checkout (the default, results/bench) may hold tracked files:
# written during the run they would make every step record a dirty tree. There the
# results are written to a staging folder and copied in when the script ends; elsewhere (the
# device call's $OUT) they are written in place, so a run killed by its time limit keeps them.
case "$GPU_OUT/" in
    "$ROOT"/*) GPU_OUT=$WORK/out && mkdir -p "$GPU_OUT" ;;
esac
publish() {
    if [ "$GPU_OUT" != "$RESULTS" ]; then cp -f "$GPU_OUT"/* "$RESULTS"/ 2>/dev/null; fi
    rm -rf "$WORK"
}
trap publish EXIT
LOG="$GPU_OUT/gpu-check.log"
: >"$LOG"
: >"$WORK/steps.tsv"
export PYTHONUNBUFFERED=1 PYTHONNOUSERSITE=1
# The decoded images are cached once for every step, and never in the user's cache.
export BGD_CACHE_DIR="$WORK/cache" BGD_CIFAR10_ROOT="$DATA"
started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
status=0

log() { echo "$*" | tee -a "$LOG"; }
record() { printf '%s\t%s\t%s\t%s\n' "$@" >>"$WORK/steps.tsv"; }

step() {  # step <name> <seconds> <command...>
    local name=$1 limit=$2
    shift 2
    log "== $name (limit ${limit}s): $*"
    local began=$SECONDS
    # timeout signals the command's whole process group: a step's children end with it.
    timeout --signal=TERM --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    log "== $name: exit $rc after $((SECONDS - began))s"
    record "$name" "$rc" "$((SECONDS - began))" "$limit"
    if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then status=$rc; fi
    return "$rc"
}

wanted() { [[ " $STEPS " == *" $1 "* ]]; }

# Time limits (s): on a GPU they add up to 7 min 20 s; on 2 shared CPU cores they are loose.
if [ "$DRY" = 1 ]; then
    LIMIT_PRE=180 LIMIT_TESTS=180 LIMIT_SMOKE=180 LIMIT_EPOCH=240 LIMIT_RUNS=180
else
    LIMIT_PRE=45 LIMIT_TESTS=120 LIMIT_SMOKE=45 LIMIT_EPOCH=160 LIMIT_RUNS=70
fi

export OFFLINE DRY PY DATA DEVICE WHEELS WORK
step preflight "$LIMIT_PRE" bash "$ROOT/scripts/gpu_check.sh" --preflight
preflight_rc=$?
if [ "$OFFLINE" = 1 ]; then offline_env; fi

if [ "$preflight_rc" -eq 0 ]; then
    if wanted tests; then
        step tests "$LIMIT_TESTS" "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py \
            -rs --junitxml="$GPU_OUT/gpu-tests.xml"
    fi
    if wanted smoke; then
        step smoke "$LIMIT_SMOKE" "$PY" -m bgd_experiments.cli optimizer=mbt_nag budget=smoke \
            "trainer.device=$DEVICE" trainer.progress=plain "dataset.root=$DATA" \
            "results_dir=$WORK/smoke"
        metrics=$(find "$WORK/smoke" -name metrics.jsonl 2>/dev/null | head -n 1)
        if [ -n "$metrics" ]; then cp "$metrics" "$GPU_OUT/smoke-metrics.jsonl"; fi
    fi
    if wanted epoch; then
        if [ "$DRY" = 1 ]; then
            size=(--model resnet18 --width 0.0625 --images 400 --batch-size 50 --steps 3
                --repeats 1 --compile off --variants authors,nag-fp32,mbt-keep --num-batches 2
                --data-batches 2 --workers 1)
        else
            size=(--model resnet18,densenet121 --compile-models resnet18 --steps 30 --repeats 2)
        fi
        step epoch "$LIMIT_EPOCH" "$PY" scripts/bench_epoch.py --device "$DEVICE" \
            --data "$DATA" "${size[@]}" --out "$GPU_OUT"
    fi
    if wanted runs; then
        if [ "$DRY" = 1 ]; then
            size=(--counts 1,2 --width 0.0625 --images 400 --batch-size 50 --steps 3 --warmup 1
                --precision fp32)
        else
            size=(--counts 1,2,4,8 --steps 30 --warmup 10)
        fi
        step runs "$LIMIT_RUNS" "$PY" scripts/bench_runs_per_gpu.py --device "$DEVICE" \
            "${size[@]}" --out "$GPU_OUT"
    fi
else
    status=1
    log "gpu-check: preflight failed; no step run"
fi

log "== summary"
strict=()
[ "$DRY" = 1 ] && strict=(--strict)
"$PY" scripts/gpu_check_support.py summary --out "$GPU_OUT" --steps "$WORK/steps.tsv" \
    --stamp "$ROOT/.whl" --data "$DATA" --mode "$([ "$DRY" = 1 ] && echo dry || echo gpu)" \
    --device "$DEVICE" --started "$started" --seconds "$SECONDS" "${strict[@]}" 2>&1 \
    | tee -a "$LOG"
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then status=$rc; fi
log "gpu-check: exit $status after ${SECONDS}s; results in $RESULTS"
exit "$status"
