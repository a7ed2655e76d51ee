#!/usr/bin/env bash
# `shardlora preview --jsonl` against the data-level oracle (tests/reference/chat_oracle.py)
# for one model family: identical text, input_ids, labels and segments on every conversation
# of tests/chat/conversations.jsonl the family's template renders (preview_oracle.py).
# usage: preview_oracle.sh SHARDLORA_BINARY TOKENIZER_CACHE WORK_DIR FAMILY
set -euo pipefail
SL="$1"; CACHE="$2"; FAMILY="$4"; W="$3/preview_oracle_$FAMILY"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$HERE/../tokenizer/install.sh" "$CACHE" > /dev/null
rm -rf "$W"; mkdir -p "$W"
exec /usr/bin/python3 "$HERE/preview_oracle.py" "$SL" "$CACHE" "$W" "$FAMILY"
