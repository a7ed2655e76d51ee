#!/usr/bin/python3
"""Independent PyTorch reference of the frozen-base storage formats (issue 18): int8 symmetric
per output channel and bitsandbytes' NF4 (blocks of 64, absmax, 16 code values, two indices per
byte with the first in the high nibble). Written from the rules in runtime/quant.h, the QLoRA
paper (Dettmers et al. 2023, Appendix E) and bitsandbytes' algorithm, not from our C code.

  quant_ref.py --selftest             known values of the table and the rules
  quant_ref.py --check DRIVER WORKDIR runs DRIVER WORKDIR (tests/unit/quant_dump.c), which
                                      writes a matrix and our quantised bytes, and compares
                                      them bit for bit (indices, scales, dequantised values)
  quant_ref.py --dequant-model SRC DST FORMAT
                                      SRC's model with every weight shardlora stores as
                                      --base-dtype FORMAT (bf16, int8, nf4: the embedding,
                                      lm_head and the seven projections of each layer)
                                      quantised and dequantised here, written to DST in F32:
                                      the model a quantised run trains against
"""
import os
import subprocess
import sys
from fractions import Fraction

import torch

# The 16 NF4 code values as bitsandbytes publishes them (create_normal_map(0.9677083), the
# table in its kernels); --selftest rebuilds them from their definition.
NF4 = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=torch.float32)


def f32_of_decimal(text):
    """The F32 nearest to a decimal literal, as a C compiler reads `1.25f` (float(text) first
    would round twice: to double, then to F32)."""
    exact = Fraction(text)
    f = torch.tensor(float(text), dtype=torch.float32)
    cands = [f, torch.nextafter(f, torch.tensor(2.0)), torch.nextafter(f, torch.tensor(-2.0))]
    dist = [abs(Fraction(c.item()) - exact) for c in cands]
    assert sorted(dist)[0] != sorted(dist)[1], f"{text} is halfway between two floats"
    return cands[dist.index(min(dist))].item()


# dQuantizeNF4's thresholds: bitsandbytes writes each midpoint of adjacent code values (in
# double) as a decimal float literal (its shortest repr, e.g. 0.8614784181118011f), which the
# compiler rounds to F32. The double midpoint of two F32 values is exactly halfway between two
# F32 values, so the literal's last digits decide the side: 4 of the 15 are not the
# ties-to-even rounding of the midpoint.
NF4_MID = torch.tensor([f32_of_decimal(repr((NF4[i].item() + NF4[i + 1].item()) / 2))
                        for i in range(15)], dtype=torch.float32)
# As published in bitsandbytes' kernels (checked by --selftest).
NF4_MID_BNB = ["-0.8480964004993439", "-0.6106329262256622", "-0.4599952697753906",
               "-0.33967943489551544", "-0.23460740596055984", "-0.13791173323988914",
               "-0.045525018125772476", "0.03979014977812767", "0.1202552504837513",
               "0.2035212516784668", "0.2920137718319893", "0.3893125355243683",
               "0.5016634166240692", "0.6427869200706482", "0.8614784181118011"]
BLOCK = 64


def nf4_from_definition(offset=0.9677083):
    """QLoRA's NormalFloat: 8 positive quantiles of N(0,1) on linspace(offset, 0.5, 9)[:-1],
    7 negative ones on linspace(offset, 0.5, 8)[:-1], an exact 0, normalised by the max."""
    ppf = lambda p: torch.special.ndtri(p.double())
    v1 = ppf(torch.linspace(offset, 0.5, 9)[:-1])
    v3 = -ppf(torch.linspace(offset, 0.5, 8)[:-1])
    v = torch.cat([v1, torch.zeros(1, dtype=torch.float64), v3]).float().sort().values
    return v / v.max()


def int8_quant(w):
    """w [rows, cols] F32 -> (q int8 [rows, cols], scale F32 [rows])."""
    absmax = w.abs().amax(dim=1)
    scale = absmax / 127.0
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    q = torch.round(w / safe[:, None]).clamp(-127, 127)  # torch.round: half to even
    q = torch.where(scale[:, None] == 0, torch.zeros_like(q), q)
    return q.to(torch.int8), scale


def int8_dequant(q, scale):
    return q.float() * scale[:, None]


def nf4_index(x):
    """Nearest code index of normalised values, ties to the lower code: the number of
    midpoints strictly below x (bucketize with right=False counts boundaries < x)."""
    return torch.bucketize(x, NF4_MID, right=False)


def nf4_quant(w):
    """w [rows, cols] F32, cols % 64 == 0 -> (packed uint8 [rows, cols/2], absmax [rows, cols/64])."""
    rows, cols = w.shape
    assert cols % BLOCK == 0, f"nf4 needs cols % 64 == 0, got [{rows}, {cols}]"
    blocks = w.reshape(rows, cols // BLOCK, BLOCK)
    absmax = blocks.abs().amax(dim=2)
    inv = torch.where(absmax > 0, 1.0 / absmax, torch.zeros_like(absmax))  # F32 reciprocal
    idx = nf4_index(blocks * inv[:, :, None]).reshape(rows, cols).to(torch.uint8)
    packed = (idx[:, 0::2] << 4) | idx[:, 1::2]
    return packed, absmax


def nf4_unpack(packed):
    rows, half = packed.shape
    idx = torch.empty(rows, 2 * half, dtype=torch.long)
    idx[:, 0::2] = (packed >> 4).long()
    idx[:, 1::2] = (packed & 15).long()
    return idx


def nf4_dequant(packed, absmax):
    idx = nf4_unpack(packed)
    rows, cols = idx.shape
    vals = NF4[idx].reshape(rows, cols // BLOCK, BLOCK) * absmax[:, :, None]
    return vals.reshape(rows, cols)


def selftest():
    fails = 0

    def check(ok, what):
        nonlocal fails
        print(("PASS " if ok else "FAIL ") + what)
        fails += 0 if ok else 1

    check(bool((NF4[1:] > NF4[:-1]).all()), "NF4 table strictly ascending")
    check(NF4[0].item() == -1.0 and NF4[15].item() == 1.0 and NF4[7].item() == 0.0,
          "NF4 table has -1, 0 (index 7), 1")
    check([repr((NF4[i].item() + NF4[i + 1].item()) / 2) for i in range(15)] == NF4_MID_BNB,
          "NF4 midpoints = bitsandbytes' dQuantizeNF4 literals")
    tte = ((NF4[:-1].double() + NF4[1:].double()) / 2).float()
    nd = int((tte != NF4_MID).sum())
    check(nd == 4, f"{nd} of 15 thresholds differ from the ties-to-even F32 midpoints (4 known)")
    d = (nf4_from_definition() - NF4).abs().max().item()
    check(d < 1e-6, f"NF4 table = QLoRA's definition (max diff {d:.2e})")
    # A block [a, -a, 0, ...] and every code value times a round-trip exactly.
    a = 0.75
    w = torch.zeros(1, 64)
    w[0, 0], w[0, 1] = a, -a
    w[0, 2:18] = NF4 * a
    p, m = nf4_quant(w)
    check(bool((nf4_dequant(p, m) == w).all()), "nf4: [a, -a, 0, codes * a] round-trips exactly")
    check(p[0, 0].item() == 0xF0 and m[0, 0].item() == a, "nf4: first element in the high nibble")
    # Ties: a value exactly on a midpoint takes the lower code; one ulp above the upper.
    mid = NF4_MID.clone()
    idx = nf4_index(mid)
    up = nf4_index(torch.nextafter(mid, torch.full_like(mid, 2.0)))
    check(bool((idx == torch.arange(15)).all() and (up == torch.arange(1, 16)).all()),
          "nf4: on a threshold -> lower code, one ulp above -> upper")
    # Away from the thresholds the index is the nearest code (in double).
    g = torch.Generator().manual_seed(5)
    x = torch.rand(100000, generator=g) * 2 - 1
    near = (x.double()[:, None] - NF4.double()[None, :]).abs().argmin(dim=1)
    check(bool((nf4_index(x) == near).all()), "nf4: index = nearest code on 1e5 random values")
    # All-zero block: absmax 0, index 7, dequantised 0.
    p, m = nf4_quant(torch.zeros(2, 64))
    check(bool((p == 0x77).all() and (m == 0).all()), "nf4: zero block -> absmax 0, index 7")
    # int8: half-to-even ties, zero row, absmax -> +-127.
    w = torch.tensor([[127.0, -127.0, 2.5, 3.5, -2.5, 0.5, 1.5, 0.0],
                      [0.0] * 8, [1.0, -0.5, 0.25, 0, 0, 0, 0, 0]])
    q, s = int8_quant(w)
    check(q[0].tolist() == [127, -127, 2, 4, -2, 0, 2, 0] and s[0].item() == 1.0,
          "int8: ties to even, scale absmax/127")
    check(q[1].abs().sum().item() == 0 and s[1].item() == 0.0, "int8: zero row -> scale 0, q 0")
    check(q[2, 0].item() == 127, "int8: absmax maps to 127")
    w = torch.randn(16, 200, generator=g)
    q, s = int8_quant(w)
    err = ((int8_dequant(q, s) - w).abs() - s[:, None] / 2).max().item()
    check(err <= 1e-6, f"int8: |w - dq| <= scale/2 (+{err:.1e})")
    return fails


def read(path, dtype, shape):
    data = open(path, "rb").read()
    return torch.frombuffer(bytearray(data), dtype=dtype).reshape(shape).clone()


def check_driver(driver, work):
    os.makedirs(work, exist_ok=True)
    out = subprocess.run([driver, work], check=True, capture_output=True, text=True).stdout
    rows, cols = (int(v) for v in out.split())
    fails = 0
    for src in ("f32", "bf16"):
        if src == "f32":
            w = read(f"{work}/w.f32", torch.float32, (rows, cols))
        else:
            w = read(f"{work}/w.bf16", torch.bfloat16, (rows, cols)).float()
        q, s = int8_quant(w)
        p, m = nf4_quant(w)
        cases = [
            ("int8 codes", read(f"{work}/int8_{src}.q", torch.int8, (rows, cols)), q),
            ("int8 scales", read(f"{work}/int8_{src}.s", torch.float32, (rows,)), s),
            ("nf4 codes", read(f"{work}/nf4_{src}.q", torch.uint8, (rows, cols // 2)), p),
            ("nf4 absmax", read(f"{work}/nf4_{src}.s", torch.float32, (rows, cols // 64)), m),
            ("int8 dequant", read(f"{work}/int8_{src}.dq", torch.float32, (rows, cols)),
             int8_dequant(q, s)),
            ("nf4 dequant", read(f"{work}/nf4_{src}.dq", torch.float32, (rows, cols)),
             nf4_dequant(p, m)),
        ]
        for name, ours, ref in cases:
            same = ours.view(-1).numpy().tobytes() == ref.contiguous().view(-1).numpy().tobytes()
            ndiff = int((ours.view(-1) != ref.reshape(-1)).sum())
            print(f"{'PASS' if same else 'FAIL'} {src} {name}: {ours.numel()} values, "
                  f"{ndiff} differ")
            fails += 0 if same else 1
    return fails


QUANTISED = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def stored_by_base_dtype(name):
    """Whether --base-dtype applies to this tensor (norms and biases stay F32)."""
    if name in ("model.embed_tokens.weight", "lm_head.weight"):
        return True
    parts = name.split(".")
    return (len(parts) == 6 and parts[:2] == ["model", "layers"] and parts[4] in QUANTISED
            and parts[5] == "weight")


def dequant_model(src, dst, fmt):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import torch_llama as tl
    config, weights = tl.load_model_dir(src)
    n = 0
    for name in sorted(weights):
        if not stored_by_base_dtype(name):
            continue
        w = weights[name].float()
        if fmt == "bf16":
            weights[name] = w.to(torch.bfloat16).float()
        elif fmt == "int8":
            weights[name] = int8_dequant(*int8_quant(w))
        else:
            weights[name] = nf4_dequant(*nf4_quant(w))
        n += 1
    tl.write_model_dir(dst, config, weights)
    print(f"quant_ref: {dst}: {n} tensors of {src} through {fmt} and back, written in F32")
    return 0


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--dequant-model" and sys.argv[4] in ("bf16", "int8", "nf4"):
        return dequant_model(sys.argv[2], sys.argv[3], sys.argv[4])
    if len(sys.argv) == 2 and sys.argv[1] == "--selftest":
        fails = selftest()
    elif len(sys.argv) == 4 and sys.argv[1] == "--check":
        fails = check_driver(sys.argv[2], sys.argv[3])
    else:
        print(__doc__)
        return 2
    print(f"{fails} failed")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
