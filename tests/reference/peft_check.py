"""PEFT adapters, independently of shardlora's C code: a reader of adapter directories
(json + its own safetensors header parsing + torch) that applies PEFT's rules, the adapted
model rebuilt by PEFT's formula W' = W + s B A on the base weights (s = lora_alpha / r, or
lora_alpha / sqrt(r) with use_rslora; per-module r and alpha from rank_pattern /
alpha_pattern), writers of PEFT adapters for import tests (good and bad ones), and checks of
shardlora's dumps against the rebuilt model.

PEFT's rules, as in huggingface/peft:
- which modules (tuners_utils.check_target_module_exists): exclude_modules first (a regex
  string: re.fullmatch; a list: the name or a ".name" suffix); target_modules a string:
  "all-linear" (every linear but the output layer) or re.fullmatch; a list: the module's
  full name is in it (no layer filter), else a ".target" suffix, then layers_to_transform
  (an int or a list) with the layer index from re.match(rf".*\\.{layers_pattern}\\.(\\d+)\\.")
  or, without layers_pattern, re.match(r".*\\.[^.]*\\.(\\d+)\\.");
- rank and alpha (other.get_pattern_key): the first key K of rank_pattern / alpha_pattern,
  in the file's order, with re.match(rf"(.*\\.)?({K})$", module_name); else r / lora_alpha.

The reference model is tests/reference/torch_llama.py (float64 here).

Commands (exit status 0 when every check passes, 1 otherwise):
  make-adapter --model DIR --out DIR --case NAME [--seed N]
      cases: patterns, layers, fullnames, regex (good); missing-file, missing-config,
      peft-type, bad-shape, unknown-key, dora (bad)
  check-logits --model DIR --adapter DIR|none --dump FILE [--eval-json FILE] [--tol X]
      shardlora eval --dump-logits FILE against the rebuilt model: logits (relative to
      max|ref|) and, with --eval-json (the same eval's --out, one micro-batch holding every
      row), the mean loss
  check-rows --dump FILE --data FILE.jsonl --seq-len T
      the dumped rows are the JSONL's pre-tokenised rows in file order (no packing)
  check-init --model DIR --adapter DIR --dump FILE [--tol X]
      a `train --init-adapter DIR --steps 1 --dump-grads FILE` dump: the adapter the step
      started from is the file's (exactly) and its loss is the rebuilt model's
  same-adapter A B
      two adapter directories hold the same tensors (exactly) and the same per-module
      configuration by PEFT's rules
  compare-dumps D1 D2 [--tol X]
      two --dump-logits files: same batch, logits within X
  batch FILE
      the commands above, one a line (shell words; '-' reads stdin), in one process: torch is
      imported once, not once per check (~2 s each); every line runs, the failed ones are
      named at the end
"""

import argparse
import json
import math
import os
import re
import shlex
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_llama as tl  # noqa: E402

MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def group(module):
    return "self_attn" if module in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"


def module_name(layer, module):
    return f"model.layers.{layer}.{group(module)}.{module}"


# ------------------------------------------------------------------------ safetensors

_DT = {"F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": ("<u2", 2), "I64": ("<i8", 8), "I32": ("<i4", 4)}


def read_st(path):
    """name -> torch tensor (floats as float32, ints as int64), and the metadata. Parses the
    header itself: u64 LE length, JSON, data offsets relative to the end of the header."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    out = {}
    for name, info in header.items():
        dt, shape, (b, e) = info["dtype"], info["shape"], info["data_offsets"]
        npdt, size = _DT[dt]
        assert e - b == size * math.prod(shape), f"{path}: {name}: size mismatch"
        arr = np.frombuffer(raw[base + b:base + e], dtype=npdt)
        if dt == "BF16":
            t = torch.from_numpy((arr.astype(np.uint32) << 16).view(np.float32).copy())
        elif dt in ("I64", "I32"):
            t = torch.from_numpy(arr.astype(np.int64))
        else:
            t = torch.from_numpy(arr.astype(np.float32))
        out[name] = t.reshape(shape)
    return out, meta


def write_st(path, tensors, dtypes=None):
    """name -> float tensor, written as F32 (or dtypes[name] in F32 / F16 / BF16)."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to(torch.float32).contiguous()
        dt = (dtypes or {}).get(name, "F32")
        if dt == "BF16":
            bits = t.numpy().view(np.uint32)
            raw = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2").tobytes()  # round to nearest even
        elif dt == "F16":
            raw = t.numpy().astype("<f2").tobytes()
        else:
            raw = t.numpy().astype("<f4").tobytes()
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"format": "pt"}
    hj = json.dumps(header).encode()
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)) + hj + b"".join(blobs))


# ------------------------------------------------------------------------ PEFT's rules

def targeted(cfg, key):
    ex = cfg.get("exclude_modules")
    if ex:
        if isinstance(ex, str):
            if re.fullmatch(ex, key):
                return False
        elif key in ex or any(key.endswith("." + e) for e in ex):
            return False
    tm = cfg["target_modules"]
    if isinstance(tm, str):
        return tm == "all-linear" or re.fullmatch(tm, key) is not None
    if key in tm:
        return True
    found = any(key.endswith("." + t) for t in tm)
    lt = cfg.get("layers_to_transform")
    using = lt is not None and (len(lt) != 0 if isinstance(lt, list) else True)
    if found and using:
        lp = cfg.get("layers_pattern")
        m = None
        if not lp:
            m = re.match(r".*\.[^.]*\.(\d+)\.", key)
        else:
            for p in [lp] if isinstance(lp, str) else lp:
                m = re.match(rf".*\.{p}\.(\d+)\.", key)
                if m:
                    break
        if m is None:
            return False
        idx = int(m.group(1))
        return idx == lt if isinstance(lt, int) else idx in lt
    return found


def pattern_value(pattern, key, default):
    for k, v in (pattern or {}).items():
        if re.match(rf"(.*\.)?({k})$", key):
            return v
    return default


def read_peft(adapter_dir, num_layers):
    """{(layer, module): (r, alpha, scale, A, B)} by PEFT's rules, checking that the file has
    exactly the targeted modules' factors with PEFT's shapes."""
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        cfg = json.load(f)
    assert cfg.get("peft_type") == "LORA", "peft_type"
    assert not cfg.get("use_dora"), "DoRA"
    tensors, _ = read_st(os.path.join(adapter_dir, "adapter_model.safetensors"))
    out, seen = {}, set()
    for layer in range(num_layers):
        for m in MODULES:
            key = module_name(layer, m)
            if not targeted(cfg, key):
                continue
            r = pattern_value(cfg.get("rank_pattern"), key, cfg.get("r", 8))
            alpha = pattern_value(cfg.get("alpha_pattern"), key, cfg.get("lora_alpha", 8))
            scale = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
            ka = f"base_model.model.{key}.lora_A.weight"
            kb = f"base_model.model.{key}.lora_B.weight"
            A, B = tensors[ka], tensors[kb]
            assert A.shape[0] == r and B.shape[1] == r, f"{key}: r {r} but A {list(A.shape)} B {list(B.shape)}"
            out[(layer, m)] = (r, float(alpha), scale, A, B)
            seen |= {ka, kb}
    extra = set(tensors) - seen
    assert not extra, f"tensors of no targeted module: {sorted(extra)[:3]}"
    return cfg, out


def adapted_model(model_dir, adapter_dir, dtype=torch.float64):
    """The reference model with the adapter merged by PEFT's formula (None: the base)."""
    config, weights = tl.load_model_dir(model_dir, dtype)
    nslots = 0
    if adapter_dir and adapter_dir != "none":
        cfg = tl.ModelConfig(config)
        _, slots = read_peft(adapter_dir, cfg.num_layers)
        for (layer, m), (r, alpha, scale, A, B) in slots.items():
            name = module_name(layer, m) + ".weight"
            out_f, in_f = cfg.linear_shape(m)
            assert tuple(A.shape) == (r, in_f) and tuple(B.shape) == (out_f, r), f"{name}: shapes"
            weights[name] = weights[name] + scale * (B.to(dtype) @ A.to(dtype))
        nslots = len(slots)
    return tl.LlamaReference(config, weights, dtype), nslots


def rel_err(ours, ref):
    ours, ref = ours.to(torch.float64), ref.to(torch.float64)
    return float((ours - ref).abs().max()) / max(float(ref.abs().max()), 1e-30)


# ------------------------------------------------------------------------ adapters for tests

def make_adapter(model_dir, out, case, seed):
    config, _ = tl.load_model_dir(model_dir)
    cfg = tl.ModelConfig(config)
    L = cfg.num_layers
    base = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "bias": "none", "fan_in_fan_out": False,
            "lora_dropout": 0.0, "use_rslora": False, "use_dora": False, "modules_to_save": None,
            "init_lora_weights": True, "inference_mode": True, "base_model_name_or_path": model_dir,
            "layers_to_transform": None, "layers_pattern": None, "rank_pattern": {}, "alpha_pattern": {},
            "revision": None, "peft_version": "0.17.1"}
    dtypes = {}
    bad = None
    if case in ("patterns", "missing-file", "missing-config", "peft-type", "bad-shape", "unknown-key", "dora"):
        # ranks and alphas per module, rsLoRA; gate_proj of layer 0 by its full name first
        c = dict(base, r=4, lora_alpha=8, use_rslora=True,
                 target_modules=["q_proj", "v_proj", "o_proj", "gate_proj", "down_proj"],
                 rank_pattern={"model.layers.1.self_attn.q_proj": 6, "down_proj": 2},
                 alpha_pattern={"model.layers.0.mlp.gate_proj": 12, "o_proj": 3.5})
        bad = None if case == "patterns" else case
    elif case == "layers":
        # a subset of modules on one layer (layers_to_transform), BF16 tensors
        c = dict(base, r=3, lora_alpha=5, target_modules=["k_proj", "up_proj"], layers_to_transform=[L - 1],
                 layers_pattern="layers", rank_pattern={"k_proj": 5})
    elif case == "fullnames":
        # modules named in full; the first matching pattern wins (file order)
        c = dict(base, r=2, lora_alpha=4,
                 target_modules=["model.layers.0.self_attn.q_proj", f"model.layers.{L - 1}.mlp.down_proj",
                                 "model.layers.0.mlp.up_proj"],
                 rank_pattern={"model.layers.0.self_attn.q_proj": 3, "q_proj": 7},
                 alpha_pattern={"up_proj": 9})
    elif case == "regex":
        # target_modules as a regex string, one module excluded by name
        c = dict(base, r=4, lora_alpha=16, target_modules=r".*\.(q_proj|v_proj|gate_proj)",
                 exclude_modules=["model.layers.0.self_attn.v_proj"])
    else:
        raise SystemExit(f"unknown case {case}")
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(L):
        for m in MODULES:
            key = module_name(layer, m)
            if not targeted(c, key):
                continue
            r = pattern_value(c.get("rank_pattern"), key, c["r"])
            out_f, in_f = cfg.linear_shape(m)
            ka, kb = f"base_model.model.{key}.lora_A.weight", f"base_model.model.{key}.lora_B.weight"
            tensors[ka] = torch.randn(r, in_f, generator=g) / math.sqrt(in_f)
            tensors[kb] = torch.randn(out_f, r, generator=g) * 0.3
            if case == "layers":
                dtypes[ka] = dtypes[kb] = "BF16"
    if bad == "peft-type":
        c["peft_type"] = "LOHA"
    elif bad == "bad-shape":
        k = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
        tensors[k] = torch.zeros(tensors[k].shape[0], tensors[k].shape[1] + 1)
    elif bad == "unknown-key":
        tensors["base_model.model.lm_head.lora_A.weight"] = torch.zeros(4, cfg.hidden_size)
    elif bad == "dora":
        # a DoRA adapter whose magnitude vectors are one element too long
        c["use_dora"] = True
        for k in list(tensors):
            if k.endswith("lora_B.weight"):
                tensors[k.replace("lora_B.weight", "lora_magnitude_vector")] = torch.ones(tensors[k].shape[0] + 1)
    os.makedirs(out, exist_ok=True)
    if bad != "missing-config":
        with open(os.path.join(out, "adapter_config.json"), "w") as f:
            json.dump(c, f, indent=2)
    if bad != "missing-file":
        write_st(os.path.join(out, "adapter_model.safetensors"), tensors, dtypes)
    print(f"make-adapter {case}: {len(tensors)} tensors in {out}")
    return 0


# ------------------------------------------------------------------------ checks

def load_dump_batch(dump):
    t, meta = read_st(dump)
    return t, meta, t["input_ids"], t["labels"], t["position_ids"]


def check_logits(a):
    t, _, ids, labels, pos = load_dump_batch(a.dump)
    model, nslots = adapted_model(a.model, a.adapter)
    B, T = ids.shape
    with torch.no_grad():
        ref = model.logits(ids, pos)                      # [B, T, V]
        base = adapted_model(a.model, None)[0].logits(ids, pos) if nslots else None
    ours = t["logits"].reshape(B, T, -1)
    err = rel_err(ours, ref)
    ok = err <= a.tol
    print(f"logits [{B}x{T}, {ours.shape[-1]}] vs PEFT formula ({nslots} adapted modules): "
          f"max rel err {err:.3e} (tol {a.tol:g}) {'ok' if ok else 'FAIL'}")
    if base is not None:
        moved = rel_err(ref, base)
        print(f"  the adapter moves the logits by {moved:.3e} (relative) of the base model's")
        if moved < 100 * a.tol:
            print("  FAIL: the adapter hardly changes the logits; the comparison would prove nothing")
            ok = False
    if a.eval_json:
        with open(a.eval_json) as f:
            ev = json.load(f)
        ref_loss, n = tl.causal_lm_loss(ref, labels)
        ref_loss = float(ref_loss)
        lerr = abs(ev["loss"] - ref_loss) / abs(ref_loss)
        tok_ok = ev["tokens"] == n
        print(f"eval loss {ev['loss']:.8f} vs reference {ref_loss:.8f} over {n} tokens: rel err {lerr:.3e} "
              f"(tol {a.tol:g}); tokens {ev['tokens']} {'ok' if tok_ok else 'FAIL'}")
        ok = ok and lerr <= a.tol and tok_ok
    return 0 if ok else 1


def check_rows(a):
    _, _, ids, labels, pos = load_dump_batch(a.dump)
    seqs = tl.read_jsonl_sequences(a.data)
    B, T = ids.shape
    ok = True
    for j in range(min(B, len(seqs))):
        s_ids, s_lab, _ = seqs[j]
        n = min(len(s_ids), T)
        if ids[j, :n].tolist() != s_ids[:n] or labels[j, :n].tolist() != s_lab[:n]:
            print(f"  FAIL row {j}: ids/labels differ from line {j + 1} of {a.data}")
            ok = False
        if bool((labels[j, n:] != -100).any()):
            print(f"  FAIL row {j}: padding counted in the loss")
            ok = False
    print(f"rows: {min(B, len(seqs))} rows equal the JSONL lines in order: {'ok' if ok else 'FAIL'}")
    return 0 if ok else 1


def check_init(a):
    t, meta, ids, labels, pos = load_dump_batch(a.dump)
    config, _ = tl.load_model_dir(a.model)
    _, slots = read_peft(a.adapter, tl.ModelConfig(config).num_layers)
    ok = True
    for (layer, m), (r, alpha, scale, A, B) in slots.items():
        key = f"base_model.model.{module_name(layer, m)}"
        for f, x in (("lora_A", A), ("lora_B", B)):
            d = t[f"{key}.{f}.weight"]
            if tuple(d.shape) != tuple(x.shape) or not torch.equal(d, x.to(torch.float32)):
                print(f"  FAIL {key}.{f}: the step did not start from the adapter's values")
                ok = False
    adapter_keys = {k for k in t if k.startswith("base_model.") and not k.endswith(".grad")}
    if len(adapter_keys) != 2 * len(slots):
        print(f"  FAIL: the run has {len(adapter_keys)} adapter tensors, the adapter {2 * len(slots)}")
        ok = False
    model, _ = adapted_model(a.model, a.adapter)
    with torch.no_grad():
        ref, _ = model.loss(ids, labels, pos, training=False)
    ours = float(t["loss"].reshape(-1)[0])
    err = abs(ours - float(ref)) / abs(float(ref))
    ok = ok and err <= a.tol
    print(f"init: {len(slots)} modules start from the adapter exactly; step-1 loss {ours:.7f} vs PEFT formula "
          f"{float(ref):.7f}: rel err {err:.3e} (tol {a.tol:g}) {'ok' if ok else 'FAIL'}")
    return 0 if ok else 1


def same_adapter(a):
    ok = True
    ta, _ = read_st(os.path.join(a.a, "adapter_model.safetensors"))
    tb, _ = read_st(os.path.join(a.b, "adapter_model.safetensors"))
    if set(ta) != set(tb):
        print(f"  FAIL: tensor names differ: {sorted(set(ta) ^ set(tb))[:4]}")
        ok = False
    for k in sorted(set(ta) & set(tb)):
        if ta[k].shape != tb[k].shape or not torch.equal(ta[k], tb[k]):
            print(f"  FAIL: {k} differs")
            ok = False
    L = 1 + max(int(re.search(r"layers\.(\d+)\.", k).group(1)) for k in ta)
    _, sa = read_peft(a.a, L)
    _, sb = read_peft(a.b, L)
    ca = {k: (v[0], v[1], v[2]) for k, v in sa.items()}
    cb = {k: (v[0], v[1], v[2]) for k, v in sb.items()}
    if ca != cb:
        print(f"  FAIL: per-module (r, alpha, scale) differ: {sorted(set(ca.items()) ^ set(cb.items()))[:4]}")
        ok = False
    print(f"same adapter: {len(ta)} tensors, {len(ca)} modules with equal (r, alpha, scale): {'ok' if ok else 'FAIL'}")
    return 0 if ok else 1


def compare_dumps(a):
    t1, _ = read_st(a.d1)
    t2, _ = read_st(a.d2)
    ok = all(torch.equal(t1[k], t2[k]) for k in ("input_ids", "labels", "position_ids"))
    err = rel_err(t1["logits"], t2["logits"])
    ok = ok and err <= a.tol
    print(f"dumps {os.path.basename(a.d1)} vs {os.path.basename(a.d2)}: same batch, logits max rel diff "
          f"{err:.3e} (tol {a.tol:g}) {'ok' if ok else 'FAIL'}")
    return 0 if ok else 1


def parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("make-adapter")
    s.add_argument("--model", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--case", required=True)
    s.add_argument("--seed", type=int, default=5)
    s = sub.add_parser("check-logits")
    s.add_argument("--model", required=True)
    s.add_argument("--adapter", required=True)
    s.add_argument("--dump", required=True)
    s.add_argument("--eval-json")
    s.add_argument("--tol", type=float, default=1e-4)
    s = sub.add_parser("check-rows")
    s.add_argument("--dump", required=True)
    s.add_argument("--data", required=True)
    s = sub.add_parser("check-init")
    s.add_argument("--model", required=True)
    s.add_argument("--adapter", required=True)
    s.add_argument("--dump", required=True)
    s.add_argument("--tol", type=float, default=1e-5)
    s = sub.add_parser("same-adapter")
    s.add_argument("a")
    s.add_argument("b")
    s = sub.add_parser("compare-dumps")
    s.add_argument("d1")
    s.add_argument("d2")
    s.add_argument("--tol", type=float, default=1e-5)
    s = sub.add_parser("batch")
    s.add_argument("file")
    return p


def batch(a):
    failed = []
    for line in sys.stdin if a.file == "-" else open(a.file):
        words = shlex.split(line, comments=True)
        if not words:
            continue
        print(f"-- {' '.join(words)}")
        try:
            rc = 1 if words[0] == "batch" else run(words)
        except SystemExit as e:  # argparse's usage errors, make-adapter's unknown case
            if not isinstance(e.code, int):
                print(f"FAIL: {e.code}")
            rc = e.code if isinstance(e.code, int) else 1
        if rc:
            failed.append(line.strip())
    for line in failed:
        print(f"FAIL: in batch: {line}")
    return 1 if failed else 0


def run(argv):
    a = parser().parse_args(argv)
    torch.set_num_threads(1)
    if a.cmd == "batch":
        return batch(a)
    fn = {"make-adapter": lambda: make_adapter(a.model, a.out, a.case, a.seed), "check-logits": lambda: check_logits(a),
          "check-rows": lambda: check_rows(a), "check-init": lambda: check_init(a),
          "same-adapter": lambda: same_adapter(a), "compare-dumps": lambda: compare_dumps(a)}[a.cmd]
    try:
        return fn()
    except (AssertionError, KeyError, tl.ReferenceError_) as e:
        print(f"FAIL: {type(e).__name__}: {e}")
        return 1


def main():
    return run(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
