/* torch's CPU random generator (torch.Generator(device="cpu"): mt19937, Matsumoto and
 * Nishimura 1998, seeded as at::mt19937) and Tensor.uniform_ for float32 on it, bit for bit,
 * so shardlora regenerates PEFT's VeRA projections from their projection_prng_key exactly
 * as PEFT does (peft/tuners/vera/model.py _kaiming_init). Everything else random in
 * shardlora is Philox (philox.h); this stream is sequential, so it is only for tensors PEFT
 * defines through it. */
#ifndef SHARDLORA_RUNTIME_TORCHRNG_H
#define SHARDLORA_RUNTIME_TORCHRNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t state[624];
    int next; /* index of the next word in state; 624: regenerate first */
} TorchRng;

/* torch.Generator().manual_seed(seed): the low 32 bits seed the state (at::mt19937). */
void torchrng_seed(TorchRng *g, uint64_t seed);
/* The next 32-bit word (generator.random()). */
uint32_t torchrng_u32(TorchRng *g);
/* dst[0..n) as torch.empty(n, dtype=float32).uniform_(lo, hi, generator=g) fills it
 * (at::uniform_real_distribution<float>: 24 random bits, computed in double, rounded). */
void torchrng_uniform_f32(TorchRng *g, float *dst, size_t n, double lo, double hi);

#endif
