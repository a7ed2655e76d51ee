/* CRC-32C (Castagnoli), the checksum of checkpoint chunks and manifests. Software,
 * slice-by-8; reflected polynomial 0x82F63B78 (0x1EDC6F41 bit-reversed), initial value and
 * final XOR 0xFFFFFFFF, as in iSCSI (RFC 3720 appendix B.4) and ext4. Check value:
 * crc32c("123456789") = 0xE3069283. */
#ifndef SHARDLORA_IO_CRC32C_H
#define SHARDLORA_IO_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* CRC of len bytes. */
uint32_t crc32c(const void *data, size_t len);

/* Incremental form: crc = crc32c_update(0, a, na); crc = crc32c_update(crc, b, nb) equals
 * crc32c(a||b). Start from 0 (the pre/post inversion is inside). */
uint32_t crc32c_update(uint32_t crc, const void *data, size_t len);

#endif
