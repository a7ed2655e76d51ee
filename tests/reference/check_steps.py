"""Replay N optimizer steps of a shardlora run with the PyTorch reference (torch_llama.py)
and compare the loss of every step with OUT/metrics.jsonl.

Inputs: the HF model directory; a `--dump-grads` file written at step 1 (so its adapter is
the initial one, before any update; its metadata names the LoRA and optimizer settings,
micro_batch B, global_batch G (sequences per optimizer step; B when absent) and seq_len T);
the pre-tokenised JSONL the run trained on; the run's metrics.jsonl. Batching rule (as
shardlora's): step s (1-based) uses lines ((s-1)*G + i) mod N, i < G, each truncated or
padded to T (input_ids 0, labels -100, positions continuing); the whole global batch is one
forward/backward here (its loss is the mean over all its counted tokens, so gradient
accumulation over micro-batches and data parallelism give the same step). The
optimizer is torch.optim.AdamW / torch.optim.SGD (or transformers' AdamW, torch_llama.AdamWHF). The learning rate of each step is the
"lr" of that step's metrics line when every line has one (so a schedule is replayed),
else the dump's `lr`; `--lr-source` forces either. If the metadata has `max_grad_norm`
> 0 the gradients are clipped as torch.nn.utils.clip_grad_norm_ does.
With lora_dropout > 0 every replayed step applies shardlora's Philox dropout masks of that
step (philox.py; keyed by seed, step, layer, module, token, column).
Also checked: the step-1 batch equals the dump's, and the step-1 gradients equal the dump's.

Usage: /usr/bin/python3 tests/reference/check_steps.py --model DIR --dump FILE
           --data FILE.jsonl --metrics OUT/metrics.jsonl --steps N [--tol 1e-4]
Exit status 0 when every step matches within tol (relative), 1 otherwise.
"""

import argparse
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_llama as tl  # noqa: E402


def meta_num(meta, key, where, conv=float):
    v = tl.meta_get(meta, key, where)
    try:
        return conv(v)
    except ValueError:
        raise tl.ReferenceError_(f"{where}: __metadata__ '{key}' = {v!r} is not a number")


def meta_bool(meta, key, where):
    v = tl.meta_get(meta, key, where).strip().lower()
    if v in ("1", "true"):
        return True
    if v in ("0", "false"):
        return False
    raise tl.ReferenceError_(f"{where}: __metadata__ '{key}' = {v!r} is not 0/1")


def read_metrics(path):
    """step (1-based) -> the step's metrics object; lines without step+loss (eval lines,
    headers) are skipped; a repeated step (a resumed run) keeps its last line."""
    steps = {}
    for _, obj in tl.read_jsonl(path):
        if isinstance(obj, dict) and "eval_loss" not in obj and "step" in obj and "loss" in obj:
            steps[int(obj["step"])] = obj
    return steps


def first_difference(a, b):
    idx = (a != b).nonzero()
    return tuple(int(v) for v in idx[0]) if len(idx) else None


def run(args):
    where = args.dump
    tensors, meta = tl.read_safetensors(args.dump)
    if meta.get("step") != "1":
        raise tl.ReferenceError_(f"{where}: written at step {meta.get('step')!r}; check_steps needs the "
                                 "dump of step 1 (it holds the initial adapter)")
    model = tl.LlamaReference.from_dir(args.model)
    lora = tl.lora_from_dump_meta(model.cfg, meta, where)
    kind = tl.meta_get(meta, "optimizer", where)
    opt_kw = dict(lr=meta_num(meta, "lr", where), weight_decay=meta_num(meta, "weight_decay", where))
    if kind in ("adamw", "adamw-hf"):  # only the keys of the chosen optimizer are required
        opt_kw.update(beta1=meta_num(meta, "beta1", where), beta2=meta_num(meta, "beta2", where),
                      eps=meta_num(meta, "eps", where))
    elif kind == "sgd":
        opt_kw.update(momentum=meta_num(meta, "momentum", where), nesterov=meta_bool(meta, "nesterov", where))
    else:
        raise tl.ReferenceError_(f"{where}: optimizer {kind!r} is not 'adamw', 'adamw-hf' or 'sgd'")
    B = meta_num(meta, "micro_batch", where, int)
    # G sequences per optimizer step (gradient accumulation / data parallelism); B if absent
    G = meta_num(meta, "global_batch", where, int) if "global_batch" in meta else B
    if B < 1 or G < 1 or G % B:
        raise tl.ReferenceError_(f"{where}: global_batch {G} is not a positive multiple of micro_batch {B}")
    T = meta_num(meta, "seq_len", where, int)
    max_norm = meta_num(meta, "max_grad_norm", where) if "max_grad_norm" in meta else 0.0
    if not tl.load_dump_adapter("check_steps", tensors, lora, where, need_grads=False):
        return 1

    seqs = tl.read_jsonl_sequences(args.data)
    V = model.cfg.vocab_size
    for i, (ids, _, _) in enumerate(seqs):
        if ids and (min(ids) < 0 or max(ids) >= V):
            raise tl.ReferenceError_(f"{args.data}: sequence {i + 1} has token ids outside [0, {V})")
    metrics = read_metrics(args.metrics)
    missing = [s for s in range(1, args.steps + 1) if s not in metrics]
    if missing:
        more = "..." if len(missing) > 5 else ""
        raise tl.ReferenceError_(f"{args.metrics}: no loss for step(s) {missing[:5]}{more}")
    have_lr = all("lr" in metrics[s] for s in range(1, args.steps + 1))
    lr_source = args.lr_source if args.lr_source != "auto" else ("metrics" if have_lr else "dump")
    if lr_source == "metrics" and not have_lr:
        raise tl.ReferenceError_(f"{args.metrics}: --lr-source metrics but some step lines lack 'lr'")

    print(f"check_steps: model {args.model} ({model.cfg.arch}), {len(seqs)} sequences, B={B} G={G} T={T}, "
          f"{args.steps} steps, {kind} {', '.join(f'{k}={v:g}' for k, v in opt_kw.items())}, "
          f"lr from {lr_source}, max_grad_norm={max_norm:g}, {tl.describe_lora(lora)}")

    failed = 0
    # the batch of step 1 must be the dump's
    dump_b = tl.dump_batch(tensors, where)
    ours_b = tl.make_batch(seqs, 0, G, T)
    for name, d, o in zip(("input_ids", "labels", "position_ids"), dump_b, ours_b):
        if d.shape != o.shape:
            print(f"  FAIL step-1 {name}: dump {list(d.shape)} vs rule {list(o.shape)}")
            failed += 1
        elif not torch.equal(d, o):
            at = first_difference(d, o)
            print(f"  FAIL step-1 {name} differs from the batching rule at [row, t] = {list(at)}: "
                  f"dump {int(d[at])} rule {int(o[at])}")
            failed += 1
    if not failed:
        print("  ok   step-1 batch equals the dump's input_ids / labels / position_ids")

    opt = tl.make_optimizer(lora.parameters(), kind, **opt_kw)
    worst = 0.0
    for s in range(args.steps):
        step = s + 1
        ids, labels, pos = tl.make_batch(seqs, s, G, T)  # the step's global batch
        opt.zero_grad(set_to_none=True)
        lora.dropout_step = step  # the masks of optimizer step s + 1
        loss, n = model.loss(ids, labels, pos, lora, training=True)
        loss.backward()
        if step == 1:
            grads_ok = True
            if all(k + ".grad" in tensors for k in lora.params):
                gw = 0.0
                for k, p in lora.params.items():
                    err, ek = tl.compare(tensors[k + ".grad"], p.grad)
                    if not tl.passes(err, ek, args.tol):
                        grads_ok = False
                        print(f"  FAIL step-1 gradient {k}: {ek} err {err:.3e}")
                    if ek == "rel":
                        gw = max(gw, err)
                if grads_ok:
                    print(f"  ok   step-1 gradients equal the dump's (worst rel err {gw:.3e})")
                failed += not grads_ok
            else:
                print("  note the dump has no .grad entries; step-1 gradients not compared")
        gnorm = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in lora.parameters()))
        if max_norm > 0:
            torch.nn.utils.clip_grad_norm_(lora.parameters(), max_norm)
        lr = float(metrics[step]["lr"]) if lr_source == "metrics" else opt_kw["lr"]
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()

        ours = float(metrics[step]["loss"])
        ref = float(loss)
        err = abs(ours - ref) / abs(ref) if abs(ref) > 0 else abs(ours - ref)
        if not math.isfinite(ours):
            err = math.inf
        ok = err <= args.tol
        failed += not ok
        worst = max(worst, err)
        gn = metrics[step].get("grad_norm")
        gn_txt = f"  grad_norm ref {gnorm:.6g}" if gn is None else f"  grad_norm ours {float(gn):.6g} ref {gnorm:.6g}"
        print(f"  {'ok  ' if ok else 'FAIL'} step {step:4d}  ours {ours:.8f}  ref {ref:.8f}  rel err {err:.3e}"
              f"  lr {lr:.4g}  tokens {n}{gn_txt}")
    if failed:
        print(f"check_steps: FAILED {failed} check(s) over {args.steps} steps (tol {args.tol:g}), "
              f"worst loss rel err {worst:.3e}")
        return 1
    print(f"check_steps: OK {args.steps} steps, worst loss rel err {worst:.3e} <= tol {args.tol:g}")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="HF model directory")
    ap.add_argument("--dump", required=True, help="--dump-grads file written at step 1")
    ap.add_argument("--data", required=True, help="pre-tokenised JSONL the run trained on")
    ap.add_argument("--metrics", required=True, help="the run's OUT/metrics.jsonl")
    ap.add_argument("--steps", type=int, required=True, help="number of optimizer steps to replay")
    ap.add_argument("--tol", type=float, default=1e-4, help="max relative loss error (default 1e-4)")
    ap.add_argument("--lr-source", choices=("auto", "metrics", "dump"), default="auto",
                    help="per-step lr from metrics.jsonl, or the dump's constant lr (auto: metrics if present)")
    args = ap.parse_args()
    if args.steps < 1:
        ap.error("--steps must be >= 1")
    return tl.run_checker("check_steps", run, args)


if __name__ == "__main__":
    sys.exit(main())
