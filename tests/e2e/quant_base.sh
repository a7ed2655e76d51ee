#!/usr/bin/env bash
# The frozen base held quantised (issue 18, --base-dtype) through the commands around train:
#  1. merge --base-dtype nf4 writes the model the adapter was trained on: its eval loss equals
#     eval of the base held as nf4 with the adapter unmerged (F32 files: relative 1e-5), and
#     differs from a plain merge into the unquantised weights; eval and generate run with
#     --base-dtype nf4 at tp=2 too (same loss as tp=1 within 1e-5);
#  2. bad input, one line each and the documented status: a shape NF4 cannot hold names the
#     tensor (exit 3, train and merge); an unknown --base-dtype / --compute-dtype (exit 2);
#     --init pissa with a quantised base (2); generate --merge-in-memory with a quantised base
#     (2); a run resumed with another --base-dtype (its OUT: 2; its checkpoint into another
#     OUT: 3), and the checkpoints are left as they were;
#  3. --compute-dtype bf16 says what runs: bf16 where oneDNN has native BF16, else fp32 with
#     the reason, in the log and run.json.
# usage: quant_base.sh SHARDLORA_BINARY WORK_DIR
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
set -euo pipefail
SL="$1"; W="$2/quant_base"
PY=/usr/bin/python3
rm -rf "$W"; mkdir -p "$W"
fail() { echo "FAIL: $*"; exit 1; }

# refused NAME STATUS WANT CMD...: CMD exits STATUS with exactly one error line containing WANT
refused() {
  local name="$1" want_rc="$2" want="$3" rc=0; shift 3
  "$@" > "$W/$name.log" 2>&1 || rc=$?
  [ "$rc" = "$want_rc" ] && grep -q -- "$want" "$W/$name.log" &&
    [ "$(grep -ci 'error\|shardlora [a-z]*:' "$W/$name.log")" -ge 1 ] ||
    { cat "$W/$name.log"; fail "$name: exit $rc, expected $want_rc with '$want'"; }
  local n; n=$(grep -c -- "$want" "$W/$name.log")
  [ "$n" = 1 ] || { cat "$W/$name.log"; fail "$name: '$want' printed $n times (one line wanted)"; }
  echo "  ok   $name (exit $rc): $(grep -o -- "$want.*" "$W/$name.log" | head -1 | cut -c1-140)"
}

"$SL" make-model --out "$W/m" --layers 2 --hidden 128 --ffn 256 --heads 4 --kv-heads 2 \
  --vocab 259 --seed 3 > /dev/null
"$SL" make-model --out "$W/odd" --layers 1 --hidden 64 --ffn 96 --heads 4 --vocab 259 --seed 3 > /dev/null
"$PY" - /usr/share/common-licenses/GPL-3 "$W" <<'PY'
import json, sys
b = open(sys.argv[1], 'rb').read()[:64 * 41]
with open(sys.argv[2] + "/data.jsonl", "w") as f:
    for i in range(0, 64 * 24, 64): f.write(json.dumps({"input_ids": list(b[i:i + 64])}) + "\n")
with open(sys.argv[2] + "/prompts.jsonl", "w") as f:
    f.write(json.dumps({"input_ids": list(b[:12])}) + "\n")
PY
T=(--data "$W/data.jsonl" --seq-len 64 --micro-batch 2 --lr 1e-2 --lora-r 4 --seed 5 --log-every 4)

# 1. train on an nf4 base, merge the way it was trained, evaluate both ways
"$SL" train --model "$W/m" "${T[@]}" --out "$W/run" --steps 6 --base-dtype nf4 > "$W/train.log" 2>&1 ||
  { tail "$W/train.log"; fail "train --base-dtype nf4"; }
grep -q "frozen base held as NF4" "$W/train.log" || fail "train does not say it holds the base as NF4"
"$SL" merge --model "$W/m" --adapter "$W/run/adapter" --out "$W/merged" --base-dtype nf4 > "$W/merge.log" 2>&1 ||
  { tail "$W/merge.log"; fail "merge --base-dtype nf4"; }
"$SL" merge --model "$W/m" --adapter "$W/run/adapter" --out "$W/plain" > "$W/merge2.log" 2>&1 ||
  { tail "$W/merge2.log"; fail "merge"; }
E=(--data "$W/data.jsonl" --seq-len 64 --micro-batch 2)
ev() { local out="$1"; shift; "$SL" eval "$@" "${E[@]}" --out "$W/$out.json" > "$W/$out.log" 2>&1 ||
  { tail "$W/$out.log"; fail "eval $out"; }; }
ev unmerged --model "$W/m" --adapter "$W/run/adapter" --base-dtype nf4
ev merged --model "$W/merged"
ev plain --model "$W/plain"
mpiexec -n 2 "$SL" eval --model "$W/m" --adapter "$W/run/adapter" --base-dtype nf4 --tp 2 "${E[@]}" \
  --out "$W/tp2.json" > "$W/tp2.log" 2>&1 || { tail "$W/tp2.log"; fail "eval --tp 2 nf4"; }
"$PY" - "$W" <<'PY'
import json, sys
w = sys.argv[1]
L = {k: json.load(open(f"{w}/{k}.json"))["loss"] for k in ("unmerged", "merged", "plain", "tp2")}
rel = lambda a, b: abs(a - b) / abs(b)
assert rel(L["merged"], L["unmerged"]) < 1e-5, f"merged {L['merged']} vs nf4 base + adapter {L['unmerged']}"
assert rel(L["tp2"], L["unmerged"]) < 1e-5, f"tp=2 {L['tp2']} vs tp=1 {L['unmerged']}"
assert rel(L["plain"], L["unmerged"]) > 1e-4, f"a plain merge matches the nf4 model: {L}"
print(f"  ok   eval: nf4 base + adapter {L['unmerged']:.7f}, merge --base-dtype nf4 {L['merged']:.7f}, "
      f"tp=2 {L['tp2']:.7f}; plain merge {L['plain']:.7f} differs")
PY
"$SL" generate --model "$W/m" --adapter "$W/run/adapter" --base-dtype int8 --prompts "$W/prompts.jsonl" \
  --max-new-tokens 4 --out "$W/gen.jsonl" > "$W/gen.log" 2>&1 || { tail "$W/gen.log"; fail "generate --base-dtype int8"; }
[ "$(wc -l < "$W/gen.jsonl")" = 1 ] || fail "generate wrote no line"
echo "  ok   generate --base-dtype int8"

# 2. bad input
refused nf4-shape 3 "tensor 'model.layers.0.mlp.down_proj.weight'" \
  "$SL" train --model "$W/odd" "${T[@]}" --out "$W/odd-run" --steps 1 --base-dtype nf4
refused nf4-shape-tp2 3 "cannot be stored as --base-dtype nf4" \
  mpiexec -n 2 "$SL" train --model "$W/odd" "${T[@]}" --out "$W/odd-run2" --steps 1 --base-dtype nf4 --tp 2
refused merge-shape 3 "tensor 'model.layers.0.mlp.down_proj.weight' cannot be held as --base-dtype nf4" \
  "$SL" merge --model "$W/odd" --adapter "$W/run/adapter" --out "$W/odd-merged" --base-dtype nf4
[ ! -e "$W/odd-merged" ] || fail "a refused merge left $W/odd-merged"
refused base-name 2 "--base-dtype 'nf5'" "$SL" train --model "$W/m" "${T[@]}" --out "$W/x" --base-dtype nf5
refused compute-name 2 "--compute-dtype 'fp16'" "$SL" eval --model "$W/m" "${E[@]}" --compute-dtype fp16
refused merge-name 2 "--base-dtype 'int4'" \
  "$SL" merge --model "$W/m" --adapter "$W/run/adapter" --out "$W/y" --base-dtype int4
refused pissa 2 "--init pissa rewrites the frozen weights" \
  "$SL" train --model "$W/m" "${T[@]}" --out "$W/x" --base-dtype int8 --init pissa
refused gen-merge 2 "--merge-in-memory with --base-dtype nf4" \
  "$SL" generate --model "$W/m" --adapter "$W/run/adapter" --base-dtype nf4 --merge-in-memory \
  --prompts "$W/prompts.jsonl" --max-new-tokens 2
sum0=$(find "$W/run/checkpoints" -type f -exec md5sum {} + | sort | md5sum)
refused resume-other 2 "its --base-dtype is \"nf4\", this one's \"int8\"" "$SL" train --model "$W/m" "${T[@]}" --out "$W/run" --steps 8 --base-dtype int8
refused resume-ckpt 3 "held as NF4; this run holds them as INT8" \
  "$SL" train --model "$W/m" "${T[@]}" --out "$W/other" --resume "$W/run/checkpoints/latest" --steps 8 --base-dtype int8
[ "$(find "$W/run/checkpoints" -type f -exec md5sum {} + | sort | md5sum)" = "$sum0" ] ||
  fail "the refused resume changed the checkpoints"

# 3. --compute-dtype bf16 says what runs
"$SL" train --model "$W/m" "${T[@]}" --out "$W/bf" --steps 2 --base-dtype bf16 --compute-dtype bf16 \
  > "$W/bf.log" 2>&1 || { tail "$W/bf.log"; fail "train --compute-dtype bf16"; }
"$PY" - "$W/bf" "$W/bf.log" <<'PY'
import json, sys
r = json.load(open(sys.argv[1] + "/run.json"))
res, log = r["resolved"], open(sys.argv[2]).read()
c, why, isa = res["compute_dtype"], res["compute"], r["versions"]["onednn_isa"]
assert c in ("bf16", "fp32") and why.startswith(c), (c, why)
assert c == "bf16" or "no native BF16" in why or "emulated" in why, why
assert f"compute in {why}" in log, "the log does not say what the GEMMs compute in"
print(f"  ok   --compute-dtype bf16 on this CPU: {why} (oneDNN ISA {isa})")
PY
echo "quant_base: OK"
