/* `shardlora train`: LoRA training of a frozen model on JSONL data (text, prompt/completion,
 * chat messages or pre-tokenised). The command is a sequence of steps, as llm.c's main is:
 * options -> model (train/session) -> adapter -> data (train/tdata) -> trainer
 * (train/trainer) -> resume (train/tckpt) -> the step loop with evaluation, metrics and
 * checkpoints (train/report) -> the adapter and the summaries.
 * Every rank parses the same options and reaches the same verdicts, so a bad flag or file
 * ends every rank with one clear line and no rank waits in a collective. */
#include <errno.h>
#include <math.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "../io/afile.h"
#include "../io/peft.h"
#include "../model/adapter_init.h"
#include "../model/adapter_io.h"
#include "../model/sched.h"
#include "../runtime/log.h"
#include "../runtime/sizes.h"
#include "../runtime/str.h"
#include "../runtime/timer.h"
#include "../train/mfu.h"
#include "../train/report.h"
#include "../train/rundir.h"
#include "../train/tckpt.h"
#include "../train/tdata.h"
#include "../train/trainer.h"
#include "args.h"
#include "cmds.h"
#include "mpicmd.h"

static const char TRAIN_USAGE[] =
    "[mpirun -np N] shardlora train --model DIR --data FILE --out DIR [options]";
static const char TRAIN_ABOUT[] =
    "Train LoRA adapters on a frozen Llama/Mistral/Qwen2 model. Writes OUT/adapter/ "
    "(PEFT format), OUT/metrics.jsonl and OUT/metrics.csv (a line per step and per "
    "evaluation), TensorBoard event files, OUT/run.json (the resolved configuration), "
    "OUT/summary.json and OUT/summary-rank*.json; `shardlora plot OUT [OUT2 ...]` draws the "
    "loss curves. Running the same command again resumes (or, for a finished run, does "
    "nothing).";

typedef struct {
    MpicmdRun run;   /* --config, --model, --tp, --threads, ... */
    MpicmdRows rows; /* --data, --seq-len, --micro-batch, --pack, ... */
    const char *out, *targets, *lora_init, *optimizer, *dump_grads, *resume, *ckpt_failure,
        *lr_schedule, *progress, *init_adapter, *adapter_kind, *init, *base_model_name, *recompute;
    ArgStrs eval_data;
    int64_t r, global_batch, steps, log_every, ckpt_every, keep_ckpts, ckpt_chunk_bytes,
        warmup_steps, eval_every, eval_rows, pissa_iters, grad_accum;
    double ckpt_minutes, epochs, eval_split, warmup_ratio;
    double alpha, dropout, lr, beta1, beta2, eps, weight_decay, momentum, peak_gflops,
        max_grad_norm, loraplus_ratio;
    int rslora, nesterov, shuffle, skip_nonfinite, overwrite;
    uint64_t seed;
} TrainOpts;

enum { TRAIN_MAX_SPECS = 128 };

/* Everything one run holds, set up in order by cmd_train and released by train_free. */
typedef struct {
    TrainOpts o;
    ArgSpec specs[TRAIN_MAX_SPECS];
    int nspecs, argc;
    char **argv;
    char kinds_help[512], inits_help[768]; /* --adapter, --init: from the registries */
    Grid g;
    Session s;
    TrainData data;
    Trainer tr;
    Report rep;
    int have_session, have_data, have_trainer, have_report;
    AdioCfg ac;          /* the adapter configuration the checkpoints keep */
    PeftAdapter init_pa; /* --init-adapter, open until its tensors are loaded */
    int have_ac, have_init_pa;
    AdapterCfg acfg;
    OptimCfg ocfg;
    MpicmdEnv env;
    int skind, lmode;
    LlamaRecompute recompute; /* --recompute */
    char cache_dir[4200];
    int out_existed, cache_existed;
    char init_targets[128], targets_csv[128];
    double epoch_steps;
    int64_t B, T, G, nrows, total_steps, first_step, cursor, cursor0, warmup;
    SchedAnchor anchor; /* where the lr decay is anchored (model/sched.h; plain: warmup, 0) */
    char ckpt_root[4200], fingerprint[512], hparams[256], sched_desc[256];
    char *adapter_json, *run_json;
    char *run_card; /* run_json with the model card's "card" object (what checkpoints keep) */
    TckptCfg cc;
    MfuPeak peak;                  /* the MFU denominator per rank (train/mfu.h) */
    double fpt, nbig, dense_attn;  /* model FLOPs per token, N_big, PaLM's dense attention */
    json_t *identity, *data_files; /* world rank 0: what OUT/run-state.json records */
    int nothing_to_do;             /* OUT holds this run, finished: exit 0, no file written */
} TrainRun;

/* The loop's running figures. */
typedef struct {
    double t_start, t_steps, t_eval, flops_done, t_ckpt;
    uint64_t bytes_prev[GRID_NBYTES];
    int64_t step, tokens_counted, skipped, best_step, steps_run;
    double best_eval, last_eval, last_loss;
    int final_ckpt_failed;
    ReportFull full_vals, full_grads;
} TrainLoop;

static void train_defaults(TrainOpts *o) {
    *o = (TrainOpts){.targets = "all",
                     .lora_init = "default",
                     .adapter_kind = "lora",
                     .optimizer = "adamw",
                     .lr_schedule = "linear",
                     .progress = "auto",
                     .recompute = "none",
                     .resume = "auto",
                     .ckpt_failure = "continue",
                     .r = 8,
                     .alpha = 16,
                     .pissa_iters = 4,
                     .epochs = 1,
                     .log_every = 10,
                     .keep_ckpts = 3,
                     .ckpt_minutes = 30,
                     .lr = 2e-4,
                     .beta1 = 0.9,
                     .beta2 = 0.999,
                     .eps = 1e-8,
                     .seed = 42,
                     .shuffle = 1};
    mpicmd_run_defaults(&o->run);
    o->run.seq_len = &o->rows.seq_len;
    mpicmd_rows_defaults(&o->rows);
}

/* The option table (help texts that list kinds come from the registry). */
static void train_spec_table(TrainRun *r) {
    TrainOpts *o = &r->o;
    char names[256];
    adapter_kind_names(names, sizeof names);
    snprintf(
        r->kinds_help, sizeof r->kinds_help,
        "%s (the kinds this build has; lora-fa is PEFT's LoRA-FA optimizer: A frozen after init, "
        "B's gradient projected by (1/s^2) pinv(A A^T + 1e-8 I) before the update)",
        names);
    size_t off = 0;
    for (int i = 0; adapter_init_at(i) && off < sizeof r->inits_help; i++)
        off += (size_t)snprintf(r->inits_help + off, sizeof r->inits_help - off, "%s%s (%s)",
                                i ? " | " : "", adapter_init_at(i)->name, adapter_init_at(i)->help);
    /* one option per line: name, type, destination, metavar, help, required, seen */
    // clang-format off
    const ArgSpec specs[] = {
        {.type = ARG_GROUP, .group = ARGG_MODEL},
        {"out", ARG_STR, &o->out, "DIR", "output directory, one run's (see --overwrite): adapter/, checkpoints/, cache/, metrics.jsonl, metrics.csv, events.out.tfevents.*, run.json, run-state.json, summary*.json", 1, 0},
        {.name = "output-dir", .type = ARG_ALIAS, .target = "out"},
        {"init-adapter", ARG_STR, &o->init_adapter, "DIR", "start from this PEFT adapter (adapter_config.json + adapter_model.safetensors: any r, alpha, targets, rank_pattern, alpha_pattern, layers_to_transform), sharded onto this layout; its configuration wins over --lora-r, --lora-alpha, --lora-dropout, --use-rslora and --target-modules (a warning names each flag it overrides); a checkpoint to resume from wins over its values", 0, 0},
        {"base-model-name", ARG_STR, &o->base_model_name, "NAME", "the Hub id the model card names as base_model (default: config.json's _name_or_path, else none)", 0, 0},
        {"overwrite", ARG_BOOL, &o->overwrite, NULL, "start over in an OUT that holds another run or a finished one: first removes what shardlora wrote there (listed in the log), nothing else", 0, 0},
        {.type = ARG_GROUP, .group = ARGG_DATA},
        {"eval-data", ARG_STRS, &o->eval_data, "FILE", "JSONL evaluation data (same formats)", 0, 0},
        {"eval-split", ARG_FLOAT, &o->eval_split, "FRAC", "hold out this fraction of the training documents for evaluation (when no --eval-data)", 0, 0},
        {"eval-rows", ARG_INT, &o->eval_rows, "N", "evaluate on the first N eval sequences only (0: all)", 0, 0},
        {"shuffle", ARG_BOOL, &o->shuffle, NULL, "visit the sequences in a seeded permutation per epoch (off: file order)", 0, 0},
        {.name = "per-device-train-batch-size", .type = ARG_ALIAS, .target = "micro-batch"},
        {"global-batch", ARG_INT, &o->global_batch, "G", "sequences per optimizer step (0: micro-batch x dp x --gradient-accumulation-steps); a multiple of micro-batch x dp, the rest is gradient accumulation", 0, 0},
        {"gradient-accumulation-steps", ARG_INT, &o->grad_accum, "K", "micro-batches per rank per optimizer step (Hugging Face's name; sets --global-batch to micro-batch x dp x K; 0: from --global-batch)", 0, 0},
        {.type = ARG_GROUP, .group = ARGG_ADAPTER},
        {"adapter", ARG_STR, &o->adapter_kind, "KIND", r->kinds_help, 0, 0},
        {.name = "use-dora", .type = ARG_ALIAS, .target = "adapter", .value = "dora"},
        {"lora-r", ARG_INT, &o->r, "N", "LoRA rank r", 0, 0},
        {.name = "lora-rank", .type = ARG_ALIAS, .target = "lora-r"},
        {"lora-alpha", ARG_FLOAT, &o->alpha, "X", "LoRA alpha (scale = alpha / r)", 0, 0},
        {"lora-dropout", ARG_FLOAT, &o->dropout, "P", "dropout on the LoRA input, in [0, 1)", 0, 0},
        {"use-rslora", ARG_BOOL, &o->rslora, NULL, "rsLoRA scale alpha / sqrt(r)", 0, 0},
        {"target-modules", ARG_STR, &o->targets, "LIST", "comma list of q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj, or all", 0, 0},
        {.name = "lora-target-modules", .type = ARG_ALIAS, .target = "target-modules"},
        {"init", ARG_STR, &o->init, "KIND", r->inits_help, 0, 0},
        {"lora-init", ARG_STR, &o->lora_init, "KIND", "alias of --init", 0, 0},
        {"pissa-iters", ARG_INT, &o->pissa_iters, "N", "--init pissa: power iterations of the randomized SVD", 0, 0},
        {.type = ARG_GROUP, .group = ARGG_OPTIM},
        {"optimizer", ARG_STR, &o->optimizer, "NAME", "adamw (torch.optim.AdamW) | adamw-hf (transformers' AdamW, as PEFT's LoRA-FA optimizer: eps added before the bias corrections, decay after the update) | sgd", 0, 0},
        {"lr", ARG_FLOAT, &o->lr, "X", "peak learning rate", 0, 0},
        {.name = "learning-rate", .type = ARG_ALIAS, .target = "lr"},
        {"beta1", ARG_FLOAT, &o->beta1, "X", "AdamW beta1", 0, 0},
        {.name = "adam-beta1", .type = ARG_ALIAS, .target = "beta1"},
        {"beta2", ARG_FLOAT, &o->beta2, "X", "AdamW beta2", 0, 0},
        {.name = "adam-beta2", .type = ARG_ALIAS, .target = "beta2"},
        {"eps", ARG_FLOAT, &o->eps, "X", "AdamW epsilon", 0, 0},
        {.name = "adam-epsilon", .type = ARG_ALIAS, .target = "eps"},
        {"weight-decay", ARG_FLOAT, &o->weight_decay, "X", "AdamW decoupled weight decay / SGD L2", 0, 0},
        {"momentum", ARG_FLOAT, &o->momentum, "X", "SGD momentum", 0, 0},
        {"nesterov", ARG_BOOL, &o->nesterov, NULL, "SGD Nesterov momentum", 0, 0},
        {"max-grad-norm", ARG_FLOAT, &o->max_grad_norm, "X", "clip the gradient to this global norm (0: off)", 0, 0},
        {"loraplus-ratio", ARG_FLOAT, &o->loraplus_ratio, "X", "LoRA+: lora_B's learning rate = X x lora_A's (paper default 16; 0: off)", 0, 0},
        {"skip-nonfinite", ARG_BOOL, &o->skip_nonfinite, NULL, "on a non-finite loss or gradient, skip the update and count it (default: stop, exit 5)", 0, 0},
        {"seed", ARG_U64, &o->seed, "N", "seed of everything random (Philox keys): init, dropout, data order, eval split", 0, 0},
        {.type = ARG_GROUP, .group = ARGG_SCHEDULE},
        {"epochs", ARG_FLOAT, &o->epochs, "E", "passes over the training data (may be fractional); ignored when --steps is given", 0, 0},
        {.name = "num-train-epochs", .type = ARG_ALIAS, .target = "epochs"},
        {"steps", ARG_INT, &o->steps, "N", "optimizer steps (0: from --epochs)", 0, 0},
        {.name = "max-steps", .type = ARG_ALIAS, .target = "steps"},
        {"lr-schedule", ARG_STR, &o->lr_schedule, "NAME", "constant | linear | cosine (after the warmup; Hugging Face's definitions; its constant_with_warmup is constant)", 0, 0},
        {.name = "lr-scheduler-type", .type = ARG_ALIAS, .target = "lr-schedule"},
        {"warmup-steps", ARG_INT, &o->warmup_steps, "N", "linear warmup from 0 over N steps", 0, 0},
        {"warmup-ratio", ARG_FLOAT, &o->warmup_ratio, "F", "warmup over ceil(F x total steps) steps instead (Hugging Face's rule; excludes --warmup-steps)", 0, 0},
        {.type = ARG_GROUP, .group = ARGG_CHECKPOINTS},
        {"ckpt-every", ARG_INT, &o->ckpt_every, "N", "checkpoint every N steps (0: only at the end and on a signal)", 0, 0},
        {.name = "save-steps", .type = ARG_ALIAS, .target = "ckpt-every"},
        {"ckpt-every-minutes", ARG_FLOAT, &o->ckpt_minutes, "M", "also checkpoint when M minutes passed since the last one (0: off), so a crash or Ctrl-C never costs more than M minutes", 0, 0},
        {"keep-checkpoints", ARG_INT, &o->keep_ckpts, "K", "checkpoints kept in OUT/checkpoints (0: all)", 0, 0},
        {.name = "save-total-limit", .type = ARG_ALIAS, .target = "keep-checkpoints"},
        {"resume", ARG_STR, &o->resume, "WHAT", "auto (the newest usable checkpoint in OUT/checkpoints, if any) | none (a fresh start; refused where OUT holds a run: see --overwrite) | a checkpoint directory; true / false (Hugging Face's spelling) mean auto / none", 0, 0},
        {.name = "resume-from-checkpoint", .type = ARG_ALIAS, .target = "resume"},
        {"on-ckpt-failure", ARG_STR, &o->ckpt_failure, "WHAT", "continue | stop (exit 4) when a checkpoint cannot be written; the previous one stays intact either way", 0, 0},
        {.type = ARG_GROUP, .group = ARGG_PARALLEL},
        {"recompute", ARG_STR, &o->recompute, "WHAT", "none | layer: activation checkpointing per decoder layer: forward keeps only each layer's input (one layer's activations and adapter buffers exist at a time) and backward runs each layer's forward again; the same results bit for bit, for about one more forward of the layers per step; a resume may change it", 0, 0},
        {.name = "gradient-checkpointing", .type = ARG_ALIAS, .target = "recompute", .value = "layer"},
        {.type = ARG_GROUP, .group = ARGG_LOGGING},
        {"log-every", ARG_INT, &o->log_every, "N", "progress line every N steps", 0, 0},
        {.name = "logging-steps", .type = ARG_ALIAS, .target = "log-every"},
        {"progress", ARG_STR, &o->progress, "HOW", "auto (a live bar for a single process on a terminal; plain lines under mpirun/srun) | bar | lines", 0, 0},
        {"eval-every", ARG_INT, &o->eval_every, "N", "evaluate every N steps (0: only at the end); needs --eval-data or --eval-split", 0, 0},
        {.name = "eval-steps", .type = ARG_ALIAS, .target = "eval-every"},
        {.type = ARG_GROUP, .group = ARGG_EXPERT},
        {"ckpt-chunk-bytes", ARG_INT, &o->ckpt_chunk_bytes, "N", "bytes per checkpoint chunk message (0: 64 MiB; small values are for tests)", 0, 0},
        {"dump-grads", ARG_STR, &o->dump_grads, "FILE", "at the last step, write loss, global batch, adapter and gradients (safetensors)", 0, 0},
        {"peak-gflops", ARG_FLOAT, &o->peak_gflops, "X", "GEMM peak per rank for MFU (0: measure at start-up)", 0, 0},
    };
    // clang-format on
    const MpicmdHelp help = {
        "JSONL training data; per line {\"text\"}, {\"prompt\",\"completion\"}, "
        "{\"messages\":[{\"role\",\"content\"}]} or {\"input_ids\"[,\"labels\"]}",
        "token caches (default: OUT/cache); reused while the data, tokenizer and data "
        "options are unchanged",
        "tensor-parallel size (world = dp x tp; a TP group is consecutive ranks)"};
    r->nspecs = mpicmd_table(r->specs, TRAIN_MAX_SPECS, &o->run, &o->rows, &help, specs,
                             (int)(sizeof specs / sizeof specs[0]));
}

/* The name the user gave option `name` by (its own or an alias), for messages. */
static const char *train_spelling(const TrainRun *r, const char *name) {
    const ArgSpec *s = args_find(r->specs, r->nspecs, name);
    return s && s->seen_as ? s->seen_as : name;
}

/* Every integer option within a range whose products (steps x global batch, micro-batch x
 * dp x accumulation, ...) fit int64_t: a huge value is refused here, before it sizes
 * anything. */
static int train_check_sizes(const TrainRun *r, ErrStatus *st) {
    const TrainOpts *o = &r->o;
    const int64_t C = MPICMD_MAX_COUNT;
    const struct {
        const char *name;
        int64_t v, lo, hi;
    } b[] = {
        {"lora-r", o->r, 1, 1 << 16},
        {"global-batch", o->global_batch, 0, (int64_t)1 << 30},
        {"gradient-accumulation-steps", o->grad_accum, 0, (int64_t)1 << 30},
        {"steps", o->steps, 0, C},
        {"warmup-steps", o->warmup_steps, 0, C},
        {"log-every", o->log_every, 1, C},
        {"eval-every", o->eval_every, 0, C},
        {"eval-rows", o->eval_rows, 0, C},
        {"ckpt-every", o->ckpt_every, 0, C},
        {"keep-checkpoints", o->keep_ckpts, 0, 1 << 30},
        {"ckpt-chunk-bytes", o->ckpt_chunk_bytes, 0, (int64_t)1 << 40},
        {"pissa-iters", o->pissa_iters, 0, 1 << 16},
    };
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++)
        if (!mpicmd_bound(train_spelling(r, b[i].name), b[i].v, b[i].lo, b[i].hi, st)) return 0;
    int64_t per_step;
    if (!sizes_mul3(o->rows.micro_batch, r->g.dp, o->grad_accum > 0 ? o->grad_accum : 1,
                    &per_step) ||
        per_step > ((int64_t)1 << 30))
        return err_status_set(st,
                              "--micro-batch %lld x dp %d x --gradient-accumulation-steps %lld: "
                              "more than 2^30 sequences per step",
                              (long long)o->rows.micro_batch, r->g.dp,
                              (long long)(o->grad_accum > 0 ? o->grad_accum : 1));
    if (!(o->ckpt_minutes <= 1e9))
        return err_status_set(st, "--ckpt-every-minutes must be at most 1e9");
    return 1;
}

/* Semantic checks of the options and the layout, identical on every rank. */
static int train_check_opts(void *ctx, ErrStatus *st) {
    TrainRun *r = ctx;
    TrainOpts *o = &r->o;
    Grid *g = &r->g;
    int ok = 1;
    optim_defaults(&r->ocfg);
    const int okind = optim_parse_kind(o->optimizer);
    r->skind = sched_parse(o->lr_schedule);
    ok = ok && mpicmd_rows_check(&o->rows, &r->lmode, st);
    if (ok && okind < 0)
        ok = err_status_set(st, "--optimizer '%s': expected adamw, adamw-hf or sgd", o->optimizer);
    if (ok && r->skind < 0)
        ok = err_status_set(st,
                            "--%s '%s': expected constant, linear, cosine or "
                            "constant_with_warmup (= constant)",
                            train_spelling(r, "lr-schedule"), o->lr_schedule);
    if (ok) o->lr_schedule = sched_name((SchedKind)r->skind); /* run.json: our name */
    if (ok && strcmp(o->progress, "auto") && strcmp(o->progress, "bar") &&
        strcmp(o->progress, "lines"))
        ok = err_status_set(st, "--progress '%s': expected auto, bar or lines", o->progress);
    const int rc = llama_recompute_parse(o->recompute);
    if (ok && rc < 0)
        ok = err_status_set(st, "--recompute '%s': expected none or layer", o->recompute);
    r->recompute = rc < 0 ? LLAMA_RECOMPUTE_NONE : (LlamaRecompute)rc;
    if (ok && o->r < 1) ok = err_status_set(st, "--lora-r must be at least 1");
    if (ok && !(o->dropout >= 0 && o->dropout < 1))
        ok = err_status_set(st, "--lora-dropout must be in [0, 1)");
    if (ok && !(o->eval_split >= 0 && o->eval_split < 1))
        ok = err_status_set(st, "--eval-split must be in [0, 1)");
    if (ok && o->eval_split > 0 && o->eval_data.n > 0)
        ok = err_status_set(st, "--eval-split and --eval-data exclude each other");
    if (ok && !(o->epochs > 0 && isfinite(o->epochs)))
        ok = err_status_set(st, "--epochs must be a finite number > 0");
    if (ok && !(o->max_grad_norm >= 0 && isfinite(o->max_grad_norm)))
        ok = err_status_set(st, "--max-grad-norm must be a finite number >= 0");
    if (ok && !(o->lr >= 0 && isfinite(o->lr)))
        ok = err_status_set(st, "--lr must be a finite number >= 0");
    if (ok && !(o->beta1 >= 0 && o->beta1 < 1))
        ok = err_status_set(st, "--beta1 must be in [0, 1)");
    if (ok && !(o->beta2 >= 0 && o->beta2 < 1))
        ok = err_status_set(st, "--beta2 must be in [0, 1)");
    if (ok && !(o->eps > 0 && isfinite(o->eps)))
        ok = err_status_set(st, "--eps must be a finite number > 0");
    if (ok &&
        (o->ckpt_every < 0 || o->ckpt_minutes < 0 || o->keep_ckpts < 0 || o->ckpt_chunk_bytes < 0 ||
         o->warmup_steps < 0 || o->eval_every < 0 || o->eval_rows < 0 || o->steps < 0))
        ok = err_status_set(
            st, "--steps, --warmup-steps, --eval-every, --eval-rows, --ckpt-every, "
                "--ckpt-every-minutes, --keep-checkpoints and --ckpt-chunk-bytes must be >= 0");
    /* Hugging Face's resume_from_checkpoint takes a boolean too: True = the newest one */
    if (strcmp(o->resume, "true") == 0) o->resume = "auto";
    if (strcmp(o->resume, "false") == 0) o->resume = "none";
    if (ok && strcmp(o->ckpt_failure, "continue") && strcmp(o->ckpt_failure, "stop"))
        ok = err_status_set(st, "--on-ckpt-failure '%s': expected continue or stop",
                            o->ckpt_failure);
    if (ok && o->init && strcmp(o->lora_init, "default") && strcmp(o->lora_init, o->init))
        ok = err_status_set(st, "--init %s and --lora-init %s disagree", o->init, o->lora_init);
    if (ok && o->init) o->lora_init = o->init;
    char names[256], why[256];
    if (ok && !adapter_init_by_name(o->lora_init)) {
        adapter_init_names(names, sizeof names);
        ok = err_status_set(st, "--init '%s': expected one of %s", o->lora_init, names);
    }
    if (ok && !adapter_kind_by_name(o->adapter_kind)) {
        adapter_kind_names(names, sizeof names);
        ok = err_status_set(st, "--adapter '%s': expected one of %s", o->adapter_kind, names);
    }
    /* e.g. PiSSA needs LoRA's plain factors; VeRA's shared projections have their own init
     * (PEFT's kaiming), so the model card would name an init the run did not use */
    const char *bad =
        ok ? adapter_init_compat(adapter_init_by_name(o->lora_init),
                                 adapter_kind_by_name(o->adapter_kind), why, sizeof why)
           : NULL;
    if (bad) ok = err_status_set(st, "--init %s %s", o->lora_init, bad);
    if (ok && o->pissa_iters < 0) ok = err_status_set(st, "--pissa-iters must be >= 0");
    /* PiSSA writes its residual W - s B A into the frozen weights: a quantised base cannot
     * hold it (QLoRA + PiSSA would re-quantise the residual, a different model) */
    if (ok && adapter_init_by_name(o->lora_init)->needs == 2 &&
        (strcmp(o->run.base_dtype, "int8") == 0 || strcmp(o->run.base_dtype, "nf4") == 0))
        ok = err_status_set(st,
                            "--init %s rewrites the frozen weights, which --base-dtype %s "
                            "cannot hold: use --base-dtype bf16 or file",
                            o->lora_init, o->run.base_dtype);
    if (ok && !(o->loraplus_ratio >= 0 && isfinite(o->loraplus_ratio)))
        ok = err_status_set(st, "--loraplus-ratio must be a finite number >= 0");
    if (ok && (o->log_every < 1 || o->global_batch < 0 || o->grad_accum < 0))
        ok = err_status_set(
            st, "--log-every must be >= 1, --global-batch and --gradient-accumulation-steps >= 0");
    if (ok && o->base_model_name && !adio_hub_id_ok(o->base_model_name, 0))
        ok = err_status_set(st,
                            "--base-model-name '%s': not a Hugging Face Hub id (owner/name: "
                            "letters, digits, '-', '_', '.')",
                            o->base_model_name);
    if (ok && !(o->warmup_ratio >= 0 && o->warmup_ratio <= 1))
        ok = err_status_set(st, "--warmup-ratio must be in [0, 1]");
    if (ok && o->warmup_ratio > 0 && o->warmup_steps > 0)
        ok = err_status_set(st, "--warmup-ratio and --warmup-steps exclude each other");
    if (ok) ok = train_check_sizes(r, st);
    if (ok) ok = adapter_parse_targets(o->targets, &r->acfg.targets, st);
    const int64_t per_step = o->rows.micro_batch * g->dp;
    if (ok && o->grad_accum > 0 && o->global_batch > 0 &&
        o->global_batch != per_step * o->grad_accum)
        ok = err_status_set(st,
                            "--global-batch %lld disagrees with --gradient-accumulation-steps %lld "
                            "(x --micro-batch %lld x dp %d = %lld); give one of them",
                            (long long)o->global_batch, (long long)o->grad_accum,
                            (long long)o->rows.micro_batch, g->dp,
                            (long long)(per_step * o->grad_accum));
    if (ok && o->global_batch == 0)
        o->global_batch = per_step * (o->grad_accum > 0 ? o->grad_accum : 1);
    if (ok && o->global_batch % (o->rows.micro_batch * g->dp) != 0)
        ok = err_status_set(st,
                            "--global-batch %lld is not a multiple of --micro-batch %lld x dp %d "
                            "(each data-parallel rank must run whole micro-batches)",
                            (long long)o->global_batch, (long long)o->rows.micro_batch, g->dp);
    int64_t seqs; /* the data cursor after the last step */
    if (ok && (!sizes_mul(o->steps, o->global_batch, &seqs) || seqs > ((int64_t)1 << 62)))
        ok = err_status_set(st, "--steps %lld x --global-batch %lld: more than 2^62 sequences",
                            (long long)o->steps, (long long)o->global_batch);
    r->ocfg.kind = (OptimKind)okind;
    return ok;
}

/* A run refused before training leaves no trace of itself: the caches and OUT go when this
 * run created them (a --cache-dir that existed holds caches other runs may reuse; an --out
 * that existed is the user's). rmdir removes only empty directories. */
static void train_drop_outputs(const TrainRun *r) {
    if (r->g.world_rank != 0) return;
    if (!r->cache_existed) {
        if (!r->out_existed) {
            static const char *const names[] = {"train", "train.tmp", "eval", "eval.tmp"};
            ErrStatus st;
            for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
                char *path = str_join_path(r->cache_dir, names[i]);
                afile_rmdir_flat(path, &st);
                free(path);
            }
        }
        rmdir(r->cache_dir); /* only if empty: a finished cache stays reusable */
    }
    if (!r->out_existed) rmdir(r->o.out);
}

static void train_targets_csv(unsigned targets, char *buf, size_t n) {
    size_t off = 0;
    buf[0] = 0;
    for (int i = 0; i < MOD_NMODULES; i++)
        if (targets & (1u << i))
            off += (size_t)snprintf(buf + off, n - off, "%s%s", off ? "," : "",
                                    adapter_module_name((ModuleId)i));
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
            log_warn("--%s ignored: --init-adapter %s sets the adapter's configuration",
                     checks[i].flag, o->init_adapter);
    }
    char ab[32], db[32];
    if (say)
        log_info("adapter from --init-adapter %s: r=%d alpha=%s dropout=%s rslora=%d targets=%s%s",
                 o->init_adapter, ac->acfg.r, str_fmt_double(ac->alpha, ab, sizeof ab),
                 str_fmt_double(ac->dropout, db, sizeof db), ac->acfg.use_rslora, csv,
                 ac->slot_r
                     ? " (per-module ranks / alphas / layers from rank_pattern, alpha_pattern, "
                       "layers_to_transform)"
                     : "");
    o->r = ac->acfg.r;
    o->alpha = ac->alpha;
    o->dropout = ac->dropout;
    o->rslora = ac->acfg.use_rslora;
    o->targets = csv;
}

/* The model's architecture, sizes and dtypes: what a checkpoint must have been written for. */
static void train_model_fingerprint(TrainRun *r) {
    const LlamaModel *m = &r->s.m;
    snprintf(
        r->fingerprint, sizeof r->fingerprint,
        "%s hidden=%lld ffn=%lld layers=%lld heads=%lld kv_heads=%lld head_dim=%lld vocab=%lld "
        "tie=%d qkv_bias=%d o_bias=%d rope_theta=%g rope_scaling=%d dtype=%s",
        m->cfg.architecture, (long long)m->C, (long long)m->F, (long long)m->L, (long long)m->H,
        (long long)m->KV, (long long)m->D, (long long)m->V, m->cfg.tie_word_embeddings,
        m->cfg.qkv_bias, m->cfg.o_bias, m->cfg.rope_theta, m->cfg.rope_scaling_type,
        gemm_dtype_name(m->wdtype));
}

/* A file's contents as an identity value ("N bytes, crc32c X"; the reason if unreadable). */
static json_t *train_file_id(const char *path) {
    char id[128];
    ErrStatus st;
    return json_string(rundir_file_id(path, id, sizeof id, &st) ? id : st.msg);
}

/* What makes two invocations the same run (train/rundir.h), on world rank 0: what the
 * checkpoints must match to resume (model, adapter, optimizer, seed, row stream, with the
 * data by its bytes), labelled as the options. Not: --steps, --epochs, the lr schedule, the
 * global batch or the layout (a resume may change them). */
static void train_identity(TrainRun *r) {
    const TrainOpts *o = &r->o;
    const MpicmdRows *w = &o->rows;
    json_t *id = json_object(), *data = json_array(), *files = json_array();
    /* first, so a resume with another --base-dtype is named as that (the model fingerprint
     * below differs too); absent for the default, as in runs from before the option */
    if (strcmp(o->run.base_dtype, "file") != 0)
        json_object_set_new(id, "--base-dtype", json_string(o->run.base_dtype));
    json_object_set_new(id, "model", json_string(r->fingerprint));
    char *tk = str_join_path(o->run.model, "tokenizer.json");
    if (access(tk, F_OK) == 0) json_object_set_new(id, "tokenizer.json", train_file_id(tk));
    free(tk);
    for (int i = 0; i < w->data.n; i++) {
        json_array_append_new(data, train_file_id(w->data.v[i]));
        json_array_append_new(files, json_string(w->data.v[i]));
    }
    json_object_set_new(id, "--data", data);
    json_object_set_new(id, "--seq-len", json_integer((json_int_t)w->seq_len));
    json_object_set_new(id, "--pack", json_boolean(w->pack));
    json_object_set_new(id, "--long-examples", json_string(w->long_examples));
    json_object_set_new(id, "--chat-format", json_string(w->chat_format));
    /* the template by its bytes: --chat-template, else the model's files that hold it */
    char *tpl = w->chat_template ? str_dup(w->chat_template)
                                 : str_join_path(o->run.model, "chat_template.jinja");
    if (!w->chat_template && access(tpl, F_OK) != 0) {
        free(tpl);
        tpl = str_join_path(o->run.model, "tokenizer_config.json");
    }
    if (access(tpl, F_OK) == 0) json_object_set_new(id, "chat_template", train_file_id(tpl));
    free(tpl);
    if (w->chat_kwargs)
        json_object_set_new(id, "--chat-template-kwargs", json_string(w->chat_kwargs));
    json_object_set_new(id, "--train-on-prompt", json_boolean(w->train_on_prompt));
    json_object_set_new(id, "--add-eos", json_boolean(w->add_eos));
    json_object_set_new(id, "--skip-bad-lines", json_boolean(w->skip_bad));
    json_object_set_new(id, "--shuffle", json_boolean(o->shuffle));
    json_object_set_new(id, "--eval-split", json_real(o->eval_split));
    json_object_set_new(id, "--seed", json_integer((json_int_t)o->seed));
    char targets[128];
    train_targets_csv(r->ac.acfg.targets, targets, sizeof targets);
    json_object_set_new(id, "--adapter", json_string(o->adapter_kind));
    json_object_set_new(id, "--lora-r", json_integer((json_int_t)o->r));
    json_object_set_new(id, "--lora-alpha", json_real(o->alpha));
    json_object_set_new(id, "--lora-dropout", json_real(o->dropout));
    json_object_set_new(id, "--use-rslora", json_boolean(o->rslora));
    json_object_set_new(id, "--target-modules", json_string(targets));
    json_object_set_new(id, "--init", json_string(o->lora_init));
    if (strcmp(o->lora_init, "pissa") == 0)
        json_object_set_new(id, "--pissa-iters", json_integer((json_int_t)o->pissa_iters));
    json_object_set_new(id, "--loraplus-ratio", json_real(o->loraplus_ratio));
    json_t *init = o->init_adapter ? json_array() : json_null(); /* by its bytes too */
    static const char *const peft_files[] = {"adapter_config.json", "adapter_model.safetensors"};
    for (int i = 0; o->init_adapter && i < 2; i++) {
        char *f = str_join_path(o->init_adapter, peft_files[i]);
        json_array_append_new(init, train_file_id(f));
        free(f);
    }
    json_object_set_new(id, "--init-adapter", init);
    json_object_set_new(id, "--optimizer", json_string(o->optimizer));
    r->identity = id;
    r->data_files = files;
}

/* Whose OUT is it (train/rundir): before anything is written, one plan for every rank.
 * Returns 0 to go on (r->nothing_to_do: exit 0 at once) or the exit status of a refusal. */
static int train_own_out(TrainRun *r) {
    const TrainOpts *o = &r->o;
    Grid *g = &r->g;
    char def_cache[4200];
    snprintf(def_cache, sizeof def_cache, "%s/cache", o->out);
    RundirAsk ask = {o->out,         strcmp(r->cache_dir, def_cache) == 0 ? r->cache_dir : NULL,
                     NULL,           NULL,
                     o->resume,      o->overwrite,
                     o->steps,       o->epochs,
                     o->global_batch};
    if (g->world_rank == 0) {
        train_identity(r);
        ask.identity = r->identity;
        ask.data_files = r->data_files;
    }
    RundirPlan plan;
    rundir_decide(&ask, g, &plan);
    if (plan.verdict == RUNDIR_REFUSE) {
        if (g->world_rank == 0) fprintf(stderr, "shardlora: error: %s\n", plan.msg);
        return plan.code;
    }
    if (plan.verdict == RUNDIR_DONE) {
        if (g->world_rank == 0) log_info("%s", plan.msg);
        r->nothing_to_do = 1;
        return 0;
    }
    if (plan.verdict == RUNDIR_UNKNOWN && g->world_rank == 0)
        log_info("%s has no %s (an older shardlora's run, or checkpoints copied in): going on as "
                 "its checkpoints allow",
                 o->out, RUNDIR_STATE_NAME);
    if (plan.verdict != RUNDIR_OVERWRITE) return 0;
    ErrStatus st;
    err_status_ok(&st);
    const int ok = g->world_rank != 0 || rundir_clear(o->out, ask.cache_dir, &st);
    return grid_agree(g, ok, "shardlora: error: --overwrite", &st) ? 0 : EXIT_IO;
}

/* The model's shards, the adapter configuration (from --init-adapter, which wins over the
 * LoRA flags, or from the flags), OUT and the cache directory. Returns 0 or an exit status. */
static int train_open(TrainRun *r) {
    TrainOpts *o = &r->o;
    Grid *g = &r->g;
    ErrStatus st;
    snprintf(r->cache_dir, sizeof r->cache_dir, "%s", o->rows.cache_dir ? o->rows.cache_dir : "");
    if (!o->rows.cache_dir) snprintf(r->cache_dir, sizeof r->cache_dir, "%s/cache", o->out);
    const int frc = mpicmd_frozen_check(g, "train", &o->run, &r->env);
    if (frc) return frc;
    int ok = session_open(&r->s, g, o->run.model, (MemPinMode)r->env.pin, r->env.base,
                          r->env.has_stages ? r->env.stages : NULL, &st);
    r->have_session = 1;
    if (!grid_agree(g, ok, "shardlora: error", &st)) return EXIT_BAD_INPUT;
    if (o->init_adapter) {
        ok = peft_read(&r->init_pa, o->init_adapter, &st);
        r->have_init_pa = ok;
        ok = ok && adio_cfg_from_peft(&r->ac, &r->init_pa, &r->s.m, &st);
        r->have_ac = ok;
        /* the adapter's kind (DoRA when use_dora) wins; an explicit other --adapter is a
         * contradiction, not something to resolve silently */
        const ArgSpec *ks = args_find(r->specs, r->nspecs, "adapter");
        if (ok && ks && ks->seen && strcmp(o->adapter_kind, r->ac.acfg.kind) != 0)
            ok = err_status_set(
                &st,
                "--adapter %s: the adapter in %s is a %s adapter (--init-adapter decides the kind)",
                o->adapter_kind, o->init_adapter, r->ac.acfg.kind);
        if (ok) o->adapter_kind = r->ac.acfg.kind;
        if (!grid_agree(g, ok, "shardlora: error", &st)) return EXIT_BAD_INPUT;
        train_init_overrides(o, r->specs, r->nspecs, &r->ac, g->world_rank == 0, r->init_targets,
                             sizeof r->init_targets);
    } else {
        adio_cfg_uniform(&r->ac, r->s.m.L, r->acfg.targets, (int)o->r, o->alpha, o->rslora,
                         o->dropout, o->lora_init, o->run.model);
        r->have_ac = 1;
    }
    train_model_fingerprint(r);
    const int rc = train_own_out(r);
    if (rc || r->nothing_to_do) return rc;
    r->out_existed = access(o->out, F_OK) == 0;
    r->cache_existed = access(r->cache_dir, F_OK) == 0;
    ok = afile_mkdirs(o->out) && afile_mkdirs(r->cache_dir);
    if (!ok)
        err_status_set(&st, "%s: cannot create the output directory: %s", o->out, strerror(errno));
    if (!grid_agree(g, ok, "shardlora: error", &st)) return EXIT_IO;
    if (g->world_rank == 0 && log_level() >= LOG_INFO) {
        fprintf(stderr, "configuration (%s):\n",
                o->run.config.path ? o->run.config.path : "flags and defaults");
        args_print_resolved(stderr, r->specs, r->nspecs);
    }
    return 0;
}

/* The memory estimate of this run against what the node allows, before the adapters and
 * the activations are allocated (launch/mpicmd.h). Returns 0 or an exit status. */
static int train_memcheck(TrainRun *r) {
    const TrainOpts *o = &r->o;
    MemplanIn in = {.B = o->rows.micro_batch,
                    .T = o->rows.seq_len,
                    .training = 1,
                    .r = (int)o->r,
                    .kind = o->adapter_kind,
                    .targets = r->ac.acfg.targets,
                    .dropout = o->dropout > 0,
                    .recompute = r->recompute,
                    .sets = trainer_sets(&r->g, o->global_batch, o->rows.micro_batch),
                    .optim_states = optim_is_adam(r->ocfg.kind) ? 2 : 1,
                    .threads = (int)o->run.threads,
                    .mfu_probe = !(o->peak_gflops > 0)};
    MemPlan p;
    memplan_estimate(&p, &r->s.m, &in);
    if (o->dump_grads && r->g.world_rank == 0) { /* the global batch: ids, labels, positions */
        const int64_t b = sizes_mul_sat(sizes_mul_sat(o->global_batch, o->rows.seq_len), 20);
        p.bytes[MEM_OTHER] = sizes_add_sat(p.bytes[MEM_OTHER], b);
        p.total = sizes_add_sat(p.total, b);
    }
    char why[128];
    snprintf(why, sizeof why, "--%s %lld x --%s %lld", train_spelling(r, "micro-batch"),
             (long long)o->rows.micro_batch, train_spelling(r, "seq-len"),
             (long long)o->rows.seq_len);
    /* when recompute would shrink the activations, the advice says by how much */
    char advice[192] = "lower --micro-batch or --seq-len, or raise --tp";
    MemplanIn layer = in;
    layer.recompute = LLAMA_RECOMPUTE_LAYER;
    MemPlan pl;
    memplan_estimate(&pl, &r->s.m, &layer);
    if (pl.bytes[MEM_ACTIVATION] < p.bytes[MEM_ACTIVATION])
        snprintf(advice, sizeof advice,
                 "use --recompute layer (activations ~%.3g GiB), lower --micro-batch or "
                 "--seq-len, or raise --tp",
                 (double)pl.bytes[MEM_ACTIVATION] / 1073741824.0);
    const int rc = mpicmd_memcheck(&r->g, "train", &o->run, &p, why, advice);
    if (rc) train_drop_outputs(r);
    return rc;
}

/* The token caches, the eval split, the packing plans and the row order; the number of
 * steps --epochs means. Returns 0 or an exit status. */
static int train_load_data(TrainRun *r) {
    TrainOpts *o = &r->o;
    const LlamaModel *m = &r->s.m;
    TdataOpts dopt = mpicmd_tdata_opts(&o->rows, o->run.model, r->lmode, r->cache_dir, m->V,
                                       m->cfg.eos_token_id);
    dopt.eval_data = (TdataFiles){o->eval_data.v, o->eval_data.n};
    dopt.eval_split = o->eval_split;
    dopt.shuffle = o->shuffle;
    dopt.seed = o->seed;
    int data_rc = 0;
    if (!tdata_load(&r->data, &dopt, &r->g, &data_rc)) {
        /* bad data leaves no trace (token caches written before the refusal included) */
        train_drop_outputs(r);
        return data_rc;
    }
    r->have_data = 1;
    r->nrows = r->data.train.nrows;
    /* --epochs: a whole number of steps, at least 1, that an int64 holds */
    r->epoch_steps = ceil(o->epochs * (double)r->nrows / (double)o->global_batch - 1e-9);
    /* the data cursor (epochs x rows) must fit int64_t too */
    if (o->steps == 0 && !(r->epoch_steps >= 1 && r->epoch_steps < 9.2e18 &&
                           o->epochs * (double)r->nrows < 4.6e18)) {
        if (r->g.world_rank == 0)
            fprintf(stderr,
                    "shardlora train: --epochs %g: %.3g steps of %lld sequences (%lld per epoch); "
                    "expected at least 1 step and fewer than 2^62 sequences in all\n",
                    o->epochs, r->epoch_steps, (long long)o->global_batch, (long long)r->nrows);
        train_drop_outputs(r);
        return EXIT_USAGE;
    }
    if (o->eval_every > 0 && !r->data.has_eval && r->g.world_rank == 0)
        log_warn(
            "--eval-every %lld: no eval data (--eval-data or --eval-split), nothing to evaluate",
            (long long)o->eval_every);
    return 0;
}

/* GEMM and kernel contexts, then the adapter slots: created from the configuration and
 * initialised (or loaded from --init-adapter). Returns 0 or an exit status. */
static int train_init_adapters(TrainRun *r) {
    TrainOpts *o = &r->o;
    LlamaModel *m = &r->s.m;
    AdapterCfg *acfg = &r->acfg;
    session_compute_init(&r->s, (int)o->run.threads, session_max_cols(&r->s), o->rows.seq_len,
                         r->env.kops);
    session_set_compute(&r->s, r->env.compute);
    if (o->init_adapter) {
        *acfg = r->ac.acfg; /* the per-slot ranks and alphas point into ac */
    } else {
        acfg->r = (int)o->r;
        acfg->alpha = (float)o->alpha;
        acfg->use_rslora = o->rslora;
        acfg->dropout = (float)o->dropout;
    }
    snprintf(acfg->kind, sizeof acfg->kind, "%s", o->adapter_kind);
    snprintf(acfg->init, sizeof acfg->init, "%s", o->lora_init);
    /* settings of the initialisation / the kind (ignored by those without them) */
    adapter_cfg_set_option(acfg, "pissa_iters", (double)o->pissa_iters);
    adapter_cfg_set_option(acfg, "loraplus_ratio", o->loraplus_ratio);
    acfg->seed = o->seed;
    /* the checkpoint's adapter JSON keeps the kind and these settings */
    snprintf(r->ac.acfg.kind, sizeof r->ac.acfg.kind, "%s", acfg->kind);
    snprintf(r->ac.acfg.init, sizeof r->ac.acfg.init, "%s", acfg->init);
    r->ac.acfg.init_opts = acfg->init_opts;
    r->ac.acfg.kind_opts = acfg->kind_opts;
    llama_init_adapters(m, acfg, &r->g, &r->s.mem);
    /* what the kind completed (VeRA: its projections' key and sizes) goes into the
     * checkpoints' adapter JSON; the per-slot ranks stay ac's */
    const int *sr = r->ac.acfg.slot_r;
    const float *sa = r->ac.acfg.slot_alpha;
    r->ac.acfg = m->acfg;
    r->ac.acfg.slot_r = sr;
    r->ac.acfg.slot_alpha = sa;
    if (!o->init_adapter) return 0;
    ErrStatus st;
    int ok = adio_load(m, &r->init_pa, &st);
    peft_close(&r->init_pa);
    r->have_init_pa = 0;
    if (!grid_agree(&r->g, ok, "shardlora: error", &st)) {
        /* a refused adapter leaves no output directory behind when this run made it (only
         * the token caches are in it yet) */
        train_drop_outputs(r);
        return EXIT_BAD_INPUT;
    }
    log_info("adapter: initialised from %s (PEFT, %d tensors, sharded onto tp=%d)", o->init_adapter,
             m->params.n, r->g.tp);
    return 0;
}

/* The run configuration the checkpoints keep (malloc'd JSON): its first keys are what
 * export and the model card read; the row-stream keys from "pack" on are compared on
 * resume (train/tckpt.c), with seq_len and data_fingerprint. */
static char *train_run_config(const TrainOpts *o, const TrainData *d, int64_t T, int64_t B,
                              int64_t G, int64_t total_steps, const char *sched_desc,
                              int64_t warmup, SchedAnchor anchor) {
    char progress[40];
    str_fmt_double(anchor.progress, progress, sizeof progress);
    char *model = report_json_quote(o->run.model), *sched = report_json_quote(sched_desc),
         *init = o->init_adapter ? report_json_quote(o->init_adapter) : NULL,
         *lmode = report_json_quote(o->rows.long_examples);
    char *j = str_printf(
        "{\"model\": %s, \"data_fingerprint\": \"%s\", \"seq_len\": %lld, \"micro_batch\": %lld, "
        "\"global_batch\": %lld, \"steps\": %lld, \"seed\": %llu, \"max_grad_norm\": %.9g, "
        "\"lr_schedule\": %s, \"warmup_steps\": %lld, \"sched_anchor_step\": %lld, "
        "\"sched_anchor_progress\": %s%s%s, \"pack\": %s, \"long_examples\": %s, \"shuffle\": %s, "
        "\"eval_split\": %.9g, \"train_rows\": %lld, \"train_tokens\": %lld, "
        "\"train_counted_tokens\": %lld}",
        model, d->fingerprint, (long long)T, (long long)B, (long long)G, (long long)total_steps,
        (unsigned long long)o->seed, o->max_grad_norm, sched, (long long)warmup,
        (long long)anchor.step, progress, init ? ", \"init_adapter\": " : "", init ? init : "",
        o->rows.pack ? "true" : "false", lmode, o->shuffle ? "true" : "false", o->eval_split,
        (long long)d->train.nrows, (long long)d->train.tokens, (long long)d->train.counted);
    free(model);
    free(sched);
    free(init);
    free(lmode);
    return j;
}

/* The schedule's description and the run configuration for `total` steps, with the
 * warmup and the decay's anchor in r (train_set_schedule sets them). */
static void train_describe_schedule(TrainRun *r) {
    const TrainOpts *o = &r->o;
    const int64_t total = r->total_steps;
    const SchedAnchor plain = sched_anchor_plain(r->warmup);
    char lr[32];
    str_fmt_double(o->lr, lr, sizeof lr); /* as the user gave it */
    if (r->anchor.step == plain.step && r->anchor.progress == plain.progress)
        snprintf(r->sched_desc, sizeof r->sched_desc, "%s, warmup %lld of %lld steps, peak lr %s",
                 o->lr_schedule, (long long)r->warmup, (long long)total, lr);
    else
        snprintf(r->sched_desc, sizeof r->sched_desc,
                 "%s, warmup %lld of %lld steps, peak lr %s, decay re-anchored at step %lld "
                 "(%.3g%% of its course; README: Resuming)",
                 o->lr_schedule, (long long)r->warmup, (long long)total, lr,
                 (long long)r->anchor.step, 100.0 * r->anchor.progress);
    free(r->run_json);
    r->run_json =
        train_run_config(o, &r->data, r->T, r->B, r->G, total, r->sched_desc, r->warmup, r->anchor);
    r->cc.run_json = r->run_json;
}

/* The plain schedule of `total` steps (a fresh run, or the rule of an older checkpoint). */
static void train_set_schedule(TrainRun *r, int64_t total) {
    const TrainOpts *o = &r->o;
    r->total_steps = total;
    /* --warmup-ratio: transformers' get_warmup_steps, ceil(ratio x total steps) */
    r->warmup =
        o->warmup_ratio > 0 ? (int64_t)ceil(o->warmup_ratio * (double)total) : o->warmup_steps;
    r->anchor = sched_anchor_plain(r->warmup);
    train_describe_schedule(r);
}

/* What the checkpoints must match to resume (model, adapter) and keep (run configuration,
 * optimizer hyper-parameters). */
static void train_ckpt_cfg(TrainRun *r) {
    const TrainOpts *o = &r->o;
    snprintf(r->ckpt_root, sizeof r->ckpt_root, "%s/checkpoints", o->out);
    r->adapter_json =
        adio_cfg_to_json(&r->ac); /* per-slot ranks and alphas too, when not uniform */
    snprintf(
        r->hparams, sizeof r->hparams,
        "{\"lr\": %.9g, \"beta1\": %.9g, \"beta2\": %.9g, \"eps\": %.9g, \"weight_decay\": %.9g, "
        "\"momentum\": %.9g, \"nesterov\": %d}",
        o->lr, o->beta1, o->beta2, o->eps, o->weight_decay, o->momentum, o->nesterov);
    train_set_schedule(r, r->total_steps);
    r->cc = (TckptCfg){r->ckpt_root,
                       r->fingerprint,
                       r->adapter_json,
                       r->run_json,
                       r->hparams,
                       o->seed,
                       (size_t)o->ckpt_chunk_bytes,
                       (int)o->keep_ckpts};
}

/* Activations and batches, the optimizer and the gradient sync (train/trainer). */
static void train_init_trainer(TrainRun *r) {
    TrainOpts *o = &r->o;
    r->B = o->rows.micro_batch;
    r->T = o->rows.seq_len;
    r->G = o->global_batch;
    r->total_steps =
        o->steps > 0 ? o->steps : (int64_t)r->epoch_steps; /* after a resume: see below */
    session_batches_init(&r->s, r->B, r->T, r->recompute, trainer_sets(&r->g, r->G, r->B));
    r->ocfg.lr = (float)o->lr;
    r->ocfg.beta1 = (float)o->beta1;
    r->ocfg.beta2 = (float)o->beta2;
    r->ocfg.eps = (float)o->eps;
    r->ocfg.weight_decay = (float)o->weight_decay;
    r->ocfg.momentum = (float)o->momentum;
    r->ocfg.nesterov = o->nesterov;
    TrainerCfg tc = {r->G, o->max_grad_norm, o->seed};
    trainer_init(&r->tr, &r->s, &tc, &r->ocfg);
    r->have_trainer = 1;
    train_targets_csv(r->acfg.targets, r->targets_csv, sizeof r->targets_csv);
    train_ckpt_cfg(r);
}

/* The lr schedule of a resumed run of `total` steps. The checkpoint's rule (its warmup and
 * anchor) goes on when its total is unchanged; a new total (--steps, or --epochs / the
 * global batch) bends the decay at the checkpoint's step (model/sched.h): the lr goes on
 * from where it was, with the same shape, to 0 at the new end, said in one line. A
 * checkpoint without an anchor (older versions) gets the plain schedule of the new total. */
static void train_resume_schedule(TrainRun *r, const TckptPos *pos, int64_t total) {
    const TrainOpts *o = &r->o;
    if (!pos->has_anchor) {
        if (total != r->total_steps) train_set_schedule(r, total);
        if (pos->total_steps > 0 && total != pos->total_steps && r->g.world_rank == 0)
            log_warn("the checkpoint predates anchored schedules (it keeps no anchor): the lr "
                     "follows a fresh run's schedule of %lld steps, not %lld, from step %lld on "
                     "(README: Resuming)",
                     (long long)total, (long long)pos->total_steps, (long long)(pos->step + 1));
        return;
    }
    const int64_t was = pos->total_steps, at = pos->step;
    r->total_steps = total;
    r->warmup = pos->warmup;
    /* a constant lr has no decay to re-anchor: its runs stay byte-identical to one that
     * was given the final --steps from the start */
    const int moved = total != was && r->skind != SCHED_CONSTANT;
    r->anchor = moved ? sched_anchor_resume(pos->anchor, r->warmup, was, at) : pos->anchor;
    train_describe_schedule(r);
    if (total == was || total <= at || r->g.world_rank != 0) return;
    const SchedKind k = (SchedKind)r->skind;
    const double lr = sched_lr_resumed(k, o->lr, at, r->warmup, r->anchor, total);
    char rest[160];
    if (k == SCHED_CONSTANT)
        snprintf(rest, sizeof rest, "the lr stays %g", o->lr);
    else if (at <= r->warmup)
        snprintf(rest, sizeof rest,
                 "the warmup ends after step %lld as planned, then the lr decays (%s) from %g to "
                 "0 after step %lld",
                 (long long)r->warmup, sched_name(k), o->lr, (long long)total);
    else
        snprintf(rest, sizeof rest,
                 "the lr continues from step %lld's %.3e and decays (%s) to 0 after step %lld",
                 (long long)at, lr, sched_name(k), (long long)total);
    log_info("%s %lld -> %lld steps on resume at step %lld: %s (README: Resuming)",
             o->steps > 0 ? "--steps" : "--epochs / global batch:", (long long)was,
             (long long)total, (long long)at, rest);
}

/* --resume: where the run goes on (step, data cursor) and, for --epochs, how many steps the
 * rest of the data takes at this run's global batch. Returns 0 or an exit status. */
static int train_resume(TrainRun *r) {
    const TrainOpts *o = &r->o;
    r->first_step = 1;
    r->cursor = 0;
    tckpt_remove_leftovers(&r->cc, &r->g); /* fresh or resumed: no write of ours is running */
    if (strcmp(o->resume, "none") == 0) return 0;
    TckptPos pos;
    memset(&pos, 0, sizeof pos);
    int rr = tckpt_resume(&r->cc, strcmp(o->resume, "auto") == 0 ? NULL : o->resume, &r->g,
                          &r->s.m.params, &r->tr.opt, &pos);
    if (rr < 0) return EXIT_BAD_INPUT;
    if (rr == 0) return 0;
    r->first_step = pos.step + 1;
    r->cursor = pos.cursor;
    /* --epochs counts rows, not steps: the rest of them in steps of this run's G (the
     * checkpoint's G may differ, e.g. on another number of ranks) */
    const int64_t planned = r->total_steps, G = r->G;
    int64_t total = planned;
    if (o->steps == 0) {
        const double left = o->epochs * (double)r->nrows - (double)r->cursor;
        total = pos.step + (left > 0 ? (int64_t)ceil(left / (double)G - 1e-9) : 0);
    }
    if (pos.global_batch > 0 && pos.global_batch != G && r->g.world_rank == 0) {
        if (o->steps == 0)
            log_warn(
                "global batch %lld, the checkpoint's was %lld: the rest of the %g epochs takes "
                "%lld "
                "more steps, so the run and its lr schedule end at step %lld (a fresh run: %lld)",
                (long long)G, (long long)pos.global_batch, o->epochs, (long long)(total - pos.step),
                (long long)total, (long long)planned);
        else
            log_warn("global batch %lld, the checkpoint's was %lld: steps %lld to %lld take %lld "
                     "sequences "
                     "each",
                     (long long)G, (long long)pos.global_batch, (long long)r->first_step,
                     (long long)total, (long long)G);
    }
    train_resume_schedule(r, &pos, total);
    return 0;
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
            while (e + 1 < CPU_SETSIZE && CPU_ISSET(e + 1, &set))
                e++;
            off += (size_t)snprintf(cpus + off, sizeof cpus - off, off ? ",%d" : "%d", c);
            if (e > c) off += (size_t)snprintf(cpus + off, sizeof cpus - off, "-%d", e);
            c = e;
        }
    }
    log_rank("rank %d: tp_rank %d dp_rank %d on %s, cpus %s, NUMA node %d", g->world_rank,
             g->tp_rank, g->dp_rank, host, cpus, mem->numa_node);
}

/* SIGUSR1 (Slurm's --signal), SIGTERM or SIGINT (Ctrl-C) asks for a checkpoint and a clean
 * exit (status 75) at the next step boundary; a second SIGTERM or SIGINT exits at once, with
 * no checkpoint of the current step. Signal state is process-wide by nature; the handler
 * only sets flags and write(2)s. */
static volatile sig_atomic_t g_train_signal;
static volatile sig_atomic_t g_train_stops;  /* SIGTERM / SIGINT received so far */
static volatile sig_atomic_t g_train_speaks; /* 1 on world rank 0: the handler may print */

static void train_say(const char *msg, size_t n) {
    if (g_train_speaks) (void)!write(STDERR_FILENO, msg, n);
}

static void train_on_signal(int sig) {
    static const char again[] =
        "\nshardlora: interrupted again: exiting NOW without a checkpoint of the current step "
        "(the newest one in OUT/checkpoints is intact)\n";
    static const char first[] =
        "\nshardlora: interrupt: writing a checkpoint after the current step, then exiting "
        "(status 75; the same command resumes); interrupt again to stop at once without it\n";
    if (sig != SIGUSR1 && g_train_stops++ > 0) {
        train_say(again, sizeof again - 1);
        _exit(128 + sig);
    }
    if (sig == SIGINT) train_say(first, sizeof first - 1);
    g_train_signal = sig;
}

static void train_install_signals(const Grid *g) {
    g_train_speaks = g->world_rank == 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = train_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

/* One line on what protects the run's work: when checkpoints are written. */
static void train_log_protection(const TrainRun *r) {
    const TrainOpts *o = &r->o;
    char every[64] = "", minutes[64] = "";
    if (o->ckpt_every > 0)
        snprintf(every, sizeof every, "every %lld steps, ", (long long)o->ckpt_every);
    if (o->ckpt_minutes > 0)
        snprintf(minutes, sizeof minutes, "every %g minutes, ", o->ckpt_minutes);
    log_info("checkpoints: %s%sat the end, and on SIGTERM, SIGUSR1 or Ctrl-C (SIGINT) after the "
             "current step (then exit 75; a second SIGTERM or Ctrl-C exits at once without one)%s",
             every, minutes,
             getenv("OMPI_COMM_WORLD_SIZE")
                 ? "; under Open MPI's mpirun Ctrl-C reaches the ranks as SIGTERM followed by "
                   "SIGKILL after --mca odls_base_sigkill_timeout seconds (default 1): raise it, "
                   "or send SIGUSR1 to mpirun, which forwards it"
                 : "");
}

/* How MFU is counted: the FLOPs formula with its figures and the peak. */
static void train_log_mfu(const TrainRun *r) {
    const LlamaModel *m = &r->s.m;
    const MfuPeak *p = &r->peak;
    const double attn = 6.0 * (double)m->L * (double)(m->H * m->D) * (double)(r->T + 1);
    log_info("MFU = model FLOPs/s / peak (never above 100%%); model FLOPs/token = 4*N_big + "
             "6*L*(H*D)*(T+1) (causal attention as computed: the masked half is skipped) + "
             "adapter = 4*%.4g + 6*%lld*%lld*%lld + ... = %.4g (with PaLM's dense attention "
             "12*L*(H*D)*T, masked half included: %.4g)",
             r->nbig, (long long)m->L, (long long)(m->H * m->D), (long long)(r->T + 1), r->fpt,
             r->fpt - attn + r->dense_attn);
    log_info("MFU peak = %.4g GFLOP/s per rank (%s); the CPU's theoretical FMA peak: %s%s%.1f "
             "GFLOP/s; a step faster than the peak raises it to that step's rate",
             p->gflops, p->source, p->theoretical_desc, p->theoretical > 0 ? " = " : "",
             p->theoretical > 0 ? p->theoretical : 0.0);
}

/* The start-up lines: model, schedule, adapter, grid, binding, MFU formula, memory. */
static void train_log_start(TrainRun *r) {
    const TrainOpts *o = &r->o;
    const Grid *g = &r->g;
    const LlamaModel *m = &r->s.m;
    char desc[256];
    mfu_peak_init(&r->peak, o->peak_gflops, &r->g, &r->s.gc, &r->s.mem, 0.5);
    r->fpt = llama_flops_per_token(m, r->T, &r->nbig, &r->dense_attn);
    if (g->pp > 1) { /* the adapters of every stage */
        const double base =
            4.0 * r->nbig + 6.0 * (double)m->L * (double)(m->H * m->D) * (double)(r->T + 1);
        double adapters = r->fpt - base;
        grid_allreduce_sum_f64(&r->g, r->g.pp_comm, &adapters, 1, GRID_BYTES_OTHER);
        r->fpt = base + adapters;
    }
    log_info("shardlora train: %s (%s)", o->run.model,
             session_describe_model(&r->s, desc, sizeof desc));
    log_info("schedule: %lld steps of %lld sequences x %lld tokens (%lld micro-batches of %lld per "
             "rank per step); "
             "%.3g epochs of %lld sequences; lr %s; optimizer %s",
             (long long)r->total_steps, (long long)r->G, (long long)r->T, (long long)r->tr.nmicro,
             (long long)r->B,
             ((double)r->cursor0 + (double)(r->total_steps - r->first_step + 1) * (double)r->G) /
                 (double)r->nrows,
             (long long)r->nrows, r->sched_desc, o->optimizer);
    char alpha[32], dropout[32], ratio[32];
    log_info("adapter: %s r=%lld alpha=%s dropout=%s rslora=%d init=%s loraplus_ratio=%s "
             "targets=%s (%zu trainable of %zu adapter floats on rank 0)",
             r->acfg.kind, (long long)o->r, str_fmt_double(o->alpha, alpha, sizeof alpha),
             str_fmt_double(o->dropout, dropout, sizeof dropout), o->rslora, o->lora_init,
             str_fmt_double(o->loraplus_ratio, ratio, sizeof ratio), r->targets_csv,
             m->params.trainable, m->params.total);
    const LlamaActs *acts = &r->s.acts;
    char inflight[96] = "";
    if (acts->nsets > 1)
        snprintf(inflight, sizeof inflight, ", for each of %d micro-batches in flight on stage 0",
                 acts->nsets);
    log_info("activations: recompute=%s (%s%s); the decoder's %.1f MiB on rank 0 (the memory "
             "table adds the adapters' buffers)",
             llama_recompute_name(acts->recompute),
             acts->recompute == LLAMA_RECOMPUTE_LAYER
                 ? "forward keeps each layer's input, backward runs each layer's forward again"
                 : "forward keeps every layer's activations for backward",
             inflight, (double)acts->bytes / 1048576.0);
    log_info("grid: world=%d = dp %d x pp %d x tp %d; per TP rank: %lld heads, %lld kv heads%s, "
             "ffn %lld, vocab rows %lld; kernels=%s; %s",
             g->world_size, g->dp, g->pp, g->tp, (long long)m->Hl, (long long)m->KVl,
             m->KV < g->tp && g->tp > 1 ? " (replicated)" : "", (long long)m->Fl, (long long)m->Vl,
             r->env.kops->name, gemm_describe(&r->s.gc, desc, sizeof desc));
    log_info("frozen base held as %s, its GEMMs compute in %s; oneDNN ISA %s%s",
             gemm_dtype_name(m->wdtype), r->s.compute_why, gemm_isa(),
             gemm_bf16_native() ? " (native BF16)" : " (no native BF16)");
    train_log_binding(g, &r->s.mem);
    train_log_protection(r);
    int tp_nodes = grid_tp_nodes(&r->g);
    if (tp_nodes > 1 && g->tp_rank == 0)
        log_warn(
            "the TP group of dp_rank %d spans %d nodes: its per-layer all-reduces will cross the "
            "network (place consecutive ranks on one node, e.g. mpirun --map-by node:PE=...)",
            g->dp_rank, tp_nodes);
    train_log_mfu(r);
    char bytype[160] = "";
    for (int d = 0, at = 0; d < 4; d++)
        if (m->dtype_bytes[d] && at < (int)sizeof bytype)
            at += snprintf(bytype + at, sizeof bytype - (size_t)at, "%s%s %.1f MiB", at ? ", " : "",
                           gemm_dtype_name((GemmDtype)d), (double)m->dtype_bytes[d] / 1048576.0);
    log_rank("rank %d: frozen weights %.1f MiB resident (%s; %.1f MiB not divided by tp), %.1f MiB "
             "read from disk",
             g->world_rank, (double)m->frozen_bytes / 1048576.0, bytype,
             (double)m->replicated_bytes / 1048576.0, (double)m->bytes_read / 1048576.0);
    mem_print_table(&r->s.mem, "at start-up");
}

/* OUT/run.json and the metrics file; the progress display. Returns 0 or an exit status. */
static int train_open_report(TrainRun *r) {
    const TrainOpts *o = &r->o;
    Grid *g = &r->g;
    ErrStatus st;
    int ok = 1;
    if (g->world_rank == 0) {
        ReportRun run = {r->argc,       r->argv,        args_to_json(r->specs, r->nspecs),
                         r->G,          r->total_steps, r->sched_desc,
                         r->fingerprint};
        ok = report_run_json(o->out, &run, &r->s, &r->data, &st);
    }
    if (!grid_agree(g, ok || g->world_rank != 0, "shardlora: error", &st)) return EXIT_IO;
    /* Under mpirun / srun rank 0's stderr may be a pseudo-terminal even when the job's output
     * goes to a file, so `auto` draws the bar only for a single process on a terminal. */
    const int launched =
        g->world_size > 1 || getenv("SLURM_JOB_ID") || getenv("OMPI_COMM_WORLD_SIZE");
    const int bar = g->world_rank == 0 &&
                    (strcmp(o->progress, "bar") == 0 ||
                     (strcmp(o->progress, "auto") == 0 && !launched && isatty(STDERR_FILENO)));
    ok = report_open(&r->rep, o->out, g, r->first_step, bar, &st);
    r->have_report = 1;
    if (!grid_agree(g, ok || g->world_rank != 0, "shardlora: error", &st)) return EXIT_IO;
    return 0;
}

/* --dump-grads at the last step: loss, the global batch (rebuilt from the data stream),
 * every adapter tensor and its synchronised gradient, with the run's settings. */
static int train_dump_grads(TrainRun *r, TrainLoop *l, const TrainerStep *ts) {
    const TrainOpts *o = &r->o;
    Grid *g = &r->g;
    const ParamTable *p = &r->s.m.params;
    report_gather(&l->full_vals, p, p->values, g);
    report_gather(&l->full_grads, p, p->grads, g);
    if (g->world_rank != 0) return 1;
    const int64_t n = r->G * r->T;
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    int64_t *labels = malloc((size_t)n * sizeof *labels), *pos = malloc((size_t)n * sizeof *pos);
    SL_CHECK(ids && labels && pos, "out of memory");
    for (int64_t j = 0; j < r->G; j++)
        tdata_train_row(&r->data, r->cursor + j, r->T, ids + j * r->T, labels + j * r->T,
                        pos + j * r->T);
    /* numbers as "%.9g" (exact for the integers here), strings as they are */
    const struct {
        const char *key;
        double v;
    } num[] = {{"lora_r", (double)o->r},
               {"lora_alpha", o->alpha},
               {"use_rslora", o->rslora},
               {"lora_dropout", o->dropout},
               {"loraplus_ratio", o->loraplus_ratio},
               {"step", (double)ts->step},
               {"lr", o->lr},
               {"beta1", o->beta1},
               {"beta2", o->beta2},
               {"eps", o->eps},
               {"weight_decay", o->weight_decay},
               {"momentum", o->momentum},
               {"nesterov", o->nesterov},
               {"max_grad_norm", o->max_grad_norm},
               {"micro_batch", (double)o->rows.micro_batch},
               {"global_batch", (double)r->G},
               {"seq_len", (double)r->T},
               {"tp", g->tp},
               {"dp", g->dp},
               {"pp", g->pp}};
    enum { NNUM = sizeof num / sizeof num[0] };
    char v[NNUM + 1][32];
    const char *meta[2 * (NNUM + 5)] = {
        "target_modules", r->targets_csv, "lora_init",  o->lora_init, "adapter_kind",
        o->adapter_kind,  "optimizer",    o->optimizer, "seed",       v[NNUM]};
    snprintf(v[NNUM], sizeof v[NNUM], "%llu", (unsigned long long)o->seed);
    int k = 5;
    for (int i = 0; i < NNUM; i++, k++) {
        snprintf(v[i], sizeof v[i], "%.9g", num[i].v);
        meta[2 * k] = num[i].key;
        meta[2 * k + 1] = v[i];
    }
    ReportBatch b = {ts->loss, ids, labels, pos, r->G, r->T};
    ErrStatus st;
    int ok = report_dump_grads(o->dump_grads, &l->full_vals, &l->full_grads, &b, meta, k, &st);
    if (!ok) fprintf(stderr, "shardlora: error: --dump-grads: %s\n", st.msg);
    free(ids);
    free(labels);
    free(pos);
    return ok;
}

/* The Hub id the model card names as base_model: --base-model-name, else config.json's
 * _name_or_path when it reads as owner/name and is not a directory here; else none. */
static const char *train_base_model(const TrainRun *r) {
    if (r->o.base_model_name) return r->o.base_model_name;
    const char *np = r->s.m.cfg.name_or_path;
    struct stat sb;
    if (!adio_hub_id_ok(np, 1) || stat(np, &sb) == 0) return NULL;
    return np;
}

/* {"files": [{"name": base name, "bytes"}], "documents", "rows", "tokens", "counted_tokens"}
 * of one side of the data (a model card's "train_data" / "eval_data"). */
static json_t *train_card_data(const ArgStrs *files, const PackPlan *p, const char *note) {
    json_t *d = json_object(), *fa = json_array();
    for (int i = 0; files && i < files->n; i++) {
        const char *path = files->v[i], *slash = strrchr(path, '/');
        json_t *f = json_object();
        struct stat sb;
        json_object_set_new(f, "name", json_string(slash && slash[1] ? slash + 1 : path));
        if (stat(path, &sb) == 0) json_object_set_new(f, "bytes", json_integer(sb.st_size));
        json_array_append_new(fa, f);
    }
    json_object_set_new(d, "files", fa);
    if (note) json_object_set_new(d, "note", json_string(note));
    json_object_set_new(d, "documents", json_integer((json_int_t)p->docs));
    json_object_set_new(d, "rows", json_integer((json_int_t)p->nrows));
    json_object_set_new(d, "tokens", json_integer((json_int_t)p->tokens));
    json_object_set_new(d, "counted_tokens", json_integer((json_int_t)p->counted));
    return d;
}

/* r->run_card: the run configuration with the model card's "card" object (model/adapter_io.h:
 * base model, data files and sizes, best evaluation so far, versions), which the
 * checkpoints keep so that `shardlora export` writes the card this run writes. */
static void train_card_refresh(TrainRun *r, const TrainLoop *l) {
    const TrainOpts *o = &r->o;
    json_t *c = json_object(), *ver = json_object();
    const char *hub = train_base_model(r);
    if (hub) json_object_set_new(c, "base_model", json_string(hub));
    json_object_set_new(c, "train_data", train_card_data(&o->rows.data, &r->data.train, NULL));
    char note[96];
    snprintf(note, sizeof note, "held out of the training files (--eval-split %s)",
             str_fmt_double(o->eval_split, (char[32]){0}, 32));
    if (r->data.has_eval)
        json_object_set_new(c, "eval_data",
                            train_card_data(o->eval_data.n ? &o->eval_data : NULL, &r->data.eval,
                                            o->eval_data.n ? NULL : note));
    if (l && l->best_step >= 0) {
        json_t *be = json_object();
        json_object_set_new(be, "loss", json_real(l->best_eval));
        json_object_set_new(be, "ppl", json_real(exp(l->best_eval)));
        json_object_set_new(be, "step", json_integer((json_int_t)l->best_step));
        json_object_set_new(c, "best_eval", be);
    }
    char mpiv[MPI_MAX_LIBRARY_VERSION_STRING], desc[256];
    json_object_set_new(ver, "shardlora", json_string(SHARDLORA_VERSION));
    json_object_set_new(ver, "MPI", json_string(grid_mpi_version(mpiv, sizeof mpiv)));
    json_object_set_new(ver, "BLAS", json_string(gemm_describe(&r->s.gc, desc, sizeof desc)));
    json_object_set_new(c, "versions", ver);
    char *text = json_dumps(c, JSON_COMPACT);
    SL_CHECK(text, "out of memory");
    str_json_shorten(text);
    json_decref(c);
    /* spliced in as the last key: the keys before it stay byte for byte as run_json has them */
    const size_t n = strlen(r->run_json);
    SL_CHECK(n >= 2 && r->run_json[n - 1] == '}', "run configuration is not a JSON object");
    free(r->run_card);
    r->run_card = str_printf("%.*s, \"card\": %s}", (int)(n - 1), r->run_json, text);
    free(text);
    r->cc.run_json = r->run_card;
}

/* What the live bar shows during an evaluation (trainer_eval's round callback). */
typedef struct {
    Report *rep;
    int64_t step;
    double t_start;
} TrainEvalBar;

static void train_eval_round(void *ctx, int64_t k, int64_t rounds, const double *sum) {
    (void)sum;
    const TrainEvalBar *b = ctx;
    report_bar_eval(b->rep, b->step, k + 1, rounds, timer_now() - b->t_start);
}

/* Evaluation at `step` (every --eval-every steps and at the end). */
static void train_eval_at(TrainRun *r, TrainLoop *l, int64_t step, double epoch) {
    int64_t rows = r->data.eval.nrows, tokens = 0;
    if (r->o.eval_rows > 0 && r->o.eval_rows < rows) rows = r->o.eval_rows;
    const RowSource src = tdata_eval_source(&r->data);
    const int64_t per_round = r->B * r->g.dp;
    TrainEvalBar bar = {&r->rep, step, l->t_start};
    report_bar_eval(&r->rep, step, 0, (rows + per_round - 1) / per_round, timer_now() - l->t_start);
    double te = timer_now();
    const double loss = trainer_eval(&r->s, &src, rows, r->o.seed, train_eval_round, &bar, &tokens);
    te = timer_now() - te;
    l->t_eval += te;
    l->last_eval = loss;
    if (loss < l->best_eval) {
        l->best_eval = loss;
        l->best_step = step;
    }
    report_eval(&r->rep, step, epoch, loss, tokens, te);
}

/* Checkpoint at the end of the run, every --ckpt-every steps, when --ckpt-every-minutes have
 * passed (rank 0's clock) or on a signal: all ranks agree on it here, at the step boundary.
 * Returns 0 to go on, or the run's exit status. */
static int train_maybe_checkpoint(TrainRun *r, TrainLoop *l, int64_t step) {
    const TrainOpts *o = &r->o;
    Grid *g = &r->g;
    int want[2] = {(int)g_train_signal, g->world_rank == 0 && o->ckpt_minutes > 0 &&
                                            timer_now() - l->t_ckpt >= 60.0 * o->ckpt_minutes};
    grid_allreduce_max_int(g, g->world, want, 2, GRID_BYTES_OTHER);
    const int due = step == r->total_steps || (o->ckpt_every > 0 && step % o->ckpt_every == 0) ||
                    want[0] || want[1];
    if (!due) return 0;
    report_bar_clear(&r->rep);
    train_card_refresh(r, l);
    const int saved = tckpt_save(&r->cc, g, &r->s.m.params, &r->tr.opt, step, r->cursor);
    if (saved) l->t_ckpt = timer_now();
    if (!saved && step == r->total_steps && !want[0]) {
        /* the adapter is still written, but the run did not end cleanly */
        if (g->world_rank == 0)
            fprintf(stderr,
                    "shardlora: error: the final checkpoint (step %lld) was not written; "
                    "the previous checkpoint is intact\n",
                    (long long)step);
        l->final_ckpt_failed = 1;
    } else if (!saved && strcmp(o->ckpt_failure, "stop") == 0 && !want[0]) {
        if (g->world_rank == 0)
            fprintf(stderr, "shardlora: error: stopping (--on-ckpt-failure stop); the previous "
                            "checkpoint is intact\n");
        return EXIT_IO;
    } else if (!saved) {
        if (g->world_rank == 0) log_warn("training goes on; the previous checkpoint is intact");
    }
    if (!want[0]) return 0;
    log_info("signal %d: %s; exiting with status %d so the job can be requeued and resumed",
             want[0], saved ? "checkpoint written" : "the checkpoint FAILED", EXIT_REQUEUE);
    return saved ? EXIT_REQUEUE : EXIT_IO;
}

/* Metrics, progress and evaluation after a step. */
static void train_after_step(TrainRun *r, TrainLoop *l, const TrainerStep *ts, double lr,
                             double dt) {
    const TrainOpts *o = &r->o;
    const int64_t step = ts->step;
    l->t_steps += dt;
    l->flops_done += r->fpt * (double)(r->G * r->T);
    const double tps = (double)(r->G * r->T) / dt;
    /* this rank's share of the step's model FLOPs per second, against the peak per rank */
    const double gflops = r->fpt * (double)(r->G * r->T) / dt / r->g.world_size / 1e9;
    const double was = r->peak.gflops;
    if (mfu_peak_observe(&r->peak, gflops, step) && r->g.world_rank == 0) {
        report_bar_clear(&r->rep);
        log_info("MFU: step %lld ran at %.4g model GFLOP/s per rank, above the peak %.4g (%s): "
                 "the peak follows the run's best rate from now on (MFU stays <= 100%%)",
                 (long long)step, gflops, was,
                 r->o.peak_gflops > 0 ? "--peak-gflops" : "measured sgemm");
    }
    const double mfu = gflops / r->peak.gflops;
    const double epoch = (double)r->cursor / (double)r->nrows;
    report_step(&r->rep, ts, epoch, lr, tps, mfu);
    if (r->data.has_eval &&
        ((o->eval_every > 0 && step % o->eval_every == 0) || step == r->total_steps))
        train_eval_at(r, l, step, epoch);
    const double el = timer_now() - l->t_start;
    const double eta = el / (double)l->steps_run * (double)(r->total_steps - step);
    if (step % o->log_every == 0 || step == r->total_steps || step == r->first_step)
        report_progress(&r->rep, ts, r->total_steps, epoch, lr, tps, mfu, el, eta);
    report_bar_draw(&r->rep, step, r->total_steps, ts->loss, tps, el, eta);
    if (log_level() >= LOG_DEBUG) {
        const uint64_t *b = r->g.bytes, *p = l->bytes_prev;
        log_debug("step %lld bytes: tp %.3g MB, dp %.3g MB, world %.3g MB, kv %.3g MB, pp %.3g MB",
                  (long long)step, (double)(b[GRID_BYTES_TP] - p[GRID_BYTES_TP]) / 1e6,
                  (double)(b[GRID_BYTES_DP] - p[GRID_BYTES_DP]) / 1e6,
                  (double)(b[GRID_BYTES_WORLD] - p[GRID_BYTES_WORLD]) / 1e6,
                  (double)(b[GRID_BYTES_KV] - p[GRID_BYTES_KV]) / 1e6,
                  (double)(b[GRID_BYTES_PP] - p[GRID_BYTES_PP]) / 1e6);
        memcpy(l->bytes_prev, r->g.bytes, sizeof l->bytes_prev);
    }
}

/* One optimizer step: gradients, the --dump-grads hook, the update (or a counted skip of a
 * non-finite one). Returns 0 or the run's exit status. */
static int train_one_step(TrainRun *r, TrainLoop *l, int64_t step) {
    const TrainOpts *o = &r->o;
    const double t0 = timer_now();
    const double lr =
        sched_lr_resumed((SchedKind)r->skind, o->lr, step, r->warmup, r->anchor, r->total_steps);
    const RowSource src = tdata_train_source(&r->data);
    TrainerStep ts;
    trainer_grads(&r->tr, &src, r->cursor, step, &ts);
    if (!ts.finite && !o->skip_nonfinite) {
        report_bar_clear(&r->rep);
        if (r->g.world_rank == 0)
            fprintf(stderr,
                    "shardlora: error: step %lld: non-finite %s (loss %g, grad norm %g); stopping "
                    "(--skip-nonfinite skips such steps instead)\n",
                    (long long)step, isfinite(ts.loss) ? "gradient" : "loss", ts.loss,
                    ts.grad_norm);
        return EXIT_NONFINITE;
    }
    int rc = 0;
    if (o->dump_grads && step == r->total_steps && !train_dump_grads(r, l, &ts)) rc = EXIT_IO;
    if (ts.finite) {
        trainer_update(&r->tr, (float)lr, &ts);
        l->last_loss = ts.loss;
        l->tokens_counted += ts.counted; /* a skipped step trained on nothing */
    } else {
        l->skipped++;
        if (r->g.world_rank == 0)
            log_warn("step %lld: non-finite %s (loss %g, grad norm %g): update skipped "
                     "(--skip-nonfinite; %lld so far)",
                     (long long)step, isfinite(ts.loss) ? "gradient" : "loss", ts.loss,
                     ts.grad_norm, (long long)l->skipped);
    }
    r->cursor += r->G;
    l->steps_run++;
    train_after_step(r, l, &ts, lr, timer_now() - t0);
    return rc ? rc : train_maybe_checkpoint(r, l, step);
}

/* Steps first_step .. total_steps; l->step ends one past the last step done. */
static int train_loop(TrainRun *r, TrainLoop *l) {
    memset(l, 0, sizeof *l);
    l->best_step = -1;
    l->best_eval = INFINITY;
    l->last_eval = l->last_loss = NAN;
    report_full_init(&l->full_vals, &r->s.m.params, &r->g);
    if (r->o.dump_grads) report_full_init(&l->full_grads, &r->s.m.params, &r->g);
    l->t_start = l->t_ckpt = timer_now();
    memcpy(l->bytes_prev, r->g.bytes, sizeof l->bytes_prev);
    /* a resumed run's best evaluation may be an earlier run's (the card and summary say so) */
    if (r->first_step > 1 && r->g.world_rank == 0)
        report_best_eval(r->o.out, r->first_step - 1, &l->best_eval, &l->best_step);
    int rc = 0;
    for (l->step = r->first_step; l->step <= r->total_steps && rc == 0; l->step++)
        rc = train_one_step(r, l, l->step);
    report_close(&r->rep);
    if ((rc == 0 || rc == EXIT_REQUEUE) && r->first_step > r->total_steps)
        log_info("no step left: the checkpoint is at step %lld of %lld; writing the adapter and "
                 "summaries from it",
                 (long long)(r->first_step - 1), (long long)r->total_steps);
    return rc;
}

/* After a complete run: OUT/adapter/, the summaries and the closing lines. */
static int train_outputs(TrainRun *r, TrainLoop *l) {
    Grid *g = &r->g;
    const ParamTable *p = &r->s.m.params;
    const int64_t steps_done = l->step - 1;
    ErrStatus st;
    int rc = 0;
    report_gather(&l->full_vals, p, p->values, g);
    if (g->world_rank == 0) {
        train_card_refresh(r, l);
        AdioCard card = {
            r->run_card, optim_kind_name(r->ocfg.kind), r->hparams, steps_done, g->tp, g->dp, NULL};
        if (!report_write_adapter(r->o.out, r->o.run.model, &l->full_vals, r->adapter_json,
                                  r->s.m.L, &card, &st)) {
            fprintf(stderr, "shardlora: error: %s\n", st.msg);
            rc = EXIT_IO;
        } else {
            log_info("adapter written to %s/adapter (adapter_model.safetensors, "
                     "adapter_config.json, README.md)",
                     r->o.out);
        }
    }
    if (!report_rank_summary(r->o.out, &r->s, &r->tr.pipe, steps_done, &st)) {
        fprintf(stderr, "shardlora: error: %s\n", st.msg);
        rc = EXIT_IO;
    }
    ReportTotals tot = {l->steps_run,
                        l->skipped,
                        l->steps_run * r->G * r->T,
                        l->tokens_counted,
                        timer_now() - l->t_start,
                        l->t_steps,
                        l->t_eval,
                        l->flops_done,
                        r->peak.gflops * 1e9 * g->world_size,
                        r->peak.source,
                        l->last_loss,
                        l->last_eval,
                        l->best_eval,
                        l->best_step};
    if (g->world_rank == 0 && !report_summary(r->o.out, &tot, &r->data, &r->s.mem, &st)) {
        fprintf(stderr, "shardlora: error: %s\n", st.msg);
        rc = EXIT_IO;
    }
    report_comm(&r->s, steps_done);
    if (g->pp > 1 && steps_done > 0) {
        const Pipe *pp = &r->tr.pipe;
        const double all = pp->busy + pp->idle;
        log_info("pipeline stage 0 of %d: computed %.3f s, waited %.3f s for its neighbours "
                 "(%.1f%%; 1F1B with %lld micro-batches expects %.1f%%; per rank in "
                 "summary-rank*.json)",
                 g->pp, pp->busy, pp->idle, all > 0 ? 100.0 * pp->idle / all : 0.0,
                 (long long)pp->nmicro, 100.0 * (g->pp - 1) / (double)(pp->nmicro + g->pp - 1));
    }
    if (g->world_rank == 0) mem_print_table(&r->s.mem, "at the end (rank 0)");
    if (rc == 0 && l->final_ckpt_failed) rc = EXIT_IO;
    return rc;
}

/* OUT/run-state.json names this run before the loop writes its files (train/rundir). */
static int train_claim(TrainRun *r) {
    ErrStatus st;
    err_status_ok(&st);
    const int ok = r->g.world_rank != 0 || rundir_claim(r->o.out, r->identity, r->data_files, &st);
    return grid_agree(&r->g, ok, "shardlora: error", &st) ? 0 : EXIT_IO;
}

/* After the adapter and the summaries: the run is marked finished where it ended, and the
 * summaries of ranks an earlier layout had are removed. */
static int train_finish(TrainRun *r, const TrainLoop *l) {
    ErrStatus st;
    err_status_ok(&st);
    const RundirEnd end = {l->step - 1, r->cursor, r->nrows, r->g.world_size};
    const int ok =
        r->g.world_rank != 0 || rundir_finish(r->o.out, r->identity, r->data_files, &end, &st);
    return grid_agree(&r->g, ok, "shardlora: error", &st) ? 0 : EXIT_IO;
}

/* Releases what the run set up (in reverse) and ends MPI; returns rc. */
static int train_free(TrainRun *r, TrainLoop *l, int rc) {
    if (l) {
        report_full_free(&l->full_vals);
        report_full_free(&l->full_grads);
    }
    if (r->have_report) report_close(&r->rep);
    free(r->adapter_json);
    free(r->run_json);
    if (r->identity) json_decref(r->identity);
    if (r->data_files) json_decref(r->data_files);
    free(r->run_card);
    if (r->have_init_pa) peft_close(&r->init_pa);
    if (r->have_ac) adio_cfg_free(&r->ac);
    if (r->have_trainer) trainer_free(&r->tr);
    if (r->have_session) session_free(&r->s);
    if (r->have_data) tdata_free(&r->data);
    return mpicmd_end(&r->g, r->specs, r->nspecs, rc);
}

/* Options parsed, checked and the grid set up (mpicmd_begin): -1 to go on, or the exit
 * status to end with. */
static int train_start(TrainRun *r, int *argc, char ***argv) {
    memset(r, 0, sizeof *r);
    train_defaults(&r->o);
    train_spec_table(r);
    return mpicmd_begin(&r->g, argc, argv, r->specs, r->nspecs, "train", TRAIN_USAGE, TRAIN_ABOUT,
                        &r->o.run, train_check_opts, r, &r->env);
}

int cmd_train(int argc, char **argv) {
    TrainRun run;
    TrainRun *r = &run;
    int rc = train_start(r, &argc, &argv);
    if (rc >= 0) return train_free(r, NULL, rc);
    r->argc = argc;
    r->argv = argv;
    rc = train_open(r);
    if (!rc && r->nothing_to_do) return train_free(r, NULL, 0);
    if (!rc) rc = train_memcheck(r);
    if (!rc) rc = train_load_data(r);
    if (!rc) rc = train_init_adapters(r);
    if (!rc) train_init_trainer(r);
    if (!rc && (rc = train_resume(r)) != 0) train_drop_outputs(r); /* a refused checkpoint */
    if (!rc) rc = train_claim(r);
    if (rc) return train_free(r, NULL, rc);
    r->cursor0 = r->first_step > 1 ? r->cursor : 0; /* rows before this run's first step */
    train_install_signals(&r->g);
    train_log_start(r);
    rc = train_open_report(r);
    if (rc) return train_free(r, NULL, rc);
    TrainLoop l;
    rc = train_loop(r, &l);
    if (rc == 0) rc = train_outputs(r, &l);
    if (rc == 0) rc = train_finish(r, &l);
    return train_free(r, &l, rc);
}
