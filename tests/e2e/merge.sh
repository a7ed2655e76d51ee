#!/usr/bin/env bash
# `shardlora merge` end to end (issue 8, "Merge at scale"), checked by tests/e2e/merge_check.py
# (json + struct + torch, PEFT's formulas written out; tests/reference/torch_llama.py runs the
# models):
#  1. the merged files pass a strict safetensors check, keep the input's headers, the index is
#     consistent, config and tokenizer files are copied;
#  2. every adapted tensor equals PEFT's merge computed in Python (F32 within 1e-6; BF16/F16:
#     torch's rounding of the F32 merge, within 1 ulp, bit-exact for dyadic 'exact' factors),
#     every other tensor is byte-identical; the merged model's logits equal the unmerged adapted
#     model's: relative 1e-5 for F32; BF16 / F16 within TOL_HALF (the merged weights are rounded
#     to 8 / 11 significant bits, 2^-9 / 2^-12 relative, once per weight, while the unmerged
#     model adds s·B A x in full precision);
#     adapters: trained by `shardlora train` (F32, and BF16 sharded with an index and tied
#     embeddings), and written here with rank_pattern / alpha_pattern and a subset of modules,
#     rsLoRA, DoRA (F32 and BF16 factors), on F32, BF16 and F16 models;
#  3. 1, 3 and 4 ranks write byte-identical files;
#  4. on a 230 MB model in 4 files, each rank's peak RSS (merge-summary.json) grows by no more
#     than its buffers (+ a small slack for the allocator and MPI) and stays under its slice,
#     with --chunk-bytes 1 MiB and with the default 64 MiB;
#  5. bad inputs: one error line, the right exit status, no rank hangs, nothing left in OUT.
# The Python checks run in batches (merge_check.py batch): one torch import for many checks.
# usage: merge.sh SHARDLORA_BINARY WORK_DIR
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
set -euo pipefail
SL="$1"; W="$2/merge"
PY=/usr/bin/python3
CHK="$(cd "$(dirname "$0")" && pwd)/merge_check.py"
TOL_F32=1e-5
TOL_HALF=2e-2
SLACK_MIB=8           # allocator arenas, MPI's first messages, stdio: measured < 1 MiB
RUN_TIMEOUT=300
rm -rf "$W"; mkdir -p "$W"

merge() { # merge NP ARGS...: shardlora merge on NP ranks (one thread each)
  local np="$1"; shift
  timeout "$RUN_TIMEOUT" mpiexec --oversubscribe -n "$np" "$SL" merge --threads 1 "$@"
}

# ---- models ----------------------------------------------------------------------------
"$SL" make-model --out "$W/f32" --layers 2 --hidden 64 --ffn 176 --heads 4 --kv-heads 2 --vocab 300 \
  --qkv-bias --seed 5 > /dev/null 2>&1
"$SL" make-model --out "$W/bf16" --layers 3 --hidden 64 --ffn 160 --heads 4 --kv-heads 2 --vocab 300 \
  --tie --dtype BF16 --shards 3 --seed 6 > /dev/null 2>&1
"$SL" make-model --out "$W/big" --layers 8 --hidden 512 --ffn 1408 --heads 8 --kv-heads 4 --vocab 32000 \
  --shards 4 --seed 9 2>&1 | sed 's/^/big: /'
"$PY" - "$W/f16" "$(dirname "$CHK")/../reference" <<'PY'
import json, os, sys, torch
sys.path.insert(0, sys.argv[2])
import torch_llama as tl
cfg = tl.random_config(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=128, torch_dtype="float16")
tl.write_model_dir(sys.argv[1], cfg, tl.random_weights(cfg, seed=3, std=0.15, norm_jitter=0.1), shards=2,
                   dtype=torch.float16)
for name, obj in (("generation_config.json", {"bos_token_id": 1, "eos_token_id": 2}),
                  ("special_tokens_map.json", {"eos_token": "</s>"})):
    json.dump(obj, open(os.path.join(sys.argv[1], name), "w"))
PY
for i in $(seq 40); do echo "{\"text\": \"merge test line $i: the quick brown fox jumps over the lazy dog\"}"; done > "$W/data.jsonl"

# ---- adapters --------------------------------------------------------------------------
for m in f32 bf16; do
  "$SL" train --model "$W/$m" --data "$W/data.jsonl" --out "$W/train_$m" --steps 3 --lr 1e-2 --seq-len 32 \
    --threads 1 > "$W/train_$m.log" 2>&1 || { tail "$W/train_$m.log"; echo "FAIL: train $m"; exit 1; }
done
# batch: merge_check.py sub-commands on stdin, one process
batch() { "$PY" "$CHK" batch -; }
PAT="--modules q_proj,v_proj,down_proj --r 8 --alpha 16 --rank-pattern layers.1.self_attn.q_proj=4 down_proj=2"
PAT+=" --alpha-pattern v_proj=4 --rslora"
# the adapters of 1, 2 and 4, and the bad ones of 5 (described there)
batch > /dev/null <<EOF
adapter $W/f32 $W/a_pat $PAT
adapter $W/f32 $W/a_dora --dora --r 4 --alpha 8
adapter $W/bf16 $W/a_bf16_dora --dora --modules q_proj,o_proj,up_proj --bf16 --seed 2
adapter $W/bf16 $W/a_bf16_exact --exact --r 1 --alpha 1 --seed 3
adapter $W/f16 $W/a_f16_exact --exact --r 1 --alpha 1 --seed 4
adapter $W/f16 $W/a_f16_pat --r 8 --alpha 8 --rank-pattern gate_proj=2 --alpha-pattern model.layers.0.mlp.gate_proj=32 --seed 5
adapter $W/big $W/a_big --r 16 --alpha 32 --seed 6
adapter $W/f32 $W/a_extra --extra-layers 2
adapter $W/f32 $W/a_wide --modules o_proj --wrong-shape
adapter $W/f32 $W/a_nomag --dora --no-magnitude
adapter $W/f32 $W/a_rp --rank-pattern q_proj=4
adapter $W/f32 $W/a_hole $PAT --drop layers.1.self_attn.v_proj
adapter $W/f32 $W/a_nan --nan-last-row
EOF

# ---- 1, 2: merged once per case and checked ------------------------------------------------
# case: name model adapter logits-tolerance [--exact]
CASES=(
  "trained_f32  f32  train_f32/adapter  $TOL_F32"
  "pattern_f32  f32  a_pat              $TOL_F32"
  "dora_f32     f32  a_dora             $TOL_F32"
  "trained_bf16 bf16 train_bf16/adapter $TOL_HALF"
  "dora_bf16    bf16 a_bf16_dora        $TOL_HALF"
  "exact_bf16   bf16 a_bf16_exact       $TOL_HALF --exact"
  "exact_f16    f16  a_f16_exact        $TOL_HALF --exact"
  "pattern_f16  f16  a_f16_pat          $TOL_HALF"
)
CHECKS=()
for c in "${CASES[@]}"; do
  read -r name model adapter tol exact <<< "$c"
  echo "== $name: $model + $adapter"
  merge 1 --model "$W/$model" --adapter "$W/$adapter" --out "$W/out_$name" > "$W/$name.log" 2>&1 \
    || { cat "$W/$name.log"; echo "FAIL: merge $name"; exit 1; }
  CHECKS+=("validate $W/out_$name $W/$model"
           "weights $W/$model $W/$adapter $W/out_$name $exact"
           "logits $W/$model $W/$adapter $W/out_$name $tol")
done
printf '%s\n' "${CHECKS[@]}" | batch | grep -v '^validate: .*strict OK$'

# ---- 3: byte-identical at 1, 3 and 4 ranks ----------------------------------------------
same() { # same DIR_A DIR_B: every model file equal
  for f in "$1"/*; do
    b="$(basename "$f")"
    [ "$b" = merge-summary.json ] && continue
    cmp -s "$f" "$2/$b" || { echo "FAIL: $b differs between $1 and $2"; exit 1; }
  done
  [ "$(ls "$1" | wc -l)" = "$(ls "$2" | wc -l)" ] || { echo "FAIL: $1 and $2 hold different files"; exit 1; }
}
for name in trained_f32 dora_f32 trained_bf16 pattern_f16; do
  read -r _ model adapter _ <<< "$(printf '%s\n' "${CASES[@]}" | grep "^$name ")"
  for np in 3 4; do
    merge "$np" --model "$W/$model" --adapter "$W/$adapter" --out "$W/out_${name}_np$np" --chunk-bytes 4096 \
      > "$W/${name}_np$np.log" 2>&1 || { cat "$W/${name}_np$np.log"; echo "FAIL: merge $name on $np ranks"; exit 1; }
    same "$W/out_$name" "$W/out_${name}_np$np"
  done
  echo "ranks: $name: 1, 3 and 4 ranks (4 KiB chunks) wrote byte-identical files"
done

# ---- 4: memory and speed on a larger model -------------------------------------------------
merge 1 --model "$W/big" --adapter "$W/a_big" --out "$W/big_np1" --chunk-bytes 1048576 > "$W/big_np1.log" 2>&1
grep -E '^merge: (wrote|[0-9])|peak RSS' "$W/big_np1.log" | tail -n 3
for chunk in 1048576 67108864; do
  merge 4 --model "$W/big" --adapter "$W/a_big" --out "$W/big_np4_$chunk" --chunk-bytes "$chunk" > "$W/big_np4_$chunk.log" 2>&1
  grep -E 'peak RSS|^merge: wrote' "$W/big_np4_$chunk.log"
  same "$W/big_np1" "$W/big_np4_$chunk"
done
echo "big: 1 and 4 ranks byte-identical"
batch <<EOF | grep -v '^validate: .*strict OK$'
validate $W/big_np1 $W/big
weights $W/big $W/a_big $W/big_np1
rss $W/big_np1/merge-summary.json $SLACK_MIB --max-buffer-mib 4
rss $W/big_np4_1048576/merge-summary.json $SLACK_MIB
rss $W/big_np4_67108864/merge-summary.json $SLACK_MIB
EOF
rm -rf "$W/big_np4_67108864"

# ---- 5: bad inputs -----------------------------------------------------------------------
# refuse CODE PATTERN NP ARGS...: exits CODE with exactly one error line matching PATTERN
refuse() {
  local code="$1" pat="$2" np="$3"; shift 3
  set +e
  timeout 120 mpiexec --oversubscribe -n "$np" "$SL" merge --threads 1 "$@" > "$W/refuse.out" 2> "$W/refuse.err"
  local rc=$?
  set -e
  if [ "$rc" = 124 ]; then echo "FAIL: hung: merge $*"; exit 1; fi
  if [ "$rc" != "$code" ]; then cat "$W/refuse.err"; echo "FAIL: exit $rc, expected $code: merge $*"; exit 1; fi
  local n; n=$(grep -c '^shardlora merge: error:' "$W/refuse.err" || true)
  if [ "$n" != 1 ]; then cat "$W/refuse.err"; echo "FAIL: $n error lines, expected 1"; exit 1; fi
  grep '^shardlora merge: error:' "$W/refuse.err" | grep -q -- "$pat" \
    || { cat "$W/refuse.err"; echo "FAIL: the error does not say '$pat'"; exit 1; }
  echo "refused ($rc, $np ranks): $(grep '^shardlora merge: error:' "$W/refuse.err" | cut -c1-220)"
}
gone() { [ ! -e "$1" ] || { ls -la "$1"; echo "FAIL: $1 was left behind"; exit 1; }; }

# an adapter of another model: the shapes differ, the message names the key
refuse 3 "has shape .* adapter for another model" 4 --model "$W/bf16" --adapter "$W/train_f32/adapter" --out "$W/bad1"
gone "$W/bad1"
refuse 3 "model.layers.[23]\..*' matches no linear weight" 4 --model "$W/f32" --adapter "$W/a_extra" --out "$W/bad2"
refuse 3 "model.layers.0.self_attn.o_proj.lora_A.weight' has shape \[8, 65\]" 3 --model "$W/f32" --adapter "$W/a_wide" --out "$W/bad3"
refuse 3 "no lora_magnitude_vector" 2 --model "$W/f32" --adapter "$W/a_nomag" --out "$W/bad4"
# a rank_pattern the tensors do not follow
"$PY" -c "import json,sys; p=sys.argv[1]; c=json.load(open(p)); c['rank_pattern']={}; json.dump(c,open(p,'w'))" "$W/a_rp/adapter_config.json"
refuse 3 "q_proj.lora_A.weight' has shape \[4, 64\].*must be \[8, 64\]" 4 --model "$W/f32" --adapter "$W/a_rp" --out "$W/bad5"
# a module the config targets without its tensors (eval and train refuse it too): a_pat
# without layer 1's v_proj
refuse 3 "module 'model.layers.1.self_attn.v_proj' is targeted by adapter_config.json.*has no lora_A / lora_B" 3 \
  --model "$W/f32" --adapter "$W/a_hole" --out "$W/bad_hole"
gone "$W/bad_hole"
# missing files
mkdir -p "$W/a_nofile" && cp "$W/a_pat/adapter_config.json" "$W/a_nofile/"
refuse 3 "adapter_model.safetensors: missing" 4 --model "$W/f32" --adapter "$W/a_nofile" --out "$W/bad6"
cp -r "$W/bf16" "$W/bf16_missing" && rm "$W/bf16_missing/model-00002-of-00003.safetensors"
refuse 3 "model-00002-of-00003.safetensors: cannot open" 4 --model "$W/bf16_missing" --adapter "$W/train_bf16/adapter" --out "$W/bad7"
refuse 3 "no model.safetensors" 2 --model "$W/nonexistent" --adapter "$W/a_pat" --out "$W/bad8"
gone "$W/bad8"
# an existing OUT: refused without --force; with --force replaced by the same bytes
refuse 2 "already exists" 4 --model "$W/f32" --adapter "$W/a_pat" --out "$W/out_pattern_f32"
merge 2 --model "$W/f32" --adapter "$W/a_pat" --out "$W/out_trained_f32_np3" --force > /dev/null 2>&1
same "$W/out_pattern_f32" "$W/out_trained_f32_np3"
echo "force: an existing OUT replaced with the same bytes a fresh merge writes"
# a failure on one rank only (a NaN in the last row of a lora_B: the last rank's rows): every
# rank stops, nothing under the final names; with --force the old model stays as it was
refuse 3 "not finite" 4 --model "$W/f32" --adapter "$W/a_nan" --out "$W/bad9"
gone "$W/bad9"
refuse 3 "not finite" 4 --model "$W/f32" --adapter "$W/a_nan" --out "$W/out_trained_f32_np3" --force
same "$W/out_pattern_f32" "$W/out_trained_f32_np3"
[ -z "$(ls "$W/out_trained_f32_np3" | grep '\.tmp$' || true)" ] || { echo "FAIL: .tmp files left"; exit 1; }
echo "failure: no .tmp files, the previous model in OUT intact"
refuse 2 "chunk-bytes" 2 --model "$W/f32" --adapter "$W/a_pat" --out "$W/bad10" --chunk-bytes 10

"$SL" merge --help | grep -q -- "--chunk-bytes" || { echo "FAIL: merge --help lacks --chunk-bytes"; exit 1; }
rm -rf "$W/big_np4_1048576" "$W/big"   # ~0.5 GB; big_np1 stays for inspection
echo "merge: all checks passed"
