/* F32 -> BF16 / F16 rounding and positioned I/O for the streaming merge (see stmerge.h). */
#include "stmerge.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "../runtime/gemm.h"

/* Linux transfers at most ~2 GiB per call; stay well below. */
#define STM_IO_MAX ((size_t)1 << 30)

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
        for (size_t i = 0; i < n; i++)
            d[i] = gemm_f32_to_bf16(src[i]);
    } else {
        SL_CHECK(dt == ST_F16, "stm_from_f32: dtype %s is not a float type", st_dtype_name(dt));
        uint16_t *d = dst;
        for (size_t i = 0; i < n; i++)
            d[i] = stm_f32_to_f16(src[i]);
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
            return err_status_set(st,
                                  "%s: unexpected end of file at byte %" PRIu64 " (file shrank?)",
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
