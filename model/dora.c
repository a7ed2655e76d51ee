/* DoRA (Liu et al. 2024, "DoRA: Weight-Decomposed Low-Rank Adaptation") as PEFT implements
 * it (src/peft/tuners/lora/dora.py DoraLinearLayer.forward, lora/layer.py Linear.forward):
 *
 *   y = W x + b + (m/n - 1) ⊙ (W x') + (m/n) ⊙ s B A x',   n_o = ||W_o + s B_o A|| (input dim.)
 *
 * with x' = x at lora_dropout 0 and in evaluation (PEFT passes the base layer's output as
 * base_result, so y = (m/n) ⊙ (W x + s B A x) + b), and x' = dropout(x) when training with
 * lora_dropout > 0 (PEFT calls the DoRA layer on dropout(x) with base_result None, so it
 * recomputes W x' on the dropped-out input while the base layer keeps W x). m [out] is
 * trained, initialised to n at init (PEFT update_layer: ||W_o|| while B = 0), and n is a
 * constant in backward (PEFT: weight_norm.detach(), the paper's section 4.3). A and B are
 * LoRA's (model/lora.c: same init, same dropout masks, same tensor-parallel split; this file
 * calls adapter_lora's declare/init/alloc/release and, without dropout, backward; forward
 * does LoRA's two GEMMs itself, into u instead of Y).
 *
 * Zero rows: PEFT divides by n without an epsilon (an all-zero row of W gives 0/0 = NaN);
 * here n is clamped to DORA_EPS (as torch.nn.functional.normalize does), so such a row has
 * m = 0, factor 0, output bias only and zero gradients, and stays so.
 *
 * The norms, without materialising W + sBA (DESIGN.md §4), once per optimizer step
 * (step_begin, after the update):
 *   n_o² = ||W_o||² + 2 s B_o·(A W_o^T) + s² B_o (A A^T) B_o^T
 * ||W_o||² once at init; A W^T [r, no] is one GEMM per row block of the local W shard,
 * A A^T [r, r] and (A A^T) B^T [r, no] small ones. Column-parallel: all local. Row-parallel
 * (o_proj, down_proj): W_t, A_t are column slices, so ||W_o||², A W^T and A A^T are partial
 * sums over TP and so is the whole right-hand side (B is replicated): one all-reduce of an
 * [no] vector over tp_comm per step (and one at init for ||W_o||²).
 *
 * f = m / n. Two forms, chosen in step_begin from env->training (eval and generation call it
 * with training 0) and checked in forward / backward:
 *
 * No dropout (lora_dropout 0, or evaluation): the base path is scaled. lin_forward multiplies
 * X W^T by out_scale = f and lin_backward multiplies dY by it for dX = (f ⊙ dY) W (adapter.h
 * out_scale). forward adds f ⊙ s h B^T and saves u = X W^T + s h B^T [N, no] (unscaled):
 *   dm_o += Σ_n dY_n,o u_n,o / n_o;   dA, dB, dX(LoRA part) = LoRA's backward of f ⊙ dY.
 * X W^T is recovered from lin_forward's f ⊙ X W^T + bias by dividing by f; rows with a small
 * |f| (e.g. m = 0) are recomputed from their row of W instead.
 *
 * Dropout (training, lora_dropout > 0), PEFT's form: out_scale is NULL, so the base path is
 * plain X W^T + bias (and dY W in backward); with Xd = dropout(X) (LoRA's keyed masks),
 *   u = Xd W^T + s h B^T (h = Xd A^T),   Y += (f - 1) ⊙ u + s h B^T
 *     (= (f - 1) ⊙ Xd W^T + f ⊙ s h B^T; a second GEMM with W),
 *   dm_o += Σ_n dY_n,o u_n,o / n_o;   g = f ⊙ dY: dB += s g^T h, dh = s g B, dA += dh^T Xd,
 *   dX += dropout'(((f - 1) ⊙ dY) W + dh A)   (a second GEMM with W).
 *
 * Tensor parallelism: for row-parallel layers u (X_t W_t^T, Xd_t W_t^T and s h_t B^T) is a
 * TP partial sum added into Y before the caller's all-reduce, like the base output, and dm
 * is linear in u, so each TP rank's dm is a partial sum that the gradient sync adds up: m
 * has B's sync class (replicated on every TP rank -> PARAM_SYNC_WORLD, as B of row layers).
 * No extra per-token collective. Likewise for k/v rows replicated when kv-heads < tp
 * (PARAM_SYNC_KV, as B). dX of a row layer is local; of a column layer a partial sum that
 * rides lin_backward's all-reduce.
 *
 * Legend: N rows (tokens), r rank, no / ni local out / in, CH rows per chunk of A W^T. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/err.h"
#include "adapter.h"
#include "adapter_io.h"
#include "lora.h"

#define DORA_EPS 1e-12f        /* floor of n (zero rows of W); tests/reference/dora_check.py */
#define DORA_CHUNK 512         /* output rows per A W^T GEMM in step_begin */
#define DORA_RECOVER_MIN 1e-2f /* |f| below which u's base part is recomputed, not divided out */

/* Per-slot state (s->ext), allocated in declare, freed by destroy. */
typedef struct {
    int pM;   /* ParamTable index of m (lora_magnitude_vector) */
    int drop; /* step_begin saw training with lora_dropout > 0: PEFT's dropout form */
    int64_t no, ni, r;
    double *wsq;    /* [no] ||W_o||² (summed over TP for row layers) */
    double *acc;    /* [no] scratch: n² partial sums (step_begin), dm sums (backward) */
    float *nrm;     /* [no] max(n, DORA_EPS), detached */
    float *fac;     /* [no] f = m / nrm: out_scale */
    float *div;     /* [no] f, or 1 for rows whose X W^T is recomputed (forward) */
    float *rec;     /* [no] 1 where X W^T is recovered by dividing by f, else 0 */
    int64_t *small; /* [no] the rows with |f| < DORA_RECOVER_MIN, nsmall of them */
    int64_t nsmall;
    float *zero; /* [no] zeros: the bias of a linear without one (or not adding it) */
    float *aw;   /* [r, CH] a chunk of A W^T, then 2 A W^T + s (A A^T) B^T */
    float *aa;   /* [r, r] A A^T */
    float *wrow; /* [ni] one row of W in F32 (BF16 weights) */
    /* activations (alloc / release) */
    float *u;     /* [N, no] X W^T + s h B^T (Xd W^T + s h B^T with dropout), for dm */
    int64_t rows; /* N the activations are sized for */
} DoraState;

static DoraState *dora_state(const AdapterSlot *s) {
    return (DoraState *)s->ext;
}

static int dora_is_row(const AdapterSlot *s) {
    return s->shard.kind == SHARD_ROW && s->tp > 1;
}

/* PEFT's dropout form is in use for this forward / backward (and step_begin agreed). */
static int dora_drop(const AdapterSlot *s, const AdapterEnv *env) {
    const int drop = s->cfg->dropout > 0 && env->training;
    SL_CHECK(drop == dora_state(s)->drop,
             "DoRA %s layer %d: dropout form %d here, %d at step_begin",
             adapter_module_name(s->module), s->layer, drop, dora_state(s)->drop);
    return drop;
}

/* Row o of this rank's W shard as F32 (a pointer into W, or converted into d->wrow). */
static const float *dora_w_row(const AdapterSlot *s, int64_t o) {
    const GemmWeight *w = &s->lin->w;
    if (w->dtype == GEMM_F32) return (const float *)w->data + o * w->ld;
    DoraState *d = dora_state(s);
    gemm_weight_rows_f32(w, o, o + 1, d->wrow, d->ni);
    return d->wrow;
}

static void *dora_calloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size);
    SL_CHECK(p, "DoRA: out of memory (%zu x %zu bytes)", n, size);
    return p;
}

static void dora_declare(AdapterSlot *s, ParamTable *pt) {
    adapter_lora.declare(s, pt);
    char pre[160], name[192];
    const ShardDesc *sd = &s->shard;
    adapter_peft_prefix(pre, sizeof pre, s->layer, s->module);
    snprintf(name, sizeof name, "%s.lora_magnitude_vector", pre);
    DoraState *d = dora_calloc(1, sizeof *d);
    /* m [out] follows the output rows like B, with B's copies and sync class */
    d->pM = params_add(pt, name, 1, 1, sd->out, 0, 1, sd->o0, sd->no,
                       adapter_sync_class(s->out_copies, s->tp), s->out_copies, s->layer);
    d->no = sd->no;
    d->ni = sd->ni;
    d->r = s->r;
    const size_t no = (size_t)d->no;
    d->wsq = dora_calloc(no, sizeof *d->wsq);
    d->acc = dora_calloc(no, sizeof *d->acc);
    d->nrm = dora_calloc(no, sizeof *d->nrm);
    d->fac = dora_calloc(no, sizeof *d->fac);
    d->div = dora_calloc(no, sizeof *d->div);
    d->rec = dora_calloc(no, sizeof *d->rec);
    d->small = dora_calloc(no, sizeof *d->small);
    d->zero = dora_calloc(no, sizeof *d->zero);
    d->aw = dora_calloc((size_t)(d->r * DORA_CHUNK), sizeof *d->aw);
    d->aa = dora_calloc((size_t)(d->r * d->r), sizeof *d->aa);
    d->wrow = dora_calloc((size_t)d->ni, sizeof *d->wrow);
    s->ext = d;
}

static void dora_destroy(AdapterSlot *s) {
    DoraState *d = dora_state(s);
    if (!d) return;
    free(d->wsq);
    free(d->acc);
    free(d->nrm);
    free(d->fac);
    free(d->div);
    free(d->rec);
    free(d->small);
    free(d->zero);
    free(d->aw);
    free(d->aa);
    free(d->wrow);
    free(d);
    s->ext = NULL;
}

/* nrm, fac and the recovery tables from n² in d->acc (after any all-reduce) and the
 * current m. */
static void dora_set_factors(AdapterSlot *s) {
    DoraState *d = dora_state(s);
    const float *M = params_value(s->params, d->pM);
    d->nsmall = 0;
    for (int64_t o = 0; o < d->no; o++) {
        const double n2 = d->acc[o] > 0.0 ? d->acc[o] : 0.0; /* rounding can make it < 0 */
        const float n = (float)sqrt(n2);
        d->nrm[o] = n > DORA_EPS ? n : DORA_EPS;
        const float f = M[o] / d->nrm[o];
        const int ok = fabsf(f) >= DORA_RECOVER_MIN;
        d->fac[o] = f;
        d->div[o] = ok ? f : 1.0f;
        d->rec[o] = ok ? 1.0f : 0.0f;
        if (!ok) d->small[d->nsmall++] = o;
    }
}

/* d->acc = n² - ||W_o||² = Σ_k B_o,k (2 (A W_o^T)_k + s ((A A^T) B_o^T)_k) · s over this
 * rank's shard (a TP partial sum for row layers). g may be any valid GemmCtx (BF16 tiles use
 * its scratch); NULL: row by row from d->wrow (init, where no context exists). */
static void dora_lora_terms(AdapterSlot *s, GemmCtx *g) {
    DoraState *d = dora_state(s);
    const int64_t r = d->r, ni = d->ni, no = d->no;
    const float *A = params_value(s->params, s->pA); /* [r, ni] */
    const float *B = params_value(s->params, s->pB); /* [no, r] */
    const float sc = s->scale;
    GemmCtx g0;
    memset(&g0, 0, sizeof g0);
    GemmCtx *gc = g ? g : &g0;
    gemm_f32(gc, 0, 1, r, r, ni, 1.0f, A, ni, A, ni, 0.0f, d->aa, r);
    for (int64_t c0 = 0; c0 < no; c0 += DORA_CHUNK) {
        const int64_t nc = no - c0 < DORA_CHUNK ? no - c0 : DORA_CHUNK;
        const float *Bc = B + c0 * r; /* [nc, r] */
        if (g) {
            /* aw [r, nc] = A W[c0:c0+nc]^T: one GEMM over a row block of the shard */
            GemmWeight blk = gemm_weight_block(&s->lin->w, c0, nc);
            gemm_xwt(g, d->aw, A, &blk, r, 0.0f);
        } else {
            for (int64_t j = 0; j < nc; j++) /* column j of aw: A w_o, ldc = nc */
                gemm_f32(&g0, 0, 1, r, 1, ni, 1.0f, A, ni, dora_w_row(s, c0 + j), ni, 0.0f,
                         d->aw + j, nc);
        }
        /* aw = 2 A W^T + s (A A^T) B_c^T [r, nc] (A A^T symmetric) */
        gemm_f32(gc, 0, 1, r, nc, r, sc, d->aa, r, Bc, r, 2.0f, d->aw, nc);
        double *acc = d->acc + c0;
        for (int64_t j = 0; j < nc; j++)
            acc[j] = 0.0;
        for (int64_t k = 0; k < r; k++) {
            const float *t = d->aw + k * nc;
            for (int64_t j = 0; j < nc; j++)
                acc[j] += (double)Bc[j * r + k] * t[j];
        }
        for (int64_t j = 0; j < nc; j++)
            acc[j] *= sc;
    }
}

/* n² into d->acc (all-reduced over TP for row layers), then nrm and fac. Collective over
 * tp_comm for row layers. */
static void dora_norms(AdapterSlot *s, GemmCtx *g, int b_is_zero) {
    DoraState *d = dora_state(s);
    if (b_is_zero)
        memset(d->acc, 0, (size_t)d->no * sizeof *d->acc);
    else
        dora_lora_terms(s, g);
    if (dora_is_row(s)) /* [no] doubles over the TP group, once per step */
        grid_allreduce_sum_f64(s->grid, s->grid->tp_comm, d->acc, (size_t)d->no, GRID_BYTES_OTHER);
    for (int64_t o = 0; o < d->no; o++)
        d->acc[o] += d->wsq[o];
    dora_set_factors(s);
}

static void dora_init(AdapterSlot *s, ParamTable *pt) {
    adapter_lora.init(s, pt); /* A, B (PiSSA may also rewrite the W shard: done before ||W||) */
    DoraState *d = dora_state(s);
    for (int64_t o = 0; o < d->no; o++) {
        const float *w = dora_w_row(s, o);
        double ss = 0.0;
        for (int64_t i = 0; i < d->ni; i++)
            ss += (double)w[i] * w[i];
        d->wsq[o] = ss;
    }
    if (dora_is_row(s))
        grid_allreduce_sum_f64(s->grid, s->grid->tp_comm, d->wsq, (size_t)d->no, GRID_BYTES_OTHER);
    const float *B = params_value(pt, s->pB);
    int bz = 1;
    for (size_t i = 0; i < params_numel(&pt->e[s->pB]); i++)
        bz &= B[i] == 0.0f;
    /* m = ||W_o + s B_o A|| (PEFT update_layer); B = 0 in every init but PiSSA's. */
    dora_norms(s, NULL, bz);
    float *M = params_value(pt, d->pM);
    for (int64_t o = 0; o < d->no; o++)
        M[o] = (float)sqrt(d->acc[o] > 0.0 ? d->acc[o] : 0.0);
    dora_set_factors(s);
}

static void dora_step_begin(AdapterSlot *s, const AdapterEnv *env) {
    dora_state(s)->drop = s->cfg->dropout > 0 && env->training;
    dora_norms(s, env->gemm, 0);
}

/* f on the base path, or NULL (1) in PEFT's dropout form, whose base path is plain W x. */
static const float *dora_out_scale(const AdapterSlot *s) {
    const DoraState *d = dora_state(s);
    return d->drop ? NULL : d->fac;
}

static void dora_alloc(AdapterSlot *s, MemCtx *m, int64_t max_rows) {
    adapter_lora.alloc(s, m, max_rows); /* h, dh; xd and tmp [N, ni] with dropout */
    DoraState *d = dora_state(s);
    const size_t bytes = (size_t)max_rows * (size_t)d->no * sizeof(float);
    d->u = mem_alloc(m, MEM_ACTIVATION, bytes);
    s->dys = mem_alloc(m, MEM_ACTIVATION, bytes);
    d->rows = max_rows;
}

static void dora_release(AdapterSlot *s, MemCtx *m) {
    DoraState *d = dora_state(s);
    const size_t bytes = (size_t)d->rows * (size_t)d->no * sizeof(float);
    mem_free(m, MEM_ACTIVATION, d->u, bytes);
    mem_free(m, MEM_ACTIVATION, s->dys, bytes);
    d->u = s->dys = NULL;
    d->rows = 0;
    adapter_lora.release(s, m);
}

/* LoRA's saves (h, Xd with dropout) and u [N, no], which backward reads. */
static int dora_saves(AdapterSlot *s, AdapterSave *out) {
    const int n = adapter_lora_saves(s, out);
    out[n] = (AdapterSave){&dora_state(s)->u, dora_state(s)->no};
    return n + 1;
}

/* LoRA's buffers and dys (adapter_lora.share), and u. */
static void dora_share(AdapterSlot *s, const AdapterSlot *owner) {
    adapter_lora.share(s, owner);
    DoraState *d = dora_state(s);
    d->u = owner ? dora_state(owner)->u : NULL;
    d->rows = owner ? dora_state(owner)->rows : 0;
}

/* Y [N, no] is lin_forward's output: f ⊙ X W^T + bias, or X W^T + bias in the dropout form.
 * Saves h = Xd A^T [N, r] (a TP partial sum for row layers), Xd with dropout, and u. */
static void dora_forward(AdapterSlot *s, const AdapterEnv *env, float *Y, const float *X,
                         int64_t N) {
    DoraState *d = dora_state(s);
    SL_CHECK(N <= d->rows, "DoRA forward: %lld rows > %lld", (long long)N, (long long)d->rows);
    const int64_t no = d->no, ni = d->ni, r = d->r;
    const Linear *lin = s->lin;
    const int drop = dora_drop(s, env);
    const float *A = params_value(s->params, s->pA); /* [r, ni] */
    const float *B = params_value(s->params, s->pB); /* [no, r] */
    const float *f = d->fac;
    const float *Xd = X;
    if (drop) {
        adapter_dropout_forward(s, env, s->xd, X, N);
        Xd = s->xd;
    }
    /* LoRA's GEMMs (model/lora.c lora_forward) into u, not Y: h = Xd A^T, u = s h B^T */
    gemm_f32(env->gemm, 0, 1, N, r, ni, 1.0f, Xd, ni, A, ni, 0.0f, s->h, r);
    gemm_f32(env->gemm, 0, 1, N, no, r, s->scale, s->h, r, B, r, 0.0f, d->u, no);
    if (drop) {
        /* Y += s h B^T; u += Xd W^T (a TP partial sum for row layers); Y += (f - 1) ⊙ u */
        for (int64_t n = 0; n < N; n++) {
            float *y = Y + n * no;
            const float *u = d->u + n * no;
            for (int64_t o = 0; o < no; o++)
                y[o] += u[o];
        }
        gemm_xwt(env->gemm, d->u, Xd, &lin->w, N, 1.0f);
        for (int64_t n = 0; n < N; n++) {
            float *y = Y + n * no;
            const float *u = d->u + n * no;
            for (int64_t o = 0; o < no; o++)
                y[o] += (f[o] - 1.0f) * u[o];
        }
        return;
    }
    /* u += X W^T = (Y - bias) / f where |f| is not small (rec 1, div f), Y += f ⊙ s h B^T:
     * one row-major pass over Y and u */
    const float *b = lin->bias && lin->add_bias ? lin->bias : d->zero;
    const float *dv = d->div, *rc = d->rec;
    for (int64_t n = 0; n < N; n++) {
        float *y = Y + n * no, *u = d->u + n * no;
        for (int64_t o = 0; o < no; o++) {
            const float lo = u[o];
            u[o] = lo + rc[o] * ((y[o] - b[o]) / dv[o]);
            y[o] += f[o] * lo;
        }
    }
    for (int64_t k = 0; k < d->nsmall; k++) { /* |f| small or 0: X W_o^T from the row itself */
        const int64_t o = d->small[k];
        const float *w = dora_w_row(s, o);
        for (int64_t n = 0; n < N; n++) {
            const float *x = X + n * ni;
            double t = 0.0;
            for (int64_t i = 0; i < ni; i++)
                t += (double)x[i] * w[i];
            d->u[n * no + o] += (float)t;
        }
    }
}

/* dY [N, no] is the layer's output gradient. Without dropout lin_backward has already done
 * dX += (f ⊙ dY) W and left g = f ⊙ dY in s->dys (adapter.h); in the dropout form it did
 * dX += dY W. */
static void dora_backward(AdapterSlot *s, const AdapterEnv *env, float *dX, const float *dY,
                          const float *X, int64_t N) {
    DoraState *d = dora_state(s);
    const int64_t no = d->no, ni = d->ni, r = d->r;
    const int drop = dora_drop(s, env);
    float *dM = params_grad(s->params, d->pM); /* [no] */
    /* dm_o += Σ_n dY_n,o u_n,o / n_o (n detached) */
    memset(d->acc, 0, (size_t)no * sizeof *d->acc);
    for (int64_t n = 0; n < N; n++) {
        const float *dy = dY + n * no, *u = d->u + n * no;
        for (int64_t o = 0; o < no; o++)
            d->acc[o] += (double)dy[o] * u[o];
    }
    for (int64_t o = 0; o < no; o++)
        dM[o] += (float)(d->acc[o] / d->nrm[o]);
    if (!drop) { /* dA, dB, dX += (s g B) A: LoRA's backward of g */
        adapter_lora.backward(s, env, dX, s->dys, X, N);
        return;
    }
    /* PEFT's dropout form: g = f ⊙ dY; LoRA's GEMMs on g (model/lora.c lora_backward), then
     * dX += dropout'(((f - 1) ⊙ dY) W + dh A) with one mask pass */
    const float *A = params_value(s->params, s->pA); /* [r, ni] */
    const float *B = params_value(s->params, s->pB); /* [no, r] */
    float *dA = params_grad(s->params, s->pA);
    float *dB = params_grad(s->params, s->pB);
    for (int64_t n = 0; n < N; n++) {
        const float *dy = dY + n * no;
        float *g = s->dys + n * no;
        for (int64_t o = 0; o < no; o++)
            g[o] = d->fac[o] * dy[o];
    }
    gemm_f32(env->gemm, 1, 0, no, r, N, s->scale, s->dys, no, s->h, r, 1.0f, dB, r);
    gemm_f32(env->gemm, 0, 0, N, r, no, s->scale, s->dys, no, B, r, 0.0f, s->dh, r);
    gemm_f32(env->gemm, 1, 0, r, ni, N, 1.0f, s->dh, r, s->xd, ni, 1.0f, dA, ni);
    for (int64_t n = 0; n < N; n++) {
        const float *dy = dY + n * no;
        float *g = s->dys + n * no;
        for (int64_t o = 0; o < no; o++)
            g[o] = (d->fac[o] - 1.0f) * dy[o];
    }
    gemm_xw(env->gemm, s->tmp, s->dys, &s->lin->w, N, 0.0f);
    gemm_f32(env->gemm, 0, 0, N, ni, r, 1.0f, s->dh, r, A, ni, 1.0f, s->tmp, ni);
    adapter_dropout_backward(s, env, dX, s->tmp, X, s->xd, N);
}

/* ---- merging: PEFT's merge (peft/tuners/lora/layer.py Linear.merge with DoRA; the norm from
 * peft/tuners/lora/dora.py DoraLinearLayer.get_weight_norm):
 *   W' = W + s B A (lora_merge_rows);  W'_o <- (m_o / ||W'_o||) W'_o
 * (dora_factor = m / ||W + delta||_row; dora_factor.view(-1, 1) * (W + delta)), the norm of
 * the merged row itself, so generate --merge-in-memory and `shardlora merge` use one
 * formula. */

/* ss [nr] = ||W_o||² of each row of W [nr, I] in double, in column order. */
static void dora_row_sumsq(double *ss, const float *W, int64_t nr, int64_t I, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t o = 0; o < nr; o++) {
        const float *w = W + o * I;
        double acc = 0.0;
        for (int64_t j = 0; j < I; j++)
            acc += (double)w[j] * (double)w[j];
        ss[o] = acc;
    }
}

/* W_o *= m_o / ||W_o|| on the rows of W [nr, I], mag [nr]; ss [nr] the rows' squared norms
 * (summed over TP for row-parallel shards), or NULL to compute them here, row by row. The
 * norm is floored at DORA_EPS as in training, so an all-zero row (real models have them)
 * stays 0 instead of PEFT's 0/0 = NaN. Returns the rows with a non-finite norm or value. */
static int64_t dora_scale_rows(float *W, int64_t nr, int64_t I, const float *mag, const double *ss,
                               int threads) {
    int64_t bad = 0;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : bad)
    for (int64_t o = 0; o < nr; o++) {
        float *w = W + o * I;
        double sq = 0.0;
        if (ss) {
            sq = ss[o];
        } else {
            for (int64_t j = 0; j < I; j++)
                sq += (double)w[j] * (double)w[j];
        }
        const float norm = (float)sqrt(sq);
        if (!isfinite(norm)) {
            bad++;
            continue;
        }
        const float f = mag[o] / (norm > DORA_EPS ? norm : DORA_EPS);
        int row_bad = 0;
        for (int64_t j = 0; j < I; j++)
            w[j] *= f;
        for (int64_t j = 0; j < I; j++)
            row_bad |= !isfinite(w[j]);
        bad += row_bad;
    }
    return bad;
}

/* generate --merge-in-memory on rows [r0, r0 + nr) of the shard. Row-parallel shards hold a
 * column slice of each row: the squared norms are summed over the TP group (collective over
 * tp_comm, [nr] doubles; every TP rank merges the same blocks). */
static void dora_merge(const AdapterSlot *s, const AdapterEnv *env, float *W, int64_t r0,
                       int64_t nr) {
    DoraState *d = dora_state(s);
    const int64_t r = d->r, ni = d->ni;
    const int threads = env->gemm && env->gemm->nthreads > 0 ? env->gemm->nthreads : 1;
    const float *A = params_value(s->params, s->pA); /* [r, ni] */
    const float *B = params_value(s->params, s->pB); /* [no, r] */
    const float *M = params_value(s->params, d->pM); /* [no] */
    lora_merge_rows(W, nr, ni, A, B + r0 * r, (int)r, s->scale, threads);
    if (!dora_is_row(s)) {
        dora_scale_rows(W, nr, ni, M + r0, NULL, threads);
        return;
    }
    dora_row_sumsq(d->acc, W, nr, ni, threads); /* acc [no] is free outside step_begin */
    grid_allreduce_sum_f64(s->grid, s->grid->tp_comm, d->acc, (size_t)nr, GRID_BYTES_OTHER);
    dora_scale_rows(W, nr, ni, M + r0, d->acc, threads);
}

static double dora_flops_per_token(const AdapterSlot *s) {
    /* LoRA's GEMMs + u, f ⊙ s h B^T, f ⊙ dY and dm: about 6 flops per output; with dropout
     * in training also Xd W^T and ((f - 1) ⊙ dY) W, 4 flops per weight (not counted here:
     * the MFU is of the model's useful work) */
    return adapter_lora.flops_per_token(s) + 6.0 * (double)s->shard.out;
}

/* ---- PEFT keys (AdioKindIo) ---------------------------------------------------------
 * PEFT (peft/tuners/lora/layer.py, lora_magnitude_vector; utils/save_and_load.py) stores a
 * module's magnitude as `<prefix>.lora_magnitude_vector`, F32 [out] (1-D, no `.weight`),
 * next to lora_A / lora_B, and writes use_dora true in adapter_config.json. The table keeps
 * m as a 1-D entry [1, out]; adapter_io reads it back as such (the import selects this kind
 * when use_dora is true and asks dora_import_key about the extra key). The checkpoint's
 * adapter JSON keeps "kind": "dora" from the common fields, and LoRA's settings (LoRA+)
 * through adapter_lora's cfg_json. */

static const char dora_mag_suffix[] = ".lora_magnitude_vector";

static void dora_peft_config(const AdioCfg *c, PeftConfig *pc) {
    (void)c;
    pc->use_dora = 1;
}

static int dora_import_key(const AdioCfg *c, const char *suffix) {
    (void)c;
    return strcmp(suffix, dora_mag_suffix) == 0;
}

/* The tensor named exactly `name`, or NULL. */
static const AdioTensor *dora_find(const AdioTensor *t, int n, const char *name) {
    for (int k = 0; k < n; k++)
        if (strcmp(t[k].name, name) == 0) return &t[k];
    return NULL;
}

/* Every slot of c has lora_A [r, in], lora_B [out, r] and lora_magnitude_vector [1, out]
 * (or already 1-D) and nothing else is there; the magnitudes leave as 1-D [out]. */
static int dora_export_tensors(const AdioCfg *c, const AdioTensor *t, int n, AdioTensor **out,
                               int *nout, void **keep, ErrStatus *st) {
    *keep = NULL;
    AdioTensor *o = malloc((size_t)(n > 0 ? n : 1) * sizeof *o);
    SL_CHECK(o, "out of memory");
    memcpy(o, t, (size_t)n * sizeof *o);
    int64_t want = 0;
    char pre[160], name[192];
    for (int64_t l = 0; l < c->L; l++)
        for (int i = 0; i < MOD_NMODULES; i++) {
            int r = 0;
            double alpha = 0.0;
            adio_cfg_slot(c, l, i, &r, &alpha);
            if (r == 0) continue;
            want += 3;
            adapter_peft_prefix(pre, sizeof pre, (int)l, (ModuleId)i);
            snprintf(name, sizeof name, "%s.lora_A.weight", pre);
            const AdioTensor *a = dora_find(t, n, name);
            snprintf(name, sizeof name, "%s.lora_B.weight", pre);
            const AdioTensor *b = dora_find(t, n, name);
            snprintf(name, sizeof name, "%s%s", pre, dora_mag_suffix);
            const AdioTensor *m = dora_find(t, n, name);
            const char *bad = !a   ? "lora_A.weight"
                              : !b ? "lora_B.weight"
                              : !m ? dora_mag_suffix + 1
                                   : NULL;
            if (bad) {
                free(o);
                return err_status_set(st, "export: DoRA adapter without %s.%s", pre, bad);
            }
            if (a->rows != r || b->cols != r || (m->rows != 1 && m->rows != 0) ||
                m->cols != b->rows) {
                free(o);
                return err_status_set(
                    st,
                    "export: DoRA module %s: lora_A [%lld, %lld], lora_B [%lld, %lld], "
                    "magnitude [%lld] do not match r = %d",
                    pre, (long long)a->rows, (long long)a->cols, (long long)b->rows,
                    (long long)b->cols, (long long)m->cols, r);
            }
            o[m - t].rows = 0; /* 1-D [out] */
        }
    if (want != n) {
        free(o);
        return err_status_set(st, "export: %d tensors for a DoRA adapter configuration with %lld",
                              n, (long long)want);
    }
    *out = o;
    *nout = n;
    return 1;
}

/* `shardlora merge`: LoRA's planning with the magnitude required; rows as dora_merge with
 * whole rows (ibuf = lora_A [r, cols]; rbuf = lora_B rows [k, r], then m [k]). */
static int dora_merge_plan(AdioMergeItem *it, const PeftAdapter *a, unsigned char *used,
                           ErrStatus *st) {
    return lora_merge_plan_factors(it, a, used, 1, st);
}

static int64_t dora_merge_stream(const AdioMergeItem *it, PeftAdapter *a, const void *shared,
                                 const float *ibuf, float *rbuf, float *W, int64_t row0, int64_t k,
                                 int threads, ErrStatus *st) {
    (void)shared;
    float *B = rbuf, *mag = rbuf + k * it->r;
    if (!lora_merge_read_b(it, a, B, row0, k, st) ||
        !st_read_slice(&a->tensors, it->t[2], 0, 1, row0, k, ST_F32, mag, st))
        return -1;
    lora_merge_rows(W, k, it->cols, ibuf, B, it->r, it->scale, threads);
    return dora_scale_rows(W, k, it->cols, mag, NULL, threads);
}

/* DoRA's factors are LoRA's: LoRA+ (its setting and checkpoint JSON) comes from adapter_lora. */
static int dora_set_option(AdapterOpts *o, const char *key, double value) {
    return adapter_lora.set_option(o, key, value);
}

static void dora_cfg_json(const AdapterCfg *c, char *buf, size_t n) {
    adapter_lora.io->cfg_json(c, buf, n);
}

static int dora_cfg_from_json(AdapterCfg *c, const struct json_t *root, ErrStatus *st) {
    return adapter_lora.io->cfg_from_json(c, root, st);
}

static const AdioKindIo dora_io = {
    .cfg_json = dora_cfg_json,
    .cfg_from_json = dora_cfg_from_json,
    .peft_config = dora_peft_config,
    .export_tensors = dora_export_tensors,
    .import_key = dora_import_key,
    .merge_help = "m ⊙ (W + s·B A) / ||W + s·B A|| (norm per output row)",
    .merge_plan = dora_merge_plan,
    .merge_begin = lora_merge_begin,
    .merge_rows = dora_merge_stream,
};

const AdapterKind adapter_dora = {
    .name = "dora",
    .title = "DoRA",
    .declare = dora_declare,
    .init = dora_init,
    .alloc = dora_alloc,
    .release = dora_release,
    .forward = dora_forward,
    .backward = dora_backward,
    .flops_per_token = dora_flops_per_token,
    .peft_type = "LORA",
    .set_option = dora_set_option,
    .out_scale = dora_out_scale,
    .step_begin = dora_step_begin,
    .merge = dora_merge,
    .io = &dora_io,
    .destroy = dora_destroy,
    .share = dora_share,
    .saves = dora_saves,
};
