#!/usr/bin/env python3
"""Bytes per step across the link between two simulated hosts for pipeline stages across the
hosts (tp 2 inside each host, pp 2: stage 0 on host A, stage 1 on host B) against the stage
boundary's formula and against a TP group spanning the hosts (tp 4, the layout
--allow-tp-across-nodes gives). Prints one block of figures; exits 1 when a bound fails.

The formula (train/pipe.c, issue 19): per step a stage boundary carries each micro-batch's
[N, C] activation forward and its gradient back, F32: 2 x m x N x C x 4 bytes, m micro-batches
per pipeline per step (global batch / (dp x micro-batch)), N = micro-batch x seq-len tokens.

usage: pp_figures.py --pp-short STEPS:RX:TX:OUT --pp-long ... --tpx-short ... --tpx-long ...
                     --micro-batches m --tokens N --hidden C --host-ranks 0,1
                     [--max-over 1.25] [--max-fraction 0.1]
RX/TX: bytes host A's veth received/sent during that run; OUT: its output directory."""
import argparse
import json
import sys


def run(spec):
    steps, rx, tx, out = spec.split(":", 3)
    return int(steps), int(rx), int(tx), out


def per_step(short, long_):
    """Link bytes per step, RX and TX, net of start-up and end: (long - short) / steps."""
    (s1, rx1, tx1, _), (s2, rx2, tx2, _) = short, long_
    n = s2 - s1
    return (rx2 - rx1) / n, (tx2 - tx1) / n


def summary(out, rank):
    with open(f"{out}/summary-rank{rank}.json") as f:
        return json.load(f)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for k in ("--pp-short", "--pp-long", "--tpx-short", "--tpx-long"):
        p.add_argument(k, type=run, required=True)
    p.add_argument("--micro-batches", type=int, required=True, help="m per pipeline per step")
    p.add_argument("--tokens", type=int, required=True, help="N: tokens per micro-batch")
    p.add_argument("--hidden", type=int, required=True, help="C of the model")
    p.add_argument("--host-ranks", required=True, help="the world ranks on host A, comma list")
    p.add_argument("--max-over", type=float, default=1.25,
                   help="link / formula at most this (TCP/IP and Ethernet headers, ACKs, control)")
    p.add_argument("--max-fraction", type=float, default=0.1,
                   help="pp link / tp-across-hosts link at most this")
    a = p.parse_args()

    m, N, C = a.micro_batches, a.tokens, a.hidden
    formula = 2 * m * N * C * 4
    pp_rx, pp_tx = per_step(a.pp_short, a.pp_long)
    tx_rx, tx_tx = per_step(a.tpx_short, a.tpx_long)
    pp_link, tpx_link = pp_rx + pp_tx, tx_rx + tx_tx
    ranks = [int(r) for r in a.host_ranks.split(",")]
    pp_out, tpx_out = a.pp_long[3], a.tpx_long[3]
    sums = [summary(pp_out, r) for r in ranks]
    # what host A's ranks hand to the stage-boundary sends per step (comm_bytes.pp): stage 0
    # sends the forward half of the boundary
    pp_sent = sum(s["comm_bytes"]["pp"] / s["steps"] for s in sums)
    other = sum(s["comm_bytes"]["other"] / s["steps"] for s in sums)
    tpx0 = summary(tpx_out, 0)
    s0 = sums[0]

    print(f"== pipeline across the hosts: tp {s0['tp']} inside a host x pp {s0['pp']} "
          f"(host A: ranks {a.host_ranks}, stage {s0['pp_rank']}), dp {s0['dp']}")
    print(f"  pp run link per step: {pp_link:.0f} B (RX {pp_rx:.0f} + TX {pp_tx:.0f}), "
          f"runs of {a.pp_short[0]} and {a.pp_long[0]} steps")
    print(f"  formula 2 x m {m} x N {N} x C {C} x 4 B = {formula} B per step")
    print(f"  comm_bytes.pp of host A's ranks per step: {pp_sent:.0f} B (the forward half: "
          f"{formula // 2} B); comm_bytes.other (control, all ranks' collectives): {other:.0f} B")
    print(f"  link / formula = {pp_link / formula:.4f} (bound [1, {a.max_over:g}]: the payload "
          "crosses once, plus Ethernet/IP/TCP headers, ACKs, Open MPI's fragment headers and the "
          "control collectives)")
    print(f"  tp {tpx0['tp']} across the hosts (dp {tpx0['dp']}, pp {tpx0['pp']}): link per step "
          f"{tpx_link:.0f} B (RX {tx_rx:.0f} + TX {tx_tx:.0f}); its comm_bytes.tp per rank per step "
          f"{tpx0['comm_bytes']['tp'] / tpx0['steps']:.0f} B")
    print(f"  pp link / tp-across link = {pp_link / tpx_link:.4f} (bound <= {a.max_fraction:g}; "
          f"tp across moves {tpx_link / pp_link:.1f}x the bytes)")

    bad = []
    if pp_sent != formula // 2:
        bad.append(f"host A's comm_bytes.pp {pp_sent:.0f} B/step is not the boundary's forward half {formula // 2}")
    if not formula <= pp_link <= a.max_over * formula:
        bad.append(f"pp link {pp_link:.0f} B/step outside [1, {a.max_over:g}] x the formula {formula}")
    if not pp_link <= a.max_fraction * tpx_link:
        bad.append(f"pp link {pp_link:.0f} B/step above {a.max_fraction:g} x tp-across {tpx_link:.0f}")
    for b in bad:
        print(f"FAIL: {b}")
    if not bad:
        print("ok: the link carries the stage boundary (formula), far less than a TP group across it")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
