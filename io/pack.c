/* Eval split, row planning (packing, long documents) and the seeded order of rows (see
 * pack.h). Memory is O(documents + pieces); nothing here depends on the number of ranks. */
#include "pack.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/philox.h"

static void *pack_alloc(size_t n, size_t size, const char *what) {
    void *p = malloc(n ? n * size : 1);
    SL_CHECK(p, "out of memory: %zu bytes for %s", n * size, what);
    return p;
}

int pack_parse_long(const char *s) {
    if (!strcmp(s, "truncate")) return PACK_LONG_TRUNCATE;
    if (!strcmp(s, "split")) return PACK_LONG_SPLIT;
    if (!strcmp(s, "drop")) return PACK_LONG_DROP;
    return -1;
}

/* In-place Fisher-Yates (Knuth, TAOCP vol. 2, Algorithm 3.4.2 P) of a[0..n): for i = n-1
 * down to 1, swap a[i] with a[j], j uniform in [0, i]. j comes from a 64-bit draw of
 * Philox(seed, purpose, stream, i) mod (i + 1): the bias is at most (i + 1) / 2^64, below
 * 1e-11 for 10^8 elements. i is split into the two low counter words so that any i is
 * distinct (philox_block keeps only 32 bits of b and c). */
static void pack_shuffle(int64_t *a, int64_t n, uint64_t seed, PhiloxPurpose purpose,
                         uint64_t stream) {
    for (int64_t i = n - 1; i > 0; i--) {
        uint32_t w[4];
        philox_block(seed, purpose, stream, (uint64_t)i, (uint64_t)i >> 32, w);
        uint64_t r = (uint64_t)w[0] | (uint64_t)w[1] << 32;
        int64_t j = (int64_t)(r % (uint64_t)(i + 1));
        int64_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

static void pack_iota(int64_t *a, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        a[i] = i;
}

int pack_split(int64_t ndocs, double eval_frac, uint64_t seed, int64_t **train, int64_t *ntrain,
               int64_t **eval, int64_t *neval, ErrStatus *st) {
    err_status_ok(st);
    *train = *eval = NULL;
    *ntrain = *neval = 0;
    if (!(eval_frac >= 0 && eval_frac < 1))
        return err_status_set(st, "eval fraction %g is not in [0, 1)", eval_frac);
    if (ndocs < 0) return err_status_set(st, "negative document count %lld", (long long)ndocs);
    if (eval_frac == 0) {
        *train = pack_alloc((size_t)ndocs, sizeof **train, "the training documents");
        pack_iota(*train, ndocs);
        *ntrain = ndocs;
        return 1;
    }
    if (ndocs < 2)
        return err_status_set(st,
                              "an eval split (fraction %g) needs at least 2 documents, the "
                              "data has %lld",
                              eval_frac, (long long)ndocs);
    int64_t k = (int64_t)llround(eval_frac * (double)ndocs);
    k = k < 1 ? 1 : k > ndocs - 1 ? ndocs - 1 : k;

    /* The eval set is the first k of a seeded permutation. Mark it in a bitmap, then emit
     * both sides in index order (sorted without a sort); the permutation's storage is
     * reused for the training list. Peak: 8n + n/8 + 8k bytes. */
    int64_t *perm = pack_alloc((size_t)ndocs, sizeof *perm, "the eval split permutation");
    pack_iota(perm, ndocs);
    pack_shuffle(perm, ndocs, seed, PHILOX_DATA_SPLIT, 0);
    uint64_t *is_eval = calloc((size_t)(ndocs + 63) / 64, sizeof *is_eval);
    SL_CHECK(is_eval, "out of memory: bitmap of %lld documents", (long long)ndocs);
    for (int64_t i = 0; i < k; i++)
        is_eval[perm[i] >> 6] |= 1ull << (perm[i] & 63);
    int64_t *ev = pack_alloc((size_t)k, sizeof *ev, "the eval documents");
    int64_t nt = 0, ne = 0;
    for (int64_t d = 0; d < ndocs; d++) {
        if (is_eval[d >> 6] >> (d & 63) & 1)
            ev[ne++] = d;
        else
            perm[nt++] = d; /* nt <= d: only entries already read are overwritten */
    }
    free(is_eval);
    SL_CHECK(ne == k && nt == ndocs - k, "split %lld + %lld of %lld", (long long)nt, (long long)ne,
             (long long)ndocs);
    int64_t *tr = realloc(perm, (size_t)nt * sizeof *tr);
    *train = tr ? tr : perm;
    *ntrain = nt;
    *eval = ev;
    *neval = ne;
    return 1;
}

/* Puts one piece into the plan: a new row when there is none yet, when not packing, when
 * the piece does not fit in what the current row has left, or when it must start a row
 * (own positions that do not begin at 0: attention would not see it as a new document).
 * Only counts when p->pieces is NULL (the sizing pass). */
static void plan_put(PackPlan *p, int pack, int64_t *used, int64_t doc, int64_t start, int64_t len,
                     int starts_row) {
    if (p->nrows == 0 || !pack || starts_row || *used + len > p->T) {
        if (p->row_off) p->row_off[p->nrows] = p->npieces;
        p->nrows++;
        *used = 0;
    }
    if (p->pieces) p->pieces[p->npieces] = (PackPiece){doc, start, len};
    p->npieces++;
    *used += len;
}

/* Labels that will be trained in a piece: those at index >= 1 within it (its first label
 * is never a target: either the row's first token, or set to -100 by pack_row). */
static int64_t plan_counted(const TcDoc *d, int64_t start, int64_t len) {
    int64_t n = 0;
    for (int64_t t = start + 1; t < start + len; t++)
        n += d->labels[t] != -100;
    return n;
}

/* One greedy walk over the documents. Sizing pass (p->pieces == NULL): counts rows and
 * pieces. Filling pass: writes them and the summary counts. Both passes take the same
 * decisions, so the sizes of the first are exact for the second. */
static void plan_walk(PackPlan *p, const TokCache *c, const int64_t *docs, int64_t ndocs, int pack,
                      PackLong long_mode) {
    const int64_t T = p->T;
    const int fill = p->pieces != NULL;
    int64_t used = 0;
    p->nrows = p->npieces = 0;
    for (int64_t k = 0; k < ndocs; k++) {
        const int64_t doc = docs[k];
        SL_CHECK(doc >= 0 && doc < c->ndocs, "document %lld of %lld", (long long)doc,
                 (long long)c->ndocs);
        TcDoc d;
        tcache_doc(c, doc, &d);
        const int64_t L = d.len;
        const int alone = L > 0 && d.pos && d.pos[0] != 0;
        if (L <= T || long_mode == PACK_LONG_TRUNCATE) {
            const int64_t n = L <= T ? L : T;
            plan_put(p, pack, &used, doc, 0, n, alone);
            if (fill) {
                p->docs++;
                p->tokens += n;
                p->counted += plan_counted(&d, 0, n);
                if (n < L) {
                    p->truncated++;
                    p->tokens_cut += L - n;
                }
            }
        } else if (long_mode == PACK_LONG_SPLIT) {
            for (int64_t s = 0; s < L; s += T) {
                const int64_t n = L - s < T ? L - s : T;
                plan_put(p, pack, &used, doc, s, n, alone && s == 0);
                if (fill) p->counted += plan_counted(&d, s, n);
            }
            if (fill) {
                p->docs++;
                p->split++;
                p->tokens += L;
            }
        } else {
            SL_CHECK(long_mode == PACK_LONG_DROP, "long-document mode %d", (int)long_mode);
            if (fill) {
                p->dropped++;
                p->tokens_cut += L;
            }
        }
    }
    if (fill) p->row_off[p->nrows] = p->npieces;
}

int pack_plan(PackPlan *p, const TokCache *c, const int64_t *docs, int64_t ndocs, int64_t T,
              int pack, PackLong long_mode, ErrStatus *st) {
    err_status_ok(st);
    memset(p, 0, sizeof *p);
    if (T < 1) return err_status_set(st, "sequence length %lld < 1", (long long)T);
    p->T = T;
    plan_walk(p, c, docs, ndocs, pack, long_mode);
    if (p->nrows == 0) { /* only when there is no document or every one was dropped */
        memset(p, 0, sizeof *p);
        if (ndocs == 0) return err_status_set(st, "no documents to plan rows from");
        return err_status_set(st,
                              "no rows: every document (%lld) is longer than the sequence "
                              "length %lld and was dropped",
                              (long long)ndocs, (long long)T);
    }
    const int64_t nrows = p->nrows, npieces = p->npieces;
    p->row_off = pack_alloc((size_t)nrows + 1, sizeof *p->row_off, "the row plan");
    p->pieces = pack_alloc((size_t)npieces, sizeof *p->pieces, "the row plan");
    plan_walk(p, c, docs, ndocs, pack, long_mode);
    SL_CHECK(p->nrows == nrows && p->npieces == npieces, "plan passes disagree");
    return 1;
}

void pack_plan_free(PackPlan *p) {
    free(p->row_off);
    free(p->pieces);
    memset(p, 0, sizeof *p);
}

void pack_row(const PackPlan *p, const TokCache *c, int64_t r, int32_t pad_id, int32_t *ids,
              int64_t *labels, int64_t *pos) {
    SL_CHECK(r >= 0 && r < p->nrows, "row %lld of %lld", (long long)r, (long long)p->nrows);
    int64_t at = 0;
    for (int64_t k = p->row_off[r]; k < p->row_off[r + 1]; k++) {
        const PackPiece *pc = &p->pieces[k];
        TcDoc d;
        tcache_doc(c, pc->doc, &d);
        SL_CHECK(pc->start >= 0 && pc->start + pc->len <= d.len && at + pc->len <= p->T,
                 "piece [%lld, +%lld) of document %lld (length %lld) at %lld of %lld",
                 (long long)pc->start, (long long)pc->len, (long long)pc->doc, (long long)d.len,
                 (long long)at, (long long)p->T);
        const int own = d.pos && pc->start == 0;
        for (int64_t t = 0; t < pc->len; t++) {
            ids[at + t] = d.ids[pc->start + t];
            labels[at + t] = d.labels[pc->start + t];
            pos[at + t] = own ? d.pos[pc->start + t] : t;
        }
        /* Not trained to predict this piece's first token from the previous document. */
        if (at > 0 && pc->len > 0) labels[at] = -100;
        at += pc->len;
    }
    int64_t next = at ? pos[at - 1] + 1 : 0;
    for (int64_t t = at; t < p->T; t++) {
        ids[t] = pad_id;
        labels[t] = -100;
        pos[t] = next++;
    }
}

void pack_order_init(PackOrder *o, const PackPlan *p, uint64_t seed, int shuffle) {
    SL_CHECK(p->nrows >= 1, "an order over %lld rows", (long long)p->nrows);
    memset(o, 0, sizeof *o);
    o->nrows = p->nrows;
    o->seed = seed;
    o->shuffle = shuffle;
    for (int s = 0; s < 2; s++) {
        o->epoch[s] = -1;
        if (shuffle) o->perm[s] = pack_alloc((size_t)o->nrows, sizeof *o->perm[s], "row order");
    }
}

/* A function of (seed, i) only: the cache of two epochs changes the cost, never the
 * answer. Hence every DP layout sees the same global sequence of rows and takes its
 * contiguous share of each global batch (DESIGN.md §5). */
int64_t pack_order_row(PackOrder *o, int64_t i) {
    SL_CHECK(i >= 0, "stream index %lld", (long long)i);
    const int64_t e = i / o->nrows, k = i % o->nrows;
    if (!o->shuffle) return k;
    for (int s = 0; s < 2; s++)
        if (o->epoch[s] == e) {
            o->next = 1 - s; /* the other slot is now the least recently used */
            return o->perm[s][k];
        }
    const int s = o->next;
    pack_iota(o->perm[s], o->nrows);
    pack_shuffle(o->perm[s], o->nrows, o->seed, PHILOX_DATA_ORDER, (uint64_t)e);
    o->epoch[s] = e;
    o->next = 1 - s;
    return o->perm[s][k];
}

void pack_order_free(PackOrder *o) {
    free(o->perm[0]);
    free(o->perm[1]);
    memset(o, 0, sizeof *o);
}
