# Shared by e2e scripts (sourced): the small made model and the two pre-tokenised data files
# that train_inputs.sh and run_safety.sh train on.
# e2e_model_and_data SHARDLORA PYTHON DIR: DIR/m (2 layers, hidden 64, vocab 259, seed 3),
# DIR/data.jsonl (40 rows of 64 ids) and DIR/other.jsonl (the first 36 of them), the ids
# being bytes of the GPL-3 text; exits 1 if make-model fails.
e2e_model_and_data() {
  local sl="$1" py="$2" dir="$3"
  "$sl" make-model --out "$dir/m" --layers 2 --hidden 64 --ffn 128 --heads 4 --kv-heads 2 \
    --vocab 259 --seed 3 > /dev/null || { echo "FAIL: make-model"; exit 1; }
  "$py" - /usr/share/common-licenses/GPL-3 "$dir" <<'PY'
import json, sys
b = open(sys.argv[1], 'rb').read()[:64 * 41]
with open(sys.argv[2] + "/data.jsonl", "w") as f:
    for i in range(0, 64 * 40, 64): f.write(json.dumps({"input_ids": list(b[i:i + 64])}) + "\n")
with open(sys.argv[2] + "/other.jsonl", "w") as f:
    for i in range(0, 64 * 36, 64): f.write(json.dumps({"input_ids": list(b[i:i + 64])}) + "\n")
PY
}
