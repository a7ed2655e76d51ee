/* Philox4x32-10: Random123 known-answer vectors, the keyed draws' moments, that distinct
 * purposes / coordinates / seeds give distinct streams, that the 16-lane path equals the
 * scalar one, and that the LoRA dropout masks (model/adapter.c) follow their documented
 * keying whatever the shard. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "model/adapter.h"
#include "runtime/philox.h"
#include "tests/unit/check.h"

/* Random123 kat_vectors, "philox4x32 10" lines: counter, key, expected output. */
static void test_kat(void) {
    static const struct {
        uint32_t ctr[4], key[2], out[4];
    } kat[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
        {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
         {0xffffffff, 0xffffffff},
         {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
        {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
         {0xa4093822, 0x299f31d0},
         {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
    };
    for (size_t i = 0; i < sizeof kat / sizeof kat[0]; i++) {
        uint32_t out[4];
        philox4x32_10(kat[i].ctr, kat[i].key, out);
        CHECK_TRUE(memcmp(out, kat[i].out, sizeof out) == 0,
                   "kat %zu: got %08x %08x %08x %08x want %08x %08x %08x %08x", i, out[0], out[1],
                   out[2], out[3], kat[i].out[0], kat[i].out[1], kat[i].out[2], kat[i].out[3]);
        printf("kat %zu: %08x %08x %08x %08x\n", i, out[0], out[1], out[2], out[3]);
    }
}

/* philox_block packs (purpose, a, b, c) and the seed exactly as philox.h documents. */
static void test_block_layout(void) {
    uint64_t seed = 0x0123456789abcdefull, a = 0x00000007deadbeefull, b = 42, c = 0x100000005ull;
    uint32_t got[4], want[4];
    philox_block(seed, PHILOX_LORA_DROPOUT, a, b, c, got);
    uint32_t ctr[4] = {0xdeadbeefu, 0x7u ^ (3u << 24), 42u, 5u};
    uint32_t key[2] = {0x89abcdefu, 0x01234567u};
    philox4x32_10(ctr, key, want);
    CHECK_TRUE(memcmp(got, want, sizeof got) == 0, "philox_block counter/key layout");
}

static void test_moments(void) {
    const int n = 1000000;
    const float lo = -0.25f, hi = 0.75f;
    double s = 0, s2 = 0, ns = 0, ns2 = 0, ns4 = 0;
    float umin = 1e9f, umax = -1e9f;
    int bad = 0;
    for (int i = 0; i < n; i++) {
        float u = philox_uniform(7, PHILOX_LORA_INIT_A, (uint64_t)i, 3, 1, lo, hi);
        if (!(u >= lo && u < hi)) bad++;
        umin = u < umin ? u : umin;
        umax = u > umax ? u : umax;
        s += u;
        s2 += (double)u * u;
        float z = philox_normal(7, PHILOX_MODEL_INIT, (uint64_t)i, 3, 1);
        if (!isfinite(z)) bad++;
        ns += z;
        ns2 += (double)z * z;
        ns4 += (double)z * z * z * z;
    }
    double mean = s / n, var = s2 / n - mean * mean;
    double want_mean = 0.5 * (lo + hi), want_var = (hi - lo) * (hi - lo) / 12.0;
    /* Standard errors at n = 1e6: mean ~ 0.29/1000, var ~ 0.09/1000 (relative); 5 sigma. */
    printf("uniform[%g,%g): mean %.6f (want %.6f) var %.6f (want %.6f) min %.6f max %.6f\n", lo, hi,
           mean, want_mean, var, want_var, umin, umax);
    CHECK_TRUE(bad == 0, "%d draws out of range or not finite", bad);
    CHECK_TRUE(fabs(mean - want_mean) < 5 * sqrt(want_var / n), "uniform mean %f", mean);
    CHECK_TRUE(fabs(var - want_var) < 5 * want_var * sqrt(0.8 / n), "uniform variance %f", var);
    double nmean = ns / n, nvar = ns2 / n - nmean * nmean, kurt = ns4 / n;
    printf("normal: mean %.6f var %.6f E[z^4] %.4f (want 0, 1, 3)\n", nmean, nvar, kurt);
    CHECK_TRUE(fabs(nmean) < 5.0 / sqrt(n), "normal mean %f", nmean);
    CHECK_TRUE(fabs(nvar - 1.0) < 5.0 * sqrt(2.0 / n), "normal variance %f", nvar);
    CHECK_TRUE(fabs(kurt - 3.0) < 5.0 * sqrt(96.0 / n), "normal fourth moment %f", kurt);

    /* Bounds: the largest u01 must still land below hi. */
    float top = philox_u01(0xffffffffu);
    CHECK_TRUE(top < 1.0f && philox_u01(0) == 0.0f, "u01 range [%g]", top);
}

/* Same inputs -> same value; any coordinate, the purpose or the seed changed -> a
 * different block. */
static void test_distinct_streams(void) {
    uint32_t base[4], o[4];
    philox_block(1234, PHILOX_LORA_INIT_A, 10, 2, 3, base);
    philox_block(1234, PHILOX_LORA_INIT_A, 10, 2, 3, o);
    CHECK_TRUE(memcmp(base, o, sizeof o) == 0, "not deterministic");
    struct {
        const char *what;
        uint64_t seed;
        PhiloxPurpose p;
        uint64_t a, b, c;
    } v[] = {
        {"purpose", 1234, PHILOX_LORA_INIT_B, 10, 2, 3},
        {"purpose dropout", 1234, PHILOX_LORA_DROPOUT, 10, 2, 3},
        {"a", 1234, PHILOX_LORA_INIT_A, 11, 2, 3},
        {"a high word", 1234, PHILOX_LORA_INIT_A, 10 + (1ull << 32), 2, 3},
        {"b", 1234, PHILOX_LORA_INIT_A, 10, 3, 3},
        {"c", 1234, PHILOX_LORA_INIT_A, 10, 2, 4},
        {"seed", 1235, PHILOX_LORA_INIT_A, 10, 2, 3},
        {"seed high word", 1234 + (1ull << 32), PHILOX_LORA_INIT_A, 10, 2, 3},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        philox_block(v[i].seed, v[i].p, v[i].a, v[i].b, v[i].c, o);
        int same = 0;
        for (int k = 0; k < 4; k++)
            same += o[k] == base[k];
        CHECK_TRUE(same == 0, "changing %s left %d of 4 words equal", v[i].what, same);
    }

    /* Two purposes over a range of coordinates: no shared first words (a collision of
     * 32-bit words among 2 x 4096 draws has probability ~ 0.2%; the streams are distinct
     * blocks, so equality here would mean a packing bug, not chance, unless very unlucky). */
    enum { N = 4096 };
    static uint32_t wa[N], wb[N];
    for (int i = 0; i < N; i++) {
        philox_block(99, PHILOX_LORA_INIT_A, (uint64_t)i, 0, 0, o);
        wa[i] = o[0];
        philox_block(99, PHILOX_LORA_DROPOUT, (uint64_t)i, 0, 0, o);
        wb[i] = o[0];
    }
    int equal_pos = 0;
    for (int i = 0; i < N; i++)
        equal_pos += wa[i] == wb[i];
    CHECK_TRUE(equal_pos == 0, "%d positions equal across purposes", equal_pos);

    /* Element values independent of how a tensor is split: drawing row-by-row with global
     * coordinates gives the same value as one flat loop (what tp-independent init needs). */
    int mism = 0;
    const uint64_t rows = 8, cols = 24;
    for (uint64_t shard = 0; shard < 4; shard++)
        for (uint64_t r = 0; r < rows; r++)
            for (uint64_t c = shard * cols / 4; c < (shard + 1) * cols / 4; c++) {
                float x = philox_uniform(5, PHILOX_LORA_INIT_A, r * cols + c, 1, 2, -1, 1);
                float y = philox_uniform(5, PHILOX_LORA_INIT_A, r * cols + c, 1, 2, -1, 1);
                mism += x != y;
            }
    CHECK_TRUE(mism == 0, "sharded draws differ");
}

/* philox4x32_10_lanes and philox_block_lanes equal the scalar reference lane by lane
 * (random counters and keys, the KAT counters, and a run of a crossing 2^32 inside the
 * lanes, where the counter's word 1 changes). */
static void test_lanes(void) {
    uint32_t ctr[4 * PHILOX_LANES], out[4 * PHILOX_LANES], one[4], c[4];
    uint32_t x = 0x12345678u; /* xorshift32 for test inputs */
    int bad = 0;
    for (int rep = 0; rep < 200; rep++) {
        uint32_t key[2];
        for (int k = 0; k < 4 * PHILOX_LANES; k++) {
            x ^= x << 13, x ^= x >> 17, x ^= x << 5;
            ctr[k] = rep == 0 ? 0u : rep == 1 ? 0xffffffffu : x;
        }
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        key[0] = rep == 0 ? 0u : rep == 1 ? 0xffffffffu : x;
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        key[1] = rep == 0 ? 0u : rep == 1 ? 0xffffffffu : x;
        philox4x32_10_lanes(ctr, key, out);
        for (int l = 0; l < PHILOX_LANES; l++) {
            for (int w = 0; w < 4; w++)
                c[w] = ctr[w * PHILOX_LANES + l];
            philox4x32_10(c, key, one);
            for (int w = 0; w < 4; w++)
                bad += out[w * PHILOX_LANES + l] != one[w];
        }
    }
    CHECK_TRUE(bad == 0, "philox4x32_10_lanes: %d words differ from philox4x32_10", bad);
    const uint64_t a0s[] = {0, 77, (1ull << 32) - 5, (7ull << 32) + 3};
    for (size_t i = 0; i < sizeof a0s / sizeof a0s[0]; i++) {
        philox_block_lanes(0x0123456789abcdefull, PHILOX_LORA_DROPOUT, a0s[i], 42, 0x305, out);
        for (int l = 0; l < PHILOX_LANES; l++) {
            philox_block(0x0123456789abcdefull, PHILOX_LORA_DROPOUT, a0s[i] + (uint64_t)l, 42,
                         0x305, one);
            for (int w = 0; w < 4; w++)
                bad += out[w * PHILOX_LANES + l] != one[w];
        }
    }
    CHECK_TRUE(bad == 0, "philox_block_lanes: %d words differ from philox_block", bad);
    printf("philox lanes: 200 x %d counters and 4 runs of philox_block equal the scalar path\n",
           PHILOX_LANES);
}

/* The dropout mask of one slot (model/adapter.c): adapter_dropout_keep follows adapter.h's
 * keying (word j % 4 of block a = t * ceil(in / 4) + j / 4); adapter_dropout_forward /
 * _backward draw the same masks as it, for the whole width and for shards cut anywhere
 * (inside a group of 4, widths not a multiple of 4 or of the 64-column chunk); the keep rate
 * is 1 - p. */
static void test_dropout(void) {
    enum { N = 97, IN = 203 }; /* N x IN above ADAPTER_DROPOUT_OMP_MIN: rows on 2 threads */
    static float X[N * IN], Xd[N * IN], G[N * IN], dX[N * IN], want_d[N * IN], want_x[N * IN];
    AdapterCfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.dropout = 0.3f;
    GemmCtx g;
    memset(&g, 0, sizeof g);
    g.nthreads = 2;
    AdapterEnv env = {&g, 0x5eed0000000bull, 7, 1000, 1};
    AdapterSlot s;
    memset(&s, 0, sizeof s);
    s.cfg = &cfg;
    s.layer = 5;
    s.module = MOD_DOWN;
    s.shard = (ShardDesc){SHARD_NONE, 64, IN, 0, 64, 0, IN};
    const float kept = 1.0f / (1.0f - cfg.dropout);

    /* the documented keying, element by element */
    int bad = 0;
    int64_t dropped = 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t j = 0; j < IN; j++) {
            uint32_t w[4];
            philox_block(env.seed, PHILOX_LORA_DROPOUT,
                         (uint64_t)(env.token0 + n) * ((IN + 3) / 4) + (uint64_t)j / 4,
                         (uint64_t)env.step, (5u << 8) | (MOD_DOWN * 4u + 2u), w);
            float k = philox_u01(w[j % 4]) < cfg.dropout ? 0.0f : kept;
            bad += adapter_dropout_keep(&s, &env, n, j) != k;
            dropped += k == 0.0f;
            X[n * IN + j] = 0.25f + (float)((n * 31 + j * 7) % 97) / 16.0f - 3.0f;
            G[n * IN + j] = (float)((n * 13 + j * 5) % 89) / 8.0f - 5.0f;
            want_x[n * IN + j] = X[n * IN + j] * k;
            want_d[n * IN + j] = 1.0f + G[n * IN + j] * k;
        }
    CHECK_TRUE(bad == 0, "adapter_dropout_keep: %d elements differ from the documented keying",
               bad);
    double rate = (double)dropped / (N * IN), sd = sqrt(0.3 * 0.7 / (N * IN));
    printf("dropout p 0.3: dropped %.4f of %d elements\n", rate, N * IN);
    CHECK_TRUE(fabs(rate - 0.3) < 5 * sd, "drop rate %.4f", rate);

    /* whole rows and shards [i0, i0 + ni): the same values as the scalar reference */
    const int64_t cuts[][2] = {{0, IN},   {0, 101}, {101, 102}, {1, 66},
                               {66, 137}, {200, 3}, {4, 64}};
    for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) {
        const int64_t i0 = cuts[c][0], ni = cuts[c][1];
        s.shard.i0 = i0;
        s.shard.ni = ni;
        for (int64_t n = 0; n < N; n++)
            for (int64_t i = 0; i < ni; i++) {
                X[n * ni + i] = 0.25f + (float)((n * 31 + (i0 + i) * 7) % 97) / 16.0f - 3.0f;
                G[n * ni + i] = (float)((n * 13 + (i0 + i) * 5) % 89) / 8.0f - 5.0f;
                dX[n * ni + i] = 1.0f;
            }
        adapter_dropout_forward(&s, &env, Xd, X, N);
        adapter_dropout_backward(&s, &env, dX, G, X, Xd, N);
        int badx = 0, badd = 0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t i = 0; i < ni; i++) {
                badx += memcmp(&Xd[n * ni + i], &want_x[n * IN + i0 + i], sizeof(float)) != 0;
                badd += memcmp(&dX[n * ni + i], &want_d[n * IN + i0 + i], sizeof(float)) != 0;
            }
        CHECK_TRUE(badx == 0 && badd == 0,
                   "shard [%lld, +%lld): forward %d, backward %d elements differ from the "
                   "scalar keep",
                   (long long)i0, (long long)ni, badx, badd);
    }
    printf("dropout: %zu shards' forward / backward masks equal adapter_dropout_keep\n",
           sizeof cuts / sizeof cuts[0]);
}

int main(void) {
    test_kat();
    test_block_layout();
    test_moments();
    test_distinct_streams();
    test_lanes();
    test_dropout();
    return check_finish();
}
