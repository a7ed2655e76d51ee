"""Check one shardlora training step against the PyTorch reference (torch_llama.py).

The dump (`shardlora train --dump-grads FILE`, written after backward and before the
optimizer update) holds the step's batch, its loss, every adapter tensor under its PEFT key
and its gradient under key + ".grad". This script rebuilds the model from the HF directory,
installs the dumped adapter, runs forward + backward on the dumped batch in fp32 and
compares the loss and every gradient: error = max|ours - ref| / max|ref| per tensor, or the
absolute error against 1e-7 when max|ref| < 1e-12 (e.g. dA while B = 0). The dumped batch is
the step's whole global batch (gradient accumulation and data parallelism included): with
metadata global_batch G it must hold exactly G rows.

With lora_dropout > 0 the reference applies shardlora's dropout masks: Philox4x32-10
(philox.py, independent of the C code) keyed by (seed, step, layer, module, token, column),
each targeted module with its own mask, on the LoRA branch's input only (PEFT).

--check-init (a step-1 dump only): the dumped adapter must be the initial one: every lora_A
equal to the Philox initialisation (default U(+-1/sqrt(in)) or, with lora_init gaussian,
N(0, 1) / r) bit for bit -- up to --init-ulps float32 ulps (default 0; the maximum distance
is reported) -- and every lora_B exactly 0. The init kind is the metadata's lora_init;
--init-kind states the expected one (it must then agree with the metadata, if present).

Usage: /usr/bin/python3 tests/reference/check_grads.py --model DIR --dump FILE [--tol 1e-4]
           [--check-init [--init-kind default|gaussian] [--init-ulps N]]
Exit status 0 when everything matches, 1 otherwise (including a malformed dump).
"""

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import philox  # noqa: E402
import torch_llama as tl  # noqa: E402


def check_init(tensors, meta, lora, where, kind_arg, max_ulps):
    """Compare the dump's adapter with the Philox initialisation. Returns the number of
    failed comparisons (prints one line per tensor)."""
    if meta.get("step") != "1":
        raise tl.ReferenceError_(f"{where}: --check-init needs the dump of step 1 (this one is of step "
                                 f"{meta.get('step')!r}: its adapter has been updated)")
    kind = meta.get("lora_init")
    if kind is None and kind_arg is None:
        raise tl.ReferenceError_(f"{where}: __metadata__ lacks 'lora_init'; pass --init-kind")
    if kind is not None and kind_arg is not None and kind != kind_arg:
        print(f"  FAIL init kind: metadata lora_init {kind!r}, expected {kind_arg!r}")
        return 1
    kind = kind or kind_arg
    if kind not in ("default", "gaussian"):
        raise tl.ReferenceError_(f"{where}: lora_init {kind!r} is not 'default' or 'gaussian'")
    seed = tl.meta_seed(meta, where)
    failed = 0
    worst_ulps, worst_abs, n_a, n_b = 0, 0.0, 0, 0
    for k in lora.params:
        layer, module, factor = tl.parse_lora_key(k)
        ours = tensors[k].to(torch.float32).numpy()
        if factor == "B":
            n_b += 1
            nz = int(np.count_nonzero(ours))
            if nz:
                failed += 1
                print(f"  FAIL {k}: {nz} non-zero element(s) (max |.| {float(np.abs(ours).max()):.3e}); B must be 0")
            continue
        n_a += 1
        ref = philox.lora_init_a(seed, layer, module, ours.shape[0], ours.shape[1], kind == "gaussian")
        ulps = philox.ulp_distance(ours, ref)
        u = int(ulps.max()) if ulps.size else 0
        d = float(np.abs(ours.astype(np.float64) - ref.astype(np.float64)).max()) if ulps.size else 0.0
        worst_ulps, worst_abs = max(worst_ulps, u), max(worst_abs, d)
        if u > max_ulps:
            failed += 1
            at = np.unravel_index(int(ulps.argmax()), ulps.shape)
            print(f"  FAIL {k}: {int((ulps > max_ulps).sum())} of {ulps.size} elements differ by > {max_ulps} ulp; "
                  f"worst at {list(map(int, at))}: ours {ours[at]!r} philox {ref[at]!r} ({u} ulp)")
    state = "FAILED" if failed else "OK"
    print(f"  {'ok  ' if not failed else 'FAIL'} init ({kind}, seed {seed}): {n_a} lora_A vs Philox, max "
          f"{worst_ulps} ulp (max |diff| {worst_abs:.3e}); {n_b} lora_B all zero -> {state}")
    return failed


def run(args):
    where = args.dump
    tensors, meta = tl.read_safetensors(args.dump)
    model = tl.LlamaReference.from_dir(args.model)
    if args.compute == "bf16":
        model.frozen_compute = "bf16"
    lora = tl.lora_from_dump_meta(model.cfg, meta, where)
    ids, labels, pos = tl.dump_batch(tensors, where)
    if "global_batch" in meta:  # a run with gradient accumulation / dp: the dump is the global batch
        try:
            G = int(meta["global_batch"])
        except ValueError:
            raise tl.ReferenceError_(f"{where}: __metadata__ 'global_batch' = {meta['global_batch']!r} is not an integer")
        if ids.shape[0] != G:
            raise tl.ReferenceError_(f"{where}: the batch has {ids.shape[0]} rows but global_batch is {G}")
    if "loss" not in tensors or tensors["loss"].numel() != 1:
        raise tl.ReferenceError_(f"{where}: lacks 'loss' (F32 [1])")
    if int(ids.max()) >= model.cfg.vocab_size or int(ids.min()) < 0:
        raise tl.ReferenceError_(f"{where}: input_ids outside [0, {model.cfg.vocab_size})")
    print(f"check_grads: model {args.model} ({model.cfg.arch}, L={model.cfg.num_layers}, "
          f"C={model.cfg.hidden_size}), dump {args.dump} step {meta.get('step', '?')}, "
          f"batch {list(ids.shape)}, {tl.describe_lora(lora, with_step=True)}")

    if not tl.load_dump_adapter("check_grads", tensors, lora, where, need_grads=True):
        return 1
    failed = 0
    if args.check_init:
        failed += check_init(tensors, meta, lora, where, args.init_kind, args.init_ulps)
    if args.compute == "autocast":  # every matmul in BF16 as torch runs it (adapters too)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ours_loss, loss, n, err, kind, ok = tl.check_dump_loss(model, tensors, (ids, labels, pos), lora, args.tol)
    else:
        ours_loss, loss, n, err, kind, ok = tl.check_dump_loss(model, tensors, (ids, labels, pos), lora, args.tol)
    failed += not ok
    worst = err if kind == "rel" else 0.0
    print(f"  {'ok  ' if ok else 'FAIL'} loss  ours {ours_loss:.8f}  ref {float(loss):.8f}  "
          f"{kind} err {err:.3e}  ({n} counted tokens)")
    for k, p in lora.params.items():
        err, kind = tl.compare(tensors[k + ".grad"], p.grad)
        ok = tl.passes(err, kind, args.tol)
        failed += not ok
        if kind == "rel":
            worst = max(worst, err)
        note = f"rel err {err:.3e}" if kind == "rel" else f"abs err {err:.3e} (ref ~ 0, limit {tl.TINY_ABS_TOL:g})"
        print(f"  {'ok  ' if ok else 'FAIL'} {k}.grad  max|ref| {float(p.grad.abs().max()):.3e}  {note}")
    total = 1 + len(lora.params) + (1 if args.check_init else 0)
    if failed:
        print(f"check_grads: FAILED {failed} of {total} comparisons (tol {args.tol:g}), worst rel err {worst:.3e}")
        return 1
    print(f"check_grads: OK {total} comparisons (loss + {len(lora.params)} gradients"
          f"{' + init' if args.check_init else ''}), "
          f"worst rel err {worst:.3e} <= tol {args.tol:g}")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="HF model directory")
    ap.add_argument("--dump", required=True, help="safetensors file from shardlora train --dump-grads")
    ap.add_argument("--tol", type=float, default=1e-4, help="max relative error (default 1e-4)")
    ap.add_argument("--check-init", action="store_true",
                    help="also check that the (step-1) dump's adapter is the Philox initialisation")
    ap.add_argument("--init-kind", choices=("default", "gaussian"),
                    help="expected lora_init (default: the dump metadata's)")
    ap.add_argument("--init-ulps", type=int, default=0,
                    help="max float32 ulps between lora_A and the Philox init (default 0: bit for bit)")
    ap.add_argument("--compute", choices=("fp32", "bf16", "autocast"), default="fp32",
                    help="the reference's frozen products: fp32; bf16 = shardlora's --compute-dtype "
                         "bf16 (BF16 operands, exact sums); autocast = torch.autocast(cpu, bfloat16)")
    args = ap.parse_args()
    return tl.run_checker("check_grads", run, args)


if __name__ == "__main__":
    sys.exit(main())
