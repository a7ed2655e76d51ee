/* The start shared by the MPI commands (train, eval, generate, merge): MPI up, the options
 * parsed on every rank (so every rank reaches the same verdict), --help printed by rank 0,
 * and the run options they all have checked the same way. */
#ifndef SHARDLORA_LAUNCH_MPICMD_H
#define SHARDLORA_LAUNCH_MPICMD_H

#include "../parallel/grid.h"
#include "../runtime/kernels.h"
#include "../train/memplan.h"
#include "../train/tdata.h"
#include "args.h"

/* grid_init, then args_parse of argv[2..]; with --help, rank 0 prints usage + about + the
 * options and *help = 1 (the caller frees the specs and ends with status 0). Returns
 * args_parse's verdict, st set on failure. */
int mpicmd_start(Grid *g, int *argc, char ***argv, ArgSpec *specs, int nspecs, const char *usage,
                 const char *about, int *help, ErrStatus *st);

#define MPICMD_MAX_PP 1024 /* pipeline stages */

/* The options every model command (train, eval, generate) has. */
typedef struct {
    ArgConfig config;
    const char *model, *pin, *kernels, *log_level;
    const char *base_dtype;    /* file | fp32 | bf16 | int8 | nf4 (frozen storage) */
    const char *compute_dtype; /* auto | fp32 | bf16 (the base's GEMMs) */
    int64_t tp, threads;
    int64_t pp;             /* pipeline stages (--pp; 0: one, or --pp-layers' count) */
    const char *pp_layers;  /* --pp-layers "10,11,11" (NULL: the modelled balanced split) */
    const int64_t *seq_len; /* the command's tokens per sequence, for the stage split's cost
                             * model (NULL: 512) */
    double memory_limit;    /* GiB per rank the memory check allows (0: what the node has) */
    int memory_check;       /* refuse a run whose estimate exceeds it (--no-memory-check) */
} MpicmdRun;
void mpicmd_run_defaults(MpicmdRun *o);

/* What --log-level, --kernels and --pin-memory resolve to. */
typedef struct {
    int log_level;       /* LogLevel */
    const KernOps *kops; /* the kernel table */
    int pin;             /* MemPinMode */
    int base;            /* LLAMA_BASE_FILE or a GemmDtype (--base-dtype) */
    int compute;         /* -1 (auto) or a GemmCompute (--compute-dtype) */
    /* the pipeline's stages: stage s holds layers [stages[s], stages[s + 1]) (model/stage.h);
     * has_stages 0 at pp = 1 */
    int has_stages;
    int64_t stages[MPICMD_MAX_PP + 1];
} MpicmdEnv;

/* --base-dtype and --compute-dtype: their values (base: LLAMA_BASE_FILE or a GemmDtype;
 * compute: -1 for auto or a GemmCompute), or 0 with st naming the flag and the choices
 * (nothing checked when st is already failed). */
int mpicmd_dtype_opts(const char *base_dtype, const char *compute_dtype, int *base, int *compute,
                      ErrStatus *st);
/* The name --base-dtype takes for a resolved storage dtype ("fp32", "bf16", "int8", "nf4"). */
const char *mpicmd_base_name(GemmDtype d);

/* The storage dtype of the big frozen matrices for a resolved --base-dtype, before any weight
 * is read: `base` itself, or for LLAMA_BASE_FILE the dtype config c's torch_dtype implies
 * (float32 and float16 are held as F32, anything else or no config (c NULL) as BF16). */
GemmDtype mpicmd_base_dtype(int base, const HfcConfig *c);

/* The command's own checks of its options (after the grid is set up: g->tp and g->dp are
 * known); 0 with st set to refuse. */
typedef int (*MpicmdCheck)(void *ctx, ErrStatus *st);

/* The start of train, eval and generate: mpicmd_start, then (unless --help) the shared
 * options resolved into env, grid_setup_pp at --tp and --pp, the stage split (--pp-layers, or
 * the balanced split of the model's layers by stage_cost_model; printed), and check(ctx); a
 * refusal is printed once as "shardlora CMD: reason". Returns -1 to go on (the log level is set),
 * or the status to end with: 0 after --help, EXIT_USAGE on a refusal. */
int mpicmd_begin(Grid *g, int *argc, char ***argv, ArgSpec *specs, int nspecs, const char *cmd,
                 const char *usage, const char *about, const MpicmdRun *run, MpicmdCheck check,
                 void *ctx, MpicmdEnv *env);

/* An integer option's range: 1, or 0 with st = "--FLAG V: expected LO to HI" (nothing checked
 * when st is already failed: returns 0). Every size a user types is bounded this way before
 * it sizes an allocation; the maxima are far above any real run and keep the products of
 * sizes inside int64_t. */
int mpicmd_bound(const char *flag, int64_t v, int64_t lo, int64_t hi, ErrStatus *st);

/* Maxima shared by the commands' options. */
#define MPICMD_MAX_SEQ_LEN ((int64_t)1 << 24) /* tokens per sequence */
#define MPICMD_MAX_BATCH ((int64_t)1 << 20)   /* sequences per micro-batch */
#define MPICMD_MAX_ROWS ((int64_t)1 << 31)    /* tokens per micro-batch (B x T) */
#define MPICMD_MAX_COUNT ((int64_t)1 << 40)   /* steps, rows, intervals */
#define MPICMD_MAX_THREADS 4096

/* The memory check before the buffers are allocated (train/memplan.h): rank 0 prints the
 * estimate; when a rank's estimate exceeds what it may use (--memory-limit GiB, else its
 * share of the node: frozen bytes already loaded + MemAvailable or the cgroup's room divided
 * by the ranks on the node), every rank returns EXIT_USAGE and one line says
 * "shardlora CMD: needs ~X GiB per rank (activations Y GiB from WHY), this node allows Z GiB
 * per rank: ADVICE". Collective over world; 0 to go on. */
int mpicmd_memcheck(Grid *g, const char *cmd, const MpicmdRun *run, const MemPlan *p,
                    const char *why, const char *advice);

/* The same check before the model is read: this rank's frozen weights (its stage's, from
 * config.json; BF16 unless its torch_dtype says float32 or float16, which are held as F32) against
 * the node's share, so a model the node cannot hold is refused before it is loaded ("raise
 * --tp"). A config.json that cannot be read passes (the loader reports it). Collective over
 * world; 0 to go on or EXIT_USAGE. */
int mpicmd_frozen_check(Grid *g, const char *cmd, const MpicmdRun *run, const MpicmdEnv *env);

/* The end of a command: frees the option table, ends MPI; returns rc. */
int mpicmd_end(Grid *g, ArgSpec *specs, int nspecs, int rc);

/* How train and eval turn JSONL files into rows of tokens (train/tdata); mpicmd_rows_check
 * checks them and sets *lmode (PackLong). */
typedef struct {
    ArgStrs data;
    const char *chat_format, *chat_template, *chat_kwargs, *long_examples, *cache_dir;
    int train_on_prompt, add_eos, pack, skip_bad;
    int64_t seq_len, micro_batch;
} MpicmdRows;
void mpicmd_rows_defaults(MpicmdRows *o);
int mpicmd_rows_check(const MpicmdRows *o, int *lmode, ErrStatus *st);
/* tdata's options for the rows of o over model_dir's model (vocab, eos_id from its
 * config.json), long examples by lmode, token caches under cache_dir; no eval data, file
 * order, seed 0 (train sets its own). */
TdataOpts mpicmd_tdata_opts(const MpicmdRows *o, const char *model_dir, int lmode,
                            const char *cache_dir, int64_t vocab, int64_t eos_id);

/* A command's option table into out (cap entries; fatal past it): --config and --model
 * (--help section "model"), the row options when rows != NULL ("data"; help.data: what
 * --data is for; help.cache: where the token cache goes; aliases max-seq-length, max-length
 * and packing), the command's own nown rows (starting with an ARG_GROUP row, else they join
 * the section before them), then --tp (help.tp: what the data-parallel groups share) and
 * --threads ("parallelism"), --log-level ("logging"), --pin-memory and --kernels ("expert").
 * Returns the count. */
typedef struct {
    const char *data, *cache, *tp;
} MpicmdHelp;
int mpicmd_table(ArgSpec *out, int cap, MpicmdRun *run, MpicmdRows *rows, const MpicmdHelp *help,
                 const ArgSpec *own, int nown);

/* --log-level, --kernels and --pin-memory: their parsed values, or 0 with st saying which
 * value is wrong (nothing checked when st is already failed: returns 0). */
int mpicmd_run_opts(const char *log_level, const char *kernels, const char *pin, int *lvl,
                    const KernOps **kops, int *pin_mode, ErrStatus *st);

#endif
