"""Check a VeRA training step of shardlora against a PyTorch reference written from PEFT's
formula (peft/tuners/vera/layer.py Linear.forward):
    y = W x + lambda_b * F.linear(lambda_d * F.linear(dropout(x), A[:, :in]), B[:out, :])
with one pair of projections vera_A [r, max_in], vera_B [max_out, r] shared by every module
(max over the targeted modules, PEFT's _find_dim), regenerated here independently from
shardlora's documented Philox coordinates (model/vera.c: purpose 7, a = row << 32 | col,
b = 0, c = 0 for A / 1 for B; U(+-sqrt(6/max_in)) for A, U(+-sqrt(6/r)) for B, PEFT's
kaiming init with gain sqrt(2)).

Modes:
  --dump FILE       loss and the gradients of every vera_lambda_d / vera_lambda_b of a
                    `shardlora train --adapter vera --dump-grads` file (relative --tol);
                    --check-init: lambda_d == 0.1 and lambda_b == 0 exactly (a step-1 dump).
  --export DIR      an exported PEFT VERA adapter (adapter_config.json peft_type VERA,
                    save_projection true): keys, shapes, the projections equal to Philox's,
                    and (with --dump of the same adapter) the lambdas equal to the dump's.
Exit 0 when everything matches, 1 otherwise.
"""

import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import philox  # noqa: E402
import torch_llama as tl  # noqa: E402

VERA_PROJ = 7
D_INITIAL = 0.1


def vera_projection(seed, tensor, rows, cols, r, max_in):
    """float32 [rows, cols]: the leading block of vera_A (tensor 0) or vera_B (tensor 1)."""
    a = (np.arange(rows, dtype=np.uint64)[:, None] << np.uint64(32)) | np.arange(cols, dtype=np.uint64)[None, :]
    out = philox.block(seed, VERA_PROJ, a, 0, tensor)
    hi = np.sqrt(np.float32(6.0) / np.float32(max_in if tensor == 0 else r)).astype(np.float32)
    lo = -hi
    v = lo + (hi - lo) * philox.u01(out[0])
    return np.where(v >= hi, np.nextafter(hi, lo), v).astype(np.float32)


def vera_key(layer, module, which):
    return f"base_model.model.model.layers.{layer}.{tl.module_path(module)}.vera_lambda_{which}"


class Vera:
    """VeRA on the target modules of every layer; the delta(layer, module, x, training) hook
    of torch_llama.LlamaReference. params: PEFT key -> leaf tensor (lambda_d [r], lambda_b [out])."""

    def __init__(self, cfg, r, target_modules, seed, dropout=0.0):
        self.r = int(r)
        self.targets = tl.parse_target_modules(target_modules)
        shapes = [cfg.linear_shape(m) for m in self.targets]
        self.max_out = max(s[0] for s in shapes)
        self.max_in = max(s[1] for s in shapes)
        self.A = torch.from_numpy(vera_projection(seed, 0, self.r, self.max_in, self.r, self.max_in))
        self.B = torch.from_numpy(vera_projection(seed, 1, self.max_out, self.r, self.r, self.max_in))
        self.dropout = float(dropout)
        self.dropout_seed = seed
        self.dropout_step = None
        self.params = {}
        for i in range(cfg.num_layers):
            for m in self.targets:
                out_f, _ = cfg.linear_shape(m)
                self.params[vera_key(i, m, "d")] = torch.full((self.r,), D_INITIAL, requires_grad=True)
                self.params[vera_key(i, m, "b")] = torch.zeros(out_f, requires_grad=True)

    def parameters(self):
        return list(self.params.values())

    def delta(self, layer, module, x, training):
        ld = self.params.get(vera_key(layer, module, "d"))
        if ld is None:
            return None
        lb = self.params[vera_key(layer, module, "b")]
        n_in = x.shape[-1]
        if self.dropout > 0 and training:
            m = philox.lora_dropout_scale(self.dropout_seed, self.dropout_step, layer, module,
                                          x.numel() // n_in, n_in, self.dropout)
            x = x * torch.from_numpy(m).view(x.shape)
        sliced_A = self.A[:, :n_in]
        sliced_B = self.B[:lb.shape[0], :]
        return lb * F.linear(ld * F.linear(x, sliced_A), sliced_B)


def vera_from_meta(cfg, meta, where):
    r = int(tl.meta_get(meta, "lora_r", where))
    v = Vera(cfg, r, tl.meta_get(meta, "target_modules", where), tl.meta_seed(meta, where),
             float(meta.get("lora_dropout", "0")))
    v.dropout_step = int(meta.get("step", "1"))
    return v


def check_dump(args):
    where = args.dump
    tensors, meta = tl.read_safetensors(args.dump)
    model = tl.LlamaReference.from_dir(args.model)
    vera = vera_from_meta(model.cfg, meta, where)
    ids, labels, pos = tl.dump_batch(tensors, where)
    failed = 0
    for k, p in vera.params.items():
        for name in (k, k + ".grad"):
            if name not in tensors or tensors[name].numel() != p.numel():
                print(f"  FAIL {name}: missing or of {tensors[name].numel() if name in tensors else 0} "
                      f"elements, expected {p.numel()}")
                return 1
        with torch.no_grad():
            p.copy_(tensors[k].reshape(-1))
    extra = [n for n in tensors if n not in ("loss", "input_ids", "labels", "position_ids")
             and n.removesuffix(".grad") not in vera.params]
    if extra:
        print(f"  FAIL extra dump tensors: {extra[:3]}")
        return 1
    if args.check_init:
        bad = [k for k, p in vera.params.items()
               if not bool((p == (D_INITIAL if k.endswith("_d") else 0.0)).all())]
        # lambda_d is 0.1f in C: compare in float32
        bad = [k for k in bad if not (k.endswith("_d") and bool((tensors[k] == np.float32(D_INITIAL)).all()))]
        failed += len(bad)
        print(f"  {'FAIL' if bad else 'ok  '} init: lambda_d = {D_INITIAL}, lambda_b = 0 "
              f"({len(vera.params)} tensors{', bad: ' + bad[0] if bad else ''})")
    loss, n = model.loss(ids, labels, pos, vera, training=True)
    loss.backward()
    ours = float(tensors["loss"].reshape(-1)[0])
    err, kind = tl.compare(torch.tensor([ours]), loss.detach().reshape(1))
    ok = tl.passes(err, kind, args.tol)
    failed += not ok
    worst = err
    print(f"  {'ok  ' if ok else 'FAIL'} loss ours {ours:.8f} ref {float(loss):.8f} {kind} err {err:.3e} "
          f"({n} tokens; r={vera.r} max_in={vera.max_in} max_out={vera.max_out})")
    for k, p in vera.params.items():
        err, kind = tl.compare(tensors[k + ".grad"].reshape(-1), p.grad)
        ok = tl.passes(err, kind, args.tol)
        failed += not ok
        if kind == "rel":
            worst = max(worst, err)
        print(f"  {'ok  ' if ok else 'FAIL'} {k}.grad max|ref| {float(p.grad.abs().max()):.3e} {kind} err {err:.3e}")
    print(f"vera_check: {'FAILED ' + str(failed) if failed else 'OK'}: loss + {len(vera.params)} gradients, "
          f"worst rel err {worst:.3e} (tol {args.tol:g})")
    return 1 if failed else 0


def check_export(args):
    d = args.export
    with open(os.path.join(d, "adapter_config.json")) as f:
        cfg_json = json.load(f)
    tensors, _ = tl.read_safetensors(os.path.join(d, "adapter_model.safetensors"))
    model_cfg, _ = tl.load_model_dir(args.model)
    cfg = tl.ModelConfig(model_cfg) if not isinstance(model_cfg, tl.ModelConfig) else model_cfg
    failed = 0

    def expect(cond, msg):
        nonlocal failed
        failed += not cond
        print(f"  {'ok  ' if cond else 'FAIL'} {msg}")

    expect(cfg_json.get("peft_type") == "VERA", f"peft_type {cfg_json.get('peft_type')!r} == 'VERA'")
    expect(cfg_json.get("save_projection") is True, "save_projection true")
    r = int(cfg_json.get("r", 0))
    targets = cfg_json.get("target_modules")
    if isinstance(targets, list):
        targets = ",".join(targets)
    seed = int(args.seed)
    vera = Vera(cfg, r, targets, seed)
    for name, ref in (("base_model.vera_A", vera.A), ("base_model.vera_B", vera.B)):
        t = tensors.get(name)
        ok = t is not None and tuple(t.shape) == tuple(ref.shape) and bool(torch.equal(t.float(), ref))
        expect(ok, f"{name} {list(ref.shape)} equal to the Philox projection")
    want = set(vera.params) | {"base_model.vera_A", "base_model.vera_B"}
    expect(set(tensors) == want, f"keys: {len(tensors)} in the file, {len(want)} expected")
    for k, p in vera.params.items():
        t = tensors.get(k)
        expect(t is not None and tuple(t.shape) == tuple(p.shape), f"{k} shape {list(p.shape)}")
    if args.dump:
        dump, _ = tl.read_safetensors(args.dump)
        worst = max(float((tensors[k].reshape(-1) - dump[k].reshape(-1)).abs().max()) for k in vera.params)
        expect(worst == 0.0, f"lambdas equal to the run's (max |diff| {worst:.3e})")
    print(f"vera_check export: {'FAILED ' + str(failed) if failed else 'OK'}")
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--dump")
    ap.add_argument("--export")
    ap.add_argument("--seed", default="0", help="run seed (for --export)")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--check-init", action="store_true")
    args = ap.parse_args()
    try:
        return check_export(args) if args.export else check_dump(args)
    except tl.ReferenceError_ as e:
        print(f"vera_check: error: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
