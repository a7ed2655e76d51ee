/* The adapter interface. An adapter kind (LoRA, LoRA-FA, DoRA, VeRA, ...) is a table of
 * function pointers (AdapterKind), defined in one file under model/ and registered by one
 * line in adapter.c's table; nothing outside its file knows its formulas or its settings:
 *   - training: declare / init / alloc / release / forward / backward (+ optional step_begin,
 *     out_scale, grad_post), on an AdapterSlot = one adapted Linear of one layer, whose
 *     parameters live in the flat ParamTable;
 *   - its own settings: AdapterCfg.kind_opts, bytes only the kind reads (set_option, and its
 *     checkpoint JSON through io->cfg_json / cfg_from_json);
 *   - merging: merge (generate --merge-in-memory, on this rank's shard) and io->merge_*
 *     (`shardlora merge`, streamed from a PEFT file), sharing the kind's row formula;
 *   - PEFT import / export: io (adapter_io.h).
 * Initialisations of LoRA's factors (default, gaussian, pissa) are a second table with the
 * same shape (adapter_init.h); AdapterCfg.init names one, init_opts holds its settings.
 *
 * Legend: N rows, r rank, no / ni local out / in of the module. */
#ifndef SHARDLORA_MODEL_ADAPTER_H
#define SHARDLORA_MODEL_ADAPTER_H

#include <stdint.h>

#include "../parallel/grid.h"
#include "../runtime/gemm.h"
#include "../runtime/mem.h"
#include "linear.h"
#include "params.h"

/* The seven Llama modules an adapter can target, in this fixed order. */
typedef enum { MOD_Q = 0, MOD_K, MOD_V, MOD_O, MOD_GATE, MOD_UP, MOD_DOWN, MOD_NMODULES } ModuleId;

const char *adapter_module_name(ModuleId m);  /* "q_proj", ... */
const char *adapter_module_group(ModuleId m); /* "self_attn" or "mlp" */

/* A kind's or an initialisation's own settings inside AdapterCfg: bytes that only their owner
 * interprets (it memcpy's its own struct in and out: lora.c's LoRA+ ratio, vera.c's projection
 * key and sizes, pissa.c's iterations); all zero means the owner's defaults. Plain bytes, so
 * an AdapterCfg still copies by value. */
#define ADAPTER_OPTS_BYTES 64
typedef struct {
    unsigned char b[ADAPTER_OPTS_BYTES];
} AdapterOpts;

/* What every kind shares; the rest is in kind_opts / init_opts. */
typedef struct {
    char kind[16]; /* "lora", "lora-fa", "dora", "vera" (adapter_kind_by_name) */
    char init[16]; /* initialisation (adapter_init_by_name); "" = "default" */
    int r;
    float alpha;
    int use_rslora;
    float dropout;
    unsigned targets; /* bit per ModuleId */
    uint64_t seed;
    AdapterOpts kind_opts; /* the kind's settings (AdapterKind.set_option) */
    AdapterOpts init_opts; /* the initialisation's settings (AdapterInit.set_option) */
    /* Per (layer, module) overrides, [L * MOD_NMODULES] or NULL (then r / alpha for every
     * target): PEFT's rank_pattern / alpha_pattern and layers_to_transform; slot_r = 0
     * leaves that module of that layer without an adapter. The caller keeps them alive. */
    const int *slot_r;
    const float *slot_alpha;
} AdapterCfg;

/* What forward/backward need besides the tensors. */
typedef struct AdapterEnv {
    GemmCtx *gemm;
    uint64_t seed;
    int64_t step;   /* optimizer step (1-based), keys dropout masks */
    int64_t token0; /* global token index of row 0 of this micro-batch */
    int training;   /* dropout only when training */
} AdapterEnv;

struct AdapterKind;

/* One buffer forward fills and backward reads (AdapterKind.saves): *p holds rows x per_row
 * floats for up to max_rows rows. */
#define ADAPTER_MAX_SAVES 4
typedef struct {
    float **p;
    int64_t per_row;
} AdapterSave;

typedef struct AdapterSlot {
    const struct AdapterKind *kind;
    const AdapterCfg *cfg;
    int layer;
    ModuleId module;
    ShardDesc shard;
    int in_copies;  /* TP ranks holding the same input columns (tp for column layers) */
    int out_copies; /* TP ranks holding the same output rows (tp for row layers; tp/KV
                     * for k/v when kv heads are replicated) */
    int tp;
    int r;       /* this slot's rank (cfg->r unless overridden) */
    float alpha; /* this slot's alpha (cfg->alpha unless overridden) */
    float scale; /* alpha / r, or alpha / sqrt(r) with rsLoRA */
    int pA, pB;  /* indices in the ParamTable */
    const ParamTable *params;
    Linear *lin;  /* the adapted module: frozen shard lin->w [no, ni], lin->bias,
                   * lin->add_bias; set before declare / init */
    Grid *grid;   /* counted collectives over grid->tp_comm (sums over row-parallel
                   * shards); NULL when the model has no grid (tp = 1) */
    void *ext;    /* a kind's own per-slot state (owned by the kind), or NULL */
    void *shared; /* the kind's model-wide state (AdapterKind.shared_new), or NULL */
    /* saved for backward / scratch, sized for N rows at setup */
    float *h;   /* [N, r] X_d A^T (a TP partial sum for row layers) */
    float *xd;  /* [N, ni] dropout(X), only when dropout > 0 */
    float *dh;  /* [N, r] scratch */
    float *tmp; /* [N, ni] scratch for the dropout path */
    float *dys; /* [N, no] lin_backward's out_scale-d dY; a kind with out_scale
                 * allocates it in alloc */
    int64_t max_rows;
    const struct AdapterSlot *acts_of; /* the slot whose buffers these are (share), or NULL:
                                        * this slot's own (alloc) */
} AdapterSlot;

/* A kind: the required slots first, then the optional ones (NULL / 0 = not used). */
typedef struct AdapterKind {
    const char *name;
    /* Declares this slot's tensors in the ParamTable (before params_finalize). */
    void (*declare)(AdapterSlot *s, ParamTable *pt);
    /* Writes the initial values (after params_finalize), keyed by global coordinates. A kind
     * with LoRA factors calls the configured initialisation (adapter_init_of(s->cfg)). */
    void (*init)(AdapterSlot *s, ParamTable *pt);
    /* Allocates what forward saves (and backward's scratch) for up to max_rows rows. */
    void (*alloc)(AdapterSlot *s, MemCtx *m, int64_t max_rows);
    void (*release)(AdapterSlot *s, MemCtx *m);
    /* Y [N, no] += adapter(X [N, ni]); saves what backward needs. */
    void (*forward)(AdapterSlot *s, const AdapterEnv *env, float *Y, const float *X, int64_t N);
    /* Accumulates the adapter gradients; dX [N, ni] += the adapter's input gradient. */
    void (*backward)(AdapterSlot *s, const AdapterEnv *env, float *dX, const float *dY,
                     const float *X, int64_t N);
    /* Extra FLOPs per token of forward + backward (for MFU). */
    double (*flops_per_token)(const AdapterSlot *s);

    /* Optional slots (NULL = not used). */
    /* The name people know it by ("DoRA", "VeRA"), for the model card; NULL = "LoRA". */
    const char *title;
    /* PEFT's peft_type of the exported adapter: "LORA" (lora, lora-fa, dora, pissa) or
     * "VERA"; NULL = "LORA". */
    const char *peft_type;
    /* Non-NULL: the kind initialises its own tensors and has no LoRA factors for an
     * initialisation to draw (only "default" applies); the text says so in errors, e.g.
     * "VeRA initialises its own projections". */
    const char *own_init;
    /* Sets one of the kind's settings by name in o (AdapterCfg.kind_opts), e.g. LoRA's
     * "loraplus_ratio"; returns 0 when the kind has no such setting. */
    int (*set_option)(AdapterOpts *o, const char *key, double value);
    /* [no] factors multiplying the base output X W^T (not the bias) in lin_forward and dY of
     * the base path in lin_backward (DoRA's m / ||W + sBA||); NULL = 1. forward / backward
     * still get the unscaled dY and Y = scaled X W^T + bias. */
    const float *(*out_scale)(const AdapterSlot *s);
    /* Once per optimizer step before the first forward, and before eval / generation
     * (DoRA: the norms). */
    void (*step_begin)(AdapterSlot *s, const AdapterEnv *env);
    /* generate --merge-in-memory: rows [r0, r0 + nr) of this rank's shard [no, ni] in F32 (W
     * points at row r0) replaced by the merged weight, with the row formula the kind's
     * io->merge_rows (shardlora merge) uses. Called on every rank for every slot in the same
     * order with the same blocks, so it may be collective over s->grid's tp_comm. NULL: the
     * kind cannot be merged. */
    void (*merge)(const AdapterSlot *s, const AdapterEnv *env, float *W, int64_t r0, int64_t nr);
    /* PEFT export / import / streaming merge of this kind's keys: see adapter_io.h
     * (AdioKindIo). NULL = plain LoRA keys (lora_A.weight, lora_B.weight), no merge. */
    const struct AdioKindIo *io;
    /* Model-wide state shared by every slot of one model (VeRA's projections): made once,
     * after every slot is declared and before init, from the declared slots; it may complete
     * the model's configuration (what its checkpoints record). Set into each slot's `shared`;
     * shared_free releases it at llama_free. */
    void *(*shared_new)(AdapterCfg *cfg, AdapterSlot *const *slots, int n, MemCtx *mem);
    void (*shared_free)(void *shared, MemCtx *mem);
    /* Frees what declare allocated (s->ext), at llama_free. */
    void (*destroy)(AdapterSlot *s);
    /* After the gradients are summed over the replicas and clipped, before the optimizer
     * step: rewrites this slot's gradients in place (PEFT's LoRA-FA optimizer). Called on
     * every rank for every slot in the same order, so it may be collective over tp_comm. */
    void (*grad_post)(AdapterSlot *s, const AdapterEnv *env);
    /* Activation recompute (llama.h LLAMA_RECOMPUTE_LAYER): points every buffer alloc makes
     * for s at owner's, a slot of the same module in another layer alloc'd for as many rows
     * and at least s's rank, so that the layers share one set (each layer's forward runs
     * again just before its backward, so nothing in them must outlive a layer); owner NULL
     * forgets them (owner is released alone). NULL: every slot allocates its own. */
    void (*share)(AdapterSlot *s, const AdapterSlot *owner);
    /* The buffers forward fills for backward (after alloc; not backward's scratch, not the
     * per-step state step_begin makes) into out[ADAPTER_MAX_SAVES]; returns their count. A
     * pipeline stage with micro-batches in flight keeps one set of them per micro-batch and
     * points *p at the set of the micro-batch it runs (llama_acts_select). NULL: the kind
     * cannot, and such stages recompute each layer in backward instead. */
    int (*saves)(AdapterSlot *s, AdapterSave *out);
} AdapterKind;

/* The kinds (one file each); adapter.c's table registers them by name. */
extern const AdapterKind adapter_lora;   /* model/lora.c */
extern const AdapterKind adapter_lorafa; /* model/lora.c (LoRA with A frozen) */
extern const AdapterKind adapter_dora;   /* model/dora.c */
extern const AdapterKind adapter_vera;   /* model/vera.c */
/* LoRA's AdapterKind.saves (h, and Xd with dropout), which DoRA and VeRA build on. */
int adapter_lora_saves(AdapterSlot *s, AdapterSave *out);
/* NULL if unknown. */
const AdapterKind *adapter_kind_by_name(const char *name);
/* The i-th registered kind, NULL past the last (for listing them). */
const AdapterKind *adapter_kind_at(int i);
/* The registered kind names, "|"-separated, into buf (for help texts and errors). */
void adapter_kind_names(char *buf, size_t n);
/* Sets a setting of c's kind or of its initialisation by name (set_option of each; c->kind
 * and c->init chosen first): 1 when one of them has it, 0 when neither does (c unchanged). */
int adapter_cfg_set_option(AdapterCfg *c, const char *key, double value);
/* Parse "q_proj,k_proj,..." or "all" into target bits; returns 0 and sets st on error. */
int adapter_parse_targets(const char *s, unsigned *targets, ErrStatus *st);
/* LoRA dropout (every kind's): Xd = X ⊙ keep with keep 0 or 1/(1-p), PEFT's nn.Dropout on
 * the adapter's input, with masks keyed so that any tp x dp layout draws the same one
 * (DESIGN.md §4): element (row n, local input column i) of slot s is global token
 * t = env->token0 + n, global column j = s->shard.i0 + i; its draw is word j % 4 of the
 * Philox block (philox_block, PHILOX_LORA_DROPOUT, key env->seed) of
 *   a = t * ceil(in / 4) + j / 4, b = env->step, c = (layer << 8) | (module * 4 + 2)
 * (in = s->shard.in, the global input width; one block per 4 consecutive global columns,
 * so a shard boundary inside a group is fine), and the element is dropped iff
 * philox_u01(word) < p. tests/reference/philox.py lora_dropout_scale reproduces it.
 * adapter_dropout_keep is the scalar reference (one element); the other two draw whole rows
 * with philox_block_lanes, on GemmCtx's threads over rows. */
float adapter_dropout_keep(const AdapterSlot *s, const AdapterEnv *env, int64_t n, int64_t i);
/* Xd [N, ni] = X ⊙ keep (forward; Xd is what backward's dA needs). */
void adapter_dropout_forward(const AdapterSlot *s, const AdapterEnv *env, float *Xd, const float *X,
                             int64_t N);
/* dX [N, ni] += G ⊙ keep (backward of the dropout: G is the gradient w.r.t. Xd). X and Xd
 * must be forward's input and output: the mask is read back from them (Xd ≠ 0 where kept),
 * drawn again only where X = 0. */
void adapter_dropout_backward(const AdapterSlot *s, const AdapterEnv *env, float *dX,
                              const float *G, const float *X, const float *Xd, int64_t N);
/* Sync class of a factor held identically by `copies` of the tp TP ranks. */
ParamSync adapter_sync_class(int copies, int tp);
/* The PEFT key prefix of a module: base_model.model.model.layers.{i}.{group}.{name} */
void adapter_peft_prefix(char *buf, size_t n, int layer, ModuleId m);

#endif
