/* Philox4x32-10 counter-based RNG (Salmon et al., "Parallel random numbers: as easy as
 * 1, 2, 3", SC'11). Everything random in shardlora is keyed by what it is for, so the
 * numbers do not depend on the parallel layout: key = run seed, counter = (purpose,
 * coordinates...). No rand(), no time seeds. */
#ifndef SHARDLORA_RUNTIME_PHILOX_H
#define SHARDLORA_RUNTIME_PHILOX_H

#include <stdint.h>

/* What a random number is for; goes into the counter so streams never collide. */
typedef enum {
    PHILOX_LORA_INIT_A = 1,
    PHILOX_LORA_INIT_B = 2,
    PHILOX_LORA_DROPOUT = 3,
    PHILOX_MODEL_INIT = 4,
    PHILOX_DATA_ORDER = 5,
    PHILOX_DATA_SPLIT = 6,
    PHILOX_SAMPLE = 16, /* generate: token draws, keyed by (prompt index, step) */
} PhiloxPurpose;

/* One block: out = Philox4x32-10(counter, key). */
void philox4x32_10(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]);

/* Blocks computed together by philox4x32_10_lanes: 16 = one AVX-512 register of 32-bit
 * words. */
#define PHILOX_LANES 16

/* PHILOX_LANES blocks at once, word-major: word w of lane l at [w * PHILOX_LANES + l] in
 * both ctr and out; out of lane l is philox4x32_10 of lane l's counter under `key`
 * (tests/unit/test_philox.c checks), written as loops over the lanes that -O3 vectorises
 * (philox.c says how). */
void philox4x32_10_lanes(const uint32_t ctr[4 * PHILOX_LANES], const uint32_t key[2],
                         uint32_t out[4 * PHILOX_LANES]);

/* Four words of a counter built from named coordinates (all 64-bit, truncated where a
 * counter word is 32 bits): ctr = {lo(a), hi(a) ^ (purpose << 24), lo(b), lo(c)} with
 * key = {lo(seed), hi(seed)}. Callers pass coordinates that identify an element globally
 * (e.g. a = global row * cols + global col, b = layer, c = module id). */
void philox_block(uint64_t seed, PhiloxPurpose purpose, uint64_t a, uint64_t b, uint64_t c,
                  uint32_t out[4]);

/* philox_block of (seed, purpose, a0 + l, b, c) for the lanes l in [0, PHILOX_LANES):
 * out[w * PHILOX_LANES + l] is word w of lane l's block. */
void philox_block_lanes(uint64_t seed, PhiloxPurpose purpose, uint64_t a0, uint64_t b, uint64_t c,
                        uint32_t out[4 * PHILOX_LANES]);

/* Uniform float in [0, 1) from a 32-bit word (24 high bits; exactly representable). */
static inline float philox_u01(uint32_t w) {
    return (float)(w >> 8) * (1.0f / 16777216.0f);
}

/* Uniform in [lo, hi) and standard normal (Box-Muller on two words) for one element
 * identified by (purpose, a, b, c). */
float philox_uniform(uint64_t seed, PhiloxPurpose purpose, uint64_t a, uint64_t b, uint64_t c,
                     float lo, float hi);
float philox_normal(uint64_t seed, PhiloxPurpose purpose, uint64_t a, uint64_t b, uint64_t c);

#endif
