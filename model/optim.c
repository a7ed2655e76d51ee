/* AdamW and SGD on flat buffers (see optim.h). */
#include "optim.h"

#include <math.h>
#include <string.h>

int optim_parse_kind(const char *s) {
    if (strcmp(s, "adamw") == 0) return OPTIM_ADAMW;
    if (strcmp(s, "sgd") == 0) return OPTIM_SGD;
    return -1;
}

const char *optim_kind_name(OptimKind k) {
    return k == OPTIM_SGD ? "sgd" : "adamw";
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
    if (cfg->kind == OPTIM_ADAMW) o->v = mem_alloc(mem, MEM_OPTIMIZER, bytes);
}

void optim_free(Optim *o, MemCtx *mem) {
    size_t bytes = (o->n ? o->n : 1) * sizeof(float);
    mem_free(mem, MEM_OPTIMIZER, o->m, bytes);
    if (o->v) mem_free(mem, MEM_OPTIMIZER, o->v, bytes);
    memset(o, 0, sizeof *o);
}

void optim_step(Optim *o, float *p, const float *g, float lr) {
    const OptimCfg *c = &o->cfg;
    o->step++;
    const size_t n = o->n;
    if (c->kind == OPTIM_ADAMW) {
        /* torch.optim.AdamW (single-tensor path): p *= 1 - lr*wd; m, v EMAs;
         * p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps) */
        const float b1 = c->beta1, b2 = c->beta2;
        /* torch computes the bias corrections in Python floats (double) */
        const double bc1 = 1.0 - pow((double)b1, (double)o->step);
        const double bc2 = 1.0 - pow((double)b2, (double)o->step);
        const float step_size = (float)((double)lr / bc1), sbc2 = (float)sqrt(bc2);
        const float decay = 1.0f - lr * c->weight_decay;
        float *m = o->m, *v = o->v;
        for (size_t i = 0; i < n; i++) {
            float gi = g[i];
            p[i] *= decay;
            m[i] = b1 * m[i] + (1.0f - b1) * gi;
            v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
            p[i] -= step_size * m[i] / (sqrtf(v[i]) / sbc2 + c->eps);
        }
        return;
    }
    /* torch.optim.SGD: d = g + wd*p; buf = d on the first step, else mu*buf + d;
     * nesterov: d += mu*buf, else d = buf; p -= lr*d */
    const float mu = c->momentum, wd = c->weight_decay;
    for (size_t i = 0; i < n; i++) {
        float d = g[i] + wd * p[i];
        if (mu != 0.0f) {
            o->m[i] = o->step == 1 ? d : mu * o->m[i] + d;
            d = c->nesterov ? d + mu * o->m[i] : o->m[i];
        }
        p[i] -= lr * d;
    }
}
