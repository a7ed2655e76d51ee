/* AdamW and SGD on flat buffers (see optim.h). */
#include "optim.h"

#include <math.h>
#include <string.h>

#include "../runtime/err.h"

int optim_parse_kind(const char *s) {
    if (strcmp(s, "adamw") == 0) return OPTIM_ADAMW;
    if (strcmp(s, "adamw-hf") == 0) return OPTIM_ADAMW_HF;
    if (strcmp(s, "sgd") == 0) return OPTIM_SGD;
    return -1;
}

const char *optim_kind_name(OptimKind k) {
    return k == OPTIM_SGD ? "sgd" : k == OPTIM_ADAMW_HF ? "adamw-hf" : "adamw";
}

int optim_is_adam(OptimKind k) {
    return k == OPTIM_ADAMW || k == OPTIM_ADAMW_HF;
}

void optim_defaults(OptimCfg *c) {
    memset(c, 0, sizeof *c);
    c->kind = OPTIM_ADAMW;
    c->lr = 2e-4f;
    c->beta1 = 0.9f;
    c->beta2 = 0.999f;
    c->eps = 1e-8f;
    c->weight_decay = 0.0f;
    c->momentum = 0.0f;
    c->nesterov = 0;
}

void optim_init(Optim *o, const OptimCfg *cfg, size_t n, MemCtx *mem) {
    memset(o, 0, sizeof *o);
    o->cfg = *cfg;
    o->n = n;
    size_t bytes = (n ? n : 1) * sizeof(float);
    o->m = mem_alloc(mem, MEM_OPTIMIZER, bytes);
    if (optim_is_adam(cfg->kind)) o->v = mem_alloc(mem, MEM_OPTIMIZER, bytes);
}

void optim_free(Optim *o, MemCtx *mem) {
    size_t bytes = (o->n ? o->n : 1) * sizeof(float);
    mem_free(mem, MEM_OPTIMIZER, o->m, bytes);
    if (o->v) mem_free(mem, MEM_OPTIMIZER, o->v, bytes);
    memset(o, 0, sizeof *o);
}

/* The AdamW / SGD update of n elements at offset `off` of the flat buffers, with this
 * entry's lr; o->step is the update being done (1-based). */
static void optim_update(Optim *o, float *p, const float *g, size_t off, size_t n, float lr) {
    const OptimCfg *c = &o->cfg;
    p += off;
    g += off;
    if (c->kind == OPTIM_ADAMW) {
        /* torch.optim.AdamW (single-tensor path): p *= 1 - lr*wd; m, v EMAs;
         * p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps) */
        const float b1 = c->beta1, b2 = c->beta2;
        /* torch computes the bias corrections in Python floats (double) */
        const double bc1 = 1.0 - pow((double)b1, (double)o->step);
        const double bc2 = 1.0 - pow((double)b2, (double)o->step);
        const float step_size = (float)((double)lr / bc1), sbc2 = (float)sqrt(bc2);
        const float decay = 1.0f - lr * c->weight_decay;
        float *m = o->m + off, *v = o->v + off;
        for (size_t i = 0; i < n; i++) {
            float gi = g[i];
            p[i] *= decay;
            m[i] = b1 * m[i] + (1.0f - b1) * gi;
            v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
            p[i] -= step_size * m[i] / (sqrtf(v[i]) / sbc2 + c->eps);
        }
        return;
    }
    if (c->kind == OPTIM_ADAMW_HF) {
        /* transformers' AdamW (as PEFT's LoraFAOptimizer.step): m, v EMAs;
         * p -= lr sqrt(bc2) / bc1 * m / (sqrt(v) + eps); then p -= lr * wd * p */
        const float b1 = c->beta1, b2 = c->beta2;
        const double bc1 = 1.0 - pow((double)b1, (double)o->step);
        const double bc2 = 1.0 - pow((double)b2, (double)o->step);
        const float step_size = (float)((double)lr * sqrt(bc2) / bc1);
        const float wd = lr * c->weight_decay;
        float *m = o->m + off, *v = o->v + off;
        for (size_t i = 0; i < n; i++) {
            float gi = g[i];
            m[i] = b1 * m[i] + (1.0f - b1) * gi;
            v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
            p[i] -= step_size * m[i] / (sqrtf(v[i]) + c->eps);
            if (c->weight_decay > 0.0f) p[i] -= wd * p[i];
        }
        return;
    }
    /* torch.optim.SGD: d = g + wd*p; buf = d on the first step, else mu*buf + d;
     * nesterov: d += mu*buf, else d = buf; p -= lr*d */
    const float mu = c->momentum, wd = c->weight_decay;
    float *buf = o->m + off;
    for (size_t i = 0; i < n; i++) {
        float d = g[i] + wd * p[i];
        if (mu != 0.0f) {
            buf[i] = o->step == 1 ? d : mu * buf[i] + d;
            d = c->nesterov ? d + mu * buf[i] : buf[i];
        }
        p[i] -= lr * d;
    }
}

void optim_step_params(Optim *o, ParamTable *p, float lr) {
    SL_CHECK(o->n == p->trainable, "optimizer state of %zu floats for %zu trainable", o->n,
             p->trainable);
    o->step++;
    for (int i = 0; i < p->n; i++) {
        const ParamEntry *e = &p->e[i];
        if (params_is_frozen(p, i)) continue;
        optim_update(o, p->values, p->grads, e->offset, params_numel(e), lr * e->lr_scale);
    }
}
