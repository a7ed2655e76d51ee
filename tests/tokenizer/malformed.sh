#!/usr/bin/env bash
# Malformed tokenizer.json files must make `shardlora tokenize` exit non-zero (not crash) with a
# message that names tokenizer.json and the JSON path / component at fault.
# Usage: tests/tokenizer/malformed.sh BINARY CACHE_DIR WORKDIR
set -uo pipefail
BIN="${1:?usage: malformed.sh BINARY CACHE_DIR WORKDIR}"; CACHE="${2:?}"; WORK="${3:?}/malformed"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$HERE/install.sh" "$CACHE" >/dev/null || { echo "malformed.sh: install.sh failed" >&2; exit 1; }
rm -rf "$WORK"; mkdir -p "$WORK"
/usr/bin/node "$HERE/build_models.js" "$CACHE" "$WORK/models" >/dev/null || exit 1
/usr/bin/node "$HERE/malformed.js" "$WORK/models/gpt2/tokenizer.json" "$WORK/cases" || exit 1
fail=0
# Control: the valid base works, so that a binary that always fails cannot pass.
got="$(printf '"Hello world"\n' | "$BIN" tokenize --model "$WORK/models/gpt2" --jsonl 2>&1)"
if [ "$(printf '%s' "$got" | tr -d ' \n')" != "[15496,995]" ]; then
  echo "FAIL control: valid GPT-2 tokenizer.json gave: $(printf '%s' "$got" | head -c 300)"; fail=1
fi
mkdir -p "$WORK/cases/c99"; echo $'c99\tno_file\tno such|exist|open|not found|missing' >> "$WORK/cases/cases.tsv"
n=0
while IFS=$'\t' read -r d name want; do
  n=$((n + 1))
  dir="$WORK/cases/$d"
  printf '"Hello world"\n' | timeout 20 "$BIN" tokenize --model "$dir" --jsonl > "$dir.out" 2> "$dir.err"
  rc=$?
  msg="$(head -c 400 "$dir.err" | tr '\n' ' ')"
  if [ $rc -eq 0 ]; then
    echo "FAIL $name: exit 0 (stdout: $(head -c 200 "$dir.out"))"; fail=1
  elif [ $rc -ge 124 ]; then
    echo "FAIL $name: exit $rc (crash, signal or timeout): $msg"; fail=1
  elif ! grep -q 'tokenizer\.json' "$dir.err"; then
    echo "FAIL $name: message does not name tokenizer.json: $msg"; fail=1
  # The component must be named in the message itself, not only in the file's path.
  elif ! sed -e "s#$dir##g" -e 's#tokenizer\.json##g' "$dir.err" | grep -qiE "$want"; then
    echo "FAIL $name: message does not name the component (/$want/): $msg"; fail=1
  else
    echo "ok   $name (exit $rc): $msg"
  fi
done < "$WORK/cases/cases.tsv"
echo "malformed.sh: $n cases"
[ $fail -eq 0 ] || { echo "malformed.sh: FAIL"; exit 1; }
echo "malformed.sh: all rejected with a clear message"
