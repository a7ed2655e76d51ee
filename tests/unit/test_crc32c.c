/* Unit test of io/crc32c: the published check value and the iSCSI test vectors of RFC 3720
 * appendix B.4, and the slice-by-8 path against a bit-at-a-time reference on random data at
 * every alignment and split point (incremental use). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "io/crc32c.h"
#include "tests/unit/check.h"

/* One bit at a time, straight from the definition (reflected polynomial 0x82F63B78). */
static uint32_t crc_ref(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    }
    return ~c;
}

static void expect(const char *name, uint32_t got, uint32_t want) {
    CHECK_TRUE(got == want, "%s: got 0x%08X, want 0x%08X", name, got, want);
    if (got == want) printf("PASS %-40s 0x%08X\n", name, got);
}

int main(void) {
    uint8_t b[32];
    expect("\"123456789\"", crc32c("123456789", 9), 0xE3069283u);
    expect("empty", crc32c("", 0), 0x00000000u);
    memset(b, 0, sizeof b);
    expect("32 zero bytes (RFC 3720 B.4)", crc32c(b, 32), 0x8A9136AAu);
    memset(b, 0xFF, sizeof b);
    expect("32 0xFF bytes (RFC 3720 B.4)", crc32c(b, 32), 0x62A8AB43u);
    for (int i = 0; i < 32; i++)
        b[i] = (uint8_t)i;
    expect("0x00..0x1F (RFC 3720 B.4)", crc32c(b, 32), 0x46DD794Eu);
    for (int i = 0; i < 32; i++)
        b[i] = (uint8_t)(31 - i);
    expect("0x1F..0x00 (RFC 3720 B.4)", crc32c(b, 32), 0x113FDB5Cu);

    /* Random data: every start offset (alignment), every length up to 300, and every split
     * of a 300-byte buffer into two updates. */
    static uint8_t buf[512];
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < sizeof buf; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (uint8_t)x;
    }
    int bad = 0;
    for (size_t off = 0; off < 8; off++)
        for (size_t n = 0; n <= 300; n++)
            bad += crc32c(buf + off, n) != crc_ref(buf + off, n);
    CHECK_TRUE(bad == 0, "%d (offset, length) cases differ from the bitwise reference", bad);
    uint32_t whole = crc_ref(buf, 300);
    int bad_split = 0;
    for (size_t k = 0; k <= 300; k++)
        bad_split += crc32c_update(crc32c_update(0, buf, k), buf + k, 300 - k) != whole;
    CHECK_TRUE(bad_split == 0, "%d split points give a different CRC", bad_split);
    printf("%s slice-by-8 vs bitwise: %d mismatches; incremental: %d mismatches\n",
           bad + bad_split ? "FAIL" : "PASS", bad, bad_split);
    return check_finish();
}
