/* Pipeline parallelism (DESIGN.md §2): the stages of one pipeline (ranks of one pp_comm: the
 * same DP rank and TP rank) run the micro-batches of a step in the 1F1B order and pass one
 * [N, C] tensor per micro-batch each way, the stage's output forward and its input gradient
 * backward.
 *
 * Schedule (PipeDream-Flush / Megatron's 1F1B): stage s of P with m micro-batches runs
 * w = min(P - 1 - s, m) forwards, then m - w pairs (forward of mb w + i, backward of mb i),
 * then the last w backwards. At most K = min(P - s, m) micro-batches are in flight on stage s,
 * so it keeps K sets of what forward saves, the adapters' included (llama_acts_select);
 * with --recompute layer only K sets of layer inputs, each layer recomputed in backward. A
 * frozen base makes backward about a forward's cost (dX = dY W plus the adapters' small
 * products), so there is little weight-gradient work a zero-bubble schedule could move.
 * Expected idle fraction (the bubble): (P - 1) / (m + P - 1).
 *
 * Messages: TP rank t of a stage sends part t of the tensor (grid_part over tp) to TP rank t
 * of the next / previous stage; the receiving stage all-gathers the parts over its tp_comm.
 * So one link between two stages carries the [N, C] tensor once per direction and
 * micro-batch: 2 x m x N x C x 4 bytes per step (GRID_BYTES_PP). Receives are posted as soon
 * as their buffer is free and sends do not block, so transfers overlap compute; tag 2 mb is a
 * forward message, 2 mb + 1 a backward one (mb modulo 16384: MPI's smallest tag bound).
 *
 * Legend: B sequences per micro-batch, T tokens, N = B*T rows, C hidden, P stages. */
#ifndef SHARDLORA_TRAIN_PIPE_H
#define SHARDLORA_TRAIN_PIPE_H

#include <stdint.h>

#include "session.h"

typedef struct {
    Session *s;
    int P, stage, K;                 /* stages, this rank's, micro-batches in flight (sets) */
    int64_t nmicro;                  /* micro-batches per step on this DP rank */
    LlamaBatch *batch;               /* [K] each in-flight micro-batch's batch */
    int64_t *token0;                 /* [K] their dropout keys (AdapterEnv.token0) */
    size_t n, off, len;              /* N*C; this TP rank's part [off, off + len) */
    float **fsend, **bsend, **brecv; /* [K][len] parts sent forward / backward, grads received */
    MPI_Request *fs, *fr, *bs, *br;  /* [K] forward send / recv, backward send / recv */
    double idle;                     /* seconds this rank waited for a neighbour (cumulative) */
    double busy;                     /* seconds of forward and backward compute (cumulative) */
    int64_t steps;                   /* steps run (for per-step figures) */
} Pipe;

/* Micro-batches in flight on this rank's stage with nmicro per step: the sets of layer inputs
 * session_batches_init must keep (1 at pp = 1). */
int pipe_sets(const Grid *g, int64_t nmicro);

/* After session_batches_init(s, B, T, rc, sets) with sets >= pipe_sets(g, nmicro) (an
 * evaluation: nmicro = 1). */
void pipe_init(Pipe *p, Session *s, int64_t nmicro);
void pipe_free(Pipe *p);

/* One step's forward and backward passes over micro-batches mb = 0 .. nmicro-1, micro-batch
 * mb being rows first + row_base + mb*B of src (env->token0 = (row_base + mb*B) * T).
 * loss_scale weighs each counted token (1 / the global batch's count). Before the backward
 * of the last micro-batch *sync_active is set (the gradient-sync buckets start in
 * layer_done then). Returns this stage's loss sum (0 except on the last stage). */
double pipe_grads(Pipe *p, const RowSource *src, int64_t first, int64_t row_base, float loss_scale,
                  AdapterEnv *env, LlamaLayerDone layer_done, void *done_ctx, int *sync_active);

/* Forward only over micro-batch rows [first, first + B) of src (rows from `end` on empty),
 * without dropout: the last stage returns the loss sum and *counted; the others 0. Every
 * stage of the pipeline calls it with the same rows, in the same order (an evaluation). */
double pipe_eval(Pipe *p, const RowSource *src, int64_t first, int64_t end, const AdapterEnv *env,
                 int64_t *counted);

#endif
