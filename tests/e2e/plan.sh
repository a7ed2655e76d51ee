#!/usr/bin/env bash
# shardlora plan (issue 19) against what train measures: on made models (3 layers, hidden 128,
# 4 heads, 2 kv heads; and a Qwen2-shaped one with biases and tied embeddings, stored BF16),
# the frozen bytes per rank plan prints equal summary-rank0.json's frozen_bytes of a 1-step
# train, exactly, at tp=1 and tp=2 for fp32, bf16, int8 and nf4 (and tp=4, kv heads
# replicated); the bytes per step it gives for the TP all-reduces and the gradient sync equal
# comm_bytes of runs at tp=2 (micro-batches 4, also with --recompute layer), dp=2 and tp=4
# (payloads; at n=2 the ring's 2(n-1)/n is 1, so what a rank sends is the same number); a
# layout nf4 cannot store is refused by both. A Llama-2-7B-shaped config.json with no weights
# at --nodes 2 --mem-per-node 24: nf4 fits at tp=1 per node, fp32 does not, its frozen bytes
# are the parameter count (counted here from the config) x 4, the TP-across-nodes layout is
# flagged, the order is fitting first and fewest inter-node bytes. Pipeline stages: pp 2 at
# tp 1 and tp 2 x pp 3 runs against plan's rows per stage (layers, frozen, tp, pp, gradient
# bytes) and the boundary formula 2 x m x N x C x 4; the 7B shape in fp32 fits 2 nodes of 24
# GiB only with stages (their layers and frozen bytes computed here), tp 2 in a node x pp 2
# across flagged, far fewer bytes between nodes than tp 4 across. Bad input: one line, exit 2
# or 3, nothing on stdout.
# usage: plan.sh SHARDLORA_BINARY WORK_DIR
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
set -uo pipefail
SL="$(readlink -f "$1")"; W="$2/plan"
PY=/usr/bin/python3
rm -rf "$W"; mkdir -p "$W"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }

"$SL" make-model --out "$W/m" --layers 3 --hidden 128 --ffn 256 --heads 4 --kv-heads 2 \
  --vocab 259 --seed 3 > /dev/null 2>&1 || { echo "FAIL: make-model"; exit 1; }
"$SL" make-model --out "$W/q" --arch qwen2 --tie --dtype BF16 --layers 2 --hidden 128 --ffn 256 \
  --heads 4 --kv-heads 2 --vocab 259 --seed 4 > /dev/null 2>&1 || { echo "FAIL: make-model qwen2"; exit 1; }
"$PY" - /usr/share/common-licenses/GPL-3 > "$W/d.jsonl" <<'PY'
import json, sys
b = open(sys.argv[1], 'rb').read()[:64 * 40]
for i in range(0, len(b), 64):
    print(json.dumps({"input_ids": list(b[i:i + 64])}))
PY
SHAPE=(--seq-len 64 --micro-batch 1 --global-batch 4 --threads 1)

# train NAME NP MODEL ARGS...: a 1-step run into $W/NAME
train() {
  local name="$1" np="$2" model="$3"; shift 3
  local pre=()
  [ "$np" -gt 1 ] && pre=(mpiexec -n "$np")
  timeout 120 "${pre[@]}" "$SL" train --model "$model" --data "$W/d.jsonl" --out "$W/$name" \
    --steps 1 --peak-gflops 5 "${SHAPE[@]}" "$@" > "$W/$name.log" 2>&1 ||
    { tail -5 "$W/$name.log"; fail "$name: the run failed"; return 1; }
}

# plan NAME K MODEL ARGS...: plan --json for 1 node of K ranks into $W/NAME.plan.json
plan() {
  local name="$1" k="$2" model="$3"; shift 3
  "$SL" plan --model "$model" --nodes 1 --ranks-per-node "$k" --mem-per-node 64 "${SHAPE[@]}" \
    --json "$@" > "$W/$name.plan.json" 2> "$W/$name.plan.err" ||
    { cat "$W/$name.plan.err"; fail "$name: plan failed"; return 1; }
}

# check RUN PLAN TP WHAT...: run RUN's summary-rank0.json against plan PLAN's tp=TP layout
# (WHAT: frozen, tp, grad); prints each pair
check() {
  "$PY" - "$W" "$@" <<'PY' || fail "$1: plan and train differ"
import json, sys
w, name, pname, tp, what = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:]
s = json.load(open(f"{w}/{name}/summary-rank0.json"))
lay = next(l for l in json.load(open(f"{w}/{pname}.plan.json"))["layouts"]
           if l["tp"] == tp and l["pp"] == 1)
cb, steps, bad = s["comm_bytes"], s["steps"], []
def same(label, planned, measured, sent=None):
    extra = "" if sent is None else f" (sent {sent})"
    line = f"{name}: {label}: plan {planned}{extra}, train {measured}"
    print(("ok: " if planned == measured and sent in (None, measured) else "FAIL: ") + line)
    if planned != measured or sent not in (None, measured): bad.append(label)
for k in what:
    if k == "frozen":
        same("frozen bytes per rank", lay["frozen_bytes"], s["frozen_bytes"])
    elif k == "tp":
        same("TP bytes per step", lay["tp_bytes"]["payload"], cb["tp"] // steps,
             lay["tp_bytes"]["sent"] if tp == 2 else None)
    elif k == "grad":
        n = s["world"] if s["tp"] > 1 else s["dp"]
        same("gradient bytes per step", lay["grad_bytes"]["payload"],
             (cb["dp"] + cb["world"] + cb["kv"]) // steps,
             lay["grad_bytes"]["sent"] if n == 2 else None)
sys.exit(1 if bad else 0)
PY
}

# frozen bytes at tp=1 and tp=2 per --base-dtype; the tp=2 runs give the TP and gradient bytes
for dt in fp32 bf16 int8 nf4; do
  plan "m-$dt" 2 "$W/m" --base-dtype "$dt" || continue
  train "m-$dt-tp1" 1 "$W/m" --base-dtype "$dt" && check "m-$dt-tp1" "m-$dt" 1 frozen
  train "m-$dt-tp2" 2 "$W/m" --base-dtype "$dt" --tp 2 && check "m-$dt-tp2" "m-$dt" 2 frozen tp grad
done
# dp=2: the whole gradient over dp_comm
plan dp2 2 "$W/m" --base-dtype fp32 && train dp2 2 "$W/m" --base-dtype fp32 && check dp2 dp2 1 frozen grad
# recompute layer: one more o_proj all-reduce per layer but the last
plan rc 2 "$W/m" --base-dtype bf16 --recompute layer &&
  train rc 2 "$W/m" --base-dtype bf16 --tp 2 --recompute layer && check rc rc 2 frozen tp grad
# tp=4 > 2 kv heads: k/v replicated (frozen), the kv-head group's gradient sync
plan tp4 4 "$W/m" --base-dtype int8 && train tp4 4 "$W/m" --base-dtype int8 --tp 4 &&
  check tp4 tp4 4 frozen tp grad
# Qwen2 shape: q/k/v biases, tied embeddings, --base-dtype file on BF16 weights
plan q 2 "$W/q" && train q-tp2 2 "$W/q" --tp 2 && check q-tp2 q 2 frozen tp grad
# nf4 at tp=4: o_proj's shard has 32 columns; plan says so, train refuses
plan nf4tp4 4 "$W/m" --base-dtype nf4 &&
  "$PY" - "$W/nf4tp4.plan.json" <<'PY' || fail "nf4 at tp=4: plan does not refuse it"
import json, sys
lay = next(l for l in json.load(open(sys.argv[1]))["layouts"] if l["tp"] == 4 and l["pp"] == 1)
assert not lay["fits"] and "multiple of 64" in lay.get("refused", ""), lay
print(f"ok: nf4 at tp=4 not possible: {lay['refused']}")
PY
timeout 60 mpiexec -n 4 "$SL" train --model "$W/m" --data "$W/d.jsonl" --out "$W/nf4tp4" --tp 4 \
  --base-dtype nf4 --steps 1 "${SHAPE[@]}" > "$W/nf4tp4.log" 2>&1
if [ $? -ne 0 ] && grep -q "cannot be stored as --base-dtype nf4" "$W/nf4tp4.log"; then
  ok "train refuses nf4 at tp=4 too"
else
  fail "train at tp=4 with nf4: not refused as plan says (see $W/nf4tp4.log)"
fi

# A Llama-2-7B-shaped config.json and nothing else
mkdir -p "$W/7b"
cat > "$W/7b/config.json" <<'EOF'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
 "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
 "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096,
 "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "tie_word_embeddings": false,
 "torch_dtype": "float16"}
EOF
for dt in nf4 fp32; do
  "$SL" plan --model "$W/7b" --nodes 2 --mem-per-node 24 --base-dtype "$dt" --json \
    > "$W/7b-$dt.json" 2> "$W/7b-$dt.err" || { cat "$W/7b-$dt.err"; fail "7b $dt: plan failed"; }
done
"$SL" plan --model "$W/7b" --nodes 2 --mem-per-node 24 --base-dtype nf4 > "$W/7b-nf4.txt" 2>&1 ||
  fail "7b: plan (table) failed"
"$PY" - "$W" <<'PY' || fail "7b-shaped plan"
import json, re, sys
w = sys.argv[1]
c = json.load(open(f"{w}/7b/config.json"))
C, F, L, V = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
mats = L * (4 * C * C + 3 * C * F) + 2 * V * C           # q k v o, gate up down; embed, lm_head
vecs = (2 * L + 1) * C + (C // c["num_attention_heads"]) // 2  # norms, the RoPE table
nf4, fp32 = (json.load(open(f"{w}/7b-{d}.json")) for d in ("nf4", "fp32"))
def lay(p, tp): return next(l for l in p["layouts"] if l["tp"] == tp and l["pp"] == 1)
bad = []
def want(cond, line):
    print(("ok: " if cond else "FAIL: ") + line)
    if not cond: bad.append(line)
want(lay(fp32, 1)["frozen_bytes"] == 4 * (mats + vecs),
     f"7b fp32 tp=1 frozen {lay(fp32, 1)['frozen_bytes']} = 4 x {mats + vecs} parameters")
want(lay(nf4, 1)["frozen_bytes"] == mats // 2 + mats // 64 * 4 + 4 * vecs,
     f"7b nf4 tp=1 frozen {lay(nf4, 1)['frozen_bytes']} = 4.5 bits x {mats} + F32 vectors")
want(lay(nf4, 1)["fits"], f"7b nf4 at tp=1 per node fits 24 GiB "
     f"(needs {lay(nf4, 1)['total_bytes'] / 2**30:.2f} GiB)")
want(not lay(fp32, 1)["fits"], f"7b fp32 at tp=1 per node does not fit 24 GiB "
     f"(needs {lay(fp32, 1)['total_bytes'] / 2**30:.2f} GiB)")
want(lay(nf4, 2)["tp_spans_nodes"] and not lay(nf4, 1)["tp_spans_nodes"],
     "tp=2 on 2 nodes of 1 rank is flagged as spanning nodes, tp=1 is not")
want(lay(nf4, 1)["tp_bytes"]["payload"] == 0 and lay(nf4, 1)["grad_bytes"]["link"] == "between nodes",
     "tp=1 x dp=2: no TP bytes; the gradient crosses nodes")
for p in (nf4, fp32):
    ls = p["layouts"]
    key = [(not l["fits"], l["inter_node_bytes"]) for l in ls]
    want(key == sorted(key), f"{p['base_dtype']}: layouts sorted fitting first, then inter-node bytes: {key}")
t = open(f"{w}/7b-nf4.txt").read()
want(re.search(r"^tp 1 x pp 1 x dp 2 +yes ", t, re.M) and re.search(r"^tp 2 x pp 1 x dp 1\* ", t, re.M)
     and "spans nodes" in t, "the table: tp 1 x pp 1 x dp 2 fits, tp 2 x pp 1 x dp 1 marked *")
sys.exit(1 if bad else 0)
PY

# Pipeline stages (--pp): tp 1 x pp 2 (2 ranks) and tp 2 x pp 3 (6 ranks: a middle stage),
# 4 micro-batches a step (global batch 4, dp 1). Every rank's summary against plan's row for
# its stage: the layers, the frozen bytes (TP rank 0, exactly), comm_bytes tp, pp and the
# gradient sync; and the stage boundary against numbers computed here from the shapes alone:
# a rank sends m x its part of N x C (grid_part: the first parts take the remainder) x 4 B to
# each neighbouring stage, one boundary carries 2 x m x N x C x 4 B per step, all the ranks'
# pp bytes are (P - 1) boundaries.
plan pp2 2 "$W/m" --base-dtype fp32 && train pp2 2 "$W/m" --base-dtype fp32 --pp 2 &&
  plan pp3 6 "$W/m" --base-dtype bf16 && train pp3 6 "$W/m" --base-dtype bf16 --tp 2 --pp 3 &&
  "$PY" - "$W" <<'PY' || fail "pp: plan and train differ"
import json, sys
w = sys.argv[1]
C, T, B, G = 128, 64, 1, 4                     # make-model --hidden 128; SHAPE
bad = []
def want(cond, line):
    print(("ok: " if cond else "FAIL: ") + line)
    if not cond: bad.append(line)
for run, tp, P in (("pp2", 1, 2), ("pp3", 2, 3)):
    lay = next(l for l in json.load(open(f"{w}/{run}.plan.json"))["layouts"]
               if l["tp"] == tp and l["pp"] == P)
    m, N = G // (B * lay["dp"]), B * T
    want(lay["micro_batches"] == m and lay["pp_bytes"]["boundary"] == 2 * m * N * C * 4,
         f"{run}: {m} micro-batches, boundary {lay['pp_bytes']['boundary']} = 2 x {m} x {N} x {C} x 4")
    want(abs(lay["expected_bubble"] - (P - 1) / (m + P - 1)) < 1e-12,
         f"{run}: expected 1F1B bubble {lay['expected_bubble']:.4f} = (P - 1) / (m + P - 1)")
    total_pp = 0
    for r in range(tp * P):
        s = json.load(open(f"{w}/{run}/summary-rank{r}.json"))
        st, k, cb = s["pp_rank"], s["tp_rank"], s["comm_bytes"]
        row, steps = lay["stages"][st], s["steps"]
        part = N * C // tp + (k < N * C % tp)
        neighbours = (st > 0) + (st < P - 1)
        total_pp += cb["pp"] // steps
        want(cb["pp"] // steps == m * part * 4 * neighbours,
             f"{run} rank {r} (stage {st}, tp rank {k}): pp bytes {cb['pp'] // steps} = "
             f"{m} x {part} x 4 x {neighbours} neighbour(s)")
        want(s["pipeline"]["layers"] == row["layers"],
             f"{run} rank {r}: layers {s['pipeline']['layers']}, plan {row['layers']}")
        if k != 0:
            continue
        grad = (cb["dp"] + cb["world"] + cb["kv"]) // steps
        got = (s["frozen_bytes"], cb["tp"] // steps, grad, cb["pp"] // steps)
        planned = (row["frozen_bytes"], row["tp_bytes"]["payload"], row["grad_bytes"]["payload"],
                   row["pp_bytes"]["payload"])
        want(got == planned, f"{run} stage {st}: frozen, tp, gradient, pp bytes: train {got}, plan {planned}")
    want(total_pp == (P - 1) * lay["pp_bytes"]["boundary"],
         f"{run}: all ranks' pp bytes {total_pp} = {P - 1} boundaries")
sys.exit(1 if bad else 0)
PY

# The 7B shape in fp32 does not fit one node of 24 GiB; pipeline stages across the 2 nodes do.
# The stages' layers (the split that minimises the largest stage's modelled cost, found here by
# trying every split), their frozen bytes (parameters counted from the config x 4), the
# placement flags (1 and 2 ranks per node), the boundary bytes, and that TP across the nodes
# sends far more between nodes than tp 2 in a node x pp 2 across.
for k in 1 2; do
  "$SL" plan --model "$W/7b" --nodes 2 --ranks-per-node $k --mem-per-node 24 --base-dtype fp32 \
    --seq-len 512 --global-batch 8 --json > "$W/7b-pp-k$k.json" 2> "$W/7b-pp-k$k.err" ||
    { cat "$W/7b-pp-k$k.err"; fail "7b pp (K $k): plan failed"; }
done
"$SL" plan --model "$W/7b" --nodes 2 --ranks-per-node 2 --mem-per-node 24 --base-dtype fp32 \
  --seq-len 512 --global-batch 8 > "$W/7b-pp.txt" 2>&1 || fail "7b pp: plan (table) failed"
"$PY" - "$W" <<'PY' || fail "7b-shaped plan with pipeline stages"
import itertools, json, re, sys
w = sys.argv[1]
c = json.load(open(f"{w}/7b/config.json"))
C, F, L, V = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
H, KV = c["num_attention_heads"], c["num_key_value_heads"]
D, T, G = C // H, 512, 8
bad = []
def want(cond, line):
    print(("ok: " if cond else "FAIL: ") + line)
    if not cond: bad.append(line)
def split(P):
    # modelled FLOPs per token: 4 x a layer's projection parameters + 6 x H*D x (T + 1) per
    # layer, 4 x V x C for lm_head on the last stage; the least largest stage, ties to the
    # split whose earlier stages are fullest
    layer = 4 * (2 * C * H * D + 2 * C * KV * D + 3 * C * F) + 6 * H * D * (T + 1)
    best = None
    for cuts in itertools.combinations(range(1, L), P - 1):
        b = (0,) + cuts + (L,)
        cost = max((b[s + 1] - b[s]) * layer + (4 * V * C if s == P - 1 else 0) for s in range(P))
        key = (cost, [-x for x in b])
        if best is None or key < best[0]:
            best = (key, b)
    return best[1]
def frozen_fp32(l0, l1):
    n = l1 - l0
    mats = n * (4 * C * C + 3 * C * F) + (V * C if l0 == 0 else 0) + (V * C if l1 == L else 0)
    return 4 * (mats + (2 * n + (l1 == L)) * C + D // 2)
def lay(p, tp, P): return next(l for l in p["layouts"] if l["tp"] == tp and l["pp"] == P)
k1, k2 = (json.load(open(f"{w}/7b-pp-k{k}.json")) for k in (1, 2))
want(not lay(k1, 1, 1)["fits"] and lay(k1, 1, 2)["fits"],
     f"K 1: tp 1 x pp 1 needs {lay(k1, 1, 1)['total_bytes'] / 2**30:.1f} GiB > 24, tp 1 x pp 2 "
     f"{lay(k1, 1, 2)['total_bytes'] / 2**30:.1f} GiB fits")
for P, row in ((2, lay(k1, 1, 2)), (4, lay(k2, 1, 4))):
    b, got = split(P), row["stages"]
    want([s["layers"] for s in got] == [[b[s], b[s + 1]] for s in range(P)],
         f"pp {P}: stages {[s['layers'] for s in got]} = the best split {list(b)}")
    want([s["frozen_bytes"] for s in got] == [frozen_fp32(b[s], b[s + 1]) for s in range(P)],
         f"pp {P}: frozen bytes per stage {[s['frozen_bytes'] for s in got]} = 4 x parameters")
    want(max(s["frozen_bytes"] for s in got) == row["frozen_bytes"],
         f"pp {P}: the layout's frozen bytes are its largest stage's")
a, t4 = lay(k2, 2, 2), lay(k2, 4, 1)
m, N = G // a["dp"], T
want(not lay(k2, 2, 1)["fits"] and a["fits"],
     f"K 2: tp 2 x pp 1 x dp 2 does not fit 12 GiB per rank, tp 2 x pp 2 does "
     f"({a['total_bytes'] / 2**30:.2f} GiB)")
want(a["tp_in_node_pp_across_nodes"] and not a["tp_spans_nodes"] and a["pp_spans_nodes"]
     and a["placement"] == "TP in a node, PP across nodes", f"K 2: tp 2 x pp 2: {a['placement']}")
want(t4["tp_spans_nodes"] and not t4["tp_in_node_pp_across_nodes"], "K 2: tp 4 spans the nodes")
want(lay(k2, 1, 4)["tp_in_node_pp_across_nodes"] and lay(k2, 1, 4)["placement"] == "PP across nodes",
     "K 2: tp 1 x pp 4: PP across nodes (flagged: no TP group leaves a node)")
want(not lay(k2, 2, 1)["tp_in_node_pp_across_nodes"], "K 2: tp 2 x pp 1 x dp 2 is not flagged (no stages)")
want(a["pp_bytes"]["boundary"] == 2 * m * N * C * 4,
     f"K 2: boundary {a['pp_bytes']['boundary']} = 2 x {m} x {N} x {C} x 4")
# TP rank 0 of stage 0 sends its half of each micro-batch's [N, C] to the other node; its
# gradient sync stays in the stage's node
want(a["inter_node_bytes"] == m * N * C // 2 * 4,
     f"K 2: tp 2 x pp 2 sends {a['inter_node_bytes']} B per rank between nodes = {m} x {N} x {C} / 2 x 4")
want(t4["inter_node_bytes"] > 20 * a["inter_node_bytes"],
     f"K 2: tp 4 across the nodes sends {t4['inter_node_bytes']} B per rank between nodes, "
     f"{t4['inter_node_bytes'] / a['inter_node_bytes']:.0f}x tp 2 x pp 2's")
t = open(f"{w}/7b-pp.txt").read()
want(re.search(r"^tp 2 x pp 2 x dp 1 +yes .*TP in a node, PP across nodes", t, re.M),
     "the table: tp 2 x pp 2 x dp 1 fits, TP in a node, PP across nodes")
sys.exit(1 if bad else 0)
PY

# bad input: one line on stderr, nothing on stdout, the exit status
bad() {
  local name="$1" code="$2" pattern="$3"; shift 3
  "$SL" plan "$@" > "$W/bad-$name.out" 2> "$W/bad-$name.err"
  local rc=$? lines
  lines=$(wc -l < "$W/bad-$name.err")
  if [ "$rc" -eq "$code" ] && [ "$lines" -eq 1 ] && [ ! -s "$W/bad-$name.out" ] &&
     grep -qE -- "$pattern" "$W/bad-$name.err"; then
    ok "bad $name: exit $rc, $(cat "$W/bad-$name.err")"
  else
    fail "bad $name: exit $rc (want $code), $lines lines: $(head -3 "$W/bad-$name.err")"
  fi
}
mkdir -p "$W/empty"
bad no-config 3 "empty/config.json" --model "$W/empty" --nodes 2 --mem-per-node 24
bad nodes0 2 "^shardlora plan: --nodes 0" --model "$W/7b" --nodes 0 --mem-per-node 24
bad dtype 2 "--base-dtype 'fp8'" --model "$W/7b" --nodes 2 --mem-per-node 24 --base-dtype fp8
bad mem 2 "--mem-per-node" --model "$W/7b" --nodes 2 --mem-per-node -1
bad no-nodes 2 "nodes" --model "$W/7b" --mem-per-node 24
bad tp-pp 2 "--tp 2 x --pp 2 does not divide the 2 ranks" --model "$W/7b" --nodes 2 --mem-per-node 24 --tp 2 --pp 2
# --tp / --pp keep only that layout (what shardlora-run asks for its default pp)
n=$("$SL" plan --model "$W/7b" --nodes 2 --ranks-per-node 2 --mem-per-node 24 --tp 2 --pp 2 --json |
  grep -c '^  {')
[ "$n" = 1 ] && ok "plan --tp 2 --pp 2: one layout" || fail "plan --tp 2 --pp 2: $n layouts, expected 1"

[ "$fails" -eq 0 ] && echo "plan: all checks passed" || echo "plan: $fails check(s) failed"
[ "$fails" -eq 0 ]
