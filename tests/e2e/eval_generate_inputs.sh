#!/usr/bin/env bash
# eval and generate on bad numbers, and what they say about adapters:
#   - generate --out FILE: a run that fails (a NaN embedding row: no finite logit, exit 5)
#     leaves a FILE that existed before untouched (written through FILE.tmp, committed only
#     on success), no FILE.tmp, one error line (also at --pp 2: the last stage meets the NaN,
#     the first stage holds the results);
#   - eval with a NaN in a lora_B: exit 5, one error line, no --out written;
#   - eval's log line names the adapter's kind (dora), eval --help and generate --help say
#     --adapter takes LoRA, DoRA and VeRA;
#   - generate with a trained DoRA adapter (its norms per stage) at --pp 2 and tp 2 x pp 2
#     gives byte for byte the results and logits of pp 1 at the same tp;
#   - the model card of a PiSSA export states the r and lora_alpha of its adapter_config.json
#     (rank 2r, alpha 2 alpha), not the training run's r and alpha.
# usage: eval_generate_inputs.sh SHARDLORA_BINARY WORK_DIR
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
set -uo pipefail
SL="$1"; W="$2/eval_generate_inputs"
PY=/usr/bin/python3
RUN_TIMEOUT=120  # seconds for one launch: a hang fails the check
NAN_TOKEN=5      # the token id whose embedding row becomes NaN
rm -rf "$W"; mkdir -p "$W"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# nan FILE TENSOR ROW: sets row ROW of the F32 tensor TENSOR (a name suffix) to NaN, in place
nan() {
  "$PY" - "$@" <<'PY'
import json, struct, sys
path, name, row = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(path, "r+b") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    hdr = json.loads(f.read(n))
    key = sorted(k for k in hdr if k != "__metadata__" and k.endswith(name))[0]
    t = hdr[key]
    assert t["dtype"] == "F32", t
    cols = t["shape"][-1] if len(t["shape"]) > 1 else 1
    f.seek(8 + n + t["data_offsets"][0] + row * cols * 4)
    f.write(struct.pack("<f", float("nan")) * cols)
print(f"NaN in row {row} of {key}")
PY
}

# one_line FILE: stderr holds exactly one line of ours
one_line() { [ "$(grep -c -e '^shardlora' -e 'shardlora r[0-9]' "$1")" = 1 ]; }

"$SL" make-model --out "$W/model" --layers 2 --hidden 32 --ffn 64 --heads 4 --kv-heads 2 --vocab 259 \
  > /dev/null || exit 1
cp -r "$W/model" "$W/nanmodel"
nan "$W/nanmodel/model.safetensors" embed_tokens.weight $NAN_TOKEN || exit 1
"$PY" - > "$W/data.jsonl" <<'PY'
import json, random
rng = random.Random(4)
for i in range(6):
    print(json.dumps({"input_ids": [rng.randrange(6, 259) for _ in range(rng.randint(10, 24))]}))
PY

# --- generate --out: a failed run keeps the old file
G=(generate --model "$W/nanmodel" --threads 1 --log-level warn --max-new-tokens 4 --ignore-eos)
# prompt 0 finishes (and would be written first); prompt 1 meets the NaN row
printf '{"input_ids": [1, 2, 3]}\n{"input_ids": [1, %d, 3]}\n' $NAN_TOKEN > "$W/prompts.jsonl"
for np in 1 2 pp2; do
  printf 'the old results\n' > "$W/old.jsonl"
  cp "$W/old.jsonl" "$W/out$np.jsonl"
  if [ $np = 1 ]; then cmd=(timeout "$RUN_TIMEOUT" "$SL"); else cmd=(timeout "$RUN_TIMEOUT" mpiexec -n 2 "$SL"); fi
  stages=(); [ $np = pp2 ] && stages=(--pp 2)
  "${cmd[@]}" "${G[@]}" "${stages[@]}" --prompts "$W/prompts.jsonl" --batch-size 1 --out "$W/out$np.jsonl" > "$W/gen$np.out" 2> "$W/gen$np.err"
  rc=$?
  if [ $rc != 5 ] || ! one_line "$W/gen$np.err" || ! grep -q "no finite logit" "$W/gen$np.err"; then
    fail "generate at $np rank(s) with a NaN embedding: status $rc (want 5), stderr:"; cat "$W/gen$np.err"
  elif ! cmp -s "$W/old.jsonl" "$W/out$np.jsonl"; then
    fail "generate at $np rank(s) failed but changed --out:"; cat "$W/out$np.jsonl"
  elif [ -e "$W/out$np.jsonl.tmp" ]; then
    fail "generate at $np rank(s) left $W/out$np.jsonl.tmp"
  else echo "ok: generate at $np rank(s): exit 5, one line, the old --out untouched"; fi
done
# the same command on the good model replaces the file
printf 'the old results\n' > "$W/out_good.jsonl"
timeout "$RUN_TIMEOUT" "$SL" "${G[@]}" --model "$W/model" --prompts "$W/prompts.jsonl" --out "$W/out_good.jsonl" \
  > /dev/null 2> "$W/gen_good.err"
rc=$?
if [ $rc != 0 ] || [ "$(grep -c '"prompt_index"' "$W/out_good.jsonl")" != 2 ] || grep -q old "$W/out_good.jsonl"; then
  fail "generate on the good model: status $rc, --out:"; cat "$W/out_good.jsonl" "$W/gen_good.err"
else echo "ok: generate on the good model replaces --out with 2 results"; fi

# --- eval: a NaN in a lora_B is exit 5, one line, no --out
TR=(train --model "$W/model" --data "$W/data.jsonl" --seq-len 32 --micro-batch 2 --steps 1 --threads 1
    --log-level warn --no-pack --lora-r 2 --lora-alpha 4)
EV=(eval --model "$W/model" --data "$W/data.jsonl" --seq-len 32 --no-pack --threads 1 --cache-dir "$W/cache")
timeout "$RUN_TIMEOUT" "$SL" "${TR[@]}" --out "$W/lora" > "$W/lora.log" 2>&1 || { cat "$W/lora.log"; fail "train lora"; }
timeout "$RUN_TIMEOUT" "$SL" "${TR[@]}" --adapter dora --out "$W/dora" > "$W/dora.log" 2>&1 || { cat "$W/dora.log"; fail "train dora"; }
cp -r "$W/lora/adapter" "$W/nan_adapter"
nan "$W/nan_adapter/adapter_model.safetensors" layers.1.self_attn.q_proj.lora_B.weight 0 || exit 1
for np in 1 2; do
  if [ $np = 1 ]; then cmd=(timeout "$RUN_TIMEOUT" "$SL"); else cmd=(timeout "$RUN_TIMEOUT" mpiexec -n 2 "$SL"); fi
  rm -f "$W/eval_nan$np.json"
  "${cmd[@]}" "${EV[@]}" --adapter "$W/nan_adapter" --tp $np --log-level warn --out "$W/eval_nan$np.json" \
    > "$W/eval_nan$np.out" 2> "$W/eval_nan$np.err"
  rc=$?
  if [ $rc != 5 ] || ! one_line "$W/eval_nan$np.err" || ! grep -q "not finite" "$W/eval_nan$np.err"; then
    fail "eval at tp=$np with a NaN in lora_B: status $rc (want 5), stderr:"; cat "$W/eval_nan$np.err"
  elif [ -e "$W/eval_nan$np.json" ]; then
    fail "eval at tp=$np with a NaN loss wrote --out:"; cat "$W/eval_nan$np.json"
  else echo "ok: eval at tp=$np with a NaN in lora_B: exit 5, one line, no --out"; fi
done

# --- generate with the DoRA adapter: pipeline stages give pp 1's bytes at the same tp
GD=(generate --model "$W/model" --adapter "$W/dora/adapter" --prompts "$W/prompts.jsonl" --threads 1
    --log-level warn --max-new-tokens 6 --ignore-eos)
for run in "1 1 1" "2 1 2" "2 2 1" "4 2 2"; do
  read -r np tp pp <<<"$run"
  timeout "$RUN_TIMEOUT" mpiexec -n "$np" "$SL" "${GD[@]}" --tp "$tp" --pp "$pp" \
    --out "$W/dora-tp$tp-pp$pp.jsonl" --dump-logits "$W/dora-tp$tp-pp$pp.st" > /dev/null 2> "$W/dora-gen.err" \
    || { cat "$W/dora-gen.err"; fail "generate with DoRA at tp $tp pp $pp"; }
done
for tp in 1 2; do
  if cmp -s "$W/dora-tp$tp-pp1.jsonl" "$W/dora-tp$tp-pp2.jsonl" && cmp -s "$W/dora-tp$tp-pp1.st" "$W/dora-tp$tp-pp2.st"; then
    echo "ok: generate with DoRA at tp $tp: pp 2 = pp 1 byte for byte"
  else fail "generate with DoRA at tp $tp: pp 2 differs from pp 1"; fi
done
if cmp -s "$W/dora-tp1-pp1.jsonl" "$W/out_good.jsonl"; then fail "the DoRA adapter changed nothing"; fi

# --- eval names the adapter's kind; --help of eval and generate name the kinds
timeout "$RUN_TIMEOUT" "$SL" "${EV[@]}" --adapter "$W/dora/adapter" --log-level info > "$W/eval_dora.out" 2>&1
rc=$?
if [ $rc != 0 ] || ! grep -q "adapter: dora r=2" "$W/eval_dora.out"; then
  fail "eval of a DoRA adapter: status $rc, no 'adapter: dora r=2' line:"; grep -i adapter "$W/eval_dora.out"
else echo "ok: eval logs $(grep -o 'adapter: dora r=2[^,]*' "$W/eval_dora.out")"; fi
for c in eval generate; do
  "$SL" $c --help > "$W/help_$c" 2>&1
  if ! grep -- "--adapter" "$W/help_$c" | grep -q "LoRA, DoRA or VeRA"; then
    fail "$c --help: --adapter does not name LoRA, DoRA and VeRA:"; grep -- "--adapter" "$W/help_$c"
  else echo "ok: $c --help: --adapter names LoRA, DoRA and VeRA"; fi
done

# --- the PiSSA export's card: r and lora_alpha as in its adapter_config.json
timeout "$RUN_TIMEOUT" "$SL" "${TR[@]}" --init pissa --pissa-iters 2 --out "$W/pissa" > "$W/pissa.log" 2>&1 \
  || { cat "$W/pissa.log"; fail "train pissa"; }
"$PY" - "$W/pissa/adapter" <<'PY' || fail "the PiSSA card disagrees with adapter_config.json"
import json, re, sys
d = sys.argv[1]
cfg = json.load(open(f"{d}/adapter_config.json"))
card = open(f"{d}/README.md").read()
r = re.search(r"^\| r \| (.*) \|$", card, re.M).group(1)
a = re.search(r"^\| lora_alpha \| (.*) \|$", card, re.M).group(1)
ok = cfg["r"] == 4 and r == str(cfg["r"]) and float(a) == float(cfg["lora_alpha"]) == 8
print(f"PiSSA export (trained r 2, alpha 4): adapter_config.json r {cfg['r']} lora_alpha {cfg['lora_alpha']}; "
      f"card r {r} lora_alpha {a}: {'ok' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
PY

if [ $fails -ne 0 ]; then echo "eval_generate_inputs: $fails failures"; exit 1; fi
echo "eval_generate_inputs: OK"
