/* The composable training step and the evaluation every command shares.
 *
 * A Trainer adds to a Session what training needs: the optimizer state, the gradient-sync
 * buckets (one per layer and sync class, started while the last micro-batch's backward goes
 * on: DESIGN.md §4) and the batch geometry. One optimizer step over the global batch of G
 * sequences (rows [first, first + G) of a row source; DP rank d takes rows
 * [d*G/dp, (d+1)*G/dp) in micro-batches of B):
 *   trainer_grads:  count the global batch's label tokens (one all-reduce), forward +
 *                   backward per micro-batch with each token's loss scaled by 1/count,
 *                   the gradient sync, the loss sum and the global gradient norm;
 *   trainer_update: clip to max_grad_norm (torch's clip_grad_norm_), the kinds' grad_post
 *                   (LoRA-FA), the optimizer step.
 * trainer_step runs both, the update only when the loss and the norm are finite. Everything
 * is collective over the world: every rank calls them with the same arguments. At pp > 1 the
 * micro-batches run through the pipeline's stages in the 1F1B order (pipe.h): each stage
 * syncs its own layers' gradients over its dp x tp ranks, the loss comes from the last stage
 * and the gradient norm sums over all stages.
 *
 * Legend: B sequences per micro-batch, T tokens per sequence, G sequences per step. */
#ifndef SHARDLORA_TRAIN_TRAINER_H
#define SHARDLORA_TRAIN_TRAINER_H

#include <stdint.h>

#include "../model/optim.h"
#include "../parallel/gsync.h"
#include "pipe.h"
#include "session.h"

typedef struct {
    int64_t G;            /* sequences per optimizer step (a multiple of B x dp) */
    double max_grad_norm; /* clip to this global norm (0: off) */
    uint64_t seed;        /* keys dropout masks (with the step, layer, module, token, column) */
} TrainerCfg;

typedef struct {
    Session *s;
    TrainerCfg cfg;
    int64_t rows_per_dp, nmicro; /* G / dp rows per DP rank, in nmicro micro-batches */
    Optim opt;
    Gsync gs;
    int *bucket;         /* [L][PARAM_NSYNC] gsync bucket of each layer and sync class */
    MPI_Comm stage_comm; /* the ranks of this pipeline stage (world at pp = 1) */
    MPI_Comm kv_comm;    /* ranks sharing a kv head when kv heads are replicated (KV < tp) */
    Pipe pipe;           /* the 1F1B schedule at pp > 1 (pipe.s NULL at pp = 1) */
    int sync_active;     /* the buckets start as layers finish (last micro-batch only) */
    AdapterEnv env;      /* the current step's (dropout keys) */
} Trainer;

/* What one step did (the same on every rank). */
typedef struct {
    int64_t step;
    double loss;      /* mean loss over the global batch's counted label tokens */
    double grad_norm; /* global norm of the synchronised gradient, before clipping */
    int64_t counted;  /* counted label tokens of the global batch */
    int finite;       /* loss and norm are finite */
    int updated;      /* the optimizer step ran */
} TrainerStep;

/* Optimizer state and gradient-sync buckets for the session's model and adapters (after
 * the adapters are initialised and session_batches_init with trainer_sets' sets). */
void trainer_init(Trainer *t, Session *s, const TrainerCfg *cfg, const OptimCfg *ocfg);
void trainer_free(Trainer *t);
/* The sets of layer inputs session_batches_init must keep for global batch G in micro-batches
 * of B (pipe_sets; 1 at pp = 1). */
int trainer_sets(const Grid *g, int64_t G, int64_t B);

/* Gradients of step `step` (1-based; keys dropout) over rows [first, first + G) of src. */
void trainer_grads(Trainer *t, const RowSource *src, int64_t first, int64_t step, TrainerStep *out);
/* Clipping, grad_post and the optimizer step at learning rate lr; sets out->updated. */
void trainer_update(Trainer *t, float lr, TrainerStep *out);
/* trainer_grads, then trainer_update when out->finite. */
void trainer_step(Trainer *t, const RowSource *src, int64_t first, int64_t step, float lr,
                  TrainerStep *out);

/* Called after each round of an evaluation on every rank (it may be collective): round k of
 * `rounds`, sum = this DP rank's {loss sum, counted tokens} so far. */
typedef void (*TrainerEvalRound)(void *ctx, int64_t k, int64_t rounds, const double *sum);

/* Mean loss over rows [0, nrows) of src (row numbers), with no dropout: each DP rank runs
 * micro-batches of its share, empty rows pad the last round, the sums meet over dp.
 * *tokens receives the counted label tokens. Needs session_batches_init. */
double trainer_eval(Session *s, const RowSource *src, int64_t nrows, uint64_t seed,
                    TrainerEvalRound round, void *round_ctx, int64_t *tokens);

#endif
