/* Tensor-parallel linear layers. A Linear holds this rank's shard of a frozen weight
 * W [out, in] (PyTorch layout) as described by a ShardDesc (rows for column-parallel
 * layers, columns for row-parallel ones; the whole matrix at tp = 1), an optional bias
 * and an optional adapter. Forward and backward side by side.
 *
 * Legend: N rows (tokens of a micro-batch), no / ni the local out / in sizes. */
#ifndef SHARDLORA_MODEL_LINEAR_H
#define SHARDLORA_MODEL_LINEAR_H

#include <stdint.h>

#include "../runtime/gemm.h"

typedef enum {
    SHARD_NONE = 0, /* whole matrix on every rank */
    SHARD_COL,      /* column-parallel: this rank has output rows [o0, o0+no) */
    SHARD_ROW,      /* row-parallel: this rank has input columns [i0, i0+ni) */
} ShardKind;

typedef struct {
    ShardKind kind;
    int64_t out, in; /* global shape */
    int64_t o0, no;  /* local output rows */
    int64_t i0, ni;  /* local input columns */
} ShardDesc;

/* An even split of dimension `out` (SHARD_COL) or `in` (SHARD_ROW) into tp parts, part
 * tp_rank; the caller has checked divisibility. SHARD_NONE: whole. */
ShardDesc shard_even(ShardKind kind, int64_t out, int64_t in, int tp, int tp_rank);
/* Explicit row range (column-parallel with a custom range, e.g. replicated kv heads). */
ShardDesc shard_rows(int64_t out, int64_t in, int64_t o0, int64_t no);

struct AdapterSlot;
struct AdapterEnv;

typedef struct {
    ShardDesc shard;
    GemmWeight w;                /* [no, ni] frozen */
    float *bias;                 /* [no] frozen, or NULL */
    int add_bias;                /* this rank adds the bias (row layers: one TP rank) */
    struct AdapterSlot *adapter; /* NULL if the module is not targeted */
} Linear;

/* Y [N, no] = X [N, ni] W^T (+ bias) (+ adapter). For a row-parallel layer Y is a partial
 * sum over the TP group; the caller all-reduces. Saves nothing itself; the adapter saves
 * its own activations. */
void lin_forward(GemmCtx *g, const Linear *l, const struct AdapterEnv *env, float *Y,
                 const float *X, int64_t N);
/* dX [N, ni] = beta * dX + dY W (+ adapter path); accumulates adapter gradients.
 * X is the forward input [N, ni]. For a column-parallel layer dX is a partial sum. */
void lin_backward(GemmCtx *g, const Linear *l, const struct AdapterEnv *env, float *dX,
                  const float *dY, const float *X, int64_t N, float beta);

#endif
