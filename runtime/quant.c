/* Frozen-weight storage formats (see quant.h): int8 per output channel and bitsandbytes' NF4,
 * quantised from F32 / BF16 rows and dequantised in tiles into F32 / BF16 panels. */
#include "quant.h"

#include <math.h>
#include <string.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "gemm.h"

#define QB QUANT_NF4_BLOCK

/* NF4 code values: bitsandbytes' create_normal_map(offset=0.9677083) = the QLoRA paper's
 * Appendix E table (quantiles of N(0, 1), normalised to [-1, 1], exact zero). */
static const float quant_nf4_code[16] = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

/* The thresholds of bitsandbytes' dQuantizeNF4 decision tree, as it writes them: the midpoint
 * of adjacent code values in double, as a decimal F32 literal. Such a midpoint is exactly
 * halfway between two F32 values and the literal's digits pick the side, so 4 of these are
 * not the ties-to-even rounding of the midpoint; tests/reference/quant_ref.py derives them. */
static const float quant_nf4_mid[15] = {
    -0.8480964004993439f,  -0.6106329262256622f,  -0.4599952697753906f,   -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
    0.1202552504837513f,   0.2035212516784668f,   0.2920137718319893f,    0.3893125355243683f,
    0.5016634166240692f,   0.6427869200706482f,   0.8614784181118011f,
};

const float *quant_nf4_table(void) {
    return quant_nf4_code;
}

const float *quant_nf4_thresholds(void) {
    return quant_nf4_mid;
}

const char *quant_name(QuantFormat f) {
    switch (f) {
    case QUANT_BF16:
        return "bf16";
    case QUANT_INT8:
        return "int8";
    case QUANT_NF4:
        return "nf4";
    }
    return "?";
}

int quant_parse(const char *s, QuantFormat *f) {
    static const QuantFormat all[] = {QUANT_BF16, QUANT_INT8, QUANT_NF4};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (s && strcmp(s, quant_name(all[i])) == 0) {
            *f = all[i];
            return 1;
        }
    return 0;
}

int quant_check_shape(QuantFormat f, int64_t rows, int64_t cols, ErrStatus *st) {
    if (rows < 1 || cols < 1)
        return err_status_set(st, "cannot store a [%lld, %lld] weight as %s: empty shape",
                              (long long)rows, (long long)cols, quant_name(f));
    if (f == QUANT_NF4 && cols % QB != 0)
        return err_status_set(st,
                              "cannot store a [%lld, %lld] weight as nf4: the columns must be a "
                              "multiple of the block size %d",
                              (long long)rows, (long long)cols, QB);
    err_status_ok(st);
    return 1;
}

size_t quant_codes_bytes(QuantFormat f, int64_t rows, int64_t cols) {
    size_t n = (size_t)rows * (size_t)cols;
    return f == QUANT_BF16 ? 2 * n : f == QUANT_INT8 ? n : (n + 1) / 2;
}

size_t quant_scales_count(QuantFormat f, int64_t rows, int64_t cols) {
    if (f == QUANT_INT8) return (size_t)rows;
    if (f == QUANT_NF4) return (size_t)rows * (size_t)((cols + QB - 1) / QB);
    return 0;
}

size_t quant_bytes(QuantFormat f, int64_t rows, int64_t cols) {
    return quant_codes_bytes(f, rows, cols) + sizeof(float) * quant_scales_count(f, rows, cols);
}

/* ---- quantisation ------------------------------------------------------------------------ */

/* The rows of a source in either dtype: row i (relative to r0), columns [c, c + n) as F32. */
typedef struct {
    const float *f32;
    const uint16_t *bf16;
    int64_t ld;
} QuantSrc;

static void quant_load(float *dst, const QuantSrc *s, int64_t i, int64_t c, int64_t n) {
    if (s->f32) {
        memcpy(dst, s->f32 + i * s->ld + c, (size_t)n * sizeof *dst);
    } else {
        const uint16_t *p = s->bf16 + i * s->ld + c;
        for (int64_t j = 0; j < n; j++)
            dst[j] = gemm_bf16_to_f32(p[j]);
    }
}

/* max |x|; *bad |= x is not finite. */
static float quant_absmax(const float *x, int64_t n, int *bad) {
    float m = 0.0f;
    int nonfinite = 0;
    for (int64_t j = 0; j < n; j++) {
        float a = fabsf(x[j]);
        nonfinite |= !(a <= 3.4028234663852886e38f);
        m = a > m ? a : m;
    }
    *bad |= nonfinite;
    return m;
}

static void quant_check_rows(const QuantWeight *w, QuantFormat f, int64_t r0, int64_t r1,
                             int64_t ld) {
    ErrStatus st;
    SL_CHECK(w->format == f, "quant: weight is %s, not %s", quant_name(w->format), quant_name(f));
    SL_CHECK(quant_check_shape(w->format, w->rows, w->cols, &st), "%s", st.msg);
    SL_CHECK(0 <= r0 && r0 <= r1 && r1 <= w->rows, "quant: rows [%lld, %lld) of %lld",
             (long long)r0, (long long)r1, (long long)w->rows);
    SL_CHECK(ld >= w->cols, "quant: ld %lld < cols %lld", (long long)ld, (long long)w->cols);
}

static int quant_int8_rows(QuantWeight *w, int64_t r0, int64_t r1, const QuantSrc *s,
                           ErrStatus *st) {
    quant_check_rows(w, QUANT_INT8, r0, r1, s->ld);
    float buf[QB];
    for (int64_t r = r0; r < r1; r++) {
        float absmax = 0.0f;
        int bad = 0;
        for (int64_t c = 0; c < w->cols; c += QB) {
            int64_t n = w->cols - c < QB ? w->cols - c : QB;
            quant_load(buf, s, r - r0, c, n);
            float m = quant_absmax(buf, n, &bad);
            absmax = m > absmax ? m : absmax;
        }
        if (bad) return err_status_set(st, "row %lld holds a non-finite value", (long long)r);
        float scale = absmax / 127.0f;
        w->scales[r] = scale;
        int8_t *q = (int8_t *)w->codes + r * w->cols;
        if (scale == 0.0f) {
            memset(q, 0, (size_t)w->cols);
            continue;
        }
        for (int64_t c = 0; c < w->cols; c += QB) {
            int64_t n = w->cols - c < QB ? w->cols - c : QB;
            quant_load(buf, s, r - r0, c, n);
            for (int64_t j = 0; j < n; j++) {
                float v = rintf(buf[j] / scale); /* half to even, as torch.round */
                v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
                q[c + j] = (int8_t)v;
            }
        }
    }
    err_status_ok(st);
    return 1;
}

/* Index of the nearest code: the number of midpoints strictly below x (bitsandbytes'
 * dQuantizeNF4 ties to the lower code). Branch-free: 15 compares. */
static inline unsigned quant_nf4_index(float x) {
    unsigned k = 0;
    for (int i = 0; i < 15; i++)
        k += x > quant_nf4_mid[i];
    return k;
}

static int quant_nf4_rows(QuantWeight *w, int64_t r0, int64_t r1, const QuantSrc *s,
                          ErrStatus *st) {
    quant_check_rows(w, QUANT_NF4, r0, r1, s->ld);
    const int64_t nb = w->cols / QB;
    float buf[QB];
    for (int64_t r = r0; r < r1; r++) {
        for (int64_t b = 0; b < nb; b++) {
            int bad = 0;
            quant_load(buf, s, r - r0, b * QB, QB);
            float absmax = quant_absmax(buf, QB, &bad);
            if (bad) return err_status_set(st, "row %lld holds a non-finite value", (long long)r);
            w->scales[r * nb + b] = absmax;
            /* bitsandbytes multiplies by the F32 reciprocal; an all-zero block maps to 0.0. */
            float inv = absmax > 0.0f ? 1.0f / absmax : 0.0f;
            uint8_t *q = w->codes + (r * w->cols + b * QB) / 2;
            for (int j = 0; j < QB / 2; j++) {
                unsigned hi = quant_nf4_index(buf[2 * j] * inv);
                unsigned lo = quant_nf4_index(buf[2 * j + 1] * inv);
                q[j] = (uint8_t)(hi << 4 | lo);
            }
        }
    }
    err_status_ok(st);
    return 1;
}

int quant_int8_rows_f32(QuantWeight *w, int64_t r0, int64_t r1, const float *src, int64_t ld,
                        ErrStatus *st) {
    QuantSrc s = {src, NULL, ld};
    return quant_int8_rows(w, r0, r1, &s, st);
}

int quant_int8_rows_bf16(QuantWeight *w, int64_t r0, int64_t r1, const uint16_t *src, int64_t ld,
                         ErrStatus *st) {
    QuantSrc s = {NULL, src, ld};
    return quant_int8_rows(w, r0, r1, &s, st);
}

int quant_nf4_rows_f32(QuantWeight *w, int64_t r0, int64_t r1, const float *src, int64_t ld,
                       ErrStatus *st) {
    QuantSrc s = {src, NULL, ld};
    return quant_nf4_rows(w, r0, r1, &s, st);
}

int quant_nf4_rows_bf16(QuantWeight *w, int64_t r0, int64_t r1, const uint16_t *src, int64_t ld,
                        ErrStatus *st) {
    QuantSrc s = {NULL, src, ld};
    return quant_nf4_rows(w, r0, r1, &s, st);
}

/* bf16 storage: a copy, or F32 rounded to nearest even. */
static int quant_bf16_rows(QuantWeight *w, int64_t r0, int64_t r1, const QuantSrc *s,
                           ErrStatus *st) {
    quant_check_rows(w, QUANT_BF16, r0, r1, s->ld);
    for (int64_t r = r0; r < r1; r++) {
        uint16_t *q = (uint16_t *)(void *)w->codes + r * w->cols;
        if (s->bf16) {
            memcpy(q, s->bf16 + (r - r0) * s->ld, (size_t)w->cols * sizeof *q);
        } else {
            const float *p = s->f32 + (r - r0) * s->ld;
            for (int64_t c = 0; c < w->cols; c++)
                q[c] = gemm_f32_to_bf16(p[c]);
        }
    }
    err_status_ok(st);
    return 1;
}

int quant_rows_f32(QuantWeight *w, int64_t r0, int64_t r1, const float *src, int64_t ld,
                   ErrStatus *st) {
    QuantSrc s = {src, NULL, ld};
    return w->format == QUANT_INT8  ? quant_int8_rows(w, r0, r1, &s, st)
           : w->format == QUANT_NF4 ? quant_nf4_rows(w, r0, r1, &s, st)
                                    : quant_bf16_rows(w, r0, r1, &s, st);
}

int quant_rows_bf16(QuantWeight *w, int64_t r0, int64_t r1, const uint16_t *src, int64_t ld,
                    ErrStatus *st) {
    QuantSrc s = {NULL, src, ld};
    return w->format == QUANT_INT8  ? quant_int8_rows(w, r0, r1, &s, st)
           : w->format == QUANT_NF4 ? quant_nf4_rows(w, r0, r1, &s, st)
                                    : quant_bf16_rows(w, r0, r1, &s, st);
}

/* ---- dequantisation ---------------------------------------------------------------------- */

/* F32 -> BF16, nearest even, inlined so the panel loops vectorise. Dequantised values are
 * finite (finite scales times finite codes), so gemm_f32_to_bf16's NaN case cannot arise and
 * the result equals it. */
static inline uint16_t quant_round_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static void quant_check_tile(const QuantWeight *w, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                             int64_t ld) {
    SL_CHECK(0 <= r0 && r0 <= r1 && r1 <= w->rows && 0 <= c0 && c0 <= c1 && c1 <= w->cols,
             "quant: tile [%lld, %lld) x [%lld, %lld) of [%lld, %lld]", (long long)r0,
             (long long)r1, (long long)c0, (long long)c1, (long long)w->rows, (long long)w->cols);
    SL_CHECK(ld >= c1 - c0, "quant: ld %lld < tile width %lld", (long long)ld,
             (long long)(c1 - c0));
    SL_CHECK(w->format != QUANT_NF4 || (c0 % QB == 0 && c1 % QB == 0),
             "quant: nf4 tile columns [%lld, %lld) are not multiples of %d", (long long)c0,
             (long long)c1, QB);
}

/* One row of the tile into F32: out[j] = W[r, c0 + j], j < n. */
/* One NF4 block: 32 bytes of codes -> 64 values code[i] * s (the first of each byte's pair
 * from its high nibble). The AVX2 path looks the 16 codes up with two 8-entry permutes and
 * computes the same F32 products as the plain loop, bit for bit. */
static void quant_nf4_block(const uint8_t *qb, float s, float *o) {
#if defined(__AVX2__)
    const __m256 lo = _mm256_loadu_ps(quant_nf4_code), hi = _mm256_loadu_ps(quant_nf4_code + 8);
    const __m256i shift = _mm256_setr_epi32(4, 0, 4, 0, 4, 0, 4, 0);
    const __m256i low4 = _mm256_set1_epi32(15), seven = _mm256_set1_epi32(7);
    const __m256 vs = _mm256_set1_ps(s);
    for (int j = 0; j < QB / 2; j += 4) {
        int32_t four;
        memcpy(&four, qb + j, sizeof four);
        const __m128i x = _mm_cvtsi32_si128(four);
        const __m128i dup = _mm_unpacklo_epi8(x, x); /* b0 b0 b1 b1 b2 b2 b3 b3 */
        __m256i idx = _mm256_cvtepu8_epi32(dup);
        idx = _mm256_and_si256(_mm256_srlv_epi32(idx, shift), low4);
        const __m256 a = _mm256_permutevar8x32_ps(lo, idx), b = _mm256_permutevar8x32_ps(hi, idx);
        const __m256 v =
            _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_cmpgt_epi32(idx, seven)));
        _mm256_storeu_ps(o + 2 * j, _mm256_mul_ps(v, vs));
    }
#else
    for (int j = 0; j < QB / 2; j++) {
        o[2 * j] = quant_nf4_code[qb[j] >> 4] * s;
        o[2 * j + 1] = quant_nf4_code[qb[j] & 15] * s;
    }
#endif
}

static void quant_row_f32(const QuantWeight *w, int64_t r, int64_t c0, int64_t n, float *out) {
    if (w->format == QUANT_INT8) {
        const int8_t *q = (const int8_t *)w->codes + r * w->cols + c0;
        const float s = w->scales[r];
        for (int64_t j = 0; j < n; j++)
            out[j] = (float)q[j] * s;
    } else if (w->format == QUANT_NF4) {
        const uint8_t *q = w->codes + (r * w->cols + c0) / 2;
        const float *absmax = w->scales + (r * w->cols + c0) / QB;
        for (int64_t b = 0; b < n / QB; b++)
            quant_nf4_block(q + b * (QB / 2), absmax[b], out + b * QB);
    } else {
        const uint16_t *q = (const uint16_t *)(const void *)w->codes + r * w->cols + c0;
        for (int64_t j = 0; j < n; j++)
            out[j] = gemm_bf16_to_f32(q[j]);
    }
}

void quant_dequant_f32(const QuantWeight *w, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                       float *dst, int64_t ld) {
    quant_check_tile(w, r0, r1, c0, c1, ld);
    for (int64_t r = r0; r < r1; r++)
        quant_row_f32(w, r, c0, c1 - c0, dst + (r - r0) * ld);
}

void quant_dequant_bf16(const QuantWeight *w, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                        uint16_t *dst, int64_t ld) {
    quant_check_tile(w, r0, r1, c0, c1, ld);
    float buf[QB];
    for (int64_t r = r0; r < r1; r++) {
        uint16_t *o = dst + (r - r0) * ld;
        if (w->format == QUANT_BF16) {
            memcpy(o, (const uint16_t *)(const void *)w->codes + r * w->cols + c0,
                   (size_t)(c1 - c0) * sizeof *o);
            continue;
        }
        /* QB columns at a time through a stack buffer (nf4 tiles are whole blocks). */
        for (int64_t c = c0; c < c1; c += QB) {
            int64_t n = c1 - c < QB ? c1 - c : QB;
            quant_row_f32(w, r, c, n, buf);
            for (int64_t j = 0; j < n; j++)
                o[c - c0 + j] = quant_round_bf16(buf[j]);
        }
    }
}
