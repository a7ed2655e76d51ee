"""Check `shardlora generate --dump-logits` against the PyTorch reference (torch_llama.py).

The dump holds, per prompt I: prompt.I (the prompt's ids), ids.I (the generated ids) and
logits.I [steps, V] (the raw logits each step's token was chosen from). For every prompt this
script recomputes the whole sequence in PyTorch at every step (no cache: argmax decoding by
full recomputation), with the PEFT adapter of --adapter applied by PEFT's formula
(y = W x + b + alpha/r * B A x), and checks
  * the logits: max|ours - ref| / max|ref| <= --tol per step;
  * the token: greedy (--temperature 0) must be the reference's argmax after HF's repetition
    penalty; sampling must be the token an independent re-implementation of HF's warpers
    (RepetitionPenalty, Temperature, TopK, TopP, as transformers writes them in torch) and
    shardlora's documented draw (u = Philox(seed, purpose 16, prompt index, step), inverse
    CDF over the kept tokens in id order, model/sample.h) picks from OUR logits (so float rounding of
    the model cannot flip a draw), and the same token must also come out of the reference's
    logits unless the draw sits within rounding of a boundary (reported);
  * the reference's top-2 margin is printed (minimum over steps); a greedy mismatch whose
    margin is below the logit tolerance is reported as a tie, not a failure.
--merged-bf16: the reference merges the adapter into its weights and rounds them to BF16, as
--merge-in-memory does on a BF16 model (W' = bf16(W + s B A)), then runs without adapter.
--compare OTHER_DUMP: another dump of the same prompts (e.g. --no-kv-cache, another tp) must
have the same ids and logits within --tol. --same-results A B: two results JSONL files with
the same ids, text and finish_reason per prompt (--differ-results: at least one prompt's ids
differ).

Exit status 0 when everything matches, 1 otherwise.
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import philox  # noqa: E402
import torch_llama as tl  # noqa: E402

PHILOX_SAMPLE = 16  # runtime/philox.h: PHILOX_SAMPLE


def read_dump(path):
    tensors, meta = tl.read_safetensors(path)
    out = {}
    for name, t in tensors.items():
        kind, _, idx = name.partition(".")
        out.setdefault(int(idx), {})[kind] = t
    for i, d in out.items():
        if set(d) != {"prompt", "ids", "logits"}:
            raise tl.ReferenceError_(f"{path}: prompt {i} has {sorted(d)}, expected prompt, ids, logits")
    return out, meta


def load_adapter(cfg, adir):
    with open(os.path.join(adir, "adapter_config.json")) as f:
        ac = json.load(f)
    tensors, _ = tl.read_safetensors(os.path.join(adir, "adapter_model.safetensors"))
    lora = tl.Lora(cfg, ac["r"], ac["lora_alpha"], ac["target_modules"], bool(ac.get("use_rslora", False)))
    lora.load(tensors, adir)
    return lora


@torch.no_grad()
def merge_bf16(model, lora):
    """The adapter merged into the weights as --merge-in-memory does on BF16 weights:
    W' = bf16(W + scale * B A) with round-to-nearest-even (torch's conversion)."""
    for k in lora.params:
        layer, module, factor = tl.parse_lora_key(k)
        if factor != "A":
            continue
        a = lora.params[k]
        b = lora.params[tl.lora_key(layer, module, "B")]
        name = f"model.layers.{layer}.{tl.module_path(module)}.weight"
        w = model.w[name] + lora.scale * (b @ a)
        model.w[name] = w.to(torch.bfloat16).to(torch.float32)


def penalize(x, seq, p):
    """HF RepetitionPenaltyLogitsProcessor on a float32 numpy row."""
    if p == 1.0:
        return x
    x = x.copy()
    ids = np.unique(np.asarray(seq, dtype=np.int64))
    v = x[ids]
    x[ids] = np.where(v < 0, v * np.float32(p), v / np.float32(p)).astype(np.float32)
    return x


def philox_u53(seed, prompt, step):
    w = philox.block(seed, PHILOX_SAMPLE, prompt, step, 0)
    bits = (int(w[0]) >> 5) << 26 | (int(w[1]) >> 6)
    return bits / 9007199254740992.0


def sample(x, args, prompt, step):
    """Temperature, top-k, top-p as transformers' warpers (torch, float32), then the draw.
    x: float32 numpy row after the repetition penalty. Returns (token, distance of the draw
    from the nearest cumulative boundary relative to the kept mass, tokens kept)."""
    t = torch.from_numpy(x / np.float32(args.temperature))
    if args.top_k > 0:  # TopKLogitsWarper
        k = min(args.top_k, t.numel())
        kth = torch.topk(t, k)[0][..., -1, None]
        t = t.masked_fill(t < kth, -float("inf"))
    if args.top_p < 1.0:  # TopPLogitsWarper
        sorted_logits, sorted_idx = torch.sort(t, descending=False)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cum <= (1 - args.top_p)
        remove[..., -1:] = False
        t = t.masked_fill(remove.scatter(0, sorted_idx, remove), -float("inf"))
    v = t.numpy()
    kept = np.nonzero(np.isfinite(v))[0]
    order = sorted(kept.tolist())
    vals = np.array([float(v[i]) for i in order], dtype=np.float64)
    p = np.exp(vals - vals.max())
    cum = np.cumsum(p)
    target = philox_u53(args.seed, prompt, step) * cum[-1]
    j = int(np.searchsorted(cum, target, side="right"))
    j = min(j, len(order) - 1)
    dist = min(abs(cum[j] - target), abs(target - (cum[j - 1] if j else 0.0))) / cum[-1]
    return order[j], dist, len(order)


def check_dump(args):
    model = tl.LlamaReference.from_dir(args.model)
    lora = load_adapter(model.cfg, args.adapter) if args.adapter else None
    if args.merged_bf16:
        merge_bf16(model, lora)
        lora = None
    dump, meta = read_dump(args.dump)
    fails = 0
    worst = 0.0
    min_margin = math.inf
    ties = 0
    near = 0
    kept = []
    for i in sorted(dump):
        d = dump[i]
        seq = d["prompt"].to(torch.int64).tolist()
        ours_ids = d["ids"].to(torch.int64).tolist()
        ours = d["logits"]
        with torch.no_grad():
            for step, tok in enumerate(ours_ids):
                ref = model.logits(torch.tensor([seq], dtype=torch.int64), lora=lora)[0, -1]
                err, kind = tl.compare(ours[step], ref)
                worst = max(worst, err)
                if not tl.passes(err, kind, args.tol):
                    print(f"FAIL prompt {i} step {step}: logits error {err:.3g} ({kind}) > {args.tol:g}")
                    fails += 1
                r = penalize(ref.numpy().astype(np.float32), seq, args.repetition_penalty)
                top2 = np.sort(r)[-2:]
                margin = float(top2[1] - top2[0]) / max(float(np.abs(r).max()), 1e-30)
                min_margin = min(min_margin, margin)
                if args.temperature == 0:
                    want = int(np.argmax(r))
                    if want != tok:
                        if margin <= args.tol:
                            ties += 1
                            print(f"note prompt {i} step {step}: ours {tok}, reference {want}: a tie "
                                  f"within rounding (relative top-2 margin {margin:.2e})")
                        else:
                            print(f"FAIL prompt {i} step {step}: ours {tok}, reference argmax {want} "
                                  f"(relative top-2 margin {margin:.2e})")
                            fails += 1
                else:
                    o = penalize(ours[step].numpy().astype(np.float32), seq, args.repetition_penalty)
                    want, _, nkept = sample(o, args, i, step)
                    kept.append(nkept)
                    if want != tok:
                        print(f"FAIL prompt {i} step {step}: sampled {tok}, the warpers + draw give {want}")
                        fails += 1
                    want_ref, dist_ref, _ = sample(r, args, i, step)
                    if want_ref != tok:
                        if dist_ref < 1e-4:
                            near += 1
                            print(f"note prompt {i} step {step}: the reference logits draw {want_ref} "
                                  f"(the draw is {dist_ref:.1e} from a boundary)")
                        else:
                            print(f"FAIL prompt {i} step {step}: the reference logits draw {want_ref}, ours {tok}")
                            fails += 1
                seq.append(tok)
        print(f"prompt {i}: {len(d['prompt'])} prompt tokens, {len(ours_ids)} generated")
    print(f"{args.dump}: {len(dump)} prompts; max relative logits error {worst:.3g} (tol {args.tol:g}); "
          f"min relative top-2 margin of the reference {min_margin:.3g}; ties {ties}; near-boundary draws {near}")
    if kept:
        print(f"sampling: {np.mean(kept):.1f} tokens kept on average by the warpers (min {min(kept)}, "
              f"max {max(kept)}, of {ours.shape[1]})")
    if min_margin < 1e-3:
        print(f"note: the smallest top-2 margin is small ({min_margin:.3g})")
    return fails


def check_compare(args):
    a, _ = read_dump(args.dump)
    b, _ = read_dump(args.compare)
    fails = 0
    worst = 0.0
    if sorted(a) != sorted(b):
        print(f"FAIL: prompts {sorted(a)} vs {sorted(b)}")
        return 1
    for i in sorted(a):
        if not torch.equal(a[i]["prompt"], b[i]["prompt"]):
            print(f"FAIL prompt {i}: prompt ids differ")
            fails += 1
        if not torch.equal(a[i]["ids"], b[i]["ids"]):
            print(f"FAIL prompt {i}: ids {a[i]['ids'].tolist()} vs {b[i]['ids'].tolist()}")
            fails += 1
            continue
        for step in range(a[i]["logits"].shape[0]):
            err, kind = tl.compare(a[i]["logits"][step], b[i]["logits"][step])
            worst = max(worst, err)
            if not tl.passes(err, kind, args.tol):
                print(f"FAIL prompt {i} step {step}: logits differ by {err:.3g} ({kind})")
                fails += 1
    print(f"{args.dump} vs {args.compare}: {len(a)} prompts, same ids: {fails == 0}; "
          f"max relative logits difference {worst:.3g} (tol {args.tol:g})")
    return fails


def read_results(path):
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    idx = [r["prompt_index"] for r in rows]
    if idx != list(range(len(rows))):
        raise tl.ReferenceError_(f"{path}: prompt_index {idx} is not 0..{len(rows) - 1} in order")
    return rows


def check_results(a_path, b_path, differ):
    a, b = read_results(a_path), read_results(b_path)
    if len(a) != len(b):
        print(f"FAIL: {len(a)} vs {len(b)} results")
        return 1
    same = [x["ids"] == y["ids"] and x["text"] == y["text"] and x["finish_reason"] == y["finish_reason"]
            for x, y in zip(a, b)]
    if differ:
        ok = not all(same)
        print(f"{a_path} vs {b_path}: {sum(not s for s in same)} of {len(a)} prompts differ (want >= 1)")
    else:
        ok = all(same)
        for i, s in enumerate(same):
            if not s:
                print(f"FAIL prompt {i}: {a[i]} vs {b[i]}")
        print(f"{a_path} vs {b_path}: {sum(same)} of {len(a)} prompts identical (want all)")
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model")
    ap.add_argument("--dump")
    ap.add_argument("--adapter")
    ap.add_argument("--compare")
    ap.add_argument("--merged-bf16", action="store_true",
                    help="the reference merges --adapter into its BF16 weights (rounded to BF16) first")
    ap.add_argument("--same-results", nargs=2)
    ap.add_argument("--differ-results", nargs=2)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--top-k", type=int, default=0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--repetition-penalty", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    try:
        if args.same_results:
            fails = check_results(*args.same_results, differ=False)
        elif args.differ_results:
            fails = check_results(*args.differ_results, differ=True)
        elif args.compare:
            fails = check_compare(args)
        else:
            fails = check_dump(args)
    except (tl.ReferenceError_, OSError, KeyError, ValueError) as e:
        print(f"FAIL: {e}")
        return 1
    print("OK" if fails == 0 else f"FAILED ({fails} problems)")
    return 0 if fails == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
