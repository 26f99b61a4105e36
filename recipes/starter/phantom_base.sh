#!/usr/bin/env bash
# Pre-train the original DeepMedic on phantoms, as a base for leave-one-out runs (loo.py --base-model).
#
#   recipes/starter/phantom_base.sh [--work DIR] [--cases N] [--size X,Y,Z] [--iterations N]
#                                   [--vessels] [--threads N] [--smoke]
#
# The question it answers: does a network that has seen many synthetic tumours (necrosis from
# FLAIR-dark to FLAIR-bright, always dark on T1c, inside an enhancing rim, with FLAIR-bright,
# non-enhancing oedema around it) transfer better from ONE real case to the other than the same
# network from scratch? The BRATS 2015 pair needs it: pat0005's necrotic centre (half its core)
# is FLAIR-dark and T1c-dark, while pat0006's core is FLAIR-bright throughout, so a model trained
# on pat0006 alone has never seen a core that looks like pat0005's.
#
# Stages (each resumes where it stopped when the same command is given again):
#   1. --cases phantom cases (default 24) of --size voxels at 1 mm (default 192,192,160: brains of
#      about 0.9 l, cores 0.5-9 % of the brain), FLAIR + T1c, seed 2026; with --vessels, the
#      same phantoms with the vessels that enhance like a tumour rim (venous sinuses along the
#      brain's edge, cortical veins, choroid plexus) as background;
#   2. the original DeepMedic from scratch on all of them: ce, the authors' RMSProp, lr 1e-3 with
#      the step schedule, batch 6, --iterations (default 1000), no validation, no operating point.
# The base model is DIR/base; then, for example:
#   recipes/starter/loo.py --work DIR/loo --techniques ce --base-model DIR/base --threads 1
#   recipes/starter/loo_eval.py --work DIR/loo --out DIR/loo-eval.json --iterations 1000,1500,2000
# --smoke: 3 phantoms of 48^3, a 4-layer network, 4 iterations (checks the chain in a minute).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
WORK="${TMPDIR:-/tmp}/asymseg-phantom-base"
CASES=24
SIZE="192,192,160"
ITERATIONS=1000
THREADS=1
SMOKE=0
VESSELS=0
if [[ -x "$REPO/.venv/bin/python" ]]; then PY="${PY:-$REPO/.venv/bin/python}"; else PY="${PY:-python3}"; fi
source "$HERE/lib.sh"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --work) WORK="$2"; shift ;;
    --cases) CASES="$2"; shift ;;
    --size) SIZE="$2"; shift ;;
    --iterations) ITERATIONS="$2"; shift ;;
    --threads) THREADS="$2"; shift ;;
    --smoke) SMOKE=1 ;;
    --vessels) VESSELS=1 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "phantom_base.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

EXTRA=()
BATCH=6
if [[ $SMOKE -eq 1 ]]; then
  CASES=3; SIZE=48; ITERATIONS=4; BATCH=2
  EXTRA=("${SMOKE_NETWORK[@]}")
fi
asymseg() { "$PY" -m asymseg --threads "$THREADS" "$@"; }

mkdir -p "$WORK"
echo "phantom base: work $WORK, $CASES phantoms of $SIZE voxels, vessels $VESSELS, $ITERATIONS iterations, smoke $SMOKE"

# 1. Phantoms (kept when complete; rewritten when an earlier run stopped part-way).
PHANTOM_ARGS=(--out "$WORK/phantoms" --cases "$CASES" --size "$SIZE" --seed 2026 --progress none)
if [[ $VESSELS -eq 1 ]]; then PHANTOM_ARGS+=(--vessels); fi
if [[ -f "$WORK/phantoms/phantom.json" ]]; then
  made="$("$PY" -c 'import json, sys; print(int(bool(json.load(open(sys.argv[1])).get("vessels", False))))' \
    "$WORK/phantoms/phantom.json")"
  if [[ "$made" != "$VESSELS" ]]; then
    echo "phantom_base.sh: $WORK/phantoms: written with vessels $made, asked $VESSELS; use another --work" >&2
    exit 2
  fi
else
  asymseg phantom "${PHANTOM_ARGS[@]}" --overwrite
fi
ls -d "$WORK"/phantoms/phantom_* > "$WORK/train-cases.txt"

# 2. Pre-training from scratch (a finished run is left as it is).
if [[ "$(done_iterations "$WORK/base.run")" == "$ITERATIONS" && -f "$WORK/base/model.json" ]]; then
  echo "phantom base: already trained ($ITERATIONS iterations)"
elif [[ -f "$WORK/base.run/checkpoint/state.json" ]]; then
  asymseg finetune --resume "$WORK/base.run" --progress none --json > "$WORK/base-result.json"
else
  asymseg finetune --train-cases-from "$WORK/train-cases.txt" --label-convention brats2017 \
    --architecture deepmedic --channels flair,t1c --technique ce --iterations "$ITERATIONS" \
    --batch-size "$BATCH" --optimizer rmsprop --lr 1e-3 --schedule step --seed 0 \
    --val-every "$ITERATIONS" --checkpoint-every 100 --operating-point none "${EXTRA[@]}" \
    --output-model "$WORK/base" --run-dir "$WORK/base.run" --overwrite --progress none --json \
    > "$WORK/base-result.json"
fi
echo "phantom base model: $WORK/base"
