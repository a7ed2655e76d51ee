/* VeRA's shared frozen projections (model/vera.c), for export and `shardlora merge`: PEFT's
 * VERA format stores them as base_model.vera_A [r, max_in] and base_model.vera_B
 * [max_out, r] (save_projection), or regenerates them from projection_prng_key. */
#ifndef SHARDLORA_MODEL_VERA_H
#define SHARDLORA_MODEL_VERA_H

#include <stdint.h>

/* A [r, max_in] and B [max_out, r] as PEFT makes them for projection_prng_key `key` (torch's
 * CPU generator, kaiming-uniform with gain sqrt(2): A first, then B). */
void vera_proj_fill(float *A, float *B, uint64_t key, int r, int64_t max_in, int64_t max_out);

#endif
