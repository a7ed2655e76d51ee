/* Ownership of a run's output directory (see rundir.h): what shardlora wrote there, the
 * run-state record, the verdict for a new invocation, --overwrite's clean-up. */
#include "rundir.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../io/afile.h"
#include "../io/checkpoint.h"
#include "../io/crc32c.h"
#include "../runtime/log.h"
#include "../runtime/str.h"

/* The files shardlora writes directly in OUT (and their atomic-write temporaries). */
static const char *const RUNDIR_FILES[] = {RUNDIR_STATE_NAME, "run.json", "summary.json",
                                           "metrics.jsonl", "metrics.csv"};
/* What shardlora writes in OUT/adapter/ (adapter_io.c: the three files via .export-tmp/). */
static const char *const RUNDIR_ADAPTER_FILES[] = {"adapter_model.safetensors",
                                                   "adapter_config.json", "README.md"};
/* The token cache directories in a cache dir (train/tdata.c). */
static const char *const RUNDIR_CACHES[] = {"train", "train.tmp", "eval", "eval.tmp"};

enum { RUNDIR_NFILES = sizeof RUNDIR_FILES / sizeof RUNDIR_FILES[0] };
/* a longer metrics.jsonl line was not written by shardlora: skipped */
#define RUNDIR_METRICS_LINE_MAX ((size_t)1 << 20)

/* "summary-rank<R>.json": R, or -1 when name is not one. */
static int rundir_rank_summary(const char *name) {
    int r = -1, end = 0;
    if (sscanf(name, "summary-rank%d.json%n", &r, &end) != 1 || name[end] != 0 || r < 0) return -1;
    return r;
}

/* A file shardlora writes directly in OUT (or the temporary of one)? */
static int rundir_is_own_file(const char *name) {
    char base[256];
    snprintf(base, sizeof base, "%s", name);
    const size_t n = strlen(base);
    if (n > 4 && strcmp(base + n - 4, ".tmp") == 0) base[n - 4] = 0;
    for (int i = 0; i < RUNDIR_NFILES; i++)
        if (strcmp(base, RUNDIR_FILES[i]) == 0) return 1;
    return rundir_rank_summary(base) >= 0 || strncmp(base, "events.out.tfevents.", 20) == 0;
}

/* What OUT holds of shardlora's. */
typedef struct {
    int has_state;      /* OUT/run-state.json */
    int adapter, ckpts; /* OUT/adapter/, OUT/checkpoints/ */
    int files;          /* other files a run writes (metrics, summaries, run.json, ...) */
    int outputs;        /* adapter + ckpts + files: what a restart would replace */
    int cache;          /* the default cache directory holds token caches */
} RundirScan;

/* "checkpoints/ (latest step N), adapter/, K files", for messages. */
static void rundir_describe(const RundirScan *s, const char *out, char *buf, size_t n) {
    char *root = str_join_path(out, "checkpoints"), at[64] = "";
    const int64_t latest = ckpt_latest_step(root);
    free(root);
    if (latest > 0) snprintf(at, sizeof at, " (latest step %lld)", (long long)latest);
    snprintf(buf, n, "%s%s%s%s%d file%s", s->ckpts ? "checkpoints/" : "", s->ckpts ? at : "",
             s->ckpts ? ", " : "", s->adapter ? "adapter/, " : "", s->files,
             s->files == 1 ? "" : "s");
}

static void rundir_scan(const char *out, const char *cache_dir, RundirScan *s) {
    memset(s, 0, sizeof *s);
    DIR *d = opendir(out);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, RUNDIR_STATE_NAME) == 0)
            s->has_state = 1;
        else if (strcmp(e->d_name, "adapter") == 0)
            s->adapter = 1;
        else if (strcmp(e->d_name, "checkpoints") == 0)
            s->ckpts = 1;
        else if (rundir_is_own_file(e->d_name))
            s->files++;
    }
    closedir(d);
    s->outputs = s->adapter + s->ckpts + s->files;
    for (size_t i = 0; cache_dir && i < sizeof RUNDIR_CACHES / sizeof RUNDIR_CACHES[0]; i++) {
        char *p = str_join_path(cache_dir, RUNDIR_CACHES[i]);
        s->cache |= access(p, F_OK) == 0;
        free(p);
    }
}

int rundir_file_id(const char *path, char *buf, size_t n, ErrStatus *st) {
    FILE *f = afile_fopen_input(path, st);
    if (!f) return 0;
    enum { CHUNK = 1 << 20 };
    unsigned char *b = malloc(CHUNK);
    SL_CHECK(b, "out of memory");
    uint32_t crc = 0;
    long long bytes = 0;
    size_t got;
    while ((got = fread(b, 1, CHUNK, f)) > 0) {
        crc = crc32c_update(crc, b, got);
        bytes += (long long)got;
    }
    const int bad = ferror(f);
    fclose(f);
    free(b);
    if (bad) return err_status_set(st, "%s: cannot read: %s", path, strerror(errno));
    snprintf(buf, n, "%lld bytes, crc32c %08x", bytes, (unsigned)crc);
    return 1;
}

/* ---- the record ------------------------------------------------------------------------- */

static json_t *rundir_load_state(const char *out, ErrStatus *st) {
    char *path = str_join_path(out, RUNDIR_STATE_NAME);
    json_t *j = afile_read_json(path, (size_t)16 << 20, 0, st);
    if (j && !json_is_object(json_object_get(j, "identity"))) {
        err_status_set(st, "%s: no \"identity\" object", path);
        json_decref(j);
        j = NULL;
    }
    free(path);
    return j;
}

static int rundir_write_state(const char *out, const json_t *identity, const json_t *data_files,
                              json_t *finished, ErrStatus *st) {
    json_t *j = json_object();
    json_object_set_new(j, "format", json_integer(1));
    json_object_set(j, "identity", (json_t *)identity);
    json_object_set(j, "data_files", data_files ? (json_t *)data_files : json_null());
    json_object_set_new(j, "finished", finished ? finished : json_null());
    char *path = str_join_path(out, RUNDIR_STATE_NAME);
    const int ok = afile_write_json(path, j, JSON_INDENT(2), st);
    free(path);
    json_decref(j);
    return ok;
}

int rundir_claim(const char *out, const json_t *identity, const json_t *data_files, ErrStatus *st) {
    return rundir_write_state(out, identity, data_files, NULL, st);
}

/* Removes OUT/summary-rank{R}.json for R >= world (an earlier layout's). */
static int rundir_drop_rank_summaries(const char *out, int world, ErrStatus *st) {
    DIR *d = opendir(out);
    if (!d) return err_status_set(st, "%s: cannot open: %s", out, strerror(errno));
    struct dirent *e;
    int ok = 1;
    while ((e = readdir(d)) != NULL) {
        if (rundir_rank_summary(e->d_name) < world) continue;
        char *p = str_join_path(out, e->d_name);
        if (unlink(p) == 0)
            log_info("removed %s (a rank this run's layout does not have)", p);
        else if (errno != ENOENT && ok)
            ok = err_status_set(st, "%s: cannot remove: %s", p, strerror(errno));
        free(p);
    }
    closedir(d);
    return ok;
}

int rundir_finish(const char *out, const json_t *identity, const json_t *data_files,
                  const RundirEnd *e, ErrStatus *st) {
    if (!rundir_drop_rank_summaries(out, e->world, st)) return 0;
    json_t *fin = json_object();
    json_object_set_new(fin, "step", json_integer((json_int_t)e->step));
    json_object_set_new(fin, "cursor", json_integer((json_int_t)e->cursor));
    json_object_set_new(fin, "rows_per_epoch", json_integer((json_int_t)e->rows_per_epoch));
    json_object_set_new(fin, "world", json_integer(e->world));
    return rundir_write_state(out, identity, data_files, fin, st);
}

/* ---- the verdict ------------------------------------------------------------------------ */

/* v as compact JSON for a message ("(none)" when absent), shortened to fit buf. */
static void rundir_value_text(const json_t *v, char *buf, size_t n) {
    char *t = v ? json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
    if (t) str_json_shorten(t);
    snprintf(buf, n, "%s", t ? t : "(none)");
    free(t);
    if (strlen(buf) + 1 >= n && n > 4) memcpy(buf + n - 4, "...", 4);
}

/* The first label whose value differs between the run in OUT (old) and this one (new):
 * 1 with label and both values in the buffers; 0 when they are the same run. */
static int rundir_first_diff(const json_t *old, const json_t *now, char *label, size_t nl,
                             char *was, char *is, size_t nv) {
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)now, k, v) {
        const json_t *w = json_object_get(old, k);
        if (w && json_equal(w, v)) continue;
        snprintf(label, nl, "%s", k);
        rundir_value_text(w, was, nv);
        rundir_value_text(v, is, nv);
        return 1;
    }
    json_object_foreach((json_t *)old, k, v) {
        if (json_object_get(now, k)) continue;
        snprintf(label, nl, "%s", k);
        rundir_value_text(v, was, nv);
        rundir_value_text(NULL, is, nv);
        return 1;
    }
    return 0;
}

/* Steps this invocation has left after the run's end e, by the rule train_resume uses:
 * --steps counts steps; --epochs counts rows, the rest of them in steps of this run's
 * global batch. */
static int64_t rundir_steps_left(const RundirAsk *a, int64_t step, int64_t cursor, int64_t rows) {
    if (a->steps > 0) return a->steps > step ? a->steps - step : 0;
    const double left = a->epochs * (double)rows - (double)cursor;
    return left > 0 ? (int64_t)ceil(left / (double)a->global_batch - 1e-9) : 0;
}

/* The lowest eval loss in OUT/metrics.jsonl and its step; 0 when there is none. */
static int rundir_best_eval(const char *out, double *loss, int64_t *step) {
    char *path = str_join_path(out, "metrics.jsonl");
    ErrStatus ignore; /* no metrics, no best */
    FILE *f = afile_fopen_input(path, &ignore);
    free(path);
    if (!f) return 0;
    char *line = NULL;
    size_t cap = 0;
    int found = 0;
    int cut;
    while (str_getline(&line, &cap, f, RUNDIR_METRICS_LINE_MAX, &cut) > 0) {
        if (cut || !strstr(line, "\"eval_loss\"")) continue;
        json_t *j = json_loads(line, 0, NULL);
        json_t *l = j ? json_object_get(j, "eval_loss") : NULL,
               *s = j ? json_object_get(j, "step") : NULL;
        if (json_is_number(l) && json_is_integer(s) && (!found || json_number_value(l) < *loss)) {
            *loss = json_number_value(l);
            *step = (int64_t)json_integer_value(s);
            found = 1;
        }
        if (j) json_decref(j);
    }
    free(line);
    fclose(f);
    return found;
}

static void rundir_refuse(RundirPlan *p, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void rundir_refuse(RundirPlan *p, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->msg, sizeof p->msg, fmt, ap);
    va_end(ap);
    p->verdict = RUNDIR_REFUSE;
    p->code = code;
}

/* The same run, finished where this invocation would end? Then p says so (RUNDIR_DONE). */
static int rundir_done(const RundirAsk *a, const json_t *fin, RundirPlan *p) {
    if (!json_is_object(fin)) return 0;
    const int64_t step = (int64_t)json_integer_value(json_object_get(fin, "step")),
                  cursor = (int64_t)json_integer_value(json_object_get(fin, "cursor")),
                  rows = (int64_t)json_integer_value(json_object_get(fin, "rows_per_epoch"));
    if (step < 1 || rundir_steps_left(a, step, cursor, rows) > 0) return 0;
    /* its outputs must be there: without them, resuming the final checkpoint rewrites them */
    char *ad = str_join_path(a->out, "adapter/adapter_model.safetensors"),
         *sum = str_join_path(a->out, "summary.json");
    const int whole = access(ad, F_OK) == 0 && access(sum, F_OK) == 0;
    free(ad);
    free(sum);
    if (!whole) return 0;
    char best[96] = "no evaluation", beyond[64] = "";
    double loss = 0;
    int64_t at = 0;
    if (rundir_best_eval(a->out, &loss, &at))
        snprintf(best, sizeof best, "best eval loss %.4f at step %lld", loss, (long long)at);
    if (a->steps > 0 && a->steps < step)
        snprintf(beyond, sizeof beyond, "; --steps %lld is not beyond it", (long long)a->steps);
    snprintf(p->msg, sizeof p->msg,
             "%s already holds this finished run (step %lld of %lld; %s%s): nothing to do. To "
             "train further raise --steps or --epochs; to start over add --overwrite",
             a->out, (long long)step, (long long)step, best, beyond);
    p->verdict = RUNDIR_DONE;
    p->step = step;
    return 1;
}

/* --resume none on a directory that holds a run. */
static void rundir_refuse_restart(const RundirAsk *a, const RundirScan *s, const char *whose,
                                  RundirPlan *p) {
    char what[256];
    rundir_describe(s, a->out, what, sizeof what);
    rundir_refuse(p, EXIT_USAGE,
                  "%s holds %s (%s); --resume none would start over and replace its files. To "
                  "start over there add --overwrite (it removes only what shardlora wrote); to "
                  "continue it drop --resume none; or choose another --out",
                  a->out, whose, what);
}

/* --overwrite with --resume DIR inside OUT would remove the checkpoint it resumes. */
static int rundir_resume_inside(const RundirAsk *a) {
    if (strcmp(a->resume, "auto") == 0 || strcmp(a->resume, "none") == 0) return 0;
    char ro[PATH_MAX], rr[PATH_MAX];
    if (!realpath(a->out, ro) || !realpath(a->resume, rr)) return 0;
    const size_t n = strlen(ro);
    return strncmp(ro, rr, n) == 0 && (rr[n] == '/' || rr[n] == 0);
}

/* Another run's record: p refuses naming the first difference (for --data, with the files'
 * names too). Returns 0 when the identities are the same. */
static int rundir_refuse_other(const RundirAsk *a, const json_t *state, RundirPlan *p) {
    char label[128], was[400], is[400], wasf[300] = "", isf[300] = "";
    if (!rundir_first_diff(json_object_get(state, "identity"), a->identity, label, sizeof label,
                           was, is, sizeof was))
        return 0;
    if (strcmp(label, "--data") == 0) {
        char t[280];
        rundir_value_text(json_object_get(state, "data_files"), t, sizeof t);
        snprintf(wasf, sizeof wasf, " (%s)", t);
        rundir_value_text(a->data_files, t, sizeof t);
        snprintf(isf, sizeof isf, " (%s)", t);
    }
    const int flag = label[0] == '-';
    rundir_refuse(p, EXIT_USAGE,
                  "%s holds another run: its %s is %s%s, this one's %s%s. To start over there add "
                  "--overwrite (it removes only what shardlora wrote); to keep that run choose "
                  "another --out%s%s%s",
                  a->out, label, was, wasf, is, isf, flag ? ", or give " : "", flag ? label : "",
                  flag ? " as it was to continue it" : "");
    return 1;
}

/* OUT holds a run-state record: the same run (resume / done) or another (refused). */
static void rundir_judge_state(const RundirAsk *a, const RundirScan *s, RundirPlan *p) {
    ErrStatus st;
    err_status_ok(&st);
    json_t *state = rundir_load_state(a->out, &st);
    if (!state) {
        rundir_refuse(p, EXIT_BAD_INPUT,
                      "%s; cannot tell which run %s holds: add --overwrite to start over there "
                      "(it removes only what shardlora wrote), or choose another --out",
                      st.msg, a->out);
        return;
    }
    if (rundir_refuse_other(a, state, p))
        ; /* another run */
    else if (strcmp(a->resume, "none") == 0 && s->outputs)
        rundir_refuse_restart(a, s, "this run", p);
    else if (strcmp(a->resume, "auto") != 0 ||
             !rundir_done(a, json_object_get(state, "finished"), p))
        p->verdict = RUNDIR_RESUME; /* --resume DIR: the checkpoint the user names */
    json_decref(state);
}

static void rundir_inspect(const RundirAsk *a, RundirPlan *p) {
    memset(p, 0, sizeof *p);
    p->verdict = RUNDIR_FRESH;
    RundirScan s;
    rundir_scan(a->out, a->cache_dir, &s);
    if (!s.has_state && !s.outputs && !s.cache) return;
    if (a->overwrite) {
        if (rundir_resume_inside(a))
            rundir_refuse(p, EXIT_USAGE,
                          "--resume %s is inside %s, which --overwrite clears: copy the checkpoint "
                          "elsewhere first, or drop --overwrite",
                          a->resume, a->out);
        else
            p->verdict = RUNDIR_OVERWRITE;
        return;
    }
    if (s.has_state) {
        rundir_judge_state(a, &s, p);
        return;
    }
    if (s.outputs && strcmp(a->resume, "none") == 0)
        rundir_refuse_restart(a, &s, "a run's files", p);
    else if (s.outputs)
        p->verdict = RUNDIR_UNKNOWN;
}

void rundir_decide(const RundirAsk *a, Grid *g, RundirPlan *p) {
    if (g->world_rank == 0) rundir_inspect(a, p);
    grid_bcast(g, g->world, p, sizeof *p, 0, GRID_BYTES_OTHER);
}

/* ---- --overwrite ------------------------------------------------------------------------ */

/* Removes dir/name when it exists (a flat directory with rmdir_flat); logs it. */
static int rundir_remove(const char *dir, const char *name, int flat_dir, ErrStatus *st) {
    char *p = str_join_path(dir, name);
    struct stat sb;
    int ok = 1;
    if (lstat(p, &sb) == 0) {
        ok = flat_dir ? afile_rmdir_flat(p, st)
                      : unlink(p) == 0 || errno == ENOENT ||
                            err_status_set(st, "%s: cannot remove: %s", p, strerror(errno));
        if (ok) log_info("--overwrite: removed %s%s", p, flat_dir ? "/" : "");
    }
    free(p);
    return ok;
}

/* rmdir of a directory shardlora made; one that still holds something else stays. */
static void rundir_rmdir(const char *path) {
    if (rmdir(path) == 0 || errno == ENOENT) return;
    log_info("--overwrite: kept %s (it holds files shardlora did not write)", path);
}

/* OUT/checkpoints: step-N, step-N.tmp, step-N.del (flat) and the latest link. */
static int rundir_clear_checkpoints(const char *root, ErrStatus *st) {
    DIR *d = opendir(root);
    if (!d) return 1;
    struct dirent *e;
    int ok = 1;
    while (ok && (e = readdir(d)) != NULL) {
        long long step;
        int end = 0;
        const int is_step = sscanf(e->d_name, "step-%lld%n", &step, &end) == 1 &&
                            (e->d_name[end] == 0 || strcmp(e->d_name + end, ".tmp") == 0 ||
                             strcmp(e->d_name + end, ".del") == 0);
        if (is_step)
            ok = rundir_remove(root, e->d_name, 1, st);
        else if (strcmp(e->d_name, CKPT_LATEST_NAME) == 0 ||
                 strcmp(e->d_name, CKPT_LATEST_NAME ".tmp") == 0)
            ok = rundir_remove(root, e->d_name, 0, st);
    }
    closedir(d);
    if (ok) rundir_rmdir(root);
    return ok;
}

/* OUT/adapter: the exported files and the exporter's temporary directory. */
static int rundir_clear_adapter(const char *dir, ErrStatus *st) {
    if (access(dir, F_OK) != 0) return 1;
    int ok = rundir_remove(dir, ".export-tmp", 1, st);
    for (size_t i = 0; ok && i < sizeof RUNDIR_ADAPTER_FILES / sizeof RUNDIR_ADAPTER_FILES[0]; i++)
        ok = rundir_remove(dir, RUNDIR_ADAPTER_FILES[i], 0, st);
    if (ok) rundir_rmdir(dir);
    return ok;
}

/* The files directly in OUT; the record last, so an interrupted clean-up still names the
 * run. */
static int rundir_clear_files(const char *out, ErrStatus *st) {
    DIR *d = opendir(out);
    if (!d) return err_status_set(st, "%s: cannot open: %s", out, strerror(errno));
    struct dirent *e;
    int ok = 1;
    while (ok && (e = readdir(d)) != NULL)
        if (rundir_is_own_file(e->d_name) && strcmp(e->d_name, RUNDIR_STATE_NAME) != 0)
            ok = rundir_remove(out, e->d_name, 0, st);
    closedir(d);
    return ok && rundir_remove(out, RUNDIR_STATE_NAME, 0, st);
}

int rundir_clear(const char *out, const char *cache_dir, ErrStatus *st) {
    char *ck = str_join_path(out, "checkpoints"), *ad = str_join_path(out, "adapter");
    int ok = rundir_clear_checkpoints(ck, st) && rundir_clear_adapter(ad, st);
    free(ck);
    free(ad);
    for (size_t i = 0; ok && cache_dir && i < sizeof RUNDIR_CACHES / sizeof RUNDIR_CACHES[0]; i++)
        ok = rundir_remove(cache_dir, RUNDIR_CACHES[i], 1, st);
    if (ok && cache_dir && access(cache_dir, F_OK) == 0) rundir_rmdir(cache_dir);
    return ok && rundir_clear_files(out, st);
}
