#!/usr/bin/env bash
# One generate configuration against the PyTorch reference (generate_check.py): greedy
# decoding of 24 tokens with the KV cache equals argmax decoding by full recomputation in
# PyTorch (every step's logits within 1e-4, the same tokens), at tp=1 and tp=2 and dp=2,
# with batching of 2 sequences and prompt chunks of 8 rows (so chunked prefill, decode rows
# and prompts sharing a forward are all exercised); --no-kv-cache gives the same logits.
# Cases:
#   gqa, kvrep (kv-heads 1 < tp 2), qkv-bias, tied     the above on that model
#   sampling   seeded sampling: same seed -> same text at tp=1, tp=2 and dp=2; another seed
#              -> another text; top-k 1 -> greedy; each draw reproduced by HF's warpers and
#              the documented Philox draw; repetition penalty (greedy and sampled)
#   stop       --stop strings and EOS end sequences with finish_reason stop / eos and the
#              right text; streaming prints exactly the result's text; a chat prompt's ids
#   adapter    a random PEFT adapter (B != 0) on a kv-heads-1 model: unmerged and
#              --merge-in-memory at tp=1 and tp=2 against the reference with PEFT's formula
#   adapter-bf16  the same on BF16 weights: unmerged within 1e-4; merged (W + sBA rounded to
#              BF16) within 1e-4 of the reference merging the same way, within 5e-2 of the
#              unmerged PEFT formula
#   pp         pipeline stages on a 4-layer model: --pp 2, --pp 4, --pp-layers 1,3, tp 2 x pp 2
#              and dp 2 x pp 2 against the reference, and exactly (logits bit for bit, ids,
#              text) what pp 1 at the same tp gives: greedy, seeded sampling, a random PEFT
#              adapter unmerged and --merge-in-memory (each stage merges its layers), and a
#              streamed single prompt
# usage: generate_case.sh SHARDLORA_BINARY WORK_DIR CASE
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
set -euo pipefail
SL="$1"; CASE="$3"; W="$2/generate-$CASE"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY=/usr/bin/python3
CHECK=("$PY" "$HERE/generate_check.py")
MPI=(mpiexec --oversubscribe -n 2)
MPI4=(mpiexec --oversubscribe -n 4)
rm -rf "$W"; mkdir -p "$W"

MM=(--layers 2 --hidden 64 --ffn 128 --heads 4 --kv-heads 2 --vocab 259 --seed 5)
case "$CASE" in
  gqa|sampling|stop) ;;
  kvrep) MM+=(--kv-heads 1) ;;
  qkv-bias) MM+=(--qkv-bias) ;;
  tied) MM+=(--tie) ;;
  adapter) MM+=(--kv-heads 1) ;;
  adapter-bf16) MM+=(--kv-heads 1 --dtype BF16) ;;
  pp) MM+=(--layers 4) ;;
  *) echo "generate_case.sh: unknown case $CASE" >&2; exit 2 ;;
esac
"$SL" make-model --out "$W/model" "${MM[@]}" > /dev/null

# prompts of several lengths (one longer than a prefill chunk), one text prompt
cat > "$W/prompts.jsonl" <<'EOF'
{"input_ids": [1, 2, 3, 4, 5]}
{"prompt": "The quick brown fox jumps over the lazy dog"}

{"input_ids": [100, 200, 50, 7, 8, 9, 250, 33, 12]}
{"input_ids": [42]}
EOF
G=(--model "$W/model" --prompts "$W/prompts.jsonl" --max-new-tokens 24 --ignore-eos --batch-size 2
   --prefill-rows 8 --threads 1 --log-level warn)

# run NAME [mpiexec] [generate options...]: writes NAME.jsonl and NAME.st
run() {
  local name="$1"; shift
  if [ "${1:-}" = mpi ]; then shift; "${MPI[@]}" "$SL" generate "${G[@]}" --out "$W/$name.jsonl" --dump-logits "$W/$name.st" "$@"
  elif [ "${1:-}" = mpi4 ]; then shift; "${MPI4[@]}" "$SL" generate "${G[@]}" --out "$W/$name.jsonl" --dump-logits "$W/$name.st" "$@"
  else "$SL" generate "${G[@]}" --out "$W/$name.jsonl" --dump-logits "$W/$name.st" "$@"; fi
}

# make_adapter DIR: a random PEFT LoRA adapter (r 4, B != 0, all seven modules) for the model
make_adapter() {
  HERE="$HERE" "$PY" - "$W/model" "$1" <<'PY'
import json, os, sys
import torch
sys.path.insert(0, os.environ["HERE"])
import torch_llama as tl
model_dir, out = sys.argv[1], sys.argv[2]
cfg = tl.ModelConfig(json.load(open(f"{model_dir}/config.json")))
lora = tl.Lora(cfg, 4, 8.0, list(tl.LORA_MODULES))
lora.init_random(torch.Generator().manual_seed(3), std=0.15)
os.makedirs(out)
tl.write_safetensors(f"{out}/adapter_model.safetensors", {k: v.detach() for k, v in lora.params.items()},
                     {"format": "pt"})
json.dump({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 8, "lora_dropout": 0.0,
           "target_modules": list(tl.LORA_MODULES), "bias": "none", "fan_in_fan_out": False,
           "use_rslora": False, "use_dora": False, "base_model_name_or_path": model_dir},
          open(f"{out}/adapter_config.json", "w"), indent=2)
PY
}

greedy_layouts() { # PREFIX [generate options...]: tp1, tp2, dp2, no-kv-cache; all vs the reference
  local p="$1"; shift
  run "$p-tp1" "$@"
  run "$p-tp2" mpi --tp 2 "$@"
  run "$p-dp2" mpi --tp 1 "$@"
  run "$p-nokv" --no-kv-cache "$@"
  for l in tp1 tp2 dp2 nokv; do "${CHECK[@]}" --model "$W/model" --dump "$W/$p-$l.st" ${ADAPTER:+--adapter "$ADAPTER"} ${TOL:+--tol "$TOL"}; done
  "${CHECK[@]}" --dump "$W/$p-tp1.st" --compare "$W/$p-nokv.st"
  "${CHECK[@]}" --dump "$W/$p-tp1.st" --compare "$W/$p-tp2.st"
  "${CHECK[@]}" --same-results "$W/$p-tp1.jsonl" "$W/$p-dp2.jsonl"
}

# exact A B: B's dump (every step's logits, ids, prompt ids) and results (ids, text, finish
# reason) are A's byte for byte
exact() {
  cmp "$W/$1.st" "$W/$2.st"
  cmp "$W/$1.jsonl" "$W/$2.jsonl"
  echo "$2 = $1 byte for byte"
}

pp_layouts() { # PREFIX [generate options...]: the stage layouts against pp 1 and the reference
  local p="$1"; shift
  run "$p-tp1" "$@"
  run "$p-pp2" mpi --pp 2 "$@"
  run "$p-pp13" mpi --pp-layers 1,3 "$@"
  run "$p-pp4" mpi4 --pp 4 "$@"
  run "$p-tp2" mpi --tp 2 "$@"
  run "$p-tp2pp2" mpi4 --tp 2 --pp 2 "$@"
  run "$p-dp2pp2" mpi4 --tp 1 --pp 2 "$@"
  for l in pp2 tp2pp2; do "${CHECK[@]}" --model "$W/model" --dump "$W/$p-$l.st" ${ADAPTER:+--adapter "$ADAPTER"}; done
  for l in pp2 pp13 pp4; do exact "$p-tp1" "$p-$l"; done
  exact "$p-tp2" "$p-tp2pp2"
  "${CHECK[@]}" --same-results "$W/$p-tp1.jsonl" "$W/$p-dp2pp2.jsonl"
}

case "$CASE" in
  gqa|kvrep|qkv-bias|tied)
    greedy_layouts greedy ;;

  sampling)
    S=(--temperature 0.8 --top-k 20 --top-p 0.9 --repetition-penalty 1.3)
    run s7-tp1 "${S[@]}" --seed 7
    run s7-tp2 mpi --tp 2 "${S[@]}" --seed 7
    run s7-dp2 mpi --tp 1 "${S[@]}" --seed 7
    run s8-tp1 "${S[@]}" --seed 8
    "${CHECK[@]}" --model "$W/model" --dump "$W/s7-tp1.st" --temperature 0.8 --top-k 20 --top-p 0.9 \
      --repetition-penalty 1.3 --seed 7
    "${CHECK[@]}" --model "$W/model" --dump "$W/s7-tp2.st" --temperature 0.8 --top-k 20 --top-p 0.9 \
      --repetition-penalty 1.3 --seed 7
    "${CHECK[@]}" --same-results "$W/s7-tp1.jsonl" "$W/s7-tp2.jsonl"
    "${CHECK[@]}" --same-results "$W/s7-tp1.jsonl" "$W/s7-dp2.jsonl"
    "${CHECK[@]}" --differ-results "$W/s7-tp1.jsonl" "$W/s8-tp1.jsonl"
    # top-p alone (the full sort) and temperature alone (no warper)
    run p-tp1 --temperature 1.3 --top-p 0.7 --seed 3
    "${CHECK[@]}" --model "$W/model" --dump "$W/p-tp1.st" --temperature 1.3 --top-p 0.7 --seed 3
    run t-tp2 mpi --tp 2 --temperature 0.7 --seed 4
    "${CHECK[@]}" --model "$W/model" --dump "$W/t-tp2.st" --temperature 0.7 --seed 4
    # top-k 1 is greedy; greedy with a repetition penalty (distributed argmax of penalised logits)
    run greedy
    run k1 mpi --tp 2 --temperature 1.5 --top-k 1 --seed 9
    "${CHECK[@]}" --same-results "$W/greedy.jsonl" "$W/k1.jsonl"
    run rp-tp2 mpi --tp 2 --repetition-penalty 1.5
    "${CHECK[@]}" --model "$W/model" --dump "$W/rp-tp2.st" --repetition-penalty 1.5 ;;

  stop)
    run full
    # the byte-level tokenizer: text = the bytes < 256 decoded as lossy UTF-8
    "$PY" - "$W" <<'PY'
import json, sys
w = sys.argv[1]
rows = [json.loads(l) for l in open(f"{w}/full.jsonl")]
for r in rows:
    want = bytes(i for i in r["ids"] if i < 256).decode("utf-8", "replace")
    assert r["text"] == want, (r["text"], want)
    assert r["finish_reason"] == "length" and len(r["ids"]) == 24, r
t = rows[1]["text"]
j = next(j for j in range(6, len(t) - 2) if "\x00" not in t[j:j + 2] and "\ufffd" not in t[j:j + 2])
stop = t[j:j + 2]
open(f"{w}/stop.txt", "w").write(stop)
eos = rows[0]["ids"][5]
cfg = json.load(open(f"{w}/model/config.json"))
cfg["eos_token_id"] = eos
import os, shutil
os.makedirs(f"{w}/model-eos")
for f in os.listdir(f"{w}/model"):
    if f != "config.json":
        os.symlink(os.path.abspath(f"{w}/model/{f}"), f"{w}/model-eos/{f}")
json.dump(cfg, open(f"{w}/model-eos/config.json", "w"))
print(f"stop string {stop!r} (prompt 1 at char {j}); EOS id {eos}")
PY
    STOP="$(cat "$W/stop.txt")"
    run stop-tp1 --stop="$STOP" --stop "never-seen-string"
    run stop-tp2 mpi --tp 2 --stop="$STOP"
    G=(--model "$W/model-eos" --prompts "$W/prompts.jsonl" --max-new-tokens 24 --batch-size 2
       --prefill-rows 8 --threads 1 --log-level warn)
    run eos-tp1
    run eos-tp2 mpi --tp 2
    "$PY" - "$W" "$STOP" <<'PY'
import json, sys
w, stop = sys.argv[1], sys.argv[2]
full = [json.loads(l) for l in open(f"{w}/full.jsonl")]
eos = json.load(open(f"{w}/model-eos/config.json"))["eos_token_id"]
dec = lambda ids: bytes(i for i in ids if i < 256).decode("utf-8", "replace")
nstop = neos = 0
for run in ("stop-tp1", "stop-tp2"):
    for f, r in zip(full, [json.loads(l) for l in open(f"{w}/{run}.jsonl")]):
        at = f["text"].find(stop)
        if at < 0:
            assert r["finish_reason"] == "length" and r["ids"] == f["ids"], (run, r)
            continue
        nstop += 1
        assert r["finish_reason"] == "stop", (run, r)
        assert r["text"] == f["text"][:at], (run, r["text"], f["text"][:at])
        assert r["ids"] == f["ids"][:len(r["ids"])] and stop in dec(r["ids"]) and stop not in dec(r["ids"][:-1]), (run, r)
for run in ("eos-tp1", "eos-tp2"):
    for f, r in zip(full, [json.loads(l) for l in open(f"{w}/{run}.jsonl")]):
        if eos not in f["ids"]:
            assert r["finish_reason"] == "length" and r["ids"] == f["ids"], (run, r)
            continue
        neos += 1
        k = f["ids"].index(eos) + 1
        assert r["finish_reason"] == "eos" and r["ids"] == f["ids"][:k], (run, r)
        assert r["text"] == dec(f["ids"][:k - 1]), (run, r["text"])
assert nstop >= 2 and neos >= 2, (nstop, neos)
print(f"stop: {nstop} sequences ended at the stop string, {neos} at EOS (tp=1 and tp=2), text and ids as expected")
PY
    # streaming: a single prompt's stdout is exactly its text, at tp=1 and tp=2
    PROMPT="The quick brown fox jumps over the lazy dog"
    "$SL" generate --model "$W/model" --prompt "$PROMPT" --max-new-tokens 24 --ignore-eos --stop="$STOP" \
      --threads 1 --log-level warn --out "$W/one-tp1.jsonl" > "$W/one-tp1.out"
    "${MPI[@]}" "$SL" generate --model "$W/model" --prompt "$PROMPT" --max-new-tokens 24 --ignore-eos \
      --stop="$STOP" --tp 2 --threads 1 --log-level warn --out "$W/one-tp2.jsonl" > "$W/one-tp2.out"
    # a chat prompt: chatml text plus the generation prompt, no post-processor BOS
    # (ChatML as a Jinja template: --chat-format chatml is refused on the byte vocabulary, which
    # has no <|im_start|> token)
    echo '{"messages": [{"role": "user", "content": "Hi"}]}' > "$W/chat.jsonl"
    printf '%s' "{% for m in messages %}<|im_start|>{{ m.role }}"$'\n'"{{ m.content }}<|im_end|>"$'\n'"{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant"$'\n'"{% endif %}" > "$W/chatml.jinja"
    "$SL" generate --model "$W/model" --prompts "$W/chat.jsonl" --chat-template "$W/chatml.jinja" --max-new-tokens 3 \
      --threads 1 --log-level warn --dump-logits "$W/chat.st" --out "$W/chat-out.jsonl"
    "$PY" - "$W" <<'PY'
import json, sys, os
sys.path.insert(0, os.environ.get("HERE", "."))
w = sys.argv[1]
for tp in (1, 2):
    r = json.loads(open(f"{w}/one-tp{tp}.jsonl").read())
    out = open(f"{w}/one-tp{tp}.out", encoding="utf-8", errors="surrogateescape").read()
    assert r["finish_reason"] == "stop" and out == r["text"] + "\n", (tp, out, r)
print("streaming: stdout equals the result text at tp=1 and tp=2")
PY
    HERE="$HERE" "$PY" - "$W" <<'PY'
import sys, os
sys.path.insert(0, os.environ["HERE"])
import torch_llama as tl
w = sys.argv[1]
t, _ = tl.read_safetensors(f"{w}/chat.st")
want = list("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n".encode())
assert t["prompt.0"].tolist() == want, t["prompt.0"].tolist()
print("chat prompt: the chatml rendering with the generation prompt")
PY
    ;;

  adapter|adapter-bf16)
    ADAPTER="$W/adapter"
    make_adapter "$ADAPTER"
    # unmerged: the adapter slots, against the reference with PEFT's formula
    G+=(--adapter "$ADAPTER")
    greedy_layouts unmerged
    # merged into the shards in memory
    run merged-tp1 --merge-in-memory
    run merged-tp2 mpi --tp 2 --merge-in-memory
    if [ "$CASE" = adapter ]; then
      for l in tp1 tp2; do "${CHECK[@]}" --model "$W/model" --adapter "$ADAPTER" --dump "$W/merged-$l.st"; done
      "${CHECK[@]}" --dump "$W/unmerged-tp1.st" --compare "$W/merged-tp1.st"
      "${CHECK[@]}" --dump "$W/unmerged-tp2.st" --compare "$W/merged-tp2.st"
      "${CHECK[@]}" --same-results "$W/merged-tp1.jsonl" "$W/merged-tp2.jsonl"
    else
      # exactly a BF16 merge (the reference rounds W + sBA to BF16 too), and near the unmerged
      # PEFT formula: the rounding of the merged weights to BF16 is what separates them
      for l in tp1 tp2; do
        "${CHECK[@]}" --model "$W/model" --adapter "$ADAPTER" --dump "$W/merged-$l.st" --merged-bf16
        "${CHECK[@]}" --model "$W/model" --adapter "$ADAPTER" --dump "$W/merged-$l.st" --tol 5e-2
      done
    fi
    # the adapter changes the output (B != 0)
    G=("${G[@]:0:${#G[@]}-2}")
    run base
    "${CHECK[@]}" --differ-results "$W/base.jsonl" "$W/unmerged-tp1.jsonl" ;;

  pp)
    pp_layouts greedy
    # the stage split as printed, and each stage's KV cache holding only its layers
    "${MPI[@]}" "$SL" generate "${G[@]}" --pp-layers 1,3 --log-level info --out "$W/log.jsonl" 2> "$W/log.txt"
    grep -q "pipeline: 2 stages of layers \[0, 1) \[1, 4)" "$W/log.txt"
    grep -q "grid: world=2 = dp 1 x pp 2 x tp 1" "$W/log.txt"
    # seeded sampling: the same draws from the same logits at every layout
    S=(--temperature 0.8 --top-k 20 --top-p 0.9 --repetition-penalty 1.3 --seed 7)
    run s7-tp1 "${S[@]}"
    run s7-pp2 mpi --pp 2 "${S[@]}"
    run s7-tp2pp2 mpi4 --tp 2 --pp 2 "${S[@]}"
    "${CHECK[@]}" --model "$W/model" --dump "$W/s7-pp2.st" --temperature 0.8 --top-k 20 --top-p 0.9 \
      --repetition-penalty 1.3 --seed 7
    exact s7-tp1 s7-pp2
    "${CHECK[@]}" --same-results "$W/s7-tp1.jsonl" "$W/s7-tp2pp2.jsonl"
    # a random PEFT adapter (B != 0), unmerged and merged in memory stage by stage
    ADAPTER="$W/adapter"
    make_adapter "$ADAPTER"
    G+=(--adapter "$ADAPTER")
    pp_layouts unmerged
    run merged-tp1 --merge-in-memory
    run merged-pp2 mpi --pp 2 --merge-in-memory
    run merged-tp2 mpi --tp 2 --merge-in-memory
    run merged-tp2pp2 mpi4 --tp 2 --pp 2 --merge-in-memory
    "${CHECK[@]}" --model "$W/model" --adapter "$ADAPTER" --dump "$W/merged-pp2.st"
    exact merged-tp1 merged-pp2
    exact merged-tp2 merged-tp2pp2
    "${CHECK[@]}" --differ-results "$W/greedy-tp1.jsonl" "$W/unmerged-pp2.jsonl"
    # one prompt streamed by rank 0 (first stage) while the last stage chooses the tokens
    PROMPT="The quick brown fox jumps over the lazy dog"
    "$SL" generate --model "$W/model" --prompt "$PROMPT" --max-new-tokens 16 --ignore-eos \
      --threads 1 --log-level warn --out "$W/one-tp1.jsonl" > "$W/one-tp1.out"
    "${MPI4[@]}" "$SL" generate --model "$W/model" --prompt "$PROMPT" --max-new-tokens 16 --ignore-eos \
      --pp 2 --tp 2 --threads 1 --log-level warn --out "$W/one-pp2.jsonl" > "$W/one-pp2.out"
    cmp "$W/one-tp1.out" "$W/one-pp2.out"
    "${CHECK[@]}" --same-results "$W/one-tp1.jsonl" "$W/one-pp2.jsonl"
    "$PY" - "$W" <<'PY'
import json, sys
w = sys.argv[1]
r = json.loads(open(f"{w}/one-pp2.jsonl").read())
out = open(f"{w}/one-pp2.out", encoding="utf-8", errors="surrogateescape").read()
assert r["generated_tokens"] == 16 and out == r["text"] + "\n", (out, r)
print("streaming at tp 2 x pp 2: stdout equals the result text and pp 1's")
PY
    ;;
esac
echo "generate case $CASE: OK"
