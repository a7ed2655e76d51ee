/* The data of a training run: the token caches of the train and eval files (built in
 * parallel, one part per rank, or reused), the eval split, the packing plans and the row
 * order. Collective over the world; every rank ends with the same plans. */
#ifndef SHARDLORA_TRAIN_TDATA_H
#define SHARDLORA_TRAIN_TDATA_H

#include <stdint.h>

#include "../io/dataset.h"
#include "../io/pack.h"
#include "../io/tokcache.h"
#include "../parallel/grid.h"
#include "session.h"

/* A list of data files (the values of a repeatable flag). */
typedef struct {
    const char *const *v;
    int n;
} TdataFiles;

typedef struct {
    const char *model_dir;
    TdataFiles data, eval_data;
    double eval_split;
    const char *chat_format; /* "auto" or a format name */
    int train_on_prompt, add_eos, pack, shuffle, skip_bad;
    PackLong long_mode;
    const char *cache_dir;    /* token caches go to cache_dir/train and cache_dir/eval */
    int64_t T, vocab, eos_id; /* eos_id: from config.json, -1 unknown */
    uint64_t seed;
    const char *chat_template; /* --chat-template FILE, or NULL */
    const char *chat_kwargs;   /* --chat-template-kwargs JSON object, or NULL */
} TdataOpts;

typedef struct {
    Tokenizer *tk;     /* NULL when the model has no tokenizer.json */
    ChatTemplate chat; /* how "messages" lines are rendered (ds.chat points here) */
    DsOptions ds;
    TokCache train_cache, eval_cache;
    int have_eval_cache;
    int64_t *train_docs, *eval_docs;
    int64_t ntrain_docs, neval_docs;
    PackPlan train, eval;
    int has_eval;
    PackOrder order;
    char fingerprint[TCACHE_FP_LEN + 1]; /* of the train data */
} TrainData;

/* Loads or builds everything; returns 1, or 0 after the lowest failing rank printed one
 * line, with *exit_code set (EXIT_BAD_INPUT for the data, EXIT_IO for the disk). */
int tdata_load(TrainData *d, const TdataOpts *o, Grid *g, int *exit_code);
void tdata_free(TrainData *d);

/* Row at stream index i of the training order (epoch i / train.nrows). */
void tdata_train_row(TrainData *d, int64_t i, int64_t T, int32_t *ids, int64_t *labels,
                     int64_t *pos);
/* Eval row r; r >= eval.nrows gives an empty row (nothing counted). */
void tdata_eval_row(const TrainData *d, int64_t r, int64_t T, int32_t *ids, int64_t *labels,
                    int64_t *pos);
/* The same rows as RowSources: the training stream (stream indices; in file order without
 * shuffle, as `shardlora eval` reads it) and the eval rows. */
RowSource tdata_train_source(TrainData *d);
RowSource tdata_eval_source(TrainData *d);

#endif
