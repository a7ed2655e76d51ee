#!/usr/bin/env bash
# Outputs a person can read (issue 15): every command's stdout carries only its results
# (eval's JSON line, generate's text, tokenize's ids, inspect's listing, --help), everything
# else goes to stderr; numbers a user gave come back in their shortest form (--lr 0.05, not
# 0.050000000000000003) in run.json, summary.json, eval's JSON, the configuration printout
# and the model card; the live bar (--progress bar) fits the terminal's width ($COLUMNS, or
# the pseudo-terminal's size under `script`) and shows step/total, loss, tok/s, elapsed, ETA
# and "evaluating k/n". launch/shardlora-run keeps the rule: its plan on stderr before a
# launch, on stdout for --dry-run.
# usage: outputs.sh SHARDLORA_BINARY WORK_DIR
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
set -uo pipefail
SL="$1"; W="$2/outputs"
PY=/usr/bin/python3
rm -rf "$W"; mkdir -p "$W"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }

# streams NAME OUT_REGEX ERR_REGEX: $W/NAME.out matches OUT_REGEX ("" = must be empty) and
# has no log line; $W/NAME.err matches ERR_REGEX ("" = must be empty)
streams() {
  local n="$1" out="$2" err="$3"
  if [ -z "$out" ]; then
    [ -s "$W/$n.out" ] && { fail "$n: stdout is not empty: $(head -2 "$W/$n.out")"; return; }
  else
    grep -Eq -- "$out" "$W/$n.out" || { fail "$n: stdout lacks /$out/: $(head -2 "$W/$n.out")"; return; }
    grep -q '^\[shardlora r' "$W/$n.out" && { fail "$n: a log line on stdout: $(grep -m1 '^\[shardlora r' "$W/$n.out")"; return; }
  fi
  if [ -z "$err" ]; then
    [ -s "$W/$n.err" ] && { fail "$n: stderr is not empty: $(head -2 "$W/$n.err")"; return; }
  else
    grep -Eq -- "$err" "$W/$n.err" || { fail "$n: stderr lacks /$err/"; return; }
  fi
  ok "$n: stdout ${out:-(empty)}, stderr ${err:-(empty)}"
}

"$SL" make-model --out "$W/m" --layers 2 --hidden 64 --ffn 128 --heads 4 --kv-heads 2 --vocab 259 \
  --seed 3 > "$W/make.out" 2> "$W/make.err" || { cat "$W/make.err"; echo "FAIL: make-model"; exit 1; }
streams make "" "^make-model: wrote"
"$PY" - /usr/share/common-licenses/GPL-3 > "$W/d.jsonl" <<'PY'
import json, sys
b = open(sys.argv[1], 'rb').read()[:8192]
for i in range(0, len(b) - 64, 64):
    print(json.dumps({"input_ids": list(b[i:i + 64])}))
PY

# --- train: nothing on stdout; user-given floats in their shortest form ---------------------
T=(--model "$W/m" --data "$W/d.jsonl" --seq-len 64 --micro-batch 4 --threads 1 --peak-gflops 1)
timeout 120 "$SL" train "${T[@]}" --out "$W/run" --steps 8 --lr 0.05 --lora-dropout 0.1 \
  --eval-split 0.1 --eval-every 4 --log-every 4 --progress lines > "$W/train.out" 2> "$W/train.err" \
  || { tail -5 "$W/train.err"; fail "train exited non-zero"; }
streams train "" "configuration \(flags and defaults\)"
grep -Eq '^  lr +=? *0\.05 ' "$W/train.err" && grep -Eq '^  lora-dropout += 0\.1 ' "$W/train.err" \
  && ok "configuration printout: lr 0.05, lora-dropout 0.1" \
  || fail "configuration printout: $(grep -E '^  (lr|lora-dropout) ' "$W/train.err")"
grep -Eq 'step 8/8 .*tok/s.*elapsed.*eta' "$W/train.err" && grep -q 'summary: best eval loss' "$W/train.err" \
  && ok "train: progress lines and summary on stderr" || fail "train: no progress / summary on stderr"

# --- eval: one JSON line on stdout, the object --out writes --------------------------------
timeout 120 "$SL" eval --model "$W/m" --adapter "$W/run/adapter" --data "$W/d.jsonl" --seq-len 64 \
  --threads 1 --out "$W/eval.json" > "$W/eval.out" 2> "$W/eval.err" || fail "eval exited non-zero"
streams eval '^\{"model":' '^eval: loss'
"$PY" - "$W/eval.out" "$W/eval.json" <<'PY' && ok "eval: stdout is one JSON line equal to --out" || fail "eval's stdout"
import json, sys
lines = open(sys.argv[1]).read().splitlines()
assert len(lines) == 1, f"{len(lines)} lines on stdout"
a, b = json.loads(lines[0]), json.load(open(sys.argv[2]))
assert a == b, f"stdout {a} != --out {b}"
assert a["loss"] > 0 and a["tokens"] > 0
PY

# every real number in the files and eval's line is the shortest text that reads back as it
"$PY" - "$W/run/run.json" "$W/run/summary.json" "$W/eval.json" "$W/eval.out" "$W/run/adapter/README.md" <<'PY' \
  && ok "run.json, summary.json, eval JSON, model card: shortest round-trip floats" || fail "long floats"
import json, re, sys
def digits(t):
    return len(re.sub(r"e.*", "", t.lower()).replace("-", "").replace(".", "").lstrip("0"))
bad = []
for p in sys.argv[1:]:
    text = open(p).read()
    for tok in re.findall(r"(?<![\w.])-?\d+\.\d+(?:[eE][-+]?\d+)?|(?<![\w.])-?\d+[eE][-+]?\d+", text):
        if digits(tok) > digits(repr(float(tok))):
            bad.append(f"{p}: {tok}")
run = json.load(open(sys.argv[1]))
cfg = run["config"]
if cfg["lr"] != 0.05 or cfg["lora-dropout"] != 0.1:
    bad.append(f"run.json: lr {cfg['lr']}, lora-dropout {cfg['lora-dropout']}")
if not re.search(r'"lr": 0\.05\b', open(sys.argv[1]).read()):
    bad.append("run.json: no \"lr\": 0.05")
card = open(sys.argv[5]).read()
if "| lora_dropout | 0.1 |" not in card or "- lr: `0.05`" not in card:
    bad.append("README.md: lora_dropout 0.1 / lr 0.05 not as given")
print("\n".join(bad[:10]) or f"{len(sys.argv) - 1} files checked")
sys.exit(1 if bad else 0)
PY

# --- the other commands -------------------------------------------------------------------
"$SL" export "$W/run" --out "$W/exp" > "$W/export.out" 2> "$W/export.err" || fail "export exited non-zero"
streams export "" "^shardlora export: "
"$SL" inspect "$W/run/checkpoints/latest" > "$W/inspect.out" 2> "$W/inspect.err" || fail "inspect exited non-zero"
streams inspect "^checkpoint " ""
printf 'hello world' | "$SL" tokenize --model "$W/m" > "$W/tokenize.out" 2> "$W/tokenize.err" || fail "tokenize exited non-zero"
streams tokenize '^[0-9]+( [0-9]+)*$' ""
timeout 120 "$SL" generate --model "$W/m" --adapter "$W/run/adapter" --prompt "hi" --max-new-tokens 3 \
  --ignore-eos --threads 1 > "$W/generate.out" 2> "$W/generate.err" || fail "generate exited non-zero"
streams generate '.' '^\[shardlora r0\] '
timeout 120 "$SL" merge --model "$W/m" --adapter "$W/run/adapter" --out "$W/merged" --threads 1 \
  > "$W/merge.out" 2> "$W/merge.err" || fail "merge exited non-zero"
streams merge "" "^merge: wrote"
"$SL" plot "$W/run" > "$W/plot.out" 2> "$W/plot.err" || fail "plot exited non-zero"
streams plot "" "^wrote .*loss.svg"
"$SL" train --help > "$W/help.out" 2> "$W/help.err" || fail "train --help exited non-zero"
streams help "--base-model-name" ""
# the launcher: its plan is a log before a launch (stderr), the result of --dry-run (stdout)
RUN="$(cd "$(dirname "$0")/../.." && pwd)/launch/shardlora-run"
L=(--bin "$SL" --ranks-per-node 1 --threads 1 --oversubscribe)
timeout 120 "$RUN" "${L[@]}" eval --model "$W/m" --data "$W/d.jsonl" --seq-len 64 \
  > "$W/launcher.out" 2> "$W/launcher.err" || fail "shardlora-run eval exited non-zero"
streams launcher '^\{"model":' '^shardlora-run: plan \(launch mode\)'
[ "$(wc -l < "$W/launcher.out")" = 1 ] || fail "shardlora-run eval: $(wc -l < "$W/launcher.out") lines on stdout"
"$RUN" "${L[@]}" --dry-run eval --model "$W/m" > "$W/dryrun.out" 2> /dev/null || fail "shardlora-run --dry-run exited non-zero"
grep -q '^shardlora-run: plan (dry run' "$W/dryrun.out" && ok "shardlora-run --dry-run: the plan on stdout" \
  || fail "shardlora-run --dry-run: no plan on stdout"

# --- the live bar -------------------------------------------------------------------------
# bar_check NAME WIDTH FILE: every drawn bar (text after "\r ESC[K" up to the next "\r", no
# newline) is at most WIDTH - 1 columns; the step bars show step/total, loss, tok/s, elapsed
# and eta (as room allows: all at 80 columns, step and loss always); the evaluation
# shows "evaluating k/n"
bar_check() {
  "$PY" - "$@" <<'PY'
import re, sys
name, width, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
text = open(path, "rb").read().decode("utf-8", "replace").replace("\r\n", "\n")  # a pty's newlines
draws = [s for s in text.split("\r\x1b[K")[1:] if s and "\n" not in s.split("\r")[0]]
draws = [re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", s.split("\r")[0]) for s in draws]
steps = [d for d in draws if re.search(r"\b\d+/6\b", d) and "evaluating" not in d]
evals = [d for d in draws if re.search(r"evaluating \d+/\d+", d)]
bad = [d for d in draws if len(d) > width - 1]
need = ["/6", "loss "] + (["tok/s", "elapsed ", "eta "] if width >= 80 else [])
miss = [k for k in need if not any(k in d for d in steps)]
print(f"{name}: {len(draws)} bars drawn ({len(steps)} of steps, {len(evals)} of evaluations), "
      f"widest {max(map(len, draws), default=0)} of {width} columns; e.g. {steps[-1] if steps else None!r}")
ok = draws and not bad and not miss and evals and steps
if bad: print(f"  wider than {width - 1}: {bad[0]!r}")
if miss: print(f"  fields missing from the step bars: {miss}")
if not evals: print("  no 'evaluating k/n' bar")
sys.exit(0 if ok else 1)
PY
}
B=(--steps 6 --eval-split 0.3 --eval-every 3 --log-every 100 --progress bar)
for cols in 80 34; do
  rm -rf "$W/bar$cols"
  COLUMNS=$cols timeout 120 "$SL" train "${T[@]}" --out "$W/bar$cols" "${B[@]}" > "$W/bar$cols.out" 2> "$W/bar$cols.err" \
    || fail "train --progress bar (COLUMNS=$cols) exited non-zero"
  [ -s "$W/bar$cols.out" ] && fail "bar (COLUMNS=$cols): something on stdout"
  bar_check "COLUMNS=$cols" "$cols" "$W/bar$cols.err" && ok "bar fits $cols columns" || fail "bar at COLUMNS=$cols"
done
# a real pseudo-terminal of 50 columns (TIOCGWINSZ wins over a wrong $COLUMNS)
rm -rf "$W/barpty"
printf -v cmd '%q ' stty cols 50 ';' COLUMNS=200 timeout 120 "$SL" train "${T[@]}" --out "$W/barpty" "${B[@]}"
cmd=${cmd//\\;/;}
if script -qfec "$cmd" "$W/barpty.typescript" > /dev/null 2>&1; then
  bar_check "pty of 50 columns" 50 "$W/barpty.typescript" && ok "bar fits a 50-column terminal" || fail "bar on a 50-column pty"
else
  fail "train under script (a pseudo-terminal) exited non-zero: $(tail -3 "$W/barpty.typescript")"
fi

if [ $fails -ne 0 ]; then echo "outputs: $fails failures"; exit 1; fi
echo "outputs: OK"
