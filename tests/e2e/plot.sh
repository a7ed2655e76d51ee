#!/usr/bin/env bash
# `shardlora plot OUT` on metrics.jsonl files written by hand: with evals, with a repeated
# step (the last line wins), with NaN written as a string, a bare token or a huge number,
# and with only train lines, several runs overlaid (colours, legend names, resume markers,
# nothing clipped); the SVG is checked with Python's xml.etree (root, size, one
# polyline point per step, legend, title, 1/2/5 x 10^k ticks). Bad input: a missing
# directory, an empty file, a malformed line (named file:line), no train lines: exit 3 and
# nothing written.
# usage: plot.sh SHARDLORA_BINARY WORK_DIR
set -uo pipefail
SL="$(readlink -f "$1")"; W="$2/plot"
PY=/usr/bin/python3
rm -rf "$W"; mkdir -p "$W"
fails=0; passes=0
fail() { echo "FAIL $1"; fails=$((fails+1)); }
pass() { echo "PASS $1"; passes=$((passes+1)); }

# check NAME SVG 'python assertions': parses SVG and runs the assertions; the helpers are
# pts(id) -> [(x, y)] of a polyline, texts() -> every text, ids() -> every id,
# marker_titles(id) -> the tooltips of a marker group, ticks(id) -> the tick labels.
check() {
  local name="$1" svg="$2" code="$3" out
  if out=$("$PY" - "$svg" 2>&1 <<PY
import math, sys, xml.etree.ElementTree as ET
NS = '{http://www.w3.org/2000/svg}'
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == NS + 'svg', f'root tag is {root.tag}'
for a in ('width', 'height', 'viewBox'):
    assert a in root.attrib, f'svg has no {a}'
vb = [float(v) for v in root.attrib['viewBox'].split()]
assert vb[2] > 0 and vb[3] > 0, f'viewBox {vb}'
def byid(i):
    return [e for e in root.iter() if e.get('id') == i]
def ids():
    return {e.get('id') for e in root.iter() if e.get('id')}
def pts(i):
    e = byid(i)
    assert len(e) == 1 and e[0].tag in (NS + 'polyline', NS + 'path'), f'no polyline {i}'
    p = [tuple(float(c) for c in xy.split(',')) for xy in e[0].get('points').split()]
    for x, y in p:
        assert math.isfinite(x) and math.isfinite(y), f'{i}: point {x},{y}'
        assert vb[0] <= x <= vb[0] + vb[2] and vb[1] <= y <= vb[1] + vb[3], f'{i}: {x},{y} outside'
    return p
def texts():
    return [''.join(e.itertext()) for e in root.iter(NS + 'text')]
def marker_titles(i):
    g = byid(i)
    assert len(g) == 1, f'no group {i}'
    return [c.find(NS + 'title').text for c in g[0].iter(NS + 'circle')]
def ticks(i):
    v = [float(t) for t in (''.join(e.itertext()) for e in byid(i)[0].iter(NS + 'text'))]
    assert len(v) >= 2, f'{i}: {v}'
    d = v[1] - v[0]
    m = d / 10 ** math.floor(math.log10(d) + 1e-9)
    assert any(abs(m - k) < 1e-6 for k in (1, 2, 5)), f'{i}: step {d} is not 1/2/5 x 10^k: {v}'
    assert all(abs((b - a) - d) < 1e-6 * d for a, b in zip(v, v[1:])), f'{i}: uneven {v}'
    return v
for i in ('x-ticks', 'y-ticks'):
    ticks(i)
t = texts()
assert 'step' in t and 'loss' in t, 'axis titles missing'
$code
PY
  ); then pass "$name${out:+: $out}"; else fail "$name:"; echo "$out" | tail -5; fi
}

# run NAME DIR [ARGS...]: plot must succeed and print the "wrote" line; sets $msg
run() {
  local name="$1" dir="$2"; shift 2
  msg=$("$SL" plot "$dir" "$@" 2>&1); local rc=$?
  if [ $rc -ne 0 ]; then fail "$name: exit $rc: $msg"; return 1; fi
  return 0
}

# 1. 50 train steps (a smoothed curve is drawn), 5 evals, a skipped step, other keys
mkdir -p "$W/evals"
"$PY" - > "$W/evals/metrics.jsonl" <<'PY'
import json, math
for s in range(1, 51):
    r = {"step": s, "epoch": s / 32, "loss": 3 - 0.03 * s + 0.2 * math.sin(s), "lr": 2e-4,
         "grad_norm": 0.8, "tokens": 4096, "tokens_per_s": 812.5, "mfu": 0.61}
    if s == 7: r["skipped"] = True
    print(json.dumps(r))
    if s % 10 == 0:
        print(json.dumps({"step": s, "eval_loss": 3.1 - 0.025 * s, "eval_ppl": 11.0, "eval_tokens": 2048}))
PY
if run evals "$W/evals"; then
  [ "$msg" = "wrote $W/evals/loss.svg (50 train points, 5 eval points)" ] || fail "evals: printed '$msg'"
  check evals "$W/evals/loss.svg" "
raw, sm, ev = pts('train-raw'), pts('train-smooth'), pts('eval')
assert (len(raw), len(sm), len(ev)) == (50, 50, 5), (len(raw), len(sm), len(ev))
assert len(marker_titles('eval-points')) == 5
assert [x for x, _ in raw] == sorted(x for x, _ in raw), 'train x not increasing'
assert ev[0][0] == raw[9][0] and ev[-1][0] == raw[49][0], 'eval steps do not line up with train steps'
assert sum(abs(a[1] - b[1]) for a, b in zip(raw, sm)) > 1, 'the smoothed curve is the raw one'
assert float(byid('train-raw')[0].get('stroke-opacity')) < 0.5, 'the raw curve under the smoothed one is not faint'
assert byid('train-raw')[0].get('stroke') != byid('eval')[0].get('stroke'), 'eval has the train colour'
leg = ''.join(byid('legend')[0].itertext())
assert 'train loss (raw)' in leg and 'eval loss' in leg and 'smoothed' in leg and 'EMA 0.6' in leg, leg
assert ''.join(byid('title')[0].itertext()) == 'evals', 'default title is not the directory name'
assert 'resumes' not in ids(), 'a resume marker in a run that did not resume'
print(f'{len(raw)} train, {len(ev)} eval points; y ticks {ticks(\"y-ticks\")}')
"
fi

# 2. a resumed run: steps 6..12 written again with other values, eval at step 10 twice
mkdir -p "$W/repeat"
{
  for s in 1 2 3 4 5 6 7 8 9 10; do echo "{\"step\": $s, \"loss\": 5.$s}"; done
  echo '{"step": 10, "eval_loss": 9.5}'
  for s in 6 7 8 9 10 11 12; do echo "{\"step\": $s, \"loss\": 4.$s, \"resumed\": true}"; done
  echo '{"step": 10, "eval_loss": 4.25}'
  echo '{"step": 12, "eval_loss": 4.125}'
} > "$W/repeat/metrics.jsonl"
if run repeat "$W/repeat/" --title 'resumed <run> & "co"'; then
  [ "$msg" = "wrote $W/repeat/loss.svg (12 train points, 2 eval points)" ] || fail "repeat: printed '$msg'"
  check repeat "$W/repeat/loss.svg" "
assert len(pts('train-raw')) == 12 and len(pts('eval')) == 2
assert 'train-smooth' not in ids(), 'smoothed curve drawn for 12 points'
tt = marker_titles('train-points')
assert tt[5] == 'step 6: train loss 4.6' and tt[4] == 'step 5: train loss 5.5', tt
assert marker_titles('eval-points') == ['step 10: eval loss 4.25', 'step 12: eval loss 4.125']
assert ''.join(byid('title')[0].itertext()) == 'resumed <run> & \"co\"', 'title not escaped and read back'
leg = ''.join(byid('legend')[0].itertext())
assert 'train loss' in leg and 'eval loss' in leg and 'smoothed' not in leg and 'resumed' in leg, leg
res = [l.find(NS + 'title').text for l in byid('resumes')[0].iter(NS + 'line')]
assert res == ['repeat: resumed at step 6'], res
"
fi

# 3. non-finite values: strings, bare tokens, huge numbers, null; the last line of a step wins
#    even when it is NaN (step 4 is left out)
mkdir -p "$W/nonfinite"
cat > "$W/nonfinite/metrics.jsonl" <<'EOF'
{"step": 1, "loss": 2.5}
{"step": 2, "loss": "NaN"}
{"step": 3, "loss": 1e999, "grad_norm": NaN}
{"step": 4, "loss": 2.25}
{"step": 4, "loss": NaN}
{"step": 5, "loss": -Infinity}
{"step": 6, "loss": null, "note": "NaN inf"}
{"step": 7, "loss": "inf", "skipped": true}
{"step": 8, "loss": 2.0, "skipped": true}
{"step": 8, "eval_loss": "nan"}
{"step": 9, "loss": 1.75}
{"step": 9, "eval_loss": 1e400}
{"step": 9, "eval_loss": 1.875}

EOF
if run nonfinite "$W/nonfinite"; then
  [ "$msg" = "wrote $W/nonfinite/loss.svg (3 train points, 1 eval points)" ] || fail "nonfinite: printed '$msg'"
  check nonfinite "$W/nonfinite/loss.svg" "
assert len(pts('train-raw')) == 3 and len(pts('eval')) == 1
assert [t.split(':')[0] for t in marker_titles('train-points')] == ['step 1', 'step 8', 'step 9']
"
fi

# 4. only train lines (and lines that are neither), --out elsewhere
mkdir -p "$W/trainonly"
printf '%s\n' '{"event": "start", "world": 2}' '{"step": 0, "loss": 10.5}' '{"step": 100, "loss": 8}' \
  '{"step": 200, "loss": 7.25, "lr": 1e-4}' '{"step": 300, "loss": 7}' > "$W/trainonly/metrics.jsonl"
if run trainonly "$W/trainonly" --out "$W/chart.svg"; then
  [ "$msg" = "wrote $W/chart.svg (4 train points, 0 eval points)" ] || fail "trainonly: printed '$msg'"
  [ -e "$W/trainonly/loss.svg" ] && fail "trainonly: wrote loss.svg despite --out"
  check trainonly "$W/chart.svg" "
assert len(pts('train-raw')) == 4
assert 'eval' not in ids() and 'eval-points' not in ids()
leg = ''.join(byid('legend')[0].itertext())
assert 'train loss' in leg and 'eval' not in leg, leg
assert ticks('x-ticks')[0] == 0 and ticks('x-ticks')[-1] >= 300
"
fi

# 5. one train point: an axis around it
mkdir -p "$W/one"
echo '{"step": 1, "loss": 3}' > "$W/one/metrics.jsonl"
if run one "$W/one"; then check one "$W/one/loss.svg" "assert len(pts('train-raw')) == 1"; fi

# 6. several runs: x restarts its step count at 4 (no "resumed" key), y says "resumed" at 4
#    and has a NaN and a spike of 1e6, z starts at step 0; x and y are both named "run" (so
#    they are named by their paths), y is given with a trailing slash; the default file is
#    ./loss-compare.svg
mkdir -p "$W/multi/x/run" "$W/multi/y/run" "$W/multi/z"
{ for s in 1 2 3 4 5 6; do echo "{\"step\": $s, \"loss\": 3.$s}"; done
  for s in 4 5 6 7 8; do echo "{\"step\": $s, \"loss\": 2.$s}"; done
  echo '{"step": 8, "eval_loss": 2.5}'; } > "$W/multi/x/run/metrics.jsonl"
{ for s in 1 2 3; do echo "{\"step\": $s, \"loss\": 4.$s}"; done
  echo '{"step": 4, "loss": 1e6, "resumed": true}'
  echo '{"step": 5, "loss": NaN}'
  for s in 6 7 8 9 10; do echo "{\"step\": $s, \"loss\": 1.$s}"; done
  echo '{"step": 10, "eval_loss": 0.5}'; } > "$W/multi/y/run/metrics.jsonl"
for s in 0 5 10 15; do echo "{\"step\": $s, \"loss\": 2.0}"; done > "$W/multi/z/metrics.jsonl"
msg=$(cd "$W/multi" && "$SL" plot x/run y/run/ z 2>&1); rc=$?
want="wrote loss-compare.svg (x/run: 8 train points, 1 eval points, 1 resume; y/run: 9 train points, 1 eval points, 1 resume; z: 4 train points, 0 eval points, 0 resumes)"
if [ $rc -ne 0 ] || [ "$msg" != "$want" ]; then
  fail "multi: exit $rc, printed '$msg'"
else
  check multi "$W/multi/loss-compare.svg" "
runs = [pts(f'run{k}-train-raw') for k in (1, 2, 3)]
assert [len(r) for r in runs] == [8, 9, 4], [len(r) for r in runs]
assert len(pts('run1-eval')) == 1 and len(pts('run2-eval')) == 1 and 'run3-eval' not in ids()
cols = [byid(f'run{k}-train-raw')[0].get('stroke') for k in (1, 2, 3)]
assert len(set(cols)) == 3, cols
assert byid('run1-eval')[0].get('stroke') == cols[0] and byid('run1-eval')[0].get('stroke-dasharray'), 'eval not dashed in its run colour'
res = [l.find(NS + 'title').text for l in byid('resumes')[0].iter(NS + 'line')]
assert res == ['x/run: resumed at step 4', 'y/run: resumed at step 4'], res
assert [l.get('stroke') for l in byid('resumes')[0].iter(NS + 'line')] == cols[:2]
fr = byid('frame')[0]
x0, y0 = float(fr.get('x')), float(fr.get('y'))
x1, y1 = x0 + float(fr.get('width')), y0 + float(fr.get('height'))
for i in ids():
    if i.endswith(('-raw', 'eval')):
        for x, y in pts(i):
            assert x0 - 0.01 <= x <= x1 + 0.01 and y0 - 0.01 <= y <= y1 + 0.01, f'{i}: {x},{y} clipped'
assert min(y for _, y in pts('run2-train-raw')) >= y0 - 0.01, 'the spike is clipped'
xt = ticks('x-ticks')
assert xt[0] <= 0 and xt[-1] >= 15, xt
assert ''.join(byid('title')[0].itertext()) == 'x/run, y/run, z'
leg = ''.join(byid('legend')[0].itertext())
for name in ('x/run: train loss', 'y/run: train loss', 'z: train loss', 'x/run: eval loss', 'resumed'):
    assert name in leg, (name, leg)
print('3 runs, 2 resumes, nothing clipped')
"
fi

# expect NAME EXIT REGEX -- ARGS...: plot fails with that status, stderr matches REGEX, no SVG
expect() {
  local name="$1" want="$2" regex="$3"; shift 4
  local err rc
  err=$("$SL" plot "$@" 2>&1 >/dev/null); rc=$?
  if [ $rc -ne "$want" ]; then fail "$name: exit $rc, want $want: $(head -1 <<<"$err")"; return; fi
  if ! grep -Eq -- "$regex" <<<"$err"; then fail "$name: message does not match /$regex/: $(head -1 <<<"$err")"; return; fi
  if [ $# -gt 0 ] && [ -e "$1/loss.svg" ]; then fail "$name: $1/loss.svg was written"; return; fi
  pass "$name (exit $rc): $(grep -E -- "$regex" <<<"$err" | head -1)"
}

expect missing-dir 3 "nope/metrics.jsonl.*No such file" -- "$W/nope"
mkdir -p "$W/empty"; : > "$W/empty/metrics.jsonl"
expect empty 3 "empty/metrics.jsonl: no JSON lines" -- "$W/empty"
mkdir -p "$W/blank"; printf '\n  \n' > "$W/blank/metrics.jsonl"
expect blank 3 "blank/metrics.jsonl: no JSON lines" -- "$W/blank"
mkdir -p "$W/malformed"
printf '%s\n' '{"step": 1, "loss": 2.5}' '' '{"step": 2, "loss": }' > "$W/malformed/metrics.jsonl"
expect malformed 3 "^shardlora plot: $W/malformed/metrics.jsonl:3: invalid JSON" -- "$W/malformed"
mkdir -p "$W/notobject"; printf '%s\n' '{"step": 1, "loss": 2.5}' '[1, 2]' > "$W/notobject/metrics.jsonl"
expect not-object 3 "notobject/metrics.jsonl:2: expected a JSON object" -- "$W/notobject"
mkdir -p "$W/nostep"; printf '%s\n' '{"step": 1, "loss": 2.5}' '{"loss": 2}' > "$W/nostep/metrics.jsonl"
expect no-step 3 "nostep/metrics.jsonl:2: \"step\"" -- "$W/nostep"
mkdir -p "$W/badloss"; printf '%s\n' '{"step": 1, "loss": "low"}' > "$W/badloss/metrics.jsonl"
expect bad-loss 3 "badloss/metrics.jsonl:1: \"loss\" is the string" -- "$W/badloss"
mkdir -p "$W/evalonly"
printf '%s\n' '{"step": 10, "eval_loss": 2.4}' '{"step": 20, "eval_loss": 2.2}' > "$W/evalonly/metrics.jsonl"
expect no-train 3 "evalonly/metrics.jsonl: no training lines" -- "$W/evalonly"
mkdir -p "$W/allnan"; printf '%s\n' '{"step": 1, "loss": "NaN"}' > "$W/allnan/metrics.jsonl"
expect all-nan 3 "allnan/metrics.jsonl: every training loss is NaN" -- "$W/allnan"
expect no-dir-arg 2 "OUT directory is required" --
expect bad-flag 2 "unknown option --colour" -- "$W/evalonly" --colour red
expect multi-bad 3 "allnan/metrics.jsonl: every training loss" -- "$W/trainonly" "$W/allnan" --out "$W/multi-bad.svg"
[ -e "$W/multi-bad.svg" ] && fail "multi-bad: the SVG was written"
expect unwritable 4 "cannot|No such file" -- "$W/trainonly" --out "$W/no/such/dir/x.svg"

help=$("$SL" plot --help); rc=$?
if [ $rc -eq 0 ] && grep -q -- "--out FILE" <<<"$help" && grep -q -- "--title TEXT" <<<"$help"; then
  pass "help"
else
  fail "help (exit $rc): $help"
fi
"$SL" --help | grep -q "^  plot " && pass "listed in shardlora --help" || fail "plot not listed in shardlora --help"

echo "plot: $passes passed, $fails failed"
[ $fails -eq 0 ]
