/* LoRA's pieces that the kinds built on LoRA's factors share (model/lora.c): the merge
 * formula (DoRA's and VeRA's merges are LoRA's plus their own factors) and the planning and
 * reading of lora_A / lora_B in a PEFT file for `shardlora merge`. The kinds themselves are
 * adapter_lora / adapter_lorafa (adapter.h).
 *
 * Legend: nr rows of a block, I columns (the linear's input dim), r the module's rank. */
#ifndef SHARDLORA_MODEL_LORA_H
#define SHARDLORA_MODEL_LORA_H

#include <stdint.h>

#include "adapter.h"
#include "adapter_io.h"

/* PEFT's LoRA merge (peft/tuners/lora/layer.py, Linear.merge: delta = (B @ A) * scaling;
 * W + delta), in place: W_o [I] += (B_o A) * s for each row o of W [nr, I], A [r, I],
 * B [nr, r]. Each element is summed in the same order (k = 0..r-1) whatever nr, the block's
 * first row or the thread count, so a merge split over any ranks or shards writes identical
 * values. Returns the number of rows with a non-finite value. threads >= 1 (OpenMP). */
int64_t lora_merge_rows(float *W, int64_t nr, int64_t I, const float *A, const float *B, int r,
                        float s, int threads);

/* merge_plan of the kinds with LoRA factors: it->module's lora_A [r, cols] and lora_B
 * [rows, r] (r, s from rank_pattern / alpha_pattern), and lora_magnitude_vector [rows] when
 * `magnitude` (DoRA; refused when present otherwise). it->t = {A, B, magnitude or NULL};
 * item_floats r x cols (A), row_floats r (+ 1 with the magnitude). */
int lora_merge_plan_factors(AdioMergeItem *it, const PeftAdapter *a, unsigned char *used,
                            int magnitude, ErrStatus *st);
/* merge_begin of those kinds: lora_A read whole into ibuf [r, cols]. */
int lora_merge_begin(const AdioMergeItem *it, PeftAdapter *a, const void *shared, float *ibuf,
                     ErrStatus *st);
/* Rows [row0, row0 + k) of lora_B into B [k, r]. */
int lora_merge_read_b(const AdioMergeItem *it, PeftAdapter *a, float *B, int64_t row0, int64_t k,
                      ErrStatus *st);

#endif
