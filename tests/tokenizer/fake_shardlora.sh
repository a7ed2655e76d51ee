#!/usr/bin/env bash
# A stand-in for `shardlora tokenize` built on the oracle, to test the harness itself:
#   fake_shardlora.sh tokenize --model DIR [--no-special] [--decode] [--jsonl]
# Needs SHARDLORA_TOKENIZER_CACHE (the install.sh cache dir). Not used by the CTests.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${SHARDLORA_TOKENIZER_CACHE:?set SHARDLORA_TOKENIZER_CACHE}"
[ "${1:-}" = tokenize ] || { echo "fake_shardlora: only 'tokenize'" >&2; exit 2; }
shift
model="" special=1 decode=0 jsonl=0
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --no-special) special=0; shift ;;
    --decode) decode=1; shift ;;
    --jsonl) jsonl=1; shift ;;
    *) echo "fake_shardlora: unknown option $1" >&2; exit 2 ;;
  esac
done
mode=encode
[ "$special" = 1 ] || mode=encode-nospecial
[ "$decode" = 0 ] || mode=decode
[ "$jsonl" = 1 ] || mode=encode-raw
if ! /usr/bin/node "$HERE/oracle.js" "$CACHE" "$model/tokenizer.json" "$mode" 2>/tmp/fake_shardlora.$$; then
  echo "fake_shardlora: $model/tokenizer.json: $(head -c 300 /tmp/fake_shardlora.$$)" >&2
  rm -f /tmp/fake_shardlora.$$; exit 1
fi
rm -f /tmp/fake_shardlora.$$
