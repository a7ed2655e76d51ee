"""adapter_diff.py REF OTHER TOL: compares two adapter_model.safetensors files tensor by tensor.
Prints the max absolute and relative error (|a - b| / max |ref| of the tensor) and exits 1 if
the key sets or shapes differ or the max relative error exceeds TOL."""
import json, struct, sys

import numpy as np


def load(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    h.pop("__metadata__", None)
    out = {}
    for k, v in h.items():
        assert v["dtype"] == "F32", f"{path}: {k} is {v['dtype']}"
        s, e = v["data_offsets"]
        out[k] = np.frombuffer(b[8 + n + s:8 + n + e], np.float32).reshape(v["shape"])
    return out


ref, other, tol = load(sys.argv[1]), load(sys.argv[2]), float(sys.argv[3])
if sorted(ref) != sorted(other):
    print(f"tensor names differ: {sorted(set(ref) ^ set(other))[:5]}")
    sys.exit(1)
worst, worst_k, max_abs = 0.0, "", 0.0
for k in ref:
    a, b = ref[k].astype(np.float64), other[k].astype(np.float64)
    if a.shape != b.shape:
        print(f"{k}: shape {b.shape}, expected {a.shape}")
        sys.exit(1)
    d = float(np.max(np.abs(a - b))) if a.size else 0.0
    scale = float(np.max(np.abs(a))) if a.size else 0.0
    rel = d / scale if scale > 0 else d
    max_abs = max(max_abs, d)
    if rel >= worst:
        worst, worst_k = rel, k
print(f"{len(ref)} tensors: max abs error {max_abs:.3e}, max relative error {worst:.3e} ({worst_k}), tolerance {tol:g}")
sys.exit(0 if worst <= tol else 1)
