/* Row-local LoRA / DoRA merge, F32 -> BF16 / F16 rounding and positioned I/O (see stmerge.h). */
#include "stmerge.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "../runtime/gemm.h"

/* Columns per block: the accumulator [STM_BLOCK] stays in L1 while the r rows of A stream. */
#define STM_BLOCK 512
/* Linux transfers at most ~2 GiB per call; stay well below. */
#define STM_IO_MAX ((size_t)1 << 30)
/* DoRA's floor of the row norm, as model/dora.c's DORA_EPS */
#define STM_DORA_EPS 1e-12f

/* One row: w += (b A) * s, then the DoRA factor. Returns 1 if the row is bad. */
static int stm_merge_row(float *restrict w, int64_t I, const float *restrict A,
                         const float *restrict b, int r, float s, const float *mag) {
    float acc[STM_BLOCK];
    for (int64_t c0 = 0; c0 < I; c0 += STM_BLOCK) {
        const int64_t n = I - c0 < STM_BLOCK ? I - c0 : STM_BLOCK;
        for (int64_t j = 0; j < n; j++) acc[j] = 0.0f;
        for (int k = 0; k < r; k++) {
            const float bk = b[k];
            const float *restrict a = A + (int64_t)k * I + c0;
            for (int64_t j = 0; j < n; j++) acc[j] += bk * a[j];
        }
        /* PEFT: delta = (B @ A) * scaling, then W + delta */
        for (int64_t j = 0; j < n; j++) w[c0 + j] += acc[j] * s;
    }
    if (mag) {
        /* DoRA (PEFT dora.py get_weight_norm: torch.linalg.norm(W + delta, dim=1)); the sum
         * of squares in double, in column order. */
        double ss = 0.0;
        for (int64_t j = 0; j < I; j++) ss += (double)w[j] * (double)w[j];
        const float norm = (float)sqrt(ss);
        if (!isfinite(norm)) return 1;
        /* an all-zero row (real models have them): the norm floored as in training
         * (model/dora.c DORA_EPS), so the row stays 0 instead of PEFT's 0/0 = NaN */
        const float f = *mag / (norm > STM_DORA_EPS ? norm : STM_DORA_EPS);
        for (int64_t j = 0; j < I; j++) w[j] *= f;
    }
    for (int64_t j = 0; j < I; j++)
        if (!isfinite(w[j])) return 1;
    return 0;
}

int64_t stm_merge_rows(float *W, int64_t nr, int64_t I, const float *A, const float *B, int r,
                       float s, const float *mag, int threads) {
    int64_t bad = 0;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : bad)
    for (int64_t o = 0; o < nr; o++)
        bad += stm_merge_row(W + o * I, I, A, B + o * r, r, s, mag ? mag + o : NULL);
    return bad;
}

uint16_t stm_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    const uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu)); /* NaN */
    /* 65520 = halfway between 65504 (the largest half) and 65536 rounds to even: inf */
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u) {
        /* below 2^-14: a subnormal (or zero) half, mantissa = |f| * 2^24 rounded to nearest
         * even (the scaling is exact; nearbyintf rounds in the default mode, to even);
         * 1024 is the smallest normal's encoding, so the carry is right too. */
        float a;
        memcpy(&a, &ax, 4);
        return (uint16_t)(sign | (uint16_t)nearbyintf(a * 0x1p24f));
    }
    /* normal: re-bias the exponent (127 -> 15) and round the 13 dropped bits to even; a
     * carry into the exponent is the right result */
    uint32_t m = ax + 0xfffu + ((ax >> 13) & 1u);
    m -= (uint32_t)(127 - 15) << 23;
    return (uint16_t)(sign | (m >> 13));
}

void stm_from_f32(void *dst, StDtype dt, const float *src, size_t n) {
    if (dt == ST_F32) {
        memcpy(dst, src, n * sizeof(float));
    } else if (dt == ST_BF16) {
        uint16_t *d = dst;
        for (size_t i = 0; i < n; i++) d[i] = gemm_f32_to_bf16(src[i]);
    } else {
        SL_CHECK(dt == ST_F16, "stm_from_f32: dtype %s is not a float type", st_dtype_name(dt));
        uint16_t *d = dst;
        for (size_t i = 0; i < n; i++) d[i] = stm_f32_to_f16(src[i]);
    }
}

int stm_pread_full(int fd, const char *path, void *buf, size_t len, uint64_t off, ErrStatus *st) {
    unsigned char *p = buf;
    size_t done = 0;
    while (done < len) {
        size_t want = len - done < STM_IO_MAX ? len - done : STM_IO_MAX;
        ssize_t got = pread(fd, p + done, want, (off_t)(off + done));
        if (got < 0 && errno == EINTR) continue;
        if (got < 0)
            return err_status_set(st, "%s: read of %zu bytes at byte %" PRIu64 " failed: %s", path,
                                  len, off + done, strerror(errno));
        if (got == 0)
            return err_status_set(st, "%s: unexpected end of file at byte %" PRIu64 " (file shrank?)",
                                  path, off + done);
        done += (size_t)got;
    }
    return 1;
}

int stm_pwrite_full(int fd, const char *path, const void *buf, size_t len, uint64_t off,
                    ErrStatus *st) {
    const unsigned char *p = buf;
    size_t done = 0;
    while (done < len) {
        size_t want = len - done < STM_IO_MAX ? len - done : STM_IO_MAX;
        ssize_t put = pwrite(fd, p + done, want, (off_t)(off + done));
        if (put < 0 && errno == EINTR) continue;
        if (put <= 0)
            return err_status_set(st, "%s: write of %zu bytes at byte %" PRIu64 " failed: %s", path,
                                  len, off + done, put < 0 ? strerror(errno) : "no progress");
        done += (size_t)put;
    }
    return 1;
}
