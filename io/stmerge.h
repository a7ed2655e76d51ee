/* Format-level helpers of the streaming adapter merge (`shardlora merge`): rounding F32 to a
 * file dtype (BF16 / F16: round to nearest even, as torch's .to() does) and positioned
 * whole-buffer reads and writes. The merge formulas are the adapter kinds' (model/lora.c,
 * dora.c, vera.c: AdioKindIo's merge_*), not io/'s. */
#ifndef SHARDLORA_IO_STMERGE_H
#define SHARDLORA_IO_STMERGE_H

#include <stddef.h>
#include <stdint.h>

#include "../runtime/err.h"
#include "safetensors.h"

/* IEEE binary16 of f, round to nearest even; overflow gives inf, NaN stays a quiet NaN. */
uint16_t stm_f32_to_f16(float f);
/* n values to dtype dt (F32 copy, BF16 or F16 rounded); dst may not alias src. */
void stm_from_f32(void *dst, StDtype dt, const float *src, size_t n);

/* Exactly len bytes at byte off, looping over short transfers and EINTR; 0 with st naming
 * path and the offset on failure (e.g. ENOSPC on write). */
int stm_pread_full(int fd, const char *path, void *buf, size_t len, uint64_t off, ErrStatus *st);
int stm_pwrite_full(int fd, const char *path, const void *buf, size_t len, uint64_t off,
                    ErrStatus *st);

#endif
