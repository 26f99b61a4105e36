# Shared by the starter recipe's scripts (sourced; needs $PY).

# The toy network of --smoke runs: 4 layers of 4 features, 8 in the fully connected layer, no dropout.
SMOKE_NETWORK=(--network-param 'normal_features=[4,4,4,4]' --network-param 'lowres_features=[4,4,4,4]'
               --network-param 'fc_features=[8]' --network-param 'dropout=[0.0,0.0]')

# done_iterations RUN_DIR: the iterations a finetune run's checkpoint holds (0 without one).
done_iterations() {
  "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['iteration'])" "$1/checkpoint/state.json" \
    2>/dev/null || echo 0
}
