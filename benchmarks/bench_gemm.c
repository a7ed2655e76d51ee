/* sgemm throughput at the training shapes of the step benchmark model (hidden C = 1024,
 * ffn F = 2816, vocab V = 32000, T = 512 tokens, LoRA rank r = 16), at 1 and 2 threads,
 * against the 2048^3 "peak" measured in the same run; F32 and BF16 weights through the
 * linear-layer interface (gemm_xwt / gemm_xw). Then the frozen base's products in fp32 vs
 * bf16 compute side by side (same shapes, F32 / BF16 / NF4 weights, 2 threads, ratio), with
 * oneDNN's ISA and whether BF16 runs natively or emulated (SHARDLORA_BF16=emulate, on CPUs
 * without native BF16: a numerics path, slower than fp32 by design). Prints the tables and
 * `sgemm_peak_gflops threads=1 X threads=2 Y` for the MFU denominators. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "runtime/gemm.h"
#include "runtime/log.h"
#include "runtime/mem.h"
#include "runtime/quant.h"

enum { T_TOK = 512, C_HID = 1024, F_FFN = 2816, V_VOC = 32000, R_LORA = 16, N_PEAK = 2048 };

/* Each measurement times single calls (after one warm-up call) until this much time has
 * passed and at least 3 calls ran, and keeps the fastest call: the machine may be shared,
 * and the best call is what the hardware can do (the peak an MFU figure divides by).
 * Keeps the whole run well under a minute. */
#define BENCH_MIN_SECONDS 0.25
#define BENCH_MIN_CALLS 3

typedef enum { OP_F32, OP_XWT, OP_XW } BenchOp;

typedef struct {
    const char *name;
    BenchOp op;
    int transA, transB;
    int64_t M, N, K; /* C[M,N] = op(A)[M,K] op(B)[K,N]; for xwt/xw: T, O, I of the layer */
    GemmDtype dtype; /* weight dtype for OP_XWT / OP_XW */
} BenchShape;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
    float *A, *B, *C; /* big enough for every shape */
    uint16_t *Wb;     /* BF16 weights */
    uint8_t *codes;   /* NF4 weights (codes, absmax), quantised per shape by bench_compute */
    float *scales;
} BenchBufs;

static double flops_of(const BenchShape *s) {
    return 2.0 * (double)s->M * (double)s->N * (double)s->K;
}

static void run_once(GemmCtx *g, const BenchShape *s, BenchBufs *b) {
    if (s->op == OP_F32) {
        int64_t lda = s->transA ? s->M : s->K, ldb = s->transB ? s->K : s->N;
        gemm_f32(g, s->transA, s->transB, s->M, s->N, s->K, 1.0f, b->A, lda, b->B, ldb, 0.0f, b->C,
                 s->N);
        return;
    }
    /* xwt: Y[T,O] = X[T,I] W^T; xw: dX[T,I] = dY[T,O] W; W [O, I] */
    int64_t T = s->M, O = s->N, I = s->K;
    GemmWeight W = {
        s->dtype, s->dtype == GEMM_BF16 ? (const void *)b->Wb : (const void *)b->B, O, I, I, NULL};
    if (s->dtype == GEMM_NF4) W.data = b->codes, W.scales = b->scales;
    if (s->op == OP_XWT)
        gemm_xwt(g, b->C, b->A, &W, T, 0.0f);
    else
        gemm_xw(g, b->C, b->A, &W, T, 0.0f);
}

static double measure(GemmCtx *g, const BenchShape *s, BenchBufs *b) {
    run_once(g, s, b); /* warm-up: thread start, page faults, packing buffers */
    int calls = 0;
    double best = 1e30, start = now_s(), t;
    do {
        double t0 = now_s();
        run_once(g, s, b);
        t = now_s();
        if (t - t0 < best) best = t - t0;
        calls++;
    } while (t - start < BENCH_MIN_SECONDS || calls < BENCH_MIN_CALLS);
    return flops_of(s) / best * 1e-9;
}

static void shape_label(const BenchShape *s, char *buf, size_t n) {
    if (s->op == OP_F32)
        snprintf(buf, n, "%-26s %lldx%lldx%lld%s%s", s->name, (long long)s->M, (long long)s->N,
                 (long long)s->K, s->transA ? " tA" : "", s->transB ? " tB" : "");
    else
        snprintf(buf, n, "%-26s T=%lld O=%lld I=%lld %s", s->name, (long long)s->M, (long long)s->N,
                 (long long)s->K, gemm_dtype_name(s->dtype));
}

/* The frozen base's products (the OP_XWT / OP_XW shapes) in fp32 and in bf16 compute, side by
 * side at nt threads, for F32, BF16 and NF4 weights. */
static void bench_compute(MemCtx *m, const BenchShape *shapes, int nshapes, BenchBufs *b, int nt) {
    GemmCtx g;
    gemm_init(&g, m, nt, F_FFN);
    char why[256];
    GemmCompute c = gemm_set_compute(&g, GEMM_COMPUTE_BF16, why, sizeof why);
    const char *how = "native";
    if (c != GEMM_COMPUTE_BF16) {
        printf("bf16 compute asked: %s; timing the emulation instead (SHARDLORA_BF16=emulate)\n",
               why);
        setenv("SHARDLORA_BF16", "emulate", 1);
        c = gemm_set_compute(&g, GEMM_COMPUTE_BF16, why, sizeof why);
        unsetenv("SHARDLORA_BF16");
        how = "emulated";
    }
    printf("== fp32 vs bf16 compute (gemm_xwt / gemm_xw), %d threads, oneDNN ISA %s, BF16 %s: "
           "%s\n",
           nt, gemm_isa(), how, why);
    printf("%-58s %9s %9s %7s\n", "layer T/O/I weights", "fp32 GF/s", "bf16 GF/s", "bf16/fp32");
    const GemmDtype dts[] = {GEMM_F32, GEMM_BF16, GEMM_NF4};
    char label[128];
    double best = 0; /* the BF16 peak: the best bf16 rate of these products */
    for (int i = 0; i < nshapes; i++) {
        if (shapes[i].op == OP_F32 || shapes[i].dtype != GEMM_F32) continue;
        for (int d = 0; d < 3; d++) {
            BenchShape s = shapes[i];
            s.dtype = dts[d];
            if (s.dtype == GEMM_NF4) { /* W [O, I] from B's F32 values */
                QuantWeight q = {QUANT_NF4, s.N, s.K, b->codes, b->scales};
                ErrStatus st;
                SL_CHECK(quant_rows_f32(&q, 0, s.N, b->B, s.K, &st), "%s", st.msg);
            }
            gemm_set_compute(&g, GEMM_COMPUTE_F32, NULL, 0);
            double f32 = measure(&g, &s, b);
            if (strcmp(how, "emulated") == 0) setenv("SHARDLORA_BF16", "emulate", 1);
            gemm_set_compute(&g, GEMM_COMPUTE_BF16, NULL, 0);
            unsetenv("SHARDLORA_BF16");
            double b16 = measure(&g, &s, b);
            shape_label(&s, label, sizeof label);
            printf("%-58s %9.1f %9.1f %6.2fx\n", label, f32, b16, b16 / f32);
            if (b16 > best) best = b16;
            fflush(stdout);
        }
    }
    printf("bf16_peak_gflops threads=%d %.1f %s\n", nt, best, how);
    gemm_free(&g, m);
}

int main(int argc, char **argv) {
    gemm_ensure_blas_core(argc, argv);

    /* M x N x K as row-major C[M,N] = op(A) op(B). X W^T is (T, O, I) with transB;
     * dX = dY W is (T, I, O). */
    const BenchShape shapes[] = {
        {"peak 2048^3", OP_F32, 0, 0, N_PEAK, N_PEAK, N_PEAK, GEMM_F32},
        {"fwd q/k/v/o X W^T", OP_F32, 0, 1, T_TOK, C_HID, C_HID, GEMM_F32},
        {"fwd gate/up X W^T", OP_F32, 0, 1, T_TOK, F_FFN, C_HID, GEMM_F32},
        {"fwd down X W^T", OP_F32, 0, 1, T_TOK, C_HID, F_FFN, GEMM_F32},
        {"fwd lm_head X W^T", OP_F32, 0, 1, T_TOK, V_VOC, C_HID, GEMM_F32},
        {"bwd q/k/v/o dY W", OP_F32, 0, 0, T_TOK, C_HID, C_HID, GEMM_F32},
        {"bwd gate/up dY W", OP_F32, 0, 0, T_TOK, C_HID, F_FFN, GEMM_F32},
        {"bwd down dY W", OP_F32, 0, 0, T_TOK, F_FFN, C_HID, GEMM_F32},
        {"bwd lm_head dY W", OP_F32, 0, 0, T_TOK, C_HID, V_VOC, GEMM_F32},
        {"lora h = X A^T", OP_F32, 0, 1, T_TOK, R_LORA, C_HID, GEMM_F32},
        {"lora Y += h B^T", OP_F32, 0, 1, T_TOK, C_HID, R_LORA, GEMM_F32},
        {"lora dB = dY^T h", OP_F32, 1, 0, C_HID, R_LORA, T_TOK, GEMM_F32},
        {"lora dh = dY B", OP_F32, 0, 0, T_TOK, R_LORA, C_HID, GEMM_F32},
        {"lora dA = dh^T X", OP_F32, 1, 0, R_LORA, C_HID, T_TOK, GEMM_F32},
        {"lora dX += dh A", OP_F32, 0, 0, T_TOK, C_HID, R_LORA, GEMM_F32},
        {"lora h = X A^T (ffn in)", OP_F32, 0, 1, T_TOK, R_LORA, F_FFN, GEMM_F32},
        {"xwt q/k/v/o", OP_XWT, 0, 0, T_TOK, C_HID, C_HID, GEMM_F32},
        {"xwt q/k/v/o", OP_XWT, 0, 0, T_TOK, C_HID, C_HID, GEMM_BF16},
        {"xwt gate/up", OP_XWT, 0, 0, T_TOK, F_FFN, C_HID, GEMM_F32},
        {"xwt gate/up", OP_XWT, 0, 0, T_TOK, F_FFN, C_HID, GEMM_BF16},
        {"xwt down", OP_XWT, 0, 0, T_TOK, C_HID, F_FFN, GEMM_F32},
        {"xwt down", OP_XWT, 0, 0, T_TOK, C_HID, F_FFN, GEMM_BF16},
        {"xwt lm_head", OP_XWT, 0, 0, T_TOK, V_VOC, C_HID, GEMM_F32},
        {"xwt lm_head", OP_XWT, 0, 0, T_TOK, V_VOC, C_HID, GEMM_BF16},
        {"xw q/k/v/o", OP_XW, 0, 0, T_TOK, C_HID, C_HID, GEMM_F32},
        {"xw q/k/v/o", OP_XW, 0, 0, T_TOK, C_HID, C_HID, GEMM_BF16},
        {"xw gate/up", OP_XW, 0, 0, T_TOK, F_FFN, C_HID, GEMM_F32},
        {"xw gate/up", OP_XW, 0, 0, T_TOK, F_FFN, C_HID, GEMM_BF16},
        {"xw down", OP_XW, 0, 0, T_TOK, C_HID, F_FFN, GEMM_F32},
        {"xw down", OP_XW, 0, 0, T_TOK, C_HID, F_FFN, GEMM_BF16},
        {"xw lm_head", OP_XW, 0, 0, T_TOK, V_VOC, C_HID, GEMM_F32},
        {"xw lm_head", OP_XW, 0, 0, T_TOK, V_VOC, C_HID, GEMM_BF16},
    };
    const int nshapes = (int)(sizeof shapes / sizeof shapes[0]);

    /* Buffers sized for the largest operand of any shape (A: M*K, B: K*N, C: M*N). */
    size_t amax = 0, bmax = 0, cmax = 0;
    for (int i = 0; i < nshapes; i++) {
        const BenchShape *s = &shapes[i];
        size_t a = (size_t)s->M * s->K, b = (size_t)s->K * s->N, c = (size_t)s->M * s->N;
        if (s->op == OP_XW) { /* A is dY [T, O], C is dX [T, I] */
            a = (size_t)s->M * s->N;
            c = (size_t)s->M * s->K;
        }
        amax = a > amax ? a : amax;
        bmax = b > bmax ? b : bmax;
        cmax = c > cmax ? c : cmax;
    }
    MemCtx m;
    mem_init(&m, MEM_PIN_AUTO);
    BenchBufs b;
    b.A = mem_alloc(&m, MEM_ACTIVATION, amax * sizeof(float));
    b.B = mem_alloc(&m, MEM_FROZEN, bmax * sizeof(float));
    b.C = mem_alloc(&m, MEM_ACTIVATION, cmax * sizeof(float));
    b.Wb = mem_alloc(&m, MEM_FROZEN, bmax * sizeof(uint16_t));
    for (size_t i = 0; i < amax; i++)
        b.A[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
    for (size_t i = 0; i < bmax; i++) {
        b.B[i] = (float)((i * 104729) % 1000) * 1e-3f - 0.5f;
        b.Wb[i] = gemm_f32_to_bf16(b.B[i]);
    }
    /* every weight shape here has I % 64 == 0: NF4 blocks fit; bmax bounds O * I */
    b.codes = mem_alloc(&m, MEM_FROZEN, bmax / 2);
    b.scales = mem_alloc(&m, MEM_FROZEN, bmax / QUANT_NF4_BLOCK * sizeof(float));

    double peak[3] = {0, 0, 0};
    const int threads[2] = {1, 2};
    char label[128], desc[256];
    for (int ti = 0; ti < 2; ti++) {
        int nt = threads[ti];
        GemmCtx g;
        gemm_init(&g, &m, nt, F_FFN);
        if (ti == 0) {
            printf("%s\n", gemm_describe(&g, desc, sizeof desc));
            printf("%-58s %3s %9s %7s\n", "shape (M x N x K, or layer T/O/I)", "thr", "GFLOP/s",
                   "%peak");
        }
        for (int i = 0; i < nshapes; i++) {
            double gf = measure(&g, &shapes[i], &b);
            if (i == 0) peak[nt] = gf;
            shape_label(&shapes[i], label, sizeof label);
            printf("%-58s %3d %9.1f %6.1f%%\n", label, nt, gf, 100.0 * gf / peak[nt]);
            fflush(stdout);
        }
        gemm_free(&g, &m);
    }
    bench_compute(&m, shapes, nshapes, &b, threads[1]);
    printf("sgemm_peak_gflops threads=1 %.1f threads=2 %.1f\n", peak[1], peak[2]);

    mem_free(&m, MEM_ACTIVATION, b.A, amax * sizeof(float));
    mem_free(&m, MEM_FROZEN, b.B, bmax * sizeof(float));
    mem_free(&m, MEM_ACTIVATION, b.C, cmax * sizeof(float));
    mem_free(&m, MEM_FROZEN, b.Wb, bmax * sizeof(uint16_t));
    mem_free(&m, MEM_FROZEN, b.codes, bmax / 2);
    mem_free(&m, MEM_FROZEN, b.scales, bmax / QUANT_NF4_BLOCK * sizeof(float));
    return 0;
}
