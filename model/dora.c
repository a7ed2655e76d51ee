/* DoRA (Liu et al. 2024, "DoRA: Weight-Decomposed Low-Rank Adaptation") as PEFT implements
 * it (src/peft/tuners/lora/dora.py DoraLinearLayer, lora/layer.py Linear.forward):
 *
 *   y = (m / n) ⊙ (W x + s B A dropout(x)) + bias,   n_o = ||W_o + s B_o A|| (input dimension)
 *
 * with the magnitude m [out] trained, initialised to n at init (PEFT _update_layer: ||W_o||
 * while B = 0), and n treated as a constant in backward (PEFT: weight_norm.detach(), the
 * paper's section 4.3). A and B are LoRA's (model/lora.c: same init, same dropout masks, same
 * tensor-parallel split; this file calls adapter_lora's functions for them).
 *
 * Dropout (lora_dropout > 0, training): PEFT also feeds dropout(x) to the base term of its
 * correction, y = W x + b + (m/n - 1) ⊙ W dropout(x) + (m/n) ⊙ s B A dropout(x), which costs a
 * second GEMM with W in forward and backward; shardlora keeps W x (DESIGN.md §4's formula,
 * identical to PEFT at dropout 0 and in evaluation). tests/reference/dora_check.py computes
 * either.
 *
 * Zero rows: PEFT divides by n without an epsilon (an all-zero row of W gives 0/0 = NaN);
 * here n is clamped to DORA_EPS (as torch.nn.functional.normalize does), so such a row has
 * m = 0, factor 0, output bias only and zero gradients, and stays so.
 *
 * The norms, without materialising W + sBA (DESIGN.md §4), once per optimizer step
 * (step_begin, after the update):
 *   n_o² = ||W_o||² + 2 s B_o·(A W_o^T) + s² B_o (A A^T) B_o^T
 * ||W_o||² once at init; A W^T [r, no] is one GEMM with the local W shard, A A^T [r, r] a
 * small one. Column-parallel: all local. Row-parallel (o_proj, down_proj): W_t, A_t are
 * column slices, so ||W_o||², A W^T and A A^T are partial sums over TP and so is the whole
 * right-hand side (B is replicated): one all-reduce of an [no] vector over tp_comm per step
 * (and one at init for ||W_o||²).
 *
 * The base path: lin_forward multiplies X W^T by out_scale = m/n before calling forward, and
 * lin_backward multiplies dY by it for dX = (f ⊙ dY) W (adapter.h out_scale). forward adds
 * f ⊙ s h B^T and saves u = X W^T + s h B^T [N, no] (unscaled), which dm needs:
 *   dm_o += Σ_t dY_t,o u_t,o / n_o;   dA, dB, dX(LoRA part) = LoRA's backward of f ⊙ dY.
 * Row-parallel layers: u is a TP partial sum (X_t W_t^T + s h_t B^T), and dm is linear in u,
 * so each TP rank's dm is a partial sum that the gradient sync adds up: m has B's sync class
 * (replicated on every TP rank -> PARAM_SYNC_WORLD, as B of row layers). No extra per-token
 * collective. Likewise for k/v rows replicated when kv-heads < tp (PARAM_SYNC_KV, as B).
 * X W^T is recovered from lin_forward's f ⊙ X W^T + bias by dividing by f; rows with a small
 * |f| (e.g. m = 0) are recomputed from their row of W instead.
 *
 * Legend: N rows (tokens), r rank, no / ni local out / in, CH rows per chunk of A W^T. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "../runtime/err.h"
#include "adapter.h"
#include "adapter_io.h"

#define DORA_EPS 1e-12f     /* floor of n (zero rows of W); tests/reference/dora_check.py */
#define DORA_CHUNK 256      /* output rows per A W^T GEMM in step_begin */
#define DORA_RECOVER_MIN 1e-2f /* |f| below which u's base part is recomputed, not divided out */

/* Per-slot state (s->ext), allocated in declare, kept for the model's lifetime. */
typedef struct {
    int pM;          /* ParamTable index of m (lora_magnitude_vector) */
    int64_t no, ni, r;
    double *wsq;     /* [no] ||W_o||² (summed over TP for row layers) */
    double *acc;     /* [no] scratch: n² partial sums (step_begin), dm sums (backward) */
    float *nrm;      /* [no] max(n, DORA_EPS), detached */
    float *fac;      /* [no] m / nrm: out_scale */
    float *aw;       /* [r, CH] a chunk of A W^T */
    float *aa;       /* [r, r] A A^T */
    float *wrow;     /* [ni] one row of W in F32 (BF16 weights) */
    /* activations (alloc / release) */
    float *u;        /* [N, no] X W^T + s h B^T, saved for dm */
    int64_t rows;    /* N the activations are sized for */
} DoraState;

static DoraState *dora_state(const AdapterSlot *s) {
    return (DoraState *)s->ext;
}

static int dora_is_row(const AdapterSlot *s) {
    return s->shard.kind == SHARD_ROW && s->tp > 1;
}

/* Row o of this rank's W shard as F32 (a pointer into W, or converted into d->wrow). */
static const float *dora_w_row(const AdapterSlot *s, int64_t o) {
    const GemmWeight *w = &s->lin->w;
    if (w->dtype == GEMM_F32) return (const float *)w->data + o * w->ld;
    DoraState *d = dora_state(s);
    const uint16_t *h = (const uint16_t *)w->data + o * w->ld;
    for (int64_t i = 0; i < d->ni; i++) d->wrow[i] = gemm_bf16_to_f32(h[i]);
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
    d->wsq = dora_calloc((size_t)d->no, sizeof *d->wsq);
    d->acc = dora_calloc((size_t)d->no, sizeof *d->acc);
    d->nrm = dora_calloc((size_t)d->no, sizeof *d->nrm);
    d->fac = dora_calloc((size_t)d->no, sizeof *d->fac);
    d->aw = dora_calloc((size_t)(d->r * DORA_CHUNK), sizeof *d->aw);
    d->aa = dora_calloc((size_t)(d->r * d->r), sizeof *d->aa);
    d->wrow = dora_calloc((size_t)d->ni, sizeof *d->wrow);
    s->ext = d;
}

/* nrm and fac from n² in d->acc (after any all-reduce) and the current m. */
static void dora_set_factors(AdapterSlot *s) {
    DoraState *d = dora_state(s);
    const float *M = params_value(s->params, d->pM);
    for (int64_t o = 0; o < d->no; o++) {
        const double n2 = d->acc[o] > 0.0 ? d->acc[o] : 0.0; /* rounding can make it < 0 */
        const float n = (float)sqrt(n2);
        d->nrm[o] = n > DORA_EPS ? n : DORA_EPS;
        d->fac[o] = M[o] / d->nrm[o];
    }
}

/* d->acc = n² - ||W_o||² = 2 s B_o·(A W_o^T) + s² B_o (A A^T) B_o^T over this rank's shard
 * (a TP partial sum for row layers). g may be any valid GemmCtx (BF16 tiles use its
 * scratch); NULL: row by row from d->wrow (init, where no context exists). */
static void dora_lora_terms(AdapterSlot *s, GemmCtx *g) {
    DoraState *d = dora_state(s);
    const int64_t r = d->r, ni = d->ni, no = d->no;
    const float *A = params_value(s->params, s->pA); /* [r, ni] */
    const float *B = params_value(s->params, s->pB); /* [no, r] */
    const double sc = s->scale;
    GemmCtx g0;
    memset(&g0, 0, sizeof g0);
    gemm_f32(g ? g : &g0, 0, 1, r, r, ni, 1.0f, A, ni, A, ni, 0.0f, d->aa, r);
    for (int64_t c0 = 0; c0 < no; c0 += DORA_CHUNK) {
        const int64_t nc = no - c0 < DORA_CHUNK ? no - c0 : DORA_CHUNK;
        if (g) {
            /* aw [r, nc] = A W[c0:c0+nc]^T: one GEMM over a row block of the shard */
            const GemmWeight *w = &s->lin->w;
            const size_t esz = w->dtype == GEMM_F32 ? sizeof(float) : sizeof(uint16_t);
            GemmWeight blk = {w->dtype, (const char *)w->data + (size_t)(c0 * w->ld) * esz, nc, ni, w->ld};
            gemm_xwt(g, d->aw, A, &blk, r, 0.0f);
        } else {
            for (int64_t j = 0; j < nc; j++) /* column j of aw: A w_o, ldc = nc */
                gemm_f32(&g0, 0, 1, r, 1, ni, 1.0f, A, ni, dora_w_row(s, c0 + j), ni, 0.0f, d->aw + j, nc);
        }
        for (int64_t j = 0; j < nc; j++) {
            const float *b = B + (c0 + j) * r;
            double cross = 0.0, quad = 0.0;
            for (int64_t k = 0; k < r; k++) {
                cross += (double)b[k] * d->aw[k * nc + j];
                double t = 0.0;
                for (int64_t l = 0; l < r; l++) t += (double)d->aa[k * r + l] * b[l];
                quad += (double)b[k] * t;
            }
            d->acc[c0 + j] = 2.0 * sc * cross + sc * sc * quad;
        }
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
        MPI_Allreduce(MPI_IN_PLACE, d->acc, (int)d->no, MPI_DOUBLE, MPI_SUM, s->tp_comm);
    for (int64_t o = 0; o < d->no; o++) d->acc[o] += d->wsq[o];
    dora_set_factors(s);
}

static void dora_init(AdapterSlot *s, ParamTable *pt) {
    adapter_lora.init(s, pt); /* A, B (PiSSA may also rewrite the W shard: done before ||W||) */
    DoraState *d = dora_state(s);
    for (int64_t o = 0; o < d->no; o++) {
        const float *w = dora_w_row(s, o);
        double ss = 0.0;
        for (int64_t i = 0; i < d->ni; i++) ss += (double)w[i] * w[i];
        d->wsq[o] = ss;
    }
    if (dora_is_row(s))
        MPI_Allreduce(MPI_IN_PLACE, d->wsq, (int)d->no, MPI_DOUBLE, MPI_SUM, s->tp_comm);
    const float *B = params_value(pt, s->pB);
    int bz = 1;
    for (size_t i = 0; i < params_numel(&pt->e[s->pB]); i++) bz &= B[i] == 0.0f;
    /* m = ||W_o + s B_o A|| (PEFT _update_layer); B = 0 in every init but PiSSA's. */
    dora_norms(s, NULL, bz);
    float *M = params_value(pt, d->pM);
    for (int64_t o = 0; o < d->no; o++) M[o] = (float)sqrt(d->acc[o] > 0.0 ? d->acc[o] : 0.0);
    dora_set_factors(s);
}

static void dora_step_begin(AdapterSlot *s, const AdapterEnv *env) {
    dora_norms(s, env->gemm, 0);
}

static const float *dora_out_scale(const AdapterSlot *s) {
    return dora_state(s)->fac;
}

static void dora_alloc(AdapterSlot *s, MemCtx *m, int64_t max_rows) {
    adapter_lora.alloc(s, m, max_rows);
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

static void dora_forward(AdapterSlot *s, const AdapterEnv *env, float *Y, const float *X,
                         int64_t N) {
    DoraState *d = dora_state(s);
    SL_CHECK(N <= d->rows, "DoRA forward: %lld rows > %lld", (long long)N, (long long)d->rows);
    const int64_t no = d->no, ni = d->ni;
    const Linear *lin = s->lin;
    const float *bias = lin->bias && lin->add_bias ? lin->bias : NULL;
    /* u = s h B^T (LoRA's forward into zeros; it saves h and the dropout input) */
    memset(d->u, 0, (size_t)(N * no) * sizeof(float));
    adapter_lora.forward(s, env, d->u, X, N);
    for (int64_t o = 0; o < no; o++) {
        const float f = d->fac[o], b = bias ? bias[o] : 0.0f;
        if (fabsf(f) >= DORA_RECOVER_MIN) {
            for (int64_t n = 0; n < N; n++) {
                float *y = Y + n * no + o, *u = d->u + n * no + o;
                const float lo = *u;
                *u += (*y - b) / f; /* X W^T = (f X W^T + bias - bias) / f */
                *y += f * lo;
            }
        } else { /* |f| small or 0: X W_o^T from the row itself */
            const float *w = dora_w_row(s, o);
            for (int64_t n = 0; n < N; n++) {
                const float *x = X + n * ni;
                double t = 0.0;
                for (int64_t i = 0; i < ni; i++) t += (double)x[i] * w[i];
                float *y = Y + n * no + o, *u = d->u + n * no + o;
                *y += f * *u;
                *u += (float)t;
            }
        }
    }
}

static void dora_backward(AdapterSlot *s, const AdapterEnv *env, float *dX, const float *dY,
                          const float *X, int64_t N) {
    DoraState *d = dora_state(s);
    const int64_t no = d->no;
    float *dM = params_grad(s->params, d->pM); /* [no] */
    /* dm_o += Σ_n dY_n,o u_n,o / n_o (n detached); dys = f ⊙ dY for LoRA's backward */
    memset(d->acc, 0, (size_t)no * sizeof *d->acc);
    for (int64_t n = 0; n < N; n++) {
        const float *dy = dY + n * no, *u = d->u + n * no;
        float *g = s->dys + n * no;
        for (int64_t o = 0; o < no; o++) {
            d->acc[o] += (double)dy[o] * u[o];
            g[o] = dy[o] * d->fac[o];
        }
    }
    for (int64_t o = 0; o < no; o++) dM[o] += (float)(d->acc[o] / d->nrm[o]);
    adapter_lora.backward(s, env, dX, s->dys, X, N);
}

/* generate --merge-in-memory: W' = f ⊙ (W + s B A) on rows [r0, r0 + nr) of the shard
 * (f from the last step_begin; row layers: n is the TP-global norm, so each column slice
 * scales alike). */
static void dora_merge(const AdapterSlot *s, float *W, int64_t r0, int64_t nr) {
    const DoraState *d = dora_state(s);
    const int64_t r = d->r, ni = d->ni;
    const float *A = params_value(s->params, s->pA);
    const float *B = params_value(s->params, s->pB);
    GemmCtx g0;
    memset(&g0, 0, sizeof g0);
    gemm_f32(&g0, 0, 0, nr, ni, r, s->scale, B + r0 * r, r, A, ni, 1.0f, W, ni);
    for (int64_t o = 0; o < nr; o++)
        for (int64_t i = 0; i < ni; i++) W[o * ni + i] *= d->fac[r0 + o];
}

static double dora_flops_per_token(const AdapterSlot *s) {
    /* LoRA's GEMMs + u, f ⊙ s h B^T, f ⊙ dY and dm: about 6 flops per output */
    return adapter_lora.flops_per_token(s) + 6.0 * (double)s->shard.out;
}

/* ---- PEFT keys (AdioKindIo) ---------------------------------------------------------
 * PEFT (peft/tuners/lora/layer.py, lora_magnitude_vector; utils/save_and_load.py) stores a
 * module's magnitude as `<prefix>.lora_magnitude_vector`, F32 [out] (1-D, no `.weight`),
 * next to lora_A / lora_B, and writes use_dora true in adapter_config.json. The table keeps
 * m as a 1-D entry [1, out]; adapter_io reads it back as such (the import selects this kind
 * when use_dora is true and asks dora_import_key about the extra key). The checkpoint's
 * adapter JSON keeps "kind": "dora" from the common fields, so no cfg_json is needed. */

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
static int dora_export_tensors(const AdioCfg *c, const AdioTensor *t, int n, AdioTensor **out, int *nout,
                               void **keep, ErrStatus *st) {
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
            const char *bad = !a ? "lora_A.weight" : !b ? "lora_B.weight" : !m ? dora_mag_suffix + 1 : NULL;
            if (bad) {
                free(o);
                return err_status_set(st, "export: DoRA adapter without %s.%s", pre, bad);
            }
            if (a->rows != r || b->cols != r || (m->rows != 1 && m->rows != 0) || m->cols != b->rows) {
                free(o);
                return err_status_set(st, "export: DoRA module %s: lora_A [%lld, %lld], lora_B [%lld, %lld], "
                                          "magnitude [%lld] do not match r = %d", pre, (long long)a->rows,
                                      (long long)a->cols, (long long)b->rows, (long long)b->cols,
                                      (long long)m->cols, r);
            }
            o[m - t].rows = 0; /* 1-D [out] */
        }
    if (want != n) {
        free(o);
        return err_status_set(st, "export: %d tensors for a DoRA adapter configuration with %lld", n,
                              (long long)want);
    }
    *out = o;
    *nout = n;
    return 1;
}

static const AdioKindIo dora_io = {
    .peft_config = dora_peft_config,
    .export_tensors = dora_export_tensors,
    .import_key = dora_import_key,
};

const AdapterKind adapter_dora = {
    .name = "dora",
    .declare = dora_declare,
    .init = dora_init,
    .alloc = dora_alloc,
    .release = dora_release,
    .forward = dora_forward,
    .backward = dora_backward,
    .flops_per_token = dora_flops_per_token,
    .peft_type = "LORA",
    .out_scale = dora_out_scale,
    .step_begin = dora_step_begin,
    .merge = dora_merge,
    .io = &dora_io,
};
