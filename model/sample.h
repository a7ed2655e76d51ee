/* Choosing the next token from logits, as Hugging Face generate does: the repetition
 * penalty (RepetitionPenaltyLogitsProcessor), then the warpers in HF's order (temperature,
 * top-k, top-p: TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper), then a draw;
 * or greedy argmax when the temperature is 0 (do_sample=False). Draws come from Philox keyed
 * by (seed, prompt index, step), so a text depends on neither the layout nor the batching.
 *
 * Vocab-parallel logits: greedy needs only a distributed argmax (each TP rank reduces its
 * Vl columns, then one MAXLOC all-reduce (grid_allreduce_maxloc) of a (value, id) pair per row);
 * sampling gathers the full rows on TP rank 0 (sample_gather_rows), which draws and broadcasts.
 *
 * Legend: V vocabulary, Vl this rank's columns [v0, v0 + Vl), n rows. */
#ifndef SHARDLORA_MODEL_SAMPLE_H
#define SHARDLORA_MODEL_SAMPLE_H

#include <stdint.h>

#include "../parallel/grid.h"
#include "../runtime/mem.h"

typedef struct {
    double temperature;        /* 0: greedy (argmax); otherwise logits / temperature */
    int64_t top_k;             /* 0: off */
    double top_p;              /* 1: off */
    double repetition_penalty; /* 1: off */
    uint64_t seed;
} SampleCfg;

/* Scratch for sample_token over a vocabulary of V and for sample_gather_rows over a TP
 * group of tp ranks, allocated once (nothing is allocated per decode step). */
typedef struct {
    int64_t V;
    void *cand;    /* [V] (logit, id) candidates */
    double *prob;  /* [V] */
    uint8_t *mark; /* [V] zero between calls */
    int tp;
    int64_t *v0, *vl;    /* [tp] each TP rank's vocabulary columns [v0, v0 + vl) */
    size_t *lens, *offs; /* [tp] grid_gatherv's byte counts and float offsets, refilled per
                          * call for its n rows */
} SampleCtx;

void sample_init(SampleCtx *c, int64_t V, int tp, MemCtx *mem);
void sample_free(SampleCtx *c, MemCtx *mem);

/* HF repetition penalty on the columns [v0, v0 + n) of one row: each distinct id of
 * ids[0..nids) in range gets logit / p when positive, logit * p otherwise (once, however
 * often it occurs). mark: scratch of n bytes, zero on entry and on return. */
void sample_repetition_penalty(float *logits, int64_t v0, int64_t n, const int32_t *ids,
                               int64_t nids, float penalty, uint8_t *mark);

/* Index of the largest value of x[0..n) (the first on ties, as torch.argmax; NaN never
 * wins); -1 when no value is larger than -inf. *best receives the value. */
int64_t sample_argmax(const float *x, int64_t n, float *best);

/* Distributed greedy over the TP group: logits [n, Vl] hold columns [v0, v0 + Vl) of every
 * row; out[i] = the global argmax of row i (ties: the lowest id), the same on every TP
 * rank; -1 when a row has no value above -inf. tmp: sample_argmax_tmp_bytes(n) bytes. */
void sample_argmax_tp(Grid *g, const float *logits, int64_t n, int64_t Vl, int64_t v0, int32_t *out,
                      void *tmp);
/* Bytes of sample_argmax_tp's tmp for n rows. */
size_t sample_argmax_tmp_bytes(int64_t n);

/* Gathers the vocab-parallel rows logits [n, Vl] of every TP rank into full [n, V] rows on
 * TP rank 0 (other ranks: full unused). recv: scratch of n * V floats on TP rank 0.
 * c: from sample_init with this V and g->tp. */
void sample_gather_rows(SampleCtx *c, Grid *g, const float *logits, int64_t n, float *full,
                        float *recv);

/* Temperature, top-k, top-p, then a draw from a full row logits [V] (modified; apply the
 * repetition penalty first): u = Philox(seed, PHILOX_SAMPLE, prompt, step) as 53 bits
 * ((w0 >> 5) * 2^26 + (w1 >> 6)) / 2^53; the token is the first kept id (ascending id
 * order) whose cumulative exp(logit - max) exceeds u * sum (double precision).
 * cfg->temperature > 0. Returns the id, or -1 when no logit is finite. */
int32_t sample_token(SampleCtx *c, const SampleCfg *cfg, float *logits, uint64_t prompt,
                     uint64_t step);

#endif
