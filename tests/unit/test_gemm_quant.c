/* GEMMs over a quantised frozen weight (issue 18, GEMM_INT8 / GEMM_NF4 behind GemmWeight):
 * gemm_xwt and gemm_xw against double loops over the dequantised matrix (quant_dequant_f32,
 * whose values test_quant / reference_quant check bit for bit against PyTorch), across the
 * 512-row tiles of the scratch, with beta 0 and 1; row views (gemm_weight_block) and
 * gemm_weight_rows_f32 equal the same rows of the whole; bytes per dtype; the embedding
 * lookup of both kernel tables over a quantised table. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/gemm.h"
#include "runtime/kernels.h"
#include "runtime/mem.h"
#include "runtime/philox.h"
#include "runtime/quant.h"
#include "tests/unit/check.h"

static void fill(float *x, int64_t n, uint64_t tag) {
    for (int64_t i = 0; i < n; i++)
        x[i] = philox_uniform(23, PHILOX_MODEL_INIT, (uint64_t)i, tag, 0, -1.0f, 1.0f);
}

/* A quantised copy of W [O, I] (caller frees data and scales) and its dequantised F32. */
static GemmWeight make_weight(GemmDtype dt, const float *W, int64_t O, int64_t I, float *deq) {
    const QuantFormat f = dt == GEMM_INT8 ? QUANT_INT8 : QUANT_NF4;
    QuantWeight q = {f, O, I, malloc(quant_codes_bytes(f, O, I)),
                     malloc(quant_scales_count(f, O, I) * sizeof(float))};
    ErrStatus st;
    err_status_ok(&st);
    CHECK_TRUE(q.codes && q.scales && quant_rows_f32(&q, 0, O, W, I, &st), "quantise [%lld, %lld]",
               (long long)O, (long long)I);
    quant_dequant_f32(&q, 0, O, 0, I, deq, I);
    GemmWeight w = {dt, q.codes, O, I, I, q.scales};
    return w;
}

/* Y [T, O] = beta Y + X W^T and dX [T, I] = beta dX + dY W, in double over deq. */
static void ref_products(const float *deq, int64_t O, int64_t I, int64_t T, const float *X,
                         const float *dY, float beta, float *Y, float *dX) {
    for (int64_t t = 0; t < T; t++) {
        for (int64_t o = 0; o < O; o++) {
            double s = 0;
            for (int64_t i = 0; i < I; i++)
                s += (double)X[t * I + i] * deq[o * I + i];
            Y[t * O + o] = (float)(s + (double)beta * Y[t * O + o]);
        }
        for (int64_t i = 0; i < I; i++) {
            double s = 0;
            for (int64_t o = 0; o < O; o++)
                s += (double)dY[t * O + o] * deq[o * I + i];
            dX[t * I + i] = (float)(s + (double)beta * dX[t * I + i]);
        }
    }
}

static void test_products(GemmCtx *g, GemmDtype dt, int64_t O, int64_t I, int64_t T) {
    float *W = malloc((size_t)(O * I) * sizeof(float)), *deq = malloc((size_t)(O * I) * 4);
    float *X = malloc((size_t)(T * I) * 4), *dY = malloc((size_t)(T * O) * 4);
    float *Y = malloc((size_t)(T * O) * 4), *Yr = malloc((size_t)(T * O) * 4);
    float *dX = malloc((size_t)(T * I) * 4), *dXr = malloc((size_t)(T * I) * 4);
    fill(W, O * I, 1);
    fill(X, T * I, 2);
    fill(dY, T * O, 3);
    GemmWeight w = make_weight(dt, W, O, I, deq);
    char name[96];
    for (int b = 0; b < 2; b++) {
        const float beta = (float)b;
        fill(Y, T * O, 4);
        fill(dX, T * I, 5);
        memcpy(Yr, Y, (size_t)(T * O) * 4);
        memcpy(dXr, dX, (size_t)(T * I) * 4);
        gemm_xwt(g, Y, X, &w, T, beta);
        gemm_xw(g, dX, dY, &w, T, beta);
        ref_products(deq, O, I, T, X, dY, beta, Yr, dXr);
        snprintf(name, sizeof name, "%s xwt [%lld,%lld] T=%lld beta=%d", gemm_dtype_name(dt),
                 (long long)O, (long long)I, (long long)T, b);
        check_close(name, Y, Yr, T * O, 1e-5);
        snprintf(name, sizeof name, "%s xw  [%lld,%lld] T=%lld beta=%d", gemm_dtype_name(dt),
                 (long long)O, (long long)I, (long long)T, b);
        check_close(name, dX, dXr, T * I, 1e-5);
    }
    /* a row view and the row reader give the same rows as the whole */
    const int64_t r0 = O / 3, n = O / 2;
    GemmWeight blk = gemm_weight_block(&w, r0, n);
    float *rows = malloc((size_t)(n * I) * 4);
    gemm_weight_rows_f32(&blk, 0, n, rows, I);
    CHECK_TRUE(memcmp(rows, deq + r0 * I, (size_t)(n * I) * 4) == 0,
               "%s: gemm_weight_block + rows_f32 = rows [%lld, +%lld) of the whole",
               gemm_dtype_name(dt), (long long)r0, (long long)n);
    gemm_xwt(g, Y, X, &blk, T, 0.0f);
    ref_products(deq + r0 * I, n, I, T, X, dY, 0.0f, Yr, dXr);
    snprintf(name, sizeof name, "%s xwt over a row view", gemm_dtype_name(dt));
    check_close(name, Y, Yr, T * n, 1e-5);
    const QuantFormat f = dt == GEMM_INT8 ? QUANT_INT8 : QUANT_NF4;
    CHECK_TRUE(gemm_weight_bytes(&w) == quant_bytes(f, O, I), "%s bytes %zu", gemm_dtype_name(dt),
               gemm_weight_bytes(&w));
    free(rows);
    free((void *)w.data);
    free((void *)w.scales);
    free(W), free(deq), free(X), free(dY), free(Y), free(Yr), free(dX), free(dXr);
}

/* Rows of a quantised table by id (ids outside [v0, v0 + V) give zeros), both tables. */
static void test_embed(GemmDtype dt) {
    const int64_t V = 40, C = 128, T = 7, v0 = 10;
    float *W = malloc((size_t)(V * C) * 4), *deq = malloc((size_t)(V * C) * 4);
    fill(W, V * C, 9);
    GemmWeight w = make_weight(dt, W, V, C, deq);
    const int32_t ids[7] = {10, 49, 3, 25, 50, 10, -1};
    float out[7 * 128], want[7 * 128];
    for (int64_t t = 0; t < T; t++)
        for (int64_t c = 0; c < C; c++) {
            const int64_t r = ids[t] - v0;
            want[t * C + c] = ids[t] >= 0 && r >= 0 && r < V ? deq[r * C + c] : 0.0f;
        }
    const KernOps *ops[2] = {kern_ops_reference(), kern_ops_fast()};
    for (int k = 0; k < 2; k++) {
        memset(out, 0xff, sizeof out);
        ops[k]->embed_forward(out, &w, ids, v0, T, C);
        CHECK_TRUE(memcmp(out, want, sizeof out) == 0, "%s embedding rows (%s kernels)",
                   gemm_dtype_name(dt), ops[k]->name);
    }
    free((void *)w.data);
    free((void *)w.scales);
    free(W), free(deq);
}

int main(void) {
    MemCtx m;
    mem_init(&m, MEM_PIN_OFF);
    GemmCtx g;
    gemm_init(&g, &m, 2, 512);
    for (int d = GEMM_INT8; d <= GEMM_NF4; d++) {
        test_products(&g, (GemmDtype)d, 1100, 192, 5); /* 3 tiles of rows, the last partial */
        test_products(&g, (GemmDtype)d, 64, 512, 1);
        test_embed((GemmDtype)d);
    }
    gemm_free(&g, &m);
    return check_finish();
}
