"""Per-rank summaries of pipeline runs (tests/mpi/pp_layouts.sh summary), against figures
computed here from the model's config.json and the run's settings:

- stages: each stage's layers (summary "pipeline.layers") are contiguous and cover [0, L);
  --pp-layers runs have exactly the split asked for; balanced runs have the smallest possible
  largest stage cost under the cost model of model/stage.h (layer: 4 x the seven projections'
  parameters + 6 (H*D)(T+1); lm_head 4 V C on the last stage), found here by trying every split;
- stage-boundary bytes per rank (comm_bytes.pp) = steps x micro-batches x 4 x (its part of
  N*C over tp) x (1 if it has a next stage + 1 if it has a previous one): each TP rank sends
  its part, the receiving stage all-gathers;
- frozen bytes: the stages of TP rank 0 together hold the pp = 1 model plus, per extra stage,
  the RoPE table, and with tied embeddings the last stage's copy of the embedding;
- the pipeline object: micro_batches_per_step m = G / (B dp), in_flight = min(P - stage, m),
  expected_bubble = (P - 1) / (m + P - 1), 0 <= idle_fraction <= 1, busy_s > 0.

Usage: pp_check.py --model DIR --seq-len T --micro-batch B --global-batch G --steps S
           REF_RUN RUN:TP:PP:DP[:LAYERS] ...      (REF_RUN: pp = 1, tp = 1)
"""

import argparse
import itertools
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mpi_check import FAILED, fail, ok, read_summaries  # noqa: E402  (the layouts test's helpers)


def summaries(run, world):
    """The run's per-rank summaries (mpi_check.read_summaries checks their keys), or None."""
    out = read_summaries(run, world)
    return out if len(out) == world else None


def part(n, parts, r):
    """grid_part: part r of n elements in nearly equal pieces (offset, length)."""
    base, extra = divmod(n, parts)
    return r * base + min(r, extra), base + (1 if r < extra else 0)


def layer_cost(c, T):
    C, F = c["hidden_size"], c["intermediate_size"]
    H, KV = c["num_attention_heads"], c.get("num_key_value_heads", c["num_attention_heads"])
    D = c.get("head_dim", C // H)
    return 4.0 * (C * H * D * 2 + C * KV * D * 2 + 3 * C * F) + 6.0 * H * D * (T + 1)


def best_max_cost(L, P, lc, last):
    """The smallest largest stage cost over every contiguous split of L layers into P."""
    best = None
    for cuts in itertools.combinations(range(1, L), P - 1):
        b = (0,) + cuts + (L,)
        worst = max((b[s + 1] - b[s]) * lc + (last if s == P - 1 else 0) for s in range(P))
        best = worst if best is None else min(best, worst)
    return best


def check_run(a, cfg, ref, spec):
    f = spec.split(":")
    run, tp, pp, dp = f[0], int(f[1]), int(f[2]), int(f[3])
    asked = [int(x) for x in f[4].split(",")] if len(f) > 4 else None
    tag = f"{os.path.basename(run)} (tp {tp}, pp {pp}, dp {dp})"
    S = summaries(run, tp * pp * dp)
    if S is None:
        return
    L, C, V = cfg["num_hidden_layers"], cfg["hidden_size"], cfg["vocab_size"]
    m = a.global_batch // (a.micro_batch * dp)
    N = a.micro_batch * a.seq_len
    stages = {}
    for s in S:
        pl = s.get("pipeline")
        if s.get("pp") != pp or pl is None:
            fail(f"{tag} rank {s['rank']}: pp {s.get('pp')} / no pipeline object")
            return
        stages.setdefault(s["pp_rank"], tuple(pl["layers"]))
        if tuple(pl["layers"]) != stages[s["pp_rank"]]:
            fail(f"{tag} rank {s['rank']}: layers {pl['layers']} differ within stage {s['pp_rank']}")
        # stage-boundary bytes
        st = s["pp_rank"]
        _, ln = part(N * C, tp, s["tp_rank"])
        want = a.steps * m * ln * 4 * ((st < pp - 1) + (st > 0))
        got = s["comm_bytes"]["pp"]
        line = f"{tag} rank {s['rank']} (stage {st}): pp bytes {got}, expected {want}"
        (ok if got == want else fail)(line)
        # the schedule's figures
        want_fl = min(pp - st, m)
        bub = (pp - 1) / (m + pp - 1)
        good = (pl["micro_batches_per_step"] == m and pl["in_flight"] == want_fl
                and abs(pl["expected_bubble"] - bub) < 1e-12 and 0 <= pl["idle_fraction"] <= 1
                and pl["busy_s"] > 0)
        line = (f"{tag} rank {s['rank']}: m {pl['micro_batches_per_step']} (want {m}), in flight "
                f"{pl['in_flight']} (want {want_fl}), expected bubble {pl['expected_bubble']:.4f} "
                f"(want {bub:.4f}), measured idle {pl['idle_fraction']:.4f}, busy {pl['busy_s']:.4f} s")
        (ok if good else fail)(line)
    split = [stages.get(i) for i in range(pp)]
    if None in split or split[0][0] != 0 or split[-1][1] != L or any(
            split[i][1] != split[i + 1][0] or split[i][0] >= split[i][1] for i in range(pp - 1)):
        fail(f"{tag}: stages {split} do not cover layers [0, {L}) contiguously")
        return
    sizes = [hi - lo for lo, hi in split]
    if asked is not None:
        (ok if sizes == asked else fail)(f"{tag}: stage sizes {sizes}, --pp-layers asked {asked}")
    else:
        lc, last = layer_cost(cfg, a.seq_len), 4.0 * V * C
        have = max(n * lc + (last if i == pp - 1 else 0) for i, n in enumerate(sizes))
        best = best_max_cost(L, pp, lc, last)
        (ok if abs(have - best) <= 1e-9 * best else fail)(
            f"{tag}: stage sizes {sizes}: largest modelled stage cost {have:.6g}, best possible {best:.6g}")
    # frozen bytes of TP rank 0's stages vs the pp = 1 model (tp = 1 only)
    if tp == 1:
        H = cfg["num_attention_heads"]
        D = cfg.get("head_dim", C // H)
        f1 = ref[0]["frozen_bytes"]
        tot = sum(s["frozen_bytes"] for s in S if s["tp_rank"] == 0 and s["dp_rank"] == 0)
        extra = (pp - 1) * (D // 2) * 4 + (V * C * 4 if cfg.get("tie_word_embeddings") else 0)
        line = (f"{tag}: frozen bytes over the stages {tot} = pp=1's {f1} + {extra} (RoPE tables"
                f"{', the tied embedding copy' if cfg.get('tie_word_embeddings') else ''}); per stage "
                + ", ".join(f"{s['frozen_bytes'] / f1:.3f}" for s in S if s["tp_rank"] == 0 and s["dp_rank"] == 0)
                + " of pp=1's")
        (ok if tot == f1 + extra else fail)(line)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--seq-len", type=int, required=True)
    ap.add_argument("--micro-batch", type=int, required=True)
    ap.add_argument("--global-batch", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("ref")
    ap.add_argument("runs", nargs="+")
    a = ap.parse_args()
    cfg = json.load(open(os.path.join(a.model, "config.json")))
    if cfg.get("torch_dtype") not in (None, "float32"):
        fail(f"{a.model}: this check assumes an F32 model, config says {cfg.get('torch_dtype')}")
    ref = summaries(a.ref, 1)
    if ref:
        for spec in a.runs:
            check_run(a, cfg, ref, spec)
    print(f"pp_check: {'FAILED ' + str(len(FAILED)) + ' check(s)' if FAILED else 'OK'}")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
