/* CRC-32C, slice-by-8 in software (see crc32c.h). Table k holds the CRC of a byte followed
 * by k zero bytes, so eight input bytes are folded with eight lookups per step
 * (Kounavis & Berry, "A Systematic Approach to Building High Performance Software-based
 * CRC Generators", 2005). */
#include "crc32c.h"

#include <pthread.h>

#define CRC32C_POLY 0x82F63B78u /* Castagnoli 0x1EDC6F41, bit-reversed (LSB-first) */

static uint32_t crc32c_table[8][256];
static pthread_once_t crc32c_once = PTHREAD_ONCE_INIT;

/* Filled once per process; pthread_once makes the first concurrent callers safe. */
static void crc32c_init_tables(void) {
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t c = b;
        for (int i = 0; i < 8; i++)
            c = (c & 1) ? (c >> 1) ^ CRC32C_POLY : c >> 1;
        crc32c_table[0][b] = c;
    }
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t c = crc32c_table[0][b];
        for (int k = 1; k < 8; k++) {
            c = (c >> 8) ^ crc32c_table[0][c & 0xFF];
            crc32c_table[k][b] = c;
        }
    }
}

uint32_t crc32c_update(uint32_t crc, const void *data, size_t len) {
    pthread_once(&crc32c_once, crc32c_init_tables);
    const uint8_t *p = data;
    uint32_t c = ~crc;
    /* Bytes are combined explicitly (not loaded as a uint64), so the result does not
     * depend on the host's byte order or on alignment. */
    while (len >= 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                           (uint32_t)p[3] << 24);
        c = crc32c_table[7][lo & 0xFF] ^ crc32c_table[6][(lo >> 8) & 0xFF] ^
            crc32c_table[5][(lo >> 16) & 0xFF] ^ crc32c_table[4][lo >> 24] ^ crc32c_table[3][p[4]] ^
            crc32c_table[2][p[5]] ^ crc32c_table[1][p[6]] ^ crc32c_table[0][p[7]];
        p += 8;
        len -= 8;
    }
    while (len--)
        c = (c >> 8) ^ crc32c_table[0][(c ^ *p++) & 0xFF];
    return ~c;
}

uint32_t crc32c(const void *data, size_t len) {
    return crc32c_update(0, data, len);
}
