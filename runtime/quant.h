/* Storage formats of the frozen base weights (issue 18, --base-dtype bf16|int8|nf4): quantise
 * rows of an F32 or BF16 weight, dequantise tiles into F32 or BF16 panels for the GEMMs.
 *
 * Dimensions: a weight W [rows, cols] is row-major in PyTorch's Linear layout [O, I], so a row
 * is an output channel. B = QUANT_NF4_BLOCK = 64 values per NF4 block.
 *
 * Formats (bit-exact with tests/reference/quant_ref.py, which implements the same rules in
 * torch independently):
 *  - bf16: W rounded to BF16 (nearest even), uint16_t [rows, cols]; no scales.
 *  - int8: symmetric per output channel (LLM.int8()'s row-wise absmax, Dettmers et al. 2022):
 *      scale[r] = absmax(W[r, :]) / 127 (F32), q = round(W / scale[r]) clamped to [-127, 127],
 *      dequantised q * scale[r]. The division and the rounding are in F32; the rounding is half
 *      to even (rintf in the default mode), because torch.round, which the PyTorch reference
 *      uses, rounds half to even. An all-zero row has scale 0 and q 0 (dequantises to 0).
 *  - nf4: bitsandbytes' NF4 (QLoRA, Dettmers et al. 2023): blocks of B consecutive values of a
 *      row, absmax per block (F32), each value times 1/absmax (the reciprocal in F32, then a
 *      product, as bitsandbytes' kQuantizeBlockwise does) mapped to the nearest of the 16 NF4
 *      code values. "Nearest" is bitsandbytes' dQuantizeNF4: compare with the 15 midpoints of
 *      adjacent code values as its F32 literals (4 of them one F32 step off the ties-to-even
 *      rounding of the exact midpoint, see quant.c), index = number of thresholds strictly
 *      below the value, so a value exactly on a threshold takes the lower code. Two 4-bit indices
 * per byte, the first element in the high nibble (as bitsandbytes packs them). Dequantised code[i]
 * * absmax (F32). An all-zero block has absmax 0 and every index 7 (code 0.0); bitsandbytes' CUDA
 * kernel computes 0 * (1/0) = NaN there and stores index 0 (-1.0), which also dequantises to zero
 * (-0.0): the values agree, the indices need not. Shape rule: cols must be a multiple of 64, so
 * blocks never cross rows and a row range is whole blocks (every Llama / Qwen projection and its
 * tensor-parallel shards qualify; padding would change the block boundaries relative to
 * bitsandbytes' flat blocking). Double quantisation of the absmax values (QLoRA's second level) is
 * not done: the issue makes it optional; the F32 absmax costs 0.5 bits per value, which QLoRA's
 * double quantisation would cut to 0.127 (QLoRA section 3), a small part of 4.5 bits. int8 and nf4
 * refuse non-finite source values (the status names the row): absmax and the scale would be
 * meaningless. bf16 stores what it is given.
 *
 * Nothing here allocates: the caller owns codes and scales, sized by quant_codes_bytes and
 * quant_scales_count (quant_bytes is their sum). */
#ifndef SHARDLORA_RUNTIME_QUANT_H
#define SHARDLORA_RUNTIME_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef enum { QUANT_BF16 = 0, QUANT_INT8 = 1, QUANT_NF4 = 2 } QuantFormat;

#define QUANT_NF4_BLOCK 64

/* A quantised weight W [rows, cols]; codes and scales point into caller-owned memory. */
typedef struct {
    QuantFormat format;
    int64_t rows, cols;
    uint8_t *codes; /* bf16: uint16_t [rows, cols]; int8: int8_t [rows, cols];
                       nf4: [rows, cols / 2], two indices per byte, first in the high nibble */
    float *scales;  /* bf16: NULL; int8: [rows]; nf4: absmax [rows, cols / B] */
} QuantWeight;

/* "bf16" | "int8" | "nf4". */
const char *quant_name(QuantFormat f);
/* Returns 1 and sets *f for a known name, else 0. */
int quant_parse(const char *s, QuantFormat *f);

/* 1 if a [rows, cols] weight can be stored in f, else 0 with st naming the shape and the rule
 * (rows, cols >= 1; nf4: cols % 64 == 0). */
int quant_check_shape(QuantFormat f, int64_t rows, int64_t cols, ErrStatus *st);
/* Bytes of codes, the number of F32 scales, and their sum in bytes (codes + 4 * scales). */
size_t quant_codes_bytes(QuantFormat f, int64_t rows, int64_t cols);
size_t quant_scales_count(QuantFormat f, int64_t rows, int64_t cols);
size_t quant_bytes(QuantFormat f, int64_t rows, int64_t cols);

/* The 16 NF4 code values, ascending (bitsandbytes' table), and the 15 thresholds between
 * them: index = number of thresholds strictly below the normalised value. */
const float *quant_nf4_table(void);
const float *quant_nf4_thresholds(void);

/* Quantise rows [r0, r1) of w from src: row r is src + (r - r0) * ld, ld >= w->cols, so a rank
 * can pass one tile of its shard at a time. Writes only those rows' codes and scales. Returns
 * 1, or 0 with st naming the row when it holds a non-finite value. One function per format
 * and source dtype; quant_rows_* dispatch on w->format. Contract (SL_CHECK): the shape passes
 * quant_check_shape, 0 <= r0 <= r1 <= rows. */
int quant_int8_rows_f32(QuantWeight *w, int64_t r0, int64_t r1, const float *src, int64_t ld,
                        ErrStatus *st);
int quant_int8_rows_bf16(QuantWeight *w, int64_t r0, int64_t r1, const uint16_t *src, int64_t ld,
                         ErrStatus *st);
int quant_nf4_rows_f32(QuantWeight *w, int64_t r0, int64_t r1, const float *src, int64_t ld,
                       ErrStatus *st);
int quant_nf4_rows_bf16(QuantWeight *w, int64_t r0, int64_t r1, const uint16_t *src, int64_t ld,
                        ErrStatus *st);
int quant_rows_f32(QuantWeight *w, int64_t r0, int64_t r1, const float *src, int64_t ld,
                   ErrStatus *st);
int quant_rows_bf16(QuantWeight *w, int64_t r0, int64_t r1, const uint16_t *src, int64_t ld,
                    ErrStatus *st);

/* Dequantise the tile W[r0:r1, c0:c1] into a row-major panel: dst[(r - r0) * ld + (c - c0)],
 * ld >= c1 - c0. The BF16 panel is the F32 panel rounded to nearest even (= gemm_f32_to_bf16
 * of it). Any sub-tile equals the same part of the whole dequantised matrix. Contract
 * (SL_CHECK): 0 <= r0 <= r1 <= rows, 0 <= c0 <= c1 <= cols; nf4: c0, c1 multiples of 64. */
void quant_dequant_f32(const QuantWeight *w, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                       float *dst, int64_t ld);
void quant_dequant_bf16(const QuantWeight *w, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                        uint16_t *dst, int64_t ld);

#endif
