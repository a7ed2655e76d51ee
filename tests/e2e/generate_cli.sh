#!/usr/bin/env bash
# The generate command's command line and bad input: every refusal is one line with the
# documented exit status (2 usage, 3 bad input, 4 cannot write) on one rank or two, and the
# edge cases work: more DP groups than prompts, a KV cache that runs out (--max-seq-len),
# --help listing every option.
# usage: generate_cli.sh SHARDLORA_BINARY WORK_DIR
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
set -uo pipefail
SL="$1"; W="$2/generate_cli"
rm -rf "$W"; mkdir -p "$W"
fails=0
"$SL" make-model --out "$W/model" --layers 2 --hidden 32 --ffn 64 --heads 4 --kv-heads 2 --vocab 259 > /dev/null || exit 1
M=(--model "$W/model" --threads 1 --log-level warn)

# expect STATUS PATTERN [mpi] ARGS...: the exit status, and stderr has exactly one line of
# ours (mpiexec adds its own block) and it matches PATTERN
expect() {
  local want="$1" pat="$2"; shift 2
  local cmd=("$SL")
  if [ "$1" = mpi ]; then shift; cmd=(mpiexec --oversubscribe -n 2 "$SL"); fi
  "${cmd[@]}" generate "$@" > "$W/out" 2> "$W/err"
  local rc=$? n
  n=$(grep -c -e '^shardlora' -e 'shardlora r[0-9]' "$W/err")
  if [ "$rc" != "$want" ] || ! grep -q -- "$pat" "$W/err" || [ "$n" != 1 ]; then
    echo "FAIL: generate $* -> status $rc (want $want), $n stderr lines (want 1), pattern '$pat':"
    cat "$W/err"
    fails=$((fails + 1))
  else
    echo "ok: status $rc: $(grep -- "$pat" "$W/err" | head -1)"
  fi
}

printf '{"input_ids": [1, 2]}\n{"input_ids": [3,\n' > "$W/badjson.jsonl"
printf '{"input_ids": [1, 2]}\n\n{"input_ids": [1, 999]}\n' > "$W/badid.jsonl"
printf '{"messages": [{"role": "user", "content": "hi"}]}\n' > "$W/chat.jsonl"
printf '{"text": "hi"}\n' > "$W/nokey.jsonl"
printf '{"input_ids": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}\n' > "$W/long.jsonl"
: > "$W/empty.jsonl"

expect 2 "exactly one of --prompt" "${M[@]}"
expect 2 "exactly one of --prompt" "${M[@]}" --prompt hi --prompts "$W/chat.jsonl"
expect 2 "needs --adapter" "${M[@]}" --prompt hi --merge-in-memory
expect 2 "top-p" "${M[@]}" --prompt hi --top-p 0
expect 2 "temperature" "${M[@]}" --prompt hi --temperature -1
expect 2 "max-new-tokens" "${M[@]}" --prompt hi --max-new-tokens 0
expect 2 "stop" "${M[@]}" --prompt hi --stop=
expect 2 "unknown" "${M[@]}" --prompt hi --no-such-flag
expect 2 "tp" mpi "${M[@]}" --prompt hi --tp 3
expect 3 "badjson.jsonl:2:" "${M[@]}" --prompts "$W/badjson.jsonl"
expect 3 "badid.jsonl:3:.*input_ids" mpi "${M[@]}" --prompts "$W/badid.jsonl" --tp 2
expect 3 "chat-format" "${M[@]}" --prompts "$W/chat.jsonl"
expect 3 "nokey.jsonl:1:" "${M[@]}" --prompts "$W/nokey.jsonl"
expect 3 "no prompts" "${M[@]}" --prompts "$W/empty.jsonl"
expect 3 "cannot open" "${M[@]}" --prompts "$W/missing.jsonl"
expect 3 "config.json" --model "$W/no-model" --prompt hi --log-level warn
expect 3 "adapter" "${M[@]}" --prompt hi --adapter "$W/no-adapter"
expect 2 "max-seq-len" "${M[@]}" --prompts "$W/long.jsonl" --max-seq-len 8
expect 4 "cannot write" "${M[@]}" --prompt hi --out "$W/no-dir/out.jsonl"

# a KV cache of 12 positions: 10 prompt tokens leave room for 3 generated ones
"$SL" generate "${M[@]}" --prompts "$W/long.jsonl" --max-seq-len 12 --ignore-eos --out "$W/len.jsonl" > /dev/null 2> "$W/err"
if ! grep -q '"finish_reason": "length"' "$W/len.jsonl" || [ "$(grep -o '"generated_tokens": [0-9]*' "$W/len.jsonl")" != '"generated_tokens": 3' ]; then
  echo "FAIL: --max-seq-len 12 with a 10-token prompt:"; cat "$W/len.jsonl" "$W/err"; fails=$((fails + 1))
else echo "ok: --max-seq-len 12 stops after 3 tokens with finish_reason length"; fi

# one prompt, two DP groups: the second has nothing to do; rank 0 streams the text
mpiexec --oversubscribe -n 2 "$SL" generate "${M[@]}" --prompt "hi" --max-new-tokens 5 --ignore-eos \
  --out "$W/one.jsonl" > "$W/one.out" 2> "$W/err"
rc=$?
if [ $rc != 0 ] || [ "$(wc -l < "$W/one.jsonl")" != 1 ] || [ ! -s "$W/one.out" ]; then
  echo "FAIL: one prompt at dp=2 (status $rc)"; cat "$W/err"; fails=$((fails + 1))
else echo "ok: one prompt at dp=2"; fi

# JSONL on stdout for several prompts, in order, nothing else on stdout
printf '{"input_ids": [1]}\n{"input_ids": [2, 3]}\n{"prompt": "abc"}\n' > "$W/three.jsonl"
mpiexec --oversubscribe -n 2 "$SL" generate "${M[@]}" --prompts "$W/three.jsonl" --max-new-tokens 4 > "$W/three.out" 2> "$W/err"
if [ "$(grep -o '"prompt_index": [0-9]*' "$W/three.out" | tr -dc '0-9')" != 012 ] || [ "$(wc -l < "$W/three.out")" != 3 ]; then
  echo "FAIL: three prompts at dp=2 on stdout:"; cat "$W/three.out" "$W/err"; fails=$((fails + 1))
else echo "ok: three prompts at dp=2: JSONL on stdout in prompt order"; fi

# --help lists every option the parser knows
"$SL" generate --help > "$W/help" || { echo "FAIL: --help"; fails=$((fails + 1)); }
for opt in model adapter merge-in-memory prompt prompts chat chat-format out stream max-new-tokens temperature \
           top-k top-p repetition-penalty seed stop ignore-eos batch-size prefill-rows max-seq-len no-kv-cache \
           dump-logits tp threads; do
  grep -q -- "--$opt" "$W/help" || { echo "FAIL: --help lacks --$opt"; fails=$((fails + 1)); }
done

if [ $fails -ne 0 ]; then echo "generate_cli: $fails failures"; exit 1; fi
echo "generate_cli: OK"
