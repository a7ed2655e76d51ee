/* Unit test of io/pack: the eval split (sizes, determinism, sorted/disjoint/covering), row
 * plans with packing on and off against hand-computed rows (the -100 at piece starts,
 * positions restarting, padding), long documents truncated / split / dropped with their
 * counts, a document of exactly T tokens, a document's own positions, the per-epoch order
 * (a permutation each epoch, seeded, identity without shuffle, the same answers in any
 * access order), and a plan over 10^6 tiny documents in linear time.
 * The caches are built by hand in memory (one part), so of io/tokcache only tcache_doc, the
 * lookup, is used. That the global batch does not depend on the DP layout follows from the API:
 * pack_order_row is a function of the stream index alone, and a rank takes its contiguous
 * share of a global batch's indices; no test is needed for it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "io/pack.h"
#include "tests/unit/check.h"

/* A one-part token cache in memory. Document d's token t: id 10 * (d + 1) + t + 1 (d0 is
 * 11 12 13 ..., d1 is 21 22 ...), label = id, position t; tests mask labels and set
 * positions afterwards. */
typedef struct {
    TokCache c;
    int64_t doc0[2];
    int64_t *off;
    int32_t *ids, *labels, *pos;
    const int64_t *offs[1];
    const int32_t *idss[1], *labs[1], *poss[1];
} TestCache;

static void tc_init(TestCache *t, int64_t ndocs, const int64_t *len, int with_pos) {
    memset(t, 0, sizeof *t);
    t->off = malloc((size_t)(ndocs + 1) * sizeof *t->off);
    t->off[0] = 0;
    for (int64_t d = 0; d < ndocs; d++)
        t->off[d + 1] = t->off[d] + len[d];
    const int64_t ntok = t->off[ndocs];
    t->ids = malloc((size_t)(ntok + 1) * sizeof *t->ids);
    t->labels = malloc((size_t)(ntok + 1) * sizeof *t->labels);
    t->pos = with_pos ? malloc((size_t)(ntok + 1) * sizeof *t->pos) : NULL;
    for (int64_t d = 0; d < ndocs; d++)
        for (int64_t k = 0; k < len[d]; k++) {
            int64_t i = t->off[d] + k;
            t->ids[i] = t->labels[i] = (int32_t)(10 * (d + 1) + k + 1);
            if (t->pos) t->pos[i] = (int32_t)k;
        }
    t->doc0[0] = 0;
    t->doc0[1] = ndocs;
    t->offs[0] = t->off;
    t->idss[0] = t->ids;
    t->labs[0] = t->labels;
    t->poss[0] = t->pos;
    t->c.ndocs = ndocs;
    t->c.ntok = ntok;
    t->c.nparts = 1;
    t->c.doc0 = t->doc0;
    t->c.off = t->offs;
    t->c.ids = t->idss;
    t->c.labels = t->labs;
    t->c.pos = t->poss;
}

static void tc_free(TestCache *t) {
    free(t->off);
    free(t->ids);
    free(t->labels);
    free(t->pos);
}

/* Token k of document d, to mask labels and set positions. */
static int64_t tc_at(const TestCache *t, int64_t d, int64_t k) {
    return t->off[d] + k;
}

static int check_i64s(const char *name, const int64_t *got, const int64_t *want, int64_t n) {
    int64_t bad = -1;
    for (int64_t i = 0; i < n && bad < 0; i++)
        if (got[i] != want[i]) bad = i;
    CHECK_TRUE(bad < 0, "%s: [%lld] = %lld, want %lld", name, (long long)bad,
               bad < 0 ? 0LL : (long long)got[bad], bad < 0 ? 0LL : (long long)want[bad]);
    return bad < 0;
}

/* Row r of the plan against the expected ids, labels and positions. */
static void expect_row(const char *name, const PackPlan *p, const TokCache *c, int64_t r,
                       int32_t pad, const int64_t *ids, const int64_t *labels, const int64_t *pos) {
    int32_t gi[64];
    int64_t gids[64], gl[64], gp[64];
    SL_CHECK(p->T <= 64, "test rows hold 64 tokens");
    pack_row(p, c, r, pad, gi, gl, gp);
    for (int64_t t = 0; t < p->T; t++)
        gids[t] = gi[t];
    char what[160];
    int ok = 1;
    snprintf(what, sizeof what, "%s row %lld ids", name, (long long)r);
    ok &= check_i64s(what, gids, ids, p->T);
    snprintf(what, sizeof what, "%s row %lld labels", name, (long long)r);
    ok &= check_i64s(what, gl, labels, p->T);
    snprintf(what, sizeof what, "%s row %lld positions", name, (long long)r);
    ok &= check_i64s(what, gp, pos, p->T);
    if (ok) printf("PASS %s row %lld\n", name, (long long)r);
}

typedef struct {
    int64_t nrows, docs, truncated, split, dropped, tokens, tokens_cut, counted;
} Counts;

static void expect_counts(const char *name, const PackPlan *p, Counts w) {
    Counts g = {p->nrows,   p->docs,   p->truncated,  p->split,
                p->dropped, p->tokens, p->tokens_cut, p->counted};
    int ok = !memcmp(&g, &w, sizeof g);
    CHECK_TRUE(ok,
               "%s: rows %lld docs %lld truncated %lld split %lld dropped %lld tokens %lld cut "
               "%lld counted %lld; want %lld %lld %lld %lld %lld %lld %lld %lld",
               name, (long long)g.nrows, (long long)g.docs, (long long)g.truncated,
               (long long)g.split, (long long)g.dropped, (long long)g.tokens,
               (long long)g.tokens_cut, (long long)g.counted, (long long)w.nrows, (long long)w.docs,
               (long long)w.truncated, (long long)w.split, (long long)w.dropped,
               (long long)w.tokens, (long long)w.tokens_cut, (long long)w.counted);
    if (ok) printf("PASS %s counts\n", name);
}

static void expect_pieces(const char *name, const PackPlan *p, const PackPiece *w, int64_t n,
                          const int64_t *row_off) {
    int ok = p->npieces == n;
    for (int64_t k = 0; ok && k < n; k++)
        ok = p->pieces[k].doc == w[k].doc && p->pieces[k].start == w[k].start &&
             p->pieces[k].len == w[k].len;
    for (int64_t r = 0; ok && r <= p->nrows; r++)
        ok = p->row_off[r] == row_off[r];
    CHECK_TRUE(ok, "%s: pieces or row offsets differ (%lld pieces)", name, (long long)p->npieces);
    if (ok) printf("PASS %s pieces\n", name);
}

/* ---- split ---------------------------------------------------------------------------- */

static int sorted_disjoint_cover(const int64_t *a, int64_t na, const int64_t *b, int64_t nb,
                                 int64_t n) {
    if (na + nb != n) return 0;
    char *seen = calloc((size_t)n, 1);
    int ok = 1;
    for (int64_t i = 0; i < na && ok; i++) {
        ok = a[i] >= 0 && a[i] < n && !seen[a[i]] && (i == 0 || a[i - 1] < a[i]);
        if (ok) seen[a[i]] = 1;
    }
    for (int64_t i = 0; i < nb && ok; i++) {
        ok = b[i] >= 0 && b[i] < n && !seen[b[i]] && (i == 0 || b[i - 1] < b[i]);
        if (ok) seen[b[i]] = 1;
    }
    free(seen);
    return ok;
}

static void test_split(void) {
    ErrStatus st;
    int64_t *tr, *ev, nt, ne;
    /* sizes: round(frac * n) clamped to [1, n - 1] */
    static const struct {
        int64_t n;
        double frac;
        int64_t neval;
    } sz[] = {{1000, 0.1, 100}, {10, 0.0001, 1}, {10, 0.99, 9},       {2, 0.5, 1},
              {7, 0.5, 4},      {3, 0.2, 1},     {100000, 0.05, 5000}};
    for (size_t i = 0; i < sizeof sz / sizeof sz[0]; i++) {
        int ok = pack_split(sz[i].n, sz[i].frac, 42, &tr, &nt, &ev, &ne, &st);
        CHECK_TRUE(ok && ne == sz[i].neval && nt == sz[i].n - sz[i].neval,
                   "split %lld at %g: ok %d eval %lld train %lld (want eval %lld) %s",
                   (long long)sz[i].n, sz[i].frac, ok, (long long)ne, (long long)nt,
                   (long long)sz[i].neval, st.msg);
        CHECK_TRUE(ok && sorted_disjoint_cover(tr, nt, ev, ne, sz[i].n),
                   "split %lld at %g: sorted, disjoint, covering", (long long)sz[i].n, sz[i].frac);
        printf("split n=%lld frac=%g: train %lld eval %lld\n", (long long)sz[i].n, sz[i].frac,
               (long long)nt, (long long)ne);
        free(tr);
        free(ev);
    }

    /* determinism: same seed, same split, whatever ran in between; another seed differs */
    const int64_t n = 10000;
    int64_t *tr1, *ev1, nt1, ne1, *tr2, *ev2, nt2, ne2, *tr3, *ev3, nt3, ne3;
    pack_split(n, 0.1, 7, &tr1, &nt1, &ev1, &ne1, &st);
    pack_split(n, 0.1, 8, &tr3, &nt3, &ev3, &ne3, &st);
    pack_split(n / 2, 0.3, 7, &tr, &nt, &ev, &ne, &st); /* unrelated work in between */
    free(tr);
    free(ev);
    pack_split(n, 0.1, 7, &tr2, &nt2, &ev2, &ne2, &st);
    CHECK_TRUE(ne1 == ne2 && !memcmp(ev1, ev2, (size_t)ne1 * sizeof *ev1) &&
                   !memcmp(tr1, tr2, (size_t)nt1 * sizeof *tr1),
               "same seed gives the same split");
    int64_t same = 0;
    for (int64_t i = 0, j = 0; i < ne1 && j < ne3;) {
        if (ev1[i] == ev3[j]) same++;
        if (ev1[i] <= ev3[j])
            i++;
        else
            j++;
    }
    /* independent random subsets of 10% share about 10% of their members */
    CHECK_TRUE(ne3 == ne1 && same < ne1 / 5,
               "another seed gives another split (%lld of %lld "
               "eval documents shared)",
               (long long)same, (long long)ne1);
    double mean = 0;
    int64_t lowhalf = 0;
    for (int64_t i = 0; i < ne1; i++) {
        mean += (double)ev1[i] / (double)ne1;
        lowhalf += ev1[i] < n / 2;
    }
    /* a uniform subset: mean ~ n/2 (sd ~ n / sqrt(12 * 1000) ~ 0.009 n) */
    CHECK_TRUE(mean > 0.45 * n && mean < 0.55 * n && lowhalf > 400 && lowhalf < 600,
               "eval documents spread uniformly (mean %.0f, %lld in the first half)", mean,
               (long long)lowhalf);
    printf("split seeds 7/8: %lld of %lld eval documents shared, eval mean %.0f of %lld\n",
           (long long)same, (long long)ne1, mean, (long long)n);
    free(tr1), free(ev1), free(tr2), free(ev2), free(tr3), free(ev3);

    /* pinned: a change of the stream would change every run's eval set (and a resumed
     * run's data); the values were checked against a separate Python Philox + Fisher-Yates */
    pack_split(20, 0.25, 5, &tr, &nt, &ev, &ne, &st);
    CHECK_TRUE(ne == 5 && ev[0] == 1 && ev[1] == 4 && ev[2] == 13 && ev[3] == 15 && ev[4] == 16,
               "split seed 5 of 20 at 0.25: eval 1 4 13 15 16");
    printf("split seed 5 of 20 at 0.25: eval");
    for (int64_t i = 0; i < ne; i++)
        printf(" %lld", (long long)ev[i]);
    printf("\n");
    free(tr);
    free(ev);

    /* no split: all train, eval NULL */
    int ok = pack_split(5, 0, 1, &tr, &nt, &ev, &ne, &st);
    CHECK_TRUE(ok && nt == 5 && ne == 0 && ev == NULL && tr[0] == 0 && tr[4] == 4,
               "eval_frac 0: every document trains");
    free(tr);
    ok = pack_split(1, 0, 1, &tr, &nt, &ev, &ne, &st);
    CHECK_TRUE(ok && nt == 1 && tr[0] == 0, "eval_frac 0 with one document");
    free(tr);
    /* refused */
    ok = pack_split(1, 0.1, 1, &tr, &nt, &ev, &ne, &st);
    CHECK_TRUE(!ok && !st.ok && strstr(st.msg, "at least 2"), "one document, split asked: %s",
               st.msg);
    printf("refused: %s\n", st.msg);
    ok = pack_split(10, 1.0, 1, &tr, &nt, &ev, &ne, &st);
    CHECK_TRUE(!ok && !st.ok, "eval_frac 1 refused");
    ok = pack_split(10, -0.1, 1, &tr, &nt, &ev, &ne, &st);
    CHECK_TRUE(!ok && !st.ok, "negative eval_frac refused");
    printf("refused: %s\n", st.msg);
}

/* ---- plans on hand-made documents ------------------------------------------------------ */

#define P (-7)   /* the pad id used below */
#define M (-100) /* ignored label */

/* d0 [11 12 13] prompt-masked first token, d1 [21 22 23 24], d2 [31 32] first masked,
 * d3 [41..46], d4 [51], d5 empty, d6 [71..78] (exactly T = 8). */
static void hand_cache(TestCache *t) {
    static const int64_t len[] = {3, 4, 2, 6, 1, 0, 8};
    tc_init(t, 7, len, 0);
    t->labels[tc_at(t, 0, 0)] = M;
    t->labels[tc_at(t, 2, 0)] = M;
}
/* The hand cache's documents in order, and each whole as a piece. */
static const int64_t hand_docs[7] = {0, 1, 2, 3, 4, 5, 6};
static const PackPiece hand_pieces[7] = {{0, 0, 3}, {1, 0, 4}, {2, 0, 2}, {3, 0, 6},
                                         {4, 0, 1}, {5, 0, 0}, {6, 0, 8}};

static void test_plan_packed(void) {
    TestCache t;
    hand_cache(&t);
    PackPlan p;
    ErrStatus st;
    CHECK_TRUE(pack_plan(&p, &t.c, hand_docs, 7, 8, 1, PACK_LONG_TRUNCATE, &st), "%s", st.msg);
    /* d0+d1 (7; d2 does not fit), d2+d3 (8), d4+d5 (1; d6 does not fit), d6 (8) */
    expect_pieces("packed", &p, hand_pieces, 7, (int64_t[]){0, 2, 4, 6, 7});
    /* counted: d0 2, d1 3 | d2 1, d3 5 | d4 0, d5 0 | d6 7 */
    expect_counts("packed", &p, (Counts){4, 7, 0, 0, 0, 24, 0, 18});
    expect_row("packed", &p, &t.c, 0, P, (int64_t[]){11, 12, 13, 21, 22, 23, 24, P},
               (int64_t[]){M, 12, 13, M, 22, 23, 24, M}, (int64_t[]){0, 1, 2, 0, 1, 2, 3, 4});
    expect_row("packed", &p, &t.c, 1, P, (int64_t[]){31, 32, 41, 42, 43, 44, 45, 46},
               (int64_t[]){M, 32, M, 42, 43, 44, 45, 46}, (int64_t[]){0, 1, 0, 1, 2, 3, 4, 5});
    expect_row("packed", &p, &t.c, 2, P, (int64_t[]){51, P, P, P, P, P, P, P},
               (int64_t[]){51, M, M, M, M, M, M, M}, (int64_t[]){0, 1, 2, 3, 4, 5, 6, 7});
    expect_row("packed exactly T", &p, &t.c, 3, P, (int64_t[]){71, 72, 73, 74, 75, 76, 77, 78},
               (int64_t[]){71, 72, 73, 74, 75, 76, 77, 78}, (int64_t[]){0, 1, 2, 3, 4, 5, 6, 7});
    pack_plan_free(&p);

    /* another order of the same documents: greedy in the order given */
    const int64_t docs2[] = {3, 4, 0, 6};
    CHECK_TRUE(pack_plan(&p, &t.c, docs2, 4, 8, 1, PACK_LONG_TRUNCATE, &st), "%s", st.msg);
    const PackPiece pw2[] = {{3, 0, 6}, {4, 0, 1}, {0, 0, 3}, {6, 0, 8}};
    const int64_t ro2[] = {0, 2, 3, 4};
    expect_pieces("packed, other order", &p, pw2, 4, ro2);
    expect_row("packed, other order", &p, &t.c, 0, P, (int64_t[]){41, 42, 43, 44, 45, 46, 51, P},
               (int64_t[]){41, 42, 43, 44, 45, 46, M, M}, (int64_t[]){0, 1, 2, 3, 4, 5, 0, 1});
    pack_plan_free(&p);
    tc_free(&t);
}

/* pack = 0: one document per row: its tokens, then pad 0 / label -100 / positions
 * continuing (the rows the pre-tokenised reference tests were written against). */
static void test_plan_unpacked(void) {
    TestCache t;
    hand_cache(&t);
    PackPlan p;
    ErrStatus st;
    CHECK_TRUE(pack_plan(&p, &t.c, hand_docs, 7, 8, 0, PACK_LONG_TRUNCATE, &st), "%s", st.msg);
    expect_pieces("unpacked", &p, hand_pieces, 7, (int64_t[]){0, 1, 2, 3, 4, 5, 6, 7});
    expect_counts("unpacked", &p, (Counts){7, 7, 0, 0, 0, 24, 0, 18});
    expect_row("unpacked", &p, &t.c, 0, P, (int64_t[]){11, 12, 13, P, P, P, P, P},
               (int64_t[]){M, 12, 13, M, M, M, M, M}, (int64_t[]){0, 1, 2, 3, 4, 5, 6, 7});
    expect_row("unpacked empty document", &p, &t.c, 5, P, (int64_t[]){P, P, P, P, P, P, P, P},
               (int64_t[]){M, M, M, M, M, M, M, M}, (int64_t[]){0, 1, 2, 3, 4, 5, 6, 7});

    pack_plan_free(&p);
    tc_free(&t);
}

/* T = 4; a = d0 of 10 tokens [11..20], b = d1 [21 22], c = d2 [31..34] exactly T. */
static void test_plan_long(void) {
    static const int64_t len[] = {10, 2, 4};
    TestCache t;
    tc_init(&t, 3, len, 0);
    const int64_t docs[] = {0, 1, 2};
    PackPlan p;
    ErrStatus st;

    /* truncate: a keeps [11..14]; rows a | b (c does not fit beside it) | c */
    CHECK_TRUE(pack_plan(&p, &t.c, docs, 3, 4, 1, PACK_LONG_TRUNCATE, &st), "%s", st.msg);
    expect_pieces("truncate", &p, (PackPiece[]){{0, 0, 4}, {1, 0, 2}, {2, 0, 4}}, 3,
                  (int64_t[]){0, 1, 2, 3});
    expect_counts("truncate", &p, (Counts){3, 3, 1, 0, 0, 10, 6, 3 + 1 + 3});
    expect_row("truncate", &p, &t.c, 0, P, (int64_t[]){11, 12, 13, 14}, (int64_t[]){11, 12, 13, 14},
               (int64_t[]){0, 1, 2, 3});
    expect_row("truncate", &p, &t.c, 1, P, (int64_t[]){21, 22, P, P}, (int64_t[]){21, 22, M, M},
               (int64_t[]){0, 1, 2, 3});
    pack_plan_free(&p);

    /* split: a into [0,4) [4,8) [8,10); the last piece packs with b; then c */
    CHECK_TRUE(pack_plan(&p, &t.c, docs, 3, 4, 1, PACK_LONG_SPLIT, &st), "%s", st.msg);
    expect_pieces("split", &p, (PackPiece[]){{0, 0, 4}, {0, 4, 4}, {0, 8, 2}, {1, 0, 2}, {2, 0, 4}},
                  5, (int64_t[]){0, 1, 2, 4, 5});
    expect_counts("split", &p, (Counts){4, 3, 0, 1, 0, 16, 0, 3 + 3 + 1 + 1 + 3});
    expect_row("split", &p, &t.c, 1, P, (int64_t[]){15, 16, 17, 18}, (int64_t[]){15, 16, 17, 18},
               (int64_t[]){0, 1, 2, 3});
    expect_row("split", &p, &t.c, 2, P, (int64_t[]){19, 20, 21, 22}, (int64_t[]){19, 20, M, 22},
               (int64_t[]){0, 1, 0, 1});
    expect_row("split, exactly T", &p, &t.c, 3, P, (int64_t[]){31, 32, 33, 34},
               (int64_t[]){31, 32, 33, 34}, (int64_t[]){0, 1, 2, 3});
    pack_plan_free(&p);

    /* split without packing: every piece its own row */
    CHECK_TRUE(pack_plan(&p, &t.c, docs, 3, 4, 0, PACK_LONG_SPLIT, &st), "%s", st.msg);
    expect_counts("split unpacked", &p, (Counts){5, 3, 0, 1, 0, 16, 0, 11});
    expect_row("split unpacked", &p, &t.c, 2, P, (int64_t[]){19, 20, P, P},
               (int64_t[]){19, 20, M, M}, (int64_t[]){0, 1, 2, 3});
    pack_plan_free(&p);

    /* drop: a goes; b | c */
    CHECK_TRUE(pack_plan(&p, &t.c, docs, 3, 4, 1, PACK_LONG_DROP, &st), "%s", st.msg);
    expect_pieces("drop", &p, (PackPiece[]){{1, 0, 2}, {2, 0, 4}}, 2, (int64_t[]){0, 1, 2});
    expect_counts("drop", &p, (Counts){2, 2, 0, 0, 1, 6, 10, 1 + 3});
    pack_plan_free(&p);

    /* nothing left: refused */
    int ok = pack_plan(&p, &t.c, docs, 1, 4, 1, PACK_LONG_DROP, &st);
    CHECK_TRUE(!ok && !st.ok && p.nrows == 0 && !p.pieces, "every document dropped: refused");
    printf("refused: %s\n", st.msg);
    ok = pack_plan(&p, &t.c, docs, 0, 4, 1, PACK_LONG_DROP, &st);
    CHECK_TRUE(!ok && !st.ok, "no documents: refused");
    printf("refused: %s\n", st.msg);

    /* a document of exactly T tokens is whole under every mode */
    for (int mode = PACK_LONG_TRUNCATE; mode <= PACK_LONG_DROP; mode++) {
        CHECK_TRUE(pack_plan(&p, &t.c, docs + 2, 1, 4, 1, (PackLong)mode, &st), "%s", st.msg);
        expect_counts("exactly T", &p, (Counts){1, 1, 0, 0, 0, 4, 0, 3});
        pack_plan_free(&p);
    }
    tc_free(&t);
}

/* Positions from the document: d0 is pre-packed [0 1 2 0 1] (two documents of its own),
 * d1 [0 1 2], d2 of 10 tokens [0 1 2 0 1 2 3 4 5 6]. */
static void test_plan_positions(void) {
    static const int64_t len[] = {5, 3, 10};
    TestCache t;
    tc_init(&t, 3, len, 1);
    static const int32_t p0[] = {0, 1, 2, 0, 1}, p2[] = {0, 1, 2, 0, 1, 2, 3, 4, 5, 6};
    memcpy(t.pos + tc_at(&t, 0, 0), p0, sizeof p0);
    memcpy(t.pos + tc_at(&t, 2, 0), p2, sizeof p2);
    const int64_t docs[] = {0, 1, 2};
    PackPlan p;
    ErrStatus st;

    CHECK_TRUE(pack_plan(&p, &t.c, docs, 2, 8, 1, PACK_LONG_TRUNCATE, &st), "%s", st.msg);
    expect_row("own positions packed", &p, &t.c, 0, P, (int64_t[]){11, 12, 13, 14, 15, 21, 22, 23},
               (int64_t[]){11, 12, 13, 14, 15, M, 22, 23}, (int64_t[]){0, 1, 2, 0, 1, 0, 1, 2});
    pack_plan_free(&p);
    /* unpacked: padding continues from the last real position */
    CHECK_TRUE(pack_plan(&p, &t.c, docs, 1, 8, 0, PACK_LONG_TRUNCATE, &st), "%s", st.msg);
    expect_row("own positions padded", &p, &t.c, 0, P, (int64_t[]){11, 12, 13, 14, 15, P, P, P},
               (int64_t[]){11, 12, 13, 14, 15, M, M, M}, (int64_t[]){0, 1, 2, 0, 1, 2, 3, 4});
    pack_plan_free(&p);
    /* truncated: the document's own first T positions */
    CHECK_TRUE(pack_plan(&p, &t.c, docs + 2, 1, 6, 1, PACK_LONG_TRUNCATE, &st), "%s", st.msg);
    expect_row("own positions truncated", &p, &t.c, 0, P, (int64_t[]){31, 32, 33, 34, 35, 36},
               (int64_t[]){31, 32, 33, 34, 35, 36}, (int64_t[]){0, 1, 2, 0, 1, 2});
    pack_plan_free(&p);
    /* split (T = 4): the piece that starts the document keeps its positions, the later
     * pieces are documents of their own, 0..len-1 */
    CHECK_TRUE(pack_plan(&p, &t.c, docs + 2, 1, 4, 0, PACK_LONG_SPLIT, &st), "%s", st.msg);
    expect_row("own positions split", &p, &t.c, 0, P, (int64_t[]){31, 32, 33, 34},
               (int64_t[]){31, 32, 33, 34}, (int64_t[]){0, 1, 2, 0});
    expect_row("own positions split", &p, &t.c, 1, P, (int64_t[]){35, 36, 37, 38},
               (int64_t[]){35, 36, 37, 38}, (int64_t[]){0, 1, 2, 3});
    expect_row("own positions split", &p, &t.c, 2, P, (int64_t[]){39, 40, P, P},
               (int64_t[]){39, 40, M, M}, (int64_t[]){0, 1, 2, 3});
    pack_plan_free(&p);
    /* positions that do not begin at 0 would not read as a new document: such a document
     * starts a row even though it fits beside the one before */
    static const int32_t p1[] = {7, 8, 9};
    memcpy(t.pos + tc_at(&t, 1, 0), p1, sizeof p1);
    CHECK_TRUE(pack_plan(&p, &t.c, docs, 2, 8, 1, PACK_LONG_TRUNCATE, &st), "%s", st.msg);
    expect_pieces("positions from 7", &p, (PackPiece[]){{0, 0, 5}, {1, 0, 3}}, 2,
                  (int64_t[]){0, 1, 2});
    expect_row("positions from 7", &p, &t.c, 1, P, (int64_t[]){21, 22, 23, P, P, P, P, P},
               (int64_t[]){21, 22, 23, M, M, M, M, M}, (int64_t[]){7, 8, 9, 10, 11, 12, 13, 14});
    pack_plan_free(&p);
    tc_free(&t);
}

static void test_parse_long(void) {
    CHECK_TRUE(pack_parse_long("truncate") == PACK_LONG_TRUNCATE &&
                   pack_parse_long("split") == PACK_LONG_SPLIT &&
                   pack_parse_long("drop") == PACK_LONG_DROP && pack_parse_long("Split") == -1 &&
                   pack_parse_long("") == -1,
               "pack_parse_long");
}

/* ---- order ----------------------------------------------------------------------------- */

static PackPlan plan_of_rows(int64_t nrows) {
    PackPlan p = {0};
    p.T = 1;
    p.nrows = nrows; /* the order reads nothing else */
    return p;
}

static int is_perm(const int64_t *a, int64_t n) {
    char *seen = calloc((size_t)n, 1);
    int ok = 1;
    for (int64_t i = 0; i < n && ok; i++) {
        ok = a[i] >= 0 && a[i] < n && !seen[a[i]];
        if (ok) seen[a[i]] = 1;
    }
    free(seen);
    return ok;
}

static void test_order(void) {
    enum { N = 97, E = 3 };
    PackPlan p = plan_of_rows(N);
    PackOrder o, o2;
    static int64_t seq[E * N], rnd[E * N];
    pack_order_init(&o, &p, 1234, 1);
    for (int64_t i = 0; i < E * N; i++)
        seq[i] = pack_order_row(&o, i);
    /* pinned like the split's (checked against a separate Python implementation) */
    static const int64_t first0[8] = {33, 10, 32, 31, 54, 0, 67, 47},
                         first1[8] = {68, 69, 58, 86, 3, 19, 77, 8};
    CHECK_TRUE(!memcmp(seq, first0, sizeof first0) && !memcmp(seq + N, first1, sizeof first1),
               "order seed 1234: the pinned starts of epochs 0 and 1");
    printf(
        "order seed 1234, 97 rows: epoch 0 starts %lld %lld %lld ..., epoch 1 %lld %lld %lld ...\n",
        (long long)seq[0], (long long)seq[1], (long long)seq[2], (long long)seq[N],
        (long long)seq[N + 1], (long long)seq[N + 2]);
    int perms = 1, ident = 0;
    for (int e = 0; e < E; e++) {
        perms &= is_perm(seq + e * N, N);
        int64_t fixed = 0;
        for (int64_t k = 0; k < N; k++)
            fixed += seq[e * N + k] == k;
        ident += fixed == N;
    }
    CHECK_TRUE(perms && !ident, "each epoch a permutation, not the identity");
    CHECK_TRUE(memcmp(seq, seq + N, N * sizeof *seq) &&
                   memcmp(seq + N, seq + 2 * N, N * sizeof *seq) &&
                   memcmp(seq, seq + 2 * N, N * sizeof *seq),
               "epochs differ");

    /* any access order, through the two-slot cache, gives the same answers: a scrambled
     * order (i -> 89 i mod E*N visits every index once), a reverse walk, and a walk that
     * keeps jumping between three epochs */
    pack_order_init(&o2, &p, 1234, 1);
    for (int64_t k = 0; k < E * N; k++) {
        int64_t i = (89 * k) % (E * N);
        rnd[i] = pack_order_row(&o2, i);
    }
    CHECK_TRUE(!memcmp(seq, rnd, sizeof seq), "scrambled access = sequential access");
    for (int64_t i = E * N - 1; i >= 0; i--)
        rnd[i] = pack_order_row(&o2, i);
    CHECK_TRUE(!memcmp(seq, rnd, sizeof seq), "reverse access = sequential access");
    int jump = 1;
    for (int64_t k = 0; k < N; k++)
        for (int e = E - 1; e >= 0; e--)
            jump &= pack_order_row(&o2, e * N + (N - 1 - k)) == seq[e * N + (N - 1 - k)];
    CHECK_TRUE(jump, "access jumping between three epochs = sequential access");
    /* a later epoch without the earlier ones, from a fresh order */
    PackOrder o3;
    pack_order_init(&o3, &p, 1234, 1);
    int64_t far = pack_order_row(&o3, 50 * N + 3);
    pack_order_free(&o3);
    CHECK_TRUE(pack_order_row(&o2, 50 * N + 3) == far, "epoch 50 without its predecessors");
    pack_order_free(&o2);

    /* the seed decides */
    pack_order_init(&o2, &p, 1235, 1);
    int differ = 0;
    for (int64_t i = 0; i < N; i++)
        differ += pack_order_row(&o2, i) != seq[i];
    CHECK_TRUE(differ > N / 2, "another seed, another order (%d of %d rows differ)", differ, N);
    pack_order_free(&o2);
    pack_order_free(&o);

    /* no shuffle: the identity every epoch, no arrays */
    pack_order_init(&o, &p, 1234, 0);
    int id = !o.perm[0] && !o.perm[1];
    for (int64_t i = 0; i < E * N; i++)
        id &= pack_order_row(&o, i) == i % N;
    CHECK_TRUE(id, "shuffle = 0: identity");
    pack_order_free(&o);

    /* uniform over permutations: 3 rows, 60000 epochs, each of the 6 orders ~10000
     * (sd ~91); a biased draw of j shows up here */
    PackPlan p3 = plan_of_rows(3);
    pack_order_init(&o, &p3, 99, 1);
    int64_t hist[6] = {0};
    const int64_t epochs = 60000;
    for (int64_t e = 0; e < epochs; e++) {
        int64_t a = pack_order_row(&o, 3 * e), b = pack_order_row(&o, 3 * e + 1);
        hist[a * 2 + (b > 3 - a - b)]++; /* (a, b, c): a, then which of the other two is first */
    }
    double worst = 0;
    for (int k = 0; k < 6; k++) {
        double dev = fabs((double)hist[k] - epochs / 6.0) / (epochs / 6.0);
        worst = dev > worst ? dev : worst;
    }
    CHECK_TRUE(worst < 0.05, "3-row permutations uniform (worst deviation %.3f)", worst);
    printf("3-row permutations over %lld epochs: %lld %lld %lld %lld %lld %lld (worst dev %.3f)\n",
           (long long)epochs, (long long)hist[0], (long long)hist[1], (long long)hist[2],
           (long long)hist[3], (long long)hist[4], (long long)hist[5], worst);
    pack_order_free(&o);
}

/* ---- scale ------------------------------------------------------------------------------ */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* 10^6 documents of 1..7 tokens into rows of 64: the plan must be linear (a quadratic
 * one would take hours); the rows respect T and the greedy rule. */
static void test_scale(void) {
    const int64_t n = 1000000, T = 64;
    int64_t *len = malloc((size_t)n * sizeof *len), tokens = 0;
    for (int64_t d = 0; d < n; d++) {
        len[d] = 1 + (d * 7919) % 7;
        tokens += len[d];
    }
    TestCache t;
    tc_init(&t, n, len, 0);
    int64_t *docs = malloc((size_t)n * sizeof *docs);
    for (int64_t d = 0; d < n; d++)
        docs[d] = d;
    PackPlan p;
    ErrStatus st;
    double t0 = now_s();
    int ok = pack_plan(&p, &t.c, docs, n, T, 1, PACK_LONG_TRUNCATE, &st);
    double t1 = now_s();
    CHECK_TRUE(ok && p.docs == n && p.npieces == n && p.tokens == tokens, "1e6 plan: %s", st.msg);
    int rows_ok = 1;
    for (int64_t r = 0; r < p.nrows && rows_ok; r++) {
        int64_t used = 0;
        for (int64_t k = p.row_off[r]; k < p.row_off[r + 1]; k++)
            used += p.pieces[k].len;
        rows_ok = used <= T && p.row_off[r + 1] > p.row_off[r];
        if (r + 1 < p.nrows) rows_ok &= used + p.pieces[p.row_off[r + 1]].len > T;
    }
    CHECK_TRUE(rows_ok, "1e6 plan: rows within T and full by the greedy rule");
    int64_t *tr, *ev, nt, ne;
    double t2 = now_s();
    pack_split(n, 0.01, 3, &tr, &nt, &ev, &ne, &st);
    double t3 = now_s();
    PackOrder o;
    pack_order_init(&o, &p, 3, 1);
    int64_t acc = 0;
    for (int64_t i = 0; i < 2 * p.nrows; i++)
        acc += pack_order_row(&o, i);
    double t4 = now_s();
    CHECK_TRUE(acc == p.nrows * (p.nrows - 1), "two epochs of the order cover every row twice");
    CHECK_TRUE(t1 - t0 < 5.0 && t3 - t2 < 5.0 && t4 - t3 < 5.0, "linear time");
    printf("1e6 documents (%lld tokens): plan %.3f s -> %lld rows (%.1f%% full); split %.3f s; "
           "order of 2 epochs %.3f s\n",
           (long long)tokens, t1 - t0, (long long)p.nrows,
           100.0 * (double)tokens / (double)(p.nrows * T), t3 - t2, t4 - t3);
    pack_order_free(&o);
    free(tr);
    free(ev);
    pack_plan_free(&p);
    free(docs);
    free(len);
    tc_free(&t);
}

int main(void) {
    test_parse_long();
    test_split();
    test_plan_packed();
    test_plan_unpacked();
    test_plan_long();
    test_plan_positions();
    test_order();
    test_scale();
    return check_finish();
}
