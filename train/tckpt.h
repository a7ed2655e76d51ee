/* Checkpoints of a training run (DESIGN.md §7, io/checkpoint.h for the format): adapter
 * values and optimizer state in global coordinates, so a checkpoint loads into any tp x dp.
 * Saving: DP rank 0 of each TP group writes its shard file in parallel; the shard indexes go
 * to world rank 0, which writes the manifest once every shard is fsynced and commits the
 * directory atomically (step-N.tmp -> step-N, then `latest`). A failure leaves the previous
 * checkpoint untouched. Both calls are collective over the world and return the same
 * verdict on every rank. */
#ifndef SHARDLORA_TRAIN_TCKPT_H
#define SHARDLORA_TRAIN_TCKPT_H

#include <stdint.h>

#include "../model/optim.h"
#include "../model/params.h"
#include "../model/sched.h"
#include "../parallel/grid.h"

typedef struct {
    const char *root;          /* OUT/checkpoints */
    const char *fingerprint;   /* model: architecture, sizes, dtypes (refused if different) */
    const char *adapter_json;  /* adapter configuration (refused if different) */
    const char *run_json;      /* the resolved run configuration (its row-stream keys must match) */
    const char *optim_hparams; /* JSON (informational) */
    uint64_t seed;
    size_t chunk_limit; /* bytes per chunk (0: the format's default) */
    int keep;           /* checkpoints kept (<= 0: all) */
} TckptCfg;

/* Writes checkpoint `step` (the state after that step's update; `cursor` is where the data
 * stream goes on: the stream index of the next step's first row). Returns 1 when it is
 * committed; 0 otherwise (the lowest failing rank printed why). */
int tckpt_save(const TckptCfg *c, Grid *g, const ParamTable *p, const Optim *o, int64_t step,
               int64_t cursor);

/* Rank 0, as a run starts: removes step-N.tmp (and .del / .old) directories that a crash
 * left under c->root, with one log line each; one that cannot be removed is a warning. */
void tckpt_remove_leftovers(const TckptCfg *c, const Grid *g);

/* Where a checkpoint left the run. */
typedef struct {
    int64_t step;         /* the checkpoint's step */
    int64_t cursor;       /* its data cursor */
    int64_t global_batch; /* its run's global batch (0: its run_config does not say) */
    int64_t total_steps;  /* its run's total steps (0: its run_config does not say) */
    /* its run's lr schedule (model/sched.h), when its run_config has "sched_anchor_step"
     * (older checkpoints do not: has_anchor 0) */
    int has_anchor;
    int64_t warmup;     /* "warmup_steps" */
    SchedAnchor anchor; /* "sched_anchor_step", "sched_anchor_progress" */
} TckptPos;

/* Loads the checkpoint at `path`, or with path == NULL the newest usable one under c->root
 * (falling back, loudly, past unusable ones). Returns 1 and *pos when resumed; 0 when there
 * is nothing to resume (fresh start); -1 on an error that must stop the run (printed once):
 * no usable checkpoint, a different model or adapter, or a different row stream (the seed,
 * and the data, seq_len, pack, long_examples, shuffle and eval_split of c->run_json: the
 * cursor counts rows of that stream). */
int tckpt_resume(const TckptCfg *c, const char *path, Grid *g, ParamTable *p, Optim *o,
                 TckptPos *pos);

#endif
