/* Unit tests of runtime/kernels: every reference backward against central finite
 * differences of L = sum(out * R), every fast kernel (forward and backward) against the
 * reference on awkward sizes, attention document isolation, the cross-entropy pieces against
 * a direct softmax, the RoPE tables against independent double / PyTorch numbers, and
 * kern_doc_starts. Exits non-zero on any failure.
 *
 * Legend: T tokens, C hidden, V vocabulary columns, H query heads, KV kv heads, D head dim. */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/gemm.h"
#include "runtime/kernels.h"
#include "runtime/mem.h"
#include "tests/unit/check.h"

/* ---- helpers ---------------------------------------------------------------------------- */

static float *fcopy(const float *x, int64_t n) {
    float *p = check_falloc(n);
    memcpy(p, x, (size_t)n * sizeof *p);
    return p;
}

/* max |a - b| / max |b| without counting a check (for negative controls). */
static double rel_err(const float *a, const float *b, int64_t n) {
    double md = 0, mr = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > md) md = d;
        if (fabs((double)b[i]) > mr) mr = fabs((double)b[i]);
    }
    return md / (mr > 1e-6 ? mr : 1e-6);
}

/* a - b elementwise into a new buffer (the increment a backward added to a pre-filled dx). */
static float *fdiff(const float *a, const float *b, int64_t n) {
    float *p = check_falloc(n);
    for (int64_t i = 0; i < n; i++)
        p[i] = a[i] - b[i];
    return p;
}

#define FD_H 1e-2
#define FD_TOL 1e-3
/* fast vs reference */
#define FR_TOL 2e-5

/* ---- finite-difference tests of the reference kernels ------------------------------------- */

typedef struct {
    const KernOps *ops;
    int64_t T, C, H, KV, D, n;
    float *x, *w, *out, *rstd, *R; /* rmsnorm: x, out [T, C]; w [C]; rstd [T] */
    float *gate, *up;              /* swiglu: [n] */
    float *cos, *sin;              /* rope: [T, D/2] */
    float *q, *k, *v, *lse;        /* attention: q, out [T, H*D]; k, v [T, KV*D]; lse [H, T] */
    const int32_t *doc;            /* [T] */
    KernCtx *kc;
} FdCtx;

static double loss_rmsnorm(void *p) {
    FdCtx *c = p;
    c->ops->rmsnorm_forward(c->out, c->rstd, c->x, c->w, c->T, c->C, 1e-5f);
    return check_dot_f64(c->out, c->R, c->T * c->C);
}

static double loss_rope(void *p) {
    FdCtx *c = p;
    int64_t n = c->T * c->H * c->D;
    memcpy(c->out, c->x, (size_t)n * sizeof(float));
    c->ops->rope_forward(c->out, c->cos, c->sin, c->T, c->H, c->D);
    return check_dot_f64(c->out, c->R, n);
}

static double loss_swiglu(void *p) {
    FdCtx *c = p;
    c->ops->swiglu_forward(c->out, c->gate, c->up, c->n);
    return check_dot_f64(c->out, c->R, c->n);
}

static double loss_attention(void *p) {
    FdCtx *c = p;
    c->ops->attention_forward(c->kc, c->out, c->lse, c->q, c->k, c->v, c->doc, c->T, c->H, c->KV,
                              c->D);
    return check_dot_f64(c->out, c->R, c->T * c->H * c->D);
}

static void make_rope_tables(float *cos, float *sin, const int64_t *pos, int64_t T, int64_t D) {
    float inv[256];
    KernRopeScaling none = {0};
    kern_rope_inv_freq(inv, D, 10000.0, &none);
    kern_rope_tables(cos, sin, pos, T, inv, D / 2);
}

static void test_fd_rmsnorm(const KernOps *ops) {
    FdCtx c = {.ops = ops, .T = 7, .C = 12};
    int64_t n = c.T * c.C;
    c.x = check_frand(n, 1.0f);
    c.w = check_frand(c.C, 1.0f);
    c.out = check_falloc(n);
    c.rstd = check_falloc(c.T);
    c.R = check_frand(n, 1.0f);
    float *num = check_falloc(n), *dx0 = check_frand(n, 1.0f), *dx = fcopy(dx0, n);
    check_fd_grad(num, c.x, n, FD_H, loss_rmsnorm, &c);
    loss_rmsnorm(&c);
    ops->rmsnorm_backward(dx, c.R, c.x, c.w, c.rstd, c.T, c.C);
    float *ana = fdiff(dx, dx0, n);
    check_close("fd rmsnorm dx", ana, num, n, FD_TOL);
    /* negative control: a 1% error in one element must be caught by this tolerance */
    ana[3] += 0.01f * (float)fabs(num[3]) + 0.01f;
    CHECK_TRUE(rel_err(ana, num, n) > FD_TOL, "fd tolerance too loose to catch a 1%% error");
    free(c.x), free(c.w), free(c.out), free(c.rstd), free(c.R), free(num), free(dx0), free(dx),
        free(ana);
}

static void test_fd_rope(const KernOps *ops) {
    FdCtx c = {.ops = ops, .T = 7, .H = 3, .D = 6};
    int64_t n = c.T * c.H * c.D, pos[7] = {0, 1, 2, 0, 1, 2, 3};
    c.x = check_frand(n, 1.0f);
    c.out = check_falloc(n);
    c.R = check_frand(n, 1.0f);
    c.cos = check_falloc(c.T * c.D / 2);
    c.sin = check_falloc(c.T * c.D / 2);
    make_rope_tables(c.cos, c.sin, pos, c.T, c.D);
    float *num = check_falloc(n), *g = fcopy(c.R, n);
    check_fd_grad(num, c.x, n, FD_H, loss_rope, &c);
    ops->rope_backward(g, c.cos, c.sin, c.T, c.H, c.D); /* in place: dL/dx */
    check_close("fd rope dx", g, num, n, FD_TOL);
    free(c.x), free(c.out), free(c.R), free(c.cos), free(c.sin), free(num), free(g);
}

static void test_fd_swiglu(const KernOps *ops) {
    FdCtx c = {.ops = ops, .n = 84};
    c.gate = check_frand(c.n, 4.0f); /* through the curved part of silu */
    c.up = check_frand(c.n, 1.0f);
    c.out = check_falloc(c.n);
    c.R = check_frand(c.n, 1.0f);
    float *ng = check_falloc(c.n), *nu = check_falloc(c.n);
    float *dg0 = check_frand(c.n, 1.0f), *du0 = check_frand(c.n, 1.0f);
    float *dg = fcopy(dg0, c.n), *du = fcopy(du0, c.n);
    check_fd_grad(ng, c.gate, c.n, FD_H, loss_swiglu, &c);
    check_fd_grad(nu, c.up, c.n, FD_H, loss_swiglu, &c);
    ops->swiglu_backward(dg, du, c.R, c.gate, c.up, c.n);
    float *ag = fdiff(dg, dg0, c.n), *au = fdiff(du, du0, c.n);
    check_close("fd swiglu dgate", ag, ng, c.n, FD_TOL);
    check_close("fd swiglu dup", au, nu, c.n, FD_TOL);
    free(c.gate), free(c.up), free(c.out), free(c.R), free(ng), free(nu), free(dg0), free(du0),
        free(dg), free(du), free(ag), free(au);
}

static void test_fd_attention(const KernOps *ops, KernCtx *kc) {
    /* two documents: positions 0..2, 0..3 */
    static const int64_t pos[7] = {0, 1, 2, 0, 1, 2, 3};
    int32_t doc[7];
    kern_doc_starts(doc, pos, 7);
    FdCtx c = {.ops = ops, .T = 7, .H = 4, .KV = 2, .D = 6, .doc = doc, .kc = kc};
    int64_t nq = c.T * c.H * c.D, nk = c.T * c.KV * c.D;
    c.q = check_frand(nq, 1.5f);
    c.k = check_frand(nk, 1.5f);
    c.v = check_frand(nk, 1.0f);
    c.out = check_falloc(nq);
    c.lse = check_falloc(c.H * c.T);
    c.R = check_frand(nq, 1.0f);
    float *nq_ = check_falloc(nq), *nk_ = check_falloc(nk), *nv_ = check_falloc(nk);
    check_fd_grad(nq_, c.q, nq, FD_H, loss_attention, &c);
    check_fd_grad(nk_, c.k, nk, FD_H, loss_attention, &c);
    check_fd_grad(nv_, c.v, nk, FD_H, loss_attention, &c);
    loss_attention(&c);
    float *dq0 = check_frand(nq, 1.0f), *dk0 = check_frand(nk, 1.0f), *dv0 = check_frand(nk, 1.0f);
    float *dq = fcopy(dq0, nq), *dk = fcopy(dk0, nk), *dv = fcopy(dv0, nk);
    ops->attention_backward(kc, dq, dk, dv, c.R, c.out, c.lse, c.q, c.k, c.v, doc, c.T, c.H, c.KV,
                            c.D);
    float *aq = fdiff(dq, dq0, nq), *ak = fdiff(dk, dk0, nk), *av = fdiff(dv, dv0, nk);
    check_close("fd attention dq", aq, nq_, nq, FD_TOL);
    check_close("fd attention dk", ak, nk_, nk, FD_TOL);
    check_close("fd attention dv", av, nv_, nk, FD_TOL);
    /* lse is log sum exp of the scaled scores: check one entry directly (head 3, t = 5) */
    {
        int64_t h = 3, t = 5, kvh = h / (c.H / c.KV);
        double se = 0;
        for (int64_t s = doc[t]; s <= t; s++)
            se += exp(check_dot_f64(c.q + (t * c.H + h) * c.D, c.k + (s * c.KV + kvh) * c.D, c.D) /
                      sqrt((double)c.D));
        float want = (float)log(se);
        check_close("attention lse[3, 5] direct", &c.lse[h * c.T + t], &want, 1, 1e-6);
    }
    free(c.q), free(c.k), free(c.v), free(c.out), free(c.lse), free(c.R), free(nq_), free(nk_),
        free(nv_), free(dq0), free(dk0), free(dv0), free(dq), free(dk), free(dv), free(aq),
        free(ak), free(av);
}

/* CE on one rank: loss = sum_t w_t (log se + mx - l_target); FD on logits vs ce_backward. */
typedef struct {
    const KernOps *ops;
    float *logits;
    const int32_t *target;
    const float *w;
    int64_t Tc, V;
} CeCtx;

static double loss_ce(void *p) {
    CeCtx *c = p;
    float mx[16], se[16], tl[16];
    c->ops->ce_max(mx, c->logits, c->Tc, c->V);
    c->ops->ce_sumexp(se, c->logits, mx, c->Tc, c->V);
    c->ops->ce_target(tl, c->logits, c->target, 0, c->Tc, c->V);
    double L = 0;
    for (int64_t t = 0; t < c->Tc; t++)
        if (c->w[t] != 0) L += c->w[t] * (log((double)se[t]) + mx[t] - tl[t]);
    return L;
}

static void test_fd_ce(const KernOps *ops) {
    int32_t target[5] = {3, 0, 10, 7, 2};
    float w[5] = {0.5f, 1.0f, 0.0f, 2.0f, 0.25f};
    CeCtx c = {.ops = ops, .target = target, .w = w, .Tc = 5, .V = 11};
    int64_t n = c.Tc * c.V;
    c.logits = check_frand(n, 3.0f);
    float *num = check_falloc(n);
    check_fd_grad(num, c.logits, n, FD_H, loss_ce, &c);
    float mx[5], se[5];
    float *g = fcopy(c.logits, n);
    ops->ce_max(mx, g, c.Tc, c.V);
    ops->ce_sumexp(se, g, mx, c.Tc, c.V);
    ops->ce_backward(g, target, 0, mx, se, w, c.Tc, c.V);
    check_close("fd ce dlogits", g, num, n, FD_TOL);
    free(c.logits), free(num), free(g);
}

static void test_fd_embed(const KernOps *ops) {
    int64_t Vloc = 9, C = 12, T = 7, v0 = 4;
    int32_t ids[7] = {4, 12, 3, 7, 7, -100, 13}; /* 3, 13, -100 are not in [4, 13) */
    float *tab = check_frand(Vloc * C, 1.0f), *out = check_falloc(T * C),
          *R = check_frand(T * C, 1.0f);
    GemmWeight W = {.dtype = GEMM_F32, .data = tab, .rows = Vloc, .cols = C, .ld = C};
    float *num = check_falloc(Vloc * C);
    for (int64_t i = 0; i < Vloc * C; i++) { /* L is linear in the table: exact differences */
        float x0 = tab[i];
        tab[i] = x0 + 0.5f;
        ops->embed_forward(out, &W, ids, v0, T, C);
        double lp = check_dot_f64(out, R, T * C);
        tab[i] = x0 - 0.5f;
        ops->embed_forward(out, &W, ids, v0, T, C);
        double lm = check_dot_f64(out, R, T * C);
        tab[i] = x0;
        num[i] = (float)(lp - lm);
    }
    float *d0 = check_frand(Vloc * C, 1.0f), *d = fcopy(d0, Vloc * C);
    ops->embed_backward(d, R, ids, v0, Vloc, T, C);
    float *a = fdiff(d, d0, Vloc * C);
    check_close("fd embed dtable", a, num, Vloc * C, 1e-5);
    ops->embed_forward(out, &W, ids, v0, T, C);
    int zero_ok = 1;
    for (int64_t i = 0; i < C; i++)
        zero_ok &= out[2 * C + i] == 0 && out[5 * C + i] == 0 && out[6 * C + i] == 0;
    CHECK_TRUE(zero_ok, "embed rows of ids outside [v0, v0 + Vloc) must be 0");
    free(tab), free(out), free(R), free(num), free(d0), free(d), free(a);
}

/* ---- fast vs reference ------------------------------------------------------------------ */

static void test_fast_rmsnorm(const KernOps *ref, const KernOps *fast, int64_t T, int64_t C) {
    int64_t n = T * C;
    float *x = check_frand(n, 2.0f), *w = check_frand(C, 1.0f), *g = check_frand(n, 1.0f);
    float *o1 = check_falloc(n), *o2 = check_falloc(n), *r1 = check_falloc(T),
          *r2 = check_falloc(T);
    ref->rmsnorm_forward(o1, r1, x, w, T, C, 1e-6f);
    fast->rmsnorm_forward(o2, r2, x, w, T, C, 1e-6f);
    char name[96];
    snprintf(name, sizeof name, "fast rmsnorm out T=%lld C=%lld", (long long)T, (long long)C);
    check_close(name, o2, o1, n, FR_TOL);
    snprintf(name, sizeof name, "fast rmsnorm rstd T=%lld C=%lld", (long long)T, (long long)C);
    check_close(name, r2, r1, T, FR_TOL);
    float *d1 = check_frand(n, 1.0f), *d2 = fcopy(d1, n);
    ref->rmsnorm_backward(d1, g, x, w, r1, T, C);
    fast->rmsnorm_backward(d2, g, x, w, r1, T, C);
    snprintf(name, sizeof name, "fast rmsnorm dx T=%lld C=%lld", (long long)T, (long long)C);
    check_close(name, d2, d1, n, FR_TOL);
    free(x), free(w), free(g), free(o1), free(o2), free(r1), free(r2), free(d1), free(d2);
}

static void test_fast_rope(const KernOps *ref, const KernOps *fast) {
    int64_t T = 37, nh = 6, D = 10, n = T * nh * D;
    int64_t pos[37];
    for (int64_t t = 0; t < T; t++)
        pos[t] = t < 20 ? t + 5 : t - 20;
    float *cs = check_falloc(T * D / 2), *sn = check_falloc(T * D / 2);
    make_rope_tables(cs, sn, pos, T, D);
    float *x = check_frand(n, 1.0f), *a = fcopy(x, n), *b = fcopy(x, n);
    ref->rope_forward(a, cs, sn, T, nh, D);
    fast->rope_forward(b, cs, sn, T, nh, D);
    check_close("fast rope forward T=37 nh=6 D=10", b, a, n, FR_TOL);
    ref->rope_backward(a, cs, sn, T, nh, D);
    fast->rope_backward(b, cs, sn, T, nh, D);
    check_close("fast rope backward T=37 nh=6 D=10", b, a, n, FR_TOL);
    /* backward of forward is the identity (a rotation and its transpose) */
    check_close("rope backward(forward(x)) == x", b, x, n, 1e-6);
    free(cs), free(sn), free(x), free(a), free(b);
}

static void test_fast_swiglu(const KernOps *ref, const KernOps *fast, int64_t n) {
    float *g = check_frand(n, 12.0f), *u = check_frand(n, 2.0f), *go = check_frand(n, 1.0f);
    g[0] = -95.0f, g[1] = 95.0f, g[2] = 0.0f; /* saturated sigmoid on both sides */
    float *o1 = check_falloc(n), *o2 = check_falloc(n);
    ref->swiglu_forward(o1, g, u, n);
    fast->swiglu_forward(o2, g, u, n);
    char name[96];
    snprintf(name, sizeof name, "fast swiglu out n=%lld", (long long)n);
    check_close(name, o2, o1, n, FR_TOL);
    float *dg1 = check_frand(n, 1.0f), *du1 = check_frand(n, 1.0f), *dg2 = fcopy(dg1, n),
          *du2 = fcopy(du1, n);
    ref->swiglu_backward(dg1, du1, go, g, u, n);
    fast->swiglu_backward(dg2, du2, go, g, u, n);
    snprintf(name, sizeof name, "fast swiglu dgate n=%lld", (long long)n);
    check_close(name, dg2, dg1, n, FR_TOL);
    snprintf(name, sizeof name, "fast swiglu dup n=%lld", (long long)n);
    check_close(name, du2, du1, n, FR_TOL);
    free(g), free(u), free(go), free(o1), free(o2), free(dg1), free(du1), free(dg2), free(du2);
}

/* positions from document lengths; returns T */
static int64_t make_docs(int64_t *pos, const int64_t *lens, int ndoc) {
    int64_t T = 0;
    for (int d = 0; d < ndoc; d++)
        for (int64_t i = 0; i < lens[d]; i++)
            pos[T++] = i;
    return T;
}

static void test_fast_attention(const KernOps *ref, const KernOps *fast, KernCtx *kc,
                                const int64_t *pos, int64_t T, int64_t H, int64_t KV, int64_t D,
                                const char *label) {
    int32_t *doc = malloc((size_t)T * sizeof *doc);
    kern_doc_starts(doc, pos, T);
    int64_t nq = T * H * D, nk = T * KV * D;
    float *q = check_frand(nq, 2.0f), *k = check_frand(nk, 2.0f), *v = check_frand(nk, 1.0f),
          *go = check_frand(nq, 1.0f);
    float *o1 = check_falloc(nq), *o2 = check_falloc(nq), *l1 = check_falloc(H * T),
          *l2 = check_falloc(H * T);
    ref->attention_forward(kc, o1, l1, q, k, v, doc, T, H, KV, D);
    fast->attention_forward(kc, o2, l2, q, k, v, doc, T, H, KV, D);
    char name[128];
    snprintf(name, sizeof name, "fast attn out %s", label);
    check_close(name, o2, o1, nq, FR_TOL);
    snprintf(name, sizeof name, "fast attn lse %s", label);
    check_close(name, l2, l1, H * T, FR_TOL);
    float *dq1 = check_frand(nq, 1.0f), *dk1 = check_frand(nk, 1.0f), *dv1 = check_frand(nk, 1.0f);
    float *dq2 = fcopy(dq1, nq), *dk2 = fcopy(dk1, nk), *dv2 = fcopy(dv1, nk);
    float *dq0 = fcopy(dq1, nq), *dk0 = fcopy(dk1, nk), *dv0 = fcopy(dv1, nk);
    ref->attention_backward(kc, dq1, dk1, dv1, go, o1, l1, q, k, v, doc, T, H, KV, D);
    fast->attention_backward(kc, dq2, dk2, dv2, go, o1, l1, q, k, v, doc, T, H, KV, D);
    /* compare the increments: the pre-filled values would hide errors in small gradients */
    float *i1 = fdiff(dq1, dq0, nq), *i2 = fdiff(dq2, dq0, nq);
    snprintf(name, sizeof name, "fast attn dq %s", label);
    check_close(name, i2, i1, nq, FR_TOL);
    free(i1), free(i2);
    i1 = fdiff(dk1, dk0, nk), i2 = fdiff(dk2, dk0, nk);
    snprintf(name, sizeof name, "fast attn dk %s", label);
    check_close(name, i2, i1, nk, FR_TOL);
    free(i1), free(i2);
    i1 = fdiff(dv1, dv0, nk), i2 = fdiff(dv2, dv0, nk);
    snprintf(name, sizeof name, "fast attn dv %s", label);
    check_close(name, i2, i1, nk, FR_TOL);
    free(i1), free(i2);
    free(doc), free(q), free(k), free(v), free(go), free(o1), free(o2), free(l1), free(l2),
        free(dq1), free(dk1), free(dv1), free(dq2), free(dk2), free(dv2), free(dq0), free(dk0),
        free(dv0);
}

/* No token may see another document: change q, k, v of document `victim` and check every
 * other document's outputs stay bitwise equal; and with dout zero on the victim, the
 * victim's dq, dk, dv stay exactly 0. */
static void test_doc_isolation(const KernOps *ops, KernCtx *kc, const int64_t *pos, int64_t T,
                               int64_t H, int64_t KV, int64_t D, const char *label) {
    int32_t *doc = malloc((size_t)T * sizeof *doc);
    kern_doc_starts(doc, pos, T);
    int64_t nq = T * H * D, nk = T * KV * D;
    /* victim: the second document */
    int64_t v0 = -1, v1 = T;
    for (int64_t t = 1; t < T; t++) {
        if (pos[t] == 0 && v0 < 0)
            v0 = t;
        else if (pos[t] == 0 && v0 >= 0) {
            v1 = t;
            break;
        }
    }
    float *q = check_frand(nq, 2.0f), *k = check_frand(nk, 2.0f), *v = check_frand(nk, 1.0f);
    float *o1 = check_falloc(nq), *o2 = check_falloc(nq), *lse = check_falloc(H * T);
    ops->attention_forward(kc, o1, lse, q, k, v, doc, T, H, KV, D);
    for (int64_t t = v0; t < v1; t++) {
        for (int64_t i = 0; i < H * D; i++)
            q[t * H * D + i] += 3.0f;
        for (int64_t i = 0; i < KV * D; i++)
            k[t * KV * D + i] -= 5.0f, v[t * KV * D + i] += 100.0f;
    }
    ops->attention_forward(kc, o2, lse, q, k, v, doc, T, H, KV, D);
    int64_t leaks = 0, changed = 0;
    for (int64_t t = 0; t < T; t++)
        for (int64_t i = 0; i < H * D; i++) {
            int differ = o1[t * H * D + i] != o2[t * H * D + i];
            if (t >= v0 && t < v1)
                changed += differ;
            else
                leaks += differ;
        }
    CHECK_TRUE(leaks == 0, "%s %s: %lld outputs of other documents changed", ops->name, label,
               (long long)leaks);
    CHECK_TRUE(changed > 0, "%s %s: the victim document's outputs did not change", ops->name,
               label);
    float *go = check_frand(nq, 1.0f);
    for (int64_t t = v0; t < v1; t++)
        for (int64_t i = 0; i < H * D; i++)
            go[t * H * D + i] = 0;
    float *dq = check_falloc(nq), *dk = check_falloc(nk), *dv = check_falloc(nk);
    ops->attention_backward(kc, dq, dk, dv, go, o2, lse, q, k, v, doc, T, H, KV, D);
    int64_t nonzero = 0;
    for (int64_t t = v0; t < v1; t++) {
        for (int64_t i = 0; i < H * D; i++)
            nonzero += dq[t * H * D + i] != 0;
        for (int64_t i = 0; i < KV * D; i++)
            nonzero += (dk[t * KV * D + i] != 0) + (dv[t * KV * D + i] != 0);
    }
    CHECK_TRUE(nonzero == 0, "%s %s: %lld gradients flowed into the victim document", ops->name,
               label, (long long)nonzero);
    printf("%s doc isolation %s %-30s (leaks %lld, grads into victim %lld)\n",
           leaks == 0 && nonzero == 0 ? "PASS" : "FAIL", ops->name, label, (long long)leaks,
           (long long)nonzero);
    free(doc), free(q), free(k), free(v), free(o1), free(o2), free(lse), free(go), free(dq),
        free(dk), free(dv);
}

/* ---- cross-entropy against a direct softmax, vocab-parallel split ------------------------ */

static void test_ce(const KernOps *ops, int64_t Tc, int64_t V, int64_t split) {
    int64_t n = Tc * V;
    float *logits = check_frand(n, 8.0f);
    int32_t *target = malloc((size_t)Tc * sizeof *target);
    float *w = check_falloc(Tc);
    for (int64_t t = 0; t < Tc; t++) {
        target[t] = (int32_t)((t * 7919) % V);
        w[t] = 0.5f + (float)(t % 3);
    }
    target[0] = -100; /* ignored label (w 0 by the caller) */
    w[0] = 0.0f;
    target[1] = (int32_t)V;            /* beyond the vocabulary: no one-hot anywhere */
    w[2] = 0.0f;                       /* weight-0 row with a valid target */
    target[Tc - 1] = (int32_t)(split); /* first id of the second shard */
    logits[(Tc - 1) * V + 5] = 80.0f;  /* a dominant logit */

    /* direct: softmax in double over the whole row */
    double *loss_d = calloc((size_t)Tc, sizeof *loss_d);
    float *grad_d = check_falloc(n);
    for (int64_t t = 0; t < Tc; t++) {
        const float *l = logits + t * V;
        double m = -INFINITY, s = 0;
        for (int64_t j = 0; j < V; j++)
            m = l[j] > m ? l[j] : m;
        for (int64_t j = 0; j < V; j++)
            s += exp(l[j] - m);
        int in = target[t] >= 0 && target[t] < V;
        loss_d[t] = log(s) + m - (in ? l[target[t]] : 0.0);
        for (int64_t j = 0; j < V; j++)
            grad_d[t * V + j] =
                w[t] == 0 ? 0.0f : (float)(w[t] * (exp(l[j] - m) / s - (j == target[t] ? 1 : 0)));
    }

    /* two "ranks": columns [0, split) and [split, V), combined as the caller would */
    int64_t vr[2][2] = {{0, split}, {split, V}};
    float *mx = check_falloc(Tc), *se = check_falloc(Tc), *tl = check_falloc(Tc);
    float *m_r = check_falloc(Tc), *s_r = check_falloc(Tc), *tl_r = check_falloc(Tc);
    float *shard[2];
    for (int r = 0; r < 2; r++) {
        int64_t Vr = vr[r][1] - vr[r][0];
        shard[r] = check_falloc(Tc * Vr);
        for (int64_t t = 0; t < Tc; t++)
            memcpy(shard[r] + t * Vr, logits + t * V + vr[r][0], (size_t)Vr * sizeof(float));
    }
    for (int64_t t = 0; t < Tc; t++)
        mx[t] = -INFINITY, se[t] = 0, tl[t] = 0;
    for (int r = 0; r < 2; r++) { /* allreduce_max */
        ops->ce_max(m_r, shard[r], Tc, vr[r][1] - vr[r][0]);
        for (int64_t t = 0; t < Tc; t++)
            mx[t] = m_r[t] > mx[t] ? m_r[t] : mx[t];
    }
    for (int r = 0; r < 2; r++) { /* allreduce_sum of sumexp and of the target logit */
        int64_t Vr = vr[r][1] - vr[r][0];
        ops->ce_sumexp(s_r, shard[r], mx, Tc, Vr);
        ops->ce_target(tl_r, shard[r], target, vr[r][0], Tc, Vr);
        for (int64_t t = 0; t < Tc; t++)
            se[t] += s_r[t], tl[t] += tl_r[t];
    }
    float *loss_k = check_falloc(Tc), *loss_dd = check_falloc(Tc);
    for (int64_t t = 0; t < Tc; t++) {
        loss_k[t] = logf(se[t]) + mx[t] - tl[t];
        loss_dd[t] = (float)loss_d[t];
    }
    char name[96];
    snprintf(name, sizeof name, "%s ce loss Tc=%lld V=%lld split", ops->name, (long long)Tc,
             (long long)V);
    check_close(name, loss_k, loss_dd, Tc, 1e-5);
    float *grad_k = check_falloc(n);
    for (int r = 0; r < 2; r++) {
        int64_t Vr = vr[r][1] - vr[r][0];
        ops->ce_backward(shard[r], target, vr[r][0], mx, se, w, Tc, Vr);
        for (int64_t t = 0; t < Tc; t++)
            memcpy(grad_k + t * V + vr[r][0], shard[r] + t * Vr, (size_t)Vr * sizeof(float));
    }
    snprintf(name, sizeof name, "%s ce dlogits Tc=%lld V=%lld split", ops->name, (long long)Tc,
             (long long)V);
    check_close(name, grad_k, grad_d, n, 1e-5);
    int zero_rows = 1;
    for (int64_t j = 0; j < V; j++)
        zero_rows &= grad_k[j] == 0 && grad_k[2 * V + j] == 0;
    CHECK_TRUE(zero_rows, "%s: weight-0 rows must have exactly zero gradient", ops->name);
    free(logits), free(target), free(w), free(loss_d), free(grad_d), free(mx), free(se), free(tl),
        free(m_r), free(s_r), free(tl_r), free(shard[0]), free(shard[1]), free(loss_k),
        free(loss_dd), free(grad_k);
}

static void test_fast_ce(const KernOps *ref, const KernOps *fast, int64_t Tc, int64_t V,
                         int64_t v0) {
    int64_t n = Tc * V;
    float *l = check_frand(n, 10.0f);
    int32_t *target = malloc((size_t)Tc * sizeof *target);
    float *w = check_falloc(Tc);
    for (int64_t t = 0; t < Tc; t++) {
        target[t] = (int32_t)(v0 - 3 + (t * 31) % (V + 6)); /* some below v0, some beyond */
        w[t] = (t % 4 == 1) ? 0.0f : 0.1f * (float)(t % 7 + 1);
    }
    float m1[64], m2[64], s1[64], s2[64], t1[64], t2[64];
    ref->ce_max(m1, l, Tc, V);
    fast->ce_max(m2, l, Tc, V);
    char name[96];
    snprintf(name, sizeof name, "fast ce_max Tc=%lld V=%lld", (long long)Tc, (long long)V);
    check_close(name, m2, m1, Tc, 0);
    ref->ce_sumexp(s1, l, m1, Tc, V);
    fast->ce_sumexp(s2, l, m1, Tc, V);
    snprintf(name, sizeof name, "fast ce_sumexp Tc=%lld V=%lld", (long long)Tc, (long long)V);
    check_close(name, s2, s1, Tc, FR_TOL);
    ref->ce_target(t1, l, target, v0, Tc, V);
    fast->ce_target(t2, l, target, v0, Tc, V);
    snprintf(name, sizeof name, "fast ce_target Tc=%lld V=%lld", (long long)Tc, (long long)V);
    check_close(name, t2, t1, Tc, 0);
    float *g1 = fcopy(l, n), *g2 = fcopy(l, n);
    ref->ce_backward(g1, target, v0, m1, s1, w, Tc, V);
    fast->ce_backward(g2, target, v0, m1, s1, w, Tc, V);
    snprintf(name, sizeof name, "fast ce_backward Tc=%lld V=%lld", (long long)Tc, (long long)V);
    check_close(name, g2, g1, n, FR_TOL);
    free(l), free(target), free(w), free(g1), free(g2);
}

static void test_fast_embed(const KernOps *ref, const KernOps *fast) {
    int64_t Vloc = 23, C = 70, ld = 75, T = 37, v0 = 100;
    float *tf = check_frand(Vloc * ld, 1.0f);
    uint16_t *tb = malloc((size_t)(Vloc * ld) * sizeof *tb);
    for (int64_t i = 0; i < Vloc * ld; i++)
        tb[i] = gemm_f32_to_bf16(tf[i]);
    int32_t ids[37];
    for (int64_t t = 0; t < T; t++)
        ids[t] = (int32_t)(v0 - 2 + (t * 5) % (Vloc + 4));
    ids[3] = -100;
    float *o1 = check_falloc(T * C), *o2 = check_falloc(T * C);
    for (int bf = 0; bf < 2; bf++) {
        GemmWeight W = {.dtype = bf ? GEMM_BF16 : GEMM_F32,
                        .data = bf ? (const void *)tb : (const void *)tf,
                        .rows = Vloc,
                        .cols = C,
                        .ld = ld};
        memset(o2, 0x7f, (size_t)(T * C) * sizeof *o2); /* garbage the kernel must overwrite */
        ref->embed_forward(o1, &W, ids, v0, T, C);
        fast->embed_forward(o2, &W, ids, v0, T, C);
        check_close(bf ? "fast embed forward BF16 ld=75" : "fast embed forward F32 ld=75", o2, o1,
                    T * C, 0);
    }
    /* BF16 rows are the rounded F32 rows */
    float *o3 = check_falloc(T * C);
    GemmWeight WF = {.dtype = GEMM_F32, .data = tf, .rows = Vloc, .cols = C, .ld = ld};
    ref->embed_forward(o3, &WF, ids, v0, T, C);
    check_close("embed BF16 vs F32 table (bf16 rounding)", o1, o3, T * C, 4e-3);
    float *g = check_frand(T * C, 1.0f), *d1 = check_frand(Vloc * C, 1.0f),
          *d2 = fcopy(d1, Vloc * C);
    ref->embed_backward(d1, g, ids, v0, Vloc, T, C);
    fast->embed_backward(d2, g, ids, v0, Vloc, T, C);
    check_close("fast embed backward (repeated ids)", d2, d1, Vloc * C, 0);
    free(tf), free(tb), free(o1), free(o2), free(o3), free(g), free(d1), free(d2);
}

/* ---- RoPE tables and doc starts ---------------------------------------------------------- */

/* Llama 3.2 settings: head_dim 64, theta 500000, llama3 factor 32, low 1, high 4, ctx 8192.
 * Generated with torch 2.x float32 by transcribing transformers' _compute_default_rope_
 * parameters + _compute_llama3_parameters (entries 15-17 are the smoothed band):
 * inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim)) ... */
static const float k_torch_llama32_inv_freq[32] = {1.0f,
                                                   0.663601279f,
                                                   0.440366626f,
                                                   0.292227834f,
                                                   0.193922758f,
                                                   0.128687382f,
                                                   0.0853971019f,
                                                   0.0566696189f,
                                                   0.0376060307f,
                                                   0.0249554086f,
                                                   0.0165604409f,
                                                   0.0109895291f,
                                                   0.00729266508f,
                                                   0.00483942125f,
                                                   0.00321144611f,
                                                   0.00129054801f,
                                                   0.000429556705f,
                                                   9.70828623e-05f,
                                                   1.94616387e-05f,
                                                   1.29147675e-05f,
                                                   8.57025589e-06f,
                                                   5.68723226e-06f,
                                                   3.77405445e-06f,
                                                   2.50446715e-06f,
                                                   1.66196742e-06f,
                                                   1.10288363e-06f,
                                                   7.31874934e-07f,
                                                   4.85673127e-07f,
                                                   3.22293289e-07f,
                                                   2.1387423e-07f,
                                                   1.41927202e-07f,
                                                   9.41830649e-08f};

/* The same HF formulas evaluated independently in double. */
static void inv_freq_f64(double *out, int64_t D, double theta, const KernRopeScaling *s) {
    for (int64_t i = 0; i < D / 2; i++) {
        double f = 1.0 / pow(theta, (double)(2 * i) / (double)D);
        if (s->type == 1) {
            double lw = (double)s->original_max_position / s->low_freq_factor;
            double hw = (double)s->original_max_position / s->high_freq_factor;
            double wl = 2 * 3.14159265358979323846 / f;
            if (wl < hw) {
                /* high frequency: unchanged */
            } else if (wl > lw) {
                f = f / s->factor;
            } else {
                double sm = ((double)s->original_max_position / wl - s->low_freq_factor) /
                            (s->high_freq_factor - s->low_freq_factor);
                f = (1 - sm) * f / s->factor + sm * f;
            }
        }
        out[i] = f;
    }
}

static void test_rope_tables(void) {
    float inv[64], want[64];
    double wd[64];
    KernRopeScaling l3 = {.type = 1,
                          .factor = 32,
                          .low_freq_factor = 1,
                          .high_freq_factor = 4,
                          .original_max_position = 8192};
    kern_rope_inv_freq(inv, 64, 500000.0, &l3);
    check_close("rope inv_freq llama3 vs torch float32", inv, k_torch_llama32_inv_freq, 32, 2e-7);
    /* relative per element: the low frequencies are tiny next to inv_freq[0] = 1 */
    double worst = 0;
    for (int i = 0; i < 32; i++) {
        double e = fabs(inv[i] - (double)k_torch_llama32_inv_freq[i]) / k_torch_llama32_inv_freq[i];
        worst = e > worst ? e : worst;
    }
    CHECK_TRUE(worst < 3e-7, "inv_freq elementwise rel err vs torch %.3e", worst);
    printf("%s rope inv_freq llama3 vs torch, elementwise max rel err %.3e\n",
           worst < 3e-7 ? "PASS" : "FAIL", worst);

    /* independent double computation, several configurations, elementwise relative */
    KernRopeScaling cfgs[3] = {{.type = 0},
                               {.type = 1,
                                .factor = 8,
                                .low_freq_factor = 1,
                                .high_freq_factor = 4,
                                .original_max_position = 8192},
                               {.type = 1,
                                .factor = 32,
                                .low_freq_factor = 1,
                                .high_freq_factor = 4,
                                .original_max_position = 8192}};
    int64_t Ds[3] = {128, 128, 64};
    double thetas[3] = {10000.0, 500000.0, 500000.0};
    for (int c = 0; c < 3; c++) {
        kern_rope_inv_freq(inv, Ds[c], thetas[c], &cfgs[c]);
        inv_freq_f64(wd, Ds[c], thetas[c], &cfgs[c]);
        double e = 0;
        for (int64_t i = 0; i < Ds[c] / 2; i++) {
            double r = fabs(inv[i] - wd[i]) / wd[i];
            e = r > e ? r : e;
        }
        CHECK_TRUE(e < 1e-6, "inv_freq config %d vs double: %.3e", c, e);
        printf("%s rope inv_freq config %d vs double, elementwise max rel err %.3e\n",
               e < 1e-6 ? "PASS" : "FAIL", c, e);
    }

    /* cos / sin tables: angle = (float)pos * inv_freq in float32, then cos / sin */
    int64_t pos[6] = {0, 1, 7, 100, 8191, 131071}, half = 32;
    float cs[6 * 32], sn[6 * 32], wc[6 * 32], ws[6 * 32];
    kern_rope_inv_freq(inv, 64, 500000.0, &l3);
    kern_rope_tables(cs, sn, pos, 6, inv, half);
    for (int t = 0; t < 6; t++)
        for (int i = 0; i < half; i++) {
            float a = (float)pos[t] * inv[i];
            wc[t * half + i] = (float)cos((double)a);
            ws[t * half + i] = (float)sin((double)a);
        }
    check_close("rope cos table", cs, wc, 6 * half, 1e-6);
    check_close("rope sin table", sn, ws, 6 * half, 1e-6);
    /* torch: freqs.cos() at position 131071, first entries (float32, same formulas) */
    for (int i = 0; i < 4; i++)
        want[i] = cs[5 * half + i];
    const float torch_cos[4] = {-0.817983508f, 0.732638896f, -0.372722f, 0.956476688f};
    check_close("rope cos(131071 * inv_freq) vs torch", want, torch_cos, 4, 1e-5);
}

static void test_doc_starts(void) {
    int64_t pos[38];
    int64_t lens[3] = {10, 15, 13};
    int64_t T = make_docs(pos, lens, 3);
    int32_t doc[38];
    kern_doc_starts(doc, pos, T);
    int ok = T == 38;
    for (int64_t t = 0; t < T; t++)
        ok &= doc[t] == (t < 10 ? 0 : t < 25 ? 10 : 25);
    CHECK_TRUE(ok, "doc starts for 0..9, 0..14, 0..12");
    /* a sequence that begins mid-document: the first document starts at t = 0 */
    int64_t pos2[6] = {5, 6, 7, 0, 1, 0};
    int32_t want2[6] = {0, 0, 0, 3, 3, 5}, got2[6];
    kern_doc_starts(got2, pos2, 6);
    CHECK_TRUE(memcmp(got2, want2, sizeof want2) == 0, "doc starts for 5,6,7,0,1,0");
    printf("%s kern_doc_starts\n", ok && memcmp(got2, want2, sizeof want2) == 0 ? "PASS" : "FAIL");
}

int main(int argc, char **argv) {
    gemm_ensure_blas_core(argc, argv); /* AVX-512 OpenBLAS core, passive OpenMP waits */
    const KernOps *ref = kern_ops_reference(), *fast = kern_ops_fast();
    CHECK_TRUE(kern_ops_by_name("reference") == ref && kern_ops_by_name("fast") == fast &&
                   kern_ops_by_name("nope") == NULL,
               "kern_ops_by_name");
    CHECK_TRUE(strcmp(ref->name, "reference") == 0 && strcmp(fast->name, "fast") == 0, "names");

    MemCtx mem;
    mem_init(&mem, MEM_PIN_OFF);
    GemmCtx g;
    gemm_init(&g, &mem, 2, 0);
    int64_t maxT = 300, maxH = 6, maxD = 64;
    KernCtx kc = {.gemm = &g, .nthreads = 2};
    kc.scratch_floats = kern_scratch_floats(maxT, maxH, maxD, kc.nthreads);
    kc.scratch = mem_alloc(&mem, MEM_ACTIVATION, kc.scratch_floats * sizeof(float));

    /* reference backward vs finite differences */
    test_fd_rmsnorm(ref);
    test_fd_rope(ref);
    test_fd_swiglu(ref);
    test_fd_attention(ref, &kc);
    test_fd_ce(ref);
    test_fd_embed(ref);

    /* fast vs reference */
    test_fast_rmsnorm(ref, fast, 37, 70);
    test_fast_rmsnorm(ref, fast, 300, 1024); /* the threaded path */
    test_fast_rope(ref, fast);
    test_fast_swiglu(ref, fast, 37 * 70);
    test_fast_swiglu(ref, fast, 70001); /* threaded, ragged chunk */
    {
        int64_t pos[300];
        for (int64_t t = 0; t < 37; t++)
            pos[t] = t;
        test_fast_attention(ref, fast, &kc, pos, 37, 6, 2, 10, "T=37 H=6 KV=2 D=10 one doc");
        int64_t l1[3] = {10, 15, 13};
        int64_t T = make_docs(pos, l1, 3);
        test_fast_attention(ref, fast, &kc, pos, T, 6, 2, 10, "T=38 H=6 KV=2 D=10 docs");
        test_doc_isolation(ref, &kc, pos, T, 6, 2, 10, "T=38 D=10");
        test_doc_isolation(fast, &kc, pos, T, 6, 2, 10, "T=38 D=10");
        for (int64_t t = 0; t < 130; t++)
            pos[t] = t + 17; /* starts mid-document */
        test_fast_attention(ref, fast, &kc, pos, 130, 4, 1, 64, "T=130 H=4 KV=1 D=64");
        int64_t l2[3] = {50, 70, 10};
        T = make_docs(pos, l2, 3);
        test_fast_attention(ref, fast, &kc, pos, T, 4, 2, 64, "T=130 H=4 KV=2 D=64 docs");
        test_doc_isolation(fast, &kc, pos, T, 4, 2, 64, "T=130 D=64");
        /* documents across the 128-row block boundary, a 1-token document */
        int64_t l3[4] = {100, 150, 1, 49};
        T = make_docs(pos, l3, 4);
        test_fast_attention(ref, fast, &kc, pos, T, 6, 3, 64, "T=300 H=6 KV=3 D=64 docs");
        test_doc_isolation(fast, &kc, pos, T, 6, 3, 64, "T=300 D=64");
        /* many tiny documents (1..7 tokens): blocks are not cut at each of them */
        T = 0;
        for (int64_t d = 0; T < 300; d++)
            for (int64_t i = 0; i < 1 + d % 7 && T < 300; i++)
                pos[T++] = i;
        test_fast_attention(ref, fast, &kc, pos, T, 4, 2, 16, "T=300 H=4 KV=2 D=16 tiny docs");
        test_doc_isolation(fast, &kc, pos, T, 4, 2, 16, "T=300 D=16 tiny docs");
        T = make_docs(pos, l3, 4); /* back to the T=300 documents */
        /* other thread counts: 1 (heads in sequence, BLAS threads as configured), 3 (an
         * uneven split of the heads: kv heads shared by two threads), MHA (KV = H) */
        int blas_threads = openblas_get_num_threads();
        for (int nt = 1; nt <= 3; nt += 2) {
            KernCtx k2 = {.gemm = &g, .nthreads = nt};
            k2.scratch_floats = kern_scratch_floats(T, 7, 64, nt);
            k2.scratch = check_falloc((int64_t)k2.scratch_floats);
            char label[64];
            snprintf(label, sizeof label, "T=300 H=7 KV=1 D=64 docs nthreads=%d", nt);
            test_fast_attention(ref, fast, &k2, pos, T, 7, 1, 64, label);
            snprintf(label, sizeof label, "T=300 H=5 KV=5 D=32 docs nthreads=%d", nt);
            test_fast_attention(ref, fast, &k2, pos, T, 5, 5, 32, label);
            free(k2.scratch);
        }
        CHECK_TRUE(openblas_get_num_threads() == blas_threads,
                   "fast attention must restore OpenBLAS's thread count (%d, was %d)",
                   openblas_get_num_threads(), blas_threads);
    }
    test_ce(ref, 9, 70, 33);
    test_ce(fast, 9, 70, 33);
    test_ce(fast, 6, 5003, 2500);
    test_fast_ce(ref, fast, 37, 70, 0);
    test_fast_ce(ref, fast, 13, 32003, 1000);
    test_fast_embed(ref, fast);

    test_rope_tables();
    test_doc_starts();

    mem_free(&mem, MEM_ACTIVATION, kc.scratch, kc.scratch_floats * sizeof(float));
    gemm_free(&g, &mem);
    return check_finish();
}
