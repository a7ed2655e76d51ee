/* What a training run tells people and tools: the progress (lines, or a live bar on a
 * terminal), OUT/metrics.jsonl (a line per step and per evaluation) with the same numbers in
 * OUT/metrics.csv (train/mcsv.h) and TensorBoard event files (train/tboard.h), OUT/run.json (the
 * resolved configuration, layout, data counts and versions), OUT/summary.json (the closing
 * summary) and OUT/summary-rank{R}.json (each rank's memory and communication), the adapter
 * in PEFT format and --dump-grads (the reference tests' contract). Lines and files come from
 * world rank 0 unless a function says otherwise. */
#ifndef SHARDLORA_TRAIN_REPORT_H
#define SHARDLORA_TRAIN_REPORT_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

#include "../model/adapter_io.h"
#include "mcsv.h"
#include "session.h"
#include "tboard.h"
#include "tdata.h"
#include "trainer.h"

typedef struct {
    const char *out; /* OUT */
    Grid *g;
    FILE *metrics;       /* OUT/metrics.jsonl, world rank 0 (written with write(2), a line
                            at a time: never a torn line) */
    char *metrics_path;  /* its path (malloc'd) */
    int metrics_failed;  /* a write failed: warned once, no more lines */
    int bar, shown;      /* a live progress bar is drawn / is on the screen */
    int64_t resume_step; /* the first step of a resumed run (its line says "resumed"), or 0 */
    MCsv csv;            /* OUT/metrics.csv, world rank 0 */
    TBoard tb;           /* OUT/events.out.tfevents.*, world rank 0 */
} Report;

/* Opens OUT/metrics.jsonl on world rank 0: a run that starts at first_step > 1 (a resume)
 * keeps the lines of the steps before it and appends; a fresh run starts it anew. The same
 * for OUT/metrics.csv; a new TensorBoard event file each time (train/tboard.h). bar: draw
 * a live progress bar. 0 with st set when the file cannot be written (rank 0 only: the
 * caller agrees on the verdict). */
int report_open(Report *r, const char *out, Grid *g, int64_t first_step, int bar, ErrStatus *st);
void report_close(Report *r);

/* One metrics line (and CSV row, TensorBoard event) for a step; s->finite == 0 writes
 * "skipped": true, the first step of a resumed run "resumed": true. tps: tokens/s of the
 * step, mfu: its model FLOP utilisation (a fraction). */
void report_step(Report *r, const TrainerStep *s, double epoch, double lr, double tps, double mfu);
/* The log line and the metrics line of an evaluation at `step`. */
void report_eval(Report *r, int64_t step, double epoch, double loss, int64_t tokens,
                 double seconds);
/* The lowest eval_loss in OUT/metrics.jsonl at steps <= last (what a resumed run evaluated
 * before), into *loss and *step when lower than *loss; a missing file changes nothing. */
void report_best_eval(const char *out, int64_t last, double *loss, int64_t *step);
/* The progress line of a step (elapsed: since the run started; eta: seconds left). */
void report_progress(Report *r, const TrainerStep *s, int64_t total, double epoch, double lr,
                     double tps, double mfu, double elapsed, double eta);
/* The live bar on stderr (when on): one line that fits the terminal's width (TIOCGWINSZ,
 * else $COLUMNS, else 80; fields dropped by priority, never wrapped) with a gauge, step/total,
 * loss, tokens/s, elapsed and ETA (seconds); report_bar_eval shows "evaluating k/rounds" of
 * the evaluation at `step` instead. report_bar_clear removes it before other output. */
void report_bar_draw(Report *r, int64_t step, int64_t total, double loss, double tps,
                     double elapsed, double eta);
void report_bar_eval(Report *r, int64_t step, int64_t k, int64_t rounds, double elapsed);
void report_bar_clear(Report *r);

/* x as a JSON number (its shortest round-trip form, runtime/str.h), or "null" when it is not
 * finite (JSON has no NaN). */
const char *report_json_num(double x, char *buf, size_t n);
/* s as a quoted, escaped JSON string (malloc'd); bytes that are not UTF-8 become '?'. */
char *report_json_quote(const char *s);

/* OUT/run.json: command, resolved configuration (config: a JSON object, stolen), layout,
 * schedule, data counts, versions, model fingerprint. */
typedef struct {
    int argc;
    char **argv;
    json_t *config;
    int64_t global_batch, total_steps;
    const char *sched_desc, *fingerprint;
} ReportRun;
int report_run_json(const char *out, const ReportRun *run, const Session *s, const TrainData *d,
                    ErrStatus *st);

/* What the run did, for the closing summary. */
typedef struct {
    int64_t steps, skipped, tokens, counted;
    double wall, t_steps, t_eval, flops, peak_flops; /* peak over all ranks, FLOP/s */
    const char *peak_source;                         /* how the peak came about (train/mfu.h) */
    double last_loss, last_eval, best_eval;
    int64_t best_step;
} ReportTotals;
/* Prints the closing summary and writes OUT/summary.json. */
int report_summary(const char *out, const ReportTotals *t, const TrainData *d, const MemCtx *mem,
                   ErrStatus *st);
/* OUT/summary-rank{R}.json, on every rank: its memory and communication figures, and with
 * pipeline stages (pipe->s set) its stage's layers, busy and idle seconds and the bubble
 * 1F1B leads to expect. */
int report_rank_summary(const char *out, const Session *s, const Pipe *pipe, int64_t steps,
                        ErrStatus *st);
/* The bytes each rank communicated per step, by category (rank 0's view). */
void report_comm(const Session *s, int64_t steps);

/* Full (gathered) adapter tensors of every pipeline stage on world rank 0: entry i (e[i]: a
 * copy of its stage's table entry, stages in order) dense [grows, gcols] in t[i]; keep[i] 0
 * for a model-wide tensor an earlier stage has too (written once). */
typedef struct {
    int n, nkept;
    ParamEntry *e;
    float **t;
    int *keep;
    int *stage_n; /* [pp] entries per stage (stage heads) */
} ReportFull;
/* Allocates the full tensors on world rank 0 (nothing elsewhere but the stage heads' counts).
 * Collective over world (the stage tables travel over pp_comm). */
void report_full_init(ReportFull *f, const ParamTable *p, Grid *g);
void report_full_free(ReportFull *f);
/* Gathers buf (values or gradients) over the TP group of DP rank 0 of each stage, and from
 * the stages into f on world rank 0. Every rank calls it; only DP rank 0 communicates. */
void report_gather(ReportFull *f, const ParamTable *p, const float *buf, Grid *g);
/* OUT/adapter/: the PEFT files and the model card from the full values (world rank 0), with
 * the configuration the checkpoints keep (so `shardlora export` of the final checkpoint
 * writes the same bytes). */
int report_write_adapter(const char *out, const char *model, const ReportFull *vals,
                         const char *adapter_json, int64_t L, const AdioCard *card, ErrStatus *st);
/* --dump-grads: loss, the global batch (ids, labels, positions [G, T]), every adapter tensor
 * and its gradient (full), and the run's settings as metadata (nmeta key/value pairs). */
typedef struct {
    double loss;
    const int32_t *ids;
    const int64_t *labels, *pos;
    int64_t G, T;
} ReportBatch;
int report_dump_grads(const char *path, const ReportFull *vals, const ReportFull *grads,
                      const ReportBatch *b, const char *const *meta, int nmeta, ErrStatus *st);

#endif
