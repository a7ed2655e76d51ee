/* Frozen-base storage formats (runtime/quant.c): names, sizes and shape refusals; exact known
 * cases (zero rows and blocks, one nonzero, code points, ties); round-trip error bounds; every
 * dequantised sub-tile = the whole matrix; BF16 panels = F32 panels rounded; BF16 sources;
 * row-range quantisation = whole; non-finite refusals. The bit-exact comparison with the
 * PyTorch reference is reference_quant (tests/reference/quant_ref.py). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/gemm.h"
#include "runtime/quant.h"
#include "tests/unit/check.h"

/* A weight with its own storage (test helper; the library never allocates). */
static QuantWeight qalloc(QuantFormat f, int64_t rows, int64_t cols) {
    QuantWeight w = {f, rows, cols, calloc(quant_codes_bytes(f, rows, cols) + 1, 1),
                     check_falloc((int64_t)quant_scales_count(f, rows, cols))};
    if (!w.codes) exit(2);
    return w;
}

static void qfree(QuantWeight *w) {
    free(w->codes);
    free(w->scales);
}

static void test_names_sizes(void) {
    QuantFormat f = QUANT_BF16;
    CHECK_TRUE(quant_parse("nf4", &f) && f == QUANT_NF4, "parse nf4");
    CHECK_TRUE(quant_parse("int8", &f) && f == QUANT_INT8, "parse int8");
    CHECK_TRUE(quant_parse("bf16", &f) && f == QUANT_BF16, "parse bf16");
    CHECK_TRUE(!quant_parse("fp4", &f) && !quant_parse("NF4", &f) && !quant_parse(NULL, &f),
               "unknown names refused");
    CHECK_TRUE(strcmp(quant_name(QUANT_INT8), "int8") == 0, "name");
    /* 4096 x 11008: bf16 2 B, int8 1 B + 4 B per row, nf4 0.5 B + 4 B per 64 */
    CHECK_TRUE(quant_bytes(QUANT_BF16, 4096, 11008) == 2ull * 4096 * 11008, "bf16 bytes");
    CHECK_TRUE(quant_bytes(QUANT_INT8, 4096, 11008) == 4096ull * 11008 + 4 * 4096, "int8 bytes");
    CHECK_TRUE(quant_bytes(QUANT_NF4, 4096, 11008) == 4096ull * 11008 / 2 + 4096ull * 172 * 4,
               "nf4 bytes");
    double ratio = (double)quant_bytes(QUANT_NF4, 4096, 11008) / (4.0 * 4096 * 11008);
    CHECK_TRUE(ratio <= 0.15, "nf4 / fp32 bytes %.4f <= 0.15 (issue 18's target)", ratio);
    printf("nf4 bytes / fp32 bytes = %.4f\n", ratio);
    ErrStatus st;
    CHECK_TRUE(quant_check_shape(QUANT_NF4, 8, 128, &st), "nf4 128 cols ok");
    CHECK_TRUE(!quant_check_shape(QUANT_NF4, 8, 100, &st) && strstr(st.msg, "[8, 100]") &&
                   strstr(st.msg, "multiple"),
               "nf4 100 cols refused: %s", st.msg);
    CHECK_TRUE(quant_check_shape(QUANT_INT8, 3, 100, &st), "int8 any cols");
    CHECK_TRUE(!quant_check_shape(QUANT_INT8, 0, 100, &st) && strstr(st.msg, "[0, 100]"),
               "empty refused: %s", st.msg);
}

static void test_int8_known(void) {
    /* row 0: absmax 127 so scale 1 and q = round-half-even(x); row 1 zero; row 2 one value */
    float x[3][8] = {{127, -127, 2.5f, 3.5f, -2.5f, 0.5f, 1.5f, -0.49f}, {0}, {0, 0, -0.7f}};
    QuantWeight w = qalloc(QUANT_INT8, 3, 8);
    ErrStatus st;
    CHECK_TRUE(quant_int8_rows_f32(&w, 0, 3, &x[0][0], 8, &st), "%s", st.msg);
    const int8_t *q = (const int8_t *)w.codes;
    const int8_t want[8] = {127, -127, 2, 4, -2, 0, 2, 0};
    CHECK_TRUE(memcmp(q, want, 8) == 0 && w.scales[0] == 1.0f, "ties to even, scale 1");
    int zero = 1;
    for (int c = 0; c < 8; c++)
        zero &= q[8 + c] == 0;
    CHECK_TRUE(zero && w.scales[1] == 0.0f, "zero row: scale 0, q 0");
    CHECK_TRUE(q[18] == -127 && w.scales[2] == 0.7f / 127.0f, "one nonzero -> -127");
    float dq[24];
    quant_dequant_f32(&w, 0, 3, 0, 8, dq, 8);
    CHECK_TRUE(dq[2] == 2.0f && dq[8] == 0.0f && dq[18] == -127 * (0.7f / 127.0f),
               "dequantised values");
    qfree(&w);
}

static void test_nf4_known(void) {
    const float *code = quant_nf4_table();
    int sorted = 1;
    for (int i = 0; i < 15; i++)
        sorted &= code[i] < code[i + 1];
    CHECK_TRUE(sorted && code[0] == -1.0f && code[7] == 0.0f && code[15] == 1.0f, "NF4 table");
    float x[2][128] = {{0}};
    /* block 0: absmax 0.5 at both ends, every code value times 0.5 */
    x[0][0] = 0.5f, x[0][1] = -0.5f;
    for (int i = 0; i < 16; i++)
        x[0][2 + i] = code[i] * 0.5f;
    /* block 1 zero; row 1: block 0 one nonzero, block 1 the midpoints (absmax 1) */
    x[1][9] = -3.0f;
    x[1][64] = 1.0f;
    for (int i = 0; i < 15; i++) {
        float mid = quant_nf4_thresholds()[i];
        x[1][65 + 2 * i] = mid;
        x[1][66 + 2 * i] = nextafterf(mid, 2.0f);
    }
    QuantWeight w = qalloc(QUANT_NF4, 2, 128);
    ErrStatus st;
    CHECK_TRUE(quant_nf4_rows_f32(&w, 0, 2, &x[0][0], 128, &st), "%s", st.msg);
    float dq[256];
    quant_dequant_f32(&w, 0, 2, 0, 128, dq, 128);
    CHECK_TRUE(w.codes[0] == 0xF0 && w.scales[0] == 0.5f, "first element in the high nibble");
    CHECK_TRUE(memcmp(dq, x[0], 64 * sizeof(float)) == 0, "code points round-trip exactly");
    int zero = w.scales[1] == 0.0f;
    for (int j = 32; j < 64; j++)
        zero &= w.codes[j] == 0x77;
    for (int j = 64; j < 128; j++)
        zero &= dq[j] == 0.0f;
    CHECK_TRUE(zero, "zero block: absmax 0, index 7, dequantised 0");
    int one = w.scales[2] == 3.0f && dq[128 + 9] == -3.0f;
    for (int j = 0; j < 64; j++)
        one &= j == 9 || dq[128 + j] == 0.0f;
    CHECK_TRUE(one, "one nonzero in a block: exact, the rest 0");
    int ties = 1;
    for (int i = 0; i < 15; i++) {
        int64_t e = 128 + 65 + 2 * i; /* element index in the matrix */
        unsigned lo = w.codes[e / 2] >> (e % 2 ? 0 : 4) & 15;
        unsigned hi = w.codes[(e + 1) / 2] >> ((e + 1) % 2 ? 0 : 4) & 15;
        ties &= lo == (unsigned)i && hi == (unsigned)i + 1;
    }
    CHECK_TRUE(ties, "a threshold takes the lower code, one ulp above the upper");
    /* each threshold is within one F32 step of the exact midpoint */
    int near = 1;
    for (int i = 0; i < 15; i++) {
        double m = ((double)code[i] + code[i + 1]) / 2, t = quant_nf4_thresholds()[i];
        near &= fabs(t - m) < fabs((double)nextafterf((float)t, 2.0f) - t);
    }
    CHECK_TRUE(near, "thresholds = midpoints within one F32 step");
    qfree(&w);
}

/* Random rows at mixed scales; returns the max error over the bound seen (<= 0 passes). */
static void test_bounds_and_tiles(QuantFormat f, int64_t rows, int64_t cols) {
    float *x = check_falloc(rows * cols);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            x[r * cols + c] = (r % 3 ? 0.05f : 3.0f) * (check_rnd() + check_rnd() + check_rnd());
    QuantWeight w = qalloc(f, rows, cols), w2 = qalloc(f, rows, cols);
    ErrStatus st;
    CHECK_TRUE(quant_rows_f32(&w, 0, rows, x, cols, &st), "%s", st.msg);
    /* row ranges of 3 from a source with ld > cols = the whole */
    int64_t ld = cols + 7;
    float *xs = check_falloc(rows * ld);
    for (int64_t r = 0; r < rows; r++)
        memcpy(xs + r * ld, x + r * cols, (size_t)cols * sizeof *x);
    for (int64_t r = 0; r < rows; r += 3)
        quant_rows_f32(&w2, r, r + 3 < rows ? r + 3 : rows, xs + r * ld, ld, &st);
    CHECK_TRUE(memcmp(w.codes, w2.codes, quant_codes_bytes(f, rows, cols)) == 0 &&
                   memcmp(w.scales, w2.scales, 4 * quant_scales_count(f, rows, cols)) == 0,
               "%s: row ranges (ld %lld) = whole", quant_name(f), (long long)ld);
    float *dq = check_falloc(rows * cols);
    quant_dequant_f32(&w, 0, rows, 0, cols, dq, cols);
    /* error bound: int8 scale / 2; nf4 absmax x the largest half-gap of the table */
    const float *code = quant_nf4_table();
    double halfgap = 0;
    for (int i = 0; i < 15; i++)
        halfgap = fmax(halfgap, (code[i + 1] - code[i]) / 2.0);
    double worst = -1e300;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            /* bf16: half an ulp of 8 significant bits */
            double s = f == QUANT_INT8  ? w.scales[r] / 2.0
                       : f == QUANT_NF4 ? w.scales[(r * cols + c) / 64] * halfgap
                                        : fabs(x[r * cols + c]) / 256.0;
            double e = fabs((double)x[r * cols + c] - dq[r * cols + c]) - s * (1 + 1e-6);
            worst = fmax(worst, e / (s > 0 ? s : 1));
        }
    CHECK_TRUE(worst <= 0, "%s: |x - dq| within the bound (excess %.3e)", quant_name(f), worst);
    printf("%s [%lld, %lld]: max (|x - dq| - bound) / bound = %.3e\n", quant_name(f),
           (long long)rows, (long long)cols, worst);
    /* every sub-tile (nf4: 64-column steps) = the same part of the whole, F32 and BF16 */
    int64_t step = f == QUANT_NF4 ? 64 : 1, cstep = f == QUANT_NF4 ? 64 : 5;
    float *tile = check_falloc(rows * (cols + 3));
    uint16_t *tb = malloc((size_t)(rows * (cols + 3)) * sizeof *tb);
    int64_t ntiles = 0, bad = 0;
    for (int64_t r0 = 0; r0 <= rows; r0 += 2)
        for (int64_t r1 = r0; r1 <= rows; r1 += 3)
            for (int64_t c0 = 0; c0 <= cols; c0 += cstep)
                for (int64_t c1 = c0; c1 <= cols; c1 += step * (f == QUANT_NF4 ? 1 : 7)) {
                    int64_t tld = c1 - c0 + 3;
                    quant_dequant_f32(&w, r0, r1, c0, c1, tile, tld);
                    quant_dequant_bf16(&w, r0, r1, c0, c1, tb, tld);
                    for (int64_t r = r0; r < r1; r++)
                        for (int64_t c = c0; c < c1; c++) {
                            float a = tile[(r - r0) * tld + c - c0], b = dq[r * cols + c];
                            bad += memcmp(&a, &b, 4) != 0;
                            bad += tb[(r - r0) * tld + c - c0] != gemm_f32_to_bf16(b);
                        }
                    ntiles++;
                }
    CHECK_TRUE(bad == 0, "%s: %lld tiles, %lld values differ", quant_name(f), (long long)ntiles,
               (long long)bad);
    printf("%s: %lld tiles (F32 and BF16 panels) = whole dequantisation, %lld differ\n",
           quant_name(f), (long long)ntiles, (long long)bad);
    /* BF16 source = F32 source of the BF16-rounded values */
    uint16_t *xb = malloc((size_t)(rows * cols) * sizeof *xb);
    for (int64_t i = 0; i < rows * cols; i++) {
        xb[i] = gemm_f32_to_bf16(x[i]);
        x[i] = gemm_bf16_to_f32(xb[i]);
    }
    quant_rows_f32(&w, 0, rows, x, cols, &st);
    quant_rows_bf16(&w2, 0, rows, xb, cols, &st);
    CHECK_TRUE(memcmp(w.codes, w2.codes, quant_codes_bytes(f, rows, cols)) == 0 &&
                   memcmp(w.scales, w2.scales, 4 * quant_scales_count(f, rows, cols)) == 0,
               "%s: BF16 source = F32 of the same values", quant_name(f));
    free(xb);
    free(tb);
    free(tile);
    free(dq);
    free(xs);
    free(x);
    qfree(&w);
    qfree(&w2);
}

static void test_bf16_format(void) {
    float x[2][5] = {{1.0f, 1.00390625f, -3.14159f, 0.0f, 1e-3f}, {2, 3, 4, 5, 6}};
    QuantWeight w = qalloc(QUANT_BF16, 2, 5);
    ErrStatus st;
    quant_rows_f32(&w, 0, 2, &x[0][0], 5, &st);
    float dq[10];
    uint16_t db[10];
    quant_dequant_f32(&w, 0, 2, 0, 5, dq, 5);
    quant_dequant_bf16(&w, 0, 2, 0, 5, db, 5);
    int ok = 1;
    for (int i = 0; i < 10; i++)
        ok &= db[i] == gemm_f32_to_bf16((&x[0][0])[i]) && dq[i] == gemm_bf16_to_f32(db[i]);
    CHECK_TRUE(ok, "bf16: stored = rounded source, panels agree");
    qfree(&w);
}

static void test_nonfinite(void) {
    float x[2][64] = {{0}};
    x[1][3] = NAN;
    ErrStatus st;
    QuantWeight w = qalloc(QUANT_NF4, 2, 64), v = qalloc(QUANT_INT8, 2, 64);
    CHECK_TRUE(!quant_rows_f32(&w, 0, 2, &x[0][0], 64, &st) && strstr(st.msg, "row 1"),
               "nf4 NaN refused: %s", st.msg);
    x[1][3] = -INFINITY;
    CHECK_TRUE(!quant_rows_f32(&v, 0, 2, &x[0][0], 64, &st) && strstr(st.msg, "row 1"),
               "int8 inf refused: %s", st.msg);
    qfree(&w);
    qfree(&v);
}

int main(void) {
    test_names_sizes();
    test_int8_known();
    test_nf4_known();
    test_bounds_and_tiles(QUANT_INT8, 11, 37);
    test_bounds_and_tiles(QUANT_NF4, 9, 256);
    test_bounds_and_tiles(QUANT_BF16, 5, 23);
    test_bf16_format();
    test_nonfinite();
    return check_finish();
}
