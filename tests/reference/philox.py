"""Philox4x32-10 in numpy, vectorised over many counters, and the keyed draws shardlora builds
on it (an independent re-implementation of runtime/philox.c and the random parts of
model/lora.c and model/adapter.c, written from the paper and the documented coordinates, not
translated).

Philox4x32-10: Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3"
(SC'11), as in the Random123 reference: 10 rounds on a 4x32-bit counter with a 2x32-bit key;
each round multiplies words 0 and 2 by 0xD2511F53 / 0xCD9E8D57 (32x32 -> 64 bits), the high
halves are XORed with the other words and the round key, the low halves move into the odd
words; the key is bumped by the Weyl constants 0x9E3779B9 / 0xBB67AE85 between rounds.

shardlora's counter layout (philox.h): for a draw (seed, purpose, a, b, c) the counter is
{lo32(a), hi32(a) ^ (purpose << 24), lo32(b), lo32(c)} and the key {lo32(seed), hi32(seed)}.
"""

import math

import numpy as np

M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
MASK32 = 0xFFFFFFFF

# purposes (runtime/philox.h)
LORA_INIT_A = 1
LORA_INIT_B = 2
LORA_DROPOUT = 3
MODEL_INIT = 4
DATA_ORDER = 5

# module ids used in the counters (model/adapter.h order)
MODULE_IDS = {"q_proj": 0, "k_proj": 1, "v_proj": 2, "o_proj": 3, "gate_proj": 4, "up_proj": 5,
              "down_proj": 6}

_U64 = np.uint64
_LO = _U64(MASK32)
_SH32 = _U64(32)


def _words(x):
    """Array-like of non-negative integers < 2^64 -> uint64 ndarray (Python ints may exceed
    int64, so go through object arrays only when needed)."""
    if isinstance(x, np.ndarray) and x.dtype == np.uint64:
        return x
    if isinstance(x, np.ndarray) and x.dtype.kind in "iu":
        if x.dtype.kind == "i" and x.size and int(x.min()) < 0:
            raise ValueError("philox: negative counter word")
        return x.astype(np.uint64)
    arr = np.asarray(x, dtype=object)
    return np.vectorize(lambda v: int(v) & 0xFFFFFFFFFFFFFFFF, otypes=[np.uint64])(arr) if arr.ndim else \
        np.uint64(int(x) & 0xFFFFFFFFFFFFFFFF)


def philox4x32_10(ctr, key):
    """ctr: four array-likes of uint32 values (broadcast together), key: two Python ints.
    Returns four uint32 ndarrays of the broadcast shape."""
    c = [np.asarray(_words(w), dtype=np.uint64) & _LO for w in ctr]
    c = list(np.broadcast_arrays(*c))
    c = [w.astype(np.uint64, copy=True) for w in c]
    k0, k1 = int(key[0]) & MASK32, int(key[1]) & MASK32
    m0, m1 = _U64(M0), _U64(M1)
    for rnd in range(10):
        if rnd:
            k0 = (k0 + W0) & MASK32
            k1 = (k1 + W1) & MASK32
        p0 = c[0] * m0  # < 2^64: exact in uint64
        p1 = c[2] * m1
        n0 = (p1 >> _SH32) ^ c[1] ^ _U64(k0)
        n2 = (p0 >> _SH32) ^ c[3] ^ _U64(k1)
        c = [n0, p1 & _LO, n2, p0 & _LO]
    return [w.astype(np.uint32) for w in c]


def block(seed, purpose, a, b, c):
    """shardlora's philox_block: a, b, c are scalars or arrays of 64-bit coordinates."""
    a = _words(a)
    b = _words(b)
    c = _words(c)
    seed = int(seed) & 0xFFFFFFFFFFFFFFFF
    ctr = (a & _LO, (a >> _SH32) ^ _U64((purpose & 0xFF) << 24), b & _LO, c & _LO)
    return philox4x32_10(ctr, (seed & MASK32, seed >> 32))


def u01(w):
    """float32 in [0, 1): the high 24 bits of each word times 2^-24 (exact)."""
    return (np.asarray(w, dtype=np.uint32) >> np.uint32(8)).astype(np.float32) * np.float32(2.0 ** -24)


# --------------------------------------------------------------------------------------
# LoRA draws (model/lora.c; dropout masks: model/adapter.c, keying documented in adapter.h)

def lora_init_a(seed, layer, module, r, n_in, gaussian=False):
    """float32 [r, n_in]: the initial lora_A of (layer, module). Element (j, i) uses
    a = j * n_in + i, b = layer, c = module_id * 4 + 0. Default: U[-1/sqrt(in), 1/sqrt(in))
    as lo + (hi - lo) * u01 in float32 (a result rounding up to hi is moved one ulp below);
    gaussian: Box-Muller in double on words 0 and 1, rounded to float32, then / r in float32."""
    mid = MODULE_IDS[module]
    a = np.arange(r * n_in, dtype=np.uint64).reshape(r, n_in)
    out = block(seed, LORA_INIT_A, a, layer, mid * 4 + 0)
    if gaussian:
        # math.log / math.cos are the C library's, as in the C code; element by element.
        u1 = (out[0].astype(np.float64) + 1.0) * 2.0 ** -32
        u2 = out[1].astype(np.float64) * 2.0 ** -32
        z = np.array([math.sqrt(-2.0 * math.log(x)) * math.cos(2.0 * math.pi * y)
                      for x, y in zip(u1.ravel().tolist(), u2.ravel().tolist())], dtype=np.float64)
        return (z.astype(np.float32) / np.float32(r)).reshape(r, n_in)
    hi = np.float32(1.0) / np.sqrt(np.float32(n_in))
    lo = -hi
    v = lo + (hi - lo) * u01(out[0])  # every operand float32: float32 arithmetic
    assert v.dtype == np.float32
    return np.where(v >= hi, np.nextafter(hi, lo), v).astype(np.float32)


def lora_dropout_keep(seed, step, layer, module, n_tokens, n_in, p, token0=0):
    """bool [n_tokens, n_in]: True where the input element is kept. Row n is the global token
    tok = token0 + n (b * T + t within the step), column j the global input column. One Philox
    block serves four consecutive columns: the block of a = tok * ceil(n_in / 4) + j // 4,
    b = step (1-based optimizer step), c = (layer << 8) | (module_id * 4 + 2), and element
    (tok, j) takes its word j % 4; kept iff u01(that word) >= p (p as float32)."""
    mid = MODULE_IDS[module]
    groups = (n_in + 3) // 4
    tok = np.arange(token0, token0 + n_tokens, dtype=np.uint64)[:, None]
    a = tok * _U64(groups) + np.arange(groups, dtype=np.uint64)[None, :]  # [n_tokens, groups]
    words = block(seed, LORA_DROPOUT, a, step, (layer << 8) | (mid * 4 + 2))
    # [n_tokens, groups, 4] -> columns 4 g + w, in order; the last group's spare words unused
    per_col = np.stack(words, axis=-1).reshape(n_tokens, 4 * groups)[:, :n_in]
    return u01(per_col) >= np.float32(p)


def lora_dropout_scale(seed, step, layer, module, n_tokens, n_in, p, token0=0):
    """float32 [n_tokens, n_in]: 0 where dropped, 1 / (1 - p) (float32 arithmetic) where kept."""
    keep = lora_dropout_keep(seed, step, layer, module, n_tokens, n_in, p, token0)
    s = np.float32(1.0) / (np.float32(1.0) - np.float32(p))
    return np.where(keep, s, np.float32(0.0)).astype(np.float32)


def ulp_distance(x, y):
    """Elementwise distance in float32 units in the last place (ordered-integer difference);
    returns an int64 array."""
    def ordered(v):
        i = np.asarray(v, dtype=np.float32).view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)
    return np.abs(ordered(x) - ordered(y))
