#!/usr/bin/env python3
"""Bytes per step across the link between two simulated hosts, against the adapter gradient
that crosses dp and the TP activations that stay inside a host (DESIGN.md section 4: replicas
exchange only adapter gradients). Prints one block of figures; exits 1 when a bound fails.

usage: figures.py --short STEPS:RX:TX:OUT --long STEPS:RX:TX:OUT --host-ranks 0,1 --tokens T
                  --layers L --hidden C [--max-grad-factor 4] [--max-tp-fraction 0.2]
RX/TX: bytes the veth of host A received/sent during that run; OUT: the run's output
directory (summary-rank{R}.json)."""
import argparse
import json
import sys


def run(spec):
    steps, rx, tx, out = spec.split(":", 3)
    return int(steps), int(rx), int(tx), out


def summary(out, rank):
    with open(f"{out}/summary-rank{rank}.json") as f:
        return json.load(f)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--short", type=run, required=True)
    p.add_argument("--long", type=run, required=True)
    p.add_argument("--host-ranks", required=True, help="the world ranks on host A, comma list")
    p.add_argument("--tokens", type=int, required=True, help="T: tokens per rank per step")
    p.add_argument("--layers", type=int, required=True, help="L of the model")
    p.add_argument("--hidden", type=int, required=True, help="C of the model")
    p.add_argument("--max-grad-factor", type=float, default=4.0)
    p.add_argument("--max-tp-fraction", type=float, default=0.2)
    a = p.parse_args()

    (s1, rx1, tx1, _), (s2, rx2, tx2, out) = a.short, a.long
    n = s2 - s1
    link_rx, link_tx = (rx2 - rx1) / n, (tx2 - tx1) / n
    link = link_rx + link_tx

    ranks = [int(r) for r in a.host_ranks.split(",")]
    sums = [summary(out, r) for r in ranks]
    s0 = sums[0]
    L, C = a.layers, a.hidden

    # gradient bytes that cross dp: every sync class spans the replicas (dp_comm, world, and
    # the kv-head group); per step, summed over the ranks of host A
    grad_host = 0.0
    lines = []
    for s in sums:
        cb, rb = s["comm_bytes"], s["adapter_region_bytes"]
        g = (cb["dp"] + cb["world"] + cb["kv"]) / s["steps"]
        grad_host += g
        lines.append(f"    rank {s['rank']} (tp_rank {s['tp_rank']} dp_rank {s['dp_rank']}): adapter_bytes "
                     f"{s['adapter_bytes']} = regions dp {rb['dp']} + world {rb['world']} + kv {rb['kv']}; "
                     f"comm_bytes dp+world+kv / steps = {g:.0f}")
    tp_meas = s0["comm_bytes"]["tp"] / s0["steps"]
    tp_formula = 2 * 2 * a.tokens * C * 4 * L
    r_grad = link / grad_host
    r_tp = link / tp_meas

    print("== multinode figures: 2 hosts (network namespaces + veth, TCP) x 2 ranks, "
          f"tp {s0['tp']} inside a host (shared memory), dp {s0['dp']} across the hosts")
    print(f"  link, host A's veth, bytes during a run: {s1} steps RX {rx1} TX {tx1}; "
          f"{s2} steps RX {rx2} TX {tx2}")
    print(f"  link per step ((long - short) / {n}): {link:.0f} B (RX {link_rx:.0f} + TX {link_tx:.0f})")
    print(f"  gradient that crosses dp per step, host A's ranks {a.host_ranks}: {grad_host:.0f} B")
    print("\n".join(lines))
    print(f"  TP activations per step, rank 0 (comm_bytes.tp / steps, shared memory, never on the link): "
          f"{tp_meas:.0f} B")
    print(f"    of which the layers: 2 all-reduces x 2 directions x T {a.tokens} x C {C} x 4 B x L {L} = "
          f"{tp_formula} B (the rest: embedding / lm_head vocabulary shards)")
    print(f"  link / gradient = {r_grad:.2f} (bound <= {a.max_grad_factor:g}; a 2-rank all-reduce sends "
          "the buffer each way: about 2 for RX+TX, plus TCP/IP headers and ACKs)")
    print(f"  link / TP activations = {r_tp:.3f} (bound < {a.max_tp_fraction:g})")

    bad = []
    if tp_meas < tp_formula:
        bad.append(f"TP traffic {tp_meas:.0f} B/step below the layers' all-reduces {tp_formula} B")
    if grad_host <= 0:
        bad.append("no gradient bytes crossed dp (is dp > 1?)")
    elif r_grad > a.max_grad_factor:
        bad.append(f"link {link:.0f} B/step is {r_grad:.2f}x the gradient (> {a.max_grad_factor:g}x)")
    elif r_grad < 0.5:
        bad.append(f"link {link:.0f} B/step is only {r_grad:.2f}x the gradient: the gradient did not cross it")
    if r_tp >= a.max_tp_fraction:
        bad.append(f"link {link:.0f} B/step is {r_tp:.3f} of the TP traffic (>= {a.max_tp_fraction:g})")
    for b in bad:
        print(f"FAIL: {b}")
    if not bad:
        print("ok: the link carries the adapter gradient, not the activations")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
