#!/usr/bin/env bash
# The training data path end to end (issue: the training command), on a made model with
# the byte-level tokenizer (ids = UTF-8 bytes, 257 = </s>), through `shardlora train`:
#   formats   text / prompt-completion / messages: the ids and labels of the step's global
#             batch (from --dump-grads) equal ones built by hand here; --train-on-prompt
#   packing   packed rows give the same loss and gradients as one document per row (no
#             attention or prediction across documents), at tp=1 and tp=2
#   cache     reused when nothing changed, rebuilt when the data or a data option changes
#   config    --config (JSON and key = value), flags override, run.json records it
#   schedule  metrics lr of a cosine schedule with warmup equals the formula
#   eval      --eval-data and --eval-split evaluate; --skip-bad-lines counts
#   nonfinite a diverging run stops with exit 5, or skips the updates with --skip-nonfinite
#   refusals  nothing to train on (every label masked, prompts cut at --seq-len), a plan
#             error naming --data / --eval-data, an id past the model's vocabulary: exit 3
#             with one line
# usage: data_pipeline.sh SHARDLORA_BINARY WORK_DIR
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
set -uo pipefail
SL="$1"; W="$2/data_pipeline"
PY=/usr/bin/python3
rm -rf "$W"; mkdir -p "$W"
FAILS=()
fail() { FAILS+=("$1"); echo "FAIL: $1"; }
pass() { echo "PASS: $1"; }
# run NAME ARGS...: shardlora train, log in $W/NAME.log; returns its exit status
run() { local n="$1"; shift; timeout 120 "$SL" train --threads 1 --peak-gflops 1 --log-every 100 "$@" > "$W/$n.log" 2>&1; }
# jcheck FILE EXPR: the Python expression EXPR holds for j = the JSON object in FILE (counts
# are read from OUT/run.json and OUT/summary.json, not from the log's wording)
jcheck() { "$PY" -c 'import json, sys; j = json.load(open(sys.argv[1])); sys.exit(0 if eval(sys.argv[2]) else 1)' "$1" "$2"; }

"$SL" make-model --out "$W/m" --layers 2 --hidden 64 --ffn 128 --heads 4 --kv-heads 2 --vocab 259 --seed 3 > /dev/null \
  || { echo "FAIL: make-model"; exit 1; }
M=(--model "$W/m")

"$PY" - "$W" <<'PY'
import json, sys
w = sys.argv[1]
words = open("/usr/share/common-licenses/GPL-3", encoding="utf-8").read().split()
def text(i, n):  # exactly n ASCII characters of real text
    s = " ".join(words[i * 7:i * 7 + 40])
    return (s * 3)[:n]
with open(f"{w}/text.jsonl", "w") as f:        # 8 documents of 48 bytes (+ EOS = 49 tokens)
    for i in range(8): f.write(json.dumps({"text": text(i, 48)}) + "\n")
with open(f"{w}/pc.jsonl", "w") as f:
    for i in range(4): f.write(json.dumps({"prompt": f"Q{i}: " + text(i, 10 + i), "completion": " A: " + text(i + 9, 6 + i)}) + "\n")
with open(f"{w}/chat.jsonl", "w") as f:
    f.write(json.dumps({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
                                     {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye?"},
                                     {"role": "assistant", "content": "Bye."}]}) + "\n")
with open(f"{w}/chatml.jinja", "w") as f:     # ChatML as a Jinja template (the byte vocabulary has
    f.write("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")  # no <|im_start|> token)
with open(f"{w}/more.jsonl", "w") as f:        # 40 documents of varied length for eval / config runs
    for i in range(40): f.write(json.dumps({"text": text(i, 20 + (i * 37) % 90)}) + "\n")
with open(f"{w}/bad.jsonl", "w") as f:
    f.write(json.dumps({"text": "fine line"}) + "\n" + '{"text": 12}\n' + json.dumps({"text": "fine again"}) + "\n")
PY

# ---- formats: ids and labels of the global batch, from the dump --------------------------
check_rows() { # DUMP KIND [train_on_prompt]
  "$PY" - "$@" <<'PY'
import json, struct, sys
import numpy as np
path, kind = sys.argv[1], sys.argv[2]
top = len(sys.argv) > 3
b = open(path, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n]); base = 8 + n
def t(name):
    e = h[name]; s, f = e["data_offsets"]
    return np.frombuffer(b[base + s:base + f], dtype=np.int64).reshape(e["shape"])
ids, labels = t("input_ids"), t("labels")
EOS = 257
w = path.rsplit("/", 1)[0]
def enc(s): return list(s.encode())
want = []
if kind == "pc":
    for l in open(f"{w}/pc.jsonl"):
        r = json.loads(l); p = enc(r["prompt"]); x = p + enc(r["completion"]) + [EOS]
        want.append((x, x if top else [-100] * len(p) + x[len(p):]))
else:
    turns = json.loads(open(f"{w}/chat.jsonl").readline())["messages"]
    x, lab = [], []
    for m in turns:  # ChatML, written out: <|im_start|>ROLE\nCONTENT<|im_end|>\n; an assistant turn
        # counts what it adds to its prompt: CONTENT<|im_end|>\n (io/chat.h's label rule)
        head, body = enc("<|im_start|>" + m["role"] + "\n"), enc(m["content"] + "<|im_end|>\n")
        x += head + body
        lab += head + body if top else [-100] * len(head) + (body if m["role"] == "assistant" else [-100] * len(body))
    want.append((x, lab))
assert ids.shape[0] == len(want), f"{ids.shape[0]} rows, want {len(want)}"
for i, (x, lab) in enumerate(want):
    T = ids.shape[1]; x, lab = x[:T], lab[:T]
    assert list(ids[i, :len(x)]) == x, f"row {i}: ids {list(ids[i, :len(x)])} want {x}"
    assert list(labels[i, :len(x)]) == lab, f"row {i}: labels {list(labels[i, :len(x)])} want {lab}"
    assert all(v == -100 for v in labels[i, len(x):]), f"row {i}: padding is counted"
print(f"{kind}{' train-on-prompt' if top else ''}: {len(want)} rows of ids and labels as written by hand")
PY
}
COMMON=(--no-shuffle --no-pack --steps 1 --lr 0 --seq-len 128)
run pc "${M[@]}" --data "$W/pc.jsonl" --out "$W/pc" "${COMMON[@]}" --global-batch 4 --dump-grads "$W/pc.st" \
  && check_rows "$W/pc.st" pc && pass "prompt/completion: prompt masked" || fail "prompt/completion rows"
run pct "${M[@]}" --data "$W/pc.jsonl" --out "$W/pct" "${COMMON[@]}" --global-batch 4 --train-on-prompt --dump-grads "$W/pct.st" \
  && check_rows "$W/pct.st" pc 1 && pass "prompt/completion --train-on-prompt" || fail "--train-on-prompt rows"
run chat "${M[@]}" --data "$W/chat.jsonl" --out "$W/chat" "${COMMON[@]}" --global-batch 1 --chat-template "$W/chatml.jinja" --dump-grads "$W/chat.st" \
  && check_rows "$W/chat.st" chat && pass "messages (chatml): only assistant replies counted" || fail "messages rows"

# ---- packing: same loss and gradients as one document per row ----------------------------
compare_dumps() { # A B
  "$PY" - "$@" <<'PY'
import json, struct, sys
import numpy as np
def load(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]; h = json.loads(b[8:8 + n]); base = 8 + n
    out = {}
    for k, e in h.items():
        if k == "__metadata__" or e["dtype"] != "F32": continue
        s, f = e["data_offsets"]; out[k] = np.frombuffer(b[base + s:base + f], dtype=np.float32)
    return out
a, b = load(sys.argv[1]), load(sys.argv[2])
worst = 0.0
for k in a:
    d = np.abs(a[k].astype(np.float64) - b[k]).max(); r = d / max(np.abs(b[k]).max(), 1e-9)
    worst = max(worst, r)
    assert r <= 1e-5, f"{k}: rel {r:.3e}"
print(f"loss {a['loss'][0]:.6f} vs {b['loss'][0]:.6f}; {len(a)} tensors, worst rel {worst:.2e}")
PY
}
P=(--lr 0 --steps 1 --no-shuffle --seq-len 128)
run packed "${M[@]}" --data "$W/text.jsonl" --out "$W/packed" "${P[@]}" --pack --global-batch 4 --dump-grads "$W/packed.st" \
  && jcheck "$W/packed/run.json" 'j["data"]["train_documents"] == 8 and j["data"]["train_rows_per_epoch"] == 4' || fail "packing: 8 documents of 49 tokens did not make 4 rows of 128"
run unpacked "${M[@]}" --data "$W/text.jsonl" --out "$W/unpacked" "${P[@]}" --no-pack --global-batch 8 --dump-grads "$W/unpacked.st" \
  || fail "unpacked run"
compare_dumps "$W/packed.st" "$W/unpacked.st" && pass "packed rows = documents run separately (loss and every gradient)" \
  || fail "packing changes the loss or gradients"
timeout 120 mpiexec -n 2 "$SL" train --threads 1 --peak-gflops 1 "${M[@]}" --data "$W/text.jsonl" --out "$W/packed-tp2" "${P[@]}" \
  --pack --global-batch 4 --tp 2 --dump-grads "$W/packed-tp2.st" > "$W/packed-tp2.log" 2>&1 || fail "packed run at tp=2"
compare_dumps "$W/packed-tp2.st" "$W/unpacked.st" && pass "packed at tp=2 = separate documents at tp=1" || fail "packing at tp=2"

# ---- token cache: reuse and invalidation -------------------------------------------------
# one --cache-dir, a fresh --out per run (a run into the same --out would resume, and a
# resumed run refuses a changed data stream)
C=("${M[@]}" --cache-dir "$W/tokcache" --steps 1 --seq-len 128)
run cache1 "${C[@]}" --out "$W/cache1" --data "$W/more.jsonl" && grep -q "token cache.*tokenizing" "$W/cache1.log" || fail "cache: first run did not tokenize"
run cache2 "${C[@]}" --out "$W/cache2" --data "$W/more.jsonl" && grep -q "token cache .*: reused" "$W/cache2.log" \
  && pass "cache reused on the second run" || fail "cache: not reused when nothing changed"
run cache3 "${C[@]}" --out "$W/cache3" --data "$W/more.jsonl" --no-add-eos && grep -q "tokenizing" "$W/cache3.log" \
  && pass "cache rebuilt when a data option changes" || fail "cache: not rebuilt after --no-add-eos"
echo '{"text": "one more line"}' >> "$W/more.jsonl"
run cache4 "${C[@]}" --out "$W/cache4" --data "$W/more.jsonl" && grep -q "tokenizing" "$W/cache4.log" \
  && jcheck "$W/cache4/run.json" 'j["data"]["train_documents"] == 41' \
  && pass "cache rebuilt when the data file changes" || fail "cache: not rebuilt after the data changed"

# ---- config file, flags override, run.json -----------------------------------------------
cat > "$W/cfg.json" <<J
{"model": "$W/m", "data": ["$W/more.jsonl"], "steps": 7, "lr": 0.002, "seq_len": 64, "lr-schedule": "constant", "pack": false}
J
printf '# the same, as key = value lines\nmodel = %s\ndata = [%s]\nsteps = 7\nlr = 0.002\nseq_len: 64\nlr-schedule = "constant"\npack = false\n' \
  "$W/m" "$W/more.jsonl" > "$W/cfg.txt"
for c in cfg.json cfg.txt; do
  run "cfg-$c" --config "$W/$c" --out "$W/cfg-$c" --steps 3 || { fail "--config $c: run failed"; continue; }
  "$PY" - "$W/cfg-$c" <<'PY' && pass "--config $c read, --steps overrides it, run.json records both" || fail "--config $c"
import json, sys
o = sys.argv[1]
run = json.load(open(f"{o}/run.json"))
c = run["config"]
assert c["steps"] == 3 and c["lr"] == 0.002 and c["seq-len"] == 64 and c["pack"] is False and c["lr-schedule"] == "constant", c
rows = [json.loads(l) for l in open(f"{o}/metrics.jsonl")]
assert len(rows) == 3 and all(abs(r["lr"] - 0.002) < 1e-12 for r in rows), rows
PY
done
grep -q "model .*(config)" "$W/cfg-cfg.json.log" && grep -q "steps .*(flag)" "$W/cfg-cfg.json.log" \
  && pass "the resolved configuration names each value's source" || fail "resolved configuration lacks sources"
printf 'lr = 0.1\nlearning_rate = 3\n' > "$W/cfg-bad.txt"
run cfg-bad "${M[@]}" --data "$W/more.jsonl" --out "$W/cfg-bad" --config "$W/cfg-bad.txt"; rc=$?
[ $rc -eq 2 ] && grep -q "cfg-bad.txt:2: lr and learning-rate both set lr" "$W/cfg-bad.log" \
  && pass "a config key given twice (as lr and its alias learning_rate) is refused with file:line" \
  || fail "config key given twice (exit $rc)"

# ---- schedule values in metrics.jsonl ----------------------------------------------------
run sched "${M[@]}" --data "$W/more.jsonl" --out "$W/sched" --seq-len 64 --steps 9 --lr 0.01 --lr-schedule cosine --warmup-steps 3 \
  && "$PY" - "$W/sched" <<'PY' && pass "cosine schedule with warmup: lr per step = formula" || fail "schedule lr values"
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
for r in rows:  # Hugging Face get_cosine_schedule_with_warmup at current_step = step - 1
    s = r["step"] - 1
    want = 0.01 * (s / 3 if s < 3 else max(0.0, 0.5 * (1 + math.cos(math.pi * (s - 3) / (9 - 3)))))
    assert abs(r["lr"] - want) <= 1e-9, (r["step"], r["lr"], want)
assert len(rows) == 9
PY

# ---- evaluation and bad lines ------------------------------------------------------------
run evald "${M[@]}" --data "$W/more.jsonl" --eval-data "$W/text.jsonl" --out "$W/evald" --seq-len 128 --steps 4 --eval-every 2 \
  && [ "$(grep -c eval_loss "$W/evald/metrics.jsonl")" = 2 ] && pass "--eval-data: evaluated at steps 2 and 4" || fail "--eval-data"
run evals "${M[@]}" --data "$W/more.jsonl" --eval-split 0.1 --out "$W/evals" --seq-len 128 --steps 2 \
  && jcheck "$W/evals/run.json" 'j["data"]["eval_documents"] == 4 and j["data"]["train_documents"] == 37' \
  && grep -q '"eval_loss"' "$W/evals/metrics.jsonl" \
  && pass "--eval-split 0.1 holds out 4 of 41 documents" || fail "--eval-split"
run skip "${M[@]}" --data "$W/bad.jsonl" --out "$W/skip" --seq-len 64 --steps 1 --skip-bad-lines \
  && grep -q "bad.jsonl:2: .*(skipped)" "$W/skip.log" \
  && jcheck "$W/skip/run.json" 'j["data"]["bad_lines_skipped"] == 1' \
  && jcheck "$W/skip/summary.json" 'j["data"]["bad_lines_skipped"] == 1' \
  && pass "--skip-bad-lines skips and counts" || fail "--skip-bad-lines"

# ---- several --data files; the shuffled, packed order is the same at dp=1 and dp=2 -------
O=("${M[@]}" --data "$W/more.jsonl" --data "$W/text.jsonl" --seq-len 128 --steps 6 --global-batch 4 --lr 3e-3)
run order1 "${O[@]}" --out "$W/order1" --micro-batch 4 && jcheck "$W/order1/run.json" 'j["data"]["train_documents"] == 49' \
  || fail "two --data files: expected 41 + 8 documents"
timeout 120 mpiexec -n 2 "$SL" train --threads 1 --peak-gflops 1 "${O[@]}" --out "$W/order2" --micro-batch 2 \
  > "$W/order2.log" 2>&1 || fail "dp=2 run"
"$PY" - "$W/order1" "$W/order2" <<'PY' && pass "two --data files; shuffled packed batches equal at dp=1 and dp=2" || fail "order depends on dp"
import json, sys
a, b = ([json.loads(l) for l in open(d + "/metrics.jsonl")] for d in sys.argv[1:])
assert len(a) == len(b) == 6
for x, y in zip(a, b):
    assert x["tokens"] == y["tokens"], (x, y)
    assert abs(x["loss"] - y["loss"]) <= 1e-5 * abs(y["loss"]), (x["loss"], y["loss"])
PY

# ---- progress: a live bar on a terminal (script gives the run one), plain lines otherwise --
script -qec "$SL train --threads 1 --peak-gflops 1 --model $W/m --data $W/more.jsonl --out $W/tty --seq-len 64 --steps 3" \
  /dev/null > "$W/tty.log" 2>&1
grep -q $'\r.*\\[#' "$W/tty.log" && pass "progress bar on a terminal" || fail "no progress bar on a terminal"
grep -q $'\r' "$W/cache1.log" && fail "a carriage return in a log written to a file" || pass "plain lines when the log goes to a file"

# ---- non-finite loss: stop (exit 5) or skip ----------------------------------------------
D=("${M[@]}" --data "$W/more.jsonl" --seq-len 64 --steps 4 --optimizer sgd --lr 1e30 --lr-schedule constant)
run nf-stop "${D[@]}" --out "$W/nf-stop"; rc=$?
[ $rc -eq 5 ] && grep -q "non-finite" "$W/nf-stop.log" && pass "non-finite loss stops the run (exit 5)" || fail "non-finite stop (exit $rc)"
run nf-skip "${D[@]}" --out "$W/nf-skip" --skip-nonfinite; rc=$?
[ $rc -eq 0 ] && "$PY" - "$W/nf-skip" <<'PY' \
  && pass "--skip-nonfinite skips the update and goes on" || fail "--skip-nonfinite (exit $rc)"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
skipped = [r["step"] for r in rows if r.get("skipped")]
s = json.load(open(sys.argv[1] + "/summary.json"))
assert skipped and s["skipped_steps"] == len(skipped), (skipped, s["skipped_steps"])
assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4], rows
PY

# ---- refusals: exit 3 and one line naming the files --------------------------------------
# refused NAME PATTERN ARGS...: the run (--out $W/NAME) exits 3 with one error line matching
# PATTERN and leaves no output directory
refused() {
  local n="$1" pat="$2"; shift 2
  run "$n" "$@"; local rc=$?
  if [ $rc -eq 3 ] && [ "$(grep -c '^shardlora: error:' "$W/$n.log")" = 1 ] && grep -q "^shardlora: error: $pat" "$W/$n.log" \
     && [ ! -e "$W/$n" ]; then
    return 0
  fi
  echo "  exit $rc; $(grep 'error' "$W/$n.log" | head -2); $W/$n $([ -e "$W/$n" ] && echo left || echo gone)"; return 1
}
"$PY" - "$W" <<'PY'
import json, sys
w = sys.argv[1]
with open(f"{w}/masked.jsonl", "w") as f:     # pre-tokenised, every label -100
    for i in range(3): f.write(json.dumps({"input_ids": [1, 2, 3 + i], "labels": [-100, -100, -100]}) + "\n")
with open(f"{w}/longprompt.jsonl", "w") as f:  # prompts of 40 bytes: nothing counted within 16 tokens
    for i in range(3): f.write(json.dumps({"prompt": "x" * 40, "completion": "answer %d" % i}) + "\n")
with open(f"{w}/utf8.jsonl", "w") as f:        # byte 0xE2 of the check mark is id 226
    f.write(json.dumps({"text": "plain"}) + "\n" + json.dumps({"text": "ok \u2713"}, ensure_ascii=False) + "\n")
PY
R=("${M[@]}" --steps 1 --lr 0)
refused masked "--data $W/masked.jsonl: nothing to train on: no token of the 3 training documents is counted in the loss (every label is -100); count prompts with --train-on-prompt" \
  "${R[@]}" --data "$W/masked.jsonl" --out "$W/masked" --seq-len 16 \
  && pass "every label masked: refused (exit 3), not a run that learns nothing" || fail "every label masked"
refused longprompt "--data $W/longprompt.jsonl: nothing to train on: .*--seq-len 16 .*(3 truncated, 0 split, 0 dropped); raise --seq-len or use --long-examples split" \
  "${R[@]}" --data "$W/longprompt.jsonl" --out "$W/longprompt" --seq-len 16 \
  && pass "prompts longer than --seq-len: refused, naming the files and the way out" || fail "prompts longer than --seq-len"
refused longsplit "--data $W/longprompt.jsonl: no rows: every document (3) is longer" \
  "${R[@]}" --data "$W/longprompt.jsonl" --out "$W/longsplit" --seq-len 16 --long-examples drop \
  && pass "a plan error names --data and its file" || fail "plan error without --data"
refused evaldrop "--eval-data $W/longprompt.jsonl: no rows: every document (3) is longer" \
  "${R[@]}" --data "$W/utf8.jsonl" --eval-data "$W/longprompt.jsonl" --out "$W/evaldrop" --seq-len 16 --long-examples drop \
  && pass "a plan error names --eval-data and its file" || fail "plan error without --eval-data"
"$SL" make-model --out "$W/m200" --layers 1 --hidden 32 --ffn 64 --heads 2 --kv-heads 1 --vocab 200 \
  --tokenizer "$W/m/tokenizer.json" > /dev/null || fail "make-model --vocab 200"
refused vocab "$W/utf8.jsonl:2: token 3 has id 226, outside the model's vocabulary \[0, 200)" \
  --model "$W/m200" --steps 1 --data "$W/utf8.jsonl" --out "$W/vocab" --seq-len 16 \
  && pass "a tokenizer id past the model's vocabulary: FILE:LINE, the id and the vocabulary" || fail "tokenizer id past the vocabulary"

echo "data_pipeline: ${#FAILS[@]} failed"
[ ${#FAILS[@]} -eq 0 ]
