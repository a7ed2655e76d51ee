"""PyTorch baseline for the training-step benchmark: LoRA fine-tuning steps (forward +
backward + AdamW) of a Llama-family model in fp32 on CPU, using the reference decoder of
tests/reference/torch_llama.py (HF Llama semantics, PEFT LoRA). The base is frozen
(requires_grad False, no gradient buffers); only the adapters train.

Fair comparison with shardlora (DESIGN.md §9): same model, LoRA config and thread count.
Set OPENBLAS_CORETYPE, OPENBLAS_NUM_THREADS and OMP_NUM_THREADS before python starts
(OpenBLAS and OpenMP read them once at load time); this script prints them and warns when
the thread counts differ from --threads.

Usage:
  OPENBLAS_NUM_THREADS=8 OMP_NUM_THREADS=8 OPENBLAS_CORETYPE=SkylakeX \\
    /usr/bin/python3 benchmarks/torch_baseline.py --threads 8 [--steps 5] [--model DIR]
The last line is machine-readable: torch_baseline tokens_per_s=X step_s=Y threads=Z
(step_s is the mean over the timed steps, after --warmup untimed ones).
"""

import argparse
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
import torch_llama as tl  # noqa: E402


def default_threads():
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else len(os.sched_getaffinity(0))


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--model", help="HF model directory (default: a random model of the size below)")
    ap.add_argument("--arch", default="LlamaForCausalLM", choices=tl.ARCHITECTURES)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=16)
    ap.add_argument("--ffn", type=int, default=2816)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--seq", type=int, default=512, help="tokens per row (T)")
    ap.add_argument("--micro-batch", type=int, default=1, help="rows per step (B)")
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--lora-alpha", type=float, default=32.0)
    ap.add_argument("--targets", default=",".join(tl.LORA_MODULES))
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--steps", type=int, default=5, help="timed steps")
    ap.add_argument("--threads", type=int, default=default_threads(),
                    help="torch.set_num_threads (default: OMP_NUM_THREADS, else the CPUs available)")
    ap.add_argument("--recompute", action="store_true", help="per-layer activation recompute")
    ap.add_argument("--seed", type=int, default=1234)
    a = ap.parse_args()
    if a.steps < 1 or a.warmup < 0 or a.threads < 1:
        ap.error("need --steps >= 1, --warmup >= 0, --threads >= 1")
    return a


def check_env(threads):
    print("environment (must be set before python starts):")
    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        print(f"  {k}={os.environ.get(k, '<unset>')}")
    for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        v = os.environ.get(k)
        if v != str(threads):
            print(f"WARNING: {k}={v if v is not None else '<unset>'} differs from --threads {threads}; "
                  "the comparison with shardlora is not fair", file=sys.stderr)
    if "OPENBLAS_CORETYPE" not in os.environ:
        print("WARNING: OPENBLAS_CORETYPE is unset; OpenBLAS picks its kernels by CPU detection, "
              "which may differ from shardlora's run", file=sys.stderr)


def blas_libraries():
    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "blas" in line.lower() or "mkl" in line.lower()}
        return sorted(p for p in libs if p.startswith("/")) or ["<none found>"]
    except OSError:
        return ["<unknown>"]


def build_model(a):
    if a.model:
        t0 = time.perf_counter()
        config, weights = tl.load_model_dir(a.model)
        model = tl.LlamaReference(config, weights)
        del weights
        print(f"loaded {a.model} in {time.perf_counter() - t0:.1f}s")
        return model
    config = tl.random_config(a.arch, hidden_size=a.hidden, num_hidden_layers=a.layers,
                              num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
                              intermediate_size=a.ffn, vocab_size=a.vocab,
                              max_position_embeddings=max(2048, a.seq), rms_norm_eps=1e-5)
    cfg = tl.ModelConfig(config)
    g = torch.Generator().manual_seed(a.seed)
    weights = {}
    with torch.no_grad():  # one tensor at a time, filled in place: no fp64 / temporary copies
        for name, shape in cfg.expected_weights().items():
            t = torch.empty(shape, dtype=torch.float32)
            if name.endswith("norm.weight"):
                t.fill_(1.0)
            else:
                t.normal_(0.0, 0.02, generator=g)
            weights[name] = t
    return tl.LlamaReference(cfg, weights)


def flops_per_token(cfg, lora, T):
    """DESIGN.md §9: 4·N (forward + input-gradient backward of the frozen matmuls, lm_head
    included) + 6·L·(H·D)·(T+1) (causal attention: PaLM's 12·L·(H·D)·T over the (T+1)/2 keys a
    query sees, as shardlora's llama_flops_per_token) + adapters (fwd 2r(in+out), bwd 4r(in+out))."""
    n = sum(o * i for o, i in (cfg.linear_shape(m) for m in tl.LORA_MODULES)) * cfg.num_layers
    n += cfg.vocab_size * cfg.hidden_size
    attn = 6 * cfg.num_layers * cfg.num_heads * cfg.head_dim * (T + 1)
    ad = sum(6 * lora.r * sum(cfg.linear_shape(m)) for m in lora.targets) * cfg.num_layers
    return 4 * n + attn + ad, n


def main():
    a = parse_args()
    check_env(a.threads)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    model = build_model(a)
    cfg = model.cfg
    lora = tl.Lora(cfg, a.lora_r, a.lora_alpha, a.targets)
    lora.init_peft(torch.Generator().manual_seed(a.seed + 1))
    opt = tl.make_optimizer(lora.parameters(), "adamw", a.lr, weight_decay=0.0)
    B, T = a.micro_batch, a.seq
    g = torch.Generator().manual_seed(a.seed + 2)
    ids = torch.randint(0, cfg.vocab_size, (B, T), generator=g)
    labels = ids.clone()
    pos = tl.default_position_ids(ids)

    fpt, n_big = flops_per_token(cfg, lora, T)
    n_adapter = sum(p.numel() for p in lora.parameters())
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, BLAS {', '.join(blas_libraries())}")
    print(f"model {cfg.arch}: L={cfg.num_layers} C={cfg.hidden_size} H={cfg.num_heads} KV={cfg.num_kv_heads} "
          f"D={cfg.head_dim} F={cfg.intermediate_size} V={cfg.vocab_size}, fp32, "
          f"{n_big / 1e6:.1f}M params in the big matmuls")
    print(f"LoRA r={lora.r} alpha={lora.alpha:g} on {','.join(lora.targets)}: {n_adapter / 1e6:.2f}M adapter params; "
          f"B={B} T={T}, AdamW lr={a.lr:g}, recompute={'on' if a.recompute else 'off'}")

    times = []
    for s in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss, _ = model.loss(ids, labels, pos, lora, training=True, recompute=a.recompute)
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        timed = s >= a.warmup
        if timed:
            times.append(dt)
        print(f"step {s + 1:3d}{'' if timed else ' (warmup)'}  loss {float(loss):.5f}  {dt:.3f} s  "
              f"{B * T / dt:.1f} tokens/s")

    step_s = sum(times) / len(times)
    tps = B * T / step_s
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print(f"mean step {step_s:.3f} s (min {min(times):.3f}), {tps:.1f} tokens/s, peak RSS {rss_gb:.2f} GiB")
    print(f"model FLOPs/token = 4*N + 12*L*C*T + adapter = {fpt / 1e9:.3f} GFLOP -> "
          f"{fpt * tps / 1e9:.1f} GFLOP/s achieved")
    print(f"torch_baseline tokens_per_s={tps:.2f} step_s={step_s:.4f} threads={a.threads}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
