/* The adapter interface: an adapter kind (LoRA, and later its variants) is a table of
 * function pointers, one file per kind, so a new variant touches one file and one
 * registration line (adapter_kind_by_name). An AdapterSlot is one adapted module (a
 * Linear of one layer) with its parameters in the flat ParamTable.
 *
 * Legend: N rows, r rank, no / ni local out / in of the module. */
#ifndef SHARDLORA_MODEL_ADAPTER_H
#define SHARDLORA_MODEL_ADAPTER_H

#include <stdint.h>

#include <mpi.h>

#include "../runtime/gemm.h"
#include "../runtime/mem.h"
#include "linear.h"
#include "params.h"

/* The seven Llama modules an adapter can target, in this fixed order. */
typedef enum {
    MOD_Q = 0, MOD_K, MOD_V, MOD_O, MOD_GATE, MOD_UP, MOD_DOWN, MOD_NMODULES
} ModuleId;

const char *adapter_module_name(ModuleId m);  /* "q_proj", ... */
const char *adapter_module_group(ModuleId m); /* "self_attn" or "mlp" */

typedef struct {
    char kind[16];          /* "lora", "lora-fa", "dora", "vera" (adapter_kind_by_name) */
    int r;
    float alpha;
    int use_rslora;
    float dropout;
    int init_gaussian;      /* --init gaussian: A ~ N(0, 1/r) as PEFT */
    unsigned targets;       /* bit per ModuleId */
    uint64_t seed;
    /* LoRA+ (Hayou et al. 2024): B's learning rate = loraplus_ratio x A's; 0 or 1: off. */
    float loraplus_ratio;
    /* PiSSA (Meng et al. 2024): --init pissa, randomized SVD with pissa_iters power
     * iterations (model/pissa.c). */
    int init_pissa;
    int pissa_iters;
    /* VeRA (Kopiczko et al. 2024, model/vera.c): the shared projections' Philox key (PEFT's
     * projection_prng_key) and dimensions vera_A [r, vera_max_in], vera_B [vera_max_out, r],
     * fixed by an adapter (import, checkpoint JSON) when vera_keyed; otherwise the key is
     * `seed` and the dimensions the maxima over the adapted modules (PEFT's _find_dim). */
    int vera_keyed;
    uint64_t vera_key;
    int64_t vera_max_in, vera_max_out;
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
    int64_t step;           /* optimizer step (1-based), keys dropout masks */
    int64_t token0;         /* global token index of row 0 of this micro-batch */
    int training;           /* dropout only when training */
} AdapterEnv;

struct AdapterKind;

typedef struct AdapterSlot {
    const struct AdapterKind *kind;
    const AdapterCfg *cfg;
    int layer;
    ModuleId module;
    ShardDesc shard;
    int in_copies;          /* TP ranks holding the same input columns (tp for column layers) */
    int out_copies;         /* TP ranks holding the same output rows (tp for row layers; tp/KV
                             * for k/v when kv heads are replicated) */
    int tp;
    int r;                  /* this slot's rank (cfg->r unless overridden) */
    float alpha;            /* this slot's alpha (cfg->alpha unless overridden) */
    float scale;            /* alpha / r, or alpha / sqrt(r) with rsLoRA */
    int pA, pB;             /* indices in the ParamTable */
    const ParamTable *params;
    Linear *lin;            /* the adapted module: frozen shard lin->w [no, ni], lin->bias,
                             * lin->add_bias; set before declare / init */
    MPI_Comm tp_comm;       /* the TP group (sums over row-parallel shards) */
    void *ext;              /* a kind's own per-slot state (owned by the kind), or NULL */
    void *shared;           /* the kind's model-wide state (AdapterKind.shared_new), or NULL */
    /* saved for backward / scratch, sized for N rows at setup */
    float *h;               /* [N, r] X_d A^T (a TP partial sum for row layers) */
    float *xd;              /* [N, ni] dropout(X), only when dropout > 0 */
    float *dh;              /* [N, r] scratch */
    float *tmp;             /* [N, ni] scratch for the dropout path */
    float *dys;             /* [N, no] lin_backward's out_scale-d dY; a kind with out_scale
                             * allocates it in alloc */
    int64_t max_rows;
} AdapterSlot;

typedef struct AdapterKind {
    const char *name;
    /* Declares this slot's tensors in the ParamTable (before params_finalize). */
    void (*declare)(AdapterSlot *s, ParamTable *pt);
    /* Writes the initial values (after params_finalize), keyed by global coordinates. */
    void (*init)(AdapterSlot *s, ParamTable *pt);
    /* Allocates what forward saves for up to max_rows rows. */
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
    /* [no] factors multiplying the base output X W^T (not the bias) in lin_forward and dY of
     * the base path in lin_backward (DoRA's m / ||W + sBA||); NULL = 1. forward / backward
     * still get the unscaled dY and Y = scaled X W^T + bias. */
    const float *(*out_scale)(const AdapterSlot *s);
    /* Once per optimizer step before the first forward, and before eval / generation
     * (DoRA: the norms). */
    void (*step_begin)(AdapterSlot *s, const AdapterEnv *env);
    /* Rows [r0, r0 + nr) of this rank's shard [no, ni] in F32 (W points at row r0)
     * replaced by the merged weight (generate --merge-in-memory). */
    void (*merge)(const AdapterSlot *s, float *W, int64_t r0, int64_t nr);
    /* PEFT export / import of this kind's keys: see adapter_io.h (AdioKindIo). NULL = plain
     * LoRA keys (lora_A.weight, lora_B.weight). */
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
} AdapterKind;

/* The kinds (one file each); adapter.c's table registers them by name. */
extern const AdapterKind adapter_lora;   /* model/lora.c */
extern const AdapterKind adapter_lorafa; /* model/lora.c (LoRA with A frozen) */
extern const AdapterKind adapter_dora;   /* model/dora.c */
extern const AdapterKind adapter_vera;   /* model/vera.c */
/* PiSSA (model/pissa.c), --init pissa of the LoRA kinds: A [r, ni] and B [no, r] of slot s
 * from the top-r singular vectors of its frozen shard (collective over s->tp_comm), and
 * s->lin->w replaced by the residual W - s B A. Called by LoRA's init instead of the default
 * one. */
void pissa_init(AdapterSlot *s, ParamTable *pt);
/* NULL if unknown. */
const AdapterKind *adapter_kind_by_name(const char *name);
/* 1 if `name` is an initialisation this build has: "default", "gaussian", "pissa". */
int adapter_init_known(const char *name);
/* The registered kind names, "|"-separated, into buf (for help texts and errors). */
void adapter_kind_names(char *buf, size_t n);
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
void adapter_dropout_forward(const AdapterSlot *s, const AdapterEnv *env, float *Xd,
                             const float *X, int64_t N);
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
