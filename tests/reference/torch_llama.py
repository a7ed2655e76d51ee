"""Independent PyTorch reference for shardlora: a Llama-family decoder with PEFT-style LoRA.

Written against torch directly (no transformers / peft / safetensors packages), in fp32 by
default (any float dtype, e.g. float64 for gradcheck). Semantics follow Hugging Face
transformers' LlamaForCausalLM / MistralForCausalLM / Qwen2ForCausalLM (modeling_llama.py:
LlamaRMSNorm, rotate_half/apply_rotary_pos_emb, repeat_kv, eager attention, LlamaMLP,
ForCausalLMLoss; modeling_rope_utils.py: _compute_default_rope_parameters and
_compute_llama3_parameters) and PEFT's lora.Linear (y = W x + b + scaling * B(A(dropout(x))),
scaling = lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora).

LoRA dropout and the adapter's initialisation can use shardlora's keyed Philox draws
(philox.py: an independent numpy Philox4x32-10 with the coordinates of DESIGN.md §4), so a
training step with dropout > 0 and the initial adapter are reproduced exactly.

Beyond HF's single-sequence causal mask, attention is also blocked across documents packed
in one row: a document starts at t = 0 and wherever position_ids[t] == 0 (what HF does with
position_ids-based packing under flash-attention).

Legend: B rows, T tokens, C hidden, F ffn, V vocab, H heads, KV kv heads, D head dim, r rank.
"""

import json
import math
import os
import re
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.checkpoint

import philox

IGNORE_INDEX = -100
LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_ATTN_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")


class ReferenceError_(ValueError):
    """A bad input file or configuration; the message names the file and the place."""


# --------------------------------------------------------------------------------------
# safetensors (format: u64 LE header length N, N bytes of JSON
# {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}, data;
# offsets are relative to the first byte after the header)

# dtype name -> (numpy little-endian storage dtype, bytes per element)
_ST_DTYPES = {
    "F64": ("<f8", 8),
    "F32": ("<f4", 4),
    "F16": ("<f2", 2),
    "BF16": ("<u2", 2),
    "I64": ("<i8", 8),
    "I32": ("<i4", 4),
}


def _bf16_bits_to_f32(bits):
    """uint16 bfloat16 bit patterns -> float32 tensor (exact: bf16 is the top half of f32)."""
    wide = bits.astype(np.uint32)
    wide <<= np.uint32(16)  # in place: one float32-sized buffer per tensor
    return torch.from_numpy(wide.view(np.int32)).view(torch.float32)


def read_safetensors(path):
    """Read a whole safetensors file. Returns (tensors, metadata): tensors maps name -> torch
    tensor (F32/F16/BF16 -> float32, F64 -> float64, I64 -> int64, I32 -> int32), metadata is
    the "__metadata__" dict ({} if absent). Raises ReferenceError_ naming the file and the
    entry on any malformed header."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            raise ReferenceError_(f"{path}: file is {size} bytes, shorter than the 8-byte header length")
        (hlen,) = struct.unpack("<Q", f.read(8))
        if hlen > size - 8:
            raise ReferenceError_(f"{path}: header length {hlen} exceeds the file size {size}")
        try:
            header = json.loads(f.read(hlen).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ReferenceError_(f"{path}: header (bytes 8..{8 + hlen}) is not valid JSON: {e}")
        if not isinstance(header, dict):
            raise ReferenceError_(f"{path}: header is not a JSON object")
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict):
            raise ReferenceError_(f"{path}: __metadata__ is not an object")
        data_start = 8 + hlen
        data_len = size - data_start
        spans = []
        tensors = {}
        for name, info in header.items():
            where = f"{path}: tensor '{name}'"
            if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
                raise ReferenceError_(f"{where}: needs dtype, shape and data_offsets")
            dt = info["dtype"]
            if dt not in _ST_DTYPES:
                raise ReferenceError_(f"{where}: unsupported dtype {dt!r}")
            shape = info["shape"]
            offs = info["data_offsets"]
            if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
                raise ReferenceError_(f"{where}: bad shape {shape!r}")
            if not (isinstance(offs, list) and len(offs) == 2 and all(isinstance(o, int) for o in offs)):
                raise ReferenceError_(f"{where}: bad data_offsets {offs!r}")
            begin, end = offs
            np_dt, esize = _ST_DTYPES[dt]
            numel = math.prod(shape)
            if not (0 <= begin <= end <= data_len):
                raise ReferenceError_(f"{where}: data_offsets {offs} outside the data section ({data_len} bytes)")
            if end - begin != numel * esize:
                raise ReferenceError_(f"{where}: {end - begin} bytes for {dt}{shape} (expected {numel * esize})")
            spans.append((begin, end, name))
            buf = bytearray(end - begin)
            f.seek(data_start + begin)
            if f.readinto(buf) != len(buf):
                raise ReferenceError_(f"{where}: short read")
            arr = np.frombuffer(buf, dtype=np_dt)
            if dt == "BF16":
                t = _bf16_bits_to_f32(arr)
            elif dt == "F16":
                t = torch.from_numpy(arr.astype(np.float32))
            else:
                t = torch.from_numpy(arr.astype(arr.dtype.newbyteorder("="), copy=False))
            tensors[name] = t.reshape(shape)
        spans.sort()
        for (b0, e0, n0), (b1, _, n1) in zip(spans, spans[1:]):
            if b1 < e0:
                raise ReferenceError_(f"{path}: tensors '{n0}' and '{n1}' overlap")
    return tensors, {str(k): v for k, v in meta.items()}


_TORCH_TO_ST = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16",
                torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32"}


def write_safetensors(path, tensors, metadata=None):
    """Write name -> tensor (dtypes of _TORCH_TO_ST) with optional string metadata. Used by
    test generators; the reader is checked against hand-packed bytes in selftest.py."""
    header = {}
    blobs = []
    off = 0
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        dt = _TORCH_TO_ST[t.dtype]
        if dt == "BF16":
            raw = t.view(torch.int16).numpy().astype("<i2").tobytes()
        else:
            raw = t.numpy().astype(_ST_DTYPES[dt][0]).tobytes()
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((8 - len(hj) % 8) % 8)  # align the data section, as the Rust writer does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)


def load_model_dir(model_dir, dtype=torch.float32):
    """Read an HF model directory: config.json plus model.safetensors, or the shards named
    by model.safetensors.index.json ({"weight_map": {name: file}}). Returns (config dict,
    weights dict) with every floating weight converted to `dtype` (BF16 upcasts exactly)."""
    cfg_path = os.path.join(model_dir, "config.json")
    try:
        with open(cfg_path) as f:
            config = json.load(f)
    except OSError as e:
        raise ReferenceError_(f"{cfg_path}: cannot read: {e.strerror}")
    except json.JSONDecodeError as e:
        raise ReferenceError_(f"{cfg_path}: not valid JSON: {e}")
    index_path = os.path.join(model_dir, "model.safetensors.index.json")
    weights = {}
    if os.path.exists(index_path):
        with open(index_path) as f:
            try:
                wmap = json.load(f)["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ReferenceError_(f"{index_path}: needs a JSON object with a weight_map: {e}")
        for fname in sorted(set(wmap.values())):
            part, _ = read_safetensors(os.path.join(model_dir, fname))
            for name, t in part.items():
                if wmap.get(name) == fname:
                    weights[name] = t
        missing = [n for n in wmap if n not in weights]
        if missing:
            raise ReferenceError_(f"{index_path}: '{missing[0]}' is not in {wmap[missing[0]]}")
    else:
        path = os.path.join(model_dir, "model.safetensors")
        if not os.path.exists(path):
            raise ReferenceError_(f"{model_dir}: neither model.safetensors nor model.safetensors.index.json")
        weights, _ = read_safetensors(path)
    for name in list(weights):
        if weights[name].is_floating_point():
            weights[name] = weights[name].to(dtype)
    return config, weights


# --------------------------------------------------------------------------------------
# config

class ModelConfig:
    """The fields of an HF config.json this reference uses, with HF's defaults per arch."""

    def __init__(self, d):
        archs = d.get("architectures") or []
        arch = archs[0] if archs else {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                                       "qwen2": "Qwen2ForCausalLM"}.get(d.get("model_type"), "")
        if arch not in ARCHITECTURES:
            raise ReferenceError_(f"config.json: architecture {arch!r} is not one of {ARCHITECTURES}")

        def need(key):
            if not isinstance(d.get(key), int) or d[key] <= 0:
                raise ReferenceError_(f"config.json: '{key}' must be a positive integer (got {d.get(key)!r})")
            return d[key]

        self.arch = arch
        self.hidden_size = need("hidden_size")                      # C
        self.intermediate_size = need("intermediate_size")          # F
        self.num_layers = need("num_hidden_layers")                 # L
        self.num_heads = need("num_attention_heads")                # H
        self.num_kv_heads = d.get("num_key_value_heads") or self.num_heads  # KV
        self.head_dim = d.get("head_dim") or self.hidden_size // self.num_heads  # D
        self.vocab_size = need("vocab_size")                        # V
        self.rms_norm_eps = float(d.get("rms_norm_eps", 1e-6))
        self.tie_word_embeddings = bool(d.get("tie_word_embeddings", False))
        if self.num_heads % self.num_kv_heads or self.head_dim % 2:
            raise ReferenceError_("config.json: need num_attention_heads % num_key_value_heads == 0 and even head_dim")
        if d.get("hidden_act", "silu") != "silu":
            raise ReferenceError_(f"config.json: hidden_act {d['hidden_act']!r} is not supported (silu only)")
        # Biases: Llama's attention_bias puts one on q, k, v and o; Qwen2 always has q/k/v
        # biases and none on o; Mistral has none. Llama's mlp_bias on gate/up/down.
        if arch == "Qwen2ForCausalLM":
            self.qkv_bias, self.o_bias, self.mlp_bias = True, False, False
        elif arch == "LlamaForCausalLM":
            ab = bool(d.get("attention_bias", False))
            self.qkv_bias, self.o_bias, self.mlp_bias = ab, ab, bool(d.get("mlp_bias", False))
        else:
            self.qkv_bias, self.o_bias, self.mlp_bias = False, False, False
        # RoPE (transformers v5 moves these into rope_parameters)
        rp = d.get("rope_parameters") or {}
        self.rope_theta = float(d.get("rope_theta", rp.get("rope_theta", 10000.0)))
        rs = d.get("rope_scaling") or (rp if rp.get("rope_type", "default") != "default" else None)
        self.rope_scaling = None
        if rs:
            kind = rs.get("rope_type", rs.get("type", "default"))
            if kind == "llama3":
                self.rope_scaling = {k: float(rs[k]) for k in
                                     ("factor", "low_freq_factor", "high_freq_factor",
                                      "original_max_position_embeddings")}
            elif kind != "default":
                raise ReferenceError_(f"config.json: rope_scaling type {kind!r} is not supported (llama3 only)")
        # Sliding-window attention as HF applies it (query i sees key j iff i - j < window):
        # Mistral when sliding_window is set (HF's default is 4096); Qwen2 only when
        # use_sliding_window, on layers >= max_window_layers.
        self.sliding_window = None
        self.sliding_from_layer = 0
        if arch == "MistralForCausalLM":
            self.sliding_window = d.get("sliding_window", 4096)
        elif arch == "Qwen2ForCausalLM" and d.get("use_sliding_window", False):
            self.sliding_window = d.get("sliding_window", 4096)
            self.sliding_from_layer = d.get("max_window_layers", 28)

    def linear_shape(self, module):
        """[out, in] of a projection."""
        C, F_, H, KV, D = self.hidden_size, self.intermediate_size, self.num_heads, self.num_kv_heads, self.head_dim
        return {"q_proj": (H * D, C), "k_proj": (KV * D, C), "v_proj": (KV * D, C), "o_proj": (C, H * D),
                "gate_proj": (F_, C), "up_proj": (F_, C), "down_proj": (C, F_)}[module]

    def has_bias(self, module):
        if module in ("q_proj", "k_proj", "v_proj"):
            return self.qkv_bias
        if module == "o_proj":
            return self.o_bias
        return self.mlp_bias

    def expected_weights(self):
        """HF weight name -> shape for every tensor the model needs."""
        C, V = self.hidden_size, self.vocab_size
        w = {"model.embed_tokens.weight": (V, C), "model.norm.weight": (C,)}
        if not self.tie_word_embeddings:
            w["lm_head.weight"] = (V, C)
        for i in range(self.num_layers):
            p = f"model.layers.{i}."
            w[p + "input_layernorm.weight"] = (C,)
            w[p + "post_attention_layernorm.weight"] = (C,)
            for m in LORA_MODULES:
                name = p + module_path(m)
                shape = self.linear_shape(m)
                w[name + ".weight"] = shape
                if self.has_bias(m):
                    w[name + ".bias"] = (shape[0],)
        return w


def module_path(module):
    """'q_proj' -> 'self_attn.q_proj', 'gate_proj' -> 'mlp.gate_proj'."""
    return ("self_attn." if module in _ATTN_MODULES else "mlp.") + module


# --------------------------------------------------------------------------------------
# LoRA (PEFT lora.Linear)

def lora_key(layer, module, factor):
    """PEFT adapter key, factor 'A' or 'B'."""
    return f"base_model.model.model.layers.{layer}.{module_path(module)}.lora_{factor}.weight"


def parse_lora_key(key):
    """PEFT adapter key -> (layer, module, 'A' | 'B')."""
    m = re.fullmatch(r"base_model\.model\.model\.layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight", key)
    if not m or m.group(2) not in LORA_MODULES:
        raise ReferenceError_(f"{key!r} is not a PEFT LoRA key")
    return int(m.group(1)), m.group(2), m.group(3)


def parse_target_modules(spec):
    mods = [m.strip() for m in (spec.split(",") if isinstance(spec, str) else spec) if m.strip()]
    bad = [m for m in mods if m not in LORA_MODULES]
    if bad or not mods:
        raise ReferenceError_(f"target_modules {spec!r}: unknown module(s) {bad} (known: {LORA_MODULES})")
    return [m for m in LORA_MODULES if m in mods]


class Lora:
    """LoRA adapters on the target modules of every layer. params: PEFT key -> leaf tensor
    (requires_grad), A [r, in], B [out, r]."""

    def __init__(self, cfg, r, alpha, target_modules, use_rslora=False, dropout=0.0, dtype=torch.float32):
        self.r = int(r)
        self.alpha = float(alpha)
        self.use_rslora = bool(use_rslora)
        self.scale = self.alpha / math.sqrt(self.r) if self.use_rslora else self.alpha / self.r
        self.dropout = float(dropout)
        # Philox dropout (shardlora's masks): set dropout_seed and dropout_step (the 1-based
        # optimizer step); with dropout_seed None, dropout is torch's F.dropout.
        self.dropout_seed = None
        self.dropout_step = None
        self.dropout_token0 = 0
        self._mask_cache = {}
        self.targets = parse_target_modules(target_modules)
        self.params = {}
        for i in range(cfg.num_layers):
            for m in self.targets:
                out_f, in_f = cfg.linear_shape(m)
                self.params[lora_key(i, m, "A")] = torch.zeros(self.r, in_f, dtype=dtype, requires_grad=True)
                self.params[lora_key(i, m, "B")] = torch.zeros(out_f, self.r, dtype=dtype, requires_grad=True)

    def shapes(self):
        return {k: tuple(v.shape) for k, v in self.params.items()}

    def parameters(self):
        return list(self.params.values())

    @torch.no_grad()
    def init_peft(self, generator):
        """PEFT's default: A ~ kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)), B = 0."""
        for k, p in self.params.items():
            if k.endswith("lora_A.weight"):
                bound = 1.0 / math.sqrt(p.shape[1])
                p.copy_(torch.rand(p.shape, generator=generator, dtype=torch.float64) * 2 * bound - bound)
            else:
                p.zero_()

    @torch.no_grad()
    def init_philox(self, seed, gaussian=False):
        """shardlora's initialisation: A from Philox keyed by (seed, layer, module, row, col)
        (philox.lora_init_a), B = 0."""
        for k, p in self.params.items():
            layer, module, factor = parse_lora_key(k)
            if factor == "A":
                p.copy_(torch.from_numpy(philox.lora_init_a(seed, layer, module, p.shape[0], p.shape[1], gaussian)))
            else:
                p.zero_()

    def dropout_scale(self, layer, module, n_tokens, n_in):
        """float32 [n_tokens, n_in] Philox keep-scale (0 or 1/(1-p)) of (layer, module) at
        dropout_step, cached."""
        if self.dropout_seed is None or self.dropout_step is None:
            raise ReferenceError_("Philox dropout needs dropout_seed and dropout_step")
        key = (self.dropout_seed, self.dropout_step, self.dropout, self.dropout_token0, layer, module, n_tokens, n_in)
        m = self._mask_cache.get(key)
        if m is None:
            if len(self._mask_cache) > 256:
                self._mask_cache.clear()
            m = torch.from_numpy(philox.lora_dropout_scale(self.dropout_seed, self.dropout_step, layer, module,
                                                           n_tokens, n_in, self.dropout,
                                                           self.dropout_token0))
            self._mask_cache[key] = m
        return m

    @torch.no_grad()
    def init_random(self, generator, std=0.1):
        """Both factors random (tests: a zero B would leave dA identically zero)."""
        for p in self.params.values():
            p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float64) * std)

    @torch.no_grad()
    def load(self, tensors, where="adapter"):
        """Copy values for exactly this adapter's keys from tensors (extra keys are ignored
        here; callers check the key sets)."""
        for k, p in self.params.items():
            if k not in tensors:
                raise ReferenceError_(f"{where}: missing {k}")
            if tuple(tensors[k].shape) != tuple(p.shape):
                raise ReferenceError_(f"{where}: {k} has shape {list(tensors[k].shape)}, expected {list(p.shape)}")
            p.copy_(tensors[k])

    def delta(self, layer, module, x, training):
        """scaling * B(A(dropout(x))) in PEFT's order, or None if the module is not targeted."""
        a = self.params.get(lora_key(layer, module, "A"))
        if a is None:
            return None
        b = self.params[lora_key(layer, module, "B")]
        if self.dropout > 0 and training:
            if self.dropout_seed is None:
                x = F.dropout(x, p=self.dropout, training=True)
            else:  # x [..., T, in]: row n of the flattened batch is token b * T + t
                n_in = x.shape[-1]
                m = self.dropout_scale(layer, module, x.numel() // n_in, n_in)
                x = x * m.to(x.dtype).view(x.shape)
        return F.linear(F.linear(x, a), b) * self.scale


# --------------------------------------------------------------------------------------
# the decoder

def rope_inv_freq(cfg):
    """[D/2] float32 inverse frequencies: HF _compute_default_rope_parameters, then
    _compute_llama3_parameters when rope_scaling is llama3."""
    D = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, D, 2, dtype=torch.int64).float() / D))
    rs = cfg.rope_scaling
    if rs is not None:
        factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        old_ctx = rs["original_max_position_embeddings"]
        low_freq_wavelen = old_ctx / lo
        high_freq_wavelen = old_ctx / hi
        wavelen = 2 * math.pi / inv_freq
        # long wavelengths are slowed by `factor`, short ones kept, the middle band blended
        inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_ctx / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * inv_freq_llama / factor + smooth * inv_freq_llama
        is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
        inv_freq = torch.where(is_medium, smoothed, inv_freq_llama)
    return inv_freq


def rope_cos_sin(inv_freq, position_ids, dtype):
    """cos, sin [B, T, D] from float32 angles position * inv_freq, duplicated to D (HF)."""
    freqs = position_ids.float()[:, :, None] * inv_freq[None, None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def document_ids(position_ids):
    """[B, T] document index per token: a document starts at t = 0 and wherever position_ids == 0."""
    starts = position_ids == 0
    starts[:, 0] = True
    return torch.cumsum(starts.to(torch.int64), dim=1)


def attention_allowed(position_ids, sliding_window=None):
    """[B, 1, T, T] bool, True where query i may attend key j: causal, same document, and
    i - j < sliding_window when one is given."""
    T = position_ids.shape[1]
    doc = document_ids(position_ids)
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    ok = (j <= i)[None] & (doc[:, :, None] == doc[:, None, :])
    if sliding_window:
        ok = ok & ((i - j) < sliding_window)[None]
    return ok[:, None]


def rms_norm(x, w, eps):
    """HF LlamaRMSNorm: w * x * rsqrt(mean(x^2) + eps)."""
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def default_position_ids(input_ids):
    B, T = input_ids.shape
    return torch.arange(T, dtype=torch.int64)[None].expand(B, T).contiguous()


def bf16_round(t):
    """t rounded to bfloat16 (nearest even) and widened back."""
    return t.to(torch.bfloat16).to(t.dtype)


class Bf16FrozenLinear(torch.autograd.Function):
    """y = bf16(x) bf16(W)^T; dx = bf16(dy) bf16(W); W frozen (no gradient)."""

    @staticmethod
    def forward(ctx, x, w):
        wb = bf16_round(w).double()
        ctx.save_for_backward(wb)
        return (bf16_round(x).double() @ wb.T).to(x.dtype)

    @staticmethod
    def backward(ctx, dy):
        (wb,) = ctx.saved_tensors
        return (bf16_round(dy).double() @ wb).to(dy.dtype), None


class LlamaReference:
    """The frozen base model. weights: HF names -> tensors (converted to dtype, no grad)."""

    def __init__(self, config, weights, dtype=torch.float32):
        self.cfg = config if isinstance(config, ModelConfig) else ModelConfig(config)
        self.dtype = dtype
        expected = self.cfg.expected_weights()
        w = {}
        for name, shape in expected.items():
            if name not in weights:
                raise ReferenceError_(f"model weights: missing '{name}' (shape {list(shape)})")
            t = weights[name]
            if tuple(t.shape) != shape:
                raise ReferenceError_(f"model weights: '{name}' has shape {list(t.shape)}, expected {list(shape)}")
            w[name] = t.detach().to(dtype).requires_grad_(False)
        ignorable = ("lm_head.weight",)  # present but unused when tied
        extra = [n for n in weights if n not in expected and n not in ignorable
                 and not n.endswith("rotary_emb.inv_freq")]
        if extra:
            raise ReferenceError_(f"model weights: unexpected tensor '{extra[0]}' ({len(extra)} unexpected)")
        if self.cfg.tie_word_embeddings:
            w["lm_head.weight"] = w["model.embed_tokens.weight"]
        self.w = w
        self.inv_freq = rope_inv_freq(self.cfg)

    @classmethod
    def from_dir(cls, model_dir, dtype=torch.float32):
        config, weights = load_model_dir(model_dir, dtype)
        return cls(config, weights, dtype)

    # "fp32", or "bf16": the frozen weights' products as shardlora's --compute-dtype bf16
    # defines them (BF16-rounded operands, exact products, sums in float64 here: closer to
    # exact than any F32 order), forward X W^T and backward dY W alike
    frozen_compute = "fp32"

    def _frozen(self, x, w, bias=None):
        if self.frozen_compute == "bf16":
            y = Bf16FrozenLinear.apply(x, w)
            return y if bias is None else y + bias
        return F.linear(x, w, bias)

    def _linear(self, x, layer, module, lora, training):
        name = f"model.layers.{layer}.{module_path(module)}"
        y = self._frozen(x, self.w[name + ".weight"], self.w.get(name + ".bias"))
        if lora is not None:
            d = lora.delta(layer, module, x, training)
            if d is not None:
                y = y + d
        return y

    def _attention(self, x, layer, cos, sin, allowed, lora, training):
        cfg = self.cfg
        B, T, _ = x.shape
        H, KV, D = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        q = self._linear(x, layer, "q_proj", lora, training).view(B, T, H, D).transpose(1, 2)   # [B,H,T,D]
        k = self._linear(x, layer, "k_proj", lora, training).view(B, T, KV, D).transpose(1, 2)  # [B,KV,T,D]
        v = self._linear(x, layer, "v_proj", lora, training).view(B, T, KV, D).transpose(1, 2)  # [B,KV,T,D]
        c, s = cos[:, None], sin[:, None]                                                          # [B,1,T,D]
        q = q * c + rotate_half(q) * s
        k = k * c + rotate_half(k) * s
        if KV != H:  # HF repeat_kv: query head h uses kv head h // (H / KV)
            k = k.repeat_interleave(H // KV, dim=1)
            v = v.repeat_interleave(H // KV, dim=1)
        scores = torch.matmul(q, k.transpose(2, 3)) * (D ** -0.5)                                 # [B,H,T,T]
        scores = scores.masked_fill(~allowed, float("-inf"))
        p = torch.softmax(scores, dim=-1)
        o = torch.matmul(p, v).transpose(1, 2).reshape(B, T, H * D)                               # [B,T,H*D]
        return self._linear(o, layer, "o_proj", lora, training)

    def _mlp(self, x, layer, lora, training):
        g = self._linear(x, layer, "gate_proj", lora, training)
        u = self._linear(x, layer, "up_proj", lora, training)
        return self._linear(F.silu(g) * u, layer, "down_proj", lora, training)

    def _block(self, x, layer, cos, sin, allowed, lora, training):
        p = f"model.layers.{layer}."
        eps = self.cfg.rms_norm_eps
        h = rms_norm(x, self.w[p + "input_layernorm.weight"], eps)
        x = x + self._attention(h, layer, cos, sin, allowed, lora, training)
        h = rms_norm(x, self.w[p + "post_attention_layernorm.weight"], eps)
        return x + self._mlp(h, layer, lora, training)

    def hidden_states(self, input_ids, position_ids=None, lora=None, training=False, recompute=False):
        """Final-norm output [B, T, C]. recompute: per-layer activation checkpointing."""
        cfg = self.cfg
        if position_ids is None:
            position_ids = default_position_ids(input_ids)
        cos, sin = rope_cos_sin(self.inv_freq, position_ids, self.dtype)
        allowed = attention_allowed(position_ids)
        allowed_sw = attention_allowed(position_ids, cfg.sliding_window) if cfg.sliding_window else allowed
        x = F.embedding(input_ids, self.w["model.embed_tokens.weight"])                          # [B,T,C]
        for i in range(cfg.num_layers):
            mask = allowed_sw if (cfg.sliding_window and i >= cfg.sliding_from_layer) else allowed
            if recompute:
                x = torch.utils.checkpoint.checkpoint(self._block, x, i, cos, sin, mask, lora, training,
                                                      use_reentrant=False)
            else:
                x = self._block(x, i, cos, sin, mask, lora, training)
        return rms_norm(x, self.w["model.norm.weight"], cfg.rms_norm_eps)

    def logits(self, input_ids, position_ids=None, lora=None, training=False, recompute=False):
        """[B, T, V]."""
        h = self.hidden_states(input_ids, position_ids, lora, training, recompute)
        return self._frozen(h, self.w["lm_head.weight"])

    def loss(self, input_ids, labels, position_ids=None, lora=None, training=True, recompute=False):
        """(mean loss over all counted label tokens of the batch, count)."""
        return causal_lm_loss(self.logits(input_ids, position_ids, lora, training, recompute), labels)


def token_losses(logits, labels):
    """[B, T-1] cross-entropy of logits[:, t] against labels[:, t+1]; 0 where ignored."""
    B, T, V = logits.shape
    tgt = labels[:, 1:].reshape(-1)
    return F.cross_entropy(logits[:, :-1].reshape(-1, V), tgt, ignore_index=IGNORE_INDEX,
                           reduction="none").view(B, T - 1)


def causal_lm_loss(logits, labels):
    """HF ForCausalLMLoss: logits[:, :-1] predict labels[:, 1:], -100 ignored, sum of token
    losses / number of counted tokens over the whole batch. With no counted token the loss
    is 0 (HF would give nan)."""
    n = int((labels[:, 1:] != IGNORE_INDEX).sum())
    return token_losses(logits, labels).sum() / max(n, 1), n


# --------------------------------------------------------------------------------------
# optimizers (torch.optim, configured the way shardlora's dump metadata names them)

class AdamWHF(torch.optim.Optimizer):
    """transformers' AdamW (transformers/optimization.py, correct_bias=True), which PEFT's
    LoraFAOptimizer reimplements: m, v EMAs; denom = sqrt(v) + eps; p -= lr * sqrt(1 - b2^t) /
    (1 - b1^t) * m / denom; then p -= lr * weight_decay * p."""

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0):
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1) or weight_decay < 0:
            raise ValueError(f"invalid AdamW-HF settings lr={lr} betas={betas} eps={eps} wd={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["exp_avg"] = torch.zeros_like(p)
                    st["exp_avg_sq"] = torch.zeros_like(p)
                st["step"] += 1
                st["exp_avg"].mul_(b1).add_(p.grad, alpha=1.0 - b1)
                st["exp_avg_sq"].mul_(b2).addcmul_(p.grad, p.grad, value=1.0 - b2)
                denom = st["exp_avg_sq"].sqrt().add_(group["eps"])
                step_size = group["lr"] * math.sqrt(1.0 - b2 ** st["step"]) / (1.0 - b1 ** st["step"])
                p.addcdiv_(st["exp_avg"], denom, value=-step_size)
                if group["weight_decay"] > 0.0:
                    p.add_(p, alpha=-group["lr"] * group["weight_decay"])


def make_optimizer(params, kind, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                   momentum=0.0, nesterov=False):
    try:
        if kind == "adamw":
            return torch.optim.AdamW(params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)
        if kind == "adamw-hf":
            return AdamWHF(params, lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay)
        if kind == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    except ValueError as e:  # e.g. nesterov without momentum, a negative lr
        raise ReferenceError_(f"optimizer {kind}: {e}")
    raise ReferenceError_(f"optimizer {kind!r} is not 'adamw', 'adamw-hf' or 'sgd'")


# --------------------------------------------------------------------------------------
# random models and data (tests, benchmark)

def random_config(arch="LlamaForCausalLM", **kw):
    """A config.json dict for a small random model; keyword arguments override fields."""
    d = {"architectures": [arch], "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 64, "rms_norm_eps": 1e-5,
         "rope_theta": 10000.0, "tie_word_embeddings": False, "hidden_act": "silu",
         "max_position_embeddings": 256, "torch_dtype": "float32"}
    d.update(kw)
    return d


@torch.no_grad()
def random_weights(config, seed=0, std=0.02, norm_jitter=0.0, dtype=torch.float32):
    """Deterministic random weights for every expected tensor, generated one at a time."""
    cfg = config if isinstance(config, ModelConfig) else ModelConfig(config)
    g = torch.Generator().manual_seed(seed)
    w = {}
    for name, shape in cfg.expected_weights().items():
        if name.endswith("norm.weight"):
            t = 1.0 + norm_jitter * torch.randn(shape, generator=g)
        else:
            t = torch.randn(shape, generator=g) * std
        w[name] = t.to(dtype)
    return w


def write_model_dir(model_dir, config, weights, shards=1, dtype=None):
    """An HF directory: config.json and model.safetensors, or `shards` files plus
    model.safetensors.index.json. dtype (e.g. torch.bfloat16) converts floating weights."""
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    names = sorted(weights)
    conv = {n: (weights[n].to(dtype) if dtype is not None and weights[n].is_floating_point() else weights[n])
            for n in names}
    if shards <= 1:
        write_safetensors(os.path.join(model_dir, "model.safetensors"), conv, {"format": "pt"})
        return
    wmap = {}
    for s in range(shards):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: conv[n] for n in names[s::shards]}
        write_safetensors(os.path.join(model_dir, fname), part, {"format": "pt"})
        wmap.update({n: fname for n in part})
    with open(os.path.join(model_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": wmap}, f, indent=2)


# --------------------------------------------------------------------------------------
# data batches (the rule shardlora's pre-tokenised JSONL path implements)

def read_jsonl(path):
    """(line number, object) for each non-blank line of a JSONL file; a line that is not JSON
    raises ReferenceError_ naming FILE:LINE."""
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise ReferenceError_(f"{path}:{lineno}: not valid JSON: {e}")


def read_jsonl_sequences(path):
    """Lines of {"input_ids", "labels"?, "position_ids"?} -> list of (ids, labels, pos)."""
    seqs = []
    for lineno, obj in read_jsonl(path):
        ids = obj.get("input_ids")
        if not isinstance(ids, list) or not all(isinstance(v, int) for v in ids):
            raise ReferenceError_(f"{path}:{lineno}: 'input_ids' must be a list of integers")
        labels = obj.get("labels", ids)
        pos = obj.get("position_ids", list(range(len(ids))))
        for key, val in (("labels", labels), ("position_ids", pos)):
            if not isinstance(val, list) or len(val) != len(ids):
                raise ReferenceError_(f"{path}:{lineno}: '{key}' must be a list as long as input_ids")
        seqs.append((ids, labels, pos))
    if not seqs:
        raise ReferenceError_(f"{path}: no sequences")
    return seqs


def make_batch(seqs, step, B, T):
    """Step s (0-based) takes sequences (s*B + j) mod N, j < B, each truncated to T or padded:
    input_ids with 0, labels with -100, position_ids continuing from the last (0, 1, ... when
    empty). Returns int64 [B, T] input_ids, labels, position_ids."""
    N = len(seqs)
    ids = torch.zeros(B, T, dtype=torch.int64)
    lab = torch.full((B, T), IGNORE_INDEX, dtype=torch.int64)
    pos = torch.zeros(B, T, dtype=torch.int64)
    for j in range(B):
        s_ids, s_lab, s_pos = seqs[(step * B + j) % N]
        n = min(len(s_ids), T)
        ids[j, :n] = torch.tensor(s_ids[:n], dtype=torch.int64)
        lab[j, :n] = torch.tensor(s_lab[:n], dtype=torch.int64)
        pos[j, :n] = torch.tensor(s_pos[:n], dtype=torch.int64)
        start = s_pos[n - 1] + 1 if n > 0 else 0
        pos[j, n:] = torch.arange(start, start + (T - n), dtype=torch.int64)
    return ids, lab, pos


# --------------------------------------------------------------------------------------
# checking shardlora's dumps

def meta_get(meta, key, where):
    if key not in meta:
        raise ReferenceError_(f"{where}: __metadata__ lacks '{key}'")
    return meta[key]


def meta_seed(meta, where):
    """The dump's run seed as an unsigned 64-bit integer (written as a signed decimal)."""
    try:
        return int(meta_get(meta, "seed", where)) & 0xFFFFFFFFFFFFFFFF
    except ValueError:
        raise ReferenceError_(f"{where}: __metadata__ 'seed' = {meta['seed']!r} is not an integer")


def lora_from_dump_meta(cfg, meta, where, dtype=torch.float32):
    """Lora built from a --dump-grads file's metadata (lora_r, lora_alpha, use_rslora,
    target_modules, lora_dropout). With lora_dropout > 0 the masks are shardlora's Philox
    masks keyed by the metadata's seed, for the dump's step (callers replaying other steps
    set lora.dropout_step)."""
    try:
        r = int(meta_get(meta, "lora_r", where))
        alpha = float(meta_get(meta, "lora_alpha", where))
        rs = meta_get(meta, "use_rslora", where)
        dropout = float(meta_get(meta, "lora_dropout", where))
    except ValueError as e:
        raise ReferenceError_(f"{where}: bad metadata value: {e}")
    if rs not in ("0", "1"):
        raise ReferenceError_(f"{where}: use_rslora is {rs!r}, expected '0' or '1'")
    if not (0.0 <= dropout < 1.0):
        raise ReferenceError_(f"{where}: lora_dropout is {meta['lora_dropout']!r}, expected 0 <= p < 1")
    lora = Lora(cfg, r, alpha, meta_get(meta, "target_modules", where), rs == "1", dropout, dtype)
    if dropout > 0:
        lora.dropout_seed = meta_seed(meta, where)
        try:
            lora.dropout_step = int(meta_get(meta, "step", where))
        except ValueError:
            raise ReferenceError_(f"{where}: __metadata__ 'step' = {meta['step']!r} is not an integer")
    return lora


def describe_lora(lora, with_step=False):
    """The adapter's settings for a checker's opening line."""
    masks = ""
    if lora.dropout > 0:
        masks = f" (Philox masks, seed {lora.dropout_seed}" + (f", step {lora.dropout_step})" if with_step else ")")
    return (f"r={lora.r} alpha={lora.alpha:g} rslora={int(lora.use_rslora)} "
            f"targets={','.join(lora.targets)} dropout={lora.dropout:g}{masks}")


def check_dump_adapter(tensors, lora, where, need_grads=True):
    """Compare the dump's adapter keys with the expected ones. Returns a list of problems
    (missing / extra / wrong shape), empty when all is well."""
    problems = []
    expected = lora.shapes()
    for k, shape in expected.items():
        for name in ([k, k + ".grad"] if need_grads else [k]):
            if name not in tensors:
                problems.append(f"missing {name}")
            elif tuple(tensors[name].shape) != shape:
                problems.append(f"{name} has shape {list(tensors[name].shape)}, expected {list(shape)}")
    batch_keys = {"loss", "input_ids", "labels", "position_ids"}
    for name in sorted(tensors):
        base = name[:-5] if name.endswith(".grad") else name
        if name not in batch_keys and base not in expected:
            problems.append(f"extra {name} (not an adapter tensor of this configuration)")
    return problems


def load_dump_adapter(name, tensors, lora, where, need_grads):
    """check_dump_adapter, then lora.load of the dump's adapter. On a key or shape problem
    prints each and a "NAME: FAILED" line and returns False (nothing loaded)."""
    problems = check_dump_adapter(tensors, lora, where, need_grads=need_grads)
    if problems:
        for p in problems:
            print(f"  FAIL {p}")
        print(f"{name}: FAILED: {len(problems)} adapter key/shape problem(s) in {where}")
        return False
    lora.load(tensors, where)
    return True


def dump_batch(tensors, where):
    """input_ids, labels, position_ids (int64 [B, T]) from a dump."""
    out = []
    for k in ("input_ids", "labels", "position_ids"):
        if k not in tensors:
            raise ReferenceError_(f"{where}: lacks '{k}'")
        t = tensors[k]
        if t.dim() != 2 or t.is_floating_point():
            raise ReferenceError_(f"{where}: '{k}' must be an integer [B, T] tensor, got {t.dtype} {list(t.shape)}")
        out.append(t.to(torch.int64))
    if not (out[0].shape == out[1].shape == out[2].shape):
        raise ReferenceError_(f"{where}: input_ids, labels and position_ids shapes differ")
    return out


TINY_REF = 1e-12  # below this max|ref| a tensor is compared by absolute error
TINY_ABS_TOL = 1e-7


def compare(ours, ref):
    """(error, kind): kind 'rel' -> max|ours - ref| / max|ref|; kind 'abs' -> max|ours - ref|
    when max|ref| < TINY_REF (e.g. dA while B = 0). Non-finite values give inf."""
    ours = ours.detach().to(torch.float64)
    ref = ref.detach().to(torch.float64)
    if not bool(torch.isfinite(ours).all()) or not bool(torch.isfinite(ref).all()):
        return math.inf, "rel"
    diff = float((ours - ref).abs().max()) if ref.numel() else 0.0
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    if scale < TINY_REF:
        return diff, "abs"
    return diff / scale, "rel"


def passes(err, kind, tol):
    return err <= (TINY_ABS_TOL if kind == "abs" else tol)


def check_dump_loss(model, tensors, batch, adapter, tol):
    """The reference loss of batch (ids, labels, pos) with the adapter in training mode against
    the dump's "loss"; runs backward, so the adapter's parameters hold the reference gradients.
    Returns (ours, ref loss tensor, counted tokens, err, kind, ok)."""
    loss, n = model.loss(*batch, adapter, training=True)
    loss.backward()
    ours = float(tensors["loss"].reshape(-1)[0])
    err, kind = compare(torch.tensor([ours]), loss.detach().reshape(1))
    return ours, loss, n, err, kind, passes(err, kind, tol)


def check_merged_logits(model, merged, adapter, tol, what):
    """The merged model's logits on a fixed random batch against the base model's with the
    adapter unmerged (what names it), and that the adapter moves them by more than 10 tol.
    Prints one line; returns 0 when both hold, else 1."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.cfg.vocab_size, (2, 20), generator=g)
    with torch.no_grad():
        ref = model.logits(ids, lora=adapter, training=False)
        ours = merged.logits(ids)
        base = model.logits(ids)
    e, kind = compare(ours, ref)
    moved, _ = compare(base, ref)
    ok = passes(e, kind, tol) and moved > 10 * tol
    print(f"  {'ok  ' if ok else 'FAIL'} merged-model logits vs base + {what} unmerged (PyTorch): {kind} err "
          f"{e:.3e} (tol {tol:g}); the adapter moves the logits by {moved:.3e}")
    return 0 if ok else 1


def run_checker(name, fn, args, errors=(ReferenceError_, OSError)):
    """fn(args) as a checker's exit status; a bad input (errors) prints "NAME: error: ..." on
    stderr and gives 1."""
    try:
        return fn(args)
    except errors as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return 1
