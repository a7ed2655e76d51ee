"""Independent checks of `shardlora merge` (tests/e2e/merge.sh), written against torch, json and
struct only (no transformers / peft / safetensors packages):

  adapter MODEL OUT [options]     write a PEFT adapter directory with random factors: a subset of
                                  modules, rank_pattern / alpha_pattern, rsLoRA, DoRA, 'exact'
                                  factors (r = 1, s = 1, dyadic values: W + s·B A is rounded once
                                  in F32, so the merged bits are predictable), bad cases
  validate OUT INPUT              strict safetensors check of every output file (header JSON,
                                  dtype sizes, offsets contiguous from 0 to the end of the file),
                                  the index consistent with the files, the headers byte-identical
                                  to the input's, the config and tokenizer files copied as they are
  weights INPUT ADAPTER OUT       every tensor against a merge computed here: PEFT's merge
                                  (lora.Linear.merge: W + (B @ A) * scaling; DoRA:
                                  m / ||W + delta||_row * (W + delta)); unadapted tensors byte-equal
  logits INPUT ADAPTER OUT TOL    the merged model's logits (tests/reference/torch_llama.py on OUT)
                                  against the unmerged adapted model (the reference base plus
                                  PEFT's LoRA / DoRA forward), in float64
  rss SUMMARY SLACK_MIB           peak RSS per rank from merge-summary.json under
                                  start + buffers + slack, and under start + slice
  batch FILE                      the sub-commands above, one a line (shell words; '-' reads
                                  stdin), in one process: torch is imported once, not once per
                                  check (~2 s each); stops at the first failure, naming its line

PEFT's per-module rank and alpha: the first key K of rank_pattern / alpha_pattern (in file
order) with re.match(rf"(.*\\.)?({K})$", module) (peft/utils/other.py get_pattern_key).
Each sub-command exits 1 with a message on failure and prints the figures it measured."""

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
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
import torch_llama as tl  # noqa: E402

DTYPES = {"F64": (np.float64, 8), "F32": (np.float32, 4), "F16": (np.uint16, 2), "BF16": (np.uint16, 2),
          "I64": (np.int64, 8), "I32": (np.int32, 4), "I16": (np.int16, 2), "I8": (np.int8, 1),
          "U8": (np.uint8, 1), "BOOL": (np.uint8, 1)}
AUX = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
       "special_tokens_map.json", "tokenizer.model", "added_tokens.json", "vocab.json", "merges.txt",
       "chat_template.jinja", "chat_template.json", "model.safetensors.index.json"]


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


# ---- strict safetensors ---------------------------------------------------------------

def read_strict(path):
    """(header bytes, {name: (dtype, shape, raw numpy array)}, metadata). Strict: 8-byte
    length, UTF-8 JSON object starting with '{', no duplicate keys, known dtypes, integer
    shapes, data_offsets contiguous from 0 to the end of the file (the Rust crate's rule)."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        fail(f"{path}: {len(blob)} bytes")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > len(blob) - 8:
        fail(f"{path}: header length {n} past the end ({len(blob)} bytes)")
    hb = blob[8:8 + n]
    try:
        text = hb.decode("utf-8")
    except UnicodeDecodeError as e:
        fail(f"{path}: header is not UTF-8: {e}")
    if not text.startswith("{"):
        fail(f"{path}: header does not start with '{{'")

    def no_dups(pairs):
        keys = [k for k, _ in pairs]
        if len(keys) != len(set(keys)):
            fail(f"{path}: duplicate keys in the header")
        return dict(pairs)

    try:
        h = json.loads(text, object_pairs_hook=no_dups)
    except json.JSONDecodeError as e:
        fail(f"{path}: header JSON: {e}")
    meta = h.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        fail(f"{path}: __metadata__ must map strings to strings")
    data = blob[8 + n:]
    spans, out = [], {}
    for name, e in h.items():
        if set(e) != {"dtype", "shape", "data_offsets"}:
            fail(f"{path}: '{name}': keys {sorted(e)}")
        if e["dtype"] not in DTYPES:
            fail(f"{path}: '{name}': dtype {e['dtype']}")
        shape, offs = e["shape"], e["data_offsets"]
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            fail(f"{path}: '{name}': shape {shape}")
        if not (isinstance(offs, list) and len(offs) == 2 and all(isinstance(o, int) for o in offs)):
            fail(f"{path}: '{name}': data_offsets {offs}")
        npd, size = DTYPES[e["dtype"]]
        if offs[1] - offs[0] != math.prod(shape) * size:
            fail(f"{path}: '{name}': {offs[1] - offs[0]} bytes for {e['dtype']}{shape}")
        spans.append((offs[0], offs[1], name))
        out[name] = (e["dtype"], shape, np.frombuffer(data, npd, math.prod(shape), offs[0]) if offs[1] > offs[0]
                     else np.zeros(0, npd))
    at = 0
    for b, e, name in sorted(spans):
        if b != at:
            fail(f"{path}: '{name}' starts at {b}, expected {at} (offsets must be contiguous)")
        at = e
    if at != len(data):
        fail(f"{path}: tensors end at {at}, the data section has {len(data)} bytes")
    return blob[:8 + n], out, meta


def model_files(d):
    """{file name: [tensor names]} from the index, or model.safetensors."""
    ip = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(ip):
        wm = json.load(open(ip))["weight_map"]
        files = {}
        for k, v in wm.items():
            files.setdefault(v, []).append(k)
        return files, json.load(open(ip))
    return {"model.safetensors": None}, None


def cmd_validate(a):
    files, index = model_files(a.input)
    ofiles, oindex = model_files(a.out)
    if sorted(files) != sorted(ofiles):
        fail(f"files {sorted(ofiles)}, input has {sorted(files)}")
    if (index is None) != (oindex is None):
        fail("model.safetensors.index.json present in only one of input and output")
    total = 0
    for fn in sorted(files):
        ih, it, imeta = read_strict(os.path.join(a.input, fn))
        oh, ot, ometa = read_strict(os.path.join(a.out, fn))
        if ih != oh:
            fail(f"{fn}: header bytes differ from the input's")
        if os.path.getsize(os.path.join(a.input, fn)) != os.path.getsize(os.path.join(a.out, fn)):
            fail(f"{fn}: file size differs")
        for name, (dt, shape, arr) in ot.items():
            total += arr.nbytes
            if oindex is not None and oindex["weight_map"].get(name) != fn:
                fail(f"index maps '{name}' to {oindex['weight_map'].get(name)}, it is in {fn}")
        if oindex is not None and sorted(ot) != sorted(files[fn]):
            fail(f"{fn}: tensors differ from the index's list")
        print(f"validate: {fn}: {len(ot)} tensors, {sum(x[2].nbytes for x in ot.values()) / 1e6:.1f} MB, strict OK")
    if oindex is not None:
        ts = oindex.get("metadata", {}).get("total_size")
        if ts is not None and ts != total:
            fail(f"index total_size {ts}, the tensors hold {total} bytes")
    for name in AUX:
        src, dst = os.path.join(a.input, name), os.path.join(a.out, name)
        if os.path.exists(src) != os.path.exists(dst):
            fail(f"{name}: present in only one of input and output")
        if os.path.exists(src) and open(src, "rb").read() != open(dst, "rb").read():
            fail(f"{name}: not copied as it is")
    left = [f for f in os.listdir(a.out) if f.endswith(".tmp")]
    if left:
        fail(f"temporary files left: {left}")
    print(f"validate: index, headers, config and tokenizer files OK ({total / 1e6:.1f} MB of tensors)")


# ---- the adapter as PEFT applies it ---------------------------------------------------

def pattern_key(keys, module):
    """PEFT get_pattern_key: the first key K with re.match(rf"(.*\\.)?({K})$", module)."""
    for k in keys:
        if re.match(rf"(.*\.)?({k})$", module):
            return k
    return None


class Adapter:
    """A PEFT adapter directory: per module (full name) A [r, in], B [out, r], m [out] and the
    scaling PEFT computes (lora_alpha / r, or / sqrt(r) with use_rslora, per module)."""

    def __init__(self, d):
        self.cfg = json.load(open(os.path.join(d, "adapter_config.json")))
        self.t, _ = tl.read_safetensors(os.path.join(d, "adapter_model.safetensors"))
        self.dora = bool(self.cfg.get("use_dora", False))
        rp, ap = self.cfg.get("rank_pattern") or {}, self.cfg.get("alpha_pattern") or {}
        self.mods = {}
        for k in self.t:
            m = re.fullmatch(r"base_model\.model\.(.+)\.lora_A\.weight", k)
            if not m:
                continue
            mod = m.group(1)
            kr, ka = pattern_key(list(rp), mod), pattern_key(list(ap), mod)
            r = rp[kr] if kr is not None else self.cfg["r"]
            alpha = ap[ka] if ka is not None else self.cfg["lora_alpha"]
            s = alpha / math.sqrt(r) if self.cfg.get("use_rslora") else alpha / r
            A = self.t[k].to(torch.float64)
            B = self.t[f"base_model.model.{mod}.lora_B.weight"].to(torch.float64)
            assert A.shape[0] == r and B.shape[1] == r, (mod, r, A.shape, B.shape)
            M = self.t.get(f"base_model.model.{mod}.lora_magnitude_vector")
            self.mods[mod] = (A, B, None if M is None else M.to(torch.float64), s)


class UnmergedDelta:
    """The object LlamaReference._linear asks for delta(layer, module, x): PEFT's forward of an
    unmerged adapter. LoRA: s * B(A(x)). DoRA (peft/tuners/lora/dora.py DoraLinearLayer.forward,
    added to the base output): (m/n - 1) * (x W^T) + m/n * s * B(A(x)), n = ||W + s·B A||_row."""

    def __init__(self, adapter, ref):
        self.a, self.ref = adapter, ref

    def delta(self, layer, module, x, training):
        name = f"model.layers.{layer}.{tl.module_path(module)}"
        if name not in self.a.mods:
            return None
        A, B, M, s = self.a.mods[name]
        lora = F.linear(F.linear(x, A), B) * s
        if M is None:
            return lora
        W = self.ref.w[name + ".weight"]
        scale = (M / torch.linalg.norm(W + s * (B @ A), dim=1)).view(1, -1)
        return (scale - 1) * F.linear(x, W) + scale * lora


def cmd_logits(a):
    ids = torch.randint(0, json.load(open(os.path.join(a.input, "config.json")))["vocab_size"], (2, 24),
                        generator=torch.Generator().manual_seed(7))
    base = tl.LlamaReference.from_dir(a.input, torch.float64)
    adapter = Adapter(a.adapter)
    want = base.logits(ids, lora=UnmergedDelta(adapter, base))
    plain = base.logits(ids)
    merged = tl.LlamaReference.from_dir(a.out, torch.float64).logits(ids)
    err = float((merged - want).abs().max() / want.abs().max())
    effect = float((want - plain).abs().max() / want.abs().max())
    print(f"logits: merged vs unmerged adapted model: max rel error {err:.3e} (tol {a.tol:g}); "
          f"the adapter moves the logits by {effect:.3e} (relative)")
    if not err <= a.tol:
        fail(f"logits differ by {err:.3e} > {a.tol:g}")
    if not effect > 10 * err:
        fail(f"the adapter's effect ({effect:.3e}) is not well above the error ({err:.3e}): the test shows nothing")


# ---- weights against a merge done here -------------------------------------------------

def to_f32(dt, arr):
    if dt == "F32":
        return torch.from_numpy(arr.astype(np.float32))
    if dt == "BF16":
        return torch.from_numpy((arr.astype(np.uint32) << 16).view(np.float32))
    return torch.from_numpy(arr.view(np.float16).astype(np.float32))


def from_f32(dt, t):
    """torch's rounding (round to nearest even) to the file dtype, as raw numpy."""
    if dt == "F32":
        return t.to(torch.float32).numpy()
    if dt == "BF16":
        return t.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    return t.to(torch.float16).numpy().view(np.uint16)


def cmd_weights(a):
    adapter = Adapter(a.adapter)
    files, _ = model_files(a.input)
    seen, worst = set(), {}
    for fn in sorted(files):
        _, it, _ = read_strict(os.path.join(a.input, fn))
        _, ot, _ = read_strict(os.path.join(a.out, fn))
        for name, (dt, shape, arr) in it.items():
            got = ot[name][2]
            mod = name[:-len(".weight")] if name.endswith(".weight") else None
            if mod not in adapter.mods:
                if arr.tobytes() != got.tobytes():
                    fail(f"{fn}: unadapted '{name}' changed")
                continue
            seen.add(mod)
            A, B, M, s = adapter.mods[mod]
            W = to_f32(dt, arr).view(shape)
            # PEFT's order in float32: delta = (B @ A) * scaling; W + delta; DoRA factor
            d32 = (B.float() @ A.float()) * s
            w32 = W + d32
            w64 = W.double() + (B @ A) * s
            if M is not None:
                w32 = (M.float() / torch.linalg.norm(w32, dim=1)).view(-1, 1) * w32
                w64 = (M / torch.linalg.norm(w64, dim=1)).view(-1, 1) * w64
            ours = got.reshape(shape)
            if dt == "F32":
                err = float((torch.from_numpy(ours.copy()).double() - w64).abs().max() / w64.abs().max())
                worst[dt] = max(worst.get(dt, 0.0), err)
                if not err <= 1e-6:
                    fail(f"{fn}: '{name}' differs from W + s·B A by {err:.3e} (relative)")
                continue
            ref = from_f32(dt, w32).reshape(shape)
            diff = np.abs(ours.astype(np.int32) - ref.astype(np.int32))
            ndiff = int((diff != 0).sum())
            worst[dt] = max(worst.get(dt, 0.0), ndiff / diff.size)
            if a.exact and ndiff:
                i = int(np.argmax(diff.reshape(-1)))
                fail(f"{fn}: '{name}': {ndiff} elements differ from torch's rounding of the F32 merge "
                     f"(first: ours {ours.reshape(-1)[i]:#06x}, torch {ref.reshape(-1)[i]:#06x})")
            # otherwise 1 ulp, where the F32 sums of B @ A differ in the last bit
            if diff.max() > 1 or ndiff > 0.01 * diff.size:
                fail(f"{fn}: '{name}': {ndiff} of {diff.size} elements differ, by up to {diff.max()} ulp")
    missing = sorted(set(adapter.mods) - seen)
    if missing:
        fail(f"adapted modules not found in the model: {missing[:3]}")
    print(f"weights: {len(seen)} adapted tensors as PEFT merges them ("
          + ", ".join(f"{k}: {'max rel err %.2e' % v if k == 'F32' else 'differing %.2e' % v}" for k, v in worst.items())
          + f"{', bit-exact' if a.exact else ''}); every other tensor byte-identical")


# ---- adapters written here -------------------------------------------------------------

def cmd_adapter(a):
    cfg = tl.ModelConfig(json.load(open(os.path.join(a.model, "config.json"))))
    g = torch.Generator().manual_seed(a.seed)
    rp = dict(kv.split("=") for kv in a.rank_pattern)
    ap = dict(kv.split("=") for kv in a.alpha_pattern)
    rp = {k: int(v) for k, v in rp.items()}
    ap = {k: float(v) for k, v in ap.items()}
    mods = a.modules.split(",")
    tensors = {}
    layers = range(cfg.num_layers + a.extra_layers)
    for i in layers:
        for m in mods:
            name = f"model.layers.{i}.{tl.module_path(m)}"
            kr = pattern_key(list(rp), name)
            r = rp[kr] if kr is not None else a.r
            out_f, in_f = cfg.linear_shape(m)
            if a.wrong_shape:
                in_f += 1
            if a.exact:
                A = torch.randint(-64, 65, (r, in_f), generator=g).double() / 256
                B = torch.randint(-64, 65, (out_f, r), generator=g).double() / 256
            else:
                A = torch.randn(r, in_f, generator=g, dtype=torch.float64) / math.sqrt(in_f)
                B = torch.randn(out_f, r, generator=g, dtype=torch.float64) * a.b_std
            if a.nan_last_row and i == cfg.num_layers - 1 and m == mods[-1]:
                B[-1, 0] = float("nan")
            if a.drop is not None and a.drop in name:
                continue
            p = f"base_model.model.{name}"
            dt = torch.bfloat16 if a.bf16 else torch.float32
            tensors[p + ".lora_A.weight"] = A.to(dt)
            tensors[p + ".lora_B.weight"] = B.to(dt)
            if a.dora and not a.no_magnitude:
                # around the row norms of W, as PEFT initialises m, then moved
                tensors[p + ".lora_magnitude_vector"] = (1.0 + 0.3 * torch.rand(out_f, generator=g, dtype=torch.float64)).to(dt)
    os.makedirs(a.out, exist_ok=True)
    tl.write_safetensors(os.path.join(a.out, "adapter_model.safetensors"), tensors, {"format": "pt"})
    conf = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": a.model, "r": a.r,
            "lora_alpha": a.alpha, "lora_dropout": 0.0, "target_modules": mods, "use_rslora": a.rslora,
            "use_dora": a.dora, "bias": "none", "fan_in_fan_out": False, "init_lora_weights": True,
            "modules_to_save": None, "rank_pattern": rp, "alpha_pattern": ap}
    with open(os.path.join(a.out, "adapter_config.json"), "w") as f:
        json.dump(conf, f, indent=2)
    print(f"adapter: {a.out}: {len(tensors)} tensors, modules {mods}, r {a.r}, alpha {a.alpha}, "
          f"rank_pattern {rp}, alpha_pattern {ap}, rslora {a.rslora}, dora {a.dora}")


# ---- memory ----------------------------------------------------------------------------

def cmd_rss(a):
    s = json.load(open(a.summary))
    mib = 1 << 20
    print(f"rss: {s['ranks']} ranks, chunk {s['chunk_bytes'] / mib:.2f} MiB, {s['total_bytes'] / 1e6:.1f} MB "
          f"in {s['seconds']:.2f} s ({s['mb_per_s']:.1f} MB/s)")
    bad = []
    for r in s["per_rank"]:
        grew = r["peak_rss_bytes"] - r["start_rss_bytes"]
        bound = r["buffer_bytes"] + a.slack_mib * mib
        print(f"rss: rank {r['rank']}: peak {r['peak_rss_bytes'] / mib:.1f} MiB = start "
              f"{r['start_rss_bytes'] / mib:.1f} + {grew / mib:.1f} MiB; buffers {r['buffer_bytes'] / mib:.2f} MiB "
              f"(+ slack {a.slack_mib} MiB = {bound / mib:.1f}); slice {r['slice_bytes'] / mib:.1f} MiB; "
              f"read {r['bytes_read'] / 1e6:.1f} MB, wrote {r['bytes_written'] / 1e6:.1f} MB")
        if grew > bound:
            bad.append(f"rank {r['rank']} grew {grew / mib:.1f} MiB > buffers + slack {bound / mib:.1f} MiB")
        if grew > r["slice_bytes"] + r["buffer_bytes"]:
            bad.append(f"rank {r['rank']} grew {grew / mib:.1f} MiB > its slice + buffers")
        if a.max_buffer_mib is not None and r["buffer_bytes"] > a.max_buffer_mib * mib:
            bad.append(f"rank {r['rank']} buffers {r['buffer_bytes'] / mib:.2f} MiB > {a.max_buffer_mib} MiB")
    if sum(r["bytes_written"] for r in s["per_rank"]) < s["total_bytes"]:
        bad.append("the ranks wrote fewer bytes than the model holds")
    if bad:
        fail("; ".join(bad))


def parser():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("adapter")
    q.add_argument("model")
    q.add_argument("out")
    q.add_argument("--modules", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")
    q.add_argument("--r", type=int, default=8)
    q.add_argument("--alpha", type=float, default=16)
    q.add_argument("--rank-pattern", nargs="*", default=[])
    q.add_argument("--alpha-pattern", nargs="*", default=[])
    q.add_argument("--rslora", action="store_true")
    q.add_argument("--dora", action="store_true")
    q.add_argument("--exact", action="store_true")
    q.add_argument("--bf16", action="store_true", help="store the factors as BF16")
    q.add_argument("--b-std", type=float, default=0.05)
    q.add_argument("--seed", type=int, default=1)
    q.add_argument("--extra-layers", type=int, default=0, help="bad: adapters for layers the model lacks")
    q.add_argument("--wrong-shape", action="store_true", help="bad: lora_A one column too wide")
    q.add_argument("--no-magnitude", action="store_true", help="bad: use_dora without magnitudes")
    q.add_argument("--nan-last-row", action="store_true", help="bad: a NaN in the last row of one lora_B")
    q.add_argument("--drop", help="bad: leave out the tensors of the modules whose name contains this")
    q = sub.add_parser("validate")
    q.add_argument("out")
    q.add_argument("input")
    q = sub.add_parser("weights")
    q.add_argument("input")
    q.add_argument("adapter")
    q.add_argument("out")
    q.add_argument("--exact", action="store_true")
    q = sub.add_parser("logits")
    q.add_argument("input")
    q.add_argument("adapter")
    q.add_argument("out")
    q.add_argument("tol", type=float)
    q = sub.add_parser("rss")
    q.add_argument("summary")
    q.add_argument("slack_mib", type=float)
    q.add_argument("--max-buffer-mib", type=float)
    q = sub.add_parser("batch")
    q.add_argument("file")
    return p


def cmd_batch(a):
    lines = sys.stdin if a.file == "-" else open(a.file)
    for line in lines:
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if words[0] == "batch":
            fail("batch: a batch inside a batch")
        print(f"-- {' '.join(words)}")
        try:
            run(words)
        except SystemExit as e:
            if e.code:
                print(f"FAIL: in batch: {line.strip()}")
            raise


def run(argv):
    a = parser().parse_args(argv)
    {"adapter": cmd_adapter, "validate": cmd_validate, "weights": cmd_weights, "logits": cmd_logits,
     "rss": cmd_rss, "batch": cmd_batch}[a.cmd](a)


def main():
    run(sys.argv[1:])


if __name__ == "__main__":
    main()
