/* torch's CPU generator: mt19937 (Matsumoto and Nishimura 1998, the reference constants) and
 * the float32 uniform transform of ATen's uniform_real_distribution. Checked against
 * torch itself by tests/unit/test_torchrng (values written by /usr/bin/python3 torch). */
#include "torchrng.h"

enum { TRNG_N = 624, TRNG_M = 397 };

void torchrng_seed(TorchRng *g, uint64_t seed) {
    g->state[0] = (uint32_t)seed; /* at::mt19937 keeps seed & 0xffffffff */
    for (uint32_t j = 1; j < TRNG_N; j++)
        g->state[j] = 1812433253u * (g->state[j - 1] ^ (g->state[j - 1] >> 30)) + j;
    g->next = TRNG_N;
}

static void torchrng_twist(TorchRng *g) {
    uint32_t *s = g->state;
    for (int k = 0; k < TRNG_N; k++) {
        const uint32_t y = (s[k] & 0x80000000u) | (s[(k + 1) % TRNG_N] & 0x7fffffffu);
        s[k] = s[(k + TRNG_M) % TRNG_N] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
    }
    g->next = 0;
}

uint32_t torchrng_u32(TorchRng *g) {
    if (g->next >= TRNG_N) torchrng_twist(g);
    uint32_t y = g->state[g->next++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

void torchrng_uniform_f32(TorchRng *g, float *dst, size_t n, double lo, double hi) {
    /* at::uniform_real_distribution<float>(from, to): from / to rounded to float; x = (word &
     * (2^24 - 1)) / 2^24; from + x * (to - from) in the CPU accumulation type (double) */
    const double from = (float)lo, to = (float)hi;
    for (size_t i = 0; i < n; i++) {
        const double x = (double)(torchrng_u32(g) & 0xffffffu) * (1.0 / 16777216.0);
        dst[i] = (float)(x * (to - from) + from);
    }
}
