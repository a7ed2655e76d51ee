/* Who owns an output directory. A run directory belongs to one run, named by its identity:
 * what a checkpoint must match to be resumed (the model, the adapter, the optimizer, the
 * bytes of the data and the options that fix the row stream). OUT/run-state.json keeps that
 * identity and, once the run has completed, where it ended. Before a run writes anything
 * (OUT, token caches), world rank 0 inspects OUT with rundir_decide and every rank gets the
 * same plan: start, resume, nothing to do (the run already ended where this invocation
 * would), or a refusal that names what differs and what to do instead. --overwrite clears
 * the files shardlora writes (rundir_clear) and nothing else. */
#ifndef SHARDLORA_TRAIN_RUNDIR_H
#define SHARDLORA_TRAIN_RUNDIR_H

#include <jansson.h>
#include <stdint.h>

#include "../parallel/grid.h"
#include "../runtime/err.h"

#define RUNDIR_STATE_NAME "run-state.json"

typedef enum {
    RUNDIR_FRESH = 0, /* OUT is absent or holds no run: start */
    RUNDIR_RESUME,    /* OUT holds this run, not yet where this invocation ends: go on */
    RUNDIR_UNKNOWN,   /* OUT holds shardlora's files but no run-state.json (an older
                         shardlora, a copied checkpoint): go on as its checkpoint allows */
    RUNDIR_OVERWRITE, /* --overwrite on a directory with shardlora's files: clear, start */
    RUNDIR_DONE,      /* OUT holds this run, finished where this invocation ends: exit 0 */
    RUNDIR_REFUSE,    /* msg says why and what to do instead; exit with code */
} RundirVerdict;

/* What this invocation asks of OUT (world rank 0 fills it; other ranks may pass NULL). */
typedef struct {
    const char *out;
    const char *cache_dir;    /* OUT's default cache directory; NULL when --cache-dir is another */
    const json_t *identity;   /* {label: value}, in order; a label reads as the option it is
                                 ("--lora-r", "model", ...) */
    const json_t *data_files; /* the --data paths (kept for people, not compared) */
    const char *resume;       /* "auto", "none" or a checkpoint directory */
    int overwrite;
    int64_t steps; /* --steps (0: --epochs decides) */
    double epochs;
    int64_t global_batch;
} RundirAsk;

typedef struct {
    int verdict;    /* RundirVerdict */
    int code;       /* RUNDIR_REFUSE: the exit status */
    int64_t step;   /* RUNDIR_DONE: the step the run ended at */
    char msg[1800]; /* RUNDIR_DONE, RUNDIR_REFUSE: the one line to print */
} RundirPlan;

/* World rank 0 inspects OUT (reading only) and every rank gets its plan. Collective. */
void rundir_decide(const RundirAsk *a, Grid *g, RundirPlan *p);

/* --overwrite: removes what shardlora writes in OUT (adapter/, checkpoints/, metrics.jsonl,
 * metrics.csv, events.out.tfevents.*, run.json, run-state.json, summary.json,
 * summary-rank*.json, and cache_dir when it is OUT's default one; in the directories, only
 * the files shardlora writes there), logging each path. Anything else stays. One process. */
int rundir_clear(const char *out, const char *cache_dir, ErrStatus *st);

/* OUT/run-state.json for a run that starts or goes on: the identity, not finished. */
int rundir_claim(const char *out, const json_t *identity, const json_t *data_files, ErrStatus *st);

/* Where a completed run ended: the data cursor counts rows of an epoch of rows_per_epoch. */
typedef struct {
    int64_t step, cursor, rows_per_epoch;
    int world; /* summary-rank{R}.json with R >= world are an earlier layout's: removed */
} RundirEnd;
/* Marks the run in OUT/run-state.json finished at e (after its adapter and summaries are
 * written) and removes the summaries of ranks the run no longer has. */
int rundir_finish(const char *out, const json_t *identity, const json_t *data_files,
                  const RundirEnd *e, ErrStatus *st);

/* "N bytes, crc32c XXXXXXXX" of a file's contents (the data's identity: a copy elsewhere
 * is the same data), into buf [n]; 0 with st naming the file when it cannot be read. */
int rundir_file_id(const char *path, char *buf, size_t n, ErrStatus *st);

#endif
