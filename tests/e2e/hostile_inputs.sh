#!/usr/bin/env bash
# Inputs that used to hang or be accepted without a word (issue 16):
#   a FIFO as model.safetensors, config.json, tokenizer.json, --data, --prompts, manifest.pb
#   and --config, and a directory as a file: one error line, exit 3 (2 for --config), no
#   hang (timeout 20);
#   an unknown extra tensor (warning) or one past num_hidden_layers (refused); config.json
#   without architectures (warning) or with a contradicting model_type (refused); a JSONL
#   line with input_ids and text, or a key twice (refused, file:line); an empty tokenizer
#   vocab (refused); lora_alpha 0 (refused) and an unknown target module (warning) in a PEFT
#   adapter; checkpoint manifests with a valid CRC but no tensors, a negative or absurd step,
#   a negative optimizer step (inspect exits 3, export refuses, auto-resume falls back);
#   a stale step-N.tmp removed, with a log line, when a run starts.
# usage: hostile_inputs.sh SHARDLORA_BINARY WORK_DIR
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
set -uo pipefail
SL="$(readlink -f "$1")"; W="$2/hostile_inputs"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY=/usr/bin/python3
rm -rf "$W"; mkdir -p "$W"; cd "$W" || exit 1
fails=0; passes=0
bad() { echo "FAIL $*"; fails=$((fails+1)); }
good() { echo "PASS $*"; passes=$((passes+1)); }

"$SL" make-model --out m --layers 1 --hidden 32 --ffn 48 --heads 2 --vocab 300 >/dev/null || exit 1
printf '{"input_ids": [1, 2, 3, 4, 5, 6, 7, 8]}\n{"input_ids": [7, 8, 9, 10, 11, 12, 13, 14]}\n' > d.jsonl
printf '{"text": "hello there"}\n{"text": "general kenobi"}\n' > text.jsonl
T=(--seq-len 8 --micro-batch 1 --threads 1)

# refused NAME STATUS REGEX CMD...: exits STATUS within 20 s, one line on stderr matching REGEX
refused() {
  local name="$1" want="$2" regex="$3"; shift 3
  local err rc
  err=$(timeout 20 "$@" 2>&1 >/dev/null); rc=$?
  # the error lines start "shardlora"; the configuration printout and info lines are not errors
  err=$(grep '^shardlora' <<<"$err")
  if [ $rc -eq 124 ]; then bad "$name: hung (timeout 20 s)"; return; fi
  if [ $rc -ne "$want" ]; then bad "$name: exit $rc, want $want: $err"; return; fi
  if ! grep -Eq -- "$regex" <<<"$err"; then bad "$name: message does not match /$regex/: $err"; return; fi
  if [ "$(wc -l <<<"$err")" -ne 1 ]; then bad "$name: more than one error line: $err"; return; fi
  good "$name (exit $rc): $err"
}

# accepted NAME REGEX CMD...: exits 0 and stderr has a warning line matching REGEX
warned() {
  local name="$1" regex="$2"; shift 2
  local err rc
  err=$(timeout 60 "$@" 2>&1 >/dev/null); rc=$?
  if [ $rc -ne 0 ]; then bad "$name: exit $rc: $(tail -2 <<<"$err")"; return; fi
  if ! grep -Eq -- "$regex" <<<"$err"; then bad "$name: no line matching /$regex/"; return; fi
  good "$name: $(grep -E -- "$regex" <<<"$err" | head -1)"
}

# model NAME: a copy of the good model to edit
model() { rm -rf "$1"; cp -r m "$1"; }

# ---- a FIFO (or a directory) where a file is expected ----
FIFO_RE='not a regular file \(a FIFO\)'
model fifo-st; rm fifo-st/model.safetensors; mkfifo fifo-st/model.safetensors
refused "FIFO model.safetensors" 3 "fifo-st/model.safetensors: $FIFO_RE" \
  "$SL" train --model fifo-st --data d.jsonl --out o-fifo "${T[@]}" --steps 1
model fifo-cfg; rm fifo-cfg/config.json; mkfifo fifo-cfg/config.json
refused "FIFO config.json" 3 "fifo-cfg/config.json: $FIFO_RE" \
  "$SL" train --model fifo-cfg --data d.jsonl --out o-fifo "${T[@]}" --steps 1
model fifo-tok; rm fifo-tok/tokenizer.json; mkfifo fifo-tok/tokenizer.json
refused "FIFO tokenizer.json" 3 "fifo-tok/tokenizer.json: $FIFO_RE" \
  "$SL" train --model fifo-tok --data text.jsonl --out o-fifo "${T[@]}" --steps 1
mkfifo data.fifo
refused "FIFO --data" 3 "data.fifo: $FIFO_RE" \
  "$SL" train --model m --data data.fifo --out o-fifo "${T[@]}" --steps 1
# two ranks: both refuse, none waits for the other (one line: rank 0 speaks for the job)
refused "FIFO --data at 2 ranks" 3 "data.fifo: $FIFO_RE" \
  mpiexec --oversubscribe -np 2 "$SL" train --model m --data data.fifo --out o-fifo "${T[@]}" --steps 1
refused "FIFO model.safetensors at tp=2" 3 "fifo-st/model.safetensors: $FIFO_RE" \
  mpiexec --oversubscribe -np 2 "$SL" train --model fifo-st --data d.jsonl --out o-fifo "${T[@]}" --steps 1 --tp 2
mkfifo prompts.fifo
refused "FIFO --prompts (generate)" 3 "prompts.fifo: $FIFO_RE" \
  "$SL" generate --model m --prompts prompts.fifo --threads 1
mkfifo cfg.fifo
refused "FIFO --config" 2 "cfg.fifo: $FIFO_RE" \
  "$SL" train --model m --data d.jsonl --out o-fifo "${T[@]}" --steps 1 --config cfg.fifo
model dir-st; rm dir-st/model.safetensors; mkdir dir-st/model.safetensors
refused "directory as model.safetensors" 3 'dir-st/model.safetensors: not a regular file \(a directory\)' \
  "$SL" train --model dir-st --data d.jsonl --out o-fifo "${T[@]}" --steps 1
[ -e o-fifo ] && bad "a refused run created its --out"

# ---- a real run with checkpoints at steps 1, 2, 3 (for the checkpoint cases) ----
"$SL" train --model m --data d.jsonl --out run "${T[@]}" --steps 3 --ckpt-every 1 > run.log 2>&1 ||
  { tail -5 run.log; echo "FAIL the base run"; exit 1; }
ck() { rm -rf "$1"; cp -r run/checkpoints/step-000000003 "$1"; }
ck ck-fifo; rm ck-fifo/manifest.pb; mkfifo ck-fifo/manifest.pb
refused "FIFO manifest.pb (inspect)" 3 "ck-fifo/manifest.pb: $FIFO_RE" "$SL" inspect ck-fifo

# ---- model files ----
edit_st() { # edit_st DIR 'python on h (header dict) and data (bytes)'
  "$PY" - "$1/model.safetensors" <<PY || { echo "FAIL the edit of $1"; exit 1; }
import json, struct, sys
p = sys.argv[1]; b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n]); data = b[8 + n:]
def add(name, *shape):
    global data
    n = 4
    for k in shape: n *= k
    h[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [len(data), len(data) + n]}
    data += bytes(n)
$2
hb = json.dumps(h).encode(); open(p, 'wb').write(struct.pack('<Q', len(hb)) + hb + data)
PY
}
model extra; edit_st extra 'add("model.vision_tower.weight", 2, 2)'
warned "unknown extra tensor: a warning" "1 tensor the model does not use, ignored \(first: 'model.vision_tower.weight'\)" \
  "$SL" train --model extra --data d.jsonl --out o-extra "${T[@]}" --steps 1
model extra-layer; edit_st extra-layer 'add("model.layers.1.self_attn.q_proj.weight", 32, 32)'
refused "a tensor past num_hidden_layers" 3 "tensor 'model.layers.1.self_attn.q_proj.weight' is in layer 1, but config.json has num_hidden_layers 1" \
  "$SL" train --model extra-layer --data d.jsonl --out o-x "${T[@]}" --steps 1
model extra-bias; edit_st extra-bias 'add("model.layers.0.self_attn.q_proj.bias", 32)'
refused "a bias config.json does not enable" 3 "'model.layers.0.self_attn.q_proj.bias' is a bias config.json does not enable" \
  "$SL" train --model extra-bias --data d.jsonl --out o-x "${T[@]}" --steps 1

edit_cfg() { "$PY" - "$1/config.json" <<PY || { echo "FAIL the edit of $1"; exit 1; }
import json, sys
p = sys.argv[1]; c = json.load(open(p))
$2
json.dump(c, open(p, 'w'))
PY
}
model no-arch; edit_cfg no-arch 'del c["architectures"]'
warned "config.json without architectures: a warning" "no 'architectures'; using LlamaForCausalLM from model_type 'llama'" \
  "$SL" train --model no-arch --data d.jsonl --out o-noarch "${T[@]}" --steps 1
model neither; edit_cfg neither 'del c["architectures"]; del c["model_type"]'
refused "config.json without architectures and model_type" 3 "missing field 'architectures'" \
  "$SL" train --model neither --data d.jsonl --out o-x "${T[@]}" --steps 1
model contra; edit_cfg contra 'c["model_type"] = "qwen2"'
refused "model_type contradicting architectures" 3 "model_type 'qwen2' contradicts architectures 'LlamaForCausalLM'" \
  "$SL" train --model contra --data d.jsonl --out o-x "${T[@]}" --steps 1

model empty-vocab
"$PY" - empty-vocab/tokenizer.json <<'PY' || exit 1
import json, sys
p = sys.argv[1]; t = json.load(open(p)); t["model"]["vocab"] = {}; t["model"]["merges"] = []
t["added_tokens"] = []; json.dump(t, open(p, "w"))
PY
refused "tokenizer.json with an empty vocab" 3 "empty-vocab/tokenizer.json: model.vocab: empty" \
  "$SL" train --model empty-vocab --data text.jsonl --out o-x "${T[@]}" --steps 1

# ---- data ----
printf '{"input_ids": [1, 2, 3, 4]}\n{"text": "ab", "input_ids": [1, 2]}\n' > both.jsonl
refused "JSONL line with text and input_ids" 3 'both.jsonl:2: both "input_ids" and "text"' \
  "$SL" train --model m --data both.jsonl --out o-x "${T[@]}" --steps 1
printf '{"input_ids": [1, 2, 3], "input_ids": [4, 5, 6]}\n' > dup.jsonl
refused "JSONL line with a key twice" 3 'dup.jsonl:1: .*duplicate object key' \
  "$SL" train --model m --data dup.jsonl --out o-x "${T[@]}" --steps 1

# ---- PEFT adapters ----
edit_ad() { rm -rf "$1"; cp -r run/adapter "$1"; "$PY" - "$1/adapter_config.json" <<PY || exit 1
import json, sys
p = sys.argv[1]; c = json.load(open(p))
$2
json.dump(c, open(p, 'w'))
PY
}
edit_ad ad-alpha0 'c["lora_alpha"] = 0'
refused "lora_alpha 0" 3 "ad-alpha0/adapter_config.json: lora_alpha 0 scales the update to zero" \
  "$SL" eval --model m --adapter ad-alpha0 --data d.jsonl --seq-len 8 --threads 1
edit_ad ad-target 'c["target_modules"].append("qkv_proj")'
warned "unknown target module: a warning" "target_modules entry 'qkv_proj' names no module of this model" \
  "$SL" eval --model m --adapter ad-target --data d.jsonl --seq-len 8 --threads 1

# ---- checkpoint manifests with a valid CRC ----
for e in no-tensors step=-5 step=4611686018427387904 optimizer-step=-1; do
  ck "ck-$e"; "$PY" "$HERE/manifest_edit.py" "ck-$e/manifest.pb" "$e" || exit 1
  refused "manifest $e: inspect" 3 "ck-$e/manifest.pb: damaged" "$SL" inspect "ck-$e"
done
refused "manifest no-tensors: export" 3 "ck-no-tensors/manifest.pb: damaged: the manifest lists no tensors" \
  "$SL" export ck-no-tensors --out o-export
[ -e o-export ] && bad "export of an empty checkpoint wrote o-export"

# auto-resume passes over a latest with no tensors to step 2, and a stale step-N.tmp goes
rm -rf res; cp -r run res
"$PY" "$HERE/manifest_edit.py" res/checkpoints/step-000000003/manifest.pb no-tensors || exit 1
mkdir res/checkpoints/step-000000007.tmp; echo x > res/checkpoints/step-000000007.tmp/shard-tp0.pb
"$SL" train --model m --data d.jsonl --out res "${T[@]}" --steps 4 --ckpt-every 1 > res.log 2>&1
rc=$?
if [ $rc -ne 0 ]; then bad "auto-resume past an empty manifest: exit $rc: $(tail -3 res.log)"
elif ! grep -q 'step-000000003 skipped: .*no tensors' res.log || ! grep -q 'resumed from .*step-000000002' res.log; then
  bad "auto-resume did not fall back to step 2: $(grep -iE 'skip|resum' res.log)"
else good "auto-resume falls back past a manifest with no tensors: $(grep -m1 skipped res.log)"; fi
if [ -e res/checkpoints/step-000000007.tmp ]; then bad "a stale step-7.tmp survived a resumed start"
elif ! grep -q 'removed .*step-000000007.tmp, left by an interrupted checkpoint write' res.log; then
  bad "no log line for the removed step-7.tmp"
else good "stale step-7.tmp removed on a resumed start: $(grep -m1 'removed .*tmp' res.log)"; fi

# a fresh start in a new --out removes one too
mkdir -p fresh/checkpoints/step-000000009.tmp
"$SL" train --model m --data d.jsonl --out fresh "${T[@]}" --steps 1 > fresh.log 2>&1
if [ -e fresh/checkpoints/step-000000009.tmp ]; then bad "a stale step-9.tmp survived a fresh start: $(tail -2 fresh.log)"
elif ! grep -q 'removed fresh/checkpoints/step-000000009.tmp' fresh.log; then bad "no log line for step-9.tmp"
else good "stale step-9.tmp removed on a fresh start: $(grep -m1 'removed .*tmp' fresh.log)"; fi

echo "hostile_inputs: $passes passed, $fails failed"
[ $fails -eq 0 ]
