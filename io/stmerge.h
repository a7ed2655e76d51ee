/* Helpers of the streaming adapter merge (`shardlora merge`): the row-local LoRA / DoRA merge
 * of a block of weight rows in F32, rounding F32 to a file dtype (BF16 / F16: round to
 * nearest even, as torch's .to() does), and positioned whole-buffer reads and writes.
 * Legend: nr rows of the block, I columns (the linear's input dim), r the module's rank. */
#ifndef SHARDLORA_IO_STMERGE_H
#define SHARDLORA_IO_STMERGE_H

#include <stddef.h>
#include <stdint.h>

#include "../runtime/err.h"
#include "safetensors.h"

/* In place, for each row o of W, PEFT's merge (peft/tuners/lora/layer.py, Linear.merge;
 * DoRA's norm from peft/tuners/lora/dora.py, DoraLinearLayer.get_weight_norm):
 *   W_o <- W_o + (B_o A) * s                        delta = (B @ A) * scaling; W + delta
 *   DoRA (mag != NULL), after the line above:
 *   W_o <- (m_o / ||W_o||) W_o                      dora_factor = m / ||W + delta||_row;
 *                                                   dora_factor.view(-1, 1) * (W + delta)
 * W [nr, I] F32, A [r, I], B [nr, r], mag [nr] or NULL. Each element is summed in the same
 * order (k = 0..r-1) whatever nr, the block's first row or the thread count, so a merge
 * split over any number of ranks writes identical bytes. Returns the number of rows that
 * came out non-finite or had a zero DoRA norm (0: all good). threads >= 1 (OpenMP). */
int64_t stm_merge_rows(float *W, int64_t nr, int64_t I, const float *A, const float *B, int r,
                       float s, const float *mag, int threads);

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
