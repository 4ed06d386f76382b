#!/usr/bin/env bash
# The GPU measurements issue 37 needs (and those issues 5 and 23 left), run in one go on a CUDA
# machine, most decisive first.
#
#   bash bench/gpu_check.sh DATA OUT [BUDGET_S]
#
# DATA: an extracted PennFudanPed; OUT: a folder for the results; BUDGET_S: the seconds the whole
# run may take (default 540): each step gets its own limit, cut to what is left of the budget, and
# a step left with under 20 s is skipped, so a run stopped from outside still leaves every result
# written so far. OUT receives gpu_check.log (every step's output and exit status) and the result
# files, named as bench/results/ names a script's variants: copy the JSON files there and
# re-print the table with `python -m bench.run_all --table-only`.
#
# Needs PyTorch with torchvision and the rest of pedtune's training imports; a machine without
# internet gets the missing ones as wheels from ./.whl, or the folder GPU_CHECK_WHEELS names
# (bench/gpu_prepare.sh gathers them and the dataset). GPU_CHECK_EXTRA (words added to every
# benchmark's arguments) and GPU_CHECK_EXTRA_<step> (words added to that step's, after its own, so
# they override them: GPU_CHECK_EXTRA_train_step="--steps 2") let the smoke test run the same steps
# at a tiny size on the CPU.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
    echo "usage: bench/gpu_check.sh DATA OUT [BUDGET_S]" >&2
    exit 2
fi
data=$1
out=$2
budget=${3:-540}
python=${PYTHON:-python3}
read -r -a extra <<< "${GPU_CHECK_EXTRA:-}"
mkdir -p "$out"
log="$out/gpu_check.log"
: > "$log"
deadline=$((SECONDS + budget))
failed=0

note() { echo "$*" | tee -a "$log"; }

# step NAME LIMIT_S COMMAND...: run COMMAND under its limit (cut to the budget left); stderr and
# the exit status go to the log, stdout too for the tests (a benchmark's stdout is its JSON file).
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((deadline - SECONDS))
    if [ "$left" -lt 20 ]; then
        note "== $name: skipped, ${left} s of the budget left"
        failed=1
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    note "== $name (limit ${limit} s): $*"
    local start=$SECONDS status
    if [ "$name" = tests ] || [ "$name" = environment ]; then
        timeout "$limit" "$@" >> "$log" 2>&1
    else
        timeout "$limit" "$@" 2>> "$log" > /dev/null
    fi
    status=$?
    note "== $name: exit ${status} after $((SECONDS - start)) s"
    [ "$status" -eq 0 ] || failed=1
}

wheels=${GPU_CHECK_WHEELS:-.whl}
if [ -d "$wheels" ]; then
    site=$(mktemp -d)
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheels"/*.whl \
        >> "$log" 2>&1 || { note "== installing the wheels in $wheels failed"; exit 1; }
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

bench() {  # bench NAME LIMIT_S RESULT MODULE ARGS...: one benchmark from params.yaml's GPU defaults
    local name=$1 limit=$2 result=$3 module=$4 own_var="GPU_CHECK_EXTRA_$1"
    shift 4
    local -a own
    read -r -a own <<< "${!own_var:-}"
    step "$name" "$limit" "$python" -m "bench.$module" --params params.yaml --data "$data" --device cuda "$@" \
        "${extra[@]}" "${own[@]}" --json "$out/$result.json"
}

step environment 60 "$python" -c "
import torch, torchvision, pedtune.engine.train, bench.mask_paste, bench.epoch_profile
print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda)
print('gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
# The CUDA branches of the code, before anything is timed on them.
step tests 150 "$python" -m pytest -q -p no:cacheprovider tests/cuda
# Issue 37: where one epoch of the defaults goes (R50, AMP, batch 2, with a checkpoint per epoch):
# steps, data wait, first-shape warm-up, val evaluation, hooks; epoch 3 under torch.profiler.
bench epoch_profile 200 epoch_profile_cuda epoch_profile --amp on --epochs 3
# Issues 23 and 37: trials per hour at 1, 0.5 and 0.25 GPU per trial (each capped at its share of
# the memory), and how busy the GPU is.
bench gpu_packing 240 gpu_packing_cuda gpu_packing
# Issue 37: the same epochs in fp32 and with AMP in bfloat16 (the defaults' AMP is float16), unprofiled.
bench epoch_profile_precisions 200 epoch_profile_cuda_fp32_bf16 epoch_profile --amp both --amp-dtype bfloat16 \
    --epochs 2 --profile-epoch 0
# Does the host-box paste save the per-mask syncs, and the column-major copy the RLE's copy?
bench mask_paste 120 mask_paste_cuda mask_paste --arch r50 --images 25 --reps 3
# The val evaluation's share of later epochs (target <= 5 %; 27.9 % of epoch 2 before both changes).
bench evaluation 240 evaluation_cuda_epochs4 evaluation --arch r50 --amp on --epochs 4 --reps 1 \
    --proposal-reps 1 --proposals 1000
# fit trains at 10.5 img/s against the step benchmark's 27-36: new batch shapes (60 steps meet
# many), and fewer of them when padded to multiples of 128?
bench train_step 120 train_step_cuda_steps60 train_step --arch r50 --amp on --steps 60 --reps 2
bench train_step_div128 120 train_step_cuda_steps60_div128 train_step --arch r50 --amp on --steps 60 --reps 2 \
    --size-divisible 128
note "== done: $([ "$failed" -eq 0 ] && echo 'every step passed' || echo 'a step failed or was skipped')"
exit "$failed"
