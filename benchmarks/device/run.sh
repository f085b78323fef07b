#!/usr/bin/env bash
# One GPU check, run through the device tool from the repository root, with .gpu/ carried
# (made here first by: python benchmarks/device/prepare_carry.py):
#   1. training throughput per mode (bf16, batch 256, random towers) for efficientnet_lite0 and resnet18,
#      and the data pipeline's own rate;
#   2. grouped 5-fold cross-validation of the frozen mode and of the partial mode on the real data,
#      whose per-epoch lines also give the whole loop's pairs/s;
#   3. test retrieval of the partial mode's fold-0 checkpoint (fold 0 held out, as runs/default/best);
#   4. indexing: photos/s of wsense index's photo path on the GPU, the decode rate apart, and its agreement with
#      the CPU path (benchmarks/gpu_index.py on the original test photos that fit the carry, 20,000 photos in all).
# STEPS_RUN picks steps: "throughput frozen partial" (default), or e.g. "index" (step 4 alone), "partial" (steps 2's
# partial half and 3).
# Results go to $OUT (reports/ and logs). Sizes shrink by variables for a dry run on a CPU.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}; WORK=${WORK:-/tmp/gpu}
BATCH=${BATCH:-256}; STEPS=${STEPS:-20}; WARMUP=${WARMUP:-5}
PARTIAL_MODE=${PARTIAL_MODE:-partial}; PARTIAL_EPOCHS=${PARTIAL_EPOCHS:-6}; PARTIAL_LIMIT=${PARTIAL_LIMIT:-330}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1
PY=${PY:-python3}
mkdir -p "$OUT" "$WORK"
{ nvidia-smi -L; $PY -c "import torch, transformers, timm, accelerate; print('torch', torch.__version__,
  'transformers', transformers.__version__, 'timm', timm.__version__, 'accelerate', accelerate.__version__)"; } 2>&1 | tee "$OUT/env.log"
$PY benchmarks/device/prepare_carry.py --out .gpu --unpack "$WORK" --reports "$OUT/reports" || exit 1
STEPS_RUN=${STEPS_RUN:-throughput frozen partial}  # which of the steps to run (a second visit: partial only)
[[ " $STEPS_RUN " == *" throughput "* ]] && for config in config config_resnet18; do
  echo "== throughput, $config" | tee -a "$OUT/throughput.log"
  $PY benchmarks/train_throughput.py --random-init --batch "$BATCH" --steps "$STEPS" --warmup "$WARMUP" \
    --config "$WORK/$config.yaml" 2>&1 | grep -v Warning | tee -a "$OUT/throughput.log"
done
[[ " $STEPS_RUN " == *" frozen "* ]] && { echo "== cross-validation, frozen" | tee -a "$OUT/cv.log"
timeout 150 $PY evaluate.py --config "$WORK/config.yaml" --cross-validate --mode frozen \
  --output-dir "$WORK/runs/frozen" 2>&1 | tr '\r' '\n' | grep -aE "^(epoch [0-9]+/[0-9]+: train|cross|best|\|)|Error" | tee -a "$OUT/cv.log"; }
[[ " $STEPS_RUN " == *" index "* ]] && { echo "== indexing on the GPU" | tee -a "$OUT/index.log"
timeout 240 $PY benchmarks/gpu_index.py --config "$WORK/config.yaml" --images .gpu/originals \
  --photos "${INDEX_PHOTOS:-20000}" --out "$OUT" ${INDEX_ARGS:-} 2>&1 | grep -av "^embedding" | tee -a "$OUT/index.log"; }
[[ " $STEPS_RUN " == *" partial "* ]] || exit 0
echo "== cross-validation, $PARTIAL_MODE, $PARTIAL_EPOCHS epochs" | tee -a "$OUT/cv.log"
timeout "$PARTIAL_LIMIT" $PY evaluate.py --config "$WORK/config.yaml" --cross-validate --mode "$PARTIAL_MODE" \
  --epochs "$PARTIAL_EPOCHS" --output-dir "$WORK/runs/partial" 2>&1 | tr '\r' '\n' | grep -aE "^(epoch [0-9]+/[0-9]+: train|cross|best|\|)|Error" | tee -a "$OUT/cv.log"
echo "== test retrieval, $PARTIAL_MODE fold 0" | tee -a "$OUT/cv.log"
$PY evaluate.py --config "$WORK/config.yaml" --checkpoint "$WORK/runs/partial/cv/fold0/best" 2>&1 \
  | grep -E "^\||Error" | tee -a "$OUT/cv.log"
