#!/usr/bin/env bash
# VeRA adapters made as PEFT makes them (issue 9): vera_check.py --make-peft writes what PEFT's
# save_pretrained writes for VeraConfig(r=8, projection_prng_key=1234) with trained-looking
# lambdas, the projections from torch's generator (PEFT's _init_vera_A_vera_B). Checks:
# - eval --adapter at tp=1 and tp=2 agree, and the same adapter without its projections
#   (save_projection false: shardlora regenerates them from the key) gives the same loss;
# - `shardlora merge` (1 and 2 ranks, byte-identical; with and without saved projections):
#   the merged model's logits = base + VeRA unmerged by PEFT's formula in PyTorch, and its
#   eval = the unmerged adapter's eval (relative 1e-5), at tp=1 and tp=2;
# - generate --merge-in-memory: greedy ids identical and logits equal to unmerged (tp=1, 2);
# - train --init-adapter continues from it (exports key 1234 and its projections);
# - an adapter whose saved projections are not its key's is refused (exit 3, one line).
# usage: vera_peft_case.sh SHARDLORA_BINARY WORK_DIR
set -euo pipefail
SL="$1"; W="$2/vera-peft"
# shellcheck source=tests/reference/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
TOL=1e-5
KEY=1234
RUN_TIMEOUT=300
make_data "$W/data.jsonl" --seed 9 --rows 6 --len 12 30 --vocab 259
"$SL" make-model --out "$W/model" --layers 2 --hidden 64 --ffn 128 --heads 4 --kv-heads 2 --vocab 259 --seed 3 > /dev/null
CHK=("$PY" "$REF/vera_check.py" --model "$W/model")
"${CHK[@]}" --make-peft "$W/peft" --key $KEY --r 8 --targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj
"${CHK[@]}" --make-peft "$W/peft-nosave" --key $KEY --r 8 --targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj --no-save-projection

EV=(--data "$W/data.jsonl" --seq-len 24 --no-pack --threads 1 --log-level warn)
evals() { # evals A.json B.json: relative difference <= TOL and the same token counts
  "$PY" - "$1" "$2" "$TOL" <<'PY'
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
e = abs(a["loss"] - b["loss"]) / abs(b["loss"])
ok = e <= float(sys.argv[3]) and a["tokens"] == b["tokens"]
print(f"  {'ok  ' if ok else 'FAIL'} eval {sys.argv[1].rsplit('/', 1)[-1]} {a['loss']:.9f} vs "
      f"{sys.argv[2].rsplit('/', 1)[-1]} {b['loss']:.9f}: relative {e:.2e} (tol {sys.argv[3]})")
sys.exit(0 if ok else 1)
PY
}
ev() { # ev TP OUT.json ARGS...
  local tp="$1" out="$2"; shift 2
  must "$out.log" "eval $*" mpiexec -n "$tp" "$SL" eval --tp "$tp" "$@" "${EV[@]}" --out "$out"
}
ev 1 "$W/base.json" --model "$W/model"
for tp in 1 2; do
  ev "$tp" "$W/peft-tp$tp.json" --model "$W/model" --adapter "$W/peft"
  ev "$tp" "$W/nosave-tp$tp.json" --model "$W/model" --adapter "$W/peft-nosave"
  evals "$W/nosave-tp$tp.json" "$W/peft-tp$tp.json"
done
evals "$W/peft-tp2.json" "$W/peft-tp1.json"
"$PY" -c "
import json, sys
b, a = json.load(open('$W/base.json'))['loss'], json.load(open('$W/peft-tp1.json'))['loss']
ok = abs(a - b) > 1e-3
print(f\"  {'ok  ' if ok else 'FAIL'} the adapter changes the loss: base {b:.6f}, with the adapter {a:.6f}\")
sys.exit(0 if ok else 1)"

for src in peft peft-nosave; do
  for n in 1 2; do
    must "$W/merge-$src-$n.log" "merge $src" mpiexec -n "$n" "$SL" merge --model "$W/model" --adapter "$W/$src" \
      --out "$W/merged-$src-$n" --threads 1 --chunk-bytes 4096
  done
  cmp "$W/merged-$src-1/model.safetensors" "$W/merged-$src-2/model.safetensors"
  echo "  ok   merge of $src on 1 and 2 ranks: model.safetensors identical"
  "${CHK[@]}" --merged "$W/merged-$src-1" --adapter "$W/peft" --tol $TOL
done
# a subset of the modules (q_proj [64, 64], down_proj [64, 128]): the regenerated projections
# are sized by the targeted modules (PEFT's _find_dim), so merge = PEFT's formula here too; a
# targeted module whose lambdas are missing is refused (a merge without it would also size
# the projections differently), exit 3 and one line
"${CHK[@]}" --make-peft "$W/sub" --key 77 --r 4 --targets q_proj,down_proj --no-save-projection
must "$W/merge-sub.log" "merge sub" "$SL" merge --model "$W/model" --adapter "$W/sub" --out "$W/merged-sub" --threads 1
"${CHK[@]}" --merged "$W/merged-sub" --adapter "$W/sub" --tol $TOL
cp -r "$W/sub" "$W/sub-missing"
st_drop "$W/sub-missing/adapter_model.safetensors" layers.1.mlp.down_proj
ONE_LINE=1 expect_refused missing "down_proj' is targeted by adapter_config.json .* but has no vera_lambda_d" \
  "$SL" merge --model "$W/model" --adapter "$W/sub-missing" --out "$W/merged-missing" --threads 1
[ ! -e "$W/merged-missing" ] || { echo "FAIL: a refused merge left $W/merged-missing"; exit 1; }
cmp "$W/merged-peft-1/model.safetensors" "$W/merged-peft-nosave-1/model.safetensors"
echo "  ok   merge with saved and with regenerated projections: identical"
grep -q '"vera_tensors": 14' "$W/merged-peft-1/merge-summary.json" || { cat "$W/merged-peft-1/merge-summary.json"; echo "FAIL: vera_tensors"; exit 1; }
for tp in 1 2; do
  ev "$tp" "$W/merged-tp$tp.json" --model "$W/merged-peft-1"
  evals "$W/merged-tp$tp.json" "$W/peft-tp$tp.json"
done

gen_merged_vs_unmerged $TOL --model "$W/model" --adapter "$W/peft" --max-new-tokens 12 --ignore-eos \
  --batch-size 2 --threads 1

# training continues from the PEFT adapter: its key and projections are kept in the export
must "$W/cont.log" "train --init-adapter" "$SL" train --model "$W/model" --data "$W/data.jsonl" --out "$W/cont" \
  --init-adapter "$W/peft-nosave" --steps 2 --seq-len 24 --no-pack --threads 1 --seed 5 --log-level warn
"$PY" - "$W/cont/adapter" "$W/peft" "$REF" <<'PY'
import json, os, sys
sys.path.insert(0, sys.argv[3])
import torch_llama as tl
a, b = sys.argv[1], sys.argv[2]
ca = json.load(open(os.path.join(a, "adapter_config.json")))
ta, _ = tl.read_safetensors(os.path.join(a, "adapter_model.safetensors"))
tb, _ = tl.read_safetensors(os.path.join(b, "adapter_model.safetensors"))
same = all(bool((ta[k] == tb[k]).all()) for k in ("base_model.vera_A", "base_model.vera_B"))
ok = ca["projection_prng_key"] == 1234 and same
print(f"  {'ok  ' if ok else 'FAIL'} train --init-adapter: projection_prng_key {ca['projection_prng_key']}, "
      f"projections equal to PEFT's: {same}")
sys.exit(0 if ok else 1)
PY

# refused: projections that are not the key's (one value of vera_B changed)
cp -r "$W/peft" "$W/tampered"
st_scale "$W/tampered/adapter_model.safetensors" base_model.vera_B 7
ONE_LINE=1 expect_refused tampered "not those of its projection_prng_key $KEY" "$SL" eval --model "$W/model" \
  --adapter "$W/tampered" "${EV[@]}"
echo "vera_peft_case: OK"
