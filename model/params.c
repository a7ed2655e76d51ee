/* Flat adapter parameter table (see params.h). */
#include "params.h"

#include <stdlib.h>
#include <string.h>

#include "../runtime/err.h"

void params_init(ParamTable *p) {
    memset(p, 0, sizeof *p);
}

int params_add(ParamTable *p, const char *name, int ndim, int64_t grows, int64_t gcols, int64_t r0,
               int64_t nr, int64_t c0, int64_t nc, ParamSync sync, int ncopies, int layer) {
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
    e->lr_scale = 1.0f;
    e->ncopies = ncopies > 0 ? ncopies : 1;
    e->layer = layer;
    return p->n++;
}

void params_set_frozen(ParamTable *p, int i) {
    SL_CHECK(p->values == NULL, "params_set_frozen after params_finalize");
    SL_CHECK(i >= 0 && i < p->n, "params_set_frozen: no entry %d", i);
    p->e[i].sync = PARAM_FROZEN;
}

void params_finalize(ParamTable *p, MemCtx *m) {
    /* 16-float alignment of every tensor keeps vector loops aligned. */
    size_t off = 0;
    for (int s = 0; s < PARAM_NREGIONS; s++) {
        p->region_off[s] = off;
        for (int i = 0; i < p->n; i++) {
            if (p->e[i].sync != (ParamSync)s) continue;
            p->e[i].offset = off;
            off += (params_numel(&p->e[i]) + 15) & ~(size_t)15;
        }
        p->region_len[s] = off - p->region_off[s];
    }
    p->total = off;
    p->trainable = p->region_off[PARAM_FROZEN];
    p->values = mem_alloc(m, MEM_ADAPTER, (p->total ? p->total : 16) * sizeof(float));
    p->grads = mem_alloc(m, MEM_ADAPTER, (p->trainable ? p->trainable : 16) * sizeof(float));
}

void params_free(ParamTable *p, MemCtx *m) {
    mem_free(m, MEM_ADAPTER, p->values, (p->total ? p->total : 16) * sizeof(float));
    mem_free(m, MEM_ADAPTER, p->grads, (p->trainable ? p->trainable : 16) * sizeof(float));
    free(p->e);
    memset(p, 0, sizeof *p);
}

int params_find(const ParamTable *p, const char *name) {
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->e[i].name, name) == 0) return i;
    return -1;
}

void params_layer_range(const ParamTable *p, ParamSync s, int layer, size_t *begin, size_t *end) {
    size_t b = (size_t)-1, e = 0;
    for (int i = 0; i < p->n; i++) {
        const ParamEntry *x = &p->e[i];
        if (x->sync != s || x->layer != layer) continue;
        size_t o = x->offset, end_i = o + ((params_numel(x) + 15) & ~(size_t)15);
        if (o < b) b = o;
        if (end_i > e) e = end_i;
    }
    if (b == (size_t)-1) b = e = p->region_off[s];
    *begin = b;
    *end = e;
}

double params_sumsq(const ParamTable *p, const float *buf) {
    double total = 0;
    for (int i = 0; i < p->n; i++) {
        if (params_is_frozen(p, i)) continue;
        const float *x = buf + p->e[i].offset;
        double s = 0;
        for (size_t k = 0; k < params_numel(&p->e[i]); k++)
            s += (double)x[k] * x[k];
        total += s / p->e[i].ncopies;
    }
    return total;
}

/* Places a dense [nr, nc] slice at (r0, c0) of a [grows, gcols] tensor. */
static void params_place(float *full, const ParamEntry *e, const int64_t *slice, const float *src) {
    const int64_t r0 = slice[0], nr = slice[1], c0 = slice[2], nc = slice[3];
    for (int64_t r = 0; r < nr; r++)
        memcpy(full + (r0 + r) * e->gcols + c0, src + r * nc, (size_t)nc * sizeof(float));
}

void params_gather(const ParamTable *p, const float *buf, Grid *g, float **full) {
    const MPI_Comm tp_comm = g->tp_comm;
    const int rank = grid_comm_rank(tp_comm), size = grid_comm_size(tp_comm);
    size_t maxn = 0;
    for (int i = 0; i < p->n; i++)
        if ((size_t)(p->e[i].grows * p->e[i].gcols) > maxn)
            maxn = (size_t)(p->e[i].grows * p->e[i].gcols);
    float *tmp = rank == 0 && size > 1 ? malloc(maxn * sizeof(float)) : NULL;
    SL_CHECK(rank != 0 || size == 1 || tmp, "out of memory");
    const int no_frozen = buf == p->grads; /* frozen entries have no gradient */
    for (int i = 0; i < p->n; i++) {
        const ParamEntry *e = &p->e[i];
        if (no_frozen && params_is_frozen(p, i)) {
            if (rank == 0) memset(full[i], 0, (size_t)(e->grows * e->gcols) * sizeof(float));
            continue;
        }
        int64_t mine[4] = {e->r0, e->nr, e->c0, e->nc};
        if (rank != 0) {
            grid_send(g, tp_comm, mine, sizeof mine, 0, 2 * i, GRID_BYTES_OTHER);
            grid_send(g, tp_comm, buf + e->offset, params_numel(e) * sizeof(float), 0, 2 * i + 1,
                      GRID_BYTES_OTHER);
            continue;
        }
        params_place(full[i], e, mine, buf + e->offset);
        for (int t = 1; t < size; t++) {
            int64_t sl[4];
            grid_recv(g, tp_comm, sl, sizeof sl, t, 2 * i);
            SL_CHECK(sl[0] >= 0 && sl[1] >= 0 && sl[0] + sl[1] <= e->grows && sl[2] >= 0 &&
                         sl[3] >= 0 && sl[2] + sl[3] <= e->gcols,
                     "bad slice of %s from TP rank %d", e->name, t);
            grid_recv(g, tp_comm, tmp, (size_t)(sl[1] * sl[3]) * sizeof(float), t, 2 * i + 1);
            params_place(full[i], e, sl, tmp);
        }
    }
    free(tmp);
}
