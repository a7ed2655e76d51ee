"""DoRA (Liu et al. 2024, "DoRA: Weight-Decomposed Low-Rank Adaptation") against a PyTorch
reference written from PEFT's formula (huggingface/peft src/peft/tuners/lora/dora.py,
DoraLinearLayer.forward, and lora/layer.py Linear.forward): the base layer on the input x,
plus what the DoRA layer adds on its input x',

    y = (W x + b) + (m / n - 1) * (W x') + (m / n) * s * B A x'      n = ||W + s B A||_row, detached

where x' = x at lora_dropout 0 or at eval (PEFT hands the base output to the DoRA layer as
base_result, so y = (m / n) * (W x + s B A x) + b), and x' = dropout(x) when training with
lora_dropout > 0 (PEFT: `x = dropout(x); base_result = None`, so the DoRA layer recomputes
W x' on the dropped-out input). The masks are shardlora's keyed Philox masks
(philox.lora_dropout_scale via torch_llama.Lora), the same for the base correction and the
LoRA branch. m [out] starts at ||W_o|| (row norms over the input dimension, PEFT
update_layer). PEFT has no epsilon (a zero row of W gives 0/0); shardlora divides by
max(n, DORA_EPS) and the reference does the same (--eps).

Subcommands (each exits 1 on any failure, 0 otherwise, and prints the figures it checked):
  grads     --model DIR --dump FILE [--tol 1e-4] [--check-init]: loss and every gradient
            (lora_A, lora_B, lora_magnitude_vector) of a `shardlora train --adapter dora
            --dump-grads` file against the reference; --check-init: the step-1 adapter has
            B = 0 and m = ||W_o|| (rel 1e-6).
  zero-row  --model DIR --out DIR2 --tensor NAME --row R [--row R2 ...]: a copy of the model
            directory with rows of one weight set to 0 (bytes patched in place).
  finite    --dump FILE: loss and every gradient are finite (and the m of the zeroed rows 0).
  evals     A.json B.json [--tol 1e-5]: two `shardlora eval --out` results have the same loss.
  merged    --model DIR --adapter DIR --merged DIR [--tol 1e-5]: the logits of the merged model
            (`shardlora merge`) equal those of the base model with the exported DoRA adapter
            applied unmerged by the reference, on a fixed random batch.

Usage: /usr/bin/python3 tests/reference/dora_check.py SUBCOMMAND ...
"""

import argparse
import json
import math
import os
import shutil
import struct
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_llama as tl  # noqa: E402

DORA_EPS = 1e-12  # model/dora.c DORA_EPS
MAG = "lora_magnitude_vector"


def mag_key(layer, module):
    return f"base_model.model.model.layers.{layer}.{tl.module_path(module)}.{MAG}"


class Dora:
    """DoRA on top of a torch_llama Lora (same A, B, scale, dropout masks) for the base
    weights w (LlamaReference.w). params: every trainable tensor, PEFT key -> leaf tensor."""

    def __init__(self, lora, w, eps=DORA_EPS):
        self.lora = lora
        self.w = w
        self.eps = eps
        self.params = dict(lora.params)
        self.mag = {}
        for k in list(lora.params):
            layer, module, factor = tl.parse_lora_key(k)
            if factor == "A":
                out_f = lora.params[tl.lora_key(layer, module, "B")].shape[0]
                m = torch.zeros(out_f, dtype=lora.params[k].dtype, requires_grad=True)
                self.mag[(layer, module)] = m
                self.params[mag_key(layer, module)] = m

    def weight(self, layer, module):
        return self.w[f"model.layers.{layer}.{tl.module_path(module)}.weight"]

    @torch.no_grad()
    def init_magnitude(self):
        """PEFT _update_layer at B = 0: m = ||W||_row."""
        for (layer, module), m in self.mag.items():
            m.copy_(torch.linalg.norm(self.weight(layer, module).to(torch.float64), dim=1))

    def shapes(self):
        return {k: tuple(v.shape) for k, v in self.params.items()}

    def delta(self, layer, module, x, training):
        """What DoRA adds to the base layer's F.linear(x, W, b) (torch_llama.LlamaReference._linear):
        PEFT's result_dora on x' = dropout(x) (training, lora_dropout > 0) or x."""
        m = self.mag.get((layer, module))
        if m is None:
            return None
        lo = self.lora
        a = lo.params[tl.lora_key(layer, module, "A")]
        b = lo.params[tl.lora_key(layer, module, "B")]
        W = self.weight(layer, module)
        # PEFT get_weight_norm: torch.linalg.norm(W + scaling * lora_weight, dim=1), detached
        n = torch.linalg.norm(W + lo.scale * (b @ a).detach(), dim=1).detach()
        mag_norm_scale = (m / n.clamp_min(self.eps)).view(1, -1)
        if lo.dropout > 0 and training:
            # Linear.forward: x = dropout(x); base_result = None -> DoRA recomputes W x'
            n_in = x.shape[-1]
            x = x * lo.dropout_scale(layer, module, x.numel() // n_in, n_in).to(x.dtype).view(x.shape)
        # without dropout PEFT passes base_result = W x + b and subtracts b: the same W x
        base_result = F.linear(x, W)
        lora_result = F.linear(F.linear(x, a), b)
        return (mag_norm_scale - 1) * base_result + mag_norm_scale * lora_result * lo.scale


def dora_from_dump(model, tensors, meta, where, args):
    lora = tl.lora_from_dump_meta(model.cfg, meta, where)
    d = Dora(lora, model.w, eps=args.eps)
    problems = []
    for k, shape in d.shapes().items():
        for name in (k, k + ".grad"):
            if name not in tensors:
                problems.append(f"missing {name}")
            elif tensors[name].numel() != math.prod(shape):
                problems.append(f"{name} has shape {list(tensors[name].shape)}, expected {list(shape)}")
    for name in tensors:
        base = name[:-5] if name.endswith(".grad") else name
        if name not in ("loss", "input_ids", "labels", "position_ids") and base not in d.params:
            problems.append(f"extra {name}")
    if problems:
        return d, problems
    with torch.no_grad():
        for k, p in d.params.items():
            p.copy_(tensors[k].reshape(p.shape))
    return d, []


def cmd_grads(args):
    where = args.dump
    tensors, meta = tl.read_safetensors(args.dump)
    model = tl.LlamaReference.from_dir(args.model)
    dora, problems = dora_from_dump(model, tensors, meta, where, args)
    lo = dora.lora
    print(f"dora_check grads: model {args.model} (L={model.cfg.num_layers}, C={model.cfg.hidden_size}), dump "
          f"{where} step {meta.get('step', '?')} tp {meta.get('tp', '?')} dp {meta.get('dp', '?')}, r={lo.r} "
          f"alpha={lo.alpha:g} rslora={int(lo.use_rslora)} targets={','.join(lo.targets)} dropout={lo.dropout:g} "
          f"(PEFT's DoRA dropout form), eps {args.eps:g}")
    if problems:
        for p in problems[:10]:
            print(f"  FAIL {p}")
        print(f"dora_check grads: FAILED: {len(problems)} key/shape problem(s)")
        return 1
    failed, total, worst = 0, 0, 0.0
    if args.check_init:
        total += 1
        ref = Dora(lo, model.w)
        ref.init_magnitude()
        bad = []
        for key in dora.mag:
            e, kind = tl.compare(dora.mag[key], ref.mag[key])
            if not tl.passes(e, kind, 1e-6):
                bad.append(f"{mag_key(*key)}: rel err {e:.3e}")
            worst = max(worst, e)
        nzb = sum(int(torch.count_nonzero(p)) for k, p in lo.params.items() if k.endswith("lora_B.weight"))
        if bad or nzb:
            failed += 1
            print(f"  FAIL init: {len(bad)} magnitude(s) differ from ||W_o|| ({bad[:3]}); {nzb} non-zero B elements")
        else:
            print(f"  ok   init: {len(dora.mag)} magnitudes = ||W_o|| (max rel err {worst:.3e}), every lora_B = 0")
    ids, labels, pos = tl.dump_batch(tensors, where)
    ours, loss, n, e, kind, ok = tl.check_dump_loss(model, tensors, (ids, labels, pos), dora, args.tol)
    failed += not ok
    total += 1
    worst = e
    print(f"  {'ok  ' if ok else 'FAIL'} loss  ours {ours:.8f}  ref {float(loss):.8f}  rel err {e:.3e}  ({n} tokens)")
    per_kind = {}
    for k, p in dora.params.items():
        g = tensors[k + ".grad"].reshape(p.shape)
        e, kind = tl.compare(g, p.grad)
        ok = tl.passes(e, kind, args.tol)
        failed += not ok
        total += 1
        fk = k.rsplit(".", 2)[-2] if k.endswith(".weight") else MAG
        w = per_kind.setdefault(fk, [0, 0.0])
        w[0] += 1
        if kind == "rel":
            w[1] = max(w[1], e)
            worst = max(worst, e)
        if not ok or args.verbose:
            print(f"  {'ok  ' if ok else 'FAIL'} {k}.grad  max|ref| {float(p.grad.abs().max()):.3e}  {kind} err {e:.3e}")
    for fk, (cnt, e) in sorted(per_kind.items()):
        print(f"  {fk}: {cnt} gradients, max rel err {e:.3e}")
    if failed:
        print(f"dora_check grads: FAILED {failed} of {total} comparisons (tol {args.tol:g})")
        return 1
    print(f"dora_check grads: OK {total} comparisons, worst rel err {worst:.3e} <= {args.tol:g}")
    return 0


ST_WIDTH = {"F32": 4, "BF16": 2, "F16": 2, "F64": 8}


def cmd_zero_row(args):
    if os.path.exists(args.out):
        shutil.rmtree(args.out)
    shutil.copytree(args.model, args.out)
    for fn in sorted(os.listdir(args.out)):
        if not fn.endswith(".safetensors"):
            continue
        path = os.path.join(args.out, fn)
        with open(path, "r+b") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            h = json.loads(f.read(n))
            if args.tensor not in h:
                continue
            v = h[args.tensor]
            rows, cols = v["shape"]
            width = ST_WIDTH[v["dtype"]]
            for r in args.row:
                if not 0 <= r < rows:
                    print(f"dora_check zero-row: row {r} outside [0, {rows})")
                    return 1
                f.seek(8 + n + v["data_offsets"][0] + r * cols * width)
                f.write(b"\0" * (cols * width))
            print(f"dora_check zero-row: {args.out}/{fn}: {args.tensor} [{rows}, {cols}] rows {args.row} set to 0")
            return 0
    print(f"dora_check zero-row: no tensor {args.tensor} in {args.model}")
    return 1


def cmd_finite(args):
    tensors, meta = tl.read_safetensors(args.dump)
    bad, worst, nmag = [], 0.0, 0
    for k, t in sorted(tensors.items()):
        if not t.is_floating_point():
            continue
        if not bool(torch.isfinite(t).all()):
            bad.append(k)
        elif k.endswith(".grad"):
            worst = max(worst, float(t.abs().max()))
    for k in args.zero_mag:
        nmag += 1
        t = tensors.get(k)
        if t is None or bool((t.reshape(-1)[args.zero_index] != 0)):
            bad.append(f"{k}[{args.zero_index}] is not 0 (the norm of an all-zero row)")
    loss = float(tensors["loss"].reshape(-1)[0]) if "loss" in tensors else float("nan")
    if bad or not math.isfinite(loss):
        print(f"  FAIL {args.dump}: non-finite or wrong: {bad[:6]} (loss {loss})")
        return 1
    print(f"  ok   {args.dump}: loss {loss:.6f} and {sum(k.endswith('.grad') for k in tensors)} gradients finite "
          f"(max |grad| {worst:.3e}){f'; {nmag} zero-row magnitude(s) are 0' if nmag else ''}")
    return 0


def cmd_evals(args):
    a, b = json.load(open(args.a)), json.load(open(args.b))
    la, lb = float(a["loss"]), float(b["loss"])
    e = abs(la - lb) / abs(lb)
    ok = e <= args.tol and a.get("tokens") == b.get("tokens")
    print(f"  {'ok  ' if ok else 'FAIL'} eval loss {args.a}: {la:.8f}, {args.b}: {lb:.8f}, rel err {e:.3e} "
          f"(tol {args.tol:g}), tokens {a.get('tokens')} / {b.get('tokens')}")
    return 0 if ok else 1


def cmd_merged(args):
    cfg_j = json.load(open(os.path.join(args.adapter, "adapter_config.json")))
    tensors, _ = tl.read_safetensors(os.path.join(args.adapter, "adapter_model.safetensors"))
    model = tl.LlamaReference.from_dir(args.model)
    merged = tl.LlamaReference.from_dir(args.merged)
    if cfg_j.get("use_dora") is not True:
        print(f"  FAIL {args.adapter}: use_dora is {cfg_j.get('use_dora')!r}")
        return 1
    lora = tl.Lora(model.cfg, cfg_j["r"], cfg_j["lora_alpha"], cfg_j["target_modules"], cfg_j.get("use_rslora", False))
    d = Dora(lora, model.w)
    with torch.no_grad():
        for k, p in d.params.items():
            if k not in tensors:
                print(f"  FAIL {args.adapter}: missing {k}")
                return 1
            if tuple(tensors[k].shape) != tuple(p.shape):
                print(f"  FAIL {k}: shape {list(tensors[k].shape)}, expected {list(p.shape)}")
                return 1
            p.copy_(tensors[k])
    return tl.check_merged_logits(model, merged, d, args.tol, "DoRA")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("grads")
    g.add_argument("--model", required=True)
    g.add_argument("--dump", required=True)
    g.add_argument("--tol", type=float, default=1e-4)
    g.add_argument("--eps", type=float, default=DORA_EPS)
    g.add_argument("--check-init", action="store_true")
    g.add_argument("--verbose", action="store_true")
    z = sub.add_parser("zero-row")
    z.add_argument("--model", required=True)
    z.add_argument("--out", required=True)
    z.add_argument("--tensor", required=True)
    z.add_argument("--row", type=int, action="append", required=True)
    f = sub.add_parser("finite")
    f.add_argument("--dump", required=True)
    f.add_argument("--zero-mag", action="append", default=[], help="magnitude key whose --zero-index must be 0")
    f.add_argument("--zero-index", type=int, default=0)
    e = sub.add_parser("evals")
    e.add_argument("a")
    e.add_argument("b")
    e.add_argument("--tol", type=float, default=1e-5)
    mg = sub.add_parser("merged")
    mg.add_argument("--model", required=True)
    mg.add_argument("--adapter", required=True)
    mg.add_argument("--merged", required=True)
    mg.add_argument("--tol", type=float, default=1e-5)
    args = ap.parse_args()
    cmd = {"grads": cmd_grads, "zero-row": cmd_zero_row, "finite": cmd_finite, "evals": cmd_evals, "merged": cmd_merged}
    return tl.run_checker(f"dora_check {args.cmd}", cmd[args.cmd], args,
                          (tl.ReferenceError_, OSError, KeyError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
