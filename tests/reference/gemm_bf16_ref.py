#!/usr/bin/python3
"""PyTorch reference of BF16 compute for the frozen base's products (issue 18,
--compute-dtype bf16): Y = X W^T and dX = dY W with W stored F32, BF16, INT8 or NF4.

  gemm_bf16_ref.py --check DRIVER WORKDIR   runs DRIVER WORKDIR MODE (tests/unit/gemm_bf16_dump.c)
                                            for MODE emulate and onednn (the latter prints
                                            "skip ..." on a CPU without native BF16: reported as
                                            SKIP) and compares its outputs with torch

The weight each product uses is what torch makes of w.f32: itself (F32), w.bfloat16() (BF16),
and tests/reference/quant_ref.py's int8 / nf4 quantise-dequantise (written from the rules, not
from our C). Two comparisons per output, with the tolerances they are entitled to:

  1. bf16 operands, F32 accumulation: ref = X.bfloat16().float() @ Wd.bfloat16().float().T in
     torch's F32 matmul. Products of two BF16 values are exact in F32, so ours and ref are each
     within gamma_{K+1} S of the exact sum, S = |Xb| @ |Wb|^T (Higham, Accuracy and Stability
     of Numerical Algorithms, eq. 3.5; u = 2^-24): tolerance 2 gamma_{K+1} S.
  2. torch CPU autocast(bfloat16): F.linear(X, Wd) and dY @ Wd under autocast, bfloat16
     results (F32 accumulation rounded to BF16 at the end, relative error <= 2^-9): tolerance
     2^-8 |ref| + 2 gamma_{K+1} S. Only where torch's own result is within 2^-9 |exact| +
     2 gamma_{K+1} S of the exact sum, i.e. where its bfloat16 matmul accumulates in F32 (with
     oneDNN on AVX512_BF16 / AMX CPUs; torch 1.13's fallback kernel for a non-transposed B
     accumulates in BF16): otherwise that comparison is a printed SKIP.
"""
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from quant_ref import int8_dequant, int8_quant, nf4_dequant, nf4_quant  # noqa: E402

U = 2.0 ** -24


def gamma(n):
    return n * U / (1 - n * U)


def read(path, shape):
    data = open(path, "rb").read()
    return torch.frombuffer(bytearray(data), dtype=torch.float32).reshape(shape).clone()


def weights(w):
    return {
        "F32": w,
        "BF16": w.bfloat16().float(),
        "INT8": int8_dequant(*int8_quant(w)),
        "NF4": nf4_dequant(*nf4_quant(w)),
    }


def compare(label, ours, a, b_t):
    """ours [T, N] against a [T, K] @ b_t [K, N] in BF16 semantics; returns failures."""
    k = a.shape[1]
    ab, bb = a.bfloat16(), b_t.bfloat16()
    s = ab.double().abs() @ bb.double().abs()
    ref = ab.float() @ bb.float()
    tol1 = 2 * gamma(k + 1) * s + 1e-30
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ac = torch.matmul(a, b_t)
    assert ac.dtype == torch.bfloat16
    acd = ac.double()
    tol2 = 2.0 ** -8 * acd.abs() + tol1
    # Torch's own bfloat16 matmul must accumulate in F32 for comparison 2 to mean anything:
    # on CPUs without AVX512_BF16, torch 1.13's fallback kernel for the non-transposed case
    # accumulates in BF16 (found here: dY @ W off by ~50x this tolerance). Checked against the
    # exact sum, entitled to 2^-9 |exact| (the final rounding) + 2 gamma_{K+1} S.
    exact = ab.double() @ bb.double()
    rt = ((acd - exact).abs() / (2.0 ** -9 * exact.abs() + tol1)).max().item()
    r1 = ((ours.double() - ref.double()).abs() / tol1).max().item()
    r2 = ((ours.double() - acd).abs() / tol2).max().item() if rt <= 1.0 else None
    # The F32 product of the unrounded operands must be outside tolerance 1 somewhere:
    # otherwise this test could not tell BF16 compute from F32 compute.
    r0 = ((ours.double() - (a.double() @ b_t.double())).abs() / tol1).max().item()
    fails = 0
    for what, r in (("bf16 operands, F32 accumulation", r1), ("torch autocast(bfloat16)", r2)):
        if r is None:
            print(f"SKIP {label} vs {what}: torch's bfloat16 matmul on this CPU does not "
                  f"accumulate in F32 (its error / its tolerance {rt:.1f})")
            continue
        ok = r <= 1.0
        print(f"{'PASS' if ok else 'FAIL'} {label} vs {what}: max |err| / tol {r:.3f}")
        fails += 0 if ok else 1
    ok = r0 > 1.0
    print(f"{'PASS' if ok else 'FAIL'} {label} differs from the F32 product "
          f"(max |diff| / tol {r0:.1f} > 1)")
    return fails + (0 if ok else 1)


def check(driver, work):
    fails = 0
    for mode in ("emulate", "onednn"):
        d = os.path.join(work, mode)
        os.makedirs(d, exist_ok=True)
        out = subprocess.run([driver, d, mode], check=True, capture_output=True, text=True).stdout
        if out.startswith("skip"):
            print(f"SKIP {mode}: {out.strip()[5:]}")
            continue
        lines = out.splitlines()
        t, o, i = (int(v) for v in lines[0].split())
        print(f"{mode}: {lines[1]}")
        x = read(f"{d}/x.f32", (t, i))
        dy = read(f"{d}/dy.f32", (t, o))
        w = read(f"{d}/w.f32", (o, i))
        for name, wd in weights(w).items():
            y = read(f"{d}/y_{name}.f32", (t, o))
            dx = read(f"{d}/dx_{name}.f32", (t, i))
            fails += compare(f"{mode} {name} Y = X W^T", y, x, wd.t())
            fails += compare(f"{mode} {name} dX = dY W", dx, dy, wd)
    return fails


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--check":
        fails = check(sys.argv[2], sys.argv[3])
    else:
        print(__doc__)
        return 2
    print(f"{fails} failed")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
