#!/usr/bin/env bash
# Tokenizer throughput, side by side in one run: `shardlora tokenize --jsonl` vs the Hugging Face
# `tokenizers` npm package (the oracle), single thread both, on the same ~10 MB of real text
# (Moby Dick paragraphs + Debian fortunes, repeated), one JSONL line per paragraph/quote.
#   oracle: node, RAYON_NUM_THREADS=1, TOKENIZERS_PARALLELISM=false; only encoding is timed
#           (inside node, after loading and a warm-up), one encode call per line; encodeBatch
#           of all lines reported too.
#   ours:   wall time of the whole `shardlora tokenize --jsonl < lines` (JSON parsing and
#           printing included); its startup (loading tokenizer.json, one empty line) is measured
#           separately and reported, and MB/s is also given with it subtracted.
#   ids:    ours and the oracle's ids compared line by line ("equal", or the lines that differ).
# Settings (environment): FAMILIES="llama3 qwen3 mistral gpt2" (the variants that
# tests/tokenizer/build_models.js makes, e.g. mistral_metaspace, can be named too), MB=10, BIN (default: builds
# shardlora into BUILD), BUILD=$ROOT/build, CACHE=$HOME/.cache/shardlora/tokenizer, WORK=$ROOT/out/tokenizer-bench.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOK="$ROOT/tests/tokenizer"
FAMILIES="${FAMILIES:-llama3 qwen3 mistral gpt2}"
MB="${MB:-10}"
CACHE="${CACHE:-${HOME:-/root}/.cache/shardlora/tokenizer}"
WORK="${WORK:-$ROOT/out/tokenizer-bench}"
NODE=/usr/bin/node
# shellcheck source=benchmarks/lib.sh
. "$ROOT/benchmarks/lib.sh"

"$TOK/install.sh" "$CACHE" >&2
if [ -z "${BIN:-}" ]; then
  bench_build shardlora
  BIN="$SL"
fi
mkdir -p "$WORK"
$NODE "$TOK/build_models.js" "$CACHE" "$WORK/models" >&2
$NODE "$TOK/build_corpus.js" "$CACHE" "$WORK/bench.jsonl" --bench "$MB"
export RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
have_ours=1
"$BIN" tokenize --help >/dev/null 2>&1 || printf '""\n' | "$BIN" tokenize --model "$WORK/models/gpt2" --jsonl >/dev/null 2>&1 || have_ours=0

now() { echo "$EPOCHREALTIME"; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", b-a}'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else print "n/a" }'; }

echo "tokenizer benchmark: $(wc -l < "$WORK/bench.jsonl") lines, single thread, $(nproc) cores on the machine"
printf '%-17s %6s %12s %12s %12s %12s %12s %8s %s\n' family MB oracle_MB/s oracle_batch ours_MB/s ours_nostart ours_start_s ratio tokens
for fam in $FAMILIES; do
  model="$WORK/models/$fam"
  o="$($NODE "$TOK/oracle.js" "$CACHE" "$model/tokenizer.json" bench "$WORK/bench.jsonl" "$WORK/oracle.$fam.jsonl")"
  bytes=$(echo "$o" | $NODE -e 'console.log(JSON.parse(require("fs").readFileSync(0,"utf8")).bytes)')
  osec=$(echo "$o" | $NODE -e 'console.log(JSON.parse(require("fs").readFileSync(0,"utf8")).seconds_per_line_calls)')
  obsec=$(echo "$o" | $NODE -e 'console.log(JSON.parse(require("fs").readFileSync(0,"utf8")).seconds_batch)')
  otok=$(echo "$o" | $NODE -e 'console.log(JSON.parse(require("fs").readFileSync(0,"utf8")).tokens)')
  omb=$(div "$(div "$bytes" 1000000)" "$osec"); obmb=$(div "$(div "$bytes" 1000000)" "$obsec")
  mbs=$(div "$bytes" 1000000)
  if [ $have_ours = 1 ]; then
    t0=$(now); printf '""\n' | "$BIN" tokenize --model "$model" --jsonl >/dev/null; t1=$(now)
    start=$(sub "$t0" "$t1")
    t0=$(now); "$BIN" tokenize --model "$model" --jsonl < "$WORK/bench.jsonl" > "$WORK/ours.$fam.jsonl"; t1=$(now)
    total=$(sub "$t0" "$t1")
    umb=$(div "$mbs" "$total"); unet=$(div "$mbs" "$(sub "$start" "$total")")
    utok=$($NODE -e 'let n=0; for (const l of require("fs").readFileSync(process.argv[1],"utf8").split("\n")) if (l) n+=JSON.parse(l).length; console.log(n)' "$WORK/ours.$fam.jsonl")
    best=$(awk -v a="$omb" -v b="$obmb" 'BEGIN{print (a > b ? a : b)}')
    ratio=$(div "$umb" "$best")
    toks="$utok/$otok"; [ "$utok" = "$otok" ] || toks="$toks (DIFFERENT)"
    nd=$(paste -d '\n' "$WORK/ours.$fam.jsonl" "$WORK/oracle.$fam.jsonl" | awk 'NR % 2 { a = $0; next } a != $0 { n++ } END { print n + 0 }')
    if [ "$nd" = 0 ] && [ "$(wc -l < "$WORK/ours.$fam.jsonl")" = "$(wc -l < "$WORK/oracle.$fam.jsonl")" ]; then ids=equal; else ids="$nd lines differ"; fi
  else
    umb=n/a unet=n/a start=n/a ratio=n/a toks="-/$otok" ids=-
  fi
  printf '%-17s %6s %12s %12s %12s %12s %12s %8s %s ids %s\n' "$fam" "$mbs" "$omb" "$obmb" "$umb" "$unet" "$start" "$ratio" "$toks" "$ids"
done
echo "(MB = 10^6 bytes of UTF-8 text; ratio = ours (whole run, startup included) / the faster oracle figure; ours_nostart = startup subtracted; tokens = ours/oracle, special tokens on; ids: ours vs the oracle's, line by line)"
[ $have_ours = 1 ] || echo "NOTE: $BIN has no 'tokenize' command yet: only the oracle was measured"
