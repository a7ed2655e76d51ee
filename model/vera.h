/* VeRA's shared frozen projections (model/vera.c), for export: PEFT's VERA format stores them
 * as base_model.vera_A [r, max_in] and base_model.vera_B [max_out, r] (save_projection). */
#ifndef SHARDLORA_MODEL_VERA_H
#define SHARDLORA_MODEL_VERA_H

#include <stdint.h>

#include "params.h"

/* The projections of one model (vera.c keeps one per ParamTable). */
typedef struct {
    const ParamTable *pt;     /* the model's table (the key) */
    int r;
    int64_t max_in, max_out;  /* maxima over the adapted modules (PEFT's _find_dim) */
    uint64_t seed;
    int sealed;               /* dimensions final (a slot has allocated) */
    int nalloc;               /* slots holding A and B */
    float *A;                 /* [r, max_in] while a slot is allocated, else NULL */
    float *B;                 /* [max_out, r] */
} VeraProj;

/* The projections of the VeRA slots declared on pt, or NULL (no VeRA slot). */
const VeraProj *vera_proj(const ParamTable *pt);
/* Element (row, col) of vera_A (tensor 0) or vera_B (tensor 1) for run seed `seed`: Philox
 * (PHILOX_VERA_PROJ) keyed by (row, col, tensor), uniform in +-sqrt(6 / max_in) for A and
 * +-sqrt(6 / r) for B (PEFT's kaiming init with gain sqrt(2)). */
float vera_proj_value(uint64_t seed, int tensor, int64_t row, int64_t col, int r, int64_t max_in);
/* dst [rows, cols] = the leading block of tensor 0 (A) or 1 (B). */
void vera_proj_fill(float *dst, uint64_t seed, int tensor, int64_t rows, int64_t cols, int r,
                    int64_t max_in);

#endif
