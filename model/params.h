/* Flat adapter parameter buffers with one layout table (STYLE.md 5): values, gradients and
 * optimizer state share the layout, the optimizer is one loop and the gradient sync is one
 * call per region (or per layer bucket of a region). Region PARAM_SYNC_DP (sharded factors:
 * all-reduced over dp_comm) comes first, region PARAM_SYNC_WORLD (factors replicated on every
 * TP rank: their TP partial sums and the DP sum in one all-reduce over world) second
 * (DESIGN.md §4), and region PARAM_SYNC_KV (factors replicated on the TP ranks that share a
 * kv head when kv-heads < tp: all-reduced over the world ranks holding that kv head) last.
 * Within a region, tensors are in declaration order (layer-major). Frozen entries
 * (params_set_frozen: LoRA-FA's A, VeRA's shared projections) form a last region
 * PARAM_FROZEN: values only, no gradient, no sync, no optimizer state; gradients and the
 * optimizer cover the first `trainable` floats. */
#ifndef SHARDLORA_MODEL_PARAMS_H
#define SHARDLORA_MODEL_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#include "../parallel/grid.h"
#include "../runtime/mem.h"

typedef enum {
    PARAM_SYNC_DP = 0,
    PARAM_SYNC_WORLD = 1,
    PARAM_SYNC_KV = 2,
    PARAM_FROZEN = 3 /* not a sync class: the region of frozen entries */
} ParamSync;
enum {
    PARAM_NSYNC = 3,   /* the synchronised (trainable) regions come first */
    PARAM_NREGIONS = 4 /* ... and PARAM_FROZEN last */
};

typedef struct {
    char name[192]; /* PEFT key, e.g. base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight
                     */
    int ndim;       /* 1 or 2 */
    int64_t grows, gcols; /* global shape [rows, cols] (1-D: rows = 1) */
    int64_t r0, nr;       /* this rank's rows in global coordinates */
    int64_t c0, nc;       /* this rank's columns */
    ParamSync sync;       /* PARAM_FROZEN once params_set_frozen */
    float lr_scale;       /* learning rate multiplier (1; LoRA+ sets lora_B's to the ratio) */
    int ncopies;          /* TP ranks holding this same slice (1 sharded .. tp replicated);
                           * norms divide by it so each distinct value counts once */
    int layer;            /* decoder layer (bucketing of the gradient sync) */
    size_t offset;        /* into the flat buffers, in floats; set by params_finalize */
} ParamEntry;

typedef struct {
    int n, cap;
    ParamEntry *e;
    size_t region_off[PARAM_NREGIONS]; /* start of each region (floats) */
    size_t region_len[PARAM_NREGIONS];
    size_t total;     /* floats */
    size_t trainable; /* floats before the frozen region */
    float *values;    /* [total] */
    float *grads;     /* [trainable] */
} ParamTable;

void params_init(ParamTable *p);
/* Declares a tensor; returns its index. Offsets are assigned by params_finalize. */
int params_add(ParamTable *p, const char *name, int ndim, int64_t grows, int64_t gcols, int64_t r0,
               int64_t nr, int64_t c0, int64_t nc, ParamSync sync, int ncopies, int layer);
/* Entry i gets no gradient and no optimizer state (before params_finalize). */
void params_set_frozen(ParamTable *p, int i);
static inline int params_is_frozen(const ParamTable *p, int i) {
    return p->e[i].sync == PARAM_FROZEN;
}
/* Lays out the regions and allocates values [total] + grads [trainable] (MEM_ADAPTER). */
void params_finalize(ParamTable *p, MemCtx *m);
void params_free(ParamTable *p, MemCtx *m);
static inline float *params_value(const ParamTable *p, int i) {
    return p->values + p->e[i].offset;
}
/* Trainable entries only (frozen ones have no gradient buffer). */
static inline float *params_grad(const ParamTable *p, int i) {
    return p->grads + p->e[i].offset;
}
static inline size_t params_numel(const ParamEntry *e) {
    return (size_t)(e->nr * e->nc);
}
/* Index of a name or -1. */
int params_find(const ParamTable *p, const char *name);
/* [begin, end) in floats of layer l's tensors in region s (begin == end if none). */
void params_layer_range(const ParamTable *p, ParamSync s, int layer, size_t *begin, size_t *end);
/* Sum over this rank's trainable tensors of ||buf_i||^2 / ncopies_i (buf: values or
 * grads); summed over the TP group it counts every distinct parameter once. */
double params_sumsq(const ParamTable *p, const float *buf);
/* Full tensors from the shards of a TP group: every TP rank calls it with the same table
 * layout; on TP rank 0 full[i] receives entry i as a dense [grows, gcols] array (the caller
 * allocates them, sizes from the table); other ranks pass full = NULL. With buf = grads,
 * frozen entries are not sent and full[i] of a frozen entry is zero-filled. Point-to-point
 * over g->tp_comm, counted as GRID_BYTES_OTHER. */
void params_gather(const ParamTable *p, const float *buf, Grid *g, float **full);

#endif
