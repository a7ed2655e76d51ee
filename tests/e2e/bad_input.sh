#!/usr/bin/env bash
# Bad input gets one clear line naming the file and the place, a non-zero exit, and
# nothing written: truncated safetensors, offsets past the end, wrong dtype, a shape that
# does not match config.json, a missing tensor, malformed config.json, malformed JSONL,
# bad flags and impossible layouts (also under mpiexec with 2 ranks: no hang).
# usage: bad_input.sh SHARDLORA_BINARY WORK_DIR
# Open MPI refuses root unless told (CI runs as root).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
set -uo pipefail
SL="$1"; W="$2/bad_input"
PY=/usr/bin/python3
rm -rf "$W"; mkdir -p "$W"
fails=0; passes=0

"$SL" make-model --out "$W/good" --layers 1 --hidden 32 --ffn 48 --heads 2 --vocab 300 >/dev/null || exit 1
printf '{"input_ids": [1, 2, 3, 4, 5, 6]}\n{"input_ids": [7, 8, 9, 10]}\n' > "$W/good.jsonl"

# copy the good model to $W/NAME and let python edit it: edit NAME 'python code'
# (variables: d = model dir, read_st(path) -> (header dict, data bytes), write_st(path, header, data))
edit() {
  local name="$1" code="$2"
  rm -rf "$W/$name"; cp -r "$W/good" "$W/$name"
  "$PY" - "$W/$name" <<PY || { echo "FAIL $name: the edit script failed"; exit 1; }
import json, struct, sys, os
d = sys.argv[1]
def read_st(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]
    return json.loads(b[8:8 + n]), b[8 + n:]
def write_st(p, h, data):
    hb = json.dumps(h).encode(); open(p, 'wb').write(struct.pack('<Q', len(hb)) + hb + data)
$code
PY
}

# expect NAME REGEX -- ARGS...: the command fails, stderr matches REGEX, OUT is not created
expect() {
  local name="$1" regex="$2"; shift 3
  local out="$W/out-$name"
  rm -rf "$out"
  local err rc
  err=$(timeout 60 "$@" --out "$out" 2>&1 >/dev/null); rc=$?
  if [ $rc -eq 0 ]; then echo "FAIL $name: exit status 0"; fails=$((fails+1)); return; fi
  if [ $rc -eq 124 ]; then echo "FAIL $name: timed out (hang)"; fails=$((fails+1)); return; fi
  if ! grep -Eq -- "$regex" <<<"$err"; then
    echo "FAIL $name: message does not match /$regex/:"; echo "$err" | head -5; fails=$((fails+1)); return
  fi
  if [ -e "$out" ]; then echo "FAIL $name: $out was created"; fails=$((fails+1)); return; fi
  echo "PASS $name (exit $rc): $(grep -E -- "$regex" <<<"$err" | head -1)"
  passes=$((passes+1))
}

ST=model.safetensors
edit truncated-data "p = d + '/$ST'; b = open(p, 'rb').read(); open(p, 'wb').write(b[:len(b) - 100])"
expect truncated-data "truncated-data/$ST.*(past the end|truncat)" -- "$SL" train --model "$W/truncated-data" --data "$W/good.jsonl"

edit truncated-header "p = d + '/$ST'; b = open(p, 'rb').read(); open(p, 'wb').write(b[:40])"
expect truncated-header "truncated-header/$ST" -- "$SL" train --model "$W/truncated-header" --data "$W/good.jsonl"

edit offsets-past-end "
p = d + '/$ST'; h, data = read_st(p)
h['model.norm.weight']['data_offsets'][1] = len(data) + 4096
write_st(p, h, data)"
expect offsets-past-end "offsets-past-end/$ST.*model.norm.weight.*past the end" -- "$SL" train --model "$W/offsets-past-end" --data "$W/good.jsonl"

edit unknown-dtype "
p = d + '/$ST'; h, data = read_st(p)
h['model.norm.weight']['dtype'] = 'F99'
write_st(p, h, data)"
expect unknown-dtype "unknown-dtype/$ST.*model.norm.weight.*F99" -- "$SL" train --model "$W/unknown-dtype" --data "$W/good.jsonl"

edit wrong-dtype "
p = d + '/$ST'; h, data = read_st(p)
t = h['model.norm.weight']; t['dtype'] = 'I32'
write_st(p, h, data)"
expect wrong-dtype "wrong-dtype/$ST.*model.norm.weight.*I32" -- "$SL" train --model "$W/wrong-dtype" --data "$W/good.jsonl"

edit shape-mismatch "
p = d + '/config.json'; c = json.load(open(p)); c['intermediate_size'] = 40
json.dump(c, open(p, 'w'))"
expect shape-mismatch "shape-mismatch/$ST.*gate_proj.weight.*\[48, 32\].*\[40, 32\]" -- "$SL" train --model "$W/shape-mismatch" --data "$W/good.jsonl"

edit missing-tensor "
p = d + '/$ST'; h, data = read_st(p)
del h['model.layers.0.mlp.up_proj.weight']
write_st(p, h, data)"
expect missing-tensor "missing-tensor.*model.layers.0.mlp.up_proj.weight.*missing" -- "$SL" train --model "$W/missing-tensor" --data "$W/good.jsonl"

edit bad-config-json "
p = d + '/config.json'; s = open(p).read(); open(p, 'w').write(s[:len(s) // 2])"
expect bad-config-json "bad-config-json/config.json.*(line|column|offset)" -- "$SL" train --model "$W/bad-config-json" --data "$W/good.jsonl"

edit missing-config-field "
p = d + '/config.json'; c = json.load(open(p)); del c['num_attention_heads']
json.dump(c, open(p, 'w'))"
expect missing-config-field "missing-config-field/config.json.*num_attention_heads" -- "$SL" train --model "$W/missing-config-field" --data "$W/good.jsonl"

edit unknown-arch "
p = d + '/config.json'; c = json.load(open(p)); c['architectures'] = ['GPT2LMHeadModel']
json.dump(c, open(p, 'w'))"
expect unknown-arch "unknown-arch/config.json.*GPT2LMHeadModel" -- "$SL" train --model "$W/unknown-arch" --data "$W/good.jsonl"

printf '{"input_ids": [1, 2, 3]}\n{"input_ids": [4, 5,\n' > "$W/bad-json.jsonl"
expect bad-jsonl-line "bad-json.jsonl:2: .*JSON" -- "$SL" train --model "$W/good" --data "$W/bad-json.jsonl"
printf '{"input_ids": [1, 2, 3]}\n\n{"ids": [4]}\n' > "$W/no-ids.jsonl"
expect jsonl-missing-field "no-ids.jsonl:3: .*input_ids" -- "$SL" train --model "$W/good" --data "$W/no-ids.jsonl"
printf '{"input_ids": [1, 2, 3000]}\n' > "$W/oov.jsonl"
expect jsonl-id-out-of-vocab "oov.jsonl:1: .*3000.*vocabulary" -- "$SL" train --model "$W/good" --data "$W/oov.jsonl"
printf '{"input_ids": [1, 2, "x"]}\n' > "$W/type.jsonl"
expect jsonl-wrong-type "type.jsonl:1: .*input_ids.*\[2\].*integer" -- "$SL" train --model "$W/good" --data "$W/type.jsonl"
: > "$W/empty.jsonl"
expect jsonl-empty "empty.jsonl.*empty" -- "$SL" train --model "$W/good" --data "$W/empty.jsonl"
expect jsonl-unreadable "nonexistent.jsonl.*cannot (open|read)" -- "$SL" train --model "$W/good" --data "$W/nonexistent.jsonl"
expect model-dir-missing "nonexistent-model.*config.json" -- "$SL" train --model "$W/nonexistent-model" --data "$W/good.jsonl"

# The text formats (the good model has the byte-level tokenizer.json; no tokenizer_config.json).
printf '{"text": "fine"}\n{"text": 12}\n' > "$W/text-type.jsonl"
expect text-wrong-type "text-type.jsonl:2: .*\"text\" must be a string" -- "$SL" train --model "$W/good" --data "$W/text-type.jsonl"
printf '{"prompt": "only a prompt", "completion": ""}\n' > "$W/prompt-only.jsonl"
expect prompt-only "prompt-only.jsonl:1: .*nothing to train on" -- "$SL" train --model "$W/good" --data "$W/prompt-only.jsonl"
printf '{"prompt": "no completion"}\n' > "$W/no-completion.jsonl"
expect missing-completion "no-completion.jsonl:1: .*completion" -- "$SL" train --model "$W/good" --data "$W/no-completion.jsonl"
printf '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n' > "$W/chat.jsonl"
expect messages-no-template "chat.jsonl:1: .*--chat-format" -- "$SL" train --model "$W/good" --data "$W/chat.jsonl"
printf '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": 5}]}\n' > "$W/chat-type.jsonl"
expect messages-wrong-type "chat-type.jsonl:1: .*messages.*\[1\].*content.*string" -- "$SL" train --model "$W/good" --data "$W/chat-type.jsonl" --chat-format mistral
expect bad-chat-format "--chat-format 'vicuna'" -- "$SL" train --model "$W/good" --data "$W/chat.jsonl" --chat-format vicuna
rm -rf "$W/no-tokenizer"; cp -r "$W/good" "$W/no-tokenizer"; rm "$W/no-tokenizer/tokenizer.json"
expect text-without-tokenizer "text-type.jsonl:1: .*tokenizer" -- "$SL" train --model "$W/no-tokenizer" --data "$W/text-type.jsonl"
# A bad line far into the file is found by the rank that tokenises that part, named with its
# true line number, and the other rank does not hang.
/usr/bin/python3 -c "
import json
for i in range(400): print(json.dumps({'text': 'line %d of a longer file' % i}) if i != 337 else '{\"text\": \"unterminated')
" > "$W/late-bad.jsonl"
expect mpi-2-ranks-bad-line "late-bad.jsonl:338: .*JSON" -- \
  mpiexec --oversubscribe -n 2 "$SL" train --model "$W/good" --data "$W/late-bad.jsonl" --threads 1

expect unknown-flag "unknown option --lora-rnk; did you mean --lora-rank \(= --lora-r\)\?" -- "$SL" train --model "$W/good" --data "$W/good.jsonl" --lora-rnk 4
expect bad-number "--lora-r: 'four' is not an integer" -- "$SL" train --model "$W/good" --data "$W/good.jsonl" --lora-r four
expect bad-target "unknown module 'qq_proj'" -- "$SL" train --model "$W/good" --data "$W/good.jsonl" --target-modules q_proj,qq_proj
expect impossible-tp "--tp 3 does not divide the 1 MPI ranks" -- "$SL" train --model "$W/good" --data "$W/good.jsonl" --tp 3
expect mpi-2-ranks-impossible-tp "--tp 3 does not divide the 2 MPI ranks" -- \
  mpiexec --oversubscribe -n 2 "$SL" train --model "$W/good" --data "$W/good.jsonl" --tp 3
expect mpi-2-ranks-bad-model "missing-tensor.*up_proj.weight.*missing" -- \
  mpiexec --oversubscribe -n 2 "$SL" train --model "$W/missing-tensor" --data "$W/good.jsonl"

# A bad model or bad data must not damage an existing output directory.
for bad in "--model $W/missing-tensor --data $W/good.jsonl" "--model $W/good --data $W/text-type.jsonl"; do
  rm -rf "$W/existing"; mkdir -p "$W/existing"; echo keep > "$W/existing/metrics.jsonl"
  # shellcheck disable=SC2086
  "$SL" train $bad --out "$W/existing" >/dev/null 2>&1
  if [ "$(cat "$W/existing/metrics.jsonl")" = keep ] && [ "$(ls "$W/existing")" = metrics.jsonl ]; then
    echo "PASS existing-output-untouched ($bad)"; passes=$((passes+1));
  else echo "FAIL existing-output-untouched ($bad): $(ls "$W/existing")"; fails=$((fails+1)); fi
done

echo "bad_input: $passes passed, $fails failed"
[ $fails -eq 0 ]
