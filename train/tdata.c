/* The data of a training run (see train_data.h). Token caches are built by all ranks at
 * once, each tokenising its own byte range of the files into its own part, on the shared
 * file system that holds the output directory (as the checkpoints are). */
#include "tdata.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../io/afile.h"
#include "../runtime/log.h"
#include "../runtime/timer.h"

/* One verdict for all ranks; the lowest failing rank prints its message. */
static int tdata_agree(Grid *g, int ok, const ErrStatus *st) {
    return grid_agree(g, ok, "shardlora: error", st);
}

/* The EOS id named by tokenizer_config.json ("eos_token": "</s>" or {"content": ...}),
 * or -1. */
static int32_t tdata_eos_from_tokenizer_config(const char *dir, const Tokenizer *tk) {
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    /* as numbers: the Hub's files carry model_max_length = 1e30, too big for an integer */
    ErrStatus ignore; /* optional: the chat template's load has refused an unreadable one */
    json_t *root = afile_read_json(path, (size_t)64 << 20, JSON_DECODE_INT_AS_REAL, &ignore);
    if (!root) return -1;
    json_t *e = json_object_get(root, "eos_token");
    if (json_is_object(e)) e = json_object_get(e, "content");
    int32_t id = json_is_string(e) ? tok_token_id(tk, json_string_value(e)) : -1;
    json_decref(root);
    return id;
}

static int64_t tdata_files_bytes(const TdataFiles *files) {
    int64_t total = 0;
    struct stat sb;
    for (int i = 0; i < files->n; i++)
        if (stat(files->v[i], &sb) == 0) total += (int64_t)sb.st_size;
    return total;
}

/* Sums the part statistics over the world; first_bad comes from the lowest rank that has
 * one. */
static void tdata_sum_stats(Grid *g, TcStats *s) {
    int64_t v[5 + DS_NFORMATS] = {s->lines, s->bad_lines, s->docs, s->tokens, s->counted};
    for (int f = 0; f < DS_NFORMATS; f++)
        v[5 + f] = s->per_format[f];
    grid_allreduce_sum_i64(g, g->world, v, 5 + DS_NFORMATS, GRID_BYTES_OTHER);
    s->lines = v[0];
    s->bad_lines = v[1];
    s->docs = v[2];
    s->tokens = v[3];
    s->counted = v[4];
    for (int f = 0; f < DS_NFORMATS; f++)
        s->per_format[f] = v[5 + f];
    int who = grid_first_failed(g, s->first_bad[0] == 0);
    if (who >= 0) grid_bcast(g, g->world, s->first_bad, sizeof s->first_bad, who, GRID_BYTES_OTHER);
}

/* After a failed build: removes the partial cache. Returns 0. */
static int tdata_abandon(Grid *g, const char *tmp) {
    grid_barrier(g);
    ErrStatus st;
    if (g->world_rank == 0) afile_rmdir_flat(tmp, &st);
    return 0;
}

/* Opens the cache `name` of files, or builds it with every rank tokenising one part. */
static int tdata_cache(TokCache *c, const char *name, const TdataFiles *files, const TdataOpts *o,
                       TrainData *d, Grid *g, int *exit_code, char fp[TCACHE_FP_LEN + 1]) {
    ErrStatus st;
    err_status_ok(&st);
    char tkpath[4200], dir[4200], tmp[4300];
    snprintf(tkpath, sizeof tkpath, "%s/tokenizer.json", o->model_dir);
    snprintf(dir, sizeof dir, "%s/%s", o->cache_dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", dir);
    *exit_code = EXIT_BAD_INPUT;
    int ok = tcache_fingerprint(files->v, files->n, d->tk ? tkpath : NULL, &d->ds, fp, &st);
    if (!tdata_agree(g, ok, &st)) return 0;

    ErrStatus why;
    err_status_ok(&why);
    int opened = tcache_open(c, dir, fp, &why);
    if (opened && !o->skip_bad && c->stats.bad_lines > 0) {
        /* built with --skip-bad-lines: without it, the bad lines must stop the run */
        err_status_set(&why, "built with --skip-bad-lines (%lld lines skipped)",
                       (long long)c->stats.bad_lines);
        tcache_close(c);
        opened = 0;
    }
    if (grid_all_ok(g, opened)) {
        log_info("token cache %s: reused (%lld documents, %lld tokens, %lld counted in the loss)",
                 dir, (long long)c->ndocs, (long long)c->ntok, (long long)c->stats.counted);
        return 1;
    }
    if (opened) tcache_close(c);
    const int64_t bytes = tdata_files_bytes(files);
    log_info("token cache: %s; tokenizing %.1f MB in %d part(s), one per rank",
             g->world_rank == 0 ? why.msg : "", (double)bytes / 1e6, g->world_size);

    *exit_code = EXIT_IO;
    ok = 1;
    if (g->world_rank == 0) {
        ok = afile_rmdir_flat(tmp, &st);
        if (ok && !afile_mkdirs(tmp))
            ok = err_status_set(&st, "%s: cannot create: %s", tmp, strerror(errno));
    }
    if (!tdata_agree(g, ok, &st)) return 0;

    double t0 = timer_now();
    TcStats stats;
    memset(&stats, 0, sizeof stats);
    ok = tcache_build_part(tmp, g->world_rank, g->world_size, files->v, files->n, d->tk, &d->ds,
                           o->skip_bad, &stats, &st);
    *exit_code = EXIT_BAD_INPUT;
    if (!tdata_agree(g, ok, &st)) return tdata_abandon(g, tmp);
    tdata_sum_stats(g, &stats);
    if (stats.docs == 0) {
        if (g->world_rank == 0)
            fprintf(stderr, "shardlora: error: %s%s: no examples (%s)\n", files->v[0],
                    files->n > 1 ? " and the other files" : "",
                    stats.bad_lines > 0 ? "every line was bad and skipped"
                                        : "the data is empty or blank");
        return tdata_abandon(g, tmp);
    }
    *exit_code = EXIT_IO;
    ok = g->world_rank != 0 || tcache_commit(dir, tmp, g->world_size, fp, &stats, &st);
    if (!tdata_agree(g, ok, &st)) return 0;
    ok = tcache_open(c, dir, fp, &st);
    if (!tdata_agree(g, ok, &st)) return 0;
    double dt = timer_now() - t0;
    log_info("token cache %s: %lld lines -> %lld documents, %lld tokens (%lld counted in the loss) "
             "in %.1f s (%.1f MB/s over %d ranks)",
             dir, (long long)stats.lines, (long long)stats.docs, (long long)stats.tokens,
             (long long)stats.counted, dt, (double)bytes / 1e6 / (dt > 0 ? dt : 1e-9),
             g->world_size);
    if (stats.bad_lines > 0 && g->world_rank == 0)
        log_warn("%s: skipped %lld bad line(s) (--skip-bad-lines); the first: %s", name,
                 (long long)stats.bad_lines, stats.first_bad);
    return 1;
}

/* "--data a.jsonl" or "--data a.jsonl (+2 more files)", for messages about a split. */
static void tdata_files_name(char *buf, size_t cap, const char *flag, const TdataFiles *files) {
    if (files->n > 1)
        snprintf(buf, cap, "%s %s (+%d more file%s)", flag, files->v[0], files->n - 1,
                 files->n > 2 ? "s" : "");
    else
        snprintf(buf, cap, "%s %s", flag, files->n > 0 ? files->v[0] : "(none)");
}

/* A run whose train split counts no label would exit 0 having learnt nothing: refused with
 * what cut the labels and the ways out. */
static int tdata_check_counted(const TrainData *d, const TdataOpts *o, const char *what,
                               ErrStatus *st) {
    const PackPlan *p = &d->train;
    if (p->counted > 0) return 1;
    if (p->tokens_cut == 0)
        return err_status_set(
            st,
            "%s: nothing to train on: no token of the %lld training documents is counted in "
            "the loss (every label is -100); count prompts with --train-on-prompt or fix the "
            "labels",
            what, (long long)d->ntrain_docs);
    return err_status_set(
        st,
        "%s: nothing to train on: no counted token is left in the first --seq-len %lld tokens "
        "of any document (%lld truncated, %lld split, %lld dropped); raise --seq-len or use "
        "--long-examples split",
        what, (long long)o->T, (long long)p->truncated, (long long)p->split, (long long)p->dropped);
}

static int64_t *tdata_iota(int64_t n) {
    int64_t *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
    SL_CHECK(v, "out of memory");
    for (int64_t i = 0; i < n; i++)
        v[i] = i;
    return v;
}

static void tdata_log_plan(const char *what, const PackPlan *p, int pack) {
    log_info("%s: %lld documents -> %lld rows of %lld tokens (%s; %lld tokens, %.1f%% of the row "
             "space; %lld counted in the loss); long documents: %lld truncated, %lld split, %lld "
             "dropped (%lld tokens cut)",
             what, (long long)p->docs, (long long)p->nrows, (long long)p->T,
             pack ? "packed" : "one document per row", (long long)p->tokens,
             100.0 * (double)p->tokens / (double)(p->nrows * p->T > 0 ? p->nrows * p->T : 1),
             (long long)p->counted, (long long)p->truncated, (long long)p->split,
             (long long)p->dropped, (long long)p->tokens_cut);
}

/* tdata_load's steps; on failure d holds what was set up so far (tdata_free releases it). */
static int tdata_load_parts(TrainData *d, const TdataOpts *o, Grid *g, int *exit_code) {
    *exit_code = EXIT_BAD_INPUT;
    ErrStatus st;
    err_status_ok(&st);
    char tkpath[4200];
    snprintf(tkpath, sizeof tkpath, "%s/tokenizer.json", o->model_dir);
    int ok = 1;
    if (access(tkpath, F_OK) == 0) {
        d->tk = tok_load(tkpath, &st);
        ok = d->tk != NULL;
    }
    int status = EXIT_BAD_INPUT;
    if (ok) {
        ChatSetup cs = {o->model_dir, o->chat_template, o->chat_kwargs, o->chat_format, d->tk};
        ok = chat_template_load(&d->chat, &cs, &status, &st);
    }
    if (!tdata_agree(g, ok, &st)) {
        *exit_code = status;
        return 0;
    }
    int64_t eos = o->eos_id;
    if (eos < 0 && d->tk) eos = tdata_eos_from_tokenizer_config(o->model_dir, d->tk);
    d->ds.chat = &d->chat;
    d->ds.train_on_prompt = o->train_on_prompt;
    d->ds.eos_id = o->add_eos ? (int32_t)eos : -1;
    d->ds.vocab = o->vocab;
    char chat[4400];
    log_info("data: tokenizer %s; chat template %s; EOS %s; prompt tokens %s",
             d->tk ? tkpath : "none (pre-tokenised data only)",
             chat_template_describe(&d->chat, chat, sizeof chat),
             !o->add_eos ? "not appended (--no-add-eos)"
             : eos >= 0  ? "appended to text examples"
                         : "unknown, not appended",
             o->train_on_prompt ? "counted (--train-on-prompt)" : "masked");
    if (o->add_eos && eos < 0 && d->tk)
        log_warn(
            "no EOS token id in config.json or tokenizer_config.json: text examples get no EOS");

    if (!tdata_cache(&d->train_cache, "train", &o->data, o, d, g, exit_code, d->fingerprint))
        return 0;
    char efp[TCACHE_FP_LEN + 1];
    if (o->eval_data.n > 0) {
        if (!tdata_cache(&d->eval_cache, "eval", &o->eval_data, o, d, g, exit_code, efp)) return 0;
        d->have_eval_cache = 1;
    }
    *exit_code = EXIT_BAD_INPUT;
    const TokCache *ec = d->have_eval_cache ? &d->eval_cache : &d->train_cache;
    if (d->have_eval_cache) {
        d->ntrain_docs = d->train_cache.ndocs;
        d->train_docs = tdata_iota(d->ntrain_docs);
        d->neval_docs = d->eval_cache.ndocs;
        d->eval_docs = tdata_iota(d->neval_docs);
    } else if (o->eval_split > 0) {
        ok = pack_split(d->train_cache.ndocs, o->eval_split, o->seed, &d->train_docs,
                        &d->ntrain_docs, &d->eval_docs, &d->neval_docs, &st);
        if (!ok) {
            ErrStatus inner = st;
            err_status_set(&st, "--eval-split %g: %s", o->eval_split, inner.msg);
        }
    } else {
        d->ntrain_docs = d->train_cache.ndocs;
        d->train_docs = tdata_iota(d->ntrain_docs);
    }
    /* plan errors name the split and its files */
    char what[1024]; /* as long as an ErrStatus message */
    tdata_files_name(what, sizeof what, "--data", &o->data);
    if (ok && !pack_plan(&d->train, &d->train_cache, d->train_docs, d->ntrain_docs, o->T, o->pack,
                         o->long_mode, &st)) {
        ErrStatus inner = st;
        ok = err_status_set(&st, "%s: %s", what, inner.msg);
    }
    if (ok) ok = tdata_check_counted(d, o, what, &st);
    d->has_eval = d->neval_docs > 0;
    if (ok && d->has_eval &&
        !pack_plan(&d->eval, ec, d->eval_docs, d->neval_docs, o->T, o->pack, o->long_mode, &st)) {
        char ewhat[sizeof what + 64];
        if (d->have_eval_cache)
            tdata_files_name(ewhat, sizeof ewhat, "--eval-data", &o->eval_data);
        else
            snprintf(ewhat, sizeof ewhat, "--eval-split %g of %s", o->eval_split, what);
        ErrStatus inner = st;
        ok = err_status_set(&st, "%s: %s", ewhat, inner.msg);
    }
    if (!tdata_agree(g, ok, &st)) return 0;
    tdata_log_plan("train data", &d->train, o->pack);
    if (d->has_eval)
        tdata_log_plan(d->have_eval_cache ? "eval data (--eval-data)" : "eval data (--eval-split)",
                       &d->eval, o->pack);
    pack_order_init(&d->order, &d->train, o->seed, o->shuffle);
    return 1;
}

int tdata_load(TrainData *d, const TdataOpts *o, Grid *g, int *exit_code) {
    memset(d, 0, sizeof *d);
    if (tdata_load_parts(d, o, g, exit_code)) return 1;
    tdata_free(d); /* a refusal frees what it loaded, so the exit status survives LeakSanitizer */
    return 0;
}

void tdata_free(TrainData *d) {
    pack_order_free(&d->order);
    pack_plan_free(&d->train);
    if (d->has_eval) pack_plan_free(&d->eval);
    if (d->train_cache.nparts) tcache_close(&d->train_cache);
    if (d->eval_cache.nparts) tcache_close(&d->eval_cache);
    free(d->train_docs);
    free(d->eval_docs);
    if (d->tk) tok_free(d->tk);
    chat_template_free(&d->chat);
    memset(d, 0, sizeof *d);
}

void tdata_train_row(TrainData *d, int64_t i, int64_t T, int32_t *ids, int64_t *labels,
                     int64_t *pos) {
    (void)T;
    pack_row(&d->train, &d->train_cache, pack_order_row(&d->order, i), 0, ids, labels, pos);
}

void tdata_eval_row(const TrainData *d, int64_t r, int64_t T, int32_t *ids, int64_t *labels,
                    int64_t *pos) {
    if (r < d->eval.nrows) {
        pack_row(&d->eval, d->have_eval_cache ? &d->eval_cache : &d->train_cache, r, 0, ids, labels,
                 pos);
        return;
    }
    for (int64_t t = 0; t < T; t++) {
        ids[t] = 0;
        labels[t] = -100;
        pos[t] = t;
    }
}

static void tdata_train_src_row(void *ctx, int64_t i, int64_t T, int32_t *ids, int64_t *labels,
                                int64_t *pos) {
    tdata_train_row(ctx, i, T, ids, labels, pos);
}

static void tdata_eval_src_row(void *ctx, int64_t i, int64_t T, int32_t *ids, int64_t *labels,
                               int64_t *pos) {
    tdata_eval_row(ctx, i, T, ids, labels, pos);
}

RowSource tdata_train_source(TrainData *d) {
    return (RowSource){d, tdata_train_src_row};
}

RowSource tdata_eval_source(TrainData *d) {
    return (RowSource){d, tdata_eval_src_row};
}
