"""Check shardlora's PiSSA initialisation (--init pissa, model/pissa.c) against PEFT's
definition (peft/tuners/lora/layer.py LoraLayer.pissa_init): with W = U S V^T (torch.linalg.svd
in float64 here), A = diag(sqrt(S_r / s)) V_r^T, B = U_r diag(sqrt(S_r / s)), the base replaced
by W - s B A.

--dump FILE (a step-1 `--dump-grads` of a PiSSA run, i.e. the initial adapter):
  * s B A equals the top-r SVD product U_r S_r V_r^T of the ORIGINAL weight (relative
    Frobenius error <= --svd-tol; the randomized SVD converges with --pissa-iters);
  * A A^T and B^T B are both diag(S_r / s) (PEFT's balanced split), relative --svd-tol;
  * loss and every gradient equal the PyTorch reference on the residual model W - s B A
    (built here from the dumped factors) with the dumped LoRA (relative --tol), and that loss
    equals the ORIGINAL model's loss without adapter (PiSSA starts where the base is).
--same FILE2: the adapters of two dumps (e.g. tp=1 and tp=4) equal within --layout-tol
  (relative, per tensor).
--export DIR --trained FILE: the converted rank-2r PEFT export (pissa.h pissa_convert) applied
  to the ORIGINAL base gives the logits of the trained PiSSA model (residual base + trained
  adapter from FILE, a dump of the trained adapter) within --tol, and its config has r = 2r,
  lora_alpha = 2 alpha (sqrt(2) alpha with rsLoRA).
Exit 0 when everything matches, 1 otherwise.
"""

import argparse
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_llama as tl  # noqa: E402


def residual_model(model, lora):
    """A LlamaReference whose targeted weights are W - s B A (float32, as the C code)."""
    w = dict(model.w)
    for k, p in lora.params.items():
        layer, module, factor = tl.parse_lora_key(k)
        if factor != "A":
            continue
        name = f"model.layers.{layer}.{tl.module_path(module)}.weight"
        B = lora.params[tl.lora_key(layer, module, "B")].detach().double()
        w[name] = (w[name].double() - lora.scale * (B @ p.detach().double())).float()
    res = tl.LlamaReference.__new__(tl.LlamaReference)
    res.__dict__.update(model.__dict__)
    res.w = w
    return res


def run_dump(args):
    tensors, meta = tl.read_safetensors(args.dump)
    model = tl.LlamaReference.from_dir(args.model)
    lora = tl.lora_from_dump_meta(model.cfg, meta, args.dump)
    lora.load(tensors, args.dump)
    failed, worst_svd = 0, 0.0
    for k, A in lora.params.items():
        layer, module, factor = tl.parse_lora_key(k)
        if factor != "A":
            continue
        B = lora.params[tl.lora_key(layer, module, "B")].detach().double()
        A = A.detach().double()
        W = model.w[f"model.layers.{layer}.{tl.module_path(module)}.weight"].double()
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        r = lora.r
        ref = U[:, :r] @ torch.diag(S[:r]) @ Vh[:r]
        e = float(torch.linalg.norm(lora.scale * B @ A - ref) / torch.linalg.norm(ref))
        d = torch.diag(S[:r] / lora.scale)
        e2 = max(float(torch.linalg.norm(A @ A.T - d) / torch.linalg.norm(d)),
                 float(torch.linalg.norm(B.T @ B - d) / torch.linalg.norm(d)))
        worst_svd = max(worst_svd, e, e2)
        ok = e <= args.svd_tol and e2 <= args.svd_tol
        failed += not ok
        print(f"  {'ok  ' if ok else 'FAIL'} layer {layer} {module}: |sBA - U_r S_r V_r^T| / |.| {e:.3e}, "
              f"balance (AA^T, B^TB vs S_r/s) {e2:.3e}  (S_r {[round(float(x), 4) for x in S[:r]]}, "
              f"S_r+1 {float(S[r]) if r < len(S) else 0:.4f})")
    ids, labels, pos = tl.dump_batch(tensors, args.dump)
    res = residual_model(model, lora)
    ours, loss, n, err, kind, ok = tl.check_dump_loss(res, tensors, (ids, labels, pos), lora, args.tol)
    failed += not ok
    with torch.no_grad():
        base_loss, _ = model.loss(ids, labels, pos, None, training=False)
    e0 = abs(float(base_loss) - ours) / abs(float(base_loss))
    ok0 = e0 <= args.tol
    failed += not ok0
    print(f"  {'ok  ' if ok else 'FAIL'} loss ours {ours:.8f} ref (residual + adapter) {float(loss):.8f} {kind} err {err:.3e}")
    print(f"  {'ok  ' if ok0 else 'FAIL'} loss equals the original model's {float(base_loss):.8f}: rel {e0:.3e}")
    worst = err
    for k, p in lora.params.items():
        err, kind = tl.compare(tensors[k + ".grad"], p.grad)
        ok = tl.passes(err, kind, args.tol)
        failed += not ok
        worst = max(worst, err if kind == "rel" else 0)
        if not ok:
            print(f"  FAIL {k}.grad {kind} err {err:.3e}")
    print(f"pissa_check: {'FAILED ' + str(failed) if failed else 'OK'}: {len(lora.params) // 2} modules, "
          f"worst SVD rel err {worst_svd:.3e} (tol {args.svd_tol:g}), loss + {len(lora.params)} gradients "
          f"worst rel err {worst:.3e} (tol {args.tol:g})")
    return 1 if failed else 0


def run_same(args):
    a, _ = tl.read_safetensors(args.dump)
    b, _ = tl.read_safetensors(args.same)
    worst, failed = 0.0, 0
    for k in a:
        if not (k.endswith("lora_A.weight") or k.endswith("lora_B.weight")):
            continue
        x, y = a[k].double(), b[k].double()
        e = float((x - y).abs().max() / y.abs().max())
        worst = max(worst, e)
        failed += e > args.layout_tol
    print(f"pissa_check same: {'FAILED ' + str(failed) if failed else 'OK'}: initial adapters of {args.dump} and "
          f"{args.same}: worst rel diff {worst:.3e} (tol {args.layout_tol:g})")
    return 1 if failed else 0


def run_export(args):
    with open(os.path.join(args.export, "adapter_config.json")) as f:
        cj = json.load(f)
    tensors, _ = tl.read_safetensors(os.path.join(args.export, "adapter_model.safetensors"))
    trained, meta = tl.read_safetensors(args.trained)
    init, _ = tl.read_safetensors(args.dump)
    model = tl.LlamaReference.from_dir(args.model)
    r, alpha = int(meta["lora_r"]), float(meta["lora_alpha"])
    rs = meta.get("use_rslora") == "1"
    want_alpha = alpha * (math.sqrt(2) if rs else 2)
    failed = 0
    ok = int(cj["r"]) == 2 * r and abs(float(cj["lora_alpha"]) - want_alpha) < 1e-9 * want_alpha
    failed += not ok
    print(f"  {'ok  ' if ok else 'FAIL'} config r {cj['r']} (want {2 * r}), lora_alpha {cj['lora_alpha']} (want {want_alpha:g})")
    # the trained PiSSA model: residual base (from the INITIAL factors) + trained factors
    l_init = tl.lora_from_dump_meta(model.cfg, meta, args.dump)
    l_init.load(init, args.dump)
    l_tr = tl.lora_from_dump_meta(model.cfg, meta, args.trained)
    l_tr.load(trained, args.trained)
    res = residual_model(model, l_init)
    l_conv = tl.Lora(model.cfg, 2 * r, want_alpha, ",".join(l_tr.targets), rs)
    l_conv.load(tensors, args.export)
    ids, _, pos = tl.dump_batch(trained, args.trained)
    with torch.no_grad():
        ref = res.logits(ids, pos, l_tr)
        got = model.logits(ids, pos, l_conv)
    err, kind = tl.compare(got, ref)
    ok = tl.passes(err, kind, args.tol)
    failed += not ok
    print(f"  {'ok  ' if ok else 'FAIL'} converted rank-{2 * r} LoRA on the original base vs residual + trained "
          f"PiSSA: logits {kind} err {err:.3e}")
    print(f"pissa_check export: {'FAILED' if failed else 'OK'}")
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--dump", required=True, help="step-1 dump of a PiSSA run (the initial adapter)")
    ap.add_argument("--same")
    ap.add_argument("--export")
    ap.add_argument("--trained")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--svd-tol", type=float, default=1e-3)
    ap.add_argument("--layout-tol", type=float, default=1e-3)
    args = ap.parse_args()
    run = run_same if args.same else run_export if args.export else run_dump
    return tl.run_checker("pissa_check", run, args, (tl.ReferenceError_,))


if __name__ == "__main__":
    sys.exit(main())
