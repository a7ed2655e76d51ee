"""Self-check of the PyTorch reference (torch_llama.py), without shardlora's C code:
1. the vectorised decoder (RoPE incl. llama3 scaling, GQA, biases, packed-document causal
   mask, sliding window, LoRA) against a naive per-token loop written independently in
   float64, plus negative controls showing the comparison would catch a wrong mask, a wrong
   kv-head mapping or an interleaved RoPE;
2. two documents packed in one row give the per-token losses of each document run alone;
3. LoRA gradients vs torch.autograd.gradcheck (float64), fp32 vs fp64 gradients, and the
   LoRA path vs the merged weight W + s B A (PEFT semantics);
4. the safetensors reader against bytes packed by hand with struct, error cases, the writer
   round trip and sharded / BF16 model directories;
5. loss semantics (HF shift, -100, mean over the batch's counted tokens) and the batching rule;
6. Philox4x32-10 (philox.py): Random123 known answers, the vectorised numpy version against a
   scalar pure-Python one, shardlora's counter layout, u01; dropout keep rates within a few
   sigma of 1 - p and independent streams; the init distributions; gradcheck through the
   reference with Philox dropout masks (deterministic, so gradcheck applies).
Exits non-zero on any failure. Run: /usr/bin/python3 tests/reference/selftest.py
"""

import json
import math
import os
import struct
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import philox  # noqa: E402
import torch_llama as tl  # noqa: E402

FAILURES = []


def check(ok, what, detail=""):
    print(f"  {'ok  ' if ok else 'FAIL'} {what}{(': ' + detail) if detail else ''}")
    if not ok:
        FAILURES.append(what)


# --------------------------------------------------------------------------------------
# 1. naive per-token decoder, float64, sharing nothing with torch_llama but the weight names

def naive_inv_freq(c):
    D = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
    theta = c.get("rope_theta", 10000.0)
    out = []
    for i in range(D // 2):
        f = 1.0 / theta ** (2 * i / D)
        rs = c.get("rope_scaling")
        if rs:
            wl = 2 * math.pi / f
            lo_wl = rs["original_max_position_embeddings"] / rs["low_freq_factor"]
            hi_wl = rs["original_max_position_embeddings"] / rs["high_freq_factor"]
            if wl > lo_wl:
                f = f / rs["factor"]
            elif wl >= hi_wl:
                s = (rs["original_max_position_embeddings"] / wl - rs["low_freq_factor"]) / (
                    rs["high_freq_factor"] - rs["low_freq_factor"])
                f = (1 - s) * f / rs["factor"] + s * f
        out.append(f)
    return out


def naive_logits(c, w, lora, scale, ids, pos, doc_mask=True, kv_map="div", rope="half", window=None):
    """[B, T, V] float64 by explicit loops over rows, tokens and heads."""
    C = c["hidden_size"]
    H = c["num_attention_heads"]
    KV = c.get("num_key_value_heads") or H
    D = c.get("head_dim") or C // H
    L = c["num_hidden_layers"]
    eps = c["rms_norm_eps"]
    arch = c["architectures"][0]
    inv = naive_inv_freq(c)

    def W(name):
        return w[name].double()

    def proj(layer, mod, x):
        grp = "self_attn" if mod in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
        base = f"model.layers.{layer}.{grp}.{mod}"
        y = W(base + ".weight") @ x
        if base + ".bias" in w:
            y = y + W(base + ".bias")
        ka = f"base_model.model.{base}.lora_A.weight"
        if lora is not None and ka in lora:
            a = lora[ka].double()
            b = lora[f"base_model.model.{base}.lora_B.weight"].double()
            y = y + scale * (b @ (a @ x))
        return y

    def norm(x, wn):
        ms = sum(float(v) ** 2 for v in x) / len(x)
        return x / math.sqrt(ms + eps) * wn

    def rot(x, p):
        y = x.clone()
        for i in range(D // 2):
            ang = p * inv[i]
            cs, sn = math.cos(ang), math.sin(ang)
            if rope == "half":
                a, b = x[i], x[i + D // 2]
                y[i], y[i + D // 2] = a * cs - b * sn, b * cs + a * sn
            else:  # interleaved pairs (the GPT-J layout), a negative control
                a, b = x[2 * i], x[2 * i + 1]
                y[2 * i], y[2 * i + 1] = a * cs - b * sn, b * cs + a * sn
        return y

    Bn, T = ids.shape
    V = c["vocab_size"]
    out = torch.zeros(Bn, T, V, dtype=torch.float64)
    lm = W("model.embed_tokens.weight") if c.get("tie_word_embeddings") else W("lm_head.weight")
    for bi in range(Bn):
        p = [int(v) for v in pos[bi]]
        doc, d = [], 0
        for t in range(T):
            if t > 0 and p[t] == 0:
                d += 1
            doc.append(d)
        xs = [W("model.embed_tokens.weight")[int(ids[bi, t])].clone() for t in range(T)]
        for layer in range(L):
            pre = f"model.layers.{layer}."
            use_window = window if (arch != "Qwen2ForCausalLM" or layer >= c.get("max_window_layers", 28)) else None
            hs = [norm(x, W(pre + "input_layernorm.weight")) for x in xs]
            q = [proj(layer, "q_proj", h) for h in hs]
            k = [proj(layer, "k_proj", h) for h in hs]
            v = [proj(layer, "v_proj", h) for h in hs]
            att = []
            for t in range(T):
                heads = []
                for h in range(H):
                    g = h // (H // KV) if kv_map == "div" else h % KV
                    qh = rot(q[t][h * D:(h + 1) * D], p[t])
                    js = [j for j in range(t + 1) if (not doc_mask or doc[j] == doc[t])
                          and (use_window is None or t - j < use_window)]
                    sc = [float(qh @ rot(k[j][g * D:(g + 1) * D], p[j])) / math.sqrt(D) for j in js]
                    m = max(sc)
                    e = [math.exp(s - m) for s in sc]
                    z = sum(e)
                    heads.append(sum((e[n] / z) * v[j][g * D:(g + 1) * D] for n, j in enumerate(js)))
                att.append(torch.cat(heads))
            xs = [xs[t] + proj(layer, "o_proj", att[t]) for t in range(T)]
            hs = [norm(x, W(pre + "post_attention_layernorm.weight")) for x in xs]
            for t in range(T):
                gt = proj(layer, "gate_proj", hs[t])
                ut = proj(layer, "up_proj", hs[t])
                silu = torch.tensor([float(a) / (1 + math.exp(-float(a))) for a in gt], dtype=torch.float64)
                xs[t] = xs[t] + proj(layer, "down_proj", silu * ut)
        for t in range(T):
            out[bi, t] = lm @ norm(xs[t], W("model.norm.weight"))
    return out


def rel_max(a, b):
    return float((a - b).abs().max() / b.abs().max())


NAIVE_CASES = [
    ("llama: GQA, head_dim != C/H, attention+mlp bias, llama3 rope, tied",
     tl.random_config("LlamaForCausalLM", head_dim=12, attention_bias=True, mlp_bias=True,
                      tie_word_embeddings=True, rope_theta=10000.0,
                      rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0, "original_max_position_embeddings": 256})),
    ("qwen2: q/k/v bias, one kv head (MQA)",
     tl.random_config("Qwen2ForCausalLM", num_key_value_heads=1, rope_theta=1000.0)),
    ("mistral: sliding_window 3",
     tl.random_config("MistralForCausalLM", sliding_window=3)),
]


def packed_batch():
    """Row 0: a 5-token and a 7-token document then 4 pad tokens with continuing positions;
    row 1: one sequence whose positions start at 3, with some labels masked."""
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(1, 64, (2, 16), generator=g)
    pos = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
                        list(range(3, 19))])
    labels = ids.clone()
    labels[0, 12:] = -100
    labels[1, :4] = -100
    return ids, labels, pos


def test_naive():
    print("1. decoder vs naive per-token loop (float64)")
    ids, _, pos = packed_batch()
    ids, pos = ids[:, :12], pos[:, :12]
    for what, c in NAIVE_CASES:
        w = tl.random_weights(c, seed=1, std=0.25, norm_jitter=0.2, dtype=torch.float64)
        model = tl.LlamaReference(c, w, dtype=torch.float64)
        lora = tl.Lora(model.cfg, 2, 5.0, "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                       use_rslora=(c["architectures"][0] == "Qwen2ForCausalLM"), dtype=torch.float64)
        lora.init_random(torch.Generator().manual_seed(2), std=0.2)
        lp = {k: v.detach() for k, v in lora.params.items()}
        with torch.no_grad():
            ours = model.logits(ids, pos, lora, training=False)
        window = c.get("sliding_window")
        ref = naive_logits(c, w, lp, lora.scale, ids, pos, window=window)
        # RoPE tables are float32 in HF (and here); the naive loop uses float64 angles.
        err = rel_max(ours, ref)
        check(err < 1e-5, what, f"max rel diff {err:.2e}")
        controls = [("no document mask", dict(doc_mask=False)), ("interleaved rope", dict(rope="pairs"))]
        if model.cfg.num_kv_heads not in (1, model.cfg.num_heads):
            controls.append(("kv head h % KV", dict(kv_map="mod")))
        if window:
            controls.append(("no sliding window", dict(window=None)))
        for cname, kw in controls:
            kw.setdefault("window", window)
            bad = naive_logits(c, w, lp, lora.scale, ids, pos, **kw)
            e = rel_max(ours, bad)
            check(e > 1e-3, f"   negative control '{cname}' is detected", f"diff {e:.2e}")
    # llama3 inverse frequencies against the scalar formula, all three bands present
    c = NAIVE_CASES[0][1]
    got = tl.rope_inv_freq(tl.ModelConfig(c)).double()
    exp = torch.tensor(naive_inv_freq(c), dtype=torch.float64)
    check(float(((got - exp) / exp).abs().max()) < 1e-6, "llama3 inv_freq (6 frequencies, 3 bands)")


# --------------------------------------------------------------------------------------
# 2. packed documents == documents alone

def test_packing():
    print("2. packed documents vs each document alone (float32)")
    for what, c in NAIVE_CASES[:2]:
        model = tl.LlamaReference(c, tl.random_weights(c, seed=3, std=0.25, norm_jitter=0.2))
        lora = tl.Lora(model.cfg, 4, 8.0, "q_proj,v_proj,down_proj")
        lora.init_random(torch.Generator().manual_seed(4))
        ids, labels, pos = packed_batch()
        with torch.no_grad():
            packed = tl.token_losses(model.logits(ids, pos, lora), labels)
            a = tl.token_losses(model.logits(ids[:1, 0:5], None, lora), labels[:1, 0:5])
            b = tl.token_losses(model.logits(ids[:1, 5:12], None, lora), labels[:1, 5:12])
        e = max(float((packed[0, 0:4] - a[0]).abs().max()), float((packed[0, 5:11] - b[0]).abs().max()))
        check(e < 1e-5, what, f"max |diff| of per-token losses {e:.2e}")


# --------------------------------------------------------------------------------------
# 3. gradients

def test_grads():
    print("3. LoRA gradients")
    c = tl.random_config("Qwen2ForCausalLM", hidden_size=16, intermediate_size=24, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=8, vocab_size=32)
    w = tl.random_weights(c, seed=5, std=0.3, norm_jitter=0.2, dtype=torch.float64)
    model = tl.LlamaReference(c, w, dtype=torch.float64)
    lora = tl.Lora(model.cfg, 2, 3.0, tl.LORA_MODULES, use_rslora=True, dtype=torch.float64)
    lora.init_random(torch.Generator().manual_seed(6), std=0.3)
    ids, labels, pos = packed_batch()
    ids, labels, pos = ids[:, :8] % 32, labels[:, :8] % 32, pos[:, :8]
    labels[1, :3] = -100
    keys = list(lora.params)
    inputs = tuple(lora.params[k].detach().clone().requires_grad_(True) for k in keys)

    def f(*ps):
        lora.params = dict(zip(keys, ps))
        return model.loss(ids, labels, pos, lora)[0]

    ok = torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5, raise_exception=False)
    check(ok, f"gradcheck float64, {sum(p.numel() for p in inputs)} adapter elements, all 7 modules")

    # fp32 gradients agree with fp64 far below the 1e-4 tolerance the checks use
    lora.params = dict(zip(keys, inputs))
    for p in inputs:
        p.grad = None
    model.loss(ids, labels, pos, lora)[0].backward()
    g64 = {k: p.grad.clone() for k, p in zip(keys, inputs)}
    m32 = tl.LlamaReference(c, w, dtype=torch.float32)
    l32 = tl.Lora(m32.cfg, 2, 3.0, tl.LORA_MODULES, use_rslora=True)
    l32.load({k: p.detach().float() for k, p in zip(keys, inputs)})
    m32.loss(ids, labels, pos, l32)[0].backward()
    worst = max(tl.compare(l32.params[k].grad, g64[k])[0] for k in keys)
    check(worst < 1e-5, "fp32 vs fp64 adapter gradients", f"max rel err {worst:.2e}")

    # LoRA path == merged weights W + s B A (what a PEFT merge produces)
    merged = dict(w)
    for i in range(model.cfg.num_layers):
        for m in tl.LORA_MODULES:
            name = f"model.layers.{i}.{tl.module_path(m)}.weight"
            a = lora.params[tl.lora_key(i, m, "A")].detach()
            b = lora.params[tl.lora_key(i, m, "B")].detach()
            merged[name] = w[name] + lora.scale * (b @ a)
    with torch.no_grad():
        e = rel_max(model.logits(ids, pos, lora), tl.LlamaReference(c, merged, torch.float64).logits(ids, pos))
    check(e < 1e-12, "LoRA forward == merged W + (alpha/sqrt(r)) B A", f"max rel diff {e:.2e}")

    # recompute (activation checkpointing) gives the same gradients
    for p in inputs:
        p.grad = None
    model.loss(ids, labels, pos, lora, recompute=True)[0].backward()
    e = max(tl.compare(p.grad, g64[k])[0] for k, p in zip(keys, inputs))
    check(e < 1e-12, "per-layer recompute gives identical gradients", f"{e:.2e}")


# --------------------------------------------------------------------------------------
# 4. safetensors

def hand_file(path, entries, meta, corrupt=None):
    """entries: (name, dtype, shape, raw bytes). corrupt: a function editing the header dict."""
    header, data = {}, b""
    for name, dt, shape, raw in entries:
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    header["__metadata__"] = meta
    if corrupt:
        corrupt(header)
    hj = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)) + hj + data)


def test_safetensors(tmp):
    print("4. safetensors reader / model directories")
    f32 = [1.5, -2.25, 3.0e-8, 65504.0, -0.0, 7.0]
    bf16 = {0x3F80: 1.0, 0xC020: -2.5, 0x0001: 2.0 ** -133, 0x7F7F: 3.3895313892515355e38,
            0x3EAB: 0.333984375, 0xBF81: -1.0078125}
    f16 = [0.5, -1.0009765625, 6.103515625e-05, 2048.0]
    i64 = [-(2 ** 40), 0, 2 ** 62 + 1]
    i32 = [-7, 2 ** 31 - 1]
    entries = [
        ("a.f32", "F32", [2, 3], struct.pack("<6f", *f32)),
        ("b.bf16", "BF16", [6], struct.pack("<6H", *bf16.keys())),
        ("c.f16", "F16", [2, 2], struct.pack("<4e", *f16)),
        ("d.i64", "I64", [3], struct.pack("<3q", *i64)),
        ("e.i32", "I32", [1, 2], struct.pack("<2i", *i32)),
        ("f.empty", "F32", [0, 4], b""),
    ]
    path = os.path.join(tmp, "hand.safetensors")
    hand_file(path, entries, {"step": "3", "lora_r": "8"})
    t, meta = tl.read_safetensors(path)
    check(meta == {"step": "3", "lora_r": "8"}, "metadata")
    check(t["a.f32"].dtype == torch.float32 and t["a.f32"].shape == (2, 3)
          and t["a.f32"].flatten().tolist() == [struct.unpack("<f", struct.pack("<f", v))[0] for v in f32],
          "F32 values and shape")
    check(t["b.bf16"].dtype == torch.float32 and t["b.bf16"].tolist() == list(bf16.values()),
          "BF16 upcast to float32 exactly (incl. a subnormal and the max)")
    check(t["c.f16"].flatten().tolist() == f16, "F16 values")
    check(t["d.i64"].dtype == torch.int64 and t["d.i64"].tolist() == i64, "I64 values")
    check(t["e.i32"].dtype == torch.int32 and t["e.i32"].tolist() == [i32], "I32 values and shape")
    check(t["f.empty"].shape == (0, 4), "empty tensor")

    bad_cases = [
        ("offsets past the end", lambda h: h["a.f32"].update(data_offsets=[0, 10_000])),
        ("size mismatch", lambda h: h["a.f32"].update(shape=[2, 4])),
        ("unknown dtype", lambda h: h["a.f32"].update(dtype="Q7")),
        ("overlapping tensors", lambda h: h["b.bf16"].update(data_offsets=[12, 24])),
    ]
    for what, fn in bad_cases:
        hand_file(path, entries, {}, corrupt=fn)
        try:
            tl.read_safetensors(path)
            check(False, f"rejects {what}")
        except tl.ReferenceError_ as e:
            check(path in str(e), f"rejects {what}", str(e)[len(path):])
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", 1 << 40))
    try:
        tl.read_safetensors(path)
        check(False, "rejects a header length beyond the file")
    except tl.ReferenceError_:
        check(True, "rejects a header length beyond the file")

    # writer round trip (all dtypes)
    src = {"x": torch.randn(3, 5), "y": torch.randn(4).to(torch.bfloat16), "z": torch.arange(6).view(2, 3),
           "h": torch.randn(2).half(), "i": torch.tensor([1, -2], dtype=torch.int32)}
    tl.write_safetensors(path, src, {"k": "v"})
    back, meta = tl.read_safetensors(path)
    same = all(torch.equal(back[k], src[k].float() if src[k].is_floating_point() else src[k]) for k in src)
    check(same and meta == {"k": "v"}, "writer -> reader round trip")

    # model directories: single F32 file vs 3 BF16 shards with an index
    c = tl.random_config("LlamaForCausalLM")
    w = tl.random_weights(c, seed=9)
    d1, d2 = os.path.join(tmp, "m1"), os.path.join(tmp, "m2")
    tl.write_model_dir(d1, c, w)
    tl.write_model_dir(d2, c, w, shards=3, dtype=torch.bfloat16)
    _, w1 = tl.load_model_dir(d1)
    c2, w2 = tl.load_model_dir(d2)
    check(c2 == c and all(torch.equal(w1[k], w[k]) for k in w), "model.safetensors directory")
    check(all(w2[k].dtype == torch.float32 and torch.equal(w2[k], w[k].bfloat16().float()) for k in w),
          "sharded BF16 directory with index.json")


# --------------------------------------------------------------------------------------
# 5. loss and batches

def test_loss_and_batches():
    print("5. loss semantics and batching rule")
    g = torch.Generator().manual_seed(11)
    logits = torch.randn(2, 5, 7, generator=g, dtype=torch.float64)
    labels = torch.tensor([[3, 1, -100, 4, 0], [-100, -100, -100, -100, 6]])
    loss, n = tl.causal_lm_loss(logits, labels)
    tot, cnt = 0.0, 0
    for b in range(2):
        for t in range(4):
            y = int(labels[b, t + 1])
            if y != -100:
                row = logits[b, t]
                tot += float(torch.logsumexp(row, 0) - row[y])
                cnt += 1
    check(n == cnt == 4 and abs(float(loss) - tot / cnt) < 1e-12,
          "mean over the batch's counted shifted labels", f"n={n}")

    seqs = [([5, 6, 7], [5, -100, 7], [0, 1, 2]), ([1] * 7, [1] * 7, [0, 1, 2, 0, 1, 2, 3]), ([], [], [])]
    ids, lab, pos = tl.make_batch(seqs, step=1, B=2, T=5)  # lines 2, 0
    check(ids.tolist() == [[0] * 5, [5, 6, 7, 0, 0]] and lab.tolist() == [[-100] * 5, [5, -100, 7, -100, -100]]
          and pos.tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]], "padding: ids 0, labels -100, positions continue")
    ids, lab, pos = tl.make_batch(seqs, step=0, B=2, T=5)  # lines 0, 1
    check(ids[1].tolist() == [1] * 5 and pos[1].tolist() == [0, 1, 2, 0, 1], "truncation to T keeps given positions")


# --------------------------------------------------------------------------------------
# 6. Philox

def scalar_philox(ctr, key):
    """Philox4x32-10 on Python integers, one block (written separately from philox.py)."""
    x0, x1, x2, x3 = ctr
    k0, k1 = key
    for rnd in range(10):
        if rnd:
            k0, k1 = (k0 + 0x9E3779B9) % 2 ** 32, (k1 + 0xBB67AE85) % 2 ** 32
        hi0, lo0 = divmod(0xD2511F53 * x0, 2 ** 32)
        hi1, lo1 = divmod(0xCD9E8D57 * x2, 2 ** 32)
        x0, x1, x2, x3 = hi1 ^ x1 ^ k0, lo1, hi0 ^ x3 ^ k1, lo0
    return [x0, x1, x2, x3]


def test_philox():
    print("6. Philox4x32-10 and the keyed LoRA draws")
    kats = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
            ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
            ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
             (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]
    for ctr, key, want in kats:
        got = [int(w) for w in philox.philox4x32_10(ctr, key)]
        check(got == list(want) and scalar_philox(ctr, key) == list(want),
              f"Random123 KAT ctr={ctr[0]:08x}.. key={key[0]:08x}..", " ".join(f"{w:08x}" for w in got))

    rng = np.random.default_rng(3)
    ctrs = rng.integers(0, 2 ** 32, size=(4, 500), dtype=np.uint64)
    key = (int(rng.integers(0, 2 ** 32)), int(rng.integers(0, 2 ** 32)))
    vec = philox.philox4x32_10(list(ctrs), key)
    ok = all([int(vec[w][j]) for w in range(4)] == scalar_philox([int(c) for c in ctrs[:, j]], key)
             for j in range(500))
    check(ok, "vectorised numpy Philox == scalar Python Philox on 500 random counters")

    # counter layout: {lo(a), hi(a) ^ purpose << 24, lo(b), lo(c)}, key {lo(seed), hi(seed)}
    seed, a, b, c = 0x0123456789ABCDEF, (5 << 32) | 77, (1 << 33) | 9, 0x1_0000_0102
    got = [int(w) for w in philox.block(seed, philox.LORA_DROPOUT, a, b, c)]
    want = scalar_philox([77, 5 ^ (3 << 24), 9, 0x102], [0x89ABCDEF, 0x01234567])
    check(got == want, "philox.block counter/key layout (64-bit a, b, c, seed)")
    u = philox.u01(np.array([0, 0xFF, 0x100, 0xFFFFFFFF], dtype=np.uint32))
    check(u.dtype == np.float32 and u.tolist() == [0.0, 0.0, 2.0 ** -24, 1.0 - 2.0 ** -24],
          "u01 = (w >> 8) * 2^-24, exact, in [0, 1)")

    # dropout keep rates (a 4096-token x 256-column mask) within 5 sigma of 1 - p
    n_tok, n_in = 4096, 256
    n = n_tok * n_in
    for p in (0.1, 0.3, 0.5):
        keep = philox.lora_dropout_keep(11, 1, 0, "q_proj", n_tok, n_in, p)
        rate = float(keep.mean())
        sigma = math.sqrt(p * (1 - p) / n)
        z = (rate - (1 - p)) / sigma
        check(abs(z) < 5, f"keep rate p={p}: {rate:.5f} vs {1 - p:.1f}", f"{z:+.2f} sigma over {n} elements")
        rows, cols = keep.mean(1), keep.mean(0)  # no row / column structure
        check(float(np.abs(rows - (1 - p)).max()) < 6 * math.sqrt(p * (1 - p) / n_in)
              and float(np.abs(cols - (1 - p)).max()) < 6 * math.sqrt(p * (1 - p) / n_tok),
              f"   per-token and per-column keep rates p={p} within 6 sigma")
    p = 0.3
    base = philox.lora_dropout_keep(11, 1, 0, "q_proj", 512, 64, p)
    others = {"step 2": (11, 2, 0, "q_proj"), "layer 1": (11, 1, 1, "q_proj"), "k_proj": (11, 1, 0, "k_proj"),
              "v_proj": (11, 1, 0, "v_proj"), "seed 12": (12, 1, 0, "q_proj")}
    expect = p * p + (1 - p) * (1 - p)  # agreement of two independent masks
    sig = math.sqrt(expect * (1 - expect) / base.size)
    for what, (sd, st, ly, md) in others.items():
        agree = float((philox.lora_dropout_keep(sd, st, ly, md, 512, 64, p) == base).mean())
        check(abs(agree - expect) < 5 * sig, f"   mask of {what} independent of step 1 / layer 0 / q_proj / seed 11",
              f"agreement {agree:.4f} vs {expect:.4f}")
    sc = philox.lora_dropout_scale(11, 1, 0, "q_proj", 512, 64, np.float32(p))
    kept = np.float32(1) / (np.float32(1) - np.float32(p))
    check(sc.dtype == np.float32 and set(np.unique(sc).tolist()) == {0.0, float(kept)},
          "dropout scale is 0 or 1/(1-p) in float32")
    check(np.array_equal(philox.lora_dropout_keep(11, 1, 0, "q_proj", 512, 64, p)[100:],
                         philox.lora_dropout_keep(11, 1, 0, "q_proj", 412, 64, p, token0=100)),
          "mask rows depend on the global token only (token0 offset)")

    # init distributions
    a = philox.lora_init_a(11, 0, "q_proj", 64, 1000)
    bound = np.float32(1) / np.sqrt(np.float32(1000))
    m, v = float(a.mean()), float(a.astype(np.float64).var())
    ratio = v / (float(bound) ** 2 / 3)  # relative sd of a sample variance of U: sqrt(0.8 / n)
    check(a.dtype == np.float32 and float(a.min()) >= -bound and float(a.max()) < bound
          and abs(m) < 5 * float(bound) / math.sqrt(3 * a.size) and abs(ratio - 1) < 5 * math.sqrt(0.8 / a.size),
          "default init: U[-1/sqrt(in), 1/sqrt(in)), mean and variance", f"mean {m:.2e} var ratio {ratio:.4f}")
    g = philox.lora_init_a(11, 0, "q_proj", 8, 8000, gaussian=True) * 8
    m, sd = float(g.mean()), float(g.astype(np.float64).std())
    k4 = float(((g.astype(np.float64) - m) ** 4).mean() / sd ** 4)
    check(abs(m) < 5 / math.sqrt(g.size) and abs(sd - 1) < 5 / math.sqrt(2 * g.size)
          and abs(k4 - 3) < 5 * math.sqrt(24 / g.size),
          "gaussian init: r * A ~ N(0, 1)", f"mean {m:.2e} std {sd:.4f} kurtosis {k4:.3f}")
    a0 = philox.lora_init_a(11, 0, "q_proj", 4, 64)
    check(not np.array_equal(a0, philox.lora_init_a(11, 0, "k_proj", 4, 64))
          and not np.array_equal(a0, philox.lora_init_a(11, 1, "q_proj", 4, 64)),
          "init differs across modules and layers")
    c = tl.random_config("LlamaForCausalLM")
    lora = tl.Lora(tl.ModelConfig(c), 4, 8.0, "q_proj,down_proj")
    lora.init_philox(11)
    ok = all(torch.equal(p_, torch.from_numpy(philox.lora_init_a(11, *tl.parse_lora_key(k)[:2], *p_.shape)))
             if k.endswith("lora_A.weight") else not bool(p_.any()) for k, p_ in lora.params.items())
    check(ok, "Lora.init_philox: A = philox.lora_init_a per key, B = 0")

    # the reference with Philox dropout: deterministic (so gradcheck applies), each module its
    # own mask on the LoRA input only
    c = tl.random_config("LlamaForCausalLM", hidden_size=16, intermediate_size=24, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=8, vocab_size=32)
    w = tl.random_weights(c, seed=5, std=0.3, norm_jitter=0.2, dtype=torch.float64)
    model = tl.LlamaReference(c, w, dtype=torch.float64)
    lora = tl.Lora(model.cfg, 2, 3.0, tl.LORA_MODULES, dropout=0.3, dtype=torch.float64)
    lora.init_random(torch.Generator().manual_seed(6), std=0.3)
    lora.dropout_seed, lora.dropout_step = 11, 3
    ids, labels, pos = packed_batch()
    ids, labels, pos = ids[:, :8] % 32, labels[:, :8] % 32, pos[:, :8]
    x = torch.randn(2, 8, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        dq = lora.delta(0, "q_proj", x, True)
        mq = lora.dropout_scale(0, "q_proj", 16, 16).double().view(2, 8, 16)
        a = lora.params[tl.lora_key(0, "q_proj", "A")]
        b = lora.params[tl.lora_key(0, "q_proj", "B")]
        manual = lora.scale * ((x * mq) @ a.T) @ b.T
        d_eval = lora.delta(0, "q_proj", x, False)
    check(float((dq - manual).abs().max()) < 1e-12, "delta = s B A (x * mask), mask rows = b * T + t")
    check(not torch.equal(lora.dropout_scale(0, "q_proj", 16, 16), lora.dropout_scale(0, "k_proj", 16, 16))
          and not torch.equal(lora.dropout_scale(0, "q_proj", 16, 16), lora.dropout_scale(0, "v_proj", 16, 16)),
          "q_proj, k_proj and v_proj masks differ (same x)")
    check(float((d_eval - lora.scale * (x @ a.T) @ b.T).abs().max()) < 1e-12, "no dropout when not training")
    keys = list(lora.params)
    inputs = tuple(lora.params[k].detach().clone().requires_grad_(True) for k in keys)

    def f(*ps):
        lora.params = dict(zip(keys, ps))
        return model.loss(ids, labels, pos, lora, training=True)[0]

    l1, l2 = float(f(*inputs)), float(f(*inputs))
    ok = torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5, raise_exception=False)
    check(ok and l1 == l2, "gradcheck float64 through Philox dropout p=0.3 (all 7 modules)")
    lora.dropout_step = 4
    check(float(f(*inputs)) != l1, "   another step's masks change the loss")


def main():
    t0 = time.time()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        test_naive()
        test_packing()
        test_grads()
        test_safetensors(tmp)
        test_loss_and_batches()
        test_philox()
    dt = time.time() - t0
    if FAILURES:
        print(f"selftest: FAILED {len(FAILURES)} check(s) in {dt:.1f}s: " + "; ".join(FAILURES))
        return 1
    print(f"selftest: all checks passed in {dt:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
