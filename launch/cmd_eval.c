/* `shardlora eval`: mean loss and perplexity of a model, with or without a PEFT adapter, over
 * a JSONL dataset read exactly as training reads it (train/tdata.c: the same formats,
 * prompt masking and packing; file order, no shuffle), at any tp x dp: DP rank d evaluates
 * rows k*B*dp + d*B + j of round k (trainer_eval, as training's evaluation), and the loss
 * sums meet over dp. The mean is over every counted label token (DESIGN.md §5). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "../io/afile.h"
#include "../io/safetensors.h"
#include "../model/adapter_io.h"
#include "../runtime/log.h"
#include "../runtime/sizes.h"
#include "../runtime/str.h"
#include "../runtime/timer.h"
#include "../train/tdata.h"
#include "../train/trainer.h"
#include "args.h"
#include "cmds.h"
#include "mpicmd.h"

static const char EVAL_USAGE[] =
    "[mpirun -np N] shardlora eval --model DIR [--adapter DIR] --data FILE [options]";
static const char EVAL_ABOUT[] =
    "Mean loss and perplexity of the model (with a PEFT adapter, unmerged) over a JSONL "
    "dataset: the same formats, prompt masking and packing as `train`, in file order. "
    "Prints the result as one JSON line on stdout (loss, ppl, tokens, ...; --out writes it "
    "too), progress and a summary line on stderr. Exit status 0, 2 bad command line or "
    "layout, 3 bad model / adapter / data, 4 cannot write --out, 5 the loss is not finite (NaN / "
    "inf: "
    "nothing is written to --out).";

typedef struct {
    MpicmdRun run;
    MpicmdRows rows;
    const char *adapter, *out, *dump_logits;
    int64_t max_rows, log_every;
} EvalOpts;

/* Default token-cache directory: ~/.cache/shardlora/eval/<hash of the model and data paths>,
 * so evaluations of different datasets do not rebuild each other's cache. */
static void eval_default_cache(const EvalOpts *o, char *buf, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (int i = -1; i < o->rows.data.n; i++) {
        const char *s = i < 0 ? o->run.model : o->rows.data.v[i];
        char *rp = realpath(s, NULL);
        for (const char *p = rp ? rp : s; *p; p++)
            h = (h ^ (unsigned char)*p) * 1099511628211ull;
        h = (h ^ 0xff) * 1099511628211ull;
        free(rp);
    }
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (xdg && *xdg)
        snprintf(buf, n, "%s/shardlora/eval/%016llx", xdg, (unsigned long long)h);
    else
        snprintf(buf, n, "%s/.cache/shardlora/eval/%016llx", home && *home ? home : "/tmp",
                 (unsigned long long)h);
}

/* --dump-logits: the full logits [B*T, V] of DP rank 0's first micro-batch, gathered over
 * its TP group from the vocabulary slices (which may be uneven), with the batch. Collective
 * over tp_comm of DP rank 0; written by world rank 0. */
static int eval_dump_logits(const char *path, LlamaModel *m, const LlamaActs *acts,
                            const LlamaBatch *b, const int64_t *labels, GemmCtx *gc, Grid *g,
                            ErrStatus *st) {
    const int64_t N = b->B * b->T, Vl = m->Vl, V = m->V;
    float *local = malloc((size_t)(N * Vl) * sizeof(float));
    SL_CHECK(local, "out of memory");
    gemm_xwt(gc, local, acts->lnf, &m->lm_head, N, 0.0f); /* [N, Vl] */
    int ok = 1;
    const int root = g->tp_rank == 0;
    size_t *lens = NULL;
    int64_t *v0s = NULL;
    float *all = NULL, *full = NULL;
    if (root) {
        lens = calloc((size_t)g->tp, sizeof *lens);
        v0s = calloc((size_t)g->tp, sizeof *v0s);
        all = malloc((size_t)(N * V) * sizeof(float));
        full = malloc((size_t)(N * V) * sizeof(float));
        SL_CHECK(lens && v0s && all && full, "out of memory");
    }
    size_t mine = (size_t)(N * Vl) * sizeof(float);
    int64_t v0 = m->V0;
    grid_gather(g, g->tp_comm, &mine, sizeof mine, lens, 0, GRID_BYTES_OTHER);
    grid_gather(g, g->tp_comm, &v0, sizeof v0, v0s, 0, GRID_BYTES_OTHER);
    grid_gatherv(g, g->tp_comm, local, mine, all, lens, 0, GRID_BYTES_OTHER);
    if (root) {
        /* rank t's block is [N, vl] floats for vocabulary rows from v0s[t] */
        const float *blk = all;
        for (int t = 0; t < g->tp; t++) {
            const int64_t vl = (int64_t)(lens[t] / sizeof(float)) / N;
            for (int64_t i = 0; i < N; i++)
                memcpy(full + i * V + v0s[t], blk + i * vl, (size_t)vl * sizeof(float));
            blk += N * vl;
        }
        int64_t *ids = malloc((size_t)N * sizeof *ids);
        SL_CHECK(ids, "out of memory");
        for (int64_t i = 0; i < N; i++)
            ids[i] = b->ids[i];
        StWriter w;
        st_writer_init(&w);
        int64_t ls[2] = {N, V}, bt[2] = {b->B, b->T};
        st_writer_add(&w, "logits", ST_F32, 2, ls, full);
        st_writer_add(&w, "input_ids", ST_I64, 2, bt, ids);
        st_writer_add(&w, "labels", ST_I64, 2, bt, labels);
        st_writer_add(&w, "position_ids", ST_I64, 2, bt, b->pos);
        char meta[64];
        snprintf(meta, sizeof meta, "%d", g->tp);
        st_writer_meta(&w, "tp", meta);
        ok = st_writer_write(&w, path, st);
        st_writer_free(&w);
        free(ids);
    }
    free(local);
    free(lens);
    free(v0s);
    free(all);
    free(full);
    return ok;
}

/* The result: what stdout carries (one line) and --out holds (indented). */
static json_t *eval_result_json(const EvalOpts *o, const Grid *g, double loss, int64_t tokens,
                                int64_t rows, double secs) {
    json_t *j = json_object(), *data = json_array();
    for (int i = 0; i < o->rows.data.n; i++)
        json_array_append_new(data, json_string(o->rows.data.v[i]));
    json_object_set_new(j, "model", json_string(o->run.model));
    json_object_set_new(j, "adapter", o->adapter ? json_string(o->adapter) : json_null());
    json_object_set_new(j, "data", data);
    json_object_set_new(j, "loss", isfinite(loss) ? json_real(loss) : json_null());
    json_object_set_new(j, "ppl", isfinite(loss) ? json_real(exp(loss)) : json_null());
    json_object_set_new(j, "tokens", json_integer((json_int_t)tokens));
    json_object_set_new(j, "rows", json_integer((json_int_t)rows));
    json_object_set_new(j, "seq_len", json_integer((json_int_t)o->rows.seq_len));
    json_object_set_new(j, "pack", json_boolean(o->rows.pack));
    json_object_set_new(j, "tp", json_integer(g->tp));
    json_object_set_new(j, "pp", json_integer(g->pp));
    json_object_set_new(j, "dp", json_integer(g->dp));
    json_object_set_new(j, "seconds", json_real(secs));
    return j;
}

/* The result as one JSON line on stdout (shortest round-trip reals, as in the files). */
static void eval_print_json(const json_t *j) {
    char *text = json_dumps(j, JSON_COMPACT);
    SL_CHECK(text, "out of memory");
    str_json_shorten(text);
    printf("%s\n", text);
    fflush(stdout);
    free(text);
}

/* Everything one evaluation holds, released by eval_free. */
typedef struct {
    EvalOpts o;
    ArgSpec specs[64];
    int nspecs;
    Grid g;
    Session s;
    TrainData data;
    AdioCfg ac;
    int have_session, have_data, have_ac;
    MpicmdEnv env;
    int lmode;
    char cache_dir[4200];
} EvalRun;

static void eval_options(EvalRun *r) {
    memset(r, 0, sizeof *r);
    EvalOpts *o = &r->o;
    mpicmd_run_defaults(&o->run);
    o->run.seq_len = &o->rows.seq_len;
    mpicmd_rows_defaults(&o->rows);
    o->log_every = 10;
    /* one option per line: name, type, destination, metavar, help, required, seen */
    // clang-format off
    const ArgSpec specs[] = {
        {.type = ARG_GROUP, .group = ARGG_MODEL},
        {"adapter", ARG_STR, &o->adapter, "DIR", "PEFT adapter (LoRA, DoRA or VeRA: adapter_config.json + adapter_model.safetensors) applied unmerged", 0, 0},
        {"out", ARG_STR, &o->out, "FILE", "also write the result as JSON (loss, ppl, tokens, rows, layout, seconds)", 0, 0},
        {.type = ARG_GROUP, .group = ARGG_DATA},
        {"max-rows", ARG_INT, &o->max_rows, "N", "evaluate the first N sequences only (0: all)", 0, 0},
        {.name = "per-device-eval-batch-size", .type = ARG_ALIAS, .target = "micro-batch"},
        {.type = ARG_GROUP, .group = ARGG_LOGGING},
        {"log-every", ARG_INT, &o->log_every, "N", "a progress line every N rounds of micro-batches", 0, 0},
        {.type = ARG_GROUP, .group = ARGG_EXPERT},
        {"dump-logits", ARG_STR, &o->dump_logits, "FILE", "(tests) write the full logits [B*T, V] of the first micro-batch with its input_ids, labels and position_ids (safetensors)", 0, 0},
    };
    // clang-format on
    const MpicmdHelp help = {
        "JSONL data, the formats of `train` ({\"text\"}, {\"prompt\",\"completion\"}, "
        "{\"messages\"}, {\"input_ids\"[,\"labels\"]}); repeatable",
        "token cache (default: ~/.cache/shardlora/eval/HASH, on a file system every rank sees)",
        "tensor-parallel size (world = dp x tp; rows are split over dp)"};
    r->nspecs = mpicmd_table(r->specs, (int)(sizeof r->specs / sizeof r->specs[0]), &o->run,
                             &o->rows, &help, specs, (int)(sizeof specs / sizeof specs[0]));
}

static int eval_free(EvalRun *r, int rc) {
    if (r->have_session) session_free(&r->s);
    if (r->have_ac) adio_cfg_free(&r->ac);
    if (r->have_data) tdata_free(&r->data);
    return mpicmd_end(&r->g, r->specs, r->nspecs, rc);
}

static int eval_check_opts(void *ctx, ErrStatus *st) {
    EvalRun *r = ctx;
    const EvalOpts *o = &r->o;
    if (!mpicmd_rows_check(&o->rows, &r->lmode, st)) return 0;
    if (o->log_every < 1 || o->max_rows < 0)
        return err_status_set(st, "--log-every must be >= 1 and --max-rows >= 0");
    if (o->dump_logits && r->g.pp > 1)
        return err_status_set(st, "--dump-logits needs --pp 1 (the logits are the last stage's)");
    return mpicmd_bound("log-every", o->log_every, 1, MPICMD_MAX_COUNT, st) &&
           mpicmd_bound("max-rows", o->max_rows, 0, MPICMD_MAX_COUNT, st);
}

/* The memory estimate against what the node allows, before the activations are allocated
 * (launch/mpicmd.h). Returns 0 or EXIT_USAGE. */
static int eval_memcheck(EvalRun *r) {
    const EvalOpts *o = &r->o;
    MemplanIn in = {.B = o->rows.micro_batch,
                    .T = o->rows.seq_len,
                    .r = o->adapter ? r->ac.acfg.r : 0,
                    .kind = r->ac.acfg.kind[0] ? r->ac.acfg.kind : NULL,
                    .targets = o->adapter ? r->ac.acfg.targets : 0,
                    .dropout = o->adapter && r->ac.dropout > 0,
                    .threads = (int)o->run.threads,
                    .recompute = LLAMA_RECOMPUTE_LAYER};
    MemPlan p;
    memplan_estimate(&p, &r->s.m, &in);
    if (o->dump_logits) { /* [N, Vl] logits; gathered [N, V] twice on TP rank 0 */
        const int64_t N = o->rows.micro_batch * o->rows.seq_len;
        const int64_t f = r->g.tp_rank == 0 ? 2 * r->s.m.V + r->s.m.Vl : r->s.m.Vl;
        const int64_t b = sizes_mul_sat(N, sizes_mul_sat(f, 4));
        p.bytes[MEM_OTHER] = sizes_add_sat(p.bytes[MEM_OTHER], b);
        p.total = sizes_add_sat(p.total, b);
    }
    char why[128];
    snprintf(why, sizeof why, "--micro-batch %lld x --seq-len %lld", (long long)o->rows.micro_batch,
             (long long)o->rows.seq_len);
    return mpicmd_memcheck(&r->g, "eval", &o->run, &p, why,
                           "lower --micro-batch or --seq-len, or raise --tp");
}

/* The model, the adapter, the cache directory and the data. Returns 0 or an exit status. */
static int eval_setup(EvalRun *r) {
    const EvalOpts *o = &r->o;
    Grid *g = &r->g;
    ErrStatus st;
    if (o->rows.cache_dir)
        snprintf(r->cache_dir, sizeof r->cache_dir, "%s", o->rows.cache_dir);
    else
        eval_default_cache(o, r->cache_dir, sizeof r->cache_dir);
    const int frc = mpicmd_frozen_check(g, "eval", &o->run, &r->env);
    if (frc) return frc;
    int ok = session_open(&r->s, g, o->run.model, (MemPinMode)r->env.pin, r->env.base,
                          r->env.has_stages ? r->env.stages : NULL, &st);
    r->have_session = 1;
    if (!grid_agree(g, ok, "shardlora: error", &st)) return EXIT_BAD_INPUT;
    if (o->adapter) {
        ok = adio_attach(&r->s.m, o->adapter, &r->ac, g, &r->s.mem, &st);
        r->have_ac = 1;
        if (!grid_agree(g, ok, "shardlora: error", &st)) return EXIT_BAD_INPUT;
    }
    const int rc = eval_memcheck(r);
    if (rc) return rc;
    ok = afile_mkdirs(r->cache_dir);
    if (!ok)
        err_status_set(&st, "%s: cannot create the token cache directory: %s", r->cache_dir,
                       strerror(errno));
    if (!grid_agree(g, ok, "shardlora: error", &st)) return EXIT_IO;
    if (g->world_rank == 0 && log_level() >= LOG_INFO) {
        fprintf(stderr, "configuration (%s):\n",
                o->run.config.path ? o->run.config.path : "flags and defaults");
        args_print_resolved(stderr, r->specs, r->nspecs);
    }
    const LlamaModel *m = &r->s.m;
    log_info("shardlora eval: %s (%s, %lld layers, hidden %lld, vocab %lld, %s weights)%s%s; grid: "
             "dp %d x tp %d",
             o->run.model, m->cfg.architecture, (long long)m->L, (long long)m->C, (long long)m->V,
             m->wdtype == GEMM_BF16 ? "BF16" : "F32", o->adapter ? " + adapter " : " (no adapter)",
             o->adapter ? o->adapter : "", g->dp, g->tp);
    char ab[32];
    if (o->adapter)
        log_info("adapter: %s r=%d alpha=%s rslora=%d, %d tensors%s",
                 r->ac.acfg.kind[0] ? r->ac.acfg.kind : "lora", r->ac.acfg.r,
                 str_fmt_double(r->ac.alpha, ab, sizeof ab), r->ac.acfg.use_rslora, m->params.n,
                 r->ac.slot_r ? " (per-module ranks / alphas / layers)" : "");
    const TdataOpts dopt = mpicmd_tdata_opts(&o->rows, o->run.model, r->lmode, r->cache_dir, m->V,
                                             m->cfg.eos_token_id);
    int data_rc = 0;
    if (!tdata_load(&r->data, &dopt, g, &data_rc)) return data_rc;
    r->have_data = 1;
    session_compute_init(&r->s, (int)o->run.threads, session_max_cols(&r->s), o->rows.seq_len,
                         r->env.kops);
    session_set_compute(&r->s, r->env.compute);
    if (g->world_rank == 0) log_info("frozen GEMMs compute in %s", r->s.compute_why);
    /* no backward: one set of per-layer buffers serves every layer (llama.h recompute) */
    session_batches_init(&r->s, o->rows.micro_batch, o->rows.seq_len, LLAMA_RECOMPUTE_LAYER, 1);
    return 0;
}

/* After each round: --dump-logits of the first micro-batch, and the progress lines. */
typedef struct {
    EvalRun *r;
    double t0;
    int rc;
} EvalProgress;

static void eval_round(void *ctx, int64_t k, int64_t rounds, const double *sum) {
    EvalProgress *p = ctx;
    EvalRun *r = p->r;
    Grid *g = &r->g;
    Session *s = &r->s;
    ErrStatus st;
    if (k == 0 && r->o.dump_logits && g->dp_rank == 0 &&
        !eval_dump_logits(r->o.dump_logits, &s->m, &s->acts, &s->batch, s->labels, &s->gc, g,
                          &st)) {
        fprintf(stderr, "shardlora: error: --dump-logits: %s\n", st.msg);
        p->rc = EXIT_IO;
    }
    if ((k + 1) % r->o.log_every != 0 || k + 1 >= rounds) return;
    double part[2] = {sum[0], sum[1]};
    grid_allreduce_sum_f64(g, g->dp_comm, part, 2, GRID_BYTES_OTHER);
    /* the last stage's sums (every stage reaches round k; the others' are 0) */
    if (g->pp > 1) grid_allreduce_sum_f64(g, g->pp_comm, part, 2, GRID_BYTES_OTHER);
    const double el = timer_now() - p->t0;
    const int64_t per_round = s->B * g->dp;
    log_info("eval: %lld/%lld rounds (%.0f%%) | running loss %.4f | %.0f tok/s | elapsed %.1fs | "
             "eta %.1fs",
             (long long)(k + 1), (long long)rounds, 100.0 * (double)(k + 1) / (double)rounds,
             part[1] > 0 ? part[0] / part[1] : NAN, (double)((k + 1) * per_round * s->T) / el, el,
             el / (double)(k + 1) * (double)(rounds - k - 1));
}

/* The evaluation, its summary line and --out. Returns the exit status. */
static int eval_run(EvalRun *r) {
    const EvalOpts *o = &r->o;
    Grid *g = &r->g;
    const int64_t B = o->rows.micro_batch, T = o->rows.seq_len;
    int64_t rows = r->data.train.nrows;
    if (o->max_rows > 0 && o->max_rows < rows) rows = o->max_rows;
    const int64_t per_round = B * g->dp, rounds = (rows + per_round - 1) / per_round;
    log_info("evaluating %lld sequences of %lld tokens in %lld rounds of %lld (micro-batch %lld x "
             "dp %d)",
             (long long)rows, (long long)T, (long long)rounds, (long long)per_round, (long long)B,
             g->dp);
    EvalProgress prog = {r, timer_now(), 0};
    const RowSource src = tdata_train_source(&r->data);
    int64_t tokens = 0;
    const double loss = trainer_eval(&r->s, &src, rows, 0, eval_round, &prog, &tokens);
    const double secs = timer_now() - prog.t0;
    int rc = prog.rc;
    grid_allreduce_max_int(g, g->world, &rc, 1, GRID_BYTES_OTHER);
    /* a NaN / inf loss (e.g. a corrupted adapter) is a failure, as in train, merge and
     * generate: one line, exit 5, no --out (every rank has the same reduced sums) */
    const int nonfinite = tokens > 0 && !isfinite(loss);
    if (nonfinite && g->world_rank == 0)
        fprintf(stderr,
                "shardlora: error: the eval loss is not finite (%g over %lld tokens): the model%s "
                "produced "
                "NaN or inf\n",
                loss, (long long)tokens, o->adapter ? " or the adapter" : "");
    if (nonfinite && rc == 0) rc = EXIT_NONFINITE;
    json_t *res = NULL;
    if (g->world_rank == 0 && !nonfinite) {
        fprintf(stderr,
                "eval: loss %.6f | ppl %.4f | %lld tokens counted | %lld sequences of %lld | %.2fs "
                "(%.0f tok/s)%s%s\n",
                loss, exp(loss), (long long)tokens, (long long)rows, (long long)T, secs,
                (double)(rounds * per_round * T) / (secs > 0 ? secs : 1e-9),
                o->adapter ? " | adapter " : "", o->adapter ? o->adapter : "");
        if (tokens == 0)
            log_warn("no label token was counted (every label masked?): the loss is undefined");
        res = eval_result_json(o, g, loss, tokens, rows, secs);
        if (rc == 0) eval_print_json(res);
    }
    if (rc == 0 && o->out) {
        ErrStatus st;
        int ok = g->world_rank != 0 || afile_write_json(o->out, res, JSON_INDENT(2), &st);
        if (!grid_agree(g, ok, "shardlora: error", &st)) rc = EXIT_IO;
    }
    if (res) json_decref(res);
    return rc;
}

int cmd_eval(int argc, char **argv) {
    EvalRun run;
    EvalRun *r = &run;
    eval_options(r);
    int rc = mpicmd_begin(&r->g, &argc, &argv, r->specs, r->nspecs, "eval", EVAL_USAGE, EVAL_ABOUT,
                          &r->o.run, eval_check_opts, r, &r->env);
    if (rc >= 0) return eval_free(r, rc);
    rc = eval_setup(r);
    return eval_free(r, rc ? rc : eval_run(r));
}
