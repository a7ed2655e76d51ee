/* Next-token choice: HF's repetition penalty and warpers, seeded draws, and the
 * distributed argmax / gather of vocab-parallel logits (see sample.h). */
#include "sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/err.h"
#include "../runtime/philox.h"
#include "llama.h"

typedef struct {
    float v;
    int32_t id;
} SampleCand;

void sample_init(SampleCtx *c, int64_t V, int tp, MemCtx *mem) {
    c->V = V;
    c->cand = mem_alloc(mem, MEM_OTHER, (size_t)V * sizeof(SampleCand));
    c->prob = mem_alloc(mem, MEM_OTHER, (size_t)V * sizeof(double));
    c->mark = mem_alloc(mem, MEM_OTHER, (size_t)V);
    c->tp = tp;
    c->v0 = malloc((size_t)tp * 2 * sizeof(int64_t));
    c->lens = malloc((size_t)tp * 2 * sizeof(size_t));
    SL_CHECK(c->v0 && c->lens, "out of memory");
    c->vl = c->v0 + tp;
    c->offs = c->lens + tp;
    for (int r = 0; r < tp; r++)
        llama_vocab_range(V, tp, r, &c->v0[r], &c->vl[r]);
}

void sample_free(SampleCtx *c, MemCtx *mem) {
    mem_free(mem, MEM_OTHER, c->cand, (size_t)c->V * sizeof(SampleCand));
    mem_free(mem, MEM_OTHER, c->prob, (size_t)c->V * sizeof(double));
    mem_free(mem, MEM_OTHER, c->mark, (size_t)c->V);
    free(c->v0);
    free(c->lens);
    memset(c, 0, sizeof *c);
}

void sample_repetition_penalty(float *logits, int64_t v0, int64_t n, const int32_t *ids,
                               int64_t nids, float penalty, uint8_t *mark) {
    for (int64_t i = 0; i < nids; i++) {
        const int64_t j = (int64_t)ids[i] - v0;
        if (j < 0 || j >= n || mark[j]) continue;
        mark[j] = 1;
        logits[j] = logits[j] < 0 ? logits[j] * penalty : logits[j] / penalty;
    }
    for (int64_t i = 0; i < nids; i++) {
        const int64_t j = (int64_t)ids[i] - v0;
        if (j >= 0 && j < n) mark[j] = 0;
    }
}

int64_t sample_argmax(const float *x, int64_t n, float *best) {
    int64_t arg = -1;
    float b = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        if (x[i] > b) { /* NaN compares false */
            b = x[i];
            arg = i;
        }
    if (best) *best = b;
    return arg;
}

size_t sample_argmax_tmp_bytes(int64_t n) {
    return (size_t)(n > 0 ? n : 1) * sizeof(GridMaxLoc);
}

void sample_argmax_tp(Grid *g, const float *logits, int64_t n, int64_t Vl, int64_t v0, int32_t *out,
                      void *tmp) {
    GridMaxLoc *p = tmp;
    for (int64_t i = 0; i < n; i++) {
        float b;
        int64_t a = sample_argmax(logits + i * Vl, Vl, &b);
        /* a rank with nothing finite offers -inf at an id no real winner has */
        p[i].v = a >= 0 ? b : -INFINITY;
        p[i].i = a >= 0 ? (int)(v0 + a) : INT32_MAX;
    }
    if (g->tp > 1) grid_allreduce_maxloc(g, g->tp_comm, p, (size_t)n, GRID_BYTES_TP);
    for (int64_t i = 0; i < n; i++)
        out[i] = p[i].v > -INFINITY ? (int32_t)p[i].i : -1;
}

void sample_gather_rows(SampleCtx *c, Grid *g, const float *logits, int64_t n, float *full,
                        float *recv) {
    const int64_t V = c->V;
    SL_CHECK(c->tp == g->tp, "sample_gather_rows: context for tp=%d used at tp=%d", c->tp, g->tp);
    if (g->tp == 1) {
        memcpy(full, logits, (size_t)(n * V) * sizeof(float));
        return;
    }
    size_t *lens = c->lens, *offs = c->offs;
    size_t off = 0; /* floats */
    for (int r = 0; r < g->tp; r++) {
        lens[r] = (size_t)(n * c->vl[r]) * sizeof(float);
        offs[r] = off;
        off += (size_t)(n * c->vl[r]);
    }
    grid_gatherv(g, g->tp_comm, logits, lens[g->tp_rank], recv, lens, 0, GRID_BYTES_TP);
    if (g->tp_rank == 0)
        for (int r = 0; r < g->tp; r++) {
            const int64_t v0 = c->v0[r], vl = c->vl[r];
            for (int64_t i = 0; i < n; i++)
                memcpy(full + i * V + v0, recv + offs[r] + i * vl, (size_t)vl * sizeof(float));
        }
}

/* Descending logit, then ascending id (a deterministic order for equal logits). */
static int sample_cmp_desc(const void *a, const void *b) {
    const SampleCand *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static int sample_cmp_id(const void *a, const void *b) {
    const SampleCand *x = a, *y = b;
    return (x->id > y->id) - (x->id < y->id);
}

/* Uniform double in [0, 1) with 53 random bits from one Philox block keyed by what it is
 * for: (seed, PHILOX_SAMPLE, prompt index, step). */
static double sample_u01(uint64_t seed, uint64_t prompt, uint64_t step) {
    uint32_t w[4];
    philox_block(seed, PHILOX_SAMPLE, prompt, step, 0, w);
    const uint64_t bits = ((uint64_t)(w[0] >> 5) << 26) | (uint64_t)(w[1] >> 6);
    return (double)bits * (1.0 / 9007199254740992.0);
}

int32_t sample_token(SampleCtx *c, const SampleCfg *cfg, float *logits, uint64_t prompt,
                     uint64_t step) {
    SampleCand *cand = c->cand;
    double *prob = c->prob;
    const float temp = (float)cfg->temperature;
    SL_CHECK(temp > 0, "sample_token needs a temperature > 0");
    int64_t n = 0;
    for (int64_t id = 0; id < c->V; id++) {
        const float x = logits[id] / temp;                           /* TemperatureLogitsWarper */
        if (x > -INFINITY) cand[n++] = (SampleCand){x, (int32_t)id}; /* NaN, -inf: never */
    }
    if (n == 0) return -1;
    int sorted = 0;
    if (cfg->top_k > 0 && cfg->top_k < n) {
        /* TopKLogitsWarper: remove logits below the k-th largest (ties with it stay) */
        qsort(cand, (size_t)n, sizeof *cand, sample_cmp_desc);
        sorted = 1;
        const float kth = cand[cfg->top_k - 1].v;
        int64_t keep = cfg->top_k;
        while (keep < n && cand[keep].v >= kth)
            keep++;
        n = keep;
    }
    if (cfg->top_p < 1.0) {
        /* TopPLogitsWarper: in ascending order, remove the tokens whose cumulative
         * probability is <= 1 - top_p; the most likely one always stays */
        if (!sorted) qsort(cand, (size_t)n, sizeof *cand, sample_cmp_desc);
        sorted = 1;
        double z = 0;
        for (int64_t j = 0; j < n; j++)
            z += prob[j] = exp((double)cand[j].v - (double)cand[0].v);
        double cum = 0;
        int64_t keep = n;
        for (int64_t j = n - 1; j >= 1; j--) {
            cum += prob[j] / z;
            if (cum > 1.0 - cfg->top_p) break;
            keep = j;
        }
        n = keep;
    }
    /* the draw: softmax over the remaining candidates, inverse CDF at u with the candidates
     * in id order (the order of the vocabulary, so no sort is needed without top-k / top-p) */
    if (sorted) qsort(cand, (size_t)n, sizeof *cand, sample_cmp_id);
    float mx = cand[0].v;
    for (int64_t j = 1; j < n; j++)
        mx = cand[j].v > mx ? cand[j].v : mx;
    double z = 0;
    for (int64_t j = 0; j < n; j++)
        z += prob[j] = exp((double)cand[j].v - (double)mx);
    const double target = sample_u01(cfg->seed, prompt, step) * z;
    double cum = 0;
    for (int64_t j = 0; j < n; j++) {
        cum += prob[j];
        if (cum > target) return cand[j].id;
    }
    return cand[n - 1].id;
}
