"""Checks of tests/mpi/variants_layouts.sh (issue 9, LoRA-FA / LoRA+):
  layouts DIR TOL LAYOUT...   dump-LAYOUT.safetensors (step 3) equal dump-1x1's: loss, every
                              adapter tensor and gradient (relative max-abs per tensor); the
                              row-parallel modules (o_proj, down_proj) are adapted and their
                              lora_B moved (so tp > 1 exercises LoRA-FA's projection with A
                              sharded by columns)
  memory LORA_OUT FA_OUT      summary.json peak optimizer bytes: LoRA-FA's = LoRA's / 2
  export ADAPTER DUMP         adapter_config.json is plain LoRA (peft_type LORA, use_rslora true,
                              use_dora false) and its tensors equal the dump's values
  import ADAPTER DUMP         the dump of a run started from ADAPTER holds its values and says
                              use_rslora 1
Exit status 0 when every comparison passes."""

import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
import torch_llama as tl  # noqa: E402


def rel(a, b):
    d = float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
    s = float(b.double().abs().max()) if b.numel() else 0.0
    return d / s if s > 1e-9 else d


def layouts(w, tol, lays):
    ref, _ = tl.read_safetensors(os.path.join(w, "dump-1x1.safetensors"))
    bad = 0
    row_b = [k for k in ref if k.endswith("lora_B.weight") and (".o_proj." in k or ".down_proj." in k)]
    moved = sum(bool(ref[k].abs().max() > 0) for k in row_b)
    ok = row_b and moved == len(row_b)
    bad += not ok
    print(f"  {'ok  ' if ok else 'FAIL'} row-parallel lora_B (o_proj, down_proj): {len(row_b)} adapted, "
          f"{moved} moved from 0")
    for lay in lays[1:]:
        t, _ = tl.read_safetensors(os.path.join(w, f"dump-{lay}.safetensors"))
        worst, wk = 0.0, ""
        for k, v in ref.items():
            if not v.is_floating_point():
                continue
            if k not in t or t[k].shape != v.shape:
                print(f"  FAIL {lay}: {k} missing or of another shape")
                bad += 1
                continue
            e = rel(t[k], v)
            if e > worst:
                worst, wk = e, k
        ok = worst <= tol
        bad += not ok
        print(f"  {'ok  ' if ok else 'FAIL'} layout {lay} vs 1x1: {len(ref)} tensors (loss, adapter, grads), "
              f"worst rel err {worst:.3e} ({wk}), tol {tol:g}")
    return bad


def memory(a, b):
    def opt(d):
        with open(os.path.join(d, "summary.json")) as f:
            return json.load(f)["peak_memory_bytes_rank0"]["optimizer"]
    la, fa = opt(a), opt(b)
    ok = la > 0 and 2 * fa == la
    print(f"  {'ok  ' if ok else 'FAIL'} optimizer bytes: lora {la}, lora-fa {fa} (ratio {fa / la:.3f}, want 0.5)")
    return not ok


def export(adapter, dump):
    with open(os.path.join(adapter, "adapter_config.json")) as f:
        cfg = json.load(f)
    bad = 0
    for k, want in (("peft_type", "LORA"), ("use_rslora", True), ("use_dora", False)):
        ok = cfg.get(k) == want
        bad += not ok
        print(f"  {'ok  ' if ok else 'FAIL'} adapter_config.json {k} = {cfg.get(k)!r} (want {want!r})")
    t, _ = tl.read_safetensors(os.path.join(adapter, "adapter_model.safetensors"))
    d, _ = tl.read_safetensors(dump)
    keys = sorted(k for k in d if k.endswith(".weight"))
    # the dump holds the adapter before the last step's update: compare the exported one
    # with the checkpoint-free final values is not possible from it, so compare key sets and
    # shapes, and values of the frozen lora_A (unchanged by training)
    for k in keys:
        if k not in t or t[k].shape != d[k].shape:
            print(f"  FAIL exported {k} missing or of another shape")
            bad += 1
        elif k.endswith("lora_A.weight") and not torch.equal(t[k], d[k]):
            print(f"  FAIL exported frozen {k} differs from the run's")
            bad += 1
    extra = sorted(set(t) - set(keys))
    bad += len(extra)
    print(f"  {'ok  ' if not bad else 'FAIL'} export: {len(t)} tensors, plain LoRA keys"
          + (f"; extra {extra[:3]}" if extra else ""))
    return bad


def import_(adapter, dump):
    t, _ = tl.read_safetensors(os.path.join(adapter, "adapter_model.safetensors"))
    d, meta = tl.read_safetensors(dump)
    bad = [k for k in t if k not in d or not torch.equal(t[k], d[k])]
    ok = not bad and meta.get("use_rslora") == "1"
    print(f"  {'ok  ' if ok else 'FAIL'} import: {len(t) - len(bad)}/{len(t)} tensors equal, "
          f"use_rslora {meta.get('use_rslora')}")
    return not ok


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "layouts":
        return 1 if layouts(sys.argv[2], float(sys.argv[3]), sys.argv[4:]) else 0
    if cmd == "memory":
        return 1 if memory(sys.argv[2], sys.argv[3]) else 0
    if cmd == "export":
        return 1 if export(sys.argv[2], sys.argv[3]) else 0
    if cmd == "import":
        return 1 if import_(sys.argv[2], sys.argv[3]) else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
