/* Optimizers on the flat adapter buffers (the frozen base has no state): AdamW
 * (Loshchilov & Hutter 2019, decoupled weight decay) and SGD with momentum / Nesterov, with
 * the update formulas of torch.optim.AdamW / torch.optim.SGD so the reference agrees to
 * float rounding. State buffers share the parameter layout (params.h) over its trainable
 * part; each table entry is updated with lr x its lr_scale (LoRA+: B's lr = ratio x A's, as
 * PEFT's create_loraplus_optimizer builds one param group per factor). */
#ifndef SHARDLORA_MODEL_OPTIM_H
#define SHARDLORA_MODEL_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "../runtime/mem.h"
#include "params.h"

/* OPTIM_ADAMW: torch.optim.AdamW. OPTIM_ADAMW_HF: the AdamW of transformers (its
 * optimization.AdamW) that PEFT's LoraFAOptimizer reimplements: eps added to sqrt(v) before
 * the bias corrections, which go into the step size, and the decay applied after the update. */
typedef enum { OPTIM_ADAMW = 0, OPTIM_SGD = 1, OPTIM_ADAMW_HF = 2 } OptimKind;

typedef struct {
    OptimKind kind;
    float lr;
    float beta1, beta2, eps; /* AdamW, AdamW-HF */
    float weight_decay;      /* AdamW: decoupled; SGD: L2 added to the gradient */
    float momentum;          /* SGD */
    int nesterov;            /* SGD */
} OptimCfg;

typedef struct {
    OptimCfg cfg;
    size_t n;
    float *m;     /* [n] Adam first moment / SGD momentum buffer */
    float *v;     /* [n] Adam second moment (NULL for SGD) */
    int64_t step; /* updates done */
} Optim;

int optim_is_adam(OptimKind k);
/* Parse "adamw|adamw-hf|sgd"; -1 if unknown. */
int optim_parse_kind(const char *s);
const char *optim_kind_name(OptimKind k);
void optim_defaults(OptimCfg *c);
void optim_init(Optim *o, const OptimCfg *cfg, size_t n, MemCtx *mem);
void optim_free(Optim *o, MemCtx *mem);
/* One update of the trainable entries of p (o sized p->trainable), entry i with
 * lr * p->e[i].lr_scale; padding between entries is left alone. */
void optim_step_params(Optim *o, ParamTable *p, float lr);

#endif
