/* Flat adapter parameter buffers with one layout table (STYLE.md 5): values, gradients and
 * optimizer state share the layout, the optimizer is one loop and the gradient sync is one
 * call per region. Region PARAM_SYNC_DP (sharded factors: all-reduced over dp_comm) comes
 * first, region PARAM_SYNC_WORLD (replicated factors: TP partial sums + DP sum in one
 * all-reduce over world) second (DESIGN.md §4). */
#ifndef SHARDLORA_MODEL_PARAMS_H
#define SHARDLORA_MODEL_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#include "../runtime/mem.h"

typedef enum { PARAM_SYNC_DP = 0, PARAM_SYNC_WORLD = 1, PARAM_NSYNC } ParamSync;

typedef struct {
    char name[192];        /* PEFT key, e.g. base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight */
    int ndim;              /* 1 or 2 */
    int64_t grows, gcols;  /* global shape [rows, cols] (1-D: rows = 1) */
    int64_t r0, nr;        /* this rank's rows in global coordinates */
    int64_t c0, nc;        /* this rank's columns */
    ParamSync sync;
    int replicated_tp;     /* the same values on every TP rank (count once in norms) */
    size_t offset;         /* into the flat buffers, in floats; set by params_finalize */
} ParamEntry;

typedef struct {
    int n, cap;
    ParamEntry *e;
    size_t region_off[PARAM_NSYNC];   /* start of each region (floats) */
    size_t region_len[PARAM_NSYNC];
    size_t total;                     /* floats */
    float *values;                    /* [total] */
    float *grads;                     /* [total] */
} ParamTable;

void params_init(ParamTable *p);
/* Declares a tensor; returns its index. Offsets are assigned by params_finalize. */
int params_add(ParamTable *p, const char *name, int ndim, int64_t grows, int64_t gcols,
               int64_t r0, int64_t nr, int64_t c0, int64_t nc, ParamSync sync, int replicated_tp);
/* Lays out the regions and allocates values + grads (MEM_ADAPTER). */
void params_finalize(ParamTable *p, MemCtx *m);
void params_free(ParamTable *p, MemCtx *m);
static inline float *params_value(const ParamTable *p, int i) {
    return p->values + p->e[i].offset;
}
static inline float *params_grad(const ParamTable *p, int i) {
    return p->grads + p->e[i].offset;
}
static inline size_t params_numel(const ParamEntry *e) {
    return (size_t)(e->nr * e->nc);
}
/* Index of a name or -1. */
int params_find(const ParamTable *p, const char *name);

#endif
