#!/usr/bin/env bash
# Our tokenizer against the Hugging Face oracle for one family, on the real corpus + edge cases.
# Usage: tests/tokenizer/compare.sh BINARY CACHE_DIR WORKDIR FAMILY
#   FAMILY: llama3 | qwen3 | mistral | gpt2, or a variant made by build_models.js:
#           mistral_metaspace | mistral_metaspace_split | mistral_norm | mistral_heap | gpt2_digits
# Checks (each reports lines and mismatches, the first 10 with text, ids and first difference):
#   1. encode with special tokens        ours == oracle
#   2. encode without special tokens     ours == oracle
#   3. decode of the oracle's ids (with and without specials) ours == oracle's decode
#   4. byte-level families (llama3, qwen3, gpt2, gpt2_digits): decode(encode(x)) == x (Qwen: NFC(x)),
#      lone surrogates counting as U+FFFD
#   5. raw stdin (not --jsonl): the whole input is one text; invalid UTF-8 bytes are taken as
#      U+FFFD (lossy decoding, as the oracle gets from a lossy decoder); ids read as the
#      integers printed
# Exit 1 on any mismatch.
set -uo pipefail
BIN="${1:?usage: compare.sh BINARY CACHE_DIR WORKDIR FAMILY}"
CACHE="${2:?}"; WORK="${3:?}"; FAMILY="${4:?}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NODE=/usr/bin/node
case "$FAMILY" in
  llama3|qwen3|mistral|gpt2|mistral_metaspace|mistral_metaspace_split|mistral_norm|mistral_heap|gpt2_digits) ;;
  *) echo "compare.sh: unknown family $FAMILY" >&2; exit 2 ;;
esac

"$HERE/install.sh" "$CACHE" || { echo "compare.sh: install.sh failed" >&2; exit 1; }
D="$WORK/$FAMILY"
mkdir -p "$D"
$NODE "$HERE/build_models.js" "$CACHE" "$D/models" >/dev/null || exit 1
MODEL="$D/models/$FAMILY"
$NODE "$HERE/build_corpus.js" "$CACHE" "$D/corpus.jsonl" || exit 1
echo "compare.sh: $FAMILY: model $MODEL, corpus $(wc -l < "$D/corpus.jsonl") lines ($(wc -c < "$D/corpus.jsonl") bytes of JSONL)"

fail=0
run_ours() {  # OUT IN ARGS...: one output line per input line (run_ours.js isolates failing lines)
  local out="$1" in="$2"; shift 2
  local t0=$EPOCHREALTIME
  $NODE "$HERE/run_ours.js" "$BIN" "$MODEL" "$in" "$out" "$@"
  echo "  ours ($*): $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f", b-a}') s"
  [ -f "$out" ]  # the comparison that follows reports the lines that failed
}
oracle() { $NODE "$HERE/oracle.js" "$CACHE" "$MODEL/tokenizer.json" "$@"; }

# 1, 2: encode.
for sp in special nospecial; do
  if [ $sp = special ]; then flags=(--jsonl); omode=encode; else flags=(--jsonl --no-special); omode=encode-nospecial; fi
  oracle $omode < "$D/corpus.jsonl" > "$D/oracle.$sp.jsonl" || { echo "FAIL: oracle $omode"; exit 1; }
  if run_ours "$D/ours.$sp.jsonl" "$D/corpus.jsonl" "${flags[@]}"; then
    $NODE "$HERE/compare.js" "$FAMILY encode ($sp tokens)" "$D/corpus.jsonl" "$D/ours.$sp.jsonl" "$D/oracle.$sp.jsonl" || fail=1
  else fail=1; fi
done

# 3: decode the oracle's ids; compare with the oracle's decode.
for sp in special nospecial; do
  oracle decode < "$D/oracle.$sp.jsonl" > "$D/oracle.decode.$sp.jsonl" || { echo "FAIL: oracle decode"; exit 1; }
  if run_ours "$D/ours.decode.$sp.jsonl" "$D/oracle.$sp.jsonl" --decode --jsonl; then
    $NODE "$HERE/compare.js" "$FAMILY decode (ids with $sp tokens) vs oracle decode" "$D/corpus.jsonl" \
      "$D/ours.decode.$sp.jsonl" "$D/oracle.decode.$sp.jsonl" || fail=1
  else fail=1; fi
done

# 4: lossless round trip.
case "$FAMILY" in
  llama3|qwen3|gpt2|gpt2_digits)
    $NODE "$HERE/expected_roundtrip.js" "$FAMILY" < "$D/corpus.jsonl" > "$D/expected.roundtrip.jsonl"
    if [ -s "$D/ours.decode.nospecial.jsonl" ] && [ -s "$D/ours.nospecial.jsonl" ]; then
      # decode(encode(x)) on our own ids.
      if run_ours "$D/ours.roundtrip.jsonl" "$D/ours.nospecial.jsonl" --decode --jsonl; then
        $NODE "$HERE/compare.js" "$FAMILY decode(encode(x)) == x" "$D/corpus.jsonl" \
          "$D/ours.roundtrip.jsonl" "$D/expected.roundtrip.jsonl" || fail=1
      else fail=1; fi
    else
      echo "$FAMILY decode(encode(x)) == x: skipped (no encode/decode output from ours)"; fail=1
    fi ;;
  mistral*) echo "$FAMILY: not lossless (SentencePiece prefix space); decode checked against the oracle's only" ;;
esac

# 5: raw stdin, one text, including invalid UTF-8.
mkdir -p "$D/raw"
printf 'First line of a file.\n\nThird line, with  two spaces.\n' > "$D/raw/multiline.txt"
printf 'a\xffb' > "$D/raw/invalid_ff.txt"
printf 'trunc \xe6\x97' > "$D/raw/truncated.txt"
printf 'overlong \xc0\xaf end' > "$D/raw/overlong.txt"
printf 'surrogate \xed\xa0\x80 bytes' > "$D/raw/cesu_surrogate.txt"
printf '\x80\x80 cont \xf8\x88\x80\x80\x80 5byte \xf4\x90\x80\x80 >U+10FFFF' > "$D/raw/misc_invalid.txt"
printf '\xef\xbb\xbfBOM then text' > "$D/raw/bom.txt"
rawbad=0; rawn=0
for f in "$D"/raw/*.txt; do
  rawn=$((rawn + 1))
  want="$(oracle encode-raw < "$f")"
  if ! got="$("$BIN" tokenize --model "$MODEL" < "$f" 2>"$f.err")"; then
    echo "  raw $(basename "$f"): ours exited non-zero: $(head -c 300 "$f.err")"; rawbad=$((rawbad + 1)); continue
  fi
  got="[$(printf '%s' "$got" | grep -oE -- '-?[0-9]+' | paste -sd, -)]"
  if [ "$got" != "$want" ]; then
    rawbad=$((rawbad + 1))
    echo "  raw $(basename "$f") ($(od -An -c "$f" | tr -s ' ' | head -c 120)): ours $got, oracle $want"
  fi
done
echo "$FAMILY raw stdin (one text, invalid UTF-8 -> U+FFFD): $rawn inputs, $rawbad mismatches"
[ $rawbad -eq 0 ] || fail=1

if [ $fail -ne 0 ]; then echo "compare.sh: $FAMILY: FAIL"; exit 1; fi
echo "compare.sh: $FAMILY: all equal to the oracle"
