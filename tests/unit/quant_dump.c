/* The driver of reference_quant (tests/reference/quant_ref.py --check): writes a deterministic
 * matrix (random rows at several scales plus the edge cases: a zero row, NF4 midpoints and
 * their neighbours, int8 ties, one nonzero per block, tiny and huge values) in F32 and BF16,
 * and what runtime/quant.c makes of each: codes, scales, dequantised F32. Prints "rows cols". */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "runtime/gemm.h"
#include "runtime/quant.h"
#include "tests/unit/check.h"

enum { ROWS = 37, COLS = 192, TILE = 5 };

static void fill(float *w) {
    const float *code = quant_nf4_table();
    for (int64_t r = 0; r < ROWS; r++) {
        float *x = w + r * COLS;
        /* sums of uniforms: roughly normal, as weights are */
        float scale = r < 12 ? 0.02f : r < 24 ? 1.0f : r < 30 ? 1e-30f : 1e30f;
        for (int64_t c = 0; c < COLS; c++)
            x[c] = scale * (check_rnd() + check_rnd() + check_rnd());
    }
    float *z = w; /* row 0: all zero */
    for (int64_t c = 0; c < COLS; c++)
        z[c] = 0.0f;
    float *m = w + 1 * COLS; /* row 1: absmax 1, the midpoints and one ulp either side */
    for (int64_t c = 0; c < COLS; c++)
        m[c] = 0.0f;
    m[0] = 1.0f;
    for (int i = 0; i < 15; i++) {
        float mid = (float)(((double)code[i] + (double)code[i + 1]) / 2);
        m[1 + 3 * i] = mid;
        m[2 + 3 * i] = nextafterf(mid, 2.0f);
        m[3 + 3 * i] = nextafterf(mid, -2.0f);
    }
    m[64] = -1.0f; /* second block: code values */
    for (int i = 0; i < 16; i++)
        m[65 + i] = code[i];
    float *t = w + 2 * COLS; /* row 2: absmax 127 (scale 1), halves: int8 ties */
    for (int64_t c = 0; c < COLS; c++)
        t[c] = (float)((c % 64) - 32) + 0.5f;
    t[100] = 127.0f;
    float *o = w + 3 * COLS; /* row 3: one nonzero per block */
    for (int64_t c = 0; c < COLS; c++)
        o[c] = 0.0f;
    o[5] = -0.3f, o[64] = 2.0f, o[191] = 1e-3f;
}

static void put(const char *dir, const char *name, const void *p, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    check_write_file(path, p, n);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: quant_dump DIR\n");
        return 2;
    }
    const char *dir = argv[1];
    static float w[ROWS * COLS], dq[ROWS * COLS];
    static uint16_t wb[ROWS * COLS];
    static uint8_t codes[ROWS * COLS];
    static float scales[ROWS * COLS];
    fill(w);
    for (int64_t i = 0; i < ROWS * COLS; i++)
        wb[i] = gemm_f32_to_bf16(w[i]);
    put(dir, "w.f32", w, sizeof w);
    put(dir, "w.bf16", wb, sizeof wb);
    const QuantFormat fmts[] = {QUANT_INT8, QUANT_NF4};
    for (int k = 0; k < 2; k++)
        for (int bf = 0; bf < 2; bf++) {
            QuantWeight q = {fmts[k], ROWS, COLS, codes, scales};
            ErrStatus st;
            /* tile by tile, as a rank quantises its shard while loading */
            for (int64_t r = 0; r < ROWS; r += TILE) {
                int64_t r1 = r + TILE < ROWS ? r + TILE : ROWS;
                int ok = bf ? quant_rows_bf16(&q, r, r1, wb + r * COLS, COLS, &st)
                            : quant_rows_f32(&q, r, r1, w + r * COLS, COLS, &st);
                if (!ok) {
                    fprintf(stderr, "quant_dump: %s\n", st.msg);
                    return 1;
                }
            }
            quant_dequant_f32(&q, 0, ROWS, 0, COLS, dq, COLS);
            char name[64];
            const char *f = quant_name(fmts[k]), *s = bf ? "bf16" : "f32";
            snprintf(name, sizeof name, "%s_%s.q", f, s);
            put(dir, name, codes, quant_codes_bytes(fmts[k], ROWS, COLS));
            snprintf(name, sizeof name, "%s_%s.s", f, s);
            put(dir, name, scales, 4 * quant_scales_count(fmts[k], ROWS, COLS));
            snprintf(name, sizeof name, "%s_%s.dq", f, s);
            put(dir, name, dq, sizeof dq);
        }
    printf("%d %d\n", ROWS, COLS);
    return 0;
}
