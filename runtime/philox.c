/* Philox4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as easy as 1, 2, 3",
 * SC'11; the Random123 reference) and the keyed draws built on it (see philox.h). */
#include "philox.h"

#include <math.h>

/* Round multipliers and Weyl-sequence key increments from the paper (Table 2 / §4.1). */
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u /* golden ratio */
#define PHILOX_W1 0xBB67AE85u /* sqrt(3) - 1 */

/* One round: two 32x32->64 multiplies; the high halves are mixed with the other words
 * and the key, the low halves move into the odd slots (the paper's S-box + permutation). */
static void philox_round(uint32_t c[4], const uint32_t k[2]) {
    uint64_t p0 = (uint64_t)PHILOX_M0 * c[0];
    uint64_t p1 = (uint64_t)PHILOX_M1 * c[2];
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    uint32_t n0 = hi1 ^ c[1] ^ k[0];
    uint32_t n2 = hi0 ^ c[3] ^ k[1];
    c[0] = n0;
    c[1] = lo1;
    c[2] = n2;
    c[3] = lo0;
}

void philox4x32_10(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c[4] = {counter[0], counter[1], counter[2], counter[3]};
    uint32_t k[2] = {key[0], key[1]};
    for (int r = 0; r < 10; r++) {
        if (r > 0) { /* key schedule: bump before every round but the first */
            k[0] += PHILOX_W0;
            k[1] += PHILOX_W1;
        }
        philox_round(c, k);
    }
    for (int i = 0; i < 4; i++)
        out[i] = c[i];
}

/* philox_round on every lane, one lane per loop iteration. With -march=native on AVX-512,
 * GCC 12 makes each round 4 vpmullq (zero-extended 32x32->64 products), shifts, permutes
 * and vpternlogd over the 16 lanes; without `omp simd` it fully unrolls the lanes and
 * leaves them scalar. Measured here: 2.8 ns per block against 12.8 for philox4x32_10;
 * AVX-512 intrinsics with vpmuludq on even / odd lanes would give 1.6 ns, which would save
 * under 1% of a training step with dropout (benchmarks/dropout.sh), so the plain C stays. */
void philox4x32_10_lanes(const uint32_t ctr[4 * PHILOX_LANES], const uint32_t key[2],
                         uint32_t out[4 * PHILOX_LANES]) {
    uint32_t c0[PHILOX_LANES], c1[PHILOX_LANES], c2[PHILOX_LANES], c3[PHILOX_LANES];
    for (int l = 0; l < PHILOX_LANES; l++) {
        c0[l] = ctr[0 * PHILOX_LANES + l];
        c1[l] = ctr[1 * PHILOX_LANES + l];
        c2[l] = ctr[2 * PHILOX_LANES + l];
        c3[l] = ctr[3 * PHILOX_LANES + l];
    }
    uint32_t k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; r++) {
        if (r > 0) {
            k0 += PHILOX_W0;
            k1 += PHILOX_W1;
        }
#pragma omp simd
        for (int l = 0; l < PHILOX_LANES; l++) {
            uint64_t p0 = (uint64_t)PHILOX_M0 * c0[l];
            uint64_t p1 = (uint64_t)PHILOX_M1 * c2[l];
            uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1[l] ^ k0;
            uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3[l] ^ k1;
            c0[l] = n0;
            c1[l] = (uint32_t)p1;
            c2[l] = n2;
            c3[l] = (uint32_t)p0;
        }
    }
    for (int l = 0; l < PHILOX_LANES; l++) {
        out[0 * PHILOX_LANES + l] = c0[l];
        out[1 * PHILOX_LANES + l] = c1[l];
        out[2 * PHILOX_LANES + l] = c2[l];
        out[3 * PHILOX_LANES + l] = c3[l];
    }
}

void philox_block(uint64_t seed, PhiloxPurpose purpose, uint64_t a, uint64_t b, uint64_t c,
                  uint32_t out[4]) {
    /* Layout documented in philox.h: the purpose sits in the top byte of word 1, so
     * streams of different purposes differ as long as a < 2^56. */
    uint32_t ctr[4] = {
        (uint32_t)a,
        (uint32_t)(a >> 32) ^ ((uint32_t)purpose << 24),
        (uint32_t)b,
        (uint32_t)c,
    };
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    philox4x32_10(ctr, key, out);
}

void philox_block_lanes(uint64_t seed, PhiloxPurpose purpose, uint64_t a0, uint64_t b, uint64_t c,
                        uint32_t out[4 * PHILOX_LANES]) {
    uint32_t ctr[4 * PHILOX_LANES];
    for (int l = 0; l < PHILOX_LANES; l++) { /* philox_block's layout, a = a0 + l */
        const uint64_t a = a0 + (uint64_t)l;
        ctr[0 * PHILOX_LANES + l] = (uint32_t)a;
        ctr[1 * PHILOX_LANES + l] = (uint32_t)(a >> 32) ^ ((uint32_t)purpose << 24);
        ctr[2 * PHILOX_LANES + l] = (uint32_t)b;
        ctr[3 * PHILOX_LANES + l] = (uint32_t)c;
    }
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    philox4x32_10_lanes(ctr, key, out);
}

float philox_uniform(uint64_t seed, PhiloxPurpose purpose, uint64_t a, uint64_t b, uint64_t c,
                     float lo, float hi) {
    uint32_t out[4];
    philox_block(seed, purpose, a, b, c, out);
    float v = lo + (hi - lo) * philox_u01(out[0]);
    /* u < 1, but lo + (hi - lo) * u can round up to hi; keep the interval half-open. */
    if (v >= hi && hi > lo) v = nextafterf(hi, lo);
    return v;
}

float philox_normal(uint64_t seed, PhiloxPurpose purpose, uint64_t a, uint64_t b, uint64_t c) {
    uint32_t out[4];
    philox_block(seed, purpose, a, b, c, out);
    /* Box-Muller. u1 in (0, 1] (the +1 keeps log away from 0), angle from out[1]; double
     * math so the float result does not depend on float rounding of the intermediate. */
    const double two_pow_m32 = 1.0 / 4294967296.0;
    double u1 = ((double)out[0] + 1.0) * two_pow_m32;
    double u2 = (double)out[1] * two_pow_m32;
    double r = sqrt(-2.0 * log(u1));
    return (float)(r * cos(6.283185307179586476925286766559 * u2));
}
