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
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
set -euo pipefail
SL="$1"; W="$2/vera-peft"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY=/usr/bin/python3
TOL=1e-5
KEY=1234
RUN_TIMEOUT=300
rm -rf "$W"; mkdir -p "$W"
"$PY" - > "$W/data.jsonl" <<'PY'
import json, random
rng = random.Random(9)
for i in range(6):
    n = rng.randint(12, 30)
    print(json.dumps({"input_ids": [rng.randrange(259) for _ in range(n)]}))
PY
"$SL" make-model --out "$W/model" --layers 2 --hidden 64 --ffn 128 --heads 4 --kv-heads 2 --vocab 259 --seed 3 > /dev/null
CHK=("$PY" "$HERE/vera_check.py" --model "$W/model")
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
  timeout "$RUN_TIMEOUT" mpiexec -n "$tp" "$SL" eval --tp "$tp" "$@" "${EV[@]}" --out "$out" > "$out.log" 2>&1 \
    || { tail "$out.log"; echo "FAIL: eval $*"; exit 1; }
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
    timeout "$RUN_TIMEOUT" mpiexec -n "$n" "$SL" merge --model "$W/model" --adapter "$W/$src" --out "$W/merged-$src-$n" \
      --threads 1 --chunk-bytes 4096 > "$W/merge-$src-$n.log" 2>&1 || { tail "$W/merge-$src-$n.log"; echo "FAIL: merge $src"; exit 1; }
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
timeout "$RUN_TIMEOUT" "$SL" merge --model "$W/model" --adapter "$W/sub" --out "$W/merged-sub" --threads 1 \
  > "$W/merge-sub.log" 2>&1 || { tail "$W/merge-sub.log"; echo "FAIL: merge sub"; exit 1; }
"${CHK[@]}" --merged "$W/merged-sub" --adapter "$W/sub" --tol $TOL
cp -r "$W/sub" "$W/sub-missing"
"$PY" - "$W/sub-missing/adapter_model.safetensors" "$HERE" <<'PY'
import sys
sys.path.insert(0, sys.argv[2])
import torch_llama as tl
t, meta = tl.read_safetensors(sys.argv[1])
tl.write_safetensors(sys.argv[1], {k: v for k, v in t.items() if "layers.1.mlp.down_proj" not in k}, meta)
PY
rc=0
"$SL" merge --model "$W/model" --adapter "$W/sub-missing" --out "$W/merged-missing" --threads 1 > "$W/missing.log" 2>&1 || rc=$?
if [ "$rc" != 3 ] || ! grep -q "down_proj' is targeted by adapter_config.json .* but has no vera_lambda_d" "$W/missing.log" \
   || [ "$(grep -c error "$W/missing.log")" != 1 ] || [ -e "$W/merged-missing" ]; then
  cat "$W/missing.log"; echo "FAIL: merge of an adapter missing a targeted module's lambdas: exit $rc"; exit 1
fi
echo "  ok   targeted module without lambdas refused by merge (exit 3): $(grep -o "module '.*" "$W/missing.log" | cut -c1-90)"
cmp "$W/merged-peft-1/model.safetensors" "$W/merged-peft-nosave-1/model.safetensors"
echo "  ok   merge with saved and with regenerated projections: identical"
grep -q '"vera_tensors": 14' "$W/merged-peft-1/merge-summary.json" || { cat "$W/merged-peft-1/merge-summary.json"; echo "FAIL: vera_tensors"; exit 1; }
for tp in 1 2; do
  ev "$tp" "$W/merged-tp$tp.json" --model "$W/merged-peft-1"
  evals "$W/merged-tp$tp.json" "$W/peft-tp$tp.json"
done

printf '%s\n' '{"input_ids": [1, 2, 3, 4, 5]}' '{"input_ids": [100, 200, 50, 7, 8, 9, 250, 33, 12]}' \
  '{"input_ids": [42]}' > "$W/prompts.jsonl"
GEN=(--model "$W/model" --adapter "$W/peft" --prompts "$W/prompts.jsonl" --max-new-tokens 12 --ignore-eos
     --batch-size 2 --threads 1)
for tp in 1 2; do
  for how in unmerged merged; do
    extra=(); [ "$how" = merged ] && extra=(--merge-in-memory)
    timeout "$RUN_TIMEOUT" mpiexec -n "$tp" "$SL" generate --tp "$tp" "${GEN[@]}" "${extra[@]}" \
      --out "$W/gen-$how-tp$tp.jsonl" --dump-logits "$W/gen-$how-tp$tp.st" > "$W/gen-$how-tp$tp.log" 2>&1 \
      || { tail "$W/gen-$how-tp$tp.log"; echo "FAIL: generate $how tp $tp"; exit 1; }
  done
  grep -q "(merged in memory)" "$W/gen-merged-tp$tp.log" || { tail "$W/gen-merged-tp$tp.log"; echo "FAIL: tp $tp did not merge in memory"; exit 1; }
  "$PY" "$HERE/generate_check.py" --same-results "$W/gen-unmerged-tp$tp.jsonl" "$W/gen-merged-tp$tp.jsonl"
  "$PY" "$HERE/generate_check.py" --dump "$W/gen-merged-tp$tp.st" --compare "$W/gen-unmerged-tp$tp.st" --tol $TOL
done

# training continues from the PEFT adapter: its key and projections are kept in the export
"$SL" train --model "$W/model" --data "$W/data.jsonl" --out "$W/cont" --init-adapter "$W/peft-nosave" --steps 2 \
  --seq-len 24 --no-pack --threads 1 --seed 5 --log-level warn > "$W/cont.log" 2>&1 || { tail "$W/cont.log"; echo "FAIL: train --init-adapter"; exit 1; }
"$PY" - "$W/cont/adapter" "$W/peft" "$HERE" <<'PY'
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
"$PY" - "$W/tampered/adapter_model.safetensors" <<'PY'
import json, struct, sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
n = struct.unpack("<Q", b[:8])[0]
o = 8 + n + json.loads(b[8:8 + n])["base_model.vera_B"]["data_offsets"][0] + 4 * 7
b[o:o + 4] = struct.pack("<f", struct.unpack("<f", b[o:o + 4])[0] * 1.5)
open(p, "wb").write(b)
PY
rc=0
"$SL" eval --model "$W/model" --adapter "$W/tampered" "${EV[@]}" > "$W/tampered.log" 2>&1 || rc=$?
WANT="not those of its projection_prng_key $KEY"
if [ "$rc" != 3 ] || ! grep -q "$WANT" "$W/tampered.log" || [ "$(grep -c error "$W/tampered.log")" != 1 ]; then
  cat "$W/tampered.log"; echo "FAIL: tampered projections: exit $rc, expected 3 and one line with '$WANT'"; exit 1
fi
echo "  ok   tampered projections refused: $(grep -o 'vera_B\[.*' "$W/tampered.log" | head -1)"
echo "vera_peft_case: OK"
