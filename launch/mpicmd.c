/* The shared start of the MPI commands (see mpicmd.h). */
#include "mpicmd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../io/chat.h"
#include "../io/chatfmt.h"
#include "../io/pack.h"
#include "../model/llama.h"
#include "../model/stage.h"
#include "../runtime/log.h"
#include "../runtime/mem.h"
#include "../runtime/str.h"
#include "cmds.h"

int mpicmd_start(Grid *g, int *argc, char ***argv, ArgSpec *specs, int nspecs, const char *usage,
                 const char *about, int *help, ErrStatus *st) {
    grid_init(g, argc, argv);
    *help = 0;
    err_status_ok(st);
    int ok = args_parse(specs, nspecs, *argc, *argv, 2, help, st);
    if (ok && *help && g->world_rank == 0) args_print_help(stdout, usage, about, specs, nspecs);
    return ok;
}

int mpicmd_run_opts(const char *log_level, const char *kernels, const char *pin, int *lvl,
                    const KernOps **kops, int *pin_mode, ErrStatus *st) {
    if (!st->ok) return 0;
    *lvl = log_parse_level(log_level);
    *kops = kern_ops_by_name(kernels);
    *pin_mode = mem_parse_pin(pin);
    if (*lvl < 0)
        return err_status_set(st, "--log-level '%s': expected error, warn, info or debug",
                              log_level);
    if (!*kops) return err_status_set(st, "--kernels '%s': expected fast or reference", kernels);
    if (*pin_mode < 0)
        return err_status_set(st, "--pin-memory '%s': expected auto, on or off", pin);
    return 1;
}

int mpicmd_dtype_opts(const char *base_dtype, const char *compute_dtype, int *base, int *compute,
                      ErrStatus *st) {
    if (!st->ok) return 0;
    static const char *const bases[] = {"fp32", "bf16", "int8", "nf4"}; /* GemmDtype order */
    *base = -2;
    if (strcmp(base_dtype, "file") == 0) *base = LLAMA_BASE_FILE;
    for (int i = 0; i < 4; i++)
        if (strcmp(base_dtype, bases[i]) == 0) *base = i;
    if (*base == -2)
        return err_status_set(st, "--base-dtype '%s': expected file, fp32, bf16, int8 or nf4",
                              base_dtype);
    *compute = strcmp(compute_dtype, "auto") == 0   ? -1
               : strcmp(compute_dtype, "fp32") == 0 ? GEMM_COMPUTE_F32
               : strcmp(compute_dtype, "bf16") == 0 ? GEMM_COMPUTE_BF16
                                                    : -2;
    if (*compute == -2)
        return err_status_set(st, "--compute-dtype '%s': expected auto, fp32 or bf16",
                              compute_dtype);
    return 1;
}

const char *mpicmd_base_name(GemmDtype d) {
    static const char *const names[] = {"fp32", "bf16", "int8", "nf4"};
    return d >= GEMM_F32 && d <= GEMM_NF4 ? names[d] : "?";
}

GemmDtype mpicmd_base_dtype(int base, const HfcConfig *c) {
    if (base != LLAMA_BASE_FILE) return (GemmDtype)base;
    const int f32 =
        c && (strcmp(c->torch_dtype, "float32") == 0 || strcmp(c->torch_dtype, "float16") == 0);
    return f32 ? GEMM_F32 : GEMM_BF16;
}

int mpicmd_bound(const char *flag, int64_t v, int64_t lo, int64_t hi, ErrStatus *st) {
    if (!st->ok) return 0;
    if (v >= lo && v <= hi) return 1;
    return err_status_set(st, "--%s %lld: expected %lld to %lld", flag, (long long)v, (long long)lo,
                          (long long)hi);
}

void mpicmd_run_defaults(MpicmdRun *o) {
    *o = (MpicmdRun){.pin = "auto",
                     .kernels = "fast",
                     .log_level = "info",
                     .base_dtype = "file",
                     .compute_dtype = "auto",
                     .tp = 1,
                     .pp = 0, /* 1, or the count of --pp-layers */
                     .memory_check = 1};
}

/* Appends count rows to out[*n..cap) (fatal past cap). */
static void mpicmd_put(ArgSpec *out, int cap, int *n, const ArgSpec *rows, int count) {
    SL_CHECK(*n + count <= cap, "option table of %d entries too small", cap);
    memcpy(out + *n, rows, (size_t)count * sizeof *rows);
    *n += count;
}

static void mpicmd_head_specs(ArgSpec *out, int cap, int *n, MpicmdRun *o) {
    /* one option per line: name, type, destination, metavar, help, required, seen */
    // clang-format off
    const ArgSpec specs[] = {
        {.type = ARG_GROUP, .group = ARGG_MODEL},
        {"config", ARG_CONFIG, &o->config, "FILE", "read options from FILE first: a JSON object, flat YAML (key: value, lists as [a, b] or - item lines) or key = value lines; keys are these flag names or their aliases, with - or _; flags override", 0, 0},
        {"model", ARG_STR, &o->model, "DIR", "Hugging Face model directory (config.json, safetensors, tokenizer.json)", 1, 0},
        {"base-dtype", ARG_STR, &o->base_dtype, "DTYPE", "file | fp32 | bf16 | int8 | nf4: how the frozen weights are held in memory (file: as stored, F16 as F32; int8: per output channel; nf4: QLoRA's 4-bit NormalFloat, blocks of 64), quantised while each rank loads its shard", 0, 0},
        {"compute-dtype", ARG_STR, &o->compute_dtype, "DTYPE", "auto | fp32 | bf16: the frozen weights' matrix products (bf16: BF16 operands, F32 sums, via oneDNN where the CPU has native BF16, else fp32 runs; auto: bf16 there when the base is held in 16 bits or fewer)", 0, 0},
    };
    // clang-format on
    mpicmd_put(out, cap, n, specs, (int)(sizeof specs / sizeof specs[0]));
}

static void mpicmd_tail_specs(ArgSpec *out, int cap, int *n, MpicmdRun *o, const char *tp_help) {
    /* one option per line: name, type, destination, metavar, help, required, seen */
    // clang-format off
    const ArgSpec specs[] = {
        {.type = ARG_GROUP, .group = ARGG_PARALLEL},
        {"tp", ARG_INT, &o->tp, "N", tp_help, 0, 0},
        {"pp", ARG_INT, &o->pp, "P", "pipeline stages: the decoder's layers in P contiguous stages (embedding with the first, final norm and lm_head with the last), each rank holding its stage's layers; world = dp x pp x tp with TP innermost (one node) and stages across nodes; train runs a step's micro-batches in the 1F1B order (default 1, or the count of --pp-layers)", 0, 0},
        {"pp-layers", ARG_STR, &o->pp_layers, "N,N,..", "layers per pipeline stage, e.g. 10,11,11 (default: the split that balances the modelled cost per stage, lm_head counted)", 0, 0},
        {"threads", ARG_INT, &o->threads, "N", "threads per rank (0: the CPUs this rank may use)", 0, 0},
        {.type = ARG_GROUP, .group = ARGG_LOGGING},
        {"log-level", ARG_STR, &o->log_level, "LEVEL", "error | warn | info | debug (train: debug adds the bytes communicated per step)", 0, 0},
        {.type = ARG_GROUP, .group = ARGG_EXPERT},
        {"pin-memory", ARG_STR, &o->pin, "MODE", "auto | on | off: mlock the frozen weights", 0, 0},
        {"kernels", ARG_STR, &o->kernels, "NAME", "fast | reference (the plain kernels the fast ones are tested against)", 0, 0},
        {"memory-limit", ARG_FLOAT, &o->memory_limit, "GIB", "memory per rank the start-up estimate may use (0: this rank's share of what the node has: MemAvailable or the cgroup's limit, divided among its ranks)", 0, 0},
        {"memory-check", ARG_BOOL, &o->memory_check, NULL, "refuse (exit 2) a run whose memory estimate exceeds the limit before allocating (--no-memory-check: try anyway)", 0, 0},
    };
    // clang-format on
    mpicmd_put(out, cap, n, specs, (int)(sizeof specs / sizeof specs[0]));
}

void mpicmd_rows_defaults(MpicmdRows *o) {
    *o = (MpicmdRows){.chat_format = "auto",
                      .long_examples = "truncate",
                      .seq_len = 512,
                      .micro_batch = 1,
                      .pack = 1,
                      .add_eos = 1};
}

static void mpicmd_rows_specs(ArgSpec *out, int cap, int *n, MpicmdRows *o, const char *data_help,
                              const char *cache_help) {
    /* one option per line: name, type, destination, metavar, help, required, seen */
    // clang-format off
    const ArgSpec specs[] = {
        {.type = ARG_GROUP, .group = ARGG_DATA},
        {"data", ARG_STRS, &o->data, "FILE", data_help, 1, 0},
        {"chat-template", ARG_STR, &o->chat_template, "FILE", "a Jinja chat template for \"messages\" lines (default: the model's own: MODEL/chat_template.jinja, else tokenizer_config.json's \"chat_template\")", 0, 0},
        {.name = "chat-template-path", .type = ARG_ALIAS, .target = "chat-template"},
        {"chat-template-kwargs", ARG_STR, &o->chat_kwargs, "JSON", "a JSON object of extra template variables, e.g. '{\"enable_thinking\": false}'", 0, 0},
        {"chat-format", ARG_STR, &o->chat_format, "NAME", "fallback layout for a model without a chat template: auto (the model's template) | llama3 | mistral | llama2 | chatml | qwen2 (refused when the model's template renders differently)", 0, 0},
        {"train-on-prompt", ARG_BOOL, &o->train_on_prompt, NULL, "count prompt tokens and non-assistant turns in the loss too", 0, 0},
        {"add-eos", ARG_BOOL, &o->add_eos, NULL, "append the EOS token to text and prompt/completion examples", 0, 0},
        {"pack", ARG_BOOL, &o->pack, NULL, "pack several documents per sequence (attention and positions restart per document)", 0, 0},
        {.name = "packing", .type = ARG_ALIAS, .target = "pack"},
        {"long-examples", ARG_STR, &o->long_examples, "HOW", "documents longer than --seq-len: truncate | split | drop", 0, 0},
        {"skip-bad-lines", ARG_BOOL, &o->skip_bad, NULL, "skip (and count) bad data lines instead of stopping at the first", 0, 0},
        {"cache-dir", ARG_STR, &o->cache_dir, "DIR", cache_help, 0, 0},
        {"seq-len", ARG_INT, &o->seq_len, "T", "tokens per sequence", 0, 0},
        {.name = "max-seq-length", .type = ARG_ALIAS, .target = "seq-len"},
        {.name = "max-length", .type = ARG_ALIAS, .target = "seq-len"},
        {"micro-batch", ARG_INT, &o->micro_batch, "B", "sequences per micro-batch (one forward pass) on each data-parallel rank", 0, 0},
    };
    // clang-format on
    mpicmd_put(out, cap, n, specs, (int)(sizeof specs / sizeof specs[0]));
}

TdataOpts mpicmd_tdata_opts(const MpicmdRows *o, const char *model_dir, int lmode,
                            const char *cache_dir, int64_t vocab, int64_t eos_id) {
    return (TdataOpts){.model_dir = model_dir,
                       .data = {o->data.v, o->data.n},
                       .chat_format = o->chat_format,
                       .chat_template = o->chat_template,
                       .chat_kwargs = o->chat_kwargs,
                       .train_on_prompt = o->train_on_prompt,
                       .add_eos = o->add_eos,
                       .pack = o->pack,
                       .skip_bad = o->skip_bad,
                       .long_mode = (PackLong)lmode,
                       .cache_dir = cache_dir,
                       .T = o->seq_len,
                       .vocab = vocab,
                       .eos_id = eos_id};
}

int mpicmd_rows_check(const MpicmdRows *o, int *lmode, ErrStatus *st) {
    if (!st->ok) return 0;
    *lmode = pack_parse_long(o->long_examples);
    if (*lmode < 0)
        return err_status_set(st, "--long-examples '%s': expected truncate, split or drop",
                              o->long_examples);
    if (strcmp(o->chat_format, "auto") && chatfmt_parse(o->chat_format) < 0)
        return err_status_set(
            st, "--chat-format '%s': expected auto, llama3, mistral, llama2, chatml or qwen2",
            o->chat_format);
    json_t *kw = o->chat_kwargs ? chat_parse_kwargs(o->chat_kwargs, st) : NULL;
    if (o->chat_kwargs && !kw) return 0;
    json_decref(kw);
    if (!mpicmd_bound("seq-len", o->seq_len, 2, MPICMD_MAX_SEQ_LEN, st) ||
        !mpicmd_bound("micro-batch", o->micro_batch, 1, MPICMD_MAX_BATCH, st))
        return 0;
    if (o->seq_len * o->micro_batch > MPICMD_MAX_ROWS)
        return err_status_set(st,
                              "--micro-batch %lld x --seq-len %lld = %lld tokens per micro-batch, "
                              "more than %lld: lower one of them",
                              (long long)o->micro_batch, (long long)o->seq_len,
                              (long long)(o->micro_batch * o->seq_len), (long long)MPICMD_MAX_ROWS);
    return 1;
}

/* The pipeline's stages into env (pp > 1), from the model's config.json: --pp-layers or
 * stage_split over stage_cost_model; rank 0 prints the split. 0 with st on a refusal (more
 * stages than layers, bad --pp-layers, an unreadable config.json). */
static int mpicmd_stages(Grid *g, const MpicmdRun *run, MpicmdEnv *env, ErrStatus *st) {
    env->has_stages = g->pp > 1;
    if (g->pp == 1 && !run->pp_layers) return 1;
    char *path = str_join_path(run->model, "config.json");
    HfcConfig c;
    const int have = hfc_load(&c, path, st);
    free(path);
    if (!have) return 0;
    const int P = g->pp;
    if (run->pp_layers) {
        if (!stage_parse_layers(run->pp_layers, c.num_layers, P, env->stages, st)) return 0;
    } else {
        StageCost sc;
        stage_cost_model(&sc, &c, run->seq_len ? *run->seq_len : 512);
        double *cost = malloc((size_t)(c.num_layers > 0 ? c.num_layers : 1) * sizeof *cost);
        SL_CHECK(cost, "out of memory");
        for (int64_t l = 0; l < c.num_layers; l++)
            cost[l] = sc.layer;
        const int ok = stage_split(c.num_layers, P, cost, sc.first, sc.last, env->stages, st);
        free(cost);
        if (!ok) return 0; /* stage_split names --pp */
    }
    if (g->world_rank == 0) {
        char buf[1024];
        size_t o = 0;
        for (int s = 0; s < P && o < sizeof buf; s++)
            o += (size_t)snprintf(buf + o, sizeof buf - o, "%s[%lld, %lld)", s ? " " : "",
                                  (long long)env->stages[s], (long long)env->stages[s + 1]);
        log_info("pipeline: %d stages of layers %s%s", P, buf,
                 run->pp_layers ? " (--pp-layers)"
                                : " (balanced by modelled cost, lm_head counted)");
    }
    return 1;
}

int mpicmd_begin(Grid *g, int *argc, char ***argv, ArgSpec *specs, int nspecs, const char *cmd,
                 const char *usage, const char *about, const MpicmdRun *run, MpicmdCheck check,
                 void *ctx, MpicmdEnv *env) {
    int help = 0;
    ErrStatus st;
    int ok = mpicmd_start(g, argc, argv, specs, nspecs, usage, about, &help, &st);
    if (ok && help) return 0;
    ok = ok && mpicmd_run_opts(run->log_level, run->kernels, run->pin, &env->log_level, &env->kops,
                               &env->pin, &st);
    ok = ok &&
         mpicmd_dtype_opts(run->base_dtype, run->compute_dtype, &env->base, &env->compute, &st);
    ok = ok && mpicmd_bound("threads", run->threads, 0, MPICMD_MAX_THREADS, &st);
    if (ok && !(run->memory_limit >= 0 && run->memory_limit <= 1e9))
        ok = err_status_set(&st, "--memory-limit %g: expected 0 to 1e9 GiB", run->memory_limit);
    ok = ok && mpicmd_bound("tp", run->tp, 1, 1 << 20, &st);
    ok = ok && mpicmd_bound("pp", run->pp, 0, MPICMD_MAX_PP, &st);
    int64_t pp = run->pp;
    if (ok && pp == 0) { /* --pp-layers alone names the stages */
        pp = 1;
        for (const char *c = run->pp_layers; c && *c; c++)
            pp += *c == ',';
        if (pp > MPICMD_MAX_PP) pp = MPICMD_MAX_PP;
    }
    ok = ok && grid_setup_pp(g, (int)run->tp, (int)pp, &st);
    if (ok) log_set_level((LogLevel)env->log_level);
    ok = ok && mpicmd_stages(g, run, env, &st);
    ok = ok && check(ctx, &st);
    if (!ok) {
        if (g->world_rank == 0) fprintf(stderr, "shardlora %s: %s\n", cmd, st.msg);
        return EXIT_USAGE;
    }
    log_set_level((LogLevel)env->log_level);
    return -1;
}

/* Bytes per rank the check allows for a rank holding `frozen` bytes of the model already
 * (the node's room is what is left after them), or -1 when unknown. */
static double mpicmd_allowed(Grid *g, const MpicmdRun *run, int64_t frozen) {
    grid_barrier(g); /* every rank is at the same point: MemAvailable is settled */
    const int on_node = grid_node_ranks(g);
    if (run->memory_limit > 0) return run->memory_limit * 1073741824.0;
    const int64_t avail = memplan_node_available();
    return avail < 0 ? -1 : (double)frozen + (double)avail / on_node;
}

int mpicmd_frozen_check(Grid *g, const char *cmd, const MpicmdRun *run, const MpicmdEnv *env) {
    char *path = str_join_path(run->model, "config.json");
    HfcConfig c;
    ErrStatus st;
    const int have = hfc_load(&c, path, &st);
    free(path);
    int base = LLAMA_BASE_FILE, compute = 0;
    mpicmd_dtype_opts(run->base_dtype, run->compute_dtype, &base, &compute, &st);
    const GemmDtype dt = mpicmd_base_dtype(base, have ? &c : NULL);
    const int64_t need =
        have ? memplan_frozen(&c, g->tp, g->tp_rank, env->has_stages ? env->stages[g->pp_rank] : 0,
                              env->has_stages ? env->stages[g->pp_rank + 1] : -1, dt)
             : 0;
    if (have && g->world_rank == 0)
        log_debug("frozen weights from config.json: %lld bytes on rank 0 (%s elements)",
                  (long long)need, gemm_dtype_name(dt));
    const double allowed = mpicmd_allowed(g, run, 0);
    const double gib = 1073741824.0;
    err_status_ok(&st);
    const int ok = !run->memory_check || allowed < 0 || (double)need <= allowed;
    if (!ok)
        err_status_set(&st,
                       "the frozen weights of %s need ~%.3g GiB per rank at --tp %d --pp %d, "
                       "this node allows %.3g GiB per rank%s: raise --tp or --pp (more ranks, "
                       "more nodes) (or --memory-limit GIB / --no-memory-check to try anyway)",
                       run->model, (double)need / gib, g->tp, g->pp, allowed / gib,
                       run->memory_limit > 0 ? " (--memory-limit)" : "");
    char prefix[64];
    snprintf(prefix, sizeof prefix, "shardlora %s", cmd);
    return grid_agree(g, ok, prefix, &st) ? 0 : EXIT_USAGE;
}

int mpicmd_memcheck(Grid *g, const char *cmd, const MpicmdRun *run, const MemPlan *p,
                    const char *why, const char *advice) {
    if (g->world_rank == 0) memplan_print(p, "per rank before allocating (rank 0)");
    /* bytes this rank may hold, its frozen weights (loaded already) included */
    const double allowed = mpicmd_allowed(g, run, p->bytes[MEM_FROZEN]);
    const double gib = 1073741824.0;
    ErrStatus st;
    err_status_ok(&st);
    const int ok = !run->memory_check || allowed < 0 || (double)p->total <= allowed;
    if (!ok)
        err_status_set(&st,
                       "needs ~%.3g GiB per rank (activations %.3g GiB from %s), this node allows "
                       "%.3g GiB per rank%s: %s (or --memory-limit GIB / --no-memory-check to "
                       "try anyway)",
                       (double)p->total / gib, (double)p->bytes[MEM_ACTIVATION] / gib, why,
                       allowed / gib, run->memory_limit > 0 ? " (--memory-limit)" : "", advice);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "shardlora %s", cmd);
    return grid_agree(g, ok, prefix, &st) ? 0 : EXIT_USAGE;
}

int mpicmd_end(Grid *g, ArgSpec *specs, int nspecs, int rc) {
    args_free(specs, nspecs);
    grid_finalize(g);
    return rc;
}

int mpicmd_table(ArgSpec *out, int cap, MpicmdRun *run, MpicmdRows *rows, const MpicmdHelp *help,
                 const ArgSpec *own, int nown) {
    int n = 0;
    mpicmd_head_specs(out, cap, &n, run);
    if (rows) mpicmd_rows_specs(out, cap, &n, rows, help->data, help->cache);
    mpicmd_put(out, cap, &n, own, nown);
    mpicmd_tail_specs(out, cap, &n, run, help->tp);
    return n;
}
