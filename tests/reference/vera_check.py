"""Check a VeRA training step of shardlora against a PyTorch reference written from PEFT's
formula (peft/tuners/vera/layer.py Linear.forward):
    y = W x + lambda_b * F.linear(lambda_d * F.linear(dropout(x), A[:, :in]), B[:out, :])
with one pair of projections vera_A [r, max_in], vera_B [max_out, r] shared by every module
(max over the targeted modules, PEFT's _find_dim), made here as PEFT makes them
(peft/tuners/vera/model.py _init_vera_A_vera_B): torch.Generator(device="cpu")
.manual_seed(projection_prng_key), then _kaiming_init((r, max_in)) and
_kaiming_init((max_out, r)) from that generator, each uniform_(-bound, bound) with
bound = sqrt(3) * sqrt(2) / sqrt(fan_in). shardlora's key is the run seed.

Modes:
  --dump FILE       loss and the gradients of every vera_lambda_d / vera_lambda_b of a
                    `shardlora train --adapter vera --dump-grads` file (relative --tol);
                    --check-init: lambda_d == 0.1 and lambda_b == 0 exactly (a step-1 dump).
  --export DIR      an exported PEFT VERA adapter (adapter_config.json peft_type VERA,
                    save_projection true): keys, shapes, the projections equal to PEFT's for
                    the run seed, and (with --dump of the same adapter) the lambdas equal to
                    the dump's.
  --make-peft DIR   writes an adapter as PEFT's save_pretrained does for a VeraConfig(r=--r,
                    target_modules=--targets, projection_prng_key=--key, save_projection=not
                    --no-save-projection) with random lambdas (torch seed --lambda-seed).
  --merged DIR --adapter A
                    the logits of the merged model DIR equal those of --model with the VeRA
                    adapter A applied unmerged by PEFT's formula (relative --tol).
Exit 0 when everything matches, 1 otherwise.
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import philox  # noqa: E402
import torch_llama as tl  # noqa: E402

D_INITIAL = 0.1


def kaiming_init(shape, generator):
    """PEFT's vera/model.py _kaiming_init on a new float32 tensor: fan_in = shape[1]."""
    t = torch.empty(shape, dtype=torch.float32)
    std = math.sqrt(2) / math.sqrt(shape[1])
    bound = math.sqrt(3.0) * std
    with torch.no_grad():
        return t.uniform_(-bound, bound, generator=generator)


def vera_projections(key, r, max_in, max_out):
    """(vera_A [r, max_in], vera_B [max_out, r]) for projection_prng_key `key`, as PEFT."""
    g = torch.Generator(device="cpu").manual_seed(int(key))
    a = kaiming_init((r, max_in), g)
    b = kaiming_init((max_out, r), g)
    return a, b


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
        self.A, self.B = vera_projections(seed, self.r, self.max_in, self.max_out)
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
    ours, loss, n, err, kind, ok = tl.check_dump_loss(model, tensors, (ids, labels, pos), vera, args.tol)
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
    expect(cfg_json.get("projection_prng_key") == int(args.seed), f"projection_prng_key {cfg_json.get('projection_prng_key')} == run seed {args.seed}")
    r = int(cfg_json.get("r", 0))
    targets = cfg_json.get("target_modules")
    if isinstance(targets, list):
        targets = ",".join(targets)
    seed = int(args.seed)
    vera = Vera(cfg, r, targets, seed)
    for name, ref in (("base_model.vera_A", vera.A), ("base_model.vera_B", vera.B)):
        t = tensors.get(name)
        ok = t is not None and tuple(t.shape) == tuple(ref.shape) and bool(torch.equal(t.float(), ref))
        expect(ok, f"{name} {list(ref.shape)} equal to PEFT's projection for key {seed}")
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


def make_peft(args):
    cfg_json, _ = tl.load_model_dir(args.model)
    cfg = tl.ModelConfig(cfg_json)
    targets = tl.parse_target_modules(args.targets)
    shapes = [cfg.linear_shape(m) for m in targets]
    max_out, max_in = max(s[0] for s in shapes), max(s[1] for s in shapes)
    r = int(args.r)
    g = torch.Generator().manual_seed(int(args.lambda_seed))
    tensors = {}
    for i in range(cfg.num_layers):
        for m in targets:
            out_f, _ = cfg.linear_shape(m)
            tensors[vera_key(i, m, "d")] = 0.1 + 0.5 * torch.rand(r, generator=g)
            tensors[vera_key(i, m, "b")] = 0.3 * torch.randn(out_f, generator=g)
    if not args.no_save_projection:
        tensors["base_model.vera_A"], tensors["base_model.vera_B"] = vera_projections(args.key, r, max_in, max_out)
    os.makedirs(args.make_peft, exist_ok=True)
    tl.write_safetensors(os.path.join(args.make_peft, "adapter_model.safetensors"), tensors, {"format": "pt"})
    conf = {"peft_type": "VERA", "task_type": "CAUSAL_LM", "r": r, "target_modules": sorted(targets),
            "projection_prng_key": int(args.key), "save_projection": not args.no_save_projection,
            "vera_dropout": 0.0, "d_initial": 0.1, "fan_in_fan_out": False, "bias": "none",
            "modules_to_save": None, "init_weights": True, "layers_to_transform": None, "layers_pattern": None,
            "base_model_name_or_path": args.model, "revision": None, "inference_mode": True}
    with open(os.path.join(args.make_peft, "adapter_config.json"), "w") as f:
        json.dump(conf, f, indent=2)
    print(f"vera_check: wrote a PEFT VeRA adapter to {args.make_peft}: r {r}, key {args.key}, projections "
          f"[{r}, {max_in}] / [{max_out}, {r}] {'not ' if args.no_save_projection else ''}saved, "
          f"{len(tensors)} tensors")
    return 0


def check_merged(args):
    with open(os.path.join(args.adapter, "adapter_config.json")) as f:
        conf = json.load(f)
    tensors, _ = tl.read_safetensors(os.path.join(args.adapter, "adapter_model.safetensors"))
    model = tl.LlamaReference.from_dir(args.model)
    merged = tl.LlamaReference.from_dir(args.merged)
    targets = conf["target_modules"]
    targets = ",".join(targets) if isinstance(targets, list) else targets
    vera = Vera(model.cfg, conf["r"], targets, conf["projection_prng_key"])
    with torch.no_grad():
        for k, p in vera.params.items():
            p.copy_(tensors[k].reshape(-1))
        if "base_model.vera_A" in tensors:  # PEFT uses the saved projections
            vera.A, vera.B = tensors["base_model.vera_A"].float(), tensors["base_model.vera_B"].float()
    return tl.check_merged_logits(model, merged, vera, args.tol, "VeRA")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--dump")
    ap.add_argument("--export")
    ap.add_argument("--seed", default="0", help="run seed (for --export)")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--check-init", action="store_true")
    ap.add_argument("--make-peft")
    ap.add_argument("--key", default="0")
    ap.add_argument("--r", default="8")
    ap.add_argument("--targets", default="all")
    ap.add_argument("--lambda-seed", default="1")
    ap.add_argument("--no-save-projection", action="store_true")
    ap.add_argument("--merged")
    ap.add_argument("--adapter")
    args = ap.parse_args()
    run = make_peft if args.make_peft else check_merged if args.merged else check_export if args.export else check_dump
    return tl.run_checker("vera_check", run, args, (tl.ReferenceError_,))


if __name__ == "__main__":
    sys.exit(main())
