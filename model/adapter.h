/* The adapter interface: an adapter kind (LoRA, and later its variants) is a table of
 * function pointers, one file per kind, so a new variant touches one file and one
 * registration line (adapter_kind_by_name). An AdapterSlot is one adapted module (a
 * Linear of one layer) with its parameters in the flat ParamTable.
 *
 * Legend: N rows, r rank, no / ni local out / in of the module. */
#ifndef SHARDLORA_MODEL_ADAPTER_H
#define SHARDLORA_MODEL_ADAPTER_H

#include <stdint.h>

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
    char kind[16];          /* "lora" */
    int r;
    float alpha;
    int use_rslora;
    float dropout;
    int init_gaussian;      /* --lora-init gaussian: A ~ N(0, 1/r) as PEFT */
    unsigned targets;       /* bit per ModuleId */
    uint64_t seed;
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
    /* saved for backward / scratch, sized for N rows at setup */
    float *h;               /* [N, r] X_d A^T (a TP partial sum for row layers) */
    float *xd;              /* [N, ni] dropout(X), only when dropout > 0 */
    float *dh;              /* [N, r] scratch */
    float *tmp;             /* [N, ni] scratch for the dropout path */
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
} AdapterKind;

extern const AdapterKind adapter_lora;
/* NULL if unknown. */
const AdapterKind *adapter_kind_by_name(const char *name);
/* Parse "q_proj,k_proj,..." or "all" into target bits; returns 0 and sets st on error. */
int adapter_parse_targets(const char *s, unsigned *targets, ErrStatus *st);
/* Sync class of a factor held identically by `copies` of the tp TP ranks. */
ParamSync adapter_sync_class(int copies, int tp);
/* The PEFT key prefix of a module: base_model.model.model.layers.{i}.{group}.{name} */
void adapter_peft_prefix(char *buf, size_t n, int layer, ModuleId m);

#endif
