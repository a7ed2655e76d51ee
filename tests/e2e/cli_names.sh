#!/usr/bin/env bash
# The names users already know (issue 15): one run configured five ways -- our flags, the
# Hugging Face / TRL / PEFT aliases with dashes and with underscores, a YAML config and a
# JSON config -- resolves to the same configuration (run.json "config") and the same first
# loss; misspelt flags and config keys get one "did you mean" line (exit 2); an alias given
# with its own option is refused; YAML beyond flat keys is refused with file:line; every
# option of `train --help` sits in a named section; --version prints three lines.
# usage: cli_names.sh SHARDLORA_BINARY WORK_DIR
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
set -uo pipefail
SL="$1"; W="$2/cli_names"
PY=/usr/bin/python3
rm -rf "$W"; mkdir -p "$W"
fails=0
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1"; fails=$((fails + 1)); }

"$SL" make-model --out "$W/m" --layers 1 --hidden 32 --ffn 64 --heads 2 --kv-heads 1 --vocab 259 --seed 5 > /dev/null || exit 1
"$PY" -c "
import json
for i in range(48): print(json.dumps({'text': 'document %d: the names users already know' % i}))
" > "$W/d.jsonl"

# ---- one configuration, five spellings ------------------------------------------------
# Every aliased option is set away from its default, so a dropped alias shows as a diff.
BASE=(--model "$W/m" --data "$W/d.jsonl" --threads 1 --peak-gflops 1 --progress lines)
CANON=(--lr 0.003 --steps 2 --epochs 3 --micro-batch 2 --seq-len 32 --lr-schedule cosine
       --ckpt-every 1 --keep-checkpoints 2 --log-every 1 --eval-every 0 --resume none
       --lora-r 4 --target-modules q_proj,v_proj --adapter dora --beta1 0.8 --beta2 0.99
       --eps 1e-6 --no-pack --warmup-ratio 0.5 --gradient-accumulation-steps 2)
HF=(--learning-rate 0.003 --max-steps 2 --num-train-epochs 3 --per-device-train-batch-size 2
    --max-seq-length 32 --lr-scheduler-type cosine --save-steps 1 --save-total-limit 2
    --logging-steps 1 --eval-steps 0 --resume-from-checkpoint none --lora-rank 4
    --lora-target-modules q_proj,v_proj --use-dora --adam-beta1 0.8 --adam-beta2 0.99
    --adam-epsilon 1e-6 --no-packing --warmup-ratio 0.5 --gradient-accumulation-steps 2)
HF_US=(--learning_rate=0.003 --max_steps 2 --num_train_epochs=3 --per_device_train_batch_size 2
       --max_seq_length=32 --lr_scheduler_type cosine --save_steps 1 --save_total_limit 2
       --logging_steps 1 --eval_steps 0 --resume_from_checkpoint none --lora_rank=4
       --lora_target_modules q_proj,v_proj --use_dora --adam_beta1 0.8 --adam_beta2=0.99
       --adam_epsilon 1e-6 --no_packing --warmup_ratio 0.5 --gradient_accumulation_steps 2)
cat > "$W/hf.yaml" <<EOF
---
# a TRL-style config: aliases, YAML scalars, a block list and comments
model: '$W/m'
data:
  - "$W/d.jsonl"      # one training file
threads: 1
peak_gflops: 1
progress: lines
learning_rate: 3e-3
max_steps: 2
num_train_epochs: 3
per_device_train_batch_size: 2
max_seq_length: 32
lr_scheduler_type: cosine
save_steps: 1
save_total_limit: 2
logging_steps: 1
eval_steps: 0
resume_from_checkpoint: false   # HF: a boolean (false = start fresh)
lora_rank: 4
lora_target_modules: "q_proj,v_proj"
use_dora: yes
adam_beta1: 0.8
adam_beta2: 0.99
adam_epsilon: 1.0e-6
packing: false
warmup_ratio: 0.5
gradient_accumulation_steps: 2
init_adapter: ~
EOF
cat > "$W/hf.json" <<EOF
{"model": "$W/m", "data": ["$W/d.jsonl"], "threads": 1, "peak-gflops": 1, "progress": "lines",
 "learning_rate": 0.003, "max_steps": 2, "num_train_epochs": 3, "per_device_train_batch_size": 2,
 "max_seq_length": 32, "lr_scheduler_type": "cosine", "save_steps": 1, "save_total_limit": 2,
 "logging_steps": 1, "eval_steps": 0, "resume_from_checkpoint": false, "lora_rank": 4,
 "lora_target_modules": "q_proj,v_proj", "use_dora": true, "adam_beta1": 0.8, "adam_beta2": 0.99,
 "adam_epsilon": 1e-6, "packing": false, "warmup_ratio": 0.5, "gradient_accumulation_steps": 2}
EOF
run() { local name="$1"; shift; "$SL" train "$@" --out "$W/$name" > "$W/$name.log" 2>&1 || { fail "$name: exit $? ($(tail -2 "$W/$name.log"))"; return 1; }; }
run canon "${BASE[@]}" "${CANON[@]}"
run hf "${BASE[@]}" "${HF[@]}"
run hf_us "${BASE[@]}" "${HF_US[@]}"
run yaml --config "$W/hf.yaml"
run json --config "$W/hf.json"
"$PY" - "$W" <<'PY' && pass "canonical flags, HF aliases (dashes, underscores), YAML and JSON resolve alike" || fail "the five spellings differ"
import json, sys
w = sys.argv[1]
def cfg(d):
    c = json.load(open(f"{w}/{d}/run.json"))["config"]
    return {k: v for k, v in c.items() if k not in ("out", "config")}
def loss(d):
    return [json.loads(l)["loss"] for l in open(f"{w}/{d}/metrics.jsonl") if '"loss"' in l]
ref = cfg("canon")
assert ref["lr"] == 0.003 and ref["adapter"] == "dora" and ref["seq-len"] == 32 and ref["pack"] is False, ref
aliases = {"learning-rate", "max-steps", "output-dir", "use-dora", "lora-rank", "packing", "max-seq-length"}
assert not aliases & set(ref), f"run.json names aliases: {aliases & set(ref)}"
for d in ("hf", "hf_us", "yaml", "json"):
    c = cfg(d)
    diff = {k: (ref.get(k), c.get(k)) for k in set(ref) | set(c) if ref.get(k) != c.get(k)}
    assert not diff, f"{d}: run.json config differs from the canonical run: {diff}"
    assert loss(d) == loss("canon") and len(loss(d)) == 2, f"{d}: losses {loss(d)} vs {loss('canon')}"
print(f"config: {len(ref)} options equal in 5 runs; losses {loss('canon')}")
PY

# ---- refusals: one line on stderr, exit 2 ---------------------------------------------
# refused NAME REGEX ARGS...: exit 2, exactly one stderr line, matching REGEX (grep -E)
refused() {
  local name="$1" regex="$2"; shift 2
  local err rc
  err=$("$@" 2>&1 >/dev/null); rc=$?
  if [ $rc -ne 2 ]; then fail "$name: exit $rc, expected 2 ($err)"; return; fi
  if [ "$(printf '%s\n' "$err" | wc -l)" -ne 1 ]; then fail "$name: not one line:"; printf '%s\n' "$err"; return; fi
  if ! grep -Eq -- "$regex" <<<"$err"; then fail "$name: /$regex/ not in: $err"; return; fi
  pass "$name: $err"
}
T=(train --model "$W/m" --data "$W/d.jsonl" --out "$W/refused")
refused flag-typo "unknown option --learnig-rate; did you mean --learning-rate \(= --lr\)\?$" "$SL" "${T[@]}" --learnig-rate 1e-3
refused flag-typo-underscores "did you mean --learning_rate \(= --lr\)\?$" "$SL" "${T[@]}" --learnig_rate 1e-3
refused flag-typo-own-name "unknown option --warmup-step; did you mean --warmup-steps\?$" "$SL" "${T[@]}" --warmup-step 2
refused flag-far "unknown option --xyzzy \(see --help\)$" "$SL" "${T[@]}" --xyzzy 1
# under mpiexec every rank parses and agrees, rank 0 alone says it (mpiexec adds its own lines)
n=$(mpiexec --oversubscribe -n 2 "$SL" "${T[@]}" --learnig-rate 1e-3 2>&1 >/dev/null | grep -c "did you mean --learning-rate")
[ "$n" -eq 1 ] && pass "flag-typo-2-ranks: one line from 2 ranks" || fail "flag-typo-2-ranks: $n lines"
printf 'lr: 1e-3\nlearnig_rate: 2e-3\n' > "$W/typo.yaml"
refused key-typo "typo.yaml:2: unknown option 'learnig_rate'; did you mean learning_rate \(= lr\)\?$" "$SL" "${T[@]}" --config "$W/typo.yaml"
printf '{"lr": 1e-3, "max_step": 2}' > "$W/typo.json"
refused key-typo-json "typo.json: key \"max_step\": unknown option 'max_step'; did you mean max_steps \(= steps\)\?$" "$SL" "${T[@]}" --config "$W/typo.json"
refused alias-and-target "--learning-rate and --lr both set --lr; give one of them" "$SL" "${T[@]}" --learning-rate 1e-3 --lr 1e-3
refused alias-and-target-values "--lr and --learning-rate both set --lr" "$SL" "${T[@]}" --lr 1e-3 --learning_rate 2e-3
refused value-alias-and-target "--use-dora and --adapter both set --adapter" "$SL" "${T[@]}" --use-dora --adapter lora
printf 'max_steps: 2\nsteps: 2\n' > "$W/twice.yaml"
refused alias-and-target-config "twice.yaml:2: max-steps and steps both set steps" "$SL" "${T[@]}" --config "$W/twice.yaml"
refused hf-scheduler-other "--lr-scheduler-type 'cosine_with_restarts': expected constant, linear, cosine or constant_with_warmup" "$SL" "${T[@]}" --lr-scheduler-type cosine_with_restarts
printf 'lr: 1e-3\nlora:\n  r: 8\n' > "$W/nested.yaml"
printf 'lr: 1e-3\nadapter:\n  kind: dora\n' > "$W/nested2.yaml"
printf 'data:\n  - {path: a.jsonl}\n' > "$W/nested3.yaml"
printf 'model: &m /x\n' > "$W/anchor.yaml"
printf 'lr: [1e-3, 2e-3]\n' > "$W/list.yaml"
printf 'seq_len:\n  - 32\n' > "$W/blocklist.yaml"
printf 'model: "unterminated\n' > "$W/quote.yaml"
refused yaml-unknown-section "nested.yaml:2: unknown option 'lora'" "$SL" "${T[@]}" --config "$W/nested.yaml"
refused yaml-nested "nested2.yaml:3: nested mappings are not supported" "$SL" "${T[@]}" --config "$W/nested2.yaml"
refused yaml-nested-item "nested3.yaml:2: nested mappings are not supported" "$SL" "${T[@]}" --config "$W/nested3.yaml"
refused yaml-anchor "anchor.yaml:1: YAML anchors, aliases and tags are not supported" "$SL" "${T[@]}" --config "$W/anchor.yaml"
refused yaml-list-scalar "list.yaml:1: a list is only allowed for repeatable options" "$SL" "${T[@]}" --config "$W/list.yaml"
refused yaml-block-list-scalar "blocklist.yaml:2: a list is only allowed for repeatable options" "$SL" "${T[@]}" --config "$W/blocklist.yaml"
refused yaml-quote "quote.yaml:1: unterminated double-quoted value" "$SL" "${T[@]}" --config "$W/quote.yaml"
[ -e "$W/refused" ] && fail "a refused command line left $W/refused behind"

# ---- Hugging Face's constant_with_warmup is our constant (run.json says so) --------------
run cww "${BASE[@]}" --steps 2 --seq-len 32 --lr-scheduler-type constant_with_warmup --warmup_steps 1 \
  && "$PY" -c "
import json, sys
c = json.load(open('$W/cww/run.json'))['config']
assert c['lr-schedule'] == 'constant' and c['warmup-steps'] == 1, c
lrs = [json.loads(l)['lr'] for l in open('$W/cww/metrics.jsonl') if '\"lr\"' in l]
assert lrs == [0.0, 0.0002], lrs
" && pass "constant_with_warmup: recorded as constant, lr 0 then 2e-4" || fail "constant_with_warmup"

# ---- --help: every option in a named section, sections in order, aliases shown -------------
"$SL" train --help > "$W/help.txt" || fail "train --help exit status"
"$PY" - "$W/help.txt" "$W/canon/run.json" <<'PY' && pass "train --help: every option under a named section, in order" || fail "train --help sections"
import json, re, sys
text = open(sys.argv[1]).read().split("\n")
order = ["model and output", "data and batches", "adapter (LoRA)", "optimisation", "schedule",
         "checkpoints", "parallelism", "logging and evaluation", "expert (tests and tuning)"]
section, seen, where = None, [], {}
for line in text:
    m = re.match(r"^(\S[^:]*):$", line)
    if m:
        section = m.group(1)
        assert section in order, f"unknown section {section!r}"
        seen.append(section)
        continue
    m = re.match(r"^  --([a-z0-9-]+)", line)
    if m and m.group(1) != "help":
        assert section, f"--{m.group(1)} is outside any section"
        where[m.group(1)] = section
assert seen == order, f"sections {seen}, expected {order}"
opts = set(json.load(open(sys.argv[2]))["config"])
assert opts == set(where), f"help and run.json differ: {opts ^ set(where)}"
for o in ("kernels", "pin-memory", "ckpt-chunk-bytes", "dump-grads", "peak-gflops"):
    assert where[o] == order[-1], f"--{o} is in {where[o]}, not expert"
lr = [l for l in text if l.startswith("  --lr X")][0]
assert "[default: 0.0002]" in lr and "(also --learning-rate)" in lr, lr
ad = [l for l in text if l.startswith("  --adapter KIND")][0]
assert "(also --use-dora = --adapter dora)" in ad, ad
print(f"{len(where)} options in {len(seen)} sections")
PY
for c in eval generate merge; do
  "$SL" $c --help > "$W/help-$c.txt" || fail "$c --help exit status"
  awk '/^[^ ].*:$/ {s = 1} /^  --/ && !/^  --help/ && !s {bad = 1} END {exit bad}' "$W/help-$c.txt" \
    && grep -q "^expert (tests and tuning):" "$W/help-$c.txt" \
    && pass "$c --help: options in sections" || fail "$c --help: an option outside a section"
done

# ---- --version ----------------------------------------------------------------------------
"$SL" --version > "$W/version.txt" || fail "--version exit status"
"$SL" version > "$W/version2.txt" || fail "version exit status"
if [ "$(wc -l < "$W/version.txt")" -eq 3 ] && grep -q "^shardlora [0-9]" "$W/version.txt" \
   && grep -q "^MPI: ." "$W/version.txt" && grep -q "^BLAS: ." "$W/version.txt" \
   && cmp -s "$W/version.txt" "$W/version2.txt"; then
  pass "--version: $(tr '\n' '|' < "$W/version.txt")"
else
  fail "--version:"; cat "$W/version.txt"
fi
"$SL" --help | grep -q -- "--version" && pass "shardlora --help lists --version" || fail "shardlora --help lacks --version"

[ $fails -eq 0 ] && echo "cli_names: OK" || { echo "cli_names: $fails failure(s)"; exit 1; }
