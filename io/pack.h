/* From documents to training rows of T tokens: the eval split, packing, long examples and
 * the deterministic order of rows (DESIGN.md §5, §7). Everything is a function of the
 * documents, T, the options and the seed: never of the number of ranks.
 * Packing follows torchtune's PackedDataset: rows are planned once, greedily, in document
 * order; each epoch then visits the rows in a seeded permutation. In a packed row the
 * positions restart at 0 for each document (a restart is what the attention kernels read
 * as a document boundary: no token attends across it) and the first label of every
 * document after the row's first is -100, so no token is trained to predict the next
 * document. */
#ifndef SHARDLORA_IO_PACK_H
#define SHARDLORA_IO_PACK_H

#include <stdint.h>

#include "../runtime/err.h"
#include "tokcache.h"

typedef enum { PACK_LONG_TRUNCATE = 0, PACK_LONG_SPLIT, PACK_LONG_DROP } PackLong;

/* "truncate" | "split" | "drop"; -1 otherwise. */
int pack_parse_long(const char *s);

/* Documents 0..ndocs-1 split into train and eval: with eval_frac in (0, 1), the first
 * round(eval_frac * ndocs) of a seeded permutation (Fisher-Yates drawn from Philox(seed,
 * PHILOX_DATA_SPLIT, 0, i); clamped so both sides keep at least one document) are eval.
 * Both lists come back sorted (free() them); eval_frac = 0: every document trains and
 * *eval is NULL. 0 with st when ndocs < 2 and a split is asked for, or eval_frac is not in
 * [0, 1). */
int pack_split(int64_t ndocs, double eval_frac, uint64_t seed, int64_t **train, int64_t *ntrain,
               int64_t **eval, int64_t *neval, ErrStatus *st);

typedef struct {
    int64_t doc, start, len; /* tokens [start, start + len) of a document */
} PackPiece;

typedef struct {
    int64_t T;
    int64_t nrows, npieces;
    int64_t *row_off; /* [nrows + 1] into pieces */
    PackPiece *pieces;
    /* what the plan did, for the summary: documents placed (whole, truncated or split);
     * of them truncated, split; dropped; tokens placed; tokens lost to truncation and
     * drops; labels that will be trained (not -100 and not the first of a piece) */
    int64_t docs, truncated, split, dropped, tokens, tokens_cut, counted;
} PackPlan;

/* Plans rows from docs[0..ndocs) in that order. pack = 1: each row takes whole documents
 * while they fit (a document that does not fit starts the next row; so does one whose own
 * positions do not begin at 0, since a restart to 0 is the only boundary attention sees);
 * pack = 0: one document per row. A document longer than T is truncated to its first T
 * tokens, split into pieces of at most T tokens (each piece its own document), or
 * dropped. Documents of 0 or 1 tokens still take their place. Two passes over the
 * documents, memory O(rows + pieces). 0 with st when no row results. */
int pack_plan(PackPlan *p, const TokCache *c, const int64_t *docs, int64_t ndocs, int64_t T,
              int pack, PackLong long_mode, ErrStatus *st);
void pack_plan_free(PackPlan *p);

/* Row r of the plan into ids, labels, pos [T]: its pieces one after another (positions
 * 0..len-1 for each, or the document's own position_ids, as given, for a piece that
 * starts the document: a whole or truncated document, or a split's first piece), the
 * first label of each piece that does not start the row set to -100, and the rest padded
 * with pad_id, label -100 and positions continuing from the last one + 1. */
void pack_row(const PackPlan *p, const TokCache *c, int64_t r, int32_t pad_id, int32_t *ids,
              int64_t *labels, int64_t *pos);

/* The stream of rows: epoch 0's permutation of the plan's rows, then epoch 1's, ... The
 * permutation of epoch e is a Fisher-Yates shuffle drawn from Philox(seed,
 * PHILOX_DATA_ORDER, e, i); the identity when shuffle = 0. Keeps the permutations of
 * two epochs (a global batch may straddle an epoch boundary). */
typedef struct {
    int64_t nrows;
    uint64_t seed;
    int shuffle;
    int64_t epoch[2];
    int64_t *perm[2];
    int next;
} PackOrder;

void pack_order_init(PackOrder *o, const PackPlan *p, uint64_t seed, int shuffle);
/* The plan row at stream index i (epoch i / nrows): a function of (seed, i) only, in
 * whatever order indices are asked for, so every DP layout sees the same global batches. */
int64_t pack_order_row(PackOrder *o, int64_t i);
void pack_order_free(PackOrder *o);

#endif
