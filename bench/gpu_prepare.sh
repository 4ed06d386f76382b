#!/usr/bin/env bash
# Gather, on a machine with pip, what bench/gpu_check.sh needs on a GPU machine without internet
# whose image has PyTorch but not pedtune's other training imports:
#
#   bench/gpu_prepare.sh DATA [PYTHON_VERSION]
#
# .gpudata/PennFudanPed: a copy of DATA (an extracted PennFudanPed; default: $PEDTUNE_BENCH_DATA);
# .whl/: wheels for PYTHON_VERSION (default 3.12) of pydantic and pycocotools, faster-coco-eval
# and what they need, at the versions installed here. Both folders are git-ignored; send them
# along with the working tree (about 56 MB together) and run
#   bash bench/gpu_check.sh .gpudata/PennFudanPed OUT
# A failed download leaves the previous .whl/ as it was.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-${PEDTUNE_BENCH_DATA:-}}
if [ -z "$data" ]; then
    echo "gpu_prepare: no dataset: pass DATA (an extracted PennFudanPed) or set PEDTUNE_BENCH_DATA" >&2
    exit 2
fi
python_version=${2:-3.12}
python=${PYTHON:-python}
if [ ! -d "$data/PNGImages" ] || [ ! -d "$data/PedMasks" ]; then
    echo "gpu_prepare: $data is not an extracted PennFudanPed (no PNGImages/ and PedMasks/)" >&2
    exit 2
fi
# What a stock PyTorch image lacks of pedtune's training and benchmark imports (Ray, MLflow and
# DVC are not needed: gpu_check.sh runs no sweep).
names='pydantic|pydantic[-_]core|annotated[-_]types|typing[-_]inspection|pycocotools|faster[-_]coco[-_]eval'
mapfile -t pins < <("$python" -m pip list --format=freeze | grep -i -E "^($names)==")
if [ "${#pins[@]}" -ne 6 ]; then
    echo "gpu_prepare: expected 6 of ${names//|/, } installed here (pip install -r requirements.txt), found: ${pins[*]:-none}" >&2
    exit 2
fi
partial=$(mktemp -d .whl.partial.XXXXXX)
trap 'rm -rf "$partial"' EXIT
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version "$python_version" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$partial" "${pins[@]}"
rm -rf .whl
mv "$partial" .whl
rm -rf .gpudata
mkdir -p .gpudata
cp -r "$data" .gpudata/PennFudanPed
du -sh .whl .gpudata
