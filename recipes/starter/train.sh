#!/usr/bin/env bash
# Train the bundled starter model (asymseg-starter-deepmedic) from scratch.
#
#   recipes/starter/train.sh [--smoke] [--work DIR] [--data DIR] [--device auto|cpu|cuda]
#                            [--threads N] [--note TEXT] [--install]
#
# Stages (settings in pretrain.json and finetune.json beside this script):
#   1. 18 phantom cases, 96^3 voxels, FLAIR + T1c (16 for training, 2 for validation);
#   2. pre-train the original DeepMedic from scratch on the 16 phantoms (ce);
#   3. fine-tune it on BRATS 2015 case pat0005 with the asymmetric combination (combo),
#      validated once, at the end, on the unseen case pat0006 (no model selection on it);
#   4. write the model card (data, technique, iterations, validation, licence) and verify it.
# --smoke runs the same commands at toy scale (4 phantoms of 32^3, 2 iterations per stage, and
# the fine-tuning validated on a phantom) to check the chain in a few minutes.
# --note TEXT is recorded in the card's provenance.compute (e.g. other load on the machine).
# --install copies the result into AsymSeg/asymseg/models/asymseg-starter-deepmedic.
# Everything else is written under --work (default ${TMPDIR:-/tmp}/asymseg-starter).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
NAME="asymseg-starter-deepmedic"
WORK="${TMPDIR:-/tmp}/asymseg-starter"
DATA="$REPO/../shared/data/brats2015"
DEVICE="auto"
THREADS=""
SMOKE=0
INSTALL=0
NOTE=""
if [[ -x "$REPO/.venv/bin/python" ]]; then PY="${PY:-$REPO/.venv/bin/python}"; else PY="${PY:-python3}"; fi

while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --install) INSTALL=1 ;;
    --work) WORK="$2"; shift ;;
    --data) DATA="$2"; shift ;;
    --device) DEVICE="$2"; shift ;;
    --threads) THREADS="$2"; shift ;;
    --note) NOTE="$2"; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "train.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

TRAIN_REAL="$DATA/brats_2013_pat0005_1"
VAL_REAL="$DATA/brats_2013_pat0006_1"
for case in "$TRAIN_REAL" "$VAL_REAL"; do
  if [[ ! -d "$case" ]]; then
    echo "train.sh: $case: no such case folder (the two BRATS 2015 cases; pass --data DIR)" >&2
    exit 2
  fi
done

asymseg() { "$PY" -m asymseg ${THREADS:+--threads "$THREADS"} "$@"; }
stamp() { date +%s; }

if [[ $SMOKE -eq 1 ]]; then
  CASES=4; SIZE=32; N_TRAIN=3; SCALE=(--iterations 2 --batch-size 2 --val-every 2)
else
  CASES=18; SIZE=96; N_TRAIN=16; SCALE=()
fi

mkdir -p "$WORK"
echo "starter recipe: work folder $WORK, data $DATA, device $DEVICE, smoke $SMOKE"
T0=$(stamp)

# 1. Phantom cases (deterministic: the same seed gives the same cases).
asymseg phantom --out "$WORK/phantoms" --cases "$CASES" --size "$SIZE" --seed 2015 \
  --channels flair,t1c --overwrite --progress none
PRETRAIN_CASES=(); PRETRAIN_VAL=()
for ((i = 0; i < CASES; i++)); do
  case_dir="$WORK/phantoms/$(printf 'phantom_%03d' "$i")"
  if ((i < N_TRAIN)); then PRETRAIN_CASES+=(--train-case "$case_dir"); else PRETRAIN_VAL+=(--val-case "$case_dir"); fi
done
T1=$(stamp)

# 2. Pre-training on phantoms, from scratch.
asymseg finetune --config "$HERE/pretrain.json" "${PRETRAIN_CASES[@]}" "${PRETRAIN_VAL[@]}" \
  --output-model "$WORK/pretrained" --device "$DEVICE" --overwrite "${SCALE[@]}" --json \
  > "$WORK/pretrain-result.json"
T2=$(stamp)

# 3. Fine-tuning on one real case with the asymmetric combination, validated on the other.
FINETUNE_VAL="$VAL_REAL"
[[ $SMOKE -eq 1 ]] && FINETUNE_VAL="${PRETRAIN_VAL[1]}"
asymseg finetune --config "$HERE/finetune.json" --base-model "$WORK/pretrained" \
  --train-case "$TRAIN_REAL" --val-case "$FINETUNE_VAL" \
  --output-model "$WORK/finetuned" --device "$DEVICE" --overwrite "${SCALE[@]}" --json \
  > "$WORK/finetune-result.json"
T3=$(stamp)

# 4. The card: provenance, validation, licence; then load and verify the model.
"$PY" "$HERE/finalize.py" --name "$NAME" --phantoms "$WORK/phantoms" --device "$DEVICE" --pretrained "$WORK/pretrained" --finetuned "$WORK/finetuned" \
  --pretrain-result "$WORK/pretrain-result.json" --finetune-result "$WORK/finetune-result.json" \
  --seconds "phantoms=$((T1 - T0)),pretrain=$((T2 - T1)),finetune=$((T3 - T2))" \
  ${THREADS:+--threads "$THREADS"} ${NOTE:+--note "$NOTE"} $([[ $SMOKE -eq 1 ]] && echo --smoke) \
  --out "$WORK/$NAME"
asymseg models show "$WORK/$NAME"

if [[ $INSTALL -eq 1 ]]; then
  if [[ $SMOKE -eq 1 ]]; then
    echo "train.sh: --install refused for a --smoke run" >&2
    exit 2
  fi
  DEST="$REPO/AsymSeg/asymseg/models/$NAME"
  rm -rf "$DEST.tmp" && mkdir -p "$DEST.tmp"
  cp "$WORK/$NAME/model.json" "$WORK/$NAME/model.safetensors" "$DEST.tmp/"
  rm -rf "$DEST" && mv "$DEST.tmp" "$DEST"
  echo "installed $DEST"
fi
echo "starter model: $WORK/$NAME"
