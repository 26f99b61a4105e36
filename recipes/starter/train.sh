#!/usr/bin/env bash
# Train the bundled starter model (asymseg-starter-deepmedic) on the two BRATS 2015 cases.
#
#   recipes/starter/train.sh [--smoke] [--work DIR] [--data DIR] [--device auto|cpu|cuda]
#                            [--threads N] [--note TEXT] [--install]
#
# Stages (settings in final.json beside this script):
#   0. the phantom base (phantom_base.sh with final.json's "phantom_base"), when an entry of
#      "compare" is named <technique>-phantoms: that technique fine-tuned from the base;
#   1. leave-one-out runs: for each entry in final.json's "compare", the original DeepMedic
#      from scratch (or from the base) on one case, validated on the other, both ways (loo.py;
#      resumable, snapshots);
#   2. score every snapshot on its held-out case, with the operating points (loo_eval.py);
#   3. the final model: the same network from scratch (or from the base) on BOTH cases with
#      final.json's technique,
#      stopped at its "stop_at" iteration of the "iterations"-long schedule (chosen from stage 2's
#      table, see README.md), so it matches the leave-one-out snapshot it was chosen by;
#   4. its operating point, chosen on the two held-out cases of the leave-one-out folds of that
#      technique and iteration (asymseg operating-point --fold-model ... --write);
#   5. the model card (data, technique, iterations, operating point, leave-one-out numbers, licence).
# Every stage resumes where it stopped when the same command is given again.
# --smoke runs the chain at toy scale (a 4-layer network, 4 iterations) to check it in minutes.
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
THREADS="1"
SMOKE=0
INSTALL=0
NOTE=""
if [[ -x "$REPO/.venv/bin/python" ]]; then PY="${PY:-$REPO/.venv/bin/python}"; else PY="${PY:-python3}"; fi
source "$HERE/lib.sh"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --install) INSTALL=1 ;;
    --work) WORK="$2"; shift ;;
    --data) DATA="$2"; shift ;;
    --device) DEVICE="$2"; shift ;;
    --threads) THREADS="$2"; shift ;;
    --note) NOTE="$2"; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "train.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

CASE_A="$DATA/brats_2013_pat0005_1"
CASE_B="$DATA/brats_2013_pat0006_1"
for case in "$CASE_A" "$CASE_B"; do
  if [[ ! -d "$case" ]]; then
    echo "train.sh: $case: no such case folder (the two BRATS 2015 cases; pass --data DIR)" >&2
    exit 2
  fi
done
if [[ $INSTALL -eq 1 && $SMOKE -eq 1 ]]; then
  echo "train.sh: --install refused for a --smoke run" >&2
  exit 2
fi

# setting KEY[.KEY]: a value of final.json (a list joined by commas).
setting() { "$PY" -c "import functools,json,sys; v=functools.reduce(lambda d,k: d[k], sys.argv[1].split('.'), json.load(open('$HERE/final.json'))); print(','.join(map(str,v)) if isinstance(v,list) else v)" "$1"; }
TECHNIQUE="$(setting technique)"
ITERATIONS="$(setting iterations)"
STOP="$(setting stop_at)"
COMPARE="$(setting compare)"
SNAPSHOT="$(setting snapshot_every)"
SCORE_AT="$(setting score_at)"
BATCH="$(setting batch_size)"
EXTRA=()
if [[ $SMOKE -eq 1 ]]; then
  ITERATIONS=4; STOP=4; SNAPSHOT=2; SCORE_AT="2,4"; COMPARE="$TECHNIQUE"
  EXTRA=("${SMOKE_NETWORK[@]}")
  BATCH=2
fi
asymseg() { "$PY" -m asymseg --threads "$THREADS" "$@"; }
stamp() { date +%s; }

mkdir -p "$WORK"
echo "starter recipe: work $WORK, data $DATA, device $DEVICE, $TECHNIQUE, $STOP of $ITERATIONS iterations, smoke $SMOKE"
T0=$(stamp)

# 0. The phantom base, for the entries named <technique>-phantoms.
PLAIN=(); FROM_BASE=()
for entry in ${COMPARE//,/ }; do
  if [[ "$entry" == *-phantoms ]]; then FROM_BASE+=("${entry%-phantoms}"); else PLAIN+=("$entry"); fi
done
BASE="$WORK/phantom-base/base"
if [[ ${#FROM_BASE[@]} -gt 0 || "$TECHNIQUE" == *-phantoms ]]; then
  PB_ARGS=(--work "$WORK/phantom-base" --threads "$THREADS" --cases "$(setting phantom_base.cases)"
           --size "$(setting phantom_base.size)" --iterations "$(setting phantom_base.iterations)")
  if [[ "$(setting phantom_base.vessels)" == "True" ]]; then PB_ARGS+=(--vessels); fi
  if [[ $SMOKE -eq 1 ]]; then PB_ARGS=(--work "$WORK/phantom-base" --threads "$THREADS" --smoke); fi
  PY="$PY" bash "$HERE/phantom_base.sh" "${PB_ARGS[@]}"
fi
join() { local IFS=,; echo "$*"; }

# 1-2. Leave-one-out runs and their scores (one file for every entry).
LOO_ARGS=(--data "$DATA" --iterations "$ITERATIONS" --snapshot-every "$SNAPSHOT" --batch-size "$BATCH"
          --lr "$(setting lr)" --optimizer "$(setting optimizer)" --seed "$(setting seed)" --threads "$THREADS")
if [[ ${#PLAIN[@]} -gt 0 ]]; then
  "$PY" "$HERE/loo.py" --work "$WORK/loo" --techniques "$(join "${PLAIN[@]}")" "${LOO_ARGS[@]}" -- "${EXTRA[@]}"
  "$PY" "$HERE/loo_eval.py" --work "$WORK/loo" --data "$DATA" --techniques "$(join "${PLAIN[@]}")" \
    --iterations "$SCORE_AT" --out "$WORK/loo-eval.json"
fi
if [[ ${#FROM_BASE[@]} -gt 0 ]]; then  # the base fixes the network: no --smoke network options
  "$PY" "$HERE/loo.py" --work "$WORK/loo-phantoms" --techniques "$(join "${FROM_BASE[@]}")" --base-model "$BASE" \
    "${LOO_ARGS[@]}"
  RENAME=(); for technique in "${FROM_BASE[@]}"; do RENAME+=(--rename "$technique=$technique-phantoms"); done
  "$PY" "$HERE/loo_eval.py" --work "$WORK/loo-phantoms" --data "$DATA" --techniques "$(join "${FROM_BASE[@]}")" \
    "${RENAME[@]}" --iterations "$SCORE_AT" --out "$WORK/loo-eval.json"
fi
T1=$(stamp)

# 3. The final model on both cases.
if [[ "$TECHNIQUE" == *-phantoms ]]; then
  START=(--base-model "$BASE"); FOLD_WORK="$WORK/loo-phantoms"; RUN_TECHNIQUE="${TECHNIQUE%-phantoms}"
  FINAL_EXTRA=(); BASE_CARD=(--base "$BASE")
else
  START=(--architecture deepmedic --channels flair,t1c); FOLD_WORK="$WORK/loo"; RUN_TECHNIQUE="$TECHNIQUE"
  FINAL_EXTRA=("${EXTRA[@]}"); BASE_CARD=()
fi
if [[ "$(done_iterations "$WORK/final.run")" != "$STOP" ]]; then
  if [[ -f "$WORK/final.run/checkpoint/state.json" ]]; then
    asymseg finetune --resume "$WORK/final.run" --stop-after "$STOP" --progress none --json > "$WORK/final-result.json"
  else
    asymseg finetune "${START[@]}" --label-convention brats2015 \
      --train-case "$CASE_A" --train-case "$CASE_B" --technique "$RUN_TECHNIQUE" --iterations "$ITERATIONS" \
      --stop-after "$STOP" --batch-size "$BATCH" --optimizer "$(setting optimizer)" --lr "$(setting lr)" \
      --schedule "$(setting schedule)" --seed "$(setting seed)" --val-every "$STOP" --checkpoint-every "$SNAPSHOT" \
      --operating-point none --device "$DEVICE" "${FINAL_EXTRA[@]}" --output-model "$WORK/final" \
      --run-dir "$WORK/final.run" --overwrite --progress none --json > "$WORK/final-result.json"
  fi
fi
T2=$(stamp)

# 4. The operating point from the two leave-one-out folds of that technique and iteration.
"$PY" "$HERE/loo_eval.py" --work "$FOLD_WORK" --out "$WORK/folds" --export "$RUN_TECHNIQUE@$STOP"
asymseg operating-point --model "$WORK/final" --val-case "$CASE_B" --val-case "$CASE_A" \
  --fold-model "$WORK/folds/5to6" --fold-model "$WORK/folds/6to5" --device "$DEVICE" --write --json \
  --progress none > "$WORK/operating-point.json"
T3=$(stamp)

# 5. The card; then load and verify the model.
"$PY" "$HERE/finalize.py" --name "$NAME" --final "$WORK/final" --final-result "$WORK/final-result.json" \
  --loo-eval "$WORK/loo-eval.json" --loo-work "$WORK/loo" --loo-work "$WORK/loo-phantoms" "${BASE_CARD[@]}" --seconds "loo=$((T1 - T0)),final=$((T2 - T1)),operating_point=$((T3 - T2))" \
  --threads "$THREADS" --device "$DEVICE" ${NOTE:+--note "$NOTE"} $([[ $SMOKE -eq 1 ]] && echo --smoke) \
  --out "$WORK/$NAME"
asymseg models show "$WORK/$NAME"

if [[ $INSTALL -eq 1 ]]; then
  DEST="$REPO/AsymSeg/asymseg/models/$NAME"
  rm -rf "$DEST.tmp" && mkdir -p "$DEST.tmp"
  cp "$WORK/$NAME/model.json" "$WORK/$NAME/model.safetensors" "$DEST.tmp/"
  rm -rf "$DEST" && mv "$DEST.tmp" "$DEST"
  echo "installed $DEST"
fi
echo "starter model: $WORK/$NAME"
