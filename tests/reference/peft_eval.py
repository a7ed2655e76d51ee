"""`shardlora eval` against the PyTorch reference, at several layouts (issue 8).

For small made models (GQA Llama, Qwen2 with q/k/v biases, a tied BF16 Llama), JSONL data in
two formats (text, packed; prompt/completion, prompt tokens masked) and no adapter or a
PEFT adapter with rank_pattern / alpha_pattern / rsLoRA (peft_check.py make-adapter):
- the mean loss of `shardlora eval` equals the reference model's (torch_llama.py, float64,
  the adapter merged by PEFT's formula) on the same rows (the rows come from --dump-logits of
  one micro-batch holding them all), and the token counts agree;
- eval at tp=1 (micro-batch 2), tp=2 (2 ranks) and dp=2 (2 ranks, micro-batch 3, so the
  last round is padded) give the same loss;
- `train --eval-data X` reports at its last step the loss `eval --adapter OUT/adapter --data X`
  computes: the same rows, masking and packing as training's own evaluation.

usage: /usr/bin/python3 peft_eval.py SHARDLORA_BINARY WORK_DIR
Exit status 0 when every check passes, 1 otherwise; prints the largest errors.
"""

import json
import os
import random
import shutil
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peft_check as pc  # noqa: E402
import torch_llama as tl  # noqa: E402

REF_TOL = 1e-5      # eval loss vs the float64 reference (relative)
LAYOUT_TOL = 1e-6   # eval loss at tp=1 / tp=2 / dp=2 (relative)
TRAIN_TOL = 1e-6    # train's last eval_loss vs eval of its adapter (relative)
T = 48
TIMEOUT = 120
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1")
FAILS = []


def run(cmd, name):
    r = subprocess.run(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=TIMEOUT,
                       universal_newlines=True)
    if r.returncode != 0:
        print(f"FAIL {name}: exit {r.returncode}\n{r.stdout[-2000:]}")
        FAILS.append(name)
        return False
    return True


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-30)


def write_data(w):
    rng = random.Random(11)
    words = ("the of and to in is was that for on with as by at from his her it an were are which this "
             "be or had not but what all when we there can one their has more will if no out so said").split()
    text = os.path.join(w, "text.jsonl")
    with open(text, "w") as f:
        for _ in range(14):
            n = rng.randint(1, 16)  # short ones share packed rows, long ones are truncated
            f.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(n))}) + "\n")
    pcf = os.path.join(w, "pc.jsonl")
    with open(pcf, "w") as f:
        for _ in range(9):
            p = " ".join(rng.choice(words) for _ in range(rng.randint(2, 12)))
            c = " ".join(rng.choice(words) for _ in range(rng.randint(2, 10)))
            f.write(json.dumps({"prompt": p + "?", "completion": " " + c + "."}) + "\n")
    return text, pcf


def main():
    sl, w = sys.argv[1], os.path.join(sys.argv[2], "peft_eval")
    shutil.rmtree(w, ignore_errors=True)
    os.makedirs(w)
    text, pcf = write_data(w)
    models = {"gqa": ["--kv-heads", "2"], "qwen2": ["--arch", "qwen2", "--kv-heads", "2"],
              "tied-bf16": ["--tie", "--dtype", "BF16"]}
    worst_ref = worst_layout = 0.0
    for mname, mopts in models.items():
        mdir = os.path.join(w, mname)
        if not run([sl, "make-model", "--out", mdir, "--layers", "2", "--hidden", "64", "--ffn", "128", "--heads", "4",
                    "--vocab", "259", "--seed", "4"] + mopts, f"make-model {mname}"):
            continue
        adir = os.path.join(w, mname + "-adapter")
        pc.make_adapter(mdir, adir, "patterns", 9)
        for dname, data, adapter in (("text", text, None), ("text", text, adir), ("pc", pcf, adir)):
            case = f"{mname}/{dname}/{'adapter' if adapter else 'base'}"
            base = [sl, "eval", "--model", mdir, "--data", data, "--seq-len", str(T), "--threads", "1",
                    "--log-level", "warn", "--cache-dir", os.path.join(w, "cache", mname + dname)]
            if adapter:
                base += ["--adapter", adapter]
            tag = os.path.join(w, case.replace("/", "-"))
            runs = {"one batch": ([], ["--micro-batch", "32", "--dump-logits", tag + ".st"]),
                    "tp=1": ([], ["--micro-batch", "2"]),
                    "tp=2": (["mpiexec", "-n", "2"], ["--tp", "2", "--micro-batch", "2"]),
                    "dp=2": (["mpiexec", "-n", "2"], ["--tp", "1", "--micro-batch", "3"])}
            res = {}
            for rname, (pre, opts) in runs.items():
                out = f"{tag}-{rname.replace(' ', '').replace('=', '')}.json"
                if run(pre + base + opts + ["--out", out], f"{case} {rname}"):
                    with open(out) as f:
                        res[rname] = json.load(f)
            if len(res) != len(runs):
                continue
            # the reference on the dumped rows
            t, _ = pc.read_st(tag + ".st")
            model, _ = pc.adapted_model(mdir, adapter)
            with torch.no_grad():
                ref, n = tl.causal_lm_loss(model.logits(t["input_ids"], t["position_ids"]), t["labels"])
            ref = float(ref)
            e_ref = rel(res["one batch"]["loss"], ref)
            e_lay = max(rel(res[k]["loss"], res["tp=1"]["loss"]) for k in runs)
            toks = {k: v["tokens"] for k, v in res.items()}
            ok = e_ref <= REF_TOL and e_lay <= LAYOUT_TOL and len(set(toks.values())) == 1 and n == toks["tp=1"]
            worst_ref, worst_layout = max(worst_ref, e_ref), max(worst_layout, e_lay)
            print(f"{case}: eval loss {res['tp=1']['loss']:.7f} over {n} tokens ({res['tp=1']['rows']} rows); "
                  f"reference {ref:.7f} (rel err {e_ref:.2e}); tp=1/tp=2/dp=2 spread {e_lay:.2e}: "
                  f"{'ok' if ok else 'FAIL'}")
            if not ok:
                FAILS.append(case)
    # training's own evaluation = eval of its adapter on the same file
    mdir = os.path.join(w, "gqa")
    out = os.path.join(w, "train")
    if run([sl, "train", "--model", mdir, "--data", text, "--eval-data", pcf, "--out", out, "--seq-len", str(T),
            "--micro-batch", "2", "--steps", "4", "--lr", "1e-2", "--threads", "1", "--log-level", "warn"],
           "train --eval-data"):
        with open(os.path.join(out, "metrics.jsonl")) as f:
            evals = [json.loads(l) for l in f if "eval_loss" in l]
        ej = os.path.join(w, "train-eval.json")
        if run([sl, "eval", "--model", mdir, "--adapter", os.path.join(out, "adapter"), "--data", pcf, "--seq-len",
                str(T), "--micro-batch", "2", "--threads", "1", "--log-level", "warn", "--out", ej,
                "--cache-dir", os.path.join(w, "cache", "train")], "eval of the trained adapter"):
            with open(ej) as f:
                ev = json.load(f)
            e = rel(ev["loss"], evals[-1]["eval_loss"])
            ok = e <= TRAIN_TOL and ev["tokens"] == evals[-1]["eval_tokens"]
            print(f"train's eval at step {evals[-1]['step']}: {evals[-1]['eval_loss']:.7f} over "
                  f"{evals[-1]['eval_tokens']} tokens; shardlora eval of OUT/adapter: {ev['loss']:.7f} over "
                  f"{ev['tokens']} (rel {e:.2e}): {'ok' if ok else 'FAIL'}")
            if not ok:
                FAILS.append("train eval vs eval")
    print(f"\nlargest errors: vs reference {worst_ref:.2e} (tol {REF_TOL:g}), across layouts {worst_layout:.2e} "
          f"(tol {LAYOUT_TOL:g})")
    if FAILS:
        print(f"peft_eval: {len(FAILS)} FAILED: {FAILS}")
        return 1
    print("peft_eval: all checks passed")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main())
