/* BF16 compute of the frozen base's products (gemm_xwt / gemm_xw with GEMM_COMPUTE_BF16) and
 * its oneDNN backend (runtime/bmm.h), against double-precision references on the operands
 * rounded to BF16, for F32, BF16, INT8 and NF4 weights; the emulated path always, oneDNN's BF16
 * matmul when this CPU has it (else a printed SKIP); oneDNN's descriptors, beta and primitive
 * cache through its F32 matmul on any CPU; gemm_set_compute's choices.
 *
 * The bound (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., eq. 3.5 and
 * Lemma 3.1): a sum of n terms in F32, in any order, is within gamma_n * sum |terms| of the
 * exact sum, gamma_n = n u / (1 - n u), u = 2^-24. A product of two BF16 values (8-bit
 * significands) is exact in F32, so X W^T over K products plus beta * C is n = K + 1 terms:
 *   |ours - exact| <= gamma_{K+1} * (sum_k |x_k w_k| + |beta c|);
 * the double reference is exact to 2^-53 and then rounded to F32, so an element passes when
 *   |ours - ref| <= gamma_{K+1} * (sum_k |x_k w_k| + |beta c|) + u |ref|.
 * oneDNN's BF16 dot products (vdpbf16ps, AMX) flush denormals; the data here has none. For F32
 * operands (bmm's F32 matmul) each product is rounded too: n = K + 2. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/bmm.h"
#include "runtime/gemm.h"
#include "runtime/mem.h"
#include "runtime/quant.h"
#include "tests/unit/check.h"

#define U_F32 (1.0 / 16777216.0)

static double gamma_n(int64_t n) {
    return (double)n * U_F32 / (1.0 - (double)n * U_F32);
}

static float bf(float x) {
    return gemm_bf16_to_f32(gemm_f32_to_bf16(x));
}

/* ---- weights -------------------------------------------------------------------------- */

typedef struct {
    GemmWeight W;
    float *src;     /* [O, ld] F32 source values */
    uint16_t *b16;  /* [O, ld] BF16 storage */
    uint8_t *codes; /* INT8 / NF4 codes */
    float *scales;  /* INT8 / NF4 scales */
    float *wf;      /* [O, I] the weight's F32 values (dequantised) */
    float *wr;      /* [O, I] wf rounded to BF16: what BF16 compute multiplies by */
} TestWeight;

static void weight_make(TestWeight *t, GemmDtype dt, int64_t O, int64_t I, int64_t ld) {
    memset(t, 0, sizeof *t);
    t->src = check_frand(O * ld, 0.5f);
    t->W = (GemmWeight){dt, t->src, O, I, ld, NULL};
    if (dt == GEMM_BF16) {
        t->b16 = malloc(sizeof(uint16_t) * (size_t)(O * ld));
        for (int64_t k = 0; k < O * ld; k++)
            t->b16[k] = gemm_f32_to_bf16(t->src[k]);
        t->W.data = t->b16;
    } else if (dt == GEMM_INT8 || dt == GEMM_NF4) {
        QuantFormat f = dt == GEMM_INT8 ? QUANT_INT8 : QUANT_NF4;
        t->codes = malloc(quant_codes_bytes(f, O, I));
        t->scales = malloc(sizeof(float) * quant_scales_count(f, O, I));
        QuantWeight q = {f, O, I, t->codes, t->scales};
        ErrStatus st;
        CHECK_TRUE(quant_rows_f32(&q, 0, O, t->src, ld, &st), "quantise: %s", st.msg);
        t->W = (GemmWeight){dt, t->codes, O, I, I, t->scales};
    }
    t->wf = check_falloc(O * I);
    t->wr = check_falloc(O * I);
    gemm_weight_rows_f32(&t->W, 0, O, t->wf, I);
    for (int64_t k = 0; k < O * I; k++)
        t->wr[k] = bf(t->wf[k]);
}

static void weight_free(TestWeight *t) {
    free(t->src), free(t->b16), free(t->codes), free(t->scales), free(t->wf), free(t->wr);
}

/* ---- bounded comparison --------------------------------------------------------------- */

/* got [n] against ref within bound (per element); also that got differs from the product of
 * the unrounded operands (unr) by more than the bound somewhere, i.e. the operands really were
 * rounded to BF16 (skipped when unr is NULL). */
static void check_bounded(const char *name, const float *got, const double *ref,
                          const double *bound, const double *unr, int64_t n) {
    double worst = 0, seen = 0;
    int64_t at = 0;
    for (int64_t i = 0; i < n; i++) {
        double r = fabs((double)got[i] - ref[i]) / bound[i];
        if (!(r <= worst)) worst = r, at = i; /* NaN counts as worst */
        if (unr) {
            double ru = fabs((double)got[i] - unr[i]) / bound[i];
            if (ru > seen) seen = ru;
        }
    }
    int ok = worst <= 1.0;
    check_count++;
    check_failures += !ok;
    printf("%s %-52s max |err| / bound %.3f (n %lld, worst at %lld)\n", ok ? "PASS" : "FAIL", name,
           worst, (long long)n, (long long)at);
    if (unr)
        CHECK_TRUE(seen > 1.0,
                   "%s: equals the unrounded product within the bound (max %.3f): "
                   "operands not rounded to BF16?",
                   name, seen);
}

/* ref[t, j] = beta out0[t, j] + sum_k a[t, k] b(j, k), a [T, K] (rows lda), b(j, k) =
 * B[j * K + k] (xwt: W rows) or B[k * N + j] (xw), with the bound of the file comment. */
static void ref_product(double *ref, double *bound, const float *a, int64_t lda, const float *B,
                        int tb, int64_t T, int64_t N, int64_t K, float beta, const float *out0,
                        int round_a) {
    for (int64_t t = 0; t < T; t++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0, sa = 0;
            for (int64_t k = 0; k < K; k++) {
                double x = round_a ? bf(a[t * lda + k]) : a[t * lda + k];
                double p = x * (tb ? B[j * K + k] : B[k * N + j]);
                s += p, sa += fabs(p);
            }
            if (beta != 0.0f) {
                double c = (double)beta * out0[t * N + j];
                s += c, sa += fabs(c);
            }
            ref[t * N + j] = s;
            bound[t * N + j] = gamma_n(K + 1) * sa + U_F32 * fabs(s) + 1e-30;
        }
}

/* xwt and xw of weight tw at T rows, beta; label names the path. */
static void run_linear(GemmCtx *g, const TestWeight *tw, int64_t T, float beta, const char *path) {
    const int64_t O = tw->W.rows, I = tw->W.cols;
    char name[128];
    snprintf(name, sizeof name, "%s %s T=%lld O=%lld I=%lld ld=%lld beta=%g", path,
             gemm_dtype_name(tw->W.dtype), (long long)T, (long long)O, (long long)I,
             (long long)tw->W.ld, (double)beta);
    for (int xw = 0; xw < 2; xw++) {
        const int64_t K = xw ? O : I, N = xw ? I : O;
        float *in = check_frand(T * K, 1.0f), *out0 = check_frand(T * N, 1.0f);
        float *out = check_falloc(T * N);
        memcpy(out, out0, sizeof(float) * (size_t)(T * N));
        if (beta == 0.0f) /* beta 0 must not read the output */
            for (int64_t k = 0; k < T * N; k++)
                out[k] = NAN;
        double *ref = calloc((size_t)(T * N), sizeof(double));
        double *bound = calloc((size_t)(T * N), sizeof(double));
        double *unr = calloc((size_t)(T * N), sizeof(double));
        if (xw)
            gemm_xw(g, out, in, &tw->W, T, beta);
        else
            gemm_xwt(g, out, in, &tw->W, T, beta);
        /* the unrounded product first: its bound is overwritten by the rounded one's */
        ref_product(unr, bound, in, K, tw->wf, !xw, T, N, K, beta, out0, 0);
        ref_product(ref, bound, in, K, tw->wr, !xw, T, N, K, beta, out0, 1);
        char full[160];
        snprintf(full, sizeof full, "%s %s", xw ? "xw " : "xwt", name);
        check_bounded(full, out, ref, bound, unr, T * N);
        free(in), free(out0), free(out), free(ref), free(bound), free(unr);
    }
}

/* Every weight dtype, T = 1 and 37, beta 0 and 1: O = 1100 is three tiles of 512 rows with a
 * partial last one; I = 333 with ld 341 for F32 / BF16 (not a multiple of 16, padded rows);
 * INT8 / NF4 are dense and NF4 needs I % 64 == 0: I = 320. */
static void run_all(GemmCtx *g, const char *path) {
    for (int dt = GEMM_F32; dt <= GEMM_NF4; dt++) {
        TestWeight tw;
        int quant = dt == GEMM_INT8 || dt == GEMM_NF4;
        weight_make(&tw, (GemmDtype)dt, 1100, quant ? 320 : 333, quant ? 320 : 341);
        for (int ti = 0; ti < 2; ti++)
            for (int bi = 0; bi < 2; bi++)
                run_linear(g, &tw, ti ? 37 : 1, bi ? 1.0f : 0.0f, path);
        weight_free(&tw);
    }
    /* one tile, few rows, width 17 */
    TestWeight tw;
    weight_make(&tw, GEMM_BF16, 7, 17, 20);
    run_linear(g, &tw, 5, 1.0f, path);
    weight_free(&tw);
}

/* With the identity as W (F32), X W^T is X rounded to BF16, exactly (one nonzero product per
 * output, and x * 1 + 0 is exact): checks the vectorised rounding against gemm_f32_to_bf16 on
 * ties and their neighbours. */
static void run_rounding(GemmCtx *g, const char *path) {
    enum { N = 48 };
    float *eye = check_falloc(N * N), x[2 * N], y[2 * N];
    for (int i = 0; i < N; i++)
        eye[i * N + i] = 1.0f;
    const uint32_t bits[] = {0x3f808000u, 0x3f818000u, 0x3f808001u, 0x3f807fffu, 0xbf808000u,
                             0xbf818000u, 0x40490fdbu, 0x7f7f0000u, 0x00800000u, 0x3f7fffffu};
    for (int i = 0; i < 2 * N; i++) {
        if (i < (int)(sizeof bits / sizeof bits[0]))
            memcpy(&x[i], &bits[i], 4);
        else
            x[i] = check_rnd() * 100.0f;
    }
    GemmWeight W = {GEMM_F32, eye, N, N, N, NULL};
    gemm_xwt(g, y, x, &W, 2, 0.0f);
    int bad = 0;
    for (int i = 0; i < 2 * N; i++)
        bad += memcmp(&y[i], &(float){bf(x[i])}, 4) != 0;
    CHECK_TRUE(bad == 0, "%s: %d of %d activations not rounded as gemm_f32_to_bf16", path, bad,
               2 * N);
    printf("%s rounding of X against gemm_f32_to_bf16: %d of %d differ\n", path, bad, 2 * N);
    free(eye);
}

/* ---- oneDNN backend directly ------------------------------------------------------------ */

/* One bmm product against the double reference; ldc > N: the padding must stay untouched. */
static void bmm_case(BmmCtx *b, BmmType ty, int tb, int64_t M, int64_t N, int64_t K, int64_t pad,
                     float beta) {
    const int64_t lda = K + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    const int64_t brows = tb ? N : K;
    float *A = check_frand(M * lda, 1.0f), *B = check_frand(brows * ldb, 1.0f);
    uint16_t *A16 = malloc(sizeof(uint16_t) * (size_t)(M * lda));
    uint16_t *B16 = malloc(sizeof(uint16_t) * (size_t)(brows * ldb));
    for (int64_t k = 0; k < M * lda; k++)
        A16[k] = gemm_f32_to_bf16(A[k]), A[k] = ty == BMM_BF16 ? bf(A[k]) : A[k];
    for (int64_t k = 0; k < brows * ldb; k++)
        B16[k] = gemm_f32_to_bf16(B[k]), B[k] = ty == BMM_BF16 ? bf(B[k]) : B[k];
    float *C0 = check_frand(M * ldc, 1.0f), *C = check_falloc(M * ldc);
    memcpy(C, C0, sizeof(float) * (size_t)(M * ldc));
    if (beta == 0.0f)
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++)
                C[i * ldc + j] = NAN;
    BmmShape s = {ty, tb, M, N, K, lda, ldb, ldc, beta};
    int ready = bmm_ready(b, &s);
    CHECK_TRUE(ready, "bmm_ready: %s", bmm_last_status(b));
    if (!ready) {
        free(A), free(B), free(A16), free(B16), free(C0), free(C);
        return;
    }
    bmm_run(b, &s, ty == BMM_BF16 ? (void *)A16 : (void *)A,
            ty == BMM_BF16 ? (void *)B16 : (void *)B, C);
    double *ref = calloc((size_t)(M * N), sizeof(double)),
           *bd = calloc((size_t)(M * N), sizeof(double));
    float *got = check_falloc(M * N);
    int pad_ok = 1;
    for (int64_t i = 0; i < M; i++) {
        for (int64_t j = 0; j < N; j++) {
            double acc = 0, sa = 0;
            for (int64_t k = 0; k < K; k++) {
                double p = (double)A[i * lda + k] * (tb ? B[j * ldb + k] : B[k * ldb + j]);
                acc += p, sa += fabs(p);
            }
            if (beta != 0.0f) {
                double c = (double)beta * C0[i * ldc + j];
                acc += c, sa += fabs(c);
            }
            ref[i * N + j] = acc;
            bd[i * N + j] = gamma_n(K + (ty == BMM_F32 ? 2 : 1)) * sa + U_F32 * fabs(acc) + 1e-30;
            got[i * N + j] = C[i * ldc + j];
        }
        for (int64_t j = N; j < ldc; j++)
            pad_ok &= memcmp(&C[i * ldc + j], &C0[i * ldc + j], 4) == 0;
    }
    char name[128];
    snprintf(name, sizeof name, "bmm %s trans_b=%d %lldx%lldx%lld pad %lld beta=%g",
             ty == BMM_BF16 ? "bf16" : "f32", tb, (long long)M, (long long)N, (long long)K,
             (long long)pad, (double)beta);
    check_bounded(name, got, ref, bd, NULL, M * N);
    CHECK_TRUE(pad_ok, "%s wrote past N", name);
    free(ref), free(bd), free(got);
    free(A), free(B), free(A16), free(B16), free(C0), free(C);
}

static void test_bmm(BmmType ty) {
    char err[160];
    BmmCtx *b = bmm_create(err, sizeof err);
    CHECK_TRUE(b != NULL, "bmm_create: %s", err);
    if (!b) return;
    for (int tb = 0; tb < 2; tb++)
        for (int bi = 0; bi < 2; bi++) {
            bmm_case(b, ty, tb, 37, 29, 53, 3, bi ? 1.0f : 0.0f);
            bmm_case(b, ty, tb, 1, 100, 333, 0, bi ? 1.0f : 0.0f);
        }
    printf("bmm %s implementation: %s\n", ty == BMM_BF16 ? "bf16" : "f32", bmm_impl(b));

    /* The cache: the same shape again creates nothing; another beta is another primitive. */
    int64_t c0 = bmm_created(b);
    bmm_case(b, ty, 1, 37, 29, 53, 3, 1.0f);
    CHECK_TRUE(bmm_created(b) == c0, "same shape created %lld primitives",
               (long long)(bmm_created(b) - c0));
    bmm_case(b, ty, 1, 37, 29, 53, 3, 0.5f);
    CHECK_TRUE(bmm_created(b) == c0 + 1, "beta 0.5: %lld new primitives, want 1",
               (long long)(bmm_created(b) - c0));
    /* Eviction: 70 more shapes keep 64 live; the least recently used one is made again. */
    BmmShape first = {ty, 0, 1, 8, 8, 8, 8, 8, 0.0f};
    CHECK_TRUE(bmm_ready(b, &first), "ready");
    for (int64_t m = 2; m < 72; m++) {
        BmmShape s = first;
        s.M = m;
        CHECK_TRUE(bmm_ready(b, &s), "ready M %lld", (long long)m);
    }
    CHECK_TRUE(bmm_cached(b) == 64, "cache holds %d entries, want 64", bmm_cached(b));
    int64_t c1 = bmm_created(b);
    CHECK_TRUE(bmm_ready(b, &first) && bmm_created(b) == c1 + 1,
               "the least recently used shape was not evicted");
    BmmShape recent = first;
    recent.M = 71;
    CHECK_TRUE(bmm_ready(b, &recent) && bmm_created(b) == c1 + 1,
               "a recently used shape was evicted");
    bmm_destroy(b);
}

/* ---- gemm_set_compute ------------------------------------------------------------------ */

static void test_set_compute(GemmCtx *g) {
    char why[256], want[256];
    setenv("SHARDLORA_BF16", "off", 1);
    CHECK_TRUE(gemm_set_compute(g, GEMM_COMPUTE_BF16, why, sizeof why) == GEMM_COMPUTE_F32 &&
                   strcmp(why, "fp32 (SHARDLORA_BF16=off)") == 0,
               "off: %s", why);
    unsetenv("SHARDLORA_BF16");
    CHECK_TRUE(gemm_set_compute(g, GEMM_COMPUTE_F32, why, sizeof why) == GEMM_COMPUTE_F32 &&
                   strcmp(why, "fp32") == 0,
               "fp32 asked: %s", why);
    GemmCompute c = gemm_set_compute(g, GEMM_COMPUTE_BF16, why, sizeof why);
    printf("oneDNN ISA %s, native BF16 %d; bf16 asked: %s\n", gemm_isa(), gemm_bf16_native(), why);
    if (gemm_bf16_native()) {
        CHECK_TRUE(c == GEMM_COMPUTE_BF16 && strncmp(why, "bf16 (oneDNN ", 13) == 0, "%s", why);
    } else {
        snprintf(want, sizeof want, "fp32 (this CPU has no native BF16: oneDNN ISA %s)",
                 gemm_isa());
        CHECK_TRUE(c == GEMM_COMPUTE_F32 && strcmp(why, want) == 0, "%s", why);
    }
    setenv("SHARDLORA_BF16", "emulate", 1);
    c = gemm_set_compute(g, GEMM_COMPUTE_BF16, why, sizeof why);
    CHECK_TRUE(c == GEMM_COMPUTE_BF16 && g->bf16_emulate &&
                   strncmp(why, "bf16 (emulated: SHARDLORA_BF16=emulate", 38) == 0,
               "emulate: %s", why);
    unsetenv("SHARDLORA_BF16");
}

int main(int argc, char **argv) {
    gemm_ensure_blas_core(argc, argv);
    MemCtx m;
    mem_init(&m, MEM_PIN_OFF);
    GemmCtx g;
    gemm_init(&g, &m, 0, 400);
    char why[256];

    test_set_compute(&g);
    test_bmm(BMM_F32);

    /* Emulated BF16 compute: any CPU. */
    setenv("SHARDLORA_BF16", "emulate", 1);
    CHECK_TRUE(gemm_set_compute(&g, GEMM_COMPUTE_BF16, why, sizeof why) == GEMM_COMPUTE_BF16, "%s",
               why);
    unsetenv("SHARDLORA_BF16");
    run_all(&g, "emulated");
    run_rounding(&g, "emulated");
    CHECK_TRUE(gemm_bf16_primitives(&g) == 0, "emulation created oneDNN primitives");
    CHECK_TRUE(m.bytes[MEM_ACTIVATION] == g.scratch_floats * sizeof(float) + g.act_bytes &&
                   g.act_bytes >= 37 * 1100 * sizeof(float),
               "activation buffer accounting");

    /* oneDNN's BF16 matmul, when this CPU has one. */
    if (gemm_set_compute(&g, GEMM_COMPUTE_BF16, why, sizeof why) == GEMM_COMPUTE_BF16) {
        test_bmm(BMM_BF16);
        run_all(&g, "onednn");
        run_rounding(&g, "onednn");
        /* Cache reuse through gemm: the same call twice creates primitives once. */
        TestWeight tw;
        weight_make(&tw, GEMM_BF16, 96, 64, 64);
        float *x = check_frand(9 * 64, 1.0f), *y = check_falloc(9 * 96);
        int64_t p0 = gemm_bf16_primitives(&g);
        gemm_xwt(&g, y, x, &tw.W, 9, 0.0f);
        int64_t p1 = gemm_bf16_primitives(&g);
        gemm_xwt(&g, y, x, &tw.W, 9, 0.0f);
        CHECK_TRUE(p1 == p0 + 1 && gemm_bf16_primitives(&g) == p1,
                   "primitives created: first call %lld, second %lld (want 1, 0)",
                   (long long)(p1 - p0), (long long)(gemm_bf16_primitives(&g) - p1));
        free(x), free(y);
        weight_free(&tw);
    } else {
        printf("SKIP oneDNN BF16 matmul: %s (the emulated path and oneDNN's F32 matmul with the "
               "same descriptors were checked)\n",
               why);
    }

    gemm_free(&g, &m);
    CHECK_TRUE(m.bytes[MEM_ACTIVATION] == 0, "scratch not freed: %zu bytes",
               m.bytes[MEM_ACTIVATION]);
    return check_finish();
}
