/* The initialisations of LoRA's factors: the registry, and the default and gaussian draws
 * (see adapter_init.h; PiSSA's entry is in pissa.c). */
#include "adapter_init.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "../runtime/err.h"
#include "../runtime/philox.h"
#include "../runtime/str.h"

/* A [r, ni] from Philox keyed by (seed, layer, module, global row, global column), so every
 * layout draws the same adapter (DESIGN.md §4): element (i, j) is counter
 * a = i * in + j, b = layer, c = module * 4 (tensor 0, A); B [no, r] = 0. gaussian: N(0, 1)
 * / r (PEFT: nn.init.normal_(std = 1 / r)); else uniform(-1/sqrt(in), 1/sqrt(in)) (PEFT's
 * kaiming_uniform_(a = sqrt(5)) on [r, in]). */
static void adapter_init_draw(AdapterSlot *s, ParamTable *pt, int gaussian) {
    const ParamEntry *ea = &pt->e[s->pA];
    float *A = params_value(pt, s->pA); /* [r, ni] */
    const float bound = 1.0f / sqrtf((float)ea->gcols);
    const uint64_t c = (uint64_t)s->module * 4u;
    for (int64_t i = 0; i < ea->nr; i++) {
        for (int64_t j = 0; j < ea->nc; j++) {
            uint64_t gi = (uint64_t)(ea->r0 + i), gj = (uint64_t)(ea->c0 + j);
            uint64_t a = gi * (uint64_t)ea->gcols + gj;
            A[i * ea->nc + j] = gaussian ? philox_normal(s->cfg->seed, PHILOX_LORA_INIT_A, a,
                                                         (uint64_t)s->layer, c) /
                                               (float)s->r
                                         : philox_uniform(s->cfg->seed, PHILOX_LORA_INIT_A, a,
                                                          (uint64_t)s->layer, c, -bound, bound);
        }
    }
    memset(params_value(pt, s->pB), 0, params_numel(&pt->e[s->pB]) * sizeof(float));
}

static void adapter_init_uniform(AdapterSlot *s, ParamTable *pt) {
    adapter_init_draw(s, pt, 0);
}

static void adapter_init_normal(AdapterSlot *s, ParamTable *pt) {
    adapter_init_draw(s, pt, 1);
}

const AdapterInit adapter_init_default = {
    .name = "default",
    .help = "A ~ U(+-1/sqrt(in)), B = 0 (PEFT's default)",
    .needs = 0,
    .init = adapter_init_uniform,
    .peft_init = "default",
    .card = "A ~ U(-1/sqrt(in), 1/sqrt(in)), B = 0 (PEFT's default)",
};

const AdapterInit adapter_init_gaussian = {
    .name = "gaussian",
    .help = "A ~ N(0, 1/r), B = 0",
    .needs = 1,
    .init = adapter_init_normal,
    .peft_init = "gaussian",
    .card = "A ~ N(0, 1/r), B = 0",
};

/* The registry: adding an initialisation = its entry + one line here. */
static const AdapterInit *const adapter_inits[] = {
    &adapter_init_default,
    &adapter_init_gaussian,
    &adapter_init_pissa,
};
enum { ADAPTER_NINITS = (int)(sizeof adapter_inits / sizeof adapter_inits[0]) };

const AdapterInit *adapter_init_at(int i) {
    return i >= 0 && i < ADAPTER_NINITS ? adapter_inits[i] : NULL;
}

const AdapterInit *adapter_init_by_name(const char *name) {
    for (int i = 0; i < ADAPTER_NINITS; i++)
        if (strcmp(name, adapter_inits[i]->name) == 0) return adapter_inits[i];
    return NULL;
}

static const char *adapter_init_name_at(int i) {
    return i >= 0 && i < ADAPTER_NINITS ? adapter_inits[i]->name : NULL;
}

void adapter_init_names(char *buf, size_t n) {
    str_join_names(buf, n, "|", adapter_init_name_at);
}

const AdapterInit *adapter_init_of(const AdapterCfg *c) {
    const AdapterInit *ini = adapter_init_by_name(c->init[0] ? c->init : "default");
    SL_CHECK(ini, "unknown initialisation '%s'", c->init);
    return ini;
}

static int adapter_init_fits(const AdapterInit *init, const AdapterKind *k) {
    if (init->needs >= 1 && k->own_init) return 0;
    return !(init->needs >= 2 && k->out_scale);
}

const char *adapter_init_compat(const AdapterInit *init, const AdapterKind *k, char *buf,
                                size_t n) {
    if (adapter_init_fits(init, k)) return NULL;
    if (init->needs == 1) { /* the kind has no LoRA factors */
        snprintf(buf, n, "does not apply to --adapter %s (%s)", k->name, k->own_init);
        return buf;
    }
    /* "needs --adapter a, b or c": the kinds it fits */
    const AdapterKind *fit[16];
    int nf = 0;
    for (int i = 0; adapter_kind_at(i) && nf < 16; i++)
        if (adapter_init_fits(init, adapter_kind_at(i))) fit[nf++] = adapter_kind_at(i);
    size_t len = (size_t)snprintf(buf, n, "needs --adapter");
    for (int i = 0; i < nf && len < n; i++)
        len += (size_t)snprintf(buf + len, n - len, "%s%s",
                                i == 0        ? " "
                                : i + 1 == nf ? " or "
                                              : ", ",
                                fit[i]->name);
    return buf;
}
