"""Comparisons for the mpi tests (tests/mpi/layouts.sh): runs of `shardlora train` at
different (tp, dp) layouts must give the same loss, gradients and adapter; the per-rank
summaries must show the sharded memory and the adapter-sized gradient traffic; bad layouts
must be refused with one clear line.

Errors are max|ours - ref| / max|ref| per tensor (relative), or max|ours - ref| against
ABS_TOL when max|ref| < TINY (e.g. dA while B = 0). Every subcommand prints the figures it
checked and exits 1 on any failure (0 otherwise).

Usage: /usr/bin/python3 tests/mpi/mpi_check.py SUBCOMMAND ...   (see --help of each)
"""

import argparse
import glob
import json
import math
import os
import re
import struct
import sys

import numpy as np

TINY = 1e-12   # below this max|ref| a tensor is compared by absolute error
ABS_TOL = 1e-9
DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32, "BF16": np.uint16,
          "F16": np.float16}
BATCH_KEYS = ("input_ids", "labels", "position_ids")
FAILED = []


def fail(msg):
    FAILED.append(msg)
    print(f"  FAIL {msg}")


def ok(msg):
    print(f"  ok   {msg}")


def read_st(path):
    """safetensors -> (arrays {name: ndarray}, raw {name: bytes}, metadata {str: str})."""
    try:
        b = open(path, "rb").read()
    except OSError as e:
        raise SystemExit(f"mpi_check: cannot read {path}: {e}")
    if len(b) < 8:
        raise SystemExit(f"mpi_check: {path}: too short for a safetensors file")
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    meta = h.pop("__metadata__", None) or {}
    arrays, raw = {}, {}
    for k, v in h.items():
        s, e = v["data_offsets"]
        raw[k] = b[8 + n + s: 8 + n + e]
        if v["dtype"] not in DTYPES:
            raise SystemExit(f"mpi_check: {path}: {k} has dtype {v['dtype']}")
        arrays[k] = np.frombuffer(raw[k], DTYPES[v["dtype"]]).reshape(v["shape"])
    return arrays, raw, meta


def is_adapter_key(k):
    return ".lora_" in k and not k.endswith(".grad")


def err(ours, ref):
    """(error, kind) as in the module docstring; inf for non-finite values or shape mismatch."""
    a = np.asarray(ours, np.float64)
    r = np.asarray(ref, np.float64)
    if a.shape != r.shape:
        return math.inf, "shape"
    if not (np.isfinite(a).all() and np.isfinite(r).all()):
        return math.inf, "rel"
    if r.size == 0:
        return 0.0, "rel"
    diff = float(np.abs(a - r).max())
    scale = float(np.abs(r).max())
    if scale < TINY:
        return diff, "abs"
    return diff / scale, "rel"


def norm_err(ours, ref):
    """||ours - ref|| / ||ref|| over the whole tensor (Frobenius); inf if not finite."""
    a = np.asarray(ours, np.float64)
    r = np.asarray(ref, np.float64)
    if a.shape != r.shape or not (np.isfinite(a).all() and np.isfinite(r).all()):
        return math.inf
    n = float(np.linalg.norm(r))
    return float(np.linalg.norm(a - r)) / n if n > 0 else float(np.linalg.norm(a))


def passes(e, kind, tol):
    return e <= (ABS_TOL if kind == "abs" else tol)


def read_metrics(path):
    rows = {}
    try:
        f = open(path)
    except OSError as e:
        fail(f"cannot read {path}: {e}")
        return rows
    with f:
        for line in f:
            if line.strip():
                o = json.loads(line)
                if "step" in o and "loss" in o:
                    rows[int(o["step"])] = o
    return rows


def grad_norm(arrays):
    return math.sqrt(sum(float(np.sum(arrays[k].astype(np.float64) ** 2))
                         for k in arrays if k.endswith(".grad")))


# --------------------------------------------------------------------------------------
def cmd_dumps(a):
    """Dumps of the same step at other layouts against a reference dump: loss, the global
    batch (exact), the adapter values and every gradient."""
    ref, _, rmeta = read_st(a.ref)
    if "loss" not in ref or any(k not in ref for k in BATCH_KEYS):
        fail(f"{a.ref}: lacks loss / input_ids / labels / position_ids")
        return finish("dumps")
    rkeys = sorted(k for k in ref if ".lora_" in k)
    rnorm = grad_norm(ref)
    print(f"reference {a.ref}: step {rmeta.get('step')}, tp {rmeta.get('tp')}, dp {rmeta.get('dp')}, "
          f"loss {float(ref['loss'].reshape(-1)[0]):.8f}, {len(rkeys)} adapter tensors + grads, "
          f"grad norm {rnorm:.6g}")
    if not rkeys:
        fail(f"{a.ref}: no adapter tensors")
    for spec in a.others:
        path, _, lay = spec.partition("@")  # PATH[@TPxDP]: the layout its metadata must state
        layout = lay.split("x") if lay else []
        tag = os.path.basename(path)
        ours, _, meta = read_st(path)
        keys = sorted(k for k in ours if ".lora_" in k)
        if keys != rkeys:
            fail(f"{tag}: adapter keys differ: missing {sorted(set(rkeys) - set(keys))[:4]}, "
                 f"extra {sorted(set(keys) - set(rkeys))[:4]}")
            continue
        for mk in ("step", "lora_r", "lora_alpha", "lora_dropout", "seed", "seq_len", "global_batch"):
            if meta.get(mk) != rmeta.get(mk):
                fail(f"{tag}: metadata {mk} = {meta.get(mk)!r}, reference {rmeta.get(mk)!r}")
        for mk, want in zip(("tp", "dp"), layout):
            if meta.get(mk) != want:
                fail(f"{tag}: metadata {mk} = {meta.get(mk)!r}, expected {want!r}")
        if "loss" not in ours or ours["loss"].size != 1:
            fail(f"{tag}: lacks 'loss' (F32 [1])")
            continue
        for k in BATCH_KEYS:
            if k not in ours or ours[k].shape != ref[k].shape or not np.array_equal(ours[k], ref[k]):
                fail(f"{tag}: {k} differs from the reference's global batch "
                     f"({list(ours[k].shape) if k in ours else 'missing'} vs {list(ref[k].shape)})")
        le, _ = err(ours["loss"].reshape(-1)[:1], ref["loss"].reshape(-1)[:1])
        wv = (0.0, "")
        wg = (0.0, "")
        wabs = 0.0
        bad = []
        for k in rkeys:
            e, kind = err(ours[k], ref[k])
            tol = a.tol if k.endswith(".grad") else a.value_tol
            if not passes(e, kind, tol):
                bad.append(f"{k}: {kind} err {e:.3e} (max|ref| {float(np.abs(ref[k]).max()):.3e})")
            if kind == "abs":
                wabs = max(wabs, e)
            elif k.endswith(".grad"):
                wg = max(wg, (e, k))
            else:
                wv = max(wv, (e, k))
        gn = grad_norm(ours)
        gne = abs(gn - rnorm) / rnorm if rnorm > 0 else abs(gn - rnorm)
        line = (f"{tag}: loss rel err {le:.3e}; grads max rel err {wg[0]:.3e} ({wg[1].split('layers.')[-1]}); "
                f"adapter values max rel err {wv[0]:.3e}; max abs err where ref ~ 0: {wabs:.3e}; "
                f"grad norm rel err {gne:.3e}")
        if le > a.tol or bad:
            fail(line)
            for b_ in bad[:8]:
                print(f"         {b_}")
            if len(bad) > 8:
                print(f"         ... {len(bad) - 8} more")
        else:
            ok(line)
    return finish("dumps")


def cmd_adapters(a):
    """Final adapters and per-step metrics of runs at other layouts against a reference run."""
    ref, _, _ = read_st(os.path.join(a.ref, "adapter", "adapter_model.safetensors"))
    rm = read_metrics(os.path.join(a.ref, "metrics.jsonl"))
    print(f"reference {a.ref}: {len(ref)} adapter tensors, {len(rm)} metric lines")
    if len(rm) != a.steps:
        fail(f"{a.ref}: {len(rm)} metric lines, expected {a.steps}")
    for d in a.others:
        tag = os.path.basename(d.rstrip("/"))
        ours, _, _ = read_st(os.path.join(d, "adapter", "adapter_model.safetensors"))
        if sorted(ours) != sorted(ref):
            fail(f"{tag}: adapter keys differ from the reference's")
            continue
        worst, wk, bad, fworst = 0.0, "", [], 0.0
        for k in ref:
            e, kind = err(ours[k], ref[k])
            if not passes(e, kind, a.tol):
                bad.append(f"{k}: {kind} err {e:.3e}")
            if kind != "abs" and e >= worst:
                worst, wk = e, k
            if a.norm_rel_tol is not None:
                fe = norm_err(ours[k], ref[k])
                fworst = max(fworst, fe)
                if not fe <= a.norm_rel_tol:
                    bad.append(f"{k}: relative norm err {fe:.3e} > {a.norm_rel_tol:g}")
        m = read_metrics(os.path.join(d, "metrics.jsonl"))
        le = ge = 0.0
        tok_bad = []
        for s in range(1, a.steps + 1):
            if s not in m or s not in rm:
                fail(f"{tag}: no metrics line for step {s}")
                continue
            le = max(le, abs(m[s]["loss"] - rm[s]["loss"]) / abs(rm[s]["loss"]))
            rg = rm[s].get("grad_norm", 0.0)
            ge = max(ge, abs(m[s].get("grad_norm", math.inf) - rg) / max(abs(rg), 1e-30))
            if m[s].get("tokens") != rm[s].get("tokens"):
                tok_bad.append(f"step {s}: tokens {m[s].get('tokens')} vs {rm[s].get('tokens')}")
        fro = f"relative norm err {fworst:.3e} (tol {a.norm_rel_tol:g}), " if a.norm_rel_tol is not None else ""
        line = (f"{tag}: adapter after {a.steps} steps {fro}max rel err {worst:.3e} ({wk.split('layers.')[-1]}); "
                f"metrics loss max rel err {le:.3e}, grad_norm max rel err {ge:.3e}")
        if bad or le > a.loss_tol or ge > a.norm_tol or tok_bad:
            fail(line)
            for b_ in (bad + tok_bad)[:8]:
                print(f"         {b_}")
        else:
            ok(line)
    return finish("adapters")


def cmd_identical(a):
    """The adapter tensors (not the gradients) of step-1 dumps are byte-for-byte equal."""
    _, rraw, _ = read_st(a.ref)
    rkeys = sorted(k for k in rraw if is_adapter_key(k))
    nbytes = sum(len(rraw[k]) for k in rkeys)
    print(f"reference {a.ref}: {len(rkeys)} adapter tensors, {nbytes} bytes")
    if not rkeys:
        fail(f"{a.ref}: no adapter tensors")
    for path in a.others:
        tag = os.path.basename(path)
        _, raw, meta = read_st(path)
        if meta.get("step") != "1":
            fail(f"{tag}: dump of step {meta.get('step')!r}, expected 1")
        keys = sorted(k for k in raw if is_adapter_key(k))
        if keys != rkeys:
            fail(f"{tag}: adapter keys differ from the reference's")
            continue
        diff = [k for k in rkeys if raw[k] != rraw[k]]
        nd = 0
        for k in diff:
            x = np.frombuffer(raw[k], np.uint8)
            y = np.frombuffer(rraw[k], np.uint8)
            nd += int(np.count_nonzero(x != y)) if x.size == y.size else max(x.size, y.size)
        if diff:
            fail(f"{tag}: {len(diff)} of {len(rkeys)} adapter tensors differ ({nd} bytes), e.g. {diff[0]}")
        else:
            ok(f"{tag}: all {len(rkeys)} adapter tensors ({nbytes} bytes) byte-identical to the reference")
    return finish("identical")


def read_summaries(out, world):
    """OUT/summary-rank{R}.json for R < world, checked for the contract's keys and grid."""
    rows = []
    for r in range(world):
        p = os.path.join(out, f"summary-rank{r}.json")
        try:
            s = json.load(open(p))
        except (OSError, json.JSONDecodeError) as e:
            fail(f"{p}: {e}")
            continue
        missing = [k for k in ("rank", "world", "tp", "dp", "pp", "tp_rank", "dp_rank", "pp_rank", "steps",
                               "frozen_bytes", "frozen_bytes_read", "replicated_frozen_bytes", "adapter_bytes",
                               "comm_bytes", "comm_calls") if k not in s]
        missing += [f"comm_bytes.{k}" for k in ("tp", "dp", "world", "kv", "pp", "other")
                    if k not in s.get("comm_bytes", {})]
        if missing:
            fail(f"{p}: lacks {', '.join(missing)}")
            continue
        # world = dp x pp x tp, TP innermost, then PP, then DP (parallel/grid.h)
        tp, pp = s["tp"], s["pp"]
        blk = tp * pp
        want = {"rank": r, "world": world, "dp": world // blk if blk else -1, "tp_rank": r % tp if tp else -1,
                "pp_rank": (r // tp) % pp if blk else -1, "dp_rank": r // blk if blk else -1}
        wrong = [f"{k} = {s[k]} (expected {v})" for k, v in want.items() if s[k] != v]
        if wrong:
            fail(f"{p}: {'; '.join(wrong)}")
        rows.append(s)
    extra = sorted(set(glob.glob(os.path.join(out, "summary-rank*.json"))) -
                   {os.path.join(out, f"summary-rank{r}.json") for r in range(world)})
    if extra:
        fail(f"{out}: summaries of ranks outside the world of {world}: {extra}")
    return rows


def st_data_bytes(model_dir):
    """(tensor data bytes, total file bytes) over the model's safetensors files."""
    data = total = 0
    for p in sorted(glob.glob(os.path.join(model_dir, "*.safetensors"))):
        b = open(p, "rb").read()
        n = struct.unpack("<Q", b[:8])[0]
        h = json.loads(b[8:8 + n])
        h.pop("__metadata__", None)
        data += sum(v["data_offsets"][1] - v["data_offsets"][0] for v in h.values())
        total += len(b)
    return data, total


def cmd_memory(a):
    """Per-rank frozen bytes (resident and read) at tp = TP are at most 1/TP of tp = 1's plus
    the replicated tensors."""
    one = read_summaries(a.tp1, 1)
    many = read_summaries(a.tpn, a.tp)
    data, total = st_data_bytes(a.model)
    if not one or len(many) != a.tp:
        return finish("memory")
    f1, r1 = one[0]["frozen_bytes"], one[0]["frozen_bytes_read"]
    print(f"model {a.model}: {data} bytes of tensor data in {total} bytes of safetensors files")
    print(f"tp=1: frozen_bytes {f1}, frozen_bytes_read {r1}, replicated_frozen_bytes "
          f"{one[0]['replicated_frozen_bytes']}")
    if not data <= r1 <= total:
        fail(f"tp=1 frozen_bytes_read {r1} is outside [tensor data {data}, file size {total}]")
    else:
        ok(f"tp=1 frozen_bytes_read {r1} within [tensor data {data}, file size {total}]")
    if f1 < data:
        fail(f"tp=1 frozen_bytes {f1} < the model's tensor data {data}")
    else:
        ok(f"tp=1 frozen_bytes {f1} >= the model's tensor data {data}")
    for s in many:
        rep = s["replicated_frozen_bytes"]
        if not 0 < rep < f1 / a.tp:
            fail(f"tp={a.tp} rank {s['rank']}: replicated_frozen_bytes {rep} not in (0, {f1 / a.tp:.0f})")
        for key, base in (("frozen_bytes", f1), ("frozen_bytes_read", r1)):
            lim = base / a.tp + rep
            line = (f"tp={a.tp} rank {s['rank']}: {key} {s[key]} <= {key}(tp=1)/{a.tp} + replicated = "
                    f"{base / a.tp:.0f} + {rep} = {lim:.0f} (ratio to tp=1: {s[key] / base:.4f})")
            if s[key] > lim or s[key] <= 0:
                fail(line.replace(" <= ", " > " if s[key] > lim else " <= "))
            else:
                ok(line)
    return finish("memory")


def cmd_comm(a):
    """Gradient bytes per step = the adapter's gradient buffer (every byte once, when dp > 1;
    at dp = 1 the sharded factors need no exchange); adapter bytes << the model's;
    tp traffic is zero at tp = 1 and positive at tp > 1."""
    for spec in a.runs:
        out, world, tp, steps = spec.split(":")
        world, tp, steps = int(world), int(tp), int(steps)
        rows = read_summaries(out, world)
        tag = os.path.basename(out.rstrip("/"))
        for s in rows:
            cb = s["comm_bytes"]
            if s["tp"] != tp or s["steps"] != steps:
                fail(f"{tag} rank {s['rank']}: tp {s['tp']} steps {s['steps']}, expected tp {tp} steps {steps}")
            grad = (cb["dp"] + cb["world"] + cb["kv"]) / steps
            ab = s["adapter_bytes"]
            frozen_all = s["frozen_bytes"] * tp
            calls = s.get("comm_calls", {})
            line = (f"{tag} rank {s['rank']} (tp {tp}, dp {world // tp}): gradient bytes/step (dp {cb['dp']} + "
                    f"world {cb['world']} + kv {cb['kv']}) / {steps} = {grad:.1f}, adapter_bytes {ab}")
            # Each sync class moves its whole region every step when its communicator has more
            # than one rank: dp_comm (dp ranks), world, and the kv-head group (tp/KV x dp ranks,
            # only non-empty when kv-heads < tp). With dp > 1 that is the entire gradient buffer.
            rb = s["adapter_region_bytes"]
            dp = world // tp
            expected = (rb["dp"] if dp > 1 else 0) + (rb["world"] if world > 1 else 0) + rb["kv"]
            line += f", expected {expected} (regions dp {rb['dp']}, world {rb['world']}, kv {rb['kv']})"
            if ab <= 0 or sum(rb.values()) != ab:
                fail(line + f" -- regions do not add up to adapter_bytes {ab}")
            elif grad != expected:
                fail(line + " -- not equal")
            elif dp > 1 and grad != ab:
                fail(line + " -- with dp > 1 every gradient byte must be synchronised once per step")
            else:
                ok(line)
            frac = ab / frozen_all if frozen_all > 0 else math.inf
            line = f"{tag} rank {s['rank']}: adapter_bytes / (frozen_bytes * tp) = {ab} / {frozen_all} = {frac:.4f}"
            if not frac < 0.1:
                fail(line + " (not < 0.1)")
            else:
                ok(line + " < 0.1")
            tpb = cb["tp"] / steps
            line = (f"{tag} rank {s['rank']}: tp bytes/step {tpb:.0f} (calls {calls.get('tp')}), other bytes/step "
                    f"{cb['other'] / steps:.0f}")
            if (tp == 1 and tpb != 0) or (tp > 1 and not tpb > 0):
                fail(line + f" -- expected {'0' if tp == 1 else '> 0'} at tp={tp}")
            else:
                ok(line + f" ({'0' if tp == 1 else '> 0'} at tp={tp})")
            if tp > 1 and a.layers:
                # DESIGN.md §3-4: per token, 2 all-reduces of [C] per layer per direction, plus the
                # embedding (forward) and lm_head input gradient (backward); LoRA adds none. Allow
                # 64 bytes per token for the vocab-parallel cross-entropy's scalars.
                tokens = a.global_batch // (world // tp) * a.seq_len
                lim = (4 * a.layers + 2) * tokens * a.hidden * 4 + 64 * tokens
                line = (f"{tag} rank {s['rank']}: tp bytes/step {tpb:.0f} = {tpb / (tokens * a.hidden * 4):.3f} "
                        f"all-reduces of [C] per token (limit 4L + 2 = {4 * a.layers + 2}, + 64 B/token: {lim} bytes)")
                if tpb > lim:
                    fail(line + " -- more tensor-parallel traffic than the Megatron layout needs")
                else:
                    ok(line)
            if a.adapter_floats and tp == 1 and ab != 4 * a.adapter_floats:
                fail(f"{tag} rank {s['rank']}: adapter_bytes {ab} at tp=1, expected 4 x {a.adapter_floats} "
                     f"adapter floats = {4 * a.adapter_floats}")
    return finish("comm")


def cmd_adapter_floats(a):
    """Prints the number of floats in an adapter_model.safetensors."""
    arrays, _, _ = read_st(a.file)
    print(sum(v.size for k, v in arrays.items() if is_adapter_key(k)))
    return 0


MPI_NOISE = re.compile(r"^(-+|Primary job .*|a non-zero exit code.*|mpiexec .*|mpirun .*|the job to be "
                       r"terminated.*|\s*Process name:.*|\s*Exit code:.*|MPI_ABORT .*|with errorcode .*|"
                       r"NOTE: invoking MPI_ABORT.*|You may or may not .*|exactly when Open MPI .*|"
                       r"\[[^\]]*\] \d+ more process.*|\[[^\]]*\] Set MCA parameter .*)$")


def cmd_refusal(a):
    """stderr of a refused launch: shardlora's own lines (Open MPI's launcher text removed)
    say one thing, once per rank at most, and name the problem."""
    text = open(a.stderr, errors="replace").read()
    lines = [l.rstrip() for l in text.splitlines() if l.strip()]
    ours = [l for l in lines if not MPI_NOISE.match(l)]
    # Open MPI's blocks sit between lines of dashes; drop everything inside them as well
    inside, kept = False, []
    for l in lines:
        if re.fullmatch(r"-{10,}", l):
            inside = not inside
            continue
        if not inside and not MPI_NOISE.match(l):
            kept.append(l)
    ours = kept
    distinct = sorted({re.sub(r"rank \d+", "rank R", l) for l in ours})
    shown = " | ".join(distinct) if distinct else "(nothing)"
    if not ours:
        fail(f"{a.name}: no message of shardlora's own on stderr")
    elif len(distinct) != 1 or len(ours) > a.world:
        fail(f"{a.name}: {len(ours)} lines ({len(distinct)} distinct) on stderr, expected one line "
             f"(at most one per rank): {shown}")
    elif not re.search(a.pattern, distinct[0], re.I):
        fail(f"{a.name}: the message does not name the problem (/{a.pattern}/): {distinct[0]}")
    else:
        ok(f"{a.name}: one line: {distinct[0]}")
    return finish("refusal")


def cmd_gradnorm(a):
    """metrics grad_norm of a step equals the norm of that step's dumped (pre-clip) gradients."""
    arrays, _, meta = read_st(a.dump)
    step = int(meta.get("step", "0"))
    m = read_metrics(a.metrics)
    n = grad_norm(arrays)
    if step not in m:
        fail(f"{a.metrics}: no line for step {step}")
        return finish("gradnorm")
    g = float(m[step].get("grad_norm", math.nan))
    e = abs(g - n) / n if n > 0 else math.inf
    line = (f"step {step}: metrics grad_norm {g:.8g}, norm of the dumped gradients {n:.8g} (rel err {e:.3e}); "
            f"clip at {a.max_norm:g}")
    if not e <= a.tol:
        fail(line)
    elif not n > 10 * a.max_norm:
        fail(line + " -- the gradient norm is not above 10 x the clip threshold; the test proves nothing")
    else:
        ok(line + " -> the pre-clip norm")
    mg = meta.get("max_grad_norm")
    if mg is None:
        fail(f"{a.dump}: metadata lacks max_grad_norm")
    elif not math.isclose(float(mg), a.max_norm, rel_tol=1e-6):
        fail(f"{a.dump}: metadata max_grad_norm {mg}, the run used {a.max_norm:g}")
    else:
        ok(f"metadata max_grad_norm {mg}")
    return finish("gradnorm")


def finish(name):
    if FAILED:
        print(f"mpi_check {name}: FAILED {len(FAILED)} check(s)")
        return 1
    print(f"mpi_check {name}: OK")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("dumps", help=cmd_dumps.__doc__)
    p.add_argument("--tol", type=float, default=1e-5, help="loss and gradients (relative)")
    p.add_argument("--value-tol", type=float, default=0.0, help="adapter values in the dumps (relative)")
    p.add_argument("ref")
    p.add_argument("others", nargs="+", help="PATH[@TPxDP] (then its metadata tp and dp must be these)")
    p.set_defaults(fn=cmd_dumps)
    p = sub.add_parser("adapters", help=cmd_adapters.__doc__)
    p.add_argument("--tol", type=float, default=1e-4, help="adapter values (relative, max|a-b| / max|b|)")
    p.add_argument("--norm-rel-tol", type=float, default=None,
                   help="also bound ||a-b|| / ||b|| per tensor (the relative error of the tensor as a whole)")
    p.add_argument("--loss-tol", type=float, default=1e-5, help="per-step losses (relative)")
    p.add_argument("--norm-tol", type=float, default=1e-5, help="per-step grad_norm (relative)")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("ref")
    p.add_argument("others", nargs="+")
    p.set_defaults(fn=cmd_adapters)
    p = sub.add_parser("identical", help=cmd_identical.__doc__)
    p.add_argument("ref")
    p.add_argument("others", nargs="+")
    p.set_defaults(fn=cmd_identical)
    p = sub.add_parser("memory", help=cmd_memory.__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--tp", type=int, required=True)
    p.add_argument("tp1")
    p.add_argument("tpn")
    p.set_defaults(fn=cmd_memory)
    p = sub.add_parser("comm", help=cmd_comm.__doc__)
    p.add_argument("--adapter-floats", type=int, default=0, help="floats in the full adapter (checks tp=1 runs)")
    p.add_argument("--layers", type=int, default=0, help="L, to bound the tp traffic per token (0: no bound)")
    p.add_argument("--hidden", type=int, default=0, help="C")
    p.add_argument("--seq-len", type=int, default=0, help="T")
    p.add_argument("--global-batch", type=int, default=0, help="G")
    p.add_argument("runs", nargs="+", help="OUT:WORLD:TP:STEPS")
    p.set_defaults(fn=cmd_comm)
    p = sub.add_parser("adapter-floats", help=cmd_adapter_floats.__doc__)
    p.add_argument("file")
    p.set_defaults(fn=cmd_adapter_floats)
    p = sub.add_parser("refusal", help=cmd_refusal.__doc__)
    p.add_argument("--name", required=True)
    p.add_argument("--world", type=int, required=True)
    p.add_argument("--pattern", required=True, help="regex the message must match")
    p.add_argument("stderr")
    p.set_defaults(fn=cmd_refusal)
    p = sub.add_parser("gradnorm", help=cmd_gradnorm.__doc__)
    p.add_argument("--dump", required=True)
    p.add_argument("--metrics", required=True)
    p.add_argument("--max-norm", type=float, required=True)
    p.add_argument("--tol", type=float, default=1e-5)
    p.set_defaults(fn=cmd_gradnorm)
    a = ap.parse_args()
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
