#!/usr/bin/env bash
# Experiment tracking on real runs of a small made model:
#   events    OUT/events.out.tfevents.* read by tracking_check.py (its own CRC-32C and
#             TFRecord parser, protobuf decoded from its own tb_event.proto by protoc and
#             python3-protobuf): CRCs, file_version, a SessionLog START at step 1, one event
#             per step and per evaluation
#             with metrics.jsonl's values; metrics.csv = metrics.jsonl
#   resume    a run cut after step 8 with its last checkpoint at 6 (the step-8 checkpoint
#             removed) and resumed to step 12: a second event file opening with a SessionLog
#             START at 7, metrics.jsonl / metrics.csv rows 7..8 replaced, "resumed" at 7
#   dp=2      two ranks write one event file (world rank 0)
#   nonfinite --skip-nonfinite steps: NaN in the events, nan and skipped 1 in the CSV
#   corrupt   the checker fails on a flipped byte and on a loss changed by 1e-5 (a test
#             that can fail)
#   plot      `shardlora plot A B`: both runs in one SVG, a legend with both names, A's
#             resume marker at step 7, every point inside the frame
# usage: tracking.sh SHARDLORA_BINARY WORK_DIR
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
set -uo pipefail
SL="$(readlink -f "$1")"; W="$2/tracking"
PY=/usr/bin/python3
CHECK=("$PY" "$(dirname "$(readlink -f "$0")")/tracking_check.py")
rm -rf "$W"; mkdir -p "$W"
FAILS=()
fail() { FAILS+=("$1"); echo "FAIL: $1"; }
pass() { echo "PASS: $1"; }
COMMON=(--threads 1 --peak-gflops 1 --log-every 100 --seq-len 64 --micro-batch 4)
# run NAME ARGS...: shardlora train, log in $W/NAME.log
run() { local n="$1"; shift; timeout 120 "$SL" train "${COMMON[@]}" "$@" > "$W/$n.log" 2>&1; }
# check NAME ARGS...: tracking_check.py, its last line on success
check() {
  local n="$1" out; shift
  if out=$("${CHECK[@]}" "$@" 2>&1); then pass "$n: $(tail -1 <<<"$out")"; else fail "$n"; tail -4 <<<"$out"; fi
}

"$SL" make-model --out "$W/m" --layers 2 --hidden 64 --ffn 128 --heads 4 --kv-heads 2 --vocab 259 --seed 3 > /dev/null \
  || { echo "FAIL: make-model"; exit 1; }
"$PY" - /usr/share/common-licenses/GPL-3 > "$W/data.jsonl" <<'PY'
import json, sys
b = open(sys.argv[1], 'rb').read()[:64 * 120]
for i in range(0, len(b) - 64, 64):
    print(json.dumps({"input_ids": list(b[i:i + 64])}))
PY
D=(--model "$W/m" --data "$W/data.jsonl" --eval-split 0.1 --eval-every 4)

# ---- events and CSV of a fresh run, then the same run cut and resumed --------------------
run a1 "${D[@]}" --out "$W/run-a" --steps 8 --ckpt-every 3 || fail "run A (8 steps) failed"
check "fresh run" "$W/run-a" --files 1
rm -rf "$W/run-a/checkpoints/step-000000008" && ln -sfn step-000000006 "$W/run-a/checkpoints/latest"
sleep 1 # another second: the new event file is told apart by its time, as a later job's would be
run a2 "${D[@]}" --out "$W/run-a" --steps 12 --ckpt-every 3 || fail "run A resumed to 12 steps failed"
grep -q "resumed from .*step-000000006" "$W/a2.log" || fail "run A did not resume from step 6"
check "resumed run" "$W/run-a" --files 2 --resumed-at 7

# ---- two ranks: one event file ------------------------------------------------------------
mpiexec --oversubscribe -n 2 "$SL" train "${COMMON[@]}" "${D[@]}" --micro-batch 2 --out "$W/run-b" \
  --steps 8 --lr 1e-3 > "$W/b.log" 2>&1 || fail "run B (dp=2) failed"
check "dp=2" "$W/run-b" --files 1

# ---- non-finite steps ----------------------------------------------------------------------
run nf --model "$W/m" --data "$W/data.jsonl" --out "$W/nf" --steps 3 --optimizer sgd --lr 1e30 \
  --lr-schedule constant --skip-nonfinite || fail "the --skip-nonfinite run failed"
check "non-finite steps" "$W/nf" --files 1
"$PY" - "$W/nf" <<'PY' && pass "non-finite: nan and skipped 1 in metrics.csv" || fail "non-finite CSV"
import csv, math, sys
rows = list(csv.DictReader(open(sys.argv[1] + "/metrics.csv")))
bad = [r for r in rows if r["skipped"] == "1"]
assert bad and all(math.isnan(float(r["loss"])) or math.isnan(float(r["grad_norm"])) or
                   math.isinf(float(r["grad_norm"])) for r in bad), rows
print(f"{len(bad)} of {len(rows)} steps skipped")
PY

# ---- the checker fails on a damaged file -----------------------------------------------------
cp -r "$W/run-b" "$W/corrupt"
f=$(ls "$W/corrupt"/events.out.tfevents.* | head -1)
"$PY" -c "import sys; p=sys.argv[1]; b=bytearray(open(p,'rb').read()); b[len(b)//2]^=0x10; open(p,'wb').write(b)" "$f"
if out=$("${CHECK[@]}" "$W/corrupt" --files 1 2>&1); then fail "a flipped byte went unnoticed"
else pass "a flipped byte is caught: $(tail -1 <<<"$out")"; fi

cp -r "$W/run-b" "$W/changed"
"$PY" - "$W/changed/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rows[2]["loss"] *= 1 + 1e-5   # above float32's precision, below the eye's
open(sys.argv[1], "w").write("".join(json.dumps(r) + "\n" for r in rows))
PY
if out=$("${CHECK[@]}" "$W/changed" --files 1 2>&1); then fail "a loss changed by 1e-5 went unnoticed"
else pass "a loss changed by 1e-5 is caught: $(tail -1 <<<"$out")"; fi

# ---- plot: two runs overlaid, A's resume marked ---------------------------------------------
if msg=$("$SL" plot "$W/run-a" "$W/run-b" --out "$W/ab.svg" 2>&1); then
  pass "plot A B: $msg"
  "$PY" - "$W/ab.svg" <<'PY' && pass "plot A B: two runs, legend, resume marker at 7, no clipped point" || fail "plot A B svg"
import sys, xml.etree.ElementTree as ET
NS = '{http://www.w3.org/2000/svg}'
root = ET.parse(sys.argv[1]).getroot()
byid = lambda i: [e for e in root.iter() if e.get('id') == i]
leg = ''.join(byid('legend')[0].itertext())
assert 'run-a' in leg and 'run-b' in leg, leg
title = ''.join(byid('title')[0].itertext())
assert 'run-a' in title and 'run-b' in title, title
res = byid('resumes')[0].findall(NS + 'line')
assert [l.find(NS + 'title').text for l in res] == ['run-a: resumed at step 7'], [ET.tostring(l) for l in res]
fr = byid('frame')[0]
x0, y0 = float(fr.get('x')), float(fr.get('y'))
x1, y1 = x0 + float(fr.get('width')), y0 + float(fr.get('height'))
n = 0
for line in root.iter(NS + 'polyline'):
    for xy in line.get('points').split():
        x, y = map(float, xy.split(','))
        assert x0 - 0.01 <= x <= x1 + 0.01 and y0 - 0.01 <= y <= y1 + 0.01, (line.get('id'), x, y)
        n += 1
cols = {byid(f'run{k}-train-raw')[0].get('stroke') for k in (1, 2)}
assert len(cols) == 2, f'the runs share a colour: {cols}'
assert len(byid('run1-eval')) == 1 and len(byid('run2-eval')) == 1, 'an eval series is missing'
print(f'{n} points inside the frame')
PY
else
  fail "plot A B: $msg"
fi

if [ ${#FAILS[@]} -gt 0 ]; then echo "tracking: ${#FAILS[@]} failed"; exit 1; fi
echo "tracking: OK"
