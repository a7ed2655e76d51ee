"""Check one shardlora training step against the PyTorch reference (torch_llama.py).

The dump (`shardlora train --dump-grads FILE`, written after backward and before the
optimizer update) holds the step's batch, its loss, every adapter tensor under its PEFT key
and its gradient under key + ".grad". This script rebuilds the model from the HF directory,
installs the dumped adapter, runs forward + backward on the dumped batch in fp32 and
compares the loss and every gradient: error = max|ours - ref| / max|ref| per tensor, or the
absolute error against 1e-7 when max|ref| < 1e-12 (e.g. dA while B = 0).

Usage: /usr/bin/python3 tests/reference/check_grads.py --model DIR --dump FILE [--tol 1e-4]
Exit status 0 when everything matches, 1 otherwise (including a malformed dump).
"""

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_llama as tl  # noqa: E402


def run(args):
    where = args.dump
    tensors, meta = tl.read_safetensors(args.dump)
    model = tl.LlamaReference.from_dir(args.model)
    lora = tl.lora_from_dump_meta(model.cfg, meta, where)
    ids, labels, pos = tl.dump_batch(tensors, where)
    if "loss" not in tensors or tensors["loss"].numel() != 1:
        raise tl.ReferenceError_(f"{where}: lacks 'loss' (F32 [1])")
    if int(ids.max()) >= model.cfg.vocab_size or int(ids.min()) < 0:
        raise tl.ReferenceError_(f"{where}: input_ids outside [0, {model.cfg.vocab_size})")
    print(f"check_grads: model {args.model} ({model.cfg.arch}, L={model.cfg.num_layers}, "
          f"C={model.cfg.hidden_size}), dump {args.dump} step {meta.get('step', '?')}, "
          f"batch {list(ids.shape)}, r={lora.r} alpha={lora.alpha:g} rslora={int(lora.use_rslora)} "
          f"targets={','.join(lora.targets)}")

    problems = tl.check_dump_adapter(tensors, lora, where, need_grads=True)
    if problems:
        for p in problems:
            print(f"  FAIL {p}")
        print(f"check_grads: FAILED: {len(problems)} adapter key/shape problem(s) in {where}")
        return 1

    lora.load(tensors, where)
    loss, n = model.loss(ids, labels, pos, lora, training=True)
    loss.backward()

    failed = 0
    ours_loss = float(tensors["loss"].reshape(-1)[0])
    err, kind = tl.compare(torch.tensor([ours_loss]), loss.detach().reshape(1))
    ok = tl.passes(err, kind, args.tol)
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
    total = 1 + len(lora.params)
    if failed:
        print(f"check_grads: FAILED {failed} of {total} comparisons (tol {args.tol:g}), worst rel err {worst:.3e}")
        return 1
    print(f"check_grads: OK {total} comparisons (loss + {len(lora.params)} gradients), "
          f"worst rel err {worst:.3e} <= tol {args.tol:g}")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="HF model directory")
    ap.add_argument("--dump", required=True, help="safetensors file from shardlora train --dump-grads")
    ap.add_argument("--tol", type=float, default=1e-4, help="max relative error (default 1e-4)")
    args = ap.parse_args()
    try:
        return run(args)
    except (tl.ReferenceError_, OSError) as e:
        print(f"check_grads: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
