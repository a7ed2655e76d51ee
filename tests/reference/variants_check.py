"""check_grads.py / check_steps.py for the LoRA-FA and LoRA+ variants (issue 9): the dump's
metadata `adapter_kind` and `loraplus_ratio` turn the PyTorch reference into the variant,
then the unchanged check runs.
- LoRA-FA (Zhang et al. 2023) as PEFT's LoraFAOptimizer (peft/src/peft/optimizers/lorafa.py):
  every lora_A is frozen after its init: it is left out of the optimizer, and its gradient is
  zero (shardlora's dump writes zeros for a frozen tensor, which has no gradient buffer; a
  hook gives the reference the same zeros, so the gradient norm and clipping see only B, as
  in shardlora). In each step, after clipping, every lora_B's gradient is projected before
  the update: g_B <- (1 / s^2) g_B pinv(A A^T + 1e-8 I), s = lora_alpha / r (lora_alpha /
  sqrt(r) with use_rslora) as create_lorafa_optimizer computes it; the dumped gradients
  (`grads`) are the raw ones, taken before the projection.
  PEFT's optimizer's own AdamW is shardlora's --optimizer adamw-hf (torch_llama.AdamWHF);
  --peft-bf16 (before the check's own arguments) runs the projection's matmul under bf16
  autocast, as PEFT does when accelerate's is_bf16_available() is true (e.g. on any CPU): a
  measurement of what that rounding costs, not expected to pass at 1e-4.
- LoRA+ (Hayou et al. 2024; PEFT's create_loraplus_optimizer): lora_B in its own param group
  with lr x ratio (weight decay with that lr, as torch applies it per group).
Also `frozen A B`: every lora_A of dump B equals dump A's bit for bit.

Usage: variants_check.py grads|steps [--peft-bf16] ARGS-of-that-check...
       variants_check.py frozen DUMP1 DUMP2
Exit status 0 when the check passes."""

import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_grads  # noqa: E402
import check_steps  # noqa: E402
import torch_llama as tl  # noqa: E402

_state = {"lora": None, "kind": "lora", "ratio": 0.0, "peft_bf16": False}


def _lora_from_dump_meta(orig):
    def wrapped(cfg, meta, where, **kw):
        lora = orig(cfg, meta, where, **kw)
        _state["kind"] = meta.get("adapter_kind", "lora")
        _state["ratio"] = float(meta.get("loraplus_ratio", "0"))
        if _state["kind"] not in ("lora", "lora-fa"):
            raise tl.ReferenceError_(f"{where}: adapter_kind {_state['kind']!r} is not lora or lora-fa")
        if _state["kind"] == "lora-fa":
            for k, p in lora.params.items():
                if k.endswith("lora_A.weight"):
                    p.register_hook(torch.zeros_like)
        _state["lora"] = lora
        print(f"variants_check: adapter_kind {_state['kind']}, loraplus_ratio {_state['ratio']:g}")
        return lora
    return wrapped


def _scaled(cls):
    """An optimizer class whose groups carry lr_scale: step() runs with lr x lr_scale (the
    replay sets every group's lr to the schedule's value before each step)."""
    class Scaled(cls):
        def step(self, closure=None):
            base = [g["lr"] for g in self.param_groups]
            for g in self.param_groups:
                g["lr"] = g["lr"] * g["lr_scale"]
            try:
                return super().step(closure)
            finally:
                for g, lr in zip(self.param_groups, base):
                    g["lr"] = lr
    return Scaled


def _make_optimizer(orig):
    def wrapped(params, kind, **kw):
        lora = _state["lora"]
        name = {id(p): k for k, p in lora.params.items()}
        ratio = _state["ratio"] if _state["ratio"] > 0 else 1.0
        groups = {"A": [], "B": []}
        for p in params:
            k = name[id(p)]
            if k.endswith("lora_A.weight"):
                if _state["kind"] != "lora-fa":
                    groups["A"].append(p)
            else:
                groups["B"].append(p)
        opt = orig([p for g in groups.values() for p in g], kind, **kw)  # validates the settings
        cls = _scaled(type(opt))
        if _state["kind"] == "lora-fa":
            cls = _lorafa(cls, lora, name)
        pg = [{"params": groups[f], "lr_scale": s} for f, s in (("A", 1.0), ("B", ratio)) if groups[f]]
        out = cls(pg, **opt.defaults)
        print(f"variants_check: optimizer groups " + ", ".join(
            f"{f}: {len(groups[f])} tensors x lr {s:g}" for f, s in (("A", 1.0), ("B", ratio)) if groups[f])
              + (" (lora_A frozen)" if _state["kind"] == "lora-fa" else ""))
        return out
    return wrapped


@torch.no_grad()
def _lorafa_project(lora, B, A):
    """PEFT's LoRA-FA gradient of B (LoraFAOptimizer.step): (1 / s^2) g_B pinv(A A^T + delta I),
    delta = 1e-8, s the scaling create_lorafa_optimizer derives from (r, lora_alpha, use_rslora)."""
    s = lora.alpha / math.sqrt(lora.r) if lora.use_rslora else lora.alpha / lora.r
    AAt = A @ A.T
    inv = torch.linalg.pinv(AAt + 1e-8 * torch.eye(A.shape[0], dtype=A.dtype))
    if _state["peft_bf16"]:
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            g = (1 / s**2) * (B.grad @ inv)
        return g.to(B.grad.dtype)
    return (1 / s**2) * (B.grad @ inv)


def _lorafa(cls, lora, name):
    """The optimizer class with LoRA-FA's step: every lora_B gradient projected (after the
    replay's clipping, as PEFT projects inside step()), then the optimizer's update."""
    def a_of(b_key):
        return lora.params[b_key[: -len("lora_B.weight")] + "lora_A.weight"]

    class LoraFA(cls):
        def step(self, closure=None):
            with torch.no_grad():
                for g in self.param_groups:
                    for p in g["params"]:
                        if p.grad is not None and name[id(p)].endswith("lora_B.weight"):
                            p.grad.copy_(_lorafa_project(lora, p, a_of(name[id(p)])))
            return super().step(closure)
    return LoraFA


def frozen(d1, d2):
    t1, _ = tl.read_safetensors(d1)
    t2, _ = tl.read_safetensors(d2)
    keys = sorted(k for k in t1 if k.endswith("lora_A.weight"))
    bad = [k for k in keys if not torch.equal(t1[k], t2[k])]
    bk = sorted(k for k in t1 if k.endswith("lora_B.weight"))
    moved = sum(not torch.equal(t1[k], t2[k]) for k in bk)
    for k in bad:
        print(f"  FAIL {k} changed: max |diff| {float((t1[k] - t2[k]).abs().max()):.3e}")
    print(f"variants_check frozen: {len(keys) - len(bad)}/{len(keys)} lora_A unchanged, "
          f"{moved}/{len(bk)} lora_B moved")
    return 1 if bad or moved == 0 else 0


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("grads", "steps", "frozen"):
        print(__doc__, file=sys.stderr)
        return 2
    if sys.argv[1] == "frozen":
        return frozen(sys.argv[2], sys.argv[3])
    for flag in ("--peft-bf16",):
        if flag in sys.argv:
            sys.argv.remove(flag)
            _state[flag[2:].replace("-", "_")] = True
            print(f"variants_check: {flag}: replaying PEFT's LoraFAOptimizer more literally "
                  "(a measurement, not the check's rule)")
    tl.lora_from_dump_meta = _lora_from_dump_meta(tl.lora_from_dump_meta)
    tl.make_optimizer = _make_optimizer(tl.make_optimizer)
    mod = check_grads if sys.argv[1] == "grads" else check_steps
    sys.argv = [mod.__file__] + sys.argv[2:]
    return mod.main()


if __name__ == "__main__":
    sys.exit(main())
