/* Flat adapter parameter table (see params.h). */
#include "params.h"

#include <stdlib.h>
#include <string.h>

#include "../runtime/err.h"

void params_init(ParamTable *p) {
    memset(p, 0, sizeof *p);
}

int params_add(ParamTable *p, const char *name, int ndim, int64_t grows, int64_t gcols,
               int64_t r0, int64_t nr, int64_t c0, int64_t nc, ParamSync sync, int replicated_tp) {
    SL_CHECK(p->values == NULL, "params_add after params_finalize");
    SL_CHECK(strlen(name) < sizeof p->e[0].name, "parameter name too long: %s", name);
    SL_CHECK(r0 >= 0 && nr >= 0 && r0 + nr <= grows && c0 >= 0 && nc >= 0 && c0 + nc <= gcols,
             "bad slice for %s", name);
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 64;
        p->e = realloc(p->e, (size_t)p->cap * sizeof *p->e);
        SL_CHECK(p->e != NULL, "out of memory");
    }
    ParamEntry *e = &p->e[p->n];
    memset(e, 0, sizeof *e);
    strcpy(e->name, name);
    e->ndim = ndim;
    e->grows = grows;
    e->gcols = gcols;
    e->r0 = r0;
    e->nr = nr;
    e->c0 = c0;
    e->nc = nc;
    e->sync = sync;
    e->replicated_tp = replicated_tp;
    return p->n++;
}

void params_finalize(ParamTable *p, MemCtx *m) {
    /* 16-float alignment of every tensor keeps vector loops aligned. */
    size_t off = 0;
    for (int s = 0; s < PARAM_NSYNC; s++) {
        p->region_off[s] = off;
        for (int i = 0; i < p->n; i++) {
            if (p->e[i].sync != (ParamSync)s) continue;
            p->e[i].offset = off;
            off += (params_numel(&p->e[i]) + 15) & ~(size_t)15;
        }
        p->region_len[s] = off - p->region_off[s];
    }
    p->total = off;
    p->values = mem_alloc(m, MEM_ADAPTER, (p->total ? p->total : 16) * sizeof(float));
    p->grads = mem_alloc(m, MEM_ADAPTER, (p->total ? p->total : 16) * sizeof(float));
}

void params_free(ParamTable *p, MemCtx *m) {
    size_t bytes = (p->total ? p->total : 16) * sizeof(float);
    mem_free(m, MEM_ADAPTER, p->values, bytes);
    mem_free(m, MEM_ADAPTER, p->grads, bytes);
    free(p->e);
    memset(p, 0, sizeof *p);
}

int params_find(const ParamTable *p, const char *name) {
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->e[i].name, name) == 0) return i;
    return -1;
}
