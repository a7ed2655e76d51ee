/* `shardlora train`: LoRA training of a frozen model on JSONL data (text, prompt/completion,
 * chat messages or pre-tokenised; launch/train_data.c turns it into rows).
 * Every rank parses the same options and reaches the same verdicts, so a bad flag or file
 * ends every rank with one clear line and no rank waits in a collective. */
#include <errno.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../io/afile.h"
#include "../io/peft.h"
#include "../io/safetensors.h"
#include "../model/adapter_init.h"
#include "../model/adapter_io.h"
#include "../model/llama.h"
#include "../model/optim.h"
#include "../model/sched.h"
#include "../parallel/grid.h"
#include "../parallel/gsync.h"
#include "../runtime/log.h"
#include "../runtime/timer.h"
#include "args.h"
#include "cmds.h"
#include "mpicmd.h"
#include "train_ckpt.h"
#include "train_data.h"

typedef struct {
    const char *model, *out, *targets, *lora_init, *optimizer, *pin, *kernels, *dump_grads,
        *log_level, *resume, *ckpt_failure, *chat_format, *long_examples, *cache_dir,
        *lr_schedule, *progress, *init_adapter, *adapter_kind, *init;
    ArgStrs data, eval_data;
    ArgConfig config;
    int64_t r, seq_len, micro_batch, global_batch, steps, tp, threads, log_every, ckpt_every,
        keep_ckpts, ckpt_chunk_bytes, warmup_steps, eval_every, eval_rows, pissa_iters;
    double ckpt_minutes, epochs, eval_split;
    double alpha, dropout, lr, beta1, beta2, eps, weight_decay, momentum, peak_gflops,
        max_grad_norm, loraplus_ratio;
    int rslora, nesterov, train_on_prompt, pack, shuffle, skip_bad, add_eos, skip_nonfinite;
    uint64_t seed;
} TrainOpts;

/* Ends the run on every rank with status `code` (each rank calls it with the same verdict). */
static int train_finish(Grid *g, int code) {
    grid_finalize(g);
    return code;
}

/* One verdict for all ranks: if any rank failed, the lowest failing rank prints its message
 * (one line, not one per rank) and every rank returns 0. */
static int train_agree(Grid *g, int ok, const ErrStatus *st) {
    int first = grid_first_failed(g, ok);
    if (first == g->world_rank) fprintf(stderr, "shardlora: error: %s\n", st->msg);
    return first < 0;
}

/* Measures this rank's sgemm speed for MFU (all ranks at once, as in training): the best of
 * several short repetitions, so a moment of contention on a shared machine does not lower
 * the peak (and raise the MFU) for the whole run. */
static double train_measure_peak(GemmCtx *gc, MemCtx *mem) {
    const int64_t n = 1024;
    size_t bytes = (size_t)(n * n) * sizeof(float);
    float *a = mem_alloc(mem, MEM_OTHER, bytes), *b = mem_alloc(mem, MEM_OTHER, bytes),
          *c = mem_alloc(mem, MEM_OTHER, bytes);
    for (int64_t i = 0; i < n * n; i++) a[i] = b[i] = (float)(i % 7) * 0.01f;
    gemm_f32(gc, 0, 1, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    double best = 0;
    for (int r = 0; r < 10; r++) {
        double t0 = timer_now();
        gemm_f32(gc, 0, 1, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double g = 2.0 * (double)n * n * n / (timer_now() - t0) / 1e9;
        if (g > best) best = g;
    }
    mem_free(mem, MEM_OTHER, a, bytes);
    mem_free(mem, MEM_OTHER, b, bytes);
    mem_free(mem, MEM_OTHER, c, bytes);
    return best;
}

/* n rows of the training stream from index `first` (DESIGN.md §5: the global batch of a
 * step is rows [cursor, cursor + G) of a stream fixed by the data and the seed, whatever
 * the layout; DP rank d takes its contiguous share). */
static void train_rows(TrainData *d, int64_t first, int64_t n, int64_t T, int32_t *ids,
                       int64_t *labels, int64_t *pos) {
    for (int64_t j = 0; j < n; j++)
        tdata_train_row(d, first + j, T, ids + j * T, labels + j * T, pos + j * T);
}

/* "1h02m03s", "4m05s", "7.3s" */
static const char *train_fmt_dur(double s, char *buf, size_t n) {
    if (!(s >= 0) || s > 1e9) snprintf(buf, n, "?");
    else if (s >= 3600) snprintf(buf, n, "%dh%02dm%02ds", (int)(s / 3600), (int)(s / 60) % 60, (int)s % 60);
    else if (s >= 60) snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)s % 60);
    else snprintf(buf, n, "%.1fs", s);
    return buf;
}

/* Counted label tokens of n rows (Hugging Face shift: position t predicts labels[t+1]). */
static int64_t train_count_labels(const int64_t *labels, int64_t n, int64_t T) {
    int64_t c = 0;
    for (int64_t j = 0; j < n; j++)
        for (int64_t t = 1; t < T; t++) c += labels[j * T + t] != -100;
    return c;
}

/* Full (gathered) adapter tensors on world rank 0, for the dump and the adapter file. */
typedef struct {
    int n;
    float **t; /* [n] dense [grows, gcols] */
} TrainFull;

static void train_full_alloc(TrainFull *f, const ParamTable *p) {
    f->n = p->n;
    f->t = calloc((size_t)p->n, sizeof *f->t);
    SL_CHECK(f->t, "out of memory");
    for (int i = 0; i < p->n; i++) {
        f->t[i] = malloc((size_t)(p->e[i].grows * p->e[i].gcols) * sizeof(float));
        SL_CHECK(f->t[i], "out of memory");
    }
}

static void train_full_free(TrainFull *f) {
    for (int i = 0; f->t && i < f->n; i++) free(f->t[i]);
    free(f->t);
    memset(f, 0, sizeof *f);
}

/* Gathers buf (values or grads) over the TP group of DP rank 0 into full tensors on world
 * rank 0. Every rank calls it; only DP rank 0's TP group communicates. */
static void train_gather(const ParamTable *p, const float *buf, Grid *g, TrainFull *out) {
    if (g->dp_rank != 0) return;
    params_gather(p, buf, g, g->world_rank == 0 ? out->t : NULL);
}

/* --dump-grads: loss, the whole global batch, every adapter tensor and its synchronised
 * gradient (full tensors), with the run's settings as metadata (the contract of
 * tests/reference). */
static int train_dump(const char *path, const TrainOpts *o, const char *targets_csv,
                      const Grid *g, const ParamTable *p, const TrainFull *vals,
                      const TrainFull *grads, double loss, const int32_t *ids,
                      const int64_t *labels, const int64_t *pos, int64_t G, int64_t T,
                      int64_t step, ErrStatus *st) {
    StWriter w;
    st_writer_init(&w);
    float lossf = (float)loss;
    int64_t one = 1, bt[2] = {G, T};
    int64_t *ids64 = malloc((size_t)(G * T) * sizeof *ids64);
    char(*gnames)[200] = malloc((size_t)p->n * sizeof *gnames);
    SL_CHECK(ids64 && gnames, "out of memory");
    for (int64_t i = 0; i < G * T; i++) ids64[i] = ids[i];
    st_writer_add(&w, "loss", ST_F32, 1, &one, &lossf);
    st_writer_add(&w, "input_ids", ST_I64, 2, bt, ids64);
    st_writer_add(&w, "labels", ST_I64, 2, bt, labels);
    st_writer_add(&w, "position_ids", ST_I64, 2, bt, pos);
    for (int i = 0; i < p->n; i++) {
        const ParamEntry *e = &p->e[i];
        int64_t shape[2] = {e->grows, e->gcols};
        snprintf(gnames[i], sizeof gnames[i], "%s.grad", e->name);
        st_writer_add(&w, e->name, ST_F32, 2, shape, vals->t[i]);
        st_writer_add(&w, gnames[i], ST_F32, 2, shape, grads->t[i]);
    }
    char buf[64];
#define META_F(key, val) (snprintf(buf, sizeof buf, "%.9g", (double)(val)), st_writer_meta(&w, key, buf))
#define META_I(key, val) (snprintf(buf, sizeof buf, "%lld", (long long)(val)), st_writer_meta(&w, key, buf))
    META_I("lora_r", o->r);
    META_F("lora_alpha", o->alpha);
    META_I("use_rslora", o->rslora);
    st_writer_meta(&w, "target_modules", targets_csv);
    META_F("lora_dropout", o->dropout);
    st_writer_meta(&w, "lora_init", o->lora_init);
    st_writer_meta(&w, "adapter_kind", o->adapter_kind);
    META_F("loraplus_ratio", o->loraplus_ratio);
    META_I("step", step);
    st_writer_meta(&w, "optimizer", o->optimizer);
    META_F("lr", o->lr);
    META_F("beta1", o->beta1);
    META_F("beta2", o->beta2);
    META_F("eps", o->eps);
    META_F("weight_decay", o->weight_decay);
    META_F("momentum", o->momentum);
    META_I("nesterov", o->nesterov);
    META_F("max_grad_norm", o->max_grad_norm);
    META_I("micro_batch", o->micro_batch);
    META_I("global_batch", G);
    META_I("seq_len", T);
    META_I("tp", g->tp);
    META_I("dp", g->dp);
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)o->seed);
    st_writer_meta(&w, "seed", buf);
#undef META_F
#undef META_I
    int ok = st_writer_write(&w, path, st);
    st_writer_free(&w);
    free(ids64);
    free(gnames);
    return ok;
}

/* OUT/adapter/: the PEFT files and the model card, from the configuration the checkpoints
 * keep (so `shardlora export` of the final checkpoint writes the same bytes). */
static int train_write_adapter(const TrainOpts *o, const ParamTable *p, const TrainFull *vals,
                               const char *adapter_json, int64_t L, const AdioCard *card,
                               ErrStatus *st) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/adapter", o->out);
    AdioCfg c;
    if (!adio_cfg_from_json(&c, adapter_json, L, st)) return 0;
    free(c.base_model);
    c.base_model = strdup(o->model);
    SL_CHECK(c.base_model, "out of memory");
    AdioTensor *t = calloc((size_t)(p->n > 0 ? p->n : 1), sizeof *t);
    SL_CHECK(t, "out of memory");
    for (int i = 0; i < p->n; i++)
        t[i] = (AdioTensor){p->e[i].name, p->e[i].grows, p->e[i].gcols, vals->t[i]};
    int ok = launch_mkdirs(dir) ? adio_export(dir, &c, t, p->n, card, st)
                                : err_status_set(st, "%s: cannot create: %s", dir, strerror(errno));
    free(t);
    adio_cfg_free(&c);
    return ok;
}

/* OUT/summary-rank{R}.json: this rank's memory and communication figures (tests read it). */
static int train_write_summary(const TrainOpts *o, const Grid *g, const LlamaModel *m,
                               int64_t steps, ErrStatus *st) {
    static const char *keys[GRID_NBYTES] = {"tp", "dp", "world", "kv", "other"};
    json_t *j = json_object(), *bytes = json_object(), *calls = json_object();
    json_object_set_new(j, "rank", json_integer(g->world_rank));
    json_object_set_new(j, "world", json_integer(g->world_size));
    json_object_set_new(j, "tp", json_integer(g->tp));
    json_object_set_new(j, "dp", json_integer(g->dp));
    json_object_set_new(j, "tp_rank", json_integer(g->tp_rank));
    json_object_set_new(j, "dp_rank", json_integer(g->dp_rank));
    json_object_set_new(j, "steps", json_integer(steps));
    json_object_set_new(j, "frozen_bytes", json_integer((json_int_t)m->frozen_bytes));
    json_object_set_new(j, "frozen_bytes_read", json_integer((json_int_t)m->bytes_read));
    json_object_set_new(j, "replicated_frozen_bytes", json_integer((json_int_t)m->replicated_bytes));
    json_object_set_new(j, "adapter_bytes", json_integer((json_int_t)(m->params.total * sizeof(float))));
    /* what has gradients and optimizer state (frozen entries, e.g. LoRA-FA's A, do not) */
    json_object_set_new(j, "trainable_bytes", json_integer((json_int_t)(m->params.trainable * sizeof(float))));
    /* the gradient buffer by sync class; a class moves its bytes each step when its
     * communicator has more than one rank (dp_comm, world, the kv-head group) */
    json_t *regions = json_object();
    static const char *rkeys[PARAM_NREGIONS] = {"dp", "world", "kv", "frozen"};
    for (int s = 0; s < PARAM_NREGIONS; s++)
        json_object_set_new(regions, rkeys[s], json_integer((json_int_t)(m->params.region_len[s] * sizeof(float))));
    json_object_set_new(j, "adapter_region_bytes", regions);
    for (int c = 0; c < GRID_NBYTES; c++) {
        json_object_set_new(bytes, keys[c], json_integer((json_int_t)g->bytes[c]));
        json_object_set_new(calls, keys[c], json_integer((json_int_t)g->calls[c]));
    }
    json_object_set_new(j, "comm_bytes", bytes);
    json_object_set_new(j, "comm_calls", calls);
    char path[4200];
    snprintf(path, sizeof path, "%s/summary-rank%d.json", o->out, g->world_rank);
    int ok = afile_write_json(path, j, JSON_INDENT(2), st);
    json_decref(j);
    return ok;
}

static void train_targets_csv(unsigned targets, char *buf, size_t n) {
    size_t off = 0;
    buf[0] = 0;
    for (int i = 0; i < MOD_NMODULES; i++)
        if (targets & (1u << i))
            off += (size_t)snprintf(buf + off, n - off, "%s%s", off ? "," : "",
                                    adapter_module_name((ModuleId)i));
}

/* Where each rank runs: host, CPUs it may use, NUMA node (one line per rank). */
static void train_log_binding(const Grid *g, const MemCtx *mem) {
    char host[256] = "?", cpus[256] = "";
    gethostname(host, sizeof host - 1);
    cpu_set_t set;
    CPU_ZERO(&set);
    size_t off = 0;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        for (int c = 0; c < CPU_SETSIZE && off + 8 < sizeof cpus; c++) {
            if (!CPU_ISSET(c, &set)) continue;
            int e = c;
            while (e + 1 < CPU_SETSIZE && CPU_ISSET(e + 1, &set)) e++;
            off += (size_t)snprintf(cpus + off, sizeof cpus - off, off ? ",%d" : "%d", c);
            if (e > c) off += (size_t)snprintf(cpus + off, sizeof cpus - off, "-%d", e);
            c = e;
        }
    }
    log_rank("rank %d: tp_rank %d dp_rank %d on %s, cpus %s, NUMA node %d", g->world_rank,
             g->tp_rank, g->dp_rank, host, cpus, mem->numa_node);
}

/* Starts the gradient buckets of a layer once its backward is done (last micro-batch). */
typedef struct {
    Gsync *gs;
    Grid *g;
    const int *bucket; /* [L][PARAM_NSYNC] */
    int active;
} TrainSync;

static void train_layer_done(void *ctx, int layer) {
    TrainSync *ts = ctx;
    if (!ts->active) return;
    for (int s = 0; s < PARAM_NSYNC; s++) gsync_start(ts->gs, ts->g, ts->bucket[layer * PARAM_NSYNC + s]);
}

/* SIGUSR1 (Slurm's --signal) or SIGTERM asks for a checkpoint and a clean exit at the next
 * step boundary; a second SIGTERM exits at once. Signal state is process-wide by nature. */
static volatile sig_atomic_t g_train_signal;
static volatile sig_atomic_t g_train_terms;

static void train_on_signal(int sig) {
    if (sig == SIGTERM && g_train_terms++ > 0) _exit(128 + SIGTERM);
    g_train_signal = sig;
}

static void train_install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = train_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* Keeps the metrics lines of steps <= last (a resumed run rewrites what came after). */
static void train_trim_metrics(const char *path, int64_t last) {
    FILE *f = fopen(path, "r");
    if (!f) return;
    char *line = NULL, *keep = NULL;
    size_t cap = 0, klen = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        long long st = -1;
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

/* Mean loss over the eval rows (all of them, or the first max_rows): each DP rank runs
 * micro-batches of its share, empty rows pad the last round; the sums meet over dp. */
static double train_eval(LlamaModel *m, LlamaActs *acts, LlamaBatch *batch, int64_t *labels,
                         TrainData *d, int64_t max_rows, const KernOps *kops, KernCtx *kc, Grid *g,
                         GemmCtx *gc, uint64_t seed, int64_t *tokens_out) {
    const int64_t B = batch->B, T = batch->T;
    int64_t rows = d->eval.nrows;
    if (max_rows > 0 && max_rows < rows) rows = max_rows;
    const int64_t per_round = B * g->dp, rounds = (rows + per_round - 1) / per_round;
    AdapterEnv env = {gc, seed, 0, 0, 0};
    llama_adapters_step_begin(m, &env); /* DoRA: norms of the current adapter */
    double sum[2] = {0, 0}; /* loss sum, counted tokens */
    for (int64_t k = 0; k < rounds; k++) {
        const int64_t row0 = k * per_round + (int64_t)g->dp_rank * B;
        for (int64_t j = 0; j < B; j++) {
            int64_t r = row0 + j;
            tdata_eval_row(d, r < rows ? r : d->eval.nrows, T, batch->ids + j * T, labels + j * T,
                           batch->pos + j * T);
        }
        llama_batch_prepare(batch, m, labels);
        int64_t counted = 0;
        sum[0] += llama_forward(m, acts, batch, 1.0f, 0, &env, kops, kc, g, &counted);
        sum[1] += (double)counted;
    }
    grid_allreduce_sum_f64(g, g->dp_comm, sum, 2, GRID_BYTES_OTHER);
    *tokens_out = (int64_t)sum[1];
    return sum[1] > 0 ? sum[0] / sum[1] : NAN;
}

/* OUT/run.json: the resolved configuration, the layout, the data, and the versions of what
 * the run ran on. */
static int train_write_run_json(const char *out, const ArgSpec *specs, int nspecs, int argc,
                                char **argv, const Grid *g, const GemmCtx *gc,
                                const char *fingerprint, const TrainData *d, int64_t G,
                                int64_t total_steps, const char *sched_desc, ErrStatus *st) {
    json_t *j = json_object(), *cmd = json_array(), *layout = json_object(), *ver = json_object(),
           *data = json_object();
    for (int i = 0; i < argc; i++) json_array_append_new(cmd, json_string(argv[i]));
    json_object_set_new(j, "shardlora_version", json_string(SHARDLORA_VERSION));
    json_object_set_new(j, "command", cmd);
    json_object_set_new(j, "config", args_to_json(specs, nspecs));
    json_object_set_new(layout, "world", json_integer(g->world_size));
    json_object_set_new(layout, "tp", json_integer(g->tp));
    json_object_set_new(layout, "dp", json_integer(g->dp));
    json_object_set_new(layout, "global_batch", json_integer((json_int_t)G));
    json_object_set_new(layout, "total_steps", json_integer((json_int_t)total_steps));
    json_object_set_new(layout, "lr_schedule", json_string(sched_desc));
    json_object_set_new(j, "resolved", layout);
    json_object_set_new(data, "train_fingerprint", json_string(d->fingerprint));
    json_object_set_new(data, "train_documents", json_integer((json_int_t)d->train.docs));
    json_object_set_new(data, "train_rows_per_epoch", json_integer((json_int_t)d->train.nrows));
    json_object_set_new(data, "train_tokens", json_integer((json_int_t)d->train.tokens));
    json_object_set_new(data, "train_counted_tokens", json_integer((json_int_t)d->train.counted));
    json_object_set_new(data, "truncated", json_integer((json_int_t)d->train.truncated));
    json_object_set_new(data, "split", json_integer((json_int_t)d->train.split));
    json_object_set_new(data, "dropped", json_integer((json_int_t)d->train.dropped));
    json_object_set_new(data, "bad_lines_skipped", json_integer((json_int_t)d->train_cache.stats.bad_lines));
    json_object_set_new(data, "chat_format", json_string(chat_format_name(d->ds.chat)));
    json_object_set_new(data, "eval_documents", json_integer((json_int_t)(d->has_eval ? d->eval.docs : 0)));
    json_object_set_new(data, "eval_rows", json_integer((json_int_t)(d->has_eval ? d->eval.nrows : 0)));
    json_object_set_new(j, "data", data);
    char mpiv[MPI_MAX_LIBRARY_VERSION_STRING] = "";
    int len = 0;
    MPI_Get_library_version(mpiv, &len);
    char *nl = strchr(mpiv, '\n');
    if (nl) *nl = 0;
    char desc[256];
    json_object_set_new(ver, "mpi", json_string(mpiv));
    json_object_set_new(ver, "blas", json_string(gemm_describe(gc, desc, sizeof desc)));
    json_object_set_new(ver, "jansson", json_string(JANSSON_VERSION));
    json_object_set_new(j, "versions", ver);
    json_object_set_new(j, "model_fingerprint", json_string(fingerprint));
    char path[4200];
    snprintf(path, sizeof path, "%s/run.json", out);
    int ok = afile_write_json(path, j, JSON_INDENT(2), st);
    json_decref(j);
    return ok;
}

/* The live progress bar (a terminal) or nothing; log lines clear it first. */
typedef struct {
    int bar;
    int shown;
} TrainProgress;

static void train_bar_clear(TrainProgress *p) {
    if (!p->shown) return;
    fputs("\r\033[K", stdout);
    p->shown = 0;
}

static void train_bar_draw(TrainProgress *p, int64_t step, int64_t total, double loss, double eta) {
    if (!p->bar) return;
    char bar[33], dur[32];
    int fill = (int)(32.0 * (double)step / (double)(total > 0 ? total : 1));
    for (int i = 0; i < 32; i++) bar[i] = i < fill ? '#' : '.';
    bar[32] = 0;
    printf("\r\033[K[%s] %lld/%lld %3.0f%% loss %.4f eta %s", bar, (long long)step, (long long)total,
           100.0 * (double)step / (double)(total > 0 ? total : 1), loss, train_fmt_dur(eta, dur, sizeof dur));
    fflush(stdout);
    p->shown = 1;
}

/* Removes the token caches of a run that stopped before training, then the cache and output
 * directories if that leaves them empty (rmdir removes nothing else). */
static void train_remove_caches(const char *cache_dir, const char *out) {
    static const char *const names[] = {"train", "train.tmp", "eval", "eval.tmp"};
    char path[4300];
    ErrStatus st;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", cache_dir, names[i]);
        afile_rmdir_flat(path, &st);
    }
    rmdir(cache_dir);
    rmdir(out);
}

/* A run refused before training leaves no trace of itself: the caches and OUT go when this
 * run created them (a --cache-dir that existed holds caches other runs may reuse; an --out
 * that existed is the user's). */
static void train_drop_outputs(const char *cache_dir, const char *out, int out_existed, int cache_existed) {
    if (!out_existed && !cache_existed) {
        train_remove_caches(cache_dir, out);
        return;
    }
    if (!cache_existed) rmdir(cache_dir); /* only if empty: a finished cache stays reusable */
    if (!out_existed) rmdir(out);
}

/* x as a JSON number, or null when it is not finite (JSON has no NaN or infinity). */
static const char *train_json_num(double x, char *buf, size_t n) {
    if (!isfinite(x)) return "null";
    snprintf(buf, n, "%.9g", x);
    return buf;
}

/* s as a quoted, escaped JSON string (malloc'd). Bytes that are not UTF-8 become '?'
 * (jansson accepts only UTF-8). */
static char *train_json_quote(const char *s) {
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

static char *train_asprintf(const char *fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *out = n >= 0 ? malloc((size_t)n + 1) : NULL;
    SL_CHECK(out, "out of memory");
    vsnprintf(out, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return out;
}

/* The run configuration the checkpoints keep (malloc'd JSON): its first keys are what
 * export and the model card read; the row-stream keys from "pack" on are compared on
 * resume (train_ckpt.c), with seq_len and data_fingerprint. */
static char *train_run_config(const TrainOpts *o, const TrainData *d, int64_t T, int64_t B, int64_t G,
                              int64_t total_steps, const char *sched_desc) {
    char *model = train_json_quote(o->model), *sched = train_json_quote(sched_desc),
         *init = o->init_adapter ? train_json_quote(o->init_adapter) : NULL,
         *lmode = train_json_quote(o->long_examples);
    char *j = train_asprintf(
        "{\"model\": %s, \"data_fingerprint\": \"%s\", \"seq_len\": %lld, \"micro_batch\": %lld, "
        "\"global_batch\": %lld, \"steps\": %lld, \"seed\": %llu, \"max_grad_norm\": %.9g, "
        "\"lr_schedule\": %s%s%s, \"pack\": %s, \"long_examples\": %s, \"shuffle\": %s, "
        "\"eval_split\": %.9g, \"train_rows\": %lld, \"train_tokens\": %lld, \"train_counted_tokens\": %lld}",
        model, d->fingerprint, (long long)T, (long long)B, (long long)G, (long long)total_steps,
        (unsigned long long)o->seed, o->max_grad_norm, sched, init ? ", \"init_adapter\": " : "",
        init ? init : "", o->pack ? "true" : "false", lmode, o->shuffle ? "true" : "false", o->eval_split,
        (long long)d->train.nrows, (long long)d->train.tokens, (long long)d->train.counted);
    free(model);
    free(sched);
    free(init);
    free(lmode);
    return j;
}

/* What the run did, for the closing summary. */
typedef struct {
    int64_t steps, skipped, tokens, counted;
    double wall, t_steps, t_eval, flops, peak_flops; /* peak over all ranks, FLOP/s */
    double last_loss, last_eval, best_eval;
    int64_t best_step;
} TrainTotals;

/* Prints the closing summary on rank 0 and writes it to OUT/summary.json. */
static int train_write_final(const char *out, const TrainTotals *t, const TrainData *d, const MemCtx *mem,
                             ErrStatus *st) {
    char d1[32], d2[32];
    const double tps = t->t_steps > 0 ? (double)t->tokens / t->t_steps : 0;
    const double mfu = t->t_steps > 0 ? t->flops / t->t_steps / t->peak_flops : 0;
    log_info("summary: %lld steps (%lld skipped) in %s (%s training, %.1fs evaluating); %lld tokens "
             "processed, %lld trained on; %.0f tokens/s, MFU %.1f%%; last train loss %.4f",
             (long long)t->steps, (long long)t->skipped, train_fmt_dur(t->wall, d1, sizeof d1),
             train_fmt_dur(t->t_steps, d2, sizeof d2), t->t_eval, (long long)t->tokens,
             (long long)t->counted, tps, 100.0 * mfu, t->last_loss);
    if (t->best_step >= 0)
        log_info("summary: best eval loss %.4f (ppl %.3f) at step %lld", t->best_eval, exp(t->best_eval),
                 (long long)t->best_step);
    else
        log_info("summary: no evaluation (no --eval-data or --eval-split)");
    log_info("summary: data %lld documents in %lld sequences per epoch; longer than the sequence: %lld "
             "truncated, %lld split, %lld dropped; bad lines skipped: %lld",
             (long long)d->train.docs, (long long)d->train.nrows, (long long)d->train.truncated,
             (long long)d->train.split, (long long)d->train.dropped, (long long)d->train_cache.stats.bad_lines);
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
    json_object_set_new(j, "last_loss", isfinite(t->last_loss) ? json_real(t->last_loss) : json_null());
    json_object_set_new(j, "last_eval_loss", isfinite(t->last_eval) ? json_real(t->last_eval) : json_null());
    json_object_set_new(j, "best_eval_loss", t->best_step >= 0 ? json_real(t->best_eval) : json_null());
    json_object_set_new(j, "best_eval_step", t->best_step >= 0 ? json_integer((json_int_t)t->best_step) : json_null());
    for (int c = 0; c < MEM_NCATEGORY; c++)
        json_object_set_new(memj, mem_category_name((MemCategory)c), json_integer((json_int_t)mem->peak[c]));
    json_object_set_new(j, "peak_memory_bytes_rank0", memj);
    json_t *dj = json_object();
    json_object_set_new(dj, "documents", json_integer((json_int_t)d->train.docs));
    json_object_set_new(dj, "sequences_per_epoch", json_integer((json_int_t)d->train.nrows));
    json_object_set_new(dj, "truncated", json_integer((json_int_t)d->train.truncated));
    json_object_set_new(dj, "split", json_integer((json_int_t)d->train.split));
    json_object_set_new(dj, "dropped", json_integer((json_int_t)d->train.dropped));
    json_object_set_new(dj, "bad_lines_skipped", json_integer((json_int_t)d->train_cache.stats.bad_lines));
    json_object_set_new(j, "data", dj);
    char path[4200];
    snprintf(path, sizeof path, "%s/summary.json", out);
    int ok = afile_write_json(path, j, JSON_INDENT(2), st);
    json_decref(j);
    return ok;
}

/* --init-adapter: the adapter's configuration replaces the LoRA flags; a flag given
 * explicitly with another value is named in a warning. */
static void train_init_overrides(TrainOpts *o, const ArgSpec *specs, int nspecs, const AdioCfg *ac,
                                 int say, char *csv, size_t ncsv) {
    train_targets_csv(ac->acfg.targets, csv, ncsv);
    unsigned flag_targets = 0;
    ErrStatus ignore;
    adapter_parse_targets(o->targets, &flag_targets, &ignore);
    const struct {
        const char *flag;
        int differs;
    } checks[] = {
        {"lora-r", o->r != ac->acfg.r || ac->slot_r},
        {"lora-alpha", o->alpha != ac->alpha || ac->slot_alpha_d},
        {"lora-dropout", o->dropout != ac->dropout},
        {"use-rslora", o->rslora != ac->acfg.use_rslora},
        {"target-modules", flag_targets != ac->acfg.targets || ac->slot_r},
    };
    for (size_t i = 0; say && i < sizeof checks / sizeof checks[0]; i++) {
        const ArgSpec *a = args_find(specs, nspecs, checks[i].flag);
        if (a && a->seen != ARG_FROM_DEFAULT && checks[i].differs)
            log_warn("--%s ignored: --init-adapter %s sets the adapter's configuration", checks[i].flag,
                     o->init_adapter);
    }
    if (say)
        log_info("adapter from --init-adapter %s: r=%d alpha=%g dropout=%g rslora=%d targets=%s%s", o->init_adapter,
                 ac->acfg.r, ac->alpha, ac->dropout, ac->acfg.use_rslora, csv,
                 ac->slot_r ? " (per-module ranks / alphas / layers from rank_pattern, alpha_pattern, "
                              "layers_to_transform)" : "");
    o->r = ac->acfg.r;
    o->alpha = ac->alpha;
    o->dropout = ac->dropout;
    o->rslora = ac->acfg.use_rslora;
    o->targets = csv;
}

int cmd_train(int argc, char **argv) {
    TrainOpts o;
    memset(&o, 0, sizeof o);
    o.targets = "all";
    o.lora_init = "default";
    o.adapter_kind = "lora";
    o.pissa_iters = 4;
    o.optimizer = "adamw";
    o.pin = "auto";
    o.kernels = "fast";
    o.log_level = "info";
    o.chat_format = "auto";
    o.long_examples = "truncate";
    o.lr_schedule = "linear";
    o.progress = "auto";
    o.r = 8;
    o.alpha = 16;
    o.seq_len = 512;
    o.micro_batch = 1;
    o.epochs = 1;
    o.tp = 1;
    o.log_every = 10;
    o.lr = 2e-4;
    o.beta1 = 0.9;
    o.beta2 = 0.999;
    o.eps = 1e-8;
    o.seed = 42;
    o.resume = "auto";
    o.ckpt_failure = "continue";
    o.keep_ckpts = 3;
    o.pack = 1;
    o.shuffle = 1;
    o.add_eos = 1;
    ArgSpec specs[] = {
        {"config", ARG_CONFIG, &o.config, "FILE", "read options from FILE first (JSON object or `key = value` lines; keys are these flag names; flags override)", 0, 0},
        {"model", ARG_STR, &o.model, "DIR", "Hugging Face model directory (config.json, safetensors, tokenizer.json)", 1, 0},
        {"data", ARG_STRS, &o.data, "FILE", "JSONL training data; per line {\"text\"}, {\"prompt\",\"completion\"}, {\"messages\":[{\"role\",\"content\"}]} or {\"input_ids\"[,\"labels\"]}", 1, 0},
        {"eval-data", ARG_STRS, &o.eval_data, "FILE", "JSONL evaluation data (same formats)", 0, 0},
        {"eval-split", ARG_FLOAT, &o.eval_split, "FRAC", "hold out this fraction of the training documents for evaluation (when no --eval-data)", 0, 0},
        {"out", ARG_STR, &o.out, "DIR", "output directory: adapter/, metrics.jsonl, run.json, summary.json, checkpoints/, cache/", 1, 0},
        {"chat-format", ARG_STR, &o.chat_format, "NAME", "template for \"messages\": auto (from tokenizer_config.json) | llama3 | mistral | llama2 | chatml | qwen2", 0, 0},
        {"train-on-prompt", ARG_BOOL, &o.train_on_prompt, NULL, "count prompt tokens and non-assistant turns in the loss too", 0, 0},
        {"add-eos", ARG_BOOL, &o.add_eos, NULL, "append the EOS token to text and prompt/completion examples", 0, 0},
        {"pack", ARG_BOOL, &o.pack, NULL, "pack several documents per sequence (attention and positions restart per document)", 0, 0},
        {"long-examples", ARG_STR, &o.long_examples, "HOW", "documents longer than --seq-len: truncate | split | drop", 0, 0},
        {"shuffle", ARG_BOOL, &o.shuffle, NULL, "visit the sequences in a seeded permutation per epoch (off: file order)", 0, 0},
        {"skip-bad-lines", ARG_BOOL, &o.skip_bad, NULL, "skip (and count) bad data lines instead of stopping at the first", 0, 0},
        {"cache-dir", ARG_STR, &o.cache_dir, "DIR", "token caches (default: OUT/cache); reused while the data, tokenizer and data options are unchanged", 0, 0},
        {"lora-r", ARG_INT, &o.r, "N", "LoRA rank r", 0, 0},
        {"lora-alpha", ARG_FLOAT, &o.alpha, "X", "LoRA alpha (scale = alpha / r)", 0, 0},
        {"lora-dropout", ARG_FLOAT, &o.dropout, "P", "dropout on the LoRA input, in [0, 1)", 0, 0},
        {"use-rslora", ARG_BOOL, &o.rslora, NULL, "rsLoRA scale alpha / sqrt(r)", 0, 0},
        {"adapter", ARG_STR, &o.adapter_kind, "KIND", "lora | lora-fa (PEFT's LoRA-FA optimizer: A frozen after init, B's gradient projected by (1/s^2) pinv(A A^T + 1e-8 I) before the update) | dora | vera (the kinds this build has)", 0, 0},
        {"init", ARG_STR, &o.init, "KIND", "default (A ~ U(+-1/sqrt(in))) | gaussian (A ~ N(0, 1/r)); B = 0 | pissa (top-r singular vectors of W, base replaced by the residual)", 0, 0},
        {"lora-init", ARG_STR, &o.lora_init, "KIND", "alias of --init", 0, 0},
        {"pissa-iters", ARG_INT, &o.pissa_iters, "N", "--init pissa: power iterations of the randomized SVD", 0, 0},
        {"loraplus-ratio", ARG_FLOAT, &o.loraplus_ratio, "X", "LoRA+: lora_B's learning rate = X x lora_A's (paper default 16; 0: off)", 0, 0},
        {"target-modules", ARG_STR, &o.targets, "LIST", "comma list of q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj, or all", 0, 0},
        {"init-adapter", ARG_STR, &o.init_adapter, "DIR", "start from this PEFT adapter (adapter_config.json + adapter_model.safetensors: any r, alpha, targets, rank_pattern, alpha_pattern, layers_to_transform), sharded onto this layout; its configuration wins over --lora-r, --lora-alpha, --lora-dropout, --use-rslora and --target-modules (a warning names each flag it overrides); a checkpoint to resume from wins over its values", 0, 0},
        {"seq-len", ARG_INT, &o.seq_len, "T", "tokens per sequence", 0, 0},
        {"micro-batch", ARG_INT, &o.micro_batch, "B", "sequences per micro-batch on each data-parallel rank", 0, 0},
        {"global-batch", ARG_INT, &o.global_batch, "G", "sequences per optimizer step (0: micro-batch x dp); a multiple of micro-batch x dp, the rest is gradient accumulation", 0, 0},
        {"epochs", ARG_FLOAT, &o.epochs, "E", "passes over the training data (may be fractional); ignored when --steps is given", 0, 0},
        {"steps", ARG_INT, &o.steps, "N", "optimizer steps (0: from --epochs)", 0, 0},
        {"optimizer", ARG_STR, &o.optimizer, "NAME", "adamw (torch.optim.AdamW) | adamw-hf (transformers' AdamW, as PEFT's LoRA-FA optimizer: eps added before the bias corrections, decay after the update) | sgd", 0, 0},
        {"lr", ARG_FLOAT, &o.lr, "X", "peak learning rate", 0, 0},
        {"lr-schedule", ARG_STR, &o.lr_schedule, "NAME", "constant | linear | cosine (after the warmup; Hugging Face's definitions)", 0, 0},
        {"warmup-steps", ARG_INT, &o.warmup_steps, "N", "linear warmup from 0 over N steps", 0, 0},
        {"beta1", ARG_FLOAT, &o.beta1, "X", "AdamW beta1", 0, 0},
        {"beta2", ARG_FLOAT, &o.beta2, "X", "AdamW beta2", 0, 0},
        {"eps", ARG_FLOAT, &o.eps, "X", "AdamW epsilon", 0, 0},
        {"weight-decay", ARG_FLOAT, &o.weight_decay, "X", "AdamW decoupled weight decay / SGD L2", 0, 0},
        {"momentum", ARG_FLOAT, &o.momentum, "X", "SGD momentum", 0, 0},
        {"nesterov", ARG_BOOL, &o.nesterov, NULL, "SGD Nesterov momentum", 0, 0},
        {"max-grad-norm", ARG_FLOAT, &o.max_grad_norm, "X", "clip the gradient to this global norm (0: off)", 0, 0},
        {"skip-nonfinite", ARG_BOOL, &o.skip_nonfinite, NULL, "on a non-finite loss or gradient, skip the update and count it (default: stop, exit 5)", 0, 0},
        {"eval-every", ARG_INT, &o.eval_every, "N", "evaluate every N steps (0: only at the end); needs --eval-data or --eval-split", 0, 0},
        {"eval-rows", ARG_INT, &o.eval_rows, "N", "evaluate on the first N eval sequences only (0: all)", 0, 0},
        {"seed", ARG_U64, &o.seed, "N", "seed of everything random (Philox keys): init, dropout, data order, eval split", 0, 0},
        {"tp", ARG_INT, &o.tp, "N", "tensor-parallel size (world = dp x tp; a TP group is consecutive ranks)", 0, 0},
        {"threads", ARG_INT, &o.threads, "N", "threads per rank (0: the CPUs this rank may use)", 0, 0},
        {"pin-memory", ARG_STR, &o.pin, "MODE", "auto | on | off: mlock the frozen weights", 0, 0},
        {"kernels", ARG_STR, &o.kernels, "NAME", "fast | reference", 0, 0},
        {"peak-gflops", ARG_FLOAT, &o.peak_gflops, "X", "GEMM peak per rank for MFU (0: measure at start-up)", 0, 0},
        {"dump-grads", ARG_STR, &o.dump_grads, "FILE", "at the last step, write loss, global batch, adapter and gradients (safetensors)", 0, 0},
        {"ckpt-every", ARG_INT, &o.ckpt_every, "N", "checkpoint every N steps (0: only at the end and on a signal)", 0, 0},
        {"ckpt-every-minutes", ARG_FLOAT, &o.ckpt_minutes, "M", "also checkpoint when M minutes passed since the last one (0: off)", 0, 0},
        {"keep-checkpoints", ARG_INT, &o.keep_ckpts, "K", "checkpoints kept in OUT/checkpoints (0: all)", 0, 0},
        {"resume", ARG_STR, &o.resume, "WHAT", "auto (the newest usable checkpoint in OUT/checkpoints, if any) | none | a checkpoint directory", 0, 0},
        {"on-ckpt-failure", ARG_STR, &o.ckpt_failure, "WHAT", "continue | stop (exit 4) when a checkpoint cannot be written; the previous one stays intact either way", 0, 0},
        {"ckpt-chunk-bytes", ARG_INT, &o.ckpt_chunk_bytes, "N", "bytes per checkpoint chunk message (0: 64 MiB; small values are for tests)", 0, 0},
        {"log-every", ARG_INT, &o.log_every, "N", "progress line every N steps", 0, 0},
        {"progress", ARG_STR, &o.progress, "HOW", "auto (a live bar for a single process on a terminal; plain lines under mpirun/srun) | bar | lines", 0, 0},
        {"log-level", ARG_STR, &o.log_level, "LEVEL", "error | warn | info | debug (debug: bytes communicated per step)", 0, 0},
    };
    const int nspecs = (int)(sizeof specs / sizeof specs[0]);

    Grid g;
    int help = 0;
    ErrStatus st;
    int ok = mpicmd_start(&g, &argc, &argv, specs, nspecs, "[mpirun -np N] shardlora train --model DIR --data FILE --out DIR [options]",
                           "Train LoRA adapters on a frozen Llama/Mistral/Qwen2 model. Writes OUT/adapter/ "
                           "(PEFT format), OUT/metrics.jsonl (a line per step and per evaluation), OUT/run.json "
                           "(the resolved configuration), OUT/summary.json and OUT/summary-rank*.json; "
                           "`shardlora plot OUT` draws the loss curve.",
                           &help, &st);
    if (ok && help) {
        args_free(specs, nspecs);
        return train_finish(&g, 0);
    }
    /* semantic checks, identical on every rank */
    AdapterCfg acfg;
    memset(&acfg, 0, sizeof acfg);
    OptimCfg ocfg;
    optim_defaults(&ocfg);
    int lvl = 0, pin = 0;
    const KernOps *kops = NULL;
    ok = ok && mpicmd_run_opts(o.log_level, o.kernels, o.pin, &lvl, &kops, &pin, &st);
    int okind = optim_parse_kind(o.optimizer);
    int skind = sched_parse(o.lr_schedule);
    int lmode = pack_parse_long(o.long_examples);
    if (ok && okind < 0) ok = err_status_set(&st, "--optimizer '%s': expected adamw, adamw-hf or sgd", o.optimizer);
    if (ok && skind < 0) ok = err_status_set(&st, "--lr-schedule '%s': expected constant, linear or cosine", o.lr_schedule);
    if (ok && lmode < 0) ok = err_status_set(&st, "--long-examples '%s': expected truncate, split or drop", o.long_examples);
    if (ok && strcmp(o.chat_format, "auto") && chat_parse_format(o.chat_format) < 0)
        ok = err_status_set(&st, "--chat-format '%s': expected auto, llama3, mistral, llama2, chatml or qwen2", o.chat_format);
    if (ok && strcmp(o.progress, "auto") && strcmp(o.progress, "bar") && strcmp(o.progress, "lines"))
        ok = err_status_set(&st, "--progress '%s': expected auto, bar or lines", o.progress);
    if (ok && o.r < 1) ok = err_status_set(&st, "--lora-r must be at least 1");
    if (ok && !(o.dropout >= 0 && o.dropout < 1)) ok = err_status_set(&st, "--lora-dropout must be in [0, 1)");
    if (ok && !(o.eval_split >= 0 && o.eval_split < 1)) ok = err_status_set(&st, "--eval-split must be in [0, 1)");
    if (ok && o.eval_split > 0 && o.eval_data.n > 0) ok = err_status_set(&st, "--eval-split and --eval-data exclude each other");
    if (ok && !(o.epochs > 0 && isfinite(o.epochs))) ok = err_status_set(&st, "--epochs must be a finite number > 0");
    if (ok && !(o.max_grad_norm >= 0 && isfinite(o.max_grad_norm)))
        ok = err_status_set(&st, "--max-grad-norm must be a finite number >= 0");
    if (ok && !(o.lr >= 0 && isfinite(o.lr))) ok = err_status_set(&st, "--lr must be a finite number >= 0");
    if (ok && !(o.beta1 >= 0 && o.beta1 < 1)) ok = err_status_set(&st, "--beta1 must be in [0, 1)");
    if (ok && !(o.beta2 >= 0 && o.beta2 < 1)) ok = err_status_set(&st, "--beta2 must be in [0, 1)");
    if (ok && !(o.eps > 0 && isfinite(o.eps))) ok = err_status_set(&st, "--eps must be a finite number > 0");
    if (ok && (o.ckpt_every < 0 || o.ckpt_minutes < 0 || o.keep_ckpts < 0 || o.ckpt_chunk_bytes < 0 ||
               o.warmup_steps < 0 || o.eval_every < 0 || o.eval_rows < 0 || o.steps < 0))
        ok = err_status_set(&st, "--steps, --warmup-steps, --eval-every, --eval-rows, --ckpt-every, "
                                 "--ckpt-every-minutes, --keep-checkpoints and --ckpt-chunk-bytes must be >= 0");
    if (ok && strcmp(o.ckpt_failure, "continue") && strcmp(o.ckpt_failure, "stop"))
        ok = err_status_set(&st, "--on-ckpt-failure '%s': expected continue or stop", o.ckpt_failure);
    if (ok && o.init && strcmp(o.lora_init, "default") && strcmp(o.lora_init, o.init))
        ok = err_status_set(&st, "--init %s and --lora-init %s disagree", o.init, o.lora_init);
    if (ok && o.init) o.lora_init = o.init;
    if (ok && !adapter_init_by_name(o.lora_init))
        ok = err_status_set(&st, "--init '%s': expected default, gaussian or pissa", o.lora_init);
    if (ok && !adapter_kind_by_name(o.adapter_kind)) {
        char names[256];
        adapter_kind_names(names, sizeof names);
        ok = err_status_set(&st, "--adapter '%s': expected one of %s", o.adapter_kind, names);
    }
    /* e.g. PiSSA needs LoRA's plain factors; VeRA's shared projections have their own init
     * (PEFT's kaiming), so the model card would name an init the run did not use */
    char init_why[256];
    const char *init_bad = ok ? adapter_init_compat(adapter_init_by_name(o.lora_init), adapter_kind_by_name(o.adapter_kind),
                                                    init_why, sizeof init_why)
                              : NULL;
    if (init_bad) ok = err_status_set(&st, "--init %s %s", o.lora_init, init_bad);
    if (ok && o.pissa_iters < 0) ok = err_status_set(&st, "--pissa-iters must be >= 0");
    if (ok && !(o.loraplus_ratio >= 0 && isfinite(o.loraplus_ratio)))
        ok = err_status_set(&st, "--loraplus-ratio must be a finite number >= 0");
    if (ok && (o.seq_len < 2 || o.micro_batch < 1 || o.log_every < 1 || o.global_batch < 0))
        ok = err_status_set(&st, "--seq-len must be >= 2; --micro-batch and --log-every >= 1; --global-batch >= 0");
    if (ok) ok = adapter_parse_targets(o.targets, &acfg.targets, &st);
    if (ok) ok = grid_setup(&g, (int)o.tp, &st);
    if (ok && o.global_batch == 0) o.global_batch = o.micro_batch * g.dp;
    if (ok && o.global_batch % (o.micro_batch * g.dp) != 0)
        ok = err_status_set(&st,
                            "--global-batch %lld is not a multiple of --micro-batch %lld x dp %d "
                            "(each data-parallel rank must run whole micro-batches)",
                            (long long)o.global_batch, (long long)o.micro_batch, g.dp);
    if (!ok) {
        if (g.world_rank == 0) fprintf(stderr, "shardlora train: %s\n", st.msg);
        args_free(specs, nspecs);
        return train_finish(&g, EXIT_USAGE);
    }
    log_set_level((LogLevel)lvl);
    char cache_dir[4200];
    snprintf(cache_dir, sizeof cache_dir, "%s", o.cache_dir ? o.cache_dir : "");
    if (!o.cache_dir) snprintf(cache_dir, sizeof cache_dir, "%s/cache", o.out);

    MemCtx mem;
    mem_init(&mem, (MemPinMode)pin);
    LlamaModel m;
    ok = llama_load(&m, o.model, &g, &mem, &st);
    if (!train_agree(&g, ok, &st)) return train_finish(&g, EXIT_BAD_INPUT);
    /* The adapter's configuration: from --init-adapter (which wins over the LoRA flags) or
     * from the flags. */
    AdioCfg ac;
    char init_targets[128];
    PeftAdapter init_pa;
    memset(&init_pa, 0, sizeof init_pa);
    if (o.init_adapter) {
        ok = peft_read(&init_pa, o.init_adapter, &st) && adio_cfg_from_peft(&ac, &init_pa, &m, &st);
        /* the adapter's kind (DoRA when use_dora) wins; an explicit other --adapter is a
         * contradiction, not something to resolve silently */
        const ArgSpec *ks = args_find(specs, nspecs, "adapter");
        if (ok && ks && ks->seen && strcmp(o.adapter_kind, ac.acfg.kind) != 0)
            ok = err_status_set(&st, "--adapter %s: the adapter in %s is a %s adapter (--init-adapter decides the kind)",
                                o.adapter_kind, o.init_adapter, ac.acfg.kind);
        if (ok) o.adapter_kind = ac.acfg.kind;
        if (!train_agree(&g, ok, &st)) {
            peft_close(&init_pa);
            return train_finish(&g, EXIT_BAD_INPUT);
        }
        train_init_overrides(&o, specs, nspecs, &ac, g.world_rank == 0, init_targets, sizeof init_targets);
    } else {
        adio_cfg_uniform(&ac, m.L, acfg.targets, (int)o.r, o.alpha, o.rslora, o.dropout, o.lora_init, o.model);
    }
    const int out_existed = access(o.out, F_OK) == 0, cache_existed = access(cache_dir, F_OK) == 0;
    ok = launch_mkdirs(o.out) && launch_mkdirs(cache_dir);
    if (!ok) err_status_set(&st, "%s: cannot create the output directory: %s", o.out, strerror(errno));
    if (!train_agree(&g, ok, &st)) return train_finish(&g, EXIT_IO);
    if (g.world_rank == 0) {
        printf("configuration (%s):\n", o.config.path ? o.config.path : "flags and defaults");
        args_print_resolved(stdout, specs, nspecs);
        fflush(stdout);
    }

    TrainData data;
    TdataOpts dopt = {o.model, &o.data, &o.eval_data, o.eval_split, o.chat_format, o.train_on_prompt,
                      o.add_eos, o.pack, o.shuffle, o.skip_bad, (PackLong)lmode, cache_dir, o.seq_len,
                      m.V, m.cfg.eos_token_id, o.seed};
    int data_rc = 0;
    if (!tdata_load(&data, &dopt, &g, &data_rc)) {
        /* bad data leaves no trace (token caches written before the refusal included) */
        if (g.world_rank == 0) train_drop_outputs(cache_dir, o.out, out_existed, cache_existed);
        return train_finish(&g, data_rc);
    }
    /* --epochs: a whole number of steps, at least 1, that an int64 holds */
    const double epoch_steps = ceil(o.epochs * (double)data.train.nrows / (double)o.global_batch - 1e-9);
    if (o.steps == 0 && !(epoch_steps >= 1 && epoch_steps < 9.2e18)) {
        if (g.world_rank == 0) {
            fprintf(stderr, "shardlora train: --epochs %g: %.3g steps of %lld sequences (%lld per epoch); "
                            "expected at least 1 and fewer than 2^63\n",
                    o.epochs, epoch_steps, (long long)o.global_batch, (long long)data.train.nrows);
            train_drop_outputs(cache_dir, o.out, out_existed, cache_existed);
        }
        tdata_free(&data);
        args_free(specs, nspecs);
        return train_finish(&g, EXIT_USAGE);
    }
    if (o.eval_every > 0 && !data.has_eval && g.world_rank == 0)
        log_warn("--eval-every %lld: no eval data (--eval-data or --eval-split), nothing to evaluate",
                 (long long)o.eval_every);

    GemmCtx gc;
    gemm_init(&gc, &mem, (int)o.threads, m.C > m.F ? m.C : m.F);
    KernCtx kc = {&gc, NULL, 0, gc.nthreads};
    kc.scratch_floats = kern_scratch_floats(o.seq_len, m.Hl, m.D, gc.nthreads);
    kc.scratch = mem_alloc(&mem, MEM_ACTIVATION, (kc.scratch_floats ? kc.scratch_floats : 1) * sizeof(float));

    if (o.init_adapter) {
        acfg = ac.acfg; /* per-slot ranks and alphas point into ac */
    } else {
        acfg.r = (int)o.r;
        acfg.alpha = (float)o.alpha;
        acfg.use_rslora = o.rslora;
        acfg.dropout = (float)o.dropout;
    }
    snprintf(acfg.kind, sizeof acfg.kind, "%s", o.adapter_kind);
    snprintf(acfg.init, sizeof acfg.init, "%s", o.lora_init);
    /* settings of the initialisation / the kind (ignored by those without them) */
    adapter_cfg_set_option(&acfg, "pissa_iters", (double)o.pissa_iters);
    adapter_cfg_set_option(&acfg, "loraplus_ratio", o.loraplus_ratio);
    acfg.seed = o.seed;
    /* the checkpoint's adapter JSON keeps the kind and these settings */
    snprintf(ac.acfg.kind, sizeof ac.acfg.kind, "%s", acfg.kind);
    snprintf(ac.acfg.init, sizeof ac.acfg.init, "%s", acfg.init);
    ac.acfg.init_opts = acfg.init_opts;
    ac.acfg.kind_opts = acfg.kind_opts;
    llama_init_adapters(&m, &acfg, &g, &mem);
    {
        /* what the kind completed (VeRA: its projections' key and sizes) goes into the
         * checkpoints' adapter JSON; the per-slot ranks stay ac's */
        const int *sr = ac.acfg.slot_r;
        const float *sa = ac.acfg.slot_alpha;
        ac.acfg = m.acfg;
        ac.acfg.slot_r = sr;
        ac.acfg.slot_alpha = sa;
    }
    if (o.init_adapter) {
        ok = adio_load(&m, &init_pa, &st);
        peft_close(&init_pa);
        if (!train_agree(&g, ok, &st)) {
            /* a refused adapter leaves no output directory behind when this run made it
             * (only the token caches are in it yet) */
            if (g.world_rank == 0) train_drop_outputs(cache_dir, o.out, out_existed, cache_existed);
            return train_finish(&g, EXIT_BAD_INPUT);
        }
        log_info("adapter: initialised from %s (PEFT, %d tensors, sharded onto tp=%d)", o.init_adapter,
                 m.params.n, g.tp);
    }
    const int64_t B = o.micro_batch, T = o.seq_len, N = B * T, G = o.global_batch;
    const int64_t rows_per_dp = G / g.dp, nmicro = rows_per_dp / B;
    const int64_t nrows = data.train.nrows;
    int64_t total_steps = o.steps > 0 ? o.steps : (int64_t)epoch_steps; /* after a resume: see below */
    LlamaActs acts;
    llama_acts_init(&acts, &m, B, T, &mem);
    LlamaBatch batch;
    llama_batch_init(&batch, &m, B, T, &mem);
    int64_t *labels = mem_alloc(&mem, MEM_OTHER, (size_t)N * sizeof(int64_t));
    ocfg.kind = (OptimKind)okind;
    ocfg.lr = (float)o.lr;
    ocfg.beta1 = (float)o.beta1;
    ocfg.beta2 = (float)o.beta2;
    ocfg.eps = (float)o.eps;
    ocfg.weight_decay = (float)o.weight_decay;
    ocfg.momentum = (float)o.momentum;
    ocfg.nesterov = o.nesterov;
    Optim opt;
    optim_init(&opt, &ocfg, m.params.trainable, &mem);
    char targets_csv[128];
    train_targets_csv(acfg.targets, targets_csv, sizeof targets_csv);

    /* Gradient sync: one bucket per (layer, region), started as the layer's backward ends in
     * the last micro-batch (DESIGN.md §4). Factors replicated on the TP ranks sharing a kv
     * head (kv-heads < tp) sync over the world ranks holding that kv head. */
    MPI_Comm kv_comm = MPI_COMM_SELF;
    if (g.tp > 1 && m.KV < g.tp) kv_comm = grid_split_world(&g, (int)m.kv0);
    const MPI_Comm sync_comm[PARAM_NSYNC] = {g.dp_comm, g.world, kv_comm};
    const GridBytes sync_cat[PARAM_NSYNC] = {GRID_BYTES_DP, GRID_BYTES_WORLD, GRID_BYTES_KV};
    Gsync gs;
    gsync_init(&gs, (int)m.L * PARAM_NSYNC);
    int *bucket = calloc((size_t)(m.L * PARAM_NSYNC), sizeof *bucket);
    SL_CHECK(bucket, "out of memory");
    for (int64_t l = 0; l < m.L; l++)
        for (int s = 0; s < PARAM_NSYNC; s++) {
            size_t b0, b1;
            params_layer_range(&m.params, (ParamSync)s, (int)l, &b0, &b1);
            bucket[l * PARAM_NSYNC + s] =
                gsync_add(&gs, sync_comm[s], m.params.grads + b0, b1 - b0, sync_cat[s]);
        }
    TrainSync ts = {&gs, &g, bucket, 0};

    /* Checkpoints: what must match to resume (model, adapter) and what is informational. */
    char ckpt_root[4200], fingerprint[512], hparams[256], sched_desc[128];
    snprintf(ckpt_root, sizeof ckpt_root, "%s/checkpoints", o.out);
    snprintf(fingerprint, sizeof fingerprint,
             "%s hidden=%lld ffn=%lld layers=%lld heads=%lld kv_heads=%lld head_dim=%lld vocab=%lld "
             "tie=%d qkv_bias=%d o_bias=%d rope_theta=%g rope_scaling=%d dtype=%s",
             m.cfg.architecture, (long long)m.C, (long long)m.F, (long long)m.L, (long long)m.H,
             (long long)m.KV, (long long)m.D, (long long)m.V, m.cfg.tie_word_embeddings,
             m.cfg.qkv_bias, m.cfg.o_bias, m.cfg.rope_theta, m.cfg.rope_scaling_type,
             m.wdtype == GEMM_BF16 ? "BF16" : "F32");
    char *adapter_json = adio_cfg_to_json(&ac); /* per-slot ranks and alphas too, when not uniform */
    snprintf(hparams, sizeof hparams,
             "{\"lr\": %.9g, \"beta1\": %.9g, \"beta2\": %.9g, \"eps\": %.9g, \"weight_decay\": %.9g, "
             "\"momentum\": %.9g, \"nesterov\": %d}",
             o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, o.momentum, o.nesterov);
    snprintf(sched_desc, sizeof sched_desc, "%s, warmup %lld of %lld steps, peak lr %g",
             o.lr_schedule, (long long)o.warmup_steps, (long long)total_steps, o.lr);
    char *run_json = train_run_config(&o, &data, T, B, G, total_steps, sched_desc);
    TckptCfg cc = {ckpt_root, fingerprint, adapter_json, run_json, hparams, o.seed,
                   (size_t)o.ckpt_chunk_bytes, (int)o.keep_ckpts};
    int64_t first_step = 1, cursor = 0;
    if (strcmp(o.resume, "none") != 0) {
        TckptPos pos = {0, 0, 0, 0};
        int rr = tckpt_resume(&cc, strcmp(o.resume, "auto") == 0 ? NULL : o.resume, &g, &m.params,
                              &opt, &pos);
        if (rr < 0) return train_finish(&g, EXIT_BAD_INPUT);
        if (rr > 0) {
            first_step = pos.step + 1;
            cursor = pos.cursor;
            /* --epochs counts rows, not steps: the rest of them in steps of this run's G (the
             * checkpoint's G may differ, e.g. on another number of ranks) */
            const int64_t planned = total_steps;
            if (o.steps == 0) {
                const double left = o.epochs * (double)nrows - (double)cursor;
                total_steps = pos.step + (left > 0 ? (int64_t)ceil(left / (double)G - 1e-9) : 0);
            }
            if (pos.global_batch > 0 && pos.global_batch != G && g.world_rank == 0) {
                if (o.steps == 0)
                    log_warn("global batch %lld, the checkpoint's was %lld: the rest of the %g epochs takes %lld "
                             "more steps, so the run and its lr schedule end at step %lld (a fresh run: %lld)",
                             (long long)G, (long long)pos.global_batch, o.epochs, (long long)(total_steps - pos.step),
                             (long long)total_steps, (long long)planned);
                else
                    log_warn("global batch %lld, the checkpoint's was %lld: steps %lld to %lld take %lld sequences "
                             "each", (long long)G, (long long)pos.global_batch, (long long)first_step,
                             (long long)total_steps, (long long)G);
            }
            if (total_steps != planned) {
                snprintf(sched_desc, sizeof sched_desc, "%s, warmup %lld of %lld steps, peak lr %g",
                         o.lr_schedule, (long long)o.warmup_steps, (long long)total_steps, o.lr);
                free(run_json);
                run_json = train_run_config(&o, &data, T, B, G, total_steps, sched_desc);
                cc.run_json = run_json;
            }
        }
    }
    const int64_t cursor0 = first_step > 1 ? cursor : 0; /* rows before this run's first step */
    train_install_signals();

    double peak = o.peak_gflops > 0 ? o.peak_gflops : train_measure_peak(&gc, &mem);
    double nbig = 0, fpt = llama_flops_per_token(&m, T, &nbig);
    char desc[256];
    log_info("shardlora train: %s (%s, %lld layers, hidden %lld, heads %lld/%lld, head_dim %lld, ffn %lld, vocab %lld, %s weights)",
             o.model, m.cfg.architecture, (long long)m.L, (long long)m.C, (long long)m.H,
             (long long)m.KV, (long long)m.D, (long long)m.F, (long long)m.V,
             m.wdtype == GEMM_BF16 ? "BF16" : "F32");
    log_info("schedule: %lld steps of %lld sequences x %lld tokens (%lld micro-batches of %lld per rank per step); "
             "%.3g epochs of %lld sequences; lr %s; optimizer %s",
             (long long)total_steps, (long long)G, (long long)T, (long long)nmicro, (long long)B,
             ((double)cursor0 + (double)(total_steps - first_step + 1) * (double)G) / (double)nrows,
             (long long)nrows, sched_desc, o.optimizer);
    log_info("adapter: %s r=%lld alpha=%g dropout=%g rslora=%d init=%s loraplus_ratio=%g targets=%s (%zu "
             "trainable of %zu adapter floats on rank 0)",
             acfg.kind, (long long)o.r, o.alpha, o.dropout, o.rslora, o.lora_init, o.loraplus_ratio, targets_csv,
             m.params.trainable, m.params.total);
    log_info("grid: world=%d = dp %d x tp %d; per TP rank: %lld heads, %lld kv heads%s, ffn %lld, vocab rows %lld; kernels=%s; %s",
             g.world_size, g.dp, g.tp, (long long)m.Hl, (long long)m.KVl,
             m.KV < g.tp && g.tp > 1 ? " (replicated)" : "", (long long)m.Fl, (long long)m.Vl,
             kops->name, gemm_describe(&gc, desc, sizeof desc));
    train_log_binding(&g, &mem);
    int tp_nodes = grid_tp_nodes(&g);
    if (tp_nodes > 1 && g.tp_rank == 0)
        log_warn("the TP group of dp_rank %d spans %d nodes: its per-layer all-reduces will cross the "
                 "network (place consecutive ranks on one node, e.g. mpirun --map-by node:PE=...)",
                 g.dp_rank, tp_nodes);
    log_info("MFU = model FLOPs/s / peak; model FLOPs/token = 4*N_big + 12*L*(H*D)*T + adapter = "
             "4*%.4g + 12*%lld*%lld*%lld + ... = %.4g; peak = %.1f GFLOP/s per rank (%s)",
             nbig, (long long)m.L, (long long)(m.H * m.D), (long long)T, fpt, peak,
             o.peak_gflops > 0 ? "--peak-gflops" : "measured sgemm at start-up");
    log_rank("rank %d: frozen weights %.1f MiB resident (%.1f MiB not divided by tp), %.1f MiB read from disk",
             g.world_rank, (double)m.frozen_bytes / 1048576.0, (double)m.replicated_bytes / 1048576.0,
             (double)m.bytes_read / 1048576.0);
    mem_print_table(&mem, "at start-up");

    if (g.world_rank == 0)
        ok = train_write_run_json(o.out, specs, nspecs, argc, argv, &g, &gc, fingerprint, &data, G,
                                  total_steps, sched_desc, &st);
    if (!train_agree(&g, ok || g.world_rank != 0, &st)) return train_finish(&g, EXIT_IO);
    char mpath[4200];
    snprintf(mpath, sizeof mpath, "%s/metrics.jsonl", o.out);
    if (g.world_rank == 0 && first_step > 1) train_trim_metrics(mpath, first_step - 1);
    FILE *metrics = g.world_rank == 0 ? fopen(mpath, first_step > 1 ? "a" : "w") : NULL;
    if (g.world_rank == 0 && !metrics) {
        err_status_set(&st, "%s: cannot write: %s", mpath, strerror(errno));
        ok = 0;
    }
    if (!train_agree(&g, ok || g.world_rank != 0, &st)) return train_finish(&g, EXIT_IO);

    TrainFull full_vals = {0, NULL}, full_grads = {0, NULL};
    if (g.world_rank == 0) {
        train_full_alloc(&full_vals, &m.params);
        if (o.dump_grads) train_full_alloc(&full_grads, &m.params);
    }
    /* Under mpirun / srun rank 0's stdout may be a pseudo-terminal even when the job's output
     * goes to a file, so `auto` draws the bar only for a single process on a terminal. */
    const int launched = g.world_size > 1 || getenv("SLURM_JOB_ID") || getenv("OMPI_COMM_WORLD_SIZE");
    TrainProgress prog = {g.world_rank == 0 && (strcmp(o.progress, "bar") == 0 ||
                                                 (strcmp(o.progress, "auto") == 0 && !launched &&
                                                  isatty(STDOUT_FILENO))),
                          0};
    AdapterEnv env = {&gc, o.seed, 0, 0, 1};
    double t_start = timer_now(), t_steps = 0, t_eval = 0, flops_done = 0;
    uint64_t bytes_prev[GRID_NBYTES];
    memcpy(bytes_prev, g.bytes, sizeof bytes_prev);
    int rc = 0;
    double t_ckpt = timer_now();
    int final_ckpt_failed = 0;
    int64_t step = first_step, tokens_counted = 0, skipped = 0, best_step = -1, steps_run = 0;
    double best_eval = INFINITY, last_eval = NAN, last_loss = NAN;
    if (first_step == 1) cursor = 0;
    for (; step <= total_steps && rc == 0; step++) {
        double t0 = timer_now();
        const double lr_now = sched_lr((SchedKind)skind, o.lr, step, o.warmup_steps, total_steps);
        /* DP rank d owns global rows [d*G/dp, (d+1)*G/dp); first count their label tokens, so
         * every token's loss is scaled by 1 / (counted tokens of the global batch). */
        const int64_t row_base = (int64_t)g.dp_rank * rows_per_dp;
        int64_t count = 0;
        for (int64_t mb = 0; mb < nmicro; mb++) {
            train_rows(&data, cursor + row_base + mb * B, B, T, batch.ids, labels, batch.pos);
            count += train_count_labels(labels, B, T);
        }
        grid_allreduce_sum_i64(&g, g.dp_comm, &count, 1, GRID_BYTES_OTHER);
        float scale = count > 0 ? 1.0f / (float)count : 0.0f;
        memset(m.params.grads, 0, m.params.trainable * sizeof(float));
        env.step = step;
        llama_adapters_step_begin(&m, &env); /* once per optimizer step, before the first forward */
        double loss = 0;
        for (int64_t mb = 0; mb < nmicro; mb++) {
            const int64_t row0 = row_base + mb * B;
            train_rows(&data, cursor + row0, B, T, batch.ids, labels, batch.pos);
            llama_batch_prepare(&batch, &m, labels);
            env.token0 = row0 * T; /* global token index within the step keys dropout */
            ts.active = mb == nmicro - 1;
            loss += llama_forward(&m, &acts, &batch, scale, 1, &env, kops, &kc, &g, NULL);
            llama_backward(&m, &acts, &batch, &env, kops, &kc, &g, train_layer_done, &ts);
        }
        gsync_wait(&gs, &g);
        grid_allreduce_sum_f64(&g, g.dp_comm, &loss, 1, GRID_BYTES_OTHER);
        double ss = params_sumsq(&m.params, m.params.grads);
        grid_allreduce_sum_f64(&g, g.tp_comm, &ss, 1, GRID_BYTES_OTHER);
        double gnorm = sqrt(ss);
        const int finite = isfinite(loss) && isfinite(gnorm);
        if (!finite && !o.skip_nonfinite) {
            train_bar_clear(&prog);
            if (g.world_rank == 0)
                fprintf(stderr, "shardlora: error: step %lld: non-finite %s (loss %g, grad norm %g); stopping "
                                "(--skip-nonfinite skips such steps instead)\n",
                        (long long)step, isfinite(loss) ? "gradient" : "loss", loss, gnorm);
            rc = EXIT_NONFINITE;
            break;
        }
        if (o.dump_grads && step == total_steps) {
            train_gather(&m.params, m.params.values, &g, &full_vals);
            train_gather(&m.params, m.params.grads, &g, &full_grads);
            if (g.world_rank == 0) {
                /* the whole global batch, rebuilt from the data stream */
                int32_t *gids = malloc((size_t)(G * T) * sizeof *gids);
                int64_t *glab = malloc((size_t)(G * T) * sizeof *glab), *gpos = malloc((size_t)(G * T) * sizeof *gpos);
                SL_CHECK(gids && glab && gpos, "out of memory");
                train_rows(&data, cursor, G, T, gids, glab, gpos);
                if (!train_dump(o.dump_grads, &o, targets_csv, &g, &m.params, &full_vals, &full_grads,
                                loss, gids, glab, gpos, G, T, step, &st)) {
                    fprintf(stderr, "shardlora: error: --dump-grads: %s\n", st.msg);
                    rc = EXIT_IO;
                }
                free(gids);
                free(glab);
                free(gpos);
            }
        }
        if (finite) {
            if (o.max_grad_norm > 0) {
                /* torch.nn.utils.clip_grad_norm_: scale by min(1, max / (norm + 1e-6)) */
                float coef = (float)(o.max_grad_norm / (gnorm + 1e-6));
                if (coef < 1.0f)
                    for (size_t i = 0; i < m.params.trainable; i++) m.params.grads[i] *= coef;
            }
            llama_adapters_grad_post(&m, &env); /* LoRA-FA: PEFT's projected B gradient */
            optim_step_params(&opt, &m.params, (float)lr_now);
            last_loss = loss;
            tokens_counted += count; /* a skipped step trained on nothing */
        } else {
            skipped++;
            if (g.world_rank == 0)
                log_warn("step %lld: non-finite %s (loss %g, grad norm %g): update skipped (--skip-nonfinite; %lld so far)",
                         (long long)step, isfinite(loss) ? "gradient" : "loss", loss, gnorm, (long long)skipped);
        }
        cursor += G;
        steps_run++;
        double dt = timer_now() - t0;
        t_steps += dt;
        flops_done += fpt * (double)(G * T);
        double tps = (double)(G * T) / dt;
        double mfu = fpt * (double)(G * T) / dt / (peak * 1e9 * g.world_size);
        const double epoch = (double)cursor / (double)nrows;
        if (metrics) {
            char lb[32], gb[32];
            fprintf(metrics,
                    "{\"step\": %lld, \"epoch\": %.6g, \"loss\": %s, \"lr\": %.9g, \"grad_norm\": %s, \"tokens\": %lld, "
                    "\"tokens_per_s\": %.3f, \"mfu\": %.5f%s}\n",
                    (long long)step, epoch, train_json_num(loss, lb, sizeof lb), lr_now,
                    train_json_num(gnorm, gb, sizeof gb), (long long)count, tps, mfu,
                    finite ? "" : ", \"skipped\": true");
            fflush(metrics);
        }
        /* evaluation: every --eval-every steps and at the end */
        if (data.has_eval && ((o.eval_every > 0 && step % o.eval_every == 0) || step == total_steps)) {
            double te = timer_now();
            int64_t etok = 0;
            double el = train_eval(&m, &acts, &batch, labels, &data, o.eval_rows, kops, &kc, &g, &gc,
                                   o.seed, &etok);
            te = timer_now() - te;
            t_eval += te;
            last_eval = el;
            if (el < best_eval) {
                best_eval = el;
                best_step = step;
            }
            train_bar_clear(&prog);
            log_info("eval at step %lld: loss %.4f | ppl %.3f | %lld tokens | %.1fs", (long long)step, el,
                     exp(el), (long long)etok, te);
            if (metrics) {
                char lb[32], pb[32];
                fprintf(metrics, "{\"step\": %lld, \"epoch\": %.6g, \"eval_loss\": %s, \"eval_ppl\": %s, \"eval_tokens\": %lld}\n",
                        (long long)step, epoch, train_json_num(el, lb, sizeof lb), train_json_num(exp(el), pb, sizeof pb),
                        (long long)etok);
                fflush(metrics);
            }
        }
        double el = timer_now() - t_start;
        double eta = el / (double)steps_run * (double)(total_steps - step);
        if (step % o.log_every == 0 || step == total_steps || step == first_step) {
            char d1[32], d2[32];
            train_bar_clear(&prog);
            log_info("step %lld/%lld | epoch %.2f | loss %.4f | lr %.3e | grad_norm %.4f | %.0f tok/s | MFU %.1f%% | "
                     "elapsed %s | eta %s",
                     (long long)step, (long long)total_steps, epoch, loss, lr_now, gnorm, tps, 100.0 * mfu,
                     train_fmt_dur(el, d1, sizeof d1), train_fmt_dur(eta, d2, sizeof d2));
        }
        train_bar_draw(&prog, step, total_steps, loss, eta);
        if (log_level() >= LOG_DEBUG) {
            log_debug("step %lld bytes: tp %.3g MB, dp %.3g MB, world %.3g MB, kv %.3g MB", (long long)step,
                      (double)(g.bytes[GRID_BYTES_TP] - bytes_prev[GRID_BYTES_TP]) / 1e6,
                      (double)(g.bytes[GRID_BYTES_DP] - bytes_prev[GRID_BYTES_DP]) / 1e6,
                      (double)(g.bytes[GRID_BYTES_WORLD] - bytes_prev[GRID_BYTES_WORLD]) / 1e6,
                      (double)(g.bytes[GRID_BYTES_KV] - bytes_prev[GRID_BYTES_KV]) / 1e6);
            memcpy(bytes_prev, g.bytes, sizeof bytes_prev);
        }
        /* Checkpoint at the end of the run, every --ckpt-every steps, when
         * --ckpt-every-minutes have passed (rank 0's clock) or on a signal: all ranks agree
         * on it here, at the step boundary. */
        int want[2] = {(int)g_train_signal,
                       g.world_rank == 0 && o.ckpt_minutes > 0 &&
                           timer_now() - t_ckpt >= 60.0 * o.ckpt_minutes};
        MPI_Allreduce(MPI_IN_PLACE, want, 2, MPI_INT, MPI_MAX, g.world);
        int due = step == total_steps || (o.ckpt_every > 0 && step % o.ckpt_every == 0) || want[0] || want[1];
        if (due) {
            train_bar_clear(&prog);
            int saved = tckpt_save(&cc, &g, &m.params, &opt, step, cursor);
            if (saved) t_ckpt = timer_now();
            if (!saved && step == total_steps && !want[0]) {
                /* the adapter is still written below, but the run did not end cleanly */
                if (g.world_rank == 0)
                    fprintf(stderr, "shardlora: error: the final checkpoint (step %lld) was not written; "
                                    "the previous checkpoint is intact\n", (long long)step);
                final_ckpt_failed = 1;
            } else if (!saved && strcmp(o.ckpt_failure, "stop") == 0 && !want[0]) {
                if (g.world_rank == 0)
                    fprintf(stderr, "shardlora: error: stopping (--on-ckpt-failure stop); the previous "
                                    "checkpoint is intact\n");
                rc = EXIT_IO;
                step++;
                break;
            } else if (!saved) {
                if (g.world_rank == 0) log_warn("training goes on; the previous checkpoint is intact");
            }
            if (want[0]) {
                log_info("signal %d: %s; exiting with status %d so the job can be requeued and resumed",
                         want[0], saved ? "checkpoint written" : "the checkpoint FAILED", EXIT_REQUEUE);
                rc = saved ? EXIT_REQUEUE : EXIT_IO;
                step++;
                break;
            }
        }
    }
    train_bar_clear(&prog);
    const int64_t steps_done = step - 1;
    if (metrics) fclose(metrics);
    if ((rc == 0 || rc == EXIT_REQUEUE) && first_step > total_steps)
        log_info("nothing to do: the checkpoint is at step %lld of %lld", (long long)(first_step - 1),
                 (long long)total_steps);
    if (rc == 0) {
        train_gather(&m.params, m.params.values, &g, &full_vals);
        if (g.world_rank == 0) {
            AdioCard card = {run_json, optim_kind_name(ocfg.kind), hparams, steps_done, g.tp, g.dp};
            if (!train_write_adapter(&o, &m.params, &full_vals, adapter_json, m.L, &card, &st)) {
                fprintf(stderr, "shardlora: error: %s\n", st.msg);
                rc = EXIT_IO;
            } else {
                log_info("adapter written to %s/adapter (adapter_model.safetensors, adapter_config.json, README.md)", o.out);
            }
        }
        if (!train_write_summary(&o, &g, &m, steps_done, &st)) {
            fprintf(stderr, "shardlora: error: %s\n", st.msg);
            rc = EXIT_IO;
        }
        TrainTotals tot = {steps_run, skipped, steps_run * G * T, tokens_counted, timer_now() - t_start,
                           t_steps, t_eval, flops_done, peak * 1e9 * g.world_size, last_loss, last_eval,
                           best_eval, best_step};
        if (g.world_rank == 0 && !train_write_final(o.out, &tot, &data, &mem, &st)) {
            fprintf(stderr, "shardlora: error: %s\n", st.msg);
            rc = EXIT_IO;
        }
        double per = steps_done > 0 ? 1.0 / (double)steps_done : 0;
        log_info("communication per step on rank 0: tp activations %.3f MB, gradients %.3f MB "
                 "(dp %.3f + world %.3f + kv %.3f; adapter buffer %.3f MB)",
                 (double)g.bytes[GRID_BYTES_TP] * per / 1e6,
                 (double)(g.bytes[GRID_BYTES_DP] + g.bytes[GRID_BYTES_WORLD] + g.bytes[GRID_BYTES_KV]) * per / 1e6,
                 (double)g.bytes[GRID_BYTES_DP] * per / 1e6, (double)g.bytes[GRID_BYTES_WORLD] * per / 1e6,
                 (double)g.bytes[GRID_BYTES_KV] * per / 1e6, (double)(m.params.total * sizeof(float)) / 1e6);
        if (g.world_rank == 0) mem_print_table(&mem, "at the end (rank 0)");
    }
    if (rc == 0 && final_ckpt_failed) rc = EXIT_IO;
    train_full_free(&full_vals);
    train_full_free(&full_grads);
    free(adapter_json);
    free(run_json);
    adio_cfg_free(&ac);
    gsync_free(&gs);
    free(bucket);
    if (kv_comm != MPI_COMM_SELF) MPI_Comm_free(&kv_comm);
    optim_free(&opt, &mem);
    mem_free(&mem, MEM_OTHER, labels, (size_t)N * sizeof(int64_t));
    llama_batch_free(&batch, &m, &mem);
    llama_acts_free(&acts, &m, &mem);
    mem_free(&mem, MEM_ACTIVATION, kc.scratch, (kc.scratch_floats ? kc.scratch_floats : 1) * sizeof(float));
    gemm_free(&gc, &mem);
    llama_free(&m, &mem);
    tdata_free(&data);
    args_free(specs, nspecs);
    return train_finish(&g, rc);
}
