#!/usr/bin/env bash
# VeRA (model/vera.c) against the PyTorch reference written from PEFT's formula
# (tests/reference/vera_check.py): loss and every lambda gradient at step 1 (the init:
# lambda_d = 0.1, lambda_b = 0) and step 10, with Philox dropout; the PEFT VERA export
# (projections saved, equal to PEFT's for projection_prng_key = the run seed); checkpoint /
# resume bit-exact; import of the export (eval at tp=1 / tp=2 = the run's own eval,
# byte-identical round trip, edited projections refused). PEFT-made adapters, merge and
# generate --merge-in-memory: vera_peft_case.sh.
# usage: vera_case.sh SHARDLORA_BINARY WORK_DIR
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
set -euo pipefail
SL="$1"; W="$2/vera"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY=/usr/bin/python3
SEED=11
rm -rf "$W"; mkdir -p "$W"
"$PY" - > "$W/data.jsonl" <<'PY'
import json, random
rng = random.Random(5)
for i in range(8):
    n = rng.randint(10, 30)
    ids = [rng.randrange(259) for _ in range(n)]
    row = {"input_ids": ids}
    if i % 2:
        row["labels"] = [-100] * 3 + ids[3:]
    print(json.dumps(row))
PY
"$SL" make-model --out "$W/model" --layers 2 --hidden 64 --ffn 128 --heads 4 --kv-heads 2 --vocab 259 --seed 7
TRAIN=(--adapter vera --no-shuffle --no-pack --seq-len 24 --micro-batch 2 --lora-r 8 --lr 5e-3
       --lr-schedule constant --seed $SEED --threads 1 --target-modules all --lora-dropout 0.1)
"$SL" train --model "$W/model" --data "$W/data.jsonl" --out "$W/run1" "${TRAIN[@]}" --steps 1 \
  --dump-grads "$W/dump1.safetensors"
"$SL" train --model "$W/model" --data "$W/data.jsonl" --out "$W/run10" "${TRAIN[@]}" --steps 10 \
  --dump-grads "$W/dump10.safetensors"
"$PY" "$HERE/vera_check.py" --model "$W/model" --dump "$W/dump1.safetensors" --check-init
"$PY" "$HERE/vera_check.py" --model "$W/model" --dump "$W/dump10.safetensors"
# export: after 10 steps; the dump of step 11 holds the adapter after 10 updates
"$SL" train --model "$W/model" --data "$W/data.jsonl" --out "$W/run11" "${TRAIN[@]}" --steps 11 \
  --ckpt-every 10 --dump-grads "$W/dump11.safetensors"
"$SL" export "$W/run11/checkpoints/step-000000010" --out "$W/export10"
"$PY" "$HERE/vera_check.py" --model "$W/model" --export "$W/export10" --seed $SEED --dump "$W/dump11.safetensors"
# resume: 5 steps, then the same command to 10 steps resumes; the step-10 dump must be
# bit-identical to the uninterrupted run's
"$SL" train --model "$W/model" --data "$W/data.jsonl" --out "$W/res" "${TRAIN[@]}" --steps 5
"$SL" train --model "$W/model" --data "$W/data.jsonl" --out "$W/res" "${TRAIN[@]}" --steps 10 \
  --dump-grads "$W/dump10r.safetensors"
cmp "$W/dump10.safetensors" "$W/dump10r.safetensors"
echo "vera_case: resume bit-exact (dump of step 10 identical)"

# import (PEFT's VERA format read back): the run's own final evaluation (--eval-data) equals
# `shardlora eval --adapter` of its exported adapter at tp=1 and tp=2 (relative EVAL_TOL);
# export -> train --init-adapter (lr 0, another run seed: the projections keep the file's
# projection_prng_key) -> export is byte-identical, through tp=2 and back to tp=1; an adapter
# whose projections are not those of its key (one value of vera_A changed) is refused with
# exit 3, and train leaves no output directory; one that does not save them (save_projection
# false) evaluates as the one that does.
EVAL_TOL=1e-6
EV=(--no-pack --seq-len 24 --micro-batch 2 --threads 1 --log-level warn)
"$SL" train --model "$W/model" --data "$W/data.jsonl" --out "$W/ev" "${TRAIN[@]}" --steps 6 \
  --eval-data "$W/data.jsonl" --log-level warn > "$W/ev.log"
"$SL" eval --model "$W/model" --adapter "$W/ev/adapter" --data "$W/data.jsonl" "${EV[@]}" --out "$W/eval-tp1.json"
mpiexec -n 2 "$SL" eval --model "$W/model" --adapter "$W/ev/adapter" --data "$W/data.jsonl" "${EV[@]}" --tp 2 \
  --out "$W/eval-tp2.json"
"$SL" eval --model "$W/model" --data "$W/data.jsonl" "${EV[@]}" --out "$W/eval-base.json"
"$PY" - "$W" "$EVAL_TOL" <<'PY'
import json, sys
w, tol = sys.argv[1], float(sys.argv[2])
train = [json.loads(l) for l in open(f"{w}/ev/metrics.jsonl") if "eval_loss" in l][-1]
base = json.load(open(f"{w}/eval-base.json"))["loss"]
ok = True
for tp in (1, 2):
    e = json.load(open(f"{w}/eval-tp{tp}.json"))
    rel = abs(e["loss"] - train["eval_loss"]) / abs(train["eval_loss"])
    good = rel <= tol and e["tokens"] == train["eval_tokens"]
    ok &= good
    print(f"vera import: eval --adapter at tp={tp}: {e['loss']:.9f} vs train's eval at step {train['step']}: "
          f"{train['eval_loss']:.9f} (relative {rel:.2e}, tol {tol:g}) {'ok' if good else 'FAIL'}")
moved = abs(base - train["eval_loss"]) > 1e-4
print(f"vera import: base model without adapter {base:.9f} (the adapter changes the loss: {'ok' if moved else 'FAIL'})")
sys.exit(0 if ok and moved else 1)
PY
RT=(--no-shuffle --no-pack --seq-len 24 --micro-batch 2 --lr 0 --lr-schedule constant --seed 3 --threads 1 --steps 1
    --log-level warn)
mpiexec -n 2 "$SL" train --model "$W/model" --data "$W/data.jsonl" --out "$W/rt1" "${RT[@]}" --tp 2 \
  --init-adapter "$W/ev/adapter" > "$W/rt1.log"
"$SL" train --model "$W/model" --data "$W/data.jsonl" --out "$W/rt2" "${RT[@]}" --init-adapter "$W/rt1/adapter" \
  > "$W/rt2.log"
for f in adapter_model.safetensors adapter_config.json; do
  cmp "$W/ev/adapter/$f" "$W/rt1/adapter/$f"
  cmp "$W/rt1/adapter/$f" "$W/rt2/adapter/$f"
  echo "vera import: export -> import (tp=2) -> export -> import (tp=1) -> export: $f identical ($(stat -c %s "$W/rt2/adapter/$f") bytes)"
done
# refused: expect_refused NAME WANT CMD...: exit 3 and WANT in the message
expect_refused() {
  local name="$1" want="$2" rc=0; shift 2
  "$@" > "$W/$name.log" 2>&1 || rc=$?
  if [ "$rc" != 3 ] || ! grep -q "$want" "$W/$name.log"; then
    cat "$W/$name.log"; echo "FAIL: $name: exit $rc, expected 3 with '$want'"; exit 1
  fi
  echo "vera import: $name refused (exit 3): $(grep -o "$want.*" "$W/$name.log" | head -1 | cut -c1-150)"
}
cp -r "$W/ev/adapter" "$W/tampered"
"$PY" - "$W/tampered/adapter_model.safetensors" <<'PY'
import json, struct, sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
n = struct.unpack("<Q", b[:8])[0]
o = 8 + n + json.loads(b[8:8 + n])["base_model.vera_A"]["data_offsets"][0] + 4 * 5
b[o:o + 4] = struct.pack("<f", struct.unpack("<f", b[o:o + 4])[0] * 1.5)
open(p, "wb").write(b)
PY
WANT="VeRA projections are not those of its projection_prng_key $SEED"
expect_refused eval-tampered "$WANT" "$SL" eval --model "$W/model" --adapter "$W/tampered" --data "$W/data.jsonl" "${EV[@]}"
expect_refused train-tampered "$WANT" "$SL" train --model "$W/model" --data "$W/data.jsonl" --out "$W/rt-bad" "${RT[@]}" \
  --init-adapter "$W/tampered"
[ ! -e "$W/rt-bad" ] || { echo "FAIL: a refused --init-adapter left $W/rt-bad"; exit 1; }
echo '{"input_ids": [1, 2, 3]}' > "$W/prompts.jsonl"
expect_refused generate-tampered "$WANT" "$SL" generate --model "$W/model" --adapter "$W/tampered" \
  --prompts "$W/prompts.jsonl" --max-new-tokens 2 --threads 1 --log-level warn
cp -r "$W/ev/adapter" "$W/nosave"
sed -i 's/"save_projection": true/"save_projection": false/' "$W/nosave/adapter_config.json"
"$PY" - "$W/nosave/adapter_model.safetensors" "$HERE" <<'PY'
import sys
sys.path.insert(0, sys.argv[2])
import torch_llama as tl
t, meta = tl.read_safetensors(sys.argv[1])
tl.write_safetensors(sys.argv[1], {k: v for k, v in t.items() if not k.startswith("base_model.vera_")}, meta)
PY
"$SL" eval --model "$W/model" --adapter "$W/nosave" --data "$W/data.jsonl" "${EV[@]}" --out "$W/eval-nosave.json"
cmp <("$PY" -c "import json; print(json.load(open('$W/eval-nosave.json'))['loss'])") \
    <("$PY" -c "import json; print(json.load(open('$W/eval-tp1.json'))['loss'])")
echo "vera import: save_projection false (projections regenerated from the key): the same eval loss"
echo "vera_case: OK"
