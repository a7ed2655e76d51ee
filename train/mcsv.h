/* OUT/metrics.csv: the numbers of OUT/metrics.jsonl as a table, for spreadsheets and
 * pandas. A header line, then a row per step and a separate row per evaluation (an
 * evaluation runs after its step's row is written); a row leaves the other kind's columns
 * empty:
 *   step,epoch,loss,lr,grad_norm,tokens,tokens_per_s,mfu,skipped,eval_loss,eval_ppl,eval_tokens
 * Numbers in their shortest round-trip form, non-finite ones as nan / inf / -inf; skipped is
 * 1 for a step whose update was skipped (non-finite), else 0. World rank 0 writes, and
 * flushes every row; a write error is a warning (once) and never stops training. */
#ifndef SHARDLORA_TRAIN_MCSV_H
#define SHARDLORA_TRAIN_MCSV_H

#include <stdint.h>
#include <stdio.h>

#include "trainer.h"

typedef struct {
    FILE *f;    /* NULL: not open */
    char *path; /* OUT/metrics.csv (malloc'd) */
    int failed; /* a write failed: warned once, nothing more is written */
} MCsv;

/* The header line (no newline). */
#define MCSV_HEADER                                                                                \
    "step,epoch,loss,lr,grad_norm,tokens,tokens_per_s,mfu,skipped,eval_loss,eval_ppl,eval_tokens"

/* Opens OUT/metrics.csv: a fresh run (first_step <= 1) starts it anew; a resumed one keeps
 * the header and the rows of steps < first_step and appends (a header is written if there
 * is none). Returns 0 (with a warning, c left closed) if it cannot be written. */
int mcsv_open(MCsv *c, const char *out, int64_t first_step);
void mcsv_close(MCsv *c);

/* A step's row; an evaluation's row. */
void mcsv_step(MCsv *c, const TrainerStep *s, double epoch, double lr, double tps, double mfu);
void mcsv_eval(MCsv *c, int64_t step, double epoch, double loss, int64_t tokens);

#endif
