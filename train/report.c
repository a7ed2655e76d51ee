/* Progress, metrics and the run's files (see report.h). */
#include "report.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "../io/afile.h"
#include "../io/chatfmt.h"
#include "../io/safetensors.h"
#include "../runtime/log.h"
#include "../runtime/str.h"

enum { REPORT_LINE_MAX = 1024 }; /* a metrics line is about 200 bytes */
/* a longer line in metrics.jsonl was not written by shardlora: skipped when read back */
#define REPORT_METRICS_MAX ((size_t)1 << 20)

/* Keeps the metrics lines of steps <= last (a resumed run rewrites what came after). */
static void report_trim_metrics(const char *path, int64_t last) {
    FILE *f = fopen(path, "r");
    if (!f) return;
    char *line = NULL, *keep = NULL;
    size_t cap = 0, klen = 0;
    ssize_t n;
    int cut;
    while ((n = str_getline(&line, &cap, f, REPORT_METRICS_MAX, &cut)) > 0) {
        long long st = -1;
        if (cut) continue; /* not a line shardlora wrote */
        const char *p = strstr(line, "\"step\": ");
        if (p) st = atoll(p + 8);
        if (st < 0 || st > last) continue;
        keep = realloc(keep, klen + (size_t)n + 1);
        SL_CHECK(keep, "out of memory");
        memcpy(keep + klen, line, (size_t)n);
        klen += (size_t)n;
    }
    fclose(f);
    free(line);
    ErrStatus st;
    if (!afile_write_all(path, keep ? keep : "", klen, &st)) log_warn("%s", st.msg);
    free(keep);
}

int report_open(Report *r, const char *out, Grid *g, int64_t first_step, int bar, ErrStatus *st) {
    memset(r, 0, sizeof *r);
    r->out = out;
    r->g = g;
    r->bar = bar;
    if (g->world_rank != 0) return 1;
    char *path = str_join_path(out, "metrics.jsonl");
    if (first_step > 1) report_trim_metrics(path, first_step - 1);
    r->metrics = fopen(path, first_step > 1 ? "a" : "w");
    int ok =
        r->metrics != NULL || err_status_set(st, "%s: cannot write: %s", path, strerror(errno));
    r->metrics_path = path;
    r->resume_step = first_step > 1 ? first_step : 0;
    if (ok) { /* these two only warn when they cannot write: training goes on */
        mcsv_open(&r->csv, out, first_step);
        tboard_open(&r->tb, out, first_step);
    }
    return ok;
}

void report_close(Report *r) {
    report_bar_clear(r);
    if (r->metrics) fclose(r->metrics);
    r->metrics = NULL;
    free(r->metrics_path);
    r->metrics_path = NULL;
    mcsv_close(&r->csv);
    tboard_close(&r->tb);
}

const char *report_json_num(double x, char *buf, size_t n) {
    if (!isfinite(x)) return "null";
    return str_fmt_double(x, buf, n); /* exact: a resumed run compares its evals with these */
}

/* One metrics line, formatted first and written whole (afile_append_record): a full disk
 * leaves the file ending at the last whole line, so plot and resume still read it. The
 * first failure is a warning; training goes on without more lines. */
static void report_line(Report *r, const char *line, int n) {
    if (!r->metrics || r->metrics_failed) return;
    ErrStatus st;
    char big[64];
    if (n < 0 || n >= REPORT_LINE_MAX) {
        snprintf(big, sizeof big, "a line of %d bytes is over the limit", n);
        err_status_set(&st, "%s: cannot write: %s", r->metrics_path, big);
    } else if (afile_append_record(fileno(r->metrics), r->metrics_path, line, (size_t)n, &st)) {
        return;
    }
    r->metrics_failed = 1;
    report_bar_clear(r);
    log_warn("%s; no more metrics lines (training goes on; the file ends with the last whole "
             "line)",
             st.msg);
}

void report_step(Report *r, const TrainerStep *s, double epoch, double lr, double tps, double mfu) {
    if (!r->metrics) return;
    char lb[32], gb[32], line[REPORT_LINE_MAX];
    const int n =
        snprintf(line, sizeof line,
                 "{\"step\": %lld, \"epoch\": %.6g, \"loss\": %s, \"lr\": %.9g, \"grad_norm\": %s, "
                 "\"tokens\": %lld, \"tokens_per_s\": %.3f, \"mfu\": %.5f%s%s}\n",
                 (long long)s->step, epoch, report_json_num(s->loss, lb, sizeof lb), lr,
                 report_json_num(s->grad_norm, gb, sizeof gb), (long long)s->counted, tps, mfu,
                 s->finite ? "" : ", \"skipped\": true",
                 s->step == r->resume_step ? ", \"resumed\": true" : "");
    report_line(r, line, n);
    mcsv_step(&r->csv, s, epoch, lr, tps, mfu);
    tboard_train(&r->tb, s, epoch, lr, tps, mfu);
}

void report_eval(Report *r, int64_t step, double epoch, double loss, int64_t tokens,
                 double seconds) {
    report_bar_clear(r);
    log_info("eval at step %lld: loss %.4f | ppl %.3f | %lld tokens | %.1fs", (long long)step, loss,
             exp(loss), (long long)tokens, seconds);
    if (!r->metrics) return;
    char lb[32], pb[32], line[REPORT_LINE_MAX];
    const int n = snprintf(line, sizeof line,
                           "{\"step\": %lld, \"epoch\": %.6g, \"eval_loss\": %s, \"eval_ppl\": %s, "
                           "\"eval_tokens\": %lld}\n",
                           (long long)step, epoch, report_json_num(loss, lb, sizeof lb),
                           report_json_num(exp(loss), pb, sizeof pb), (long long)tokens);
    report_line(r, line, n);
    mcsv_eval(&r->csv, step, epoch, loss, tokens);
    tboard_eval(&r->tb, step, loss);
}

void report_best_eval(const char *out, int64_t last, double *loss, int64_t *step) {
    char *path = str_join_path(out, "metrics.jsonl");
    FILE *f = fopen(path, "r");
    free(path);
    if (!f) return;
    char *line = NULL;
    size_t cap = 0;
    int cut;
    while (str_getline(&line, &cap, f, REPORT_METRICS_MAX, &cut) > 0) {
        json_t *j = cut ? NULL : json_loads(line, 0, NULL);
        const json_t *s = json_object_get(j, "step"), *e = json_object_get(j, "eval_loss");
        if (json_is_integer(s) && json_is_number(e) && json_integer_value(s) <= last &&
            json_number_value(e) < *loss) {
            *loss = json_number_value(e);
            *step = (int64_t)json_integer_value(s);
        }
        if (j) json_decref(j);
    }
    free(line);
    fclose(f);
}

void report_progress(Report *r, const TrainerStep *s, int64_t total, double epoch, double lr,
                     double tps, double mfu, double elapsed, double eta) {
    char d1[32], d2[32];
    report_bar_clear(r);
    log_info("step %lld/%lld | epoch %.2f | loss %.4f | lr %.3e | grad_norm %.4f | %.0f tok/s | "
             "MFU %.1f%% | elapsed %s | eta %s",
             (long long)s->step, (long long)total, epoch, s->loss, lr, s->grad_norm, tps,
             100.0 * mfu, str_fmt_duration(elapsed, d1, sizeof d1),
             str_fmt_duration(eta, d2, sizeof d2));
}

void report_bar_clear(Report *r) {
    if (!r->shown) return;
    fputs("\r\033[K", stderr);
    fflush(stderr);
    r->shown = 0;
}

/* Columns of the terminal the bar is drawn on: TIOCGWINSZ on stderr, else $COLUMNS, else 80
 * (asked at every draw, so a resized window is followed). */
static int report_bar_columns(void) {
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
    const char *env = getenv("COLUMNS");
    const long c = env ? strtol(env, NULL, 10) : 0;
    return c > 0 && c < 10000 ? (int)c : 80;
}

enum { REPORT_BAR_FIELDS = 6, REPORT_BAR_MAXW = 32, REPORT_BAR_MINW = 8 };

/* The bar's fields in display order, field 0 the "[###...]" gauge drawn in what room is left;
 * prio: lower is kept longer. The line fits in cols - 1 characters (a character in the last
 * column makes some terminals wrap): fields are dropped from the least important up, and a
 * field that alone does not fit is cut. */
static void report_bar_put(Report *r, double frac, char fields[][64], const int *prio) {
    const int cols = report_bar_columns(), room = cols > 1 ? cols - 1 : 1;
    int on[REPORT_BAR_FIELDS], len = 0, nf = 0;
    for (int i = 1; i < REPORT_BAR_FIELDS; i++) {
        on[i] = fields[i][0] != 0;
        if (on[i]) len += (nf++ ? 3 : 0) + (int)strlen(fields[i]);
    }
    while (len > room && nf > 1) { /* drop the least important field shown */
        int worst = -1;
        for (int i = 1; i < REPORT_BAR_FIELDS; i++)
            if (on[i] && (worst < 0 || prio[i] > prio[worst])) worst = i;
        on[worst] = 0;
        len -= (int)strlen(fields[worst]) + 3;
        nf--;
    }
    int gauge = room - len - 3; /* "[" + gauge + "] " */
    if (gauge > REPORT_BAR_MAXW) gauge = REPORT_BAR_MAXW;
    char line[512];
    int off = 0;
    if (gauge >= REPORT_BAR_MINW) {
        const int fill = (int)((double)gauge * (frac < 0 ? 0 : frac > 1 ? 1 : frac));
        line[off++] = '[';
        for (int i = 0; i < gauge; i++)
            line[off++] = i < fill ? '#' : '.';
        line[off++] = ']';
        line[off++] = ' ';
    }
    for (int i = 1, first = 1; i < REPORT_BAR_FIELDS; i++) {
        if (!on[i]) continue;
        off +=
            snprintf(line + off, sizeof line - (size_t)off, "%s%s", first ? "" : " | ", fields[i]);
        first = 0;
    }
    if (off > room) off = room; /* one field wider than the terminal: cut */
    line[off] = 0;
    fprintf(stderr, "\r\033[K%s", line);
    fflush(stderr);
    r->shown = 1;
}

void report_bar_draw(Report *r, int64_t step, int64_t total, double loss, double tps,
                     double elapsed, double eta) {
    if (!r->bar) return;
    char f[REPORT_BAR_FIELDS][64], d1[32], d2[32];
    const double frac = (double)step / (double)(total > 0 ? total : 1);
    f[0][0] = 0;
    snprintf(f[1], sizeof f[1], "%lld/%lld %.0f%%", (long long)step, (long long)total,
             100.0 * frac);
    snprintf(f[2], sizeof f[2], "loss %.4f", loss);
    snprintf(f[3], sizeof f[3], "%.0f tok/s", tps);
    snprintf(f[4], sizeof f[4], "elapsed %s", str_fmt_duration(elapsed, d1, sizeof d1));
    snprintf(f[5], sizeof f[5], "eta %s", str_fmt_duration(eta, d2, sizeof d2));
    static const int prio[REPORT_BAR_FIELDS] = {0, 1, 2, 4, 5, 3};
    report_bar_put(r, frac, f, prio);
}

void report_bar_eval(Report *r, int64_t step, int64_t k, int64_t rounds, double elapsed) {
    if (!r->bar) return;
    char f[REPORT_BAR_FIELDS][64], d1[32];
    f[0][0] = 0;
    snprintf(f[1], sizeof f[1], "evaluating %lld/%lld", (long long)k, (long long)rounds);
    snprintf(f[2], sizeof f[2], "step %lld", (long long)step);
    snprintf(f[3], sizeof f[3], "elapsed %s", str_fmt_duration(elapsed, d1, sizeof d1));
    f[4][0] = f[5][0] = 0;
    static const int prio[REPORT_BAR_FIELDS] = {0, 1, 3, 2, 4, 5};
    report_bar_put(r, (double)k / (double)(rounds > 0 ? rounds : 1), f, prio);
}

/* jansson accepts only UTF-8 */
char *report_json_quote(const char *s) {
    json_t *j = json_string(s);
    if (!j) {
        char *t = strdup(s);
        SL_CHECK(t, "out of memory");
        for (char *c = t; *c; c++)
            if ((unsigned char)*c >= 0x80) *c = '?';
        j = json_string(t);
        free(t);
    }
    char *q = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
    SL_CHECK(q, "out of memory");
    json_decref(j);
    return q;
}

/* What happened to documents longer than a sequence, and the skipped bad lines. */
static void report_long_docs_json(json_t *o, const TrainData *d) {
    json_object_set_new(o, "truncated", json_integer((json_int_t)d->train.truncated));
    json_object_set_new(o, "split", json_integer((json_int_t)d->train.split));
    json_object_set_new(o, "dropped", json_integer((json_int_t)d->train.dropped));
    json_object_set_new(o, "bad_lines_skipped",
                        json_integer((json_int_t)d->train_cache.stats.bad_lines));
}

/* OUT/run.json: the resolved configuration, the layout, the data, and the versions of what
 * the run ran on. */
int report_run_json(const char *out, const ReportRun *run, const Session *s, const TrainData *d,
                    ErrStatus *st) {
    const Grid *g = s->g;
    json_t *j = json_object(), *cmd = json_array(), *layout = json_object(), *ver = json_object(),
           *data = json_object();
    for (int i = 0; i < run->argc; i++)
        json_array_append_new(cmd, json_string(run->argv[i]));
    json_object_set_new(j, "shardlora_version", json_string(SHARDLORA_VERSION));
    json_object_set_new(j, "command", cmd);
    json_object_set_new(j, "config", run->config);
    json_object_set_new(layout, "world", json_integer(g->world_size));
    json_object_set_new(layout, "tp", json_integer(g->tp));
    json_object_set_new(layout, "dp", json_integer(g->dp));
    json_object_set_new(layout, "pp", json_integer(g->pp));
    json_object_set_new(layout, "global_batch", json_integer((json_int_t)run->global_batch));
    json_object_set_new(layout, "total_steps", json_integer((json_int_t)run->total_steps));
    json_object_set_new(layout, "lr_schedule", json_string(run->sched_desc));
    json_object_set_new(j, "resolved", layout);
    json_object_set_new(data, "train_fingerprint", json_string(d->fingerprint));
    json_object_set_new(data, "train_documents", json_integer((json_int_t)d->train.docs));
    json_object_set_new(data, "train_rows_per_epoch", json_integer((json_int_t)d->train.nrows));
    json_object_set_new(data, "train_tokens", json_integer((json_int_t)d->train.tokens));
    json_object_set_new(data, "train_counted_tokens", json_integer((json_int_t)d->train.counted));
    report_long_docs_json(data, d);
    /* the chat template: the model's (its source and id) or a --chat-format, or "none" */
    json_object_set_new(data, "chat_format",
                        json_string(d->chat.tpl ? "template" : chatfmt_name(d->chat.format)));
    json_object_set_new(data, "chat_template",
                        d->chat.source ? json_string(d->chat.source) : json_null());
    json_object_set_new(data, "chat_template_id", json_string(d->chat.id));
    json_object_set_new(data, "eval_documents",
                        json_integer((json_int_t)(d->has_eval ? d->eval.docs : 0)));
    json_object_set_new(data, "eval_rows",
                        json_integer((json_int_t)(d->has_eval ? d->eval.nrows : 0)));
    json_object_set_new(j, "data", data);
    char mpiv[MPI_MAX_LIBRARY_VERSION_STRING], desc[256];
    grid_mpi_version(mpiv, sizeof mpiv);
    json_object_set_new(ver, "mpi", json_string(mpiv));
    json_object_set_new(ver, "blas", json_string(gemm_describe(&s->gc, desc, sizeof desc)));
    json_object_set_new(ver, "onednn_isa", json_string(gemm_isa()));
    json_object_set_new(layout, "base_dtype", json_string(gemm_dtype_name(s->m.wdtype)));
    json_object_set_new(layout, "compute_dtype",
                        json_string(s->gc.compute == GEMM_COMPUTE_BF16 ? "bf16" : "fp32"));
    json_object_set_new(layout, "compute", json_string(s->compute_why));
    json_object_set_new(ver, "jansson", json_string(JANSSON_VERSION));
    json_object_set_new(j, "versions", ver);
    json_object_set_new(j, "model_fingerprint", json_string(run->fingerprint));
    char path[4200];
    snprintf(path, sizeof path, "%s/run.json", out);
    int ok = afile_write_json(path, j, JSON_INDENT(2), st);
    json_decref(j);
    return ok;
}

int report_summary(const char *out, const ReportTotals *t, const TrainData *d, const MemCtx *mem,
                   ErrStatus *st) {
    char d1[32], d2[32];
    const double tps = t->t_steps > 0 ? (double)t->tokens / t->t_steps : 0;
    const double mfu = t->t_steps > 0 ? t->flops / t->t_steps / t->peak_flops : 0;
    log_info(
        "summary: %lld steps (%lld skipped) in %s (%s training, %.1fs evaluating); %lld tokens "
        "processed, %lld trained on; %.0f tokens/s, MFU %.1f%%; last train loss %.4f",
        (long long)t->steps, (long long)t->skipped, str_fmt_duration(t->wall, d1, sizeof d1),
        str_fmt_duration(t->t_steps, d2, sizeof d2), t->t_eval, (long long)t->tokens,
        (long long)t->counted, tps, 100.0 * mfu, t->last_loss);
    if (t->best_step >= 0)
        log_info("summary: best eval loss %.4f (ppl %.3f) at step %lld", t->best_eval,
                 exp(t->best_eval), (long long)t->best_step);
    else
        log_info("summary: no evaluation (no --eval-data or --eval-split)");
    log_info(
        "summary: data %lld documents in %lld sequences per epoch; longer than the sequence: %lld "
        "truncated, %lld split, %lld dropped; bad lines skipped: %lld",
        (long long)d->train.docs, (long long)d->train.nrows, (long long)d->train.truncated,
        (long long)d->train.split, (long long)d->train.dropped,
        (long long)d->train_cache.stats.bad_lines);
    json_t *j = json_object(), *memj = json_object();
    json_object_set_new(j, "steps", json_integer((json_int_t)t->steps));
    json_object_set_new(j, "skipped_steps", json_integer((json_int_t)t->skipped));
    json_object_set_new(j, "tokens_processed", json_integer((json_int_t)t->tokens));
    json_object_set_new(j, "tokens_trained", json_integer((json_int_t)t->counted));
    json_object_set_new(j, "wall_seconds", json_real(t->wall));
    json_object_set_new(j, "train_seconds", json_real(t->t_steps));
    json_object_set_new(j, "eval_seconds", json_real(t->t_eval));
    json_object_set_new(j, "tokens_per_s", json_real(tps));
    json_object_set_new(j, "mfu", json_real(mfu));
    json_object_set_new(j, "peak_flops", json_real(t->peak_flops));
    json_object_set_new(j, "peak_source", json_string(t->peak_source ? t->peak_source : ""));
    json_object_set_new(j, "last_loss",
                        isfinite(t->last_loss) ? json_real(t->last_loss) : json_null());
    json_object_set_new(j, "last_eval_loss",
                        isfinite(t->last_eval) ? json_real(t->last_eval) : json_null());
    json_object_set_new(j, "best_eval_loss",
                        t->best_step >= 0 ? json_real(t->best_eval) : json_null());
    json_object_set_new(j, "best_eval_step",
                        t->best_step >= 0 ? json_integer((json_int_t)t->best_step) : json_null());
    for (int c = 0; c < MEM_NCATEGORY; c++)
        json_object_set_new(memj, mem_category_name((MemCategory)c),
                            json_integer((json_int_t)mem->peak[c]));
    json_object_set_new(j, "peak_memory_bytes_rank0", memj);
    json_t *dj = json_object();
    json_object_set_new(dj, "documents", json_integer((json_int_t)d->train.docs));
    json_object_set_new(dj, "sequences_per_epoch", json_integer((json_int_t)d->train.nrows));
    report_long_docs_json(dj, d);
    json_object_set_new(j, "data", dj);
    char path[4200];
    snprintf(path, sizeof path, "%s/summary.json", out);
    int ok = afile_write_json(path, j, JSON_INDENT(2), st);
    json_decref(j);
    return ok;
}

/* A pipeline stage's figures: its layers, the 1F1B schedule's in-flight micro-batches, and
 * the seconds it computed and waited for a neighbour (the measured bubble). */
static json_t *report_pipeline(const Session *s, const Pipe *p) {
    json_t *j = json_object(), *layers = json_array();
    json_array_append_new(layers, json_integer(s->m.l0));
    json_array_append_new(layers, json_integer(s->m.l1));
    json_object_set_new(j, "stage", json_integer(s->g->pp_rank));
    json_object_set_new(j, "layers", layers);
    json_object_set_new(j, "micro_batches_per_step", json_integer(p->nmicro));
    json_object_set_new(j, "in_flight", json_integer(p->K));
    json_object_set_new(j, "busy_s", json_real(p->busy));
    json_object_set_new(j, "idle_s", json_real(p->idle));
    const double all = p->busy + p->idle;
    json_object_set_new(j, "idle_fraction", json_real(all > 0 ? p->idle / all : 0));
    /* 1F1B with equal stages: (P - 1) / (m + P - 1) of a step is fill and drain */
    json_object_set_new(j, "expected_bubble",
                        json_real((double)(p->P - 1) / (double)(p->nmicro + p->P - 1)));
    return j;
}

int report_rank_summary(const char *out, const Session *s, const Pipe *pipe, int64_t steps,
                        ErrStatus *st) {
    const Grid *g = s->g;
    const LlamaModel *m = &s->m;
    static const char *keys[] = {"tp", "dp", "world", "kv", "pp", "other"};
    _Static_assert(sizeof keys / sizeof *keys == GRID_NBYTES, "a key per GridBytes category");
    json_t *j = json_object(), *bytes = json_object(), *calls = json_object();
    json_object_set_new(j, "rank", json_integer(g->world_rank));
    json_object_set_new(j, "world", json_integer(g->world_size));
    json_object_set_new(j, "tp", json_integer(g->tp));
    json_object_set_new(j, "dp", json_integer(g->dp));
    json_object_set_new(j, "pp", json_integer(g->pp));
    json_object_set_new(j, "tp_rank", json_integer(g->tp_rank));
    json_object_set_new(j, "dp_rank", json_integer(g->dp_rank));
    json_object_set_new(j, "pp_rank", json_integer(g->pp_rank));
    json_object_set_new(j, "steps", json_integer(steps));
    json_object_set_new(j, "frozen_bytes", json_integer((json_int_t)m->frozen_bytes));
    json_object_set_new(j, "frozen_bytes_read", json_integer((json_int_t)m->bytes_read));
    json_object_set_new(j, "replicated_frozen_bytes",
                        json_integer((json_int_t)m->replicated_bytes));
    json_t *bydt = json_object();
    for (int d = 0; d < 4; d++)
        if (m->dtype_bytes[d])
            json_object_set_new(bydt, gemm_dtype_name((GemmDtype)d),
                                json_integer((json_int_t)m->dtype_bytes[d]));
    json_object_set_new(j, "frozen_bytes_by_dtype", bydt);
    json_object_set_new(j, "adapter_bytes",
                        json_integer((json_int_t)(m->params.total * sizeof(float))));
    /* what has gradients and optimizer state (frozen entries, e.g. LoRA-FA's A, do not) */
    json_object_set_new(j, "trainable_bytes",
                        json_integer((json_int_t)(m->params.trainable * sizeof(float))));
    /* the gradient buffer by sync class; a class moves its bytes each step when its
     * communicator has more than one rank (dp_comm, world, the kv-head group) */
    json_t *regions = json_object();
    static const char *rkeys[PARAM_NREGIONS] = {"dp", "world", "kv", "frozen"};
    for (int s = 0; s < PARAM_NREGIONS; s++)
        json_object_set_new(regions, rkeys[s],
                            json_integer((json_int_t)(m->params.region_len[s] * sizeof(float))));
    json_object_set_new(j, "adapter_region_bytes", regions);
    for (int c = 0; c < GRID_NBYTES; c++) {
        json_object_set_new(bytes, keys[c], json_integer((json_int_t)g->bytes[c]));
        json_object_set_new(calls, keys[c], json_integer((json_int_t)g->calls[c]));
    }
    json_object_set_new(j, "comm_bytes", bytes);
    if (pipe && pipe->s) json_object_set_new(j, "pipeline", report_pipeline(s, pipe));
    json_object_set_new(j, "comm_calls", calls);
    char path[4200];
    snprintf(path, sizeof path, "%s/summary-rank%d.json", out, g->world_rank);
    int ok = afile_write_json(path, j, JSON_INDENT(2), st);
    json_decref(j);
    return ok;
}

/* The ranks that hold a stage's full tensors after params_gather: DP rank 0, TP rank 0 of
 * each stage; they form pp_comm of (dp 0, tp 0), in which world rank 0 is stage 0. */
static int report_stage_head(const Grid *g) {
    return g->dp_rank == 0 && g->tp_rank == 0;
}

void report_full_init(ReportFull *f, const ParamTable *p, Grid *g) {
    memset(f, 0, sizeof *f);
    if (!report_stage_head(g)) return;
    f->stage_n = calloc((size_t)g->pp, sizeof *f->stage_n);
    SL_CHECK(f->stage_n, "out of memory");
    f->stage_n[0] = p->n;
    for (int s = 1; s < g->pp; s++) { /* every stage's table to world rank 0 */
        if (g->pp_rank == s) {
            grid_send(g, g->pp_comm, &p->n, sizeof p->n, 0, 0, GRID_BYTES_OTHER);
            grid_send(g, g->pp_comm, p->e, (size_t)p->n * sizeof *p->e, 0, 1, GRID_BYTES_OTHER);
        } else if (g->pp_rank == 0) {
            grid_recv(g, g->pp_comm, &f->stage_n[s], sizeof f->stage_n[s], s, 0);
        }
    }
    if (g->world_rank != 0) return;
    for (int s = 0; s < g->pp; s++)
        f->n += f->stage_n[s];
    f->e = calloc((size_t)(f->n > 0 ? f->n : 1), sizeof *f->e);
    f->t = calloc((size_t)(f->n > 0 ? f->n : 1), sizeof *f->t);
    SL_CHECK(f->e && f->t, "out of memory");
    memcpy(f->e, p->e, (size_t)p->n * sizeof *p->e);
    for (int s = 1, at = p->n; s < g->pp; at += f->stage_n[s], s++)
        grid_recv(g, g->pp_comm, f->e + at, (size_t)f->stage_n[s] * sizeof *f->e, s, 1);
    for (int i = 0; i < f->n; i++) {
        f->t[i] = malloc((size_t)(f->e[i].grows * f->e[i].gcols) * sizeof(float));
        SL_CHECK(f->t[i], "out of memory");
    }
    /* a model-wide tensor every stage holds (VeRA's shared projections): kept once */
    int k = 0;
    f->keep = calloc((size_t)(f->n > 0 ? f->n : 1), sizeof *f->keep);
    SL_CHECK(f->keep, "out of memory");
    for (int i = 0; i < f->n; i++) {
        int dup = 0;
        for (int j = 0; j < i && !dup; j++)
            dup = strcmp(f->e[j].name, f->e[i].name) == 0;
        f->keep[i] = !dup;
        k += !dup;
    }
    f->nkept = k;
}

void report_full_free(ReportFull *f) {
    for (int i = 0; f->t && i < f->n; i++)
        free(f->t[i]);
    free(f->t);
    free(f->e);
    free(f->keep);
    free(f->stage_n);
    memset(f, 0, sizeof *f);
}

void report_gather(ReportFull *f, const ParamTable *p, const float *buf, Grid *g) {
    if (g->dp_rank != 0) return;
    if (g->pp == 1) {
        params_gather(p, buf, g, g->world_rank == 0 ? f->t : NULL);
        return;
    }
    /* each stage's TP rank 0 gathers its stage, then sends it to world rank 0 */
    float **mine = NULL;
    if (g->tp_rank == 0 && g->pp_rank > 0) {
        mine = calloc((size_t)(p->n > 0 ? p->n : 1), sizeof *mine);
        SL_CHECK(mine, "out of memory");
        for (int i = 0; i < p->n; i++) {
            mine[i] = malloc((size_t)(p->e[i].grows * p->e[i].gcols) * sizeof(float));
            SL_CHECK(mine[i], "out of memory");
        }
    }
    params_gather(p, buf, g, g->tp_rank != 0 ? NULL : g->pp_rank == 0 ? f->t : mine);
    if (g->tp_rank != 0) return;
    for (int s = 1, at = p->n; s < g->pp; s++) {
        const int n = g->pp_rank == 0 ? f->stage_n[s] : p->n;
        for (int i = 0; i < n; i++) {
            if (g->pp_rank == s) {
                grid_send(g, g->pp_comm, mine[i],
                          (size_t)(p->e[i].grows * p->e[i].gcols) * sizeof(float), 0, 2,
                          GRID_BYTES_OTHER);
            } else if (g->pp_rank == 0) {
                const ParamEntry *e = &f->e[at + i];
                grid_recv(g, g->pp_comm, f->t[at + i],
                          (size_t)(e->grows * e->gcols) * sizeof(float), s, 2);
            }
        }
        if (g->pp_rank == 0) at += n;
    }
    for (int i = 0; mine && i < p->n; i++)
        free(mine[i]);
    free(mine);
}

int report_write_adapter(const char *out, const char *model, const ReportFull *vals,
                         const char *adapter_json, int64_t L, const AdioCard *card, ErrStatus *st) {
    AdioCfg c;
    if (!adio_cfg_from_json(&c, adapter_json, L, st)) return 0;
    free(c.base_model);
    c.base_model = str_dup(model);
    AdioTensor *t = calloc((size_t)(vals->n > 0 ? vals->n : 1), sizeof *t);
    SL_CHECK(t, "out of memory");
    int n = 0;
    for (int i = 0; i < vals->n; i++)
        if (vals->keep[i])
            t[n++] = (AdioTensor){vals->e[i].name, vals->e[i].grows, vals->e[i].gcols, vals->t[i]};
    char *dir = str_join_path(out, "adapter");
    int ok = afile_mkdirs(dir) ? adio_export(dir, &c, t, n, card, st)
                               : err_status_set(st, "%s: cannot create: %s", dir, strerror(errno));
    free(dir);
    free(t);
    adio_cfg_free(&c);
    return ok;
}

int report_dump_grads(const char *path, const ReportFull *vals, const ReportFull *grads,
                      const ReportBatch *b, const char *const *meta, int nmeta, ErrStatus *st) {
    StWriter w;
    st_writer_init(&w);
    float lossf = (float)b->loss;
    int64_t one = 1, bt[2] = {b->G, b->T};
    int64_t *ids64 = malloc((size_t)(b->G * b->T) * sizeof *ids64);
    char(*gnames)[200] = malloc((size_t)(vals->n > 0 ? vals->n : 1) * sizeof *gnames);
    SL_CHECK(ids64 && gnames, "out of memory");
    for (int64_t i = 0; i < b->G * b->T; i++)
        ids64[i] = b->ids[i];
    st_writer_add(&w, "loss", ST_F32, 1, &one, &lossf);
    st_writer_add(&w, "input_ids", ST_I64, 2, bt, ids64);
    st_writer_add(&w, "labels", ST_I64, 2, bt, b->labels);
    st_writer_add(&w, "position_ids", ST_I64, 2, bt, b->pos);
    for (int i = 0; i < vals->n; i++) {
        const ParamEntry *e = &vals->e[i];
        if (!vals->keep[i]) continue;
        int64_t shape[2] = {e->grows, e->gcols};
        snprintf(gnames[i], sizeof gnames[i], "%s.grad", e->name);
        st_writer_add(&w, e->name, ST_F32, 2, shape, vals->t[i]);
        st_writer_add(&w, gnames[i], ST_F32, 2, shape, grads->t[i]);
    }
    for (int i = 0; i < nmeta; i++)
        st_writer_meta(&w, meta[2 * i], meta[2 * i + 1]);
    int ok = st_writer_write(&w, path, st);
    st_writer_free(&w);
    free(ids64);
    free(gnames);
    return ok;
}

void report_comm(const Session *s, int64_t steps) {
    const uint64_t *b = s->g->bytes;
    const double per = steps > 0 ? 1.0 / (double)steps : 0;
    log_info("communication per step on rank 0: tp activations %.3f MB, gradients %.3f MB "
             "(dp %.3f + world %.3f + kv %.3f; adapter buffer %.3f MB)",
             (double)b[GRID_BYTES_TP] * per / 1e6,
             (double)(b[GRID_BYTES_DP] + b[GRID_BYTES_WORLD] + b[GRID_BYTES_KV]) * per / 1e6,
             (double)b[GRID_BYTES_DP] * per / 1e6, (double)b[GRID_BYTES_WORLD] * per / 1e6,
             (double)b[GRID_BYTES_KV] * per / 1e6,
             (double)(s->m.params.total * sizeof(float)) / 1e6);
    if (s->g->pp > 1)
        log_info("communication per step on rank 0: pp stage boundaries %.3f MB",
                 (double)b[GRID_BYTES_PP] * per / 1e6);
}
