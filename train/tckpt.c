/* Saving and resuming training checkpoints over MPI (see train_ckpt.h). */
#include "tckpt.h"

#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../io/checkpoint.h"
#include "../runtime/log.h"

/* The optimizer state tensors stored next to each trainable adapter tensor (frozen ones
 * keep only their values), named like PyTorch's optimizer state keys. */
static int tckpt_state_names(const Optim *o, const char **names) {
    if (optim_is_adam(o->cfg.kind)) {
        names[0] = "exp_avg";
        names[1] = "exp_avg_sq";
        return 2;
    }
    names[0] = "momentum_buffer";
    return 1;
}

static const float *tckpt_state_buf(const Optim *o, int k) {
    return k == 0 ? o->m : o->v;
}

/* Prints st on the lowest rank whose ok is 0; returns 1 if every rank is ok. */
static int tckpt_agree(Grid *g, int ok, const char *what, const ErrStatus *st) {
    char prefix[128];
    snprintf(prefix, sizeof prefix, "shardlora: %s", what);
    return grid_agree(g, ok, prefix, st);
}

/* Removes an abandoned step-N.tmp directory (flat: shard files and the manifest), so a
 * failed write does not keep its space (a full disk would stay full). */
static void tckpt_remove_tmpdir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char path[4400];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

int tckpt_save(const TckptCfg *c, Grid *g, const ParamTable *p, const Optim *o, int64_t step,
               int64_t cursor) {
    ErrStatus st;
    err_status_ok(&st);
    char tmpdir[4096], what[64];
    snprintf(what, sizeof what, "checkpoint of step %lld failed", (long long)step);
    int ok = 1;
    if (g->world_rank == 0) ok = ckpt_dir_begin(c->root, step, tmpdir, sizeof tmpdir, &st);
    if (!tckpt_agree(g, ok, what, &st)) return 0;
    grid_bcast(g, g->world, tmpdir, sizeof tmpdir, 0, GRID_BYTES_OTHER);

    /* DP rank 0 of each TP group writes its slices: values and optimizer state */
    CkptShard sh;
    memset(&sh, 0, sizeof sh);
    uint8_t *index = NULL;
    size_t index_len = 0;
    const int writer = g->dp_rank == 0;
    if (writer) {
        char fname[64], tname[256];
        if (g->pp > 1) /* one shard per (stage, TP rank) */
            snprintf(fname, sizeof fname, "shard-pp%d-tp%d.pb", g->pp_rank, g->tp_rank);
        else
            snprintf(fname, sizeof fname, "shard-tp%d.pb", g->tp_rank);
        const char *snames[2];
        const int ns = tckpt_state_names(o, snames);
        ok = ckpt_shard_open(&sh, tmpdir, fname, c->chunk_limit, &st);
        for (int i = 0; ok && i < p->n; i++) {
            const ParamEntry *e = &p->e[i];
            ok = ckpt_shard_put(&sh, e->name, e->grows, e->gcols, e->r0, e->nr, e->c0, e->nc,
                                p->values + e->offset, &st);
            for (int k = 0; ok && k < ns && !params_is_frozen(p, i); k++) {
                snprintf(tname, sizeof tname, "%s/%s", e->name, snames[k]);
                ok = ckpt_shard_put(&sh, tname, e->grows, e->gcols, e->r0, e->nr, e->c0, e->nc,
                                    tckpt_state_buf(o, k) + e->offset, &st);
            }
        }
        if (ok) ok = ckpt_shard_close(&sh, &st);
        if (ok) ckpt_shard_index_pack(&sh, &index, &index_len);
    }
    int all = tckpt_agree(g, ok, what, &st);

    /* shard indexes to world rank 0 (small: one record per chunk) */
    size_t mylen = all ? index_len : 0, *lens = NULL, total = 0;
    uint8_t *gathered = NULL;
    if (g->world_rank == 0) {
        lens = calloc((size_t)g->world_size, sizeof *lens);
        SL_CHECK(lens, "out of memory");
    }
    grid_gather(g, g->world, &mylen, sizeof mylen, lens, 0, GRID_BYTES_OTHER);
    if (g->world_rank == 0) {
        for (int r = 0; r < g->world_size; r++)
            total += lens[r];
        gathered = malloc(total ? total : 1);
        SL_CHECK(gathered, "out of memory");
    }
    grid_gatherv(g, g->world, index, mylen, gathered, lens, 0, GRID_BYTES_OTHER);

    ok = all;
    if (!all) {
        /* every rank knows; the failing rank has said why */
        if (g->world_rank == 0) tckpt_remove_tmpdir(tmpdir);
        free(lens);
        free(gathered);
        free(index);
        if (writer) ckpt_shard_free(&sh);
        return 0;
    }
    if (g->world_rank == 0) {
        CkptManifestBuilder mb;
        ckpt_manifest_init(&mb);
        const char *snames[2];
        tckpt_state_names(o, snames);
        mb.meta.run_config = c->run_json;
        mb.meta.model_fingerprint = c->fingerprint;
        mb.meta.adapter_config = c->adapter_json;
        mb.meta.step = step;
        mb.meta.data_cursor = cursor;
        mb.meta.seed = c->seed;
        mb.meta.optimizer_kind = optim_kind_name(o->cfg.kind);
        mb.meta.optimizer_step = o->step;
        mb.meta.optimizer_hparams = c->optim_hparams;
        mb.meta.lr_schedule_position = step;
        mb.meta.tp = g->tp;
        mb.meta.dp = g->dp;
        mb.meta.pp = g->pp;
        size_t off = 0;
        for (int r = 0; ok && r < g->world_size; off += lens[r], r++)
            if (lens[r]) ok = ckpt_manifest_add_index(&mb, gathered + off, lens[r], &st);
        if (ok) ok = ckpt_manifest_write(&mb, tmpdir, &st);
        if (ok) ok = ckpt_dir_commit(c->root, step, &st);
        if (!ok) tckpt_remove_tmpdir(tmpdir);
        if (ok && !ckpt_prune(c->root, c->keep, &st)) {
            log_warn("checkpoint %lld written, but pruning old ones failed: %s", (long long)step,
                     st.msg);
            err_status_ok(&st);
        }
        ckpt_manifest_free(&mb);
    }
    ok = tckpt_agree(g, ok, what, &st);
    free(lens);
    free(gathered);
    free(index);
    if (writer) ckpt_shard_free(&sh);
    if (ok)
        log_info("checkpoint: step %lld written to %s/step-%09lld", (long long)step, c->root,
                 (long long)step);
    return ok;
}

/* A run_config value for a message (numbers as they were written, not as reals). */
static void tckpt_json_text(const json_t *v, char *buf, size_t n) {
    if (json_is_number(v)) {
        snprintf(buf, n, "%.9g", json_number_value(v));
        return;
    }
    char *t = json_dumps(v, JSON_ENCODE_ANY);
    snprintf(buf, n, "%s", t ? t : "?");
    free(t);
}

/* The run_config keys that fix the training row stream (DESIGN.md §5): resuming with
 * another value would let the cursor count rows of a different stream. The data are
 * compared by what they tokenised to (rows, tokens, counted tokens): their fingerprint also
 * hashes the files' paths and times, so the same data copied or touched only warns. A key
 * missing from an older checkpoint is not compared (without the counts, a differing
 * fingerprint refuses). Sets st and returns 0 on the first difference. */
static int tckpt_same_stream(const char *dir, const char *ckpt_run, const char *run,
                             ErrStatus *st) {
    static const char *const keys[] = {
        "seq_len",    "pack",         "long_examples",        "shuffle",         "eval_split",
        "train_rows", "train_tokens", "train_counted_tokens", "data_fingerprint"};
    /* integers as reals: a seed above INT64_MAX is no error here (it is compared as meta.seed) */
    json_t *a = json_loads(ckpt_run, JSON_DECODE_INT_AS_REAL, NULL),
           *b = json_loads(run, JSON_DECODE_INT_AS_REAL, NULL);
    const int counts = a && json_object_get(a, "train_rows") != NULL;
    int ok = 1;
    for (size_t i = 0; a && b && ok && i < sizeof keys / sizeof keys[0]; i++) {
        json_t *x = json_object_get(a, keys[i]), *y = json_object_get(b, keys[i]);
        if (!x || !y || json_equal(x, y)) continue;
        if (strcmp(keys[i], "data_fingerprint") == 0 && counts) {
            log_warn("%s: the data files' names, sizes or times differ from the checkpoint's, but "
                     "they give the "
                     "same rows and tokens: resuming",
                     dir);
            continue;
        }
        char xs[128], ys[128];
        tckpt_json_text(x, xs, sizeof xs);
        tckpt_json_text(y, ys, sizeof ys);
        ok = err_status_set(
            st,
            "%s was written with %s %s; this run's is %s (the data cursor counts rows of "
            "the stream --data, --seq-len, --pack, --long-examples, --shuffle, --eval-split and "
            "--seed fix)",
            dir, keys[i], xs, ys);
    }
    if (a) json_decref(a);
    if (b) json_decref(b);
    return ok;
}

/* A number of the checkpoint's run_config (`absent` if it has none). */
static double tckpt_run_num(const char *run, const char *key, double absent) {
    json_t *j = json_loads(run, JSON_DECODE_INT_AS_REAL, NULL);
    json_t *v = j ? json_object_get(j, key) : NULL;
    double x = json_is_number(v) ? json_number_value(v) : absent;
    if (j) json_decref(j);
    return x;
}

/* An integer of the checkpoint's run_config (0 if absent). */
static int64_t tckpt_run_int(const char *run, const char *key) {
    return (int64_t)tckpt_run_num(run, key, 0);
}

static void tckpt_note_removed(void *ctx, const char *path) {
    (void)ctx;
    log_info("removed %s, left by an interrupted checkpoint write", path);
}

void tckpt_remove_leftovers(const TckptCfg *c, const Grid *g) {
    if (g->world_rank != 0) return;
    ErrStatus st;
    if (ckpt_remove_leftovers(c->root, tckpt_note_removed, NULL, &st) < 0) log_warn("%s", st.msg);
}

static void tckpt_warn(void *ctx, const char *msg) {
    (void)ctx;
    fprintf(stderr, "shardlora: WARNING: %s; falling back to an older checkpoint\n", msg);
}

int tckpt_resume(const TckptCfg *c, const char *path, Grid *g, ParamTable *p, Optim *o,
                 TckptPos *pos) {
    ErrStatus st;
    err_status_ok(&st);
    char dir[4096] = "";
    CkptReader r;
    memset(&r, 0, sizeof r);
    int rc = 0, opened = 0;
    /* the checkpoint run's global batch, total steps, warmup and schedule anchor */
    int64_t prev[5] = {0, 0, 0, 0, 0};
    double anchor_progress = 0;
    if (g->world_rank == 0) {
        if (path) {
            snprintf(dir, sizeof dir, "%s", path);
            rc = ckpt_open(&r, dir, &st) ? 1 : -1;
            if (rc == 1 && !ckpt_verify(&r, &st)) rc = -1;
        } else {
            rc = ckpt_open_latest(c->root, 1, &r, dir, sizeof dir, tckpt_warn, NULL, &st);
        }
        opened = rc == 1;
        if (rc == 1 && strcmp(r.meta.model_fingerprint, c->fingerprint) != 0) {
            /* the same model held another way (--base-dtype): say so */
            const char *da = strstr(r.meta.model_fingerprint, " dtype="),
                       *db = strstr(c->fingerprint, " dtype=");
            const int only_dtype = da && db &&
                                   da - r.meta.model_fingerprint == db - c->fingerprint &&
                                   strncmp(r.meta.model_fingerprint, c->fingerprint,
                                           (size_t)(da - r.meta.model_fingerprint)) == 0;
            if (only_dtype)
                err_status_set(&st,
                               "%s was written with the frozen weights held as %s; this run holds "
                               "them as %s (give the --base-dtype it was trained with)",
                               dir, da + 7, db + 7);
            else
                err_status_set(&st, "%s was written for another model (%s); this run's model is %s",
                               dir, r.meta.model_fingerprint, c->fingerprint);
            rc = -1;
        } else if (rc == 1 && strcmp(r.meta.adapter_config, c->adapter_json) != 0) {
            err_status_set(&st, "%s has another adapter configuration (%s); this run's is %s", dir,
                           r.meta.adapter_config, c->adapter_json);
            rc = -1;
        } else if (rc == 1 && strcmp(r.meta.optimizer_kind, optim_kind_name(o->cfg.kind)) != 0) {
            err_status_set(&st, "%s was written with optimizer %s; this run uses %s", dir,
                           r.meta.optimizer_kind, optim_kind_name(o->cfg.kind));
            rc = -1;
        } else if (rc == 1 && r.meta.seed != c->seed) {
            err_status_set(
                &st,
                "%s was written with seed %llu; this run's is %llu (the data cursor counts rows "
                "of the stream it orders)",
                dir, (unsigned long long)r.meta.seed, (unsigned long long)c->seed);
            rc = -1;
        } else if (rc == 1 && !tckpt_same_stream(dir, r.meta.run_config, c->run_json, &st)) {
            rc = -1;
        }
        if (rc == 1) {
            prev[0] = tckpt_run_int(r.meta.run_config, "global_batch");
            prev[1] = tckpt_run_int(r.meta.run_config, "steps");
            prev[2] = tckpt_run_num(r.meta.run_config, "sched_anchor_step", -1) >= 0;
            prev[3] = tckpt_run_int(r.meta.run_config, "warmup_steps");
            prev[4] = tckpt_run_int(r.meta.run_config, "sched_anchor_step");
            anchor_progress = tckpt_run_num(r.meta.run_config, "sched_anchor_progress", 0);
        }
        if (rc < 0) fprintf(stderr, "shardlora: error: cannot resume: %s\n", st.msg);
    }
    grid_bcast(g, g->world, &rc, sizeof rc, 0, GRID_BYTES_OTHER);
    if (rc <= 0) {
        if (opened) ckpt_close(&r);
        return rc;
    }
    grid_bcast(g, g->world, dir, sizeof dir, 0, GRID_BYTES_OTHER);
    grid_bcast(g, g->world, prev, sizeof prev, 0, GRID_BYTES_OTHER);
    grid_bcast(g, g->world, &anchor_progress, sizeof anchor_progress, 0, GRID_BYTES_OTHER);
    pos->global_batch = prev[0];
    pos->total_steps = prev[1];
    pos->has_anchor = (int)prev[2];
    pos->warmup = prev[3];
    pos->anchor = (SchedAnchor){prev[4], anchor_progress};
    int ok = g->world_rank == 0 ? 1 : ckpt_open(&r, dir, &st);
    const int have_reader = ok;
    const char *snames[2];
    const int ns = tckpt_state_names(o, snames);
    char tname[256];
    for (int i = 0; ok && i < p->n; i++) {
        const ParamEntry *e = &p->e[i];
        ok = ckpt_read_slice(&r, e->name, e->r0, e->nr, e->c0, e->nc, p->values + e->offset, &st);
        for (int k = 0; ok && k < ns && !params_is_frozen(p, i); k++) {
            snprintf(tname, sizeof tname, "%s/%s", e->name, snames[k]);
            ok = ckpt_read_slice(&r, tname, e->r0, e->nr, e->c0, e->nc,
                                 (float *)tckpt_state_buf(o, k) + e->offset, &st);
        }
    }
    int64_t s = ok ? r.meta.step : 0, ostep = ok ? r.meta.optimizer_step : 0,
            cur = ok ? r.meta.data_cursor : 0;
    int wtp = ok ? r.meta.tp : 0, wdp = ok ? r.meta.dp : 0, wpp = ok ? r.meta.pp : 0;
    if (have_reader) ckpt_close(&r);
    if (!tckpt_agree(g, ok, "cannot resume", &st)) return -1;
    o->step = ostep;
    pos->step = s;
    pos->cursor = cur;
    log_info("resumed from %s (step %lld, written at tp=%d pp=%d dp=%d; now tp=%d pp=%d dp=%d)",
             dir, (long long)s, wtp, wpp > 0 ? wpp : 1, wdp, g->tp, g->pp, g->dp);
    return 1;
}
