/* `shardlora eval`: mean loss and perplexity of a model, with or without a PEFT adapter, over
 * a JSONL dataset read exactly as training reads it (launch/train_data.c: the same formats,
 * prompt masking and packing; file order, no shuffle), at any tp x dp: DP rank d evaluates
 * rows k*B*dp + d*B + j of round k, as training's evaluation does, and the loss sums meet
 * over dp. The mean is over every counted label token (DESIGN.md §5). */
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
#include "../model/llama.h"
#include "../parallel/grid.h"
#include "../runtime/log.h"
#include "../runtime/timer.h"
#include "args.h"
#include "cmds.h"
#include "mpicmd.h"
#include "train_data.h"

typedef struct {
    const char *model, *adapter, *out, *dump_logits, *chat_format, *long_examples, *cache_dir,
        *kernels, *pin, *log_level;
    ArgStrs data;
    ArgConfig config;
    int64_t tp, seq_len, micro_batch, threads, max_rows, log_every;
    int train_on_prompt, add_eos, pack, skip_bad;
} EvalOpts;

static int eval_finish(Grid *g, int code) {
    grid_finalize(g);
    return code;
}

static int eval_agree(Grid *g, int ok, const ErrStatus *st) {
    int first = grid_first_failed(g, ok);
    if (first == g->world_rank) fprintf(stderr, "shardlora: error: %s\n", st->msg);
    return first < 0;
}

/* Default token-cache directory: ~/.cache/shardlora/eval/<hash of the model and data paths>,
 * so evaluations of different datasets do not rebuild each other's cache. */
static void eval_default_cache(const EvalOpts *o, char *buf, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (int i = -1; i < o->data.n; i++) {
        const char *s = i < 0 ? o->model : o->data.v[i];
        char *rp = realpath(s, NULL);
        for (const char *p = rp ? rp : s; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
        h = (h ^ 0xff) * 1099511628211ull;
        free(rp);
    }
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (xdg && *xdg) snprintf(buf, n, "%s/shardlora/eval/%016llx", xdg, (unsigned long long)h);
    else snprintf(buf, n, "%s/.cache/shardlora/eval/%016llx", home && *home ? home : "/tmp", (unsigned long long)h);
}

/* Row r of the dataset in file order, or an empty row (nothing counted) past the end. */
static void eval_row(TrainData *d, int64_t r, int64_t rows, int64_t T, int32_t *ids, int64_t *labels,
                     int64_t *pos) {
    if (r < rows) {
        tdata_train_row(d, r, T, ids, labels, pos);
        return;
    }
    for (int64_t t = 0; t < T; t++) {
        ids[t] = 0;
        labels[t] = -100;
        pos[t] = t;
    }
}

/* --dump-logits: the full logits [B*T, V] of DP rank 0's first micro-batch, gathered over
 * its TP group from the vocabulary slices (which may be uneven), with the batch. Collective
 * over tp_comm of DP rank 0; written by world rank 0. */
static int eval_dump_logits(const char *path, LlamaModel *m, const LlamaActs *acts, const LlamaBatch *b,
                            const int64_t *labels, GemmCtx *gc, Grid *g, ErrStatus *st) {
    const int64_t N = b->B * b->T, Vl = m->Vl, V = m->V;
    float *local = malloc((size_t)(N * Vl) * sizeof(float));
    SL_CHECK(local, "out of memory");
    gemm_xwt(gc, local, acts->lnf, &m->lm_head, N, 0.0f); /* [N, Vl] */
    int ok = 1;
    const int root = g->tp_rank == 0;
    int *counts = NULL, *displs = NULL;
    long long *v0s = NULL;
    float *all = NULL, *full = NULL;
    if (root) {
        counts = calloc((size_t)g->tp, sizeof *counts);
        displs = calloc((size_t)g->tp, sizeof *displs);
        v0s = calloc((size_t)g->tp, sizeof *v0s);
        all = malloc((size_t)(N * V) * sizeof(float));
        full = malloc((size_t)(N * V) * sizeof(float));
        SL_CHECK(counts && displs && v0s && all && full, "out of memory");
    }
    int mine = (int)(N * Vl);
    long long v0 = (long long)m->V0;
    MPI_Gather(&mine, 1, MPI_INT, counts, 1, MPI_INT, 0, g->tp_comm);
    MPI_Gather(&v0, 1, MPI_LONG_LONG, v0s, 1, MPI_LONG_LONG, 0, g->tp_comm);
    if (root)
        for (int t = 1; t < g->tp; t++) displs[t] = displs[t - 1] + counts[t - 1];
    MPI_Gatherv(local, mine, MPI_FLOAT, all, counts, displs, MPI_FLOAT, 0, g->tp_comm);
    if (root) {
        /* rank t's block is [N, counts[t] / N] for vocabulary rows from v0s[t] */
        for (int t = 0; t < g->tp; t++) {
            const int64_t vl = counts[t] / N;
            for (int64_t i = 0; i < N; i++)
                memcpy(full + i * V + v0s[t], all + displs[t] + i * vl, (size_t)vl * sizeof(float));
        }
        int64_t *ids = malloc((size_t)N * sizeof *ids);
        SL_CHECK(ids, "out of memory");
        for (int64_t i = 0; i < N; i++) ids[i] = b->ids[i];
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
    free(counts);
    free(displs);
    free(v0s);
    free(all);
    free(full);
    return ok;
}

static int eval_write_json(const char *path, const EvalOpts *o, const Grid *g, double loss, int64_t tokens,
                           int64_t rows, double secs, ErrStatus *st) {
    json_t *j = json_object(), *data = json_array();
    for (int i = 0; i < o->data.n; i++) json_array_append_new(data, json_string(o->data.v[i]));
    json_object_set_new(j, "model", json_string(o->model));
    json_object_set_new(j, "adapter", o->adapter ? json_string(o->adapter) : json_null());
    json_object_set_new(j, "data", data);
    json_object_set_new(j, "loss", isfinite(loss) ? json_real(loss) : json_null());
    json_object_set_new(j, "ppl", isfinite(loss) ? json_real(exp(loss)) : json_null());
    json_object_set_new(j, "tokens", json_integer((json_int_t)tokens));
    json_object_set_new(j, "rows", json_integer((json_int_t)rows));
    json_object_set_new(j, "seq_len", json_integer((json_int_t)o->seq_len));
    json_object_set_new(j, "pack", json_boolean(o->pack));
    json_object_set_new(j, "tp", json_integer(g->tp));
    json_object_set_new(j, "dp", json_integer(g->dp));
    json_object_set_new(j, "seconds", json_real(secs));
    int ok = afile_write_json(path, j, JSON_INDENT(2), st);
    json_decref(j);
    return ok;
}

int cmd_eval(int argc, char **argv) {
    EvalOpts o;
    memset(&o, 0, sizeof o);
    o.chat_format = "auto";
    o.long_examples = "truncate";
    o.kernels = "fast";
    o.pin = "auto";
    o.log_level = "info";
    o.tp = 1;
    o.seq_len = 512;
    o.micro_batch = 1;
    o.log_every = 10;
    o.pack = 1;
    o.add_eos = 1;
    ArgSpec specs[] = {
        {"config", ARG_CONFIG, &o.config, "FILE", "read options from FILE first (JSON object or `key = value` lines; flags override)", 0, 0},
        {"model", ARG_STR, &o.model, "DIR", "Hugging Face model directory (config.json, safetensors, tokenizer.json)", 1, 0},
        {"adapter", ARG_STR, &o.adapter, "DIR", "PEFT adapter (LoRA, DoRA or VeRA: adapter_config.json + adapter_model.safetensors) applied unmerged", 0, 0},
        {"data", ARG_STRS, &o.data, "FILE", "JSONL data, the formats of `train` ({\"text\"}, {\"prompt\",\"completion\"}, {\"messages\"}, {\"input_ids\"[,\"labels\"]}); repeatable", 1, 0},
        {"tp", ARG_INT, &o.tp, "N", "tensor-parallel size (world = dp x tp; rows are split over dp)", 0, 0},
        {"seq-len", ARG_INT, &o.seq_len, "T", "tokens per sequence", 0, 0},
        {"micro-batch", ARG_INT, &o.micro_batch, "B", "sequences per forward pass on each data-parallel rank", 0, 0},
        {"max-rows", ARG_INT, &o.max_rows, "N", "evaluate the first N sequences only (0: all)", 0, 0},
        {"chat-format", ARG_STR, &o.chat_format, "NAME", "template for \"messages\": auto | llama3 | mistral | llama2 | chatml | qwen2", 0, 0},
        {"train-on-prompt", ARG_BOOL, &o.train_on_prompt, NULL, "count prompt tokens and non-assistant turns in the loss too", 0, 0},
        {"add-eos", ARG_BOOL, &o.add_eos, NULL, "append the EOS token to text and prompt/completion examples", 0, 0},
        {"pack", ARG_BOOL, &o.pack, NULL, "pack several documents per sequence (attention and positions restart per document), as train does", 0, 0},
        {"long-examples", ARG_STR, &o.long_examples, "HOW", "documents longer than --seq-len: truncate | split | drop", 0, 0},
        {"skip-bad-lines", ARG_BOOL, &o.skip_bad, NULL, "skip (and count) bad data lines instead of stopping at the first", 0, 0},
        {"cache-dir", ARG_STR, &o.cache_dir, "DIR", "token cache (default: ~/.cache/shardlora/eval/HASH, on a file system every rank sees)", 0, 0},
        {"out", ARG_STR, &o.out, "FILE", "also write the result as JSON (loss, ppl, tokens, rows, layout, seconds)", 0, 0},
        {"dump-logits", ARG_STR, &o.dump_logits, "FILE", "(tests) write the full logits [B*T, V] of the first micro-batch with its input_ids, labels and position_ids (safetensors)", 0, 0},
        {"threads", ARG_INT, &o.threads, "N", "threads per rank (0: the CPUs this rank may use)", 0, 0},
        {"kernels", ARG_STR, &o.kernels, "NAME", "fast | reference", 0, 0},
        {"pin-memory", ARG_STR, &o.pin, "MODE", "auto | on | off: mlock the frozen weights", 0, 0},
        {"log-every", ARG_INT, &o.log_every, "N", "a progress line every N rounds of micro-batches", 0, 0},
        {"log-level", ARG_STR, &o.log_level, "LEVEL", "error | warn | info | debug", 0, 0},
    };
    const int nspecs = (int)(sizeof specs / sizeof specs[0]);
    Grid g;
    int help = 0;
    ErrStatus st;
    int ok = mpicmd_start(&g, &argc, &argv, specs, nspecs, "[mpirun -np N] shardlora eval --model DIR [--adapter DIR] --data FILE [options]",
                           "Mean loss and perplexity of the model (with a PEFT adapter, unmerged) over a JSONL "
                           "dataset: the same formats, prompt masking and packing as `train`, in file order. "
                           "Prints progress lines and one summary line. Exit status 0, 2 bad command line or "
                           "layout, 3 bad model / adapter / data, 4 cannot write --out, 5 the loss is not finite (NaN / inf: "
                           "nothing is written to --out).",
                           &help, &st);
    if (ok && help) {
        args_free(specs, nspecs);
        return eval_finish(&g, 0);
    }
    int lvl = 0, pin = 0;
    const KernOps *kops = NULL;
    ok = ok && mpicmd_run_opts(o.log_level, o.kernels, o.pin, &lvl, &kops, &pin, &st);
    int lmode = pack_parse_long(o.long_examples);
    if (ok && lmode < 0) ok = err_status_set(&st, "--long-examples '%s': expected truncate, split or drop", o.long_examples);
    if (ok && strcmp(o.chat_format, "auto") && chat_parse_format(o.chat_format) < 0)
        ok = err_status_set(&st, "--chat-format '%s': expected auto, llama3, mistral, llama2, chatml or qwen2", o.chat_format);
    if (ok && (o.seq_len < 2 || o.micro_batch < 1 || o.log_every < 1 || o.max_rows < 0))
        ok = err_status_set(&st, "--seq-len must be >= 2; --micro-batch and --log-every >= 1; --max-rows >= 0");
    if (ok) ok = grid_setup(&g, (int)o.tp, &st);
    if (!ok) {
        if (g.world_rank == 0) fprintf(stderr, "shardlora eval: %s\n", st.msg);
        args_free(specs, nspecs);
        return eval_finish(&g, EXIT_USAGE);
    }
    log_set_level((LogLevel)lvl);
    char cache_dir[4200];
    if (o.cache_dir) snprintf(cache_dir, sizeof cache_dir, "%s", o.cache_dir);
    else eval_default_cache(&o, cache_dir, sizeof cache_dir);

    MemCtx mem;
    mem_init(&mem, (MemPinMode)pin);
    LlamaModel m;
    ok = llama_load(&m, o.model, &g, &mem, &st);
    if (!eval_agree(&g, ok, &st)) return eval_finish(&g, EXIT_BAD_INPUT);
    AdioCfg ac;
    memset(&ac, 0, sizeof ac);
    if (o.adapter) {
        ok = adio_attach(&m, o.adapter, &ac, &g, &mem, &st);
        if (!eval_agree(&g, ok, &st)) return eval_finish(&g, EXIT_BAD_INPUT);
    }
    ok = launch_mkdirs(cache_dir);
    if (!ok) err_status_set(&st, "%s: cannot create the token cache directory: %s", cache_dir, strerror(errno));
    if (!eval_agree(&g, ok, &st)) return eval_finish(&g, EXIT_IO);
    if (g.world_rank == 0 && log_level() >= LOG_INFO) {
        printf("configuration (%s):\n", o.config.path ? o.config.path : "flags and defaults");
        args_print_resolved(stdout, specs, nspecs);
        fflush(stdout);
    }
    log_info("shardlora eval: %s (%s, %lld layers, hidden %lld, vocab %lld, %s weights)%s%s; grid: dp %d x tp %d",
             o.model, m.cfg.architecture, (long long)m.L, (long long)m.C, (long long)m.V,
             m.wdtype == GEMM_BF16 ? "BF16" : "F32", o.adapter ? " + adapter " : " (no adapter)",
             o.adapter ? o.adapter : "", g.dp, g.tp);
    if (o.adapter)
        log_info("adapter: %s r=%d alpha=%g rslora=%d, %d tensors%s", ac.acfg.kind[0] ? ac.acfg.kind : "lora",
                 ac.acfg.r, ac.alpha, ac.acfg.use_rslora, m.params.n,
                 ac.slot_r ? " (per-module ranks / alphas / layers)" : "");

    TrainData data;
    ArgStrs no_eval = {NULL, 0, 0};
    TdataOpts dopt = {o.model, &o.data, &no_eval, 0.0, o.chat_format, o.train_on_prompt, o.add_eos, o.pack,
                      0 /* file order */, o.skip_bad, (PackLong)lmode, cache_dir, o.seq_len, m.V,
                      m.cfg.eos_token_id, 0};
    int data_rc = 0;
    if (!tdata_load(&data, &dopt, &g, &data_rc)) return eval_finish(&g, data_rc);

    GemmCtx gc;
    gemm_init(&gc, &mem, (int)o.threads, m.C > m.F ? m.C : m.F);
    KernCtx kc = {&gc, NULL, 0, gc.nthreads};
    kc.scratch_floats = kern_scratch_floats(o.seq_len, m.Hl, m.D, gc.nthreads);
    kc.scratch = mem_alloc(&mem, MEM_ACTIVATION, (kc.scratch_floats ? kc.scratch_floats : 1) * sizeof(float));
    const int64_t B = o.micro_batch, T = o.seq_len, N = B * T;
    LlamaActs acts;
    llama_acts_init(&acts, &m, B, T, &mem);
    LlamaBatch batch;
    llama_batch_init(&batch, &m, B, T, &mem);
    int64_t *labels = mem_alloc(&mem, MEM_OTHER, (size_t)N * sizeof(int64_t));

    int64_t rows = data.train.nrows;
    if (o.max_rows > 0 && o.max_rows < rows) rows = o.max_rows;
    const int64_t per_round = B * g.dp, rounds = (rows + per_round - 1) / per_round;
    log_info("evaluating %lld sequences of %lld tokens in %lld rounds of %lld (micro-batch %lld x dp %d)",
             (long long)rows, (long long)T, (long long)rounds, (long long)per_round, (long long)B, g.dp);
    AdapterEnv env = {&gc, 0, 0, 0, 0};
    llama_adapters_step_begin(&m, &env); /* e.g. DoRA's norms, before the first forward */
    double sum[2] = {0, 0}; /* loss sum, counted tokens: this DP rank's */
    const double t0 = timer_now();
    int rc = 0;
    for (int64_t k = 0; k < rounds; k++) {
        const int64_t row0 = k * per_round + (int64_t)g.dp_rank * B;
        for (int64_t j = 0; j < B; j++)
            eval_row(&data, row0 + j, rows, T, batch.ids + j * T, labels + j * T, batch.pos + j * T);
        llama_batch_prepare(&batch, &m, labels);
        int64_t counted = 0;
        sum[0] += llama_forward(&m, &acts, &batch, 1.0f, 0, &env, kops, &kc, &g, &counted);
        sum[1] += (double)counted;
        if (k == 0 && o.dump_logits && g.dp_rank == 0) {
            if (!eval_dump_logits(o.dump_logits, &m, &acts, &batch, labels, &gc, &g, &st)) {
                fprintf(stderr, "shardlora: error: --dump-logits: %s\n", st.msg);
                rc = EXIT_IO;
            }
        }
        if ((k + 1) % o.log_every == 0 && k + 1 < rounds) {
            double part[2] = {sum[0], sum[1]};
            grid_allreduce_sum_f64(&g, g.dp_comm, part, 2, GRID_BYTES_OTHER);
            const double el = timer_now() - t0;
            log_info("eval: %lld/%lld rounds (%.0f%%) | running loss %.4f | %.0f tok/s | elapsed %.1fs | eta %.1fs",
                     (long long)(k + 1), (long long)rounds, 100.0 * (double)(k + 1) / (double)rounds,
                     part[1] > 0 ? part[0] / part[1] : NAN, (double)((k + 1) * per_round * T) / el, el,
                     el / (double)(k + 1) * (double)(rounds - k - 1));
        }
    }
    grid_allreduce_sum_f64(&g, g.dp_comm, sum, 2, GRID_BYTES_OTHER);
    const double secs = timer_now() - t0;
    const double loss = sum[1] > 0 ? sum[0] / sum[1] : NAN;
    const int64_t tokens = (int64_t)sum[1];
    MPI_Allreduce(MPI_IN_PLACE, &rc, 1, MPI_INT, MPI_MAX, g.world);
    /* a NaN / inf loss (e.g. a corrupted adapter) is a failure, as in train, merge and
     * generate: one line, exit 5, no --out (every rank has the same reduced sums) */
    const int nonfinite = tokens > 0 && !isfinite(loss);
    if (nonfinite && g.world_rank == 0)
        fprintf(stderr, "shardlora: error: the eval loss is not finite (%g over %lld tokens): the model%s produced "
                        "NaN or inf\n", loss, (long long)tokens, o.adapter ? " or the adapter" : "");
    if (nonfinite && rc == 0) rc = EXIT_NONFINITE;
    if (g.world_rank == 0 && !nonfinite) {
        printf("eval: loss %.6f | ppl %.4f | %lld tokens counted | %lld sequences of %lld | %.2fs (%.0f tok/s)%s%s\n",
               loss, exp(loss), (long long)tokens, (long long)rows, (long long)T, secs,
               (double)(rounds * per_round * T) / (secs > 0 ? secs : 1e-9), o.adapter ? " | adapter " : "",
               o.adapter ? o.adapter : "");
        fflush(stdout);
        if (tokens == 0) log_warn("no label token was counted (every label masked?): the loss is undefined");
    }
    if (rc == 0 && o.out) {
        ok = g.world_rank != 0 || eval_write_json(o.out, &o, &g, loss, tokens, rows, secs, &st);
        if (!eval_agree(&g, ok, &st)) rc = EXIT_IO;
    }
    mem_free(&mem, MEM_OTHER, labels, (size_t)N * sizeof(int64_t));
    llama_batch_free(&batch, &m, &mem);
    llama_acts_free(&acts, &m, &mem);
    mem_free(&mem, MEM_ACTIVATION, kc.scratch, (kc.scratch_floats ? kc.scratch_floats : 1) * sizeof(float));
    gemm_free(&gc, &mem);
    llama_free(&m, &mem);
    if (o.adapter) adio_cfg_free(&ac);
    tdata_free(&data);
    args_free(specs, nspecs);
    return eval_finish(&g, rc);
}
