/* PiSSA initialisation on the sharded frozen weight (pissa.h): A and B from the top-r singular
 * triplets of W [O, I] as PEFT's LoraLayer.pissa_init (peft/tuners/lora/layer.py):
 *     W ~ U S V^T,  A = diag(sqrt(S_r / s)) V_r^T [r, I],  B = U_r diag(sqrt(S_r / s)) [O, r],
 *     W_res = W - s B A  (replaces the base, in each rank's own shard; BF16 rounded back),
 * s the LoRA scale. The SVD is a randomized one (Halko, Martinsson, Tropp 2011, Alg. 4.4,
 * as torch.svd_lowrank behind PEFT's "pissa_niter_N"): Omega [I, q] Gaussian, Y = W Omega,
 * Q = orth(Y); pissa_iters times: Q = orth(W orth(W^T Q)); then Bs = Q^T W [q, I], its SVD
 * Bs = V_b S U_b^T by one-sided Jacobi, U = Q V_b, V = U_b.
 *
 * Tensor parallelism: this rank holds the block W[o0:o0+no, i0:i0+ni] (column-parallel: a row
 * block, all columns; row-parallel: a column block, all rows). Every product with W is formed
 * as the full [O, q], [I, q] or [q, I] matrix: each rank adds its block's contribution into a
 * zeroed buffer and one counted all-reduce (SUM) over tp_comm completes it -- a sum of partial
 * products where the block splits the contracted dimension, a gather where it splits the
 * kept one (ranks holding a duplicate block, replicated kv heads, contribute once). The small
 * computations (Gram-Schmidt, Jacobi) then run identically on every TP rank, in double.
 *
 * Layout independence: Omega is keyed by (seed, layer, module, global row, global column),
 * so every layout runs the same algorithm on the same W; what differs is only the float
 * summation order of the partial products (tp > 1 sums per-rank partials), which after the
 * power iterations leaves the adapters equal to rounding (the singular vectors' signs are
 * fixed by their largest entry, so they do not flip unless two entries tie).
 *
 * Legend: O / I global out / in, no / ni local, r rank, q = r + oversampling columns. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "../runtime/err.h"
#include "../runtime/philox.h"
#include "adapter_init.h"
#include "adapter_io.h"
#include "linalg.h"
#include "pissa.h"

/* PiSSA's settings (AdapterCfg.init_opts): power iterations of the randomized SVD. */
typedef struct {
    int iters;
} PissaOpts;

static PissaOpts pissa_opts(const AdapterCfg *c) {
    PissaOpts o;
    _Static_assert(sizeof o <= sizeof c->init_opts.b, "PissaOpts does not fit AdapterOpts");
    memcpy(&o, c->init_opts.b, sizeof o);
    return o;
}

static int pissa_set_option(AdapterOpts *o, const char *key, double value) {
    if (strcmp(key, "pissa_iters") != 0) return 0;
    const PissaOpts p = {(int)value};
    memcpy(o->b, &p, sizeof p);
    return 1;
}

/* The sum over the TP group, counted as adapter-internal traffic (a no-op at tp = 1). */
static void pissa_allreduce(const AdapterSlot *s, float *buf, int64_t n) {
    if (s->tp <= 1 || !s->grid) return;
    grid_allreduce_sum_f32(s->grid, s->grid->tp_comm, buf, (size_t)n, GRID_BYTES_OTHER);
}

static void pissa_to_double(double *d, const float *f, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        d[i] = f[i];
}

static void pissa_to_float(float *f, const double *d, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        f[i] = (float)d[i];
}

/* One product with the sharded W completed over the TP group: out [n, q] = W X (trans = 0:
 * n = O, this block's rows o0..; X rows i0.. of [I, q]) or W^T X (trans = 1: n = I, this
 * block's rows i0..; X rows o0.. of [O, q]); then D = orth(out) in double, and out = (float)D
 * when orth, else D = out. */
static void pissa_product(float *out, double *D, int64_t n, int q, int trans, const float *W,
                          int64_t no, int64_t ni, int64_t row0, const float *X, float contrib,
                          const AdapterSlot *s, int orth) {
    memset(out, 0, (size_t)(n * q) * sizeof(float));
    if (trans)
        gemm_f32(NULL, 1, 0, ni, q, no, contrib, W, ni, X, q, 0.0f, out + row0 * q, q);
    else
        gemm_f32(NULL, 0, 0, no, q, ni, contrib, W, ni, X, q, 0.0f, out + row0 * q, q);
    pissa_allreduce(s, out, n * q);
    pissa_to_double(D, out, n * q);
    if (!orth) return;
    linalg_orth(D, n, q);
    pissa_to_float(out, D, n * q);
}

static void pissa_init(AdapterSlot *s, ParamTable *pt) {
    const ShardDesc *sd = &s->shard;
    const int64_t O = sd->out, I = sd->in, no = sd->no, ni = sd->ni, o0 = sd->o0, i0 = sd->i0;
    const int r = s->r;
    const int64_t mn = O < I ? O : I;
    SL_CHECK(r <= mn, "PiSSA: rank %d > min(out %lld, in %lld)", r, (long long)O, (long long)I);
    const int q = (int)(r + PISSA_OVERSAMPLE < mn ? r + PISSA_OVERSAMPLE : mn);
    const int iters = pissa_opts(s->cfg).iters;
    const GemmWeight *gw = &s->lin->w;
    SL_CHECK(gw->rows == no && gw->cols == ni, "PiSSA: weight %lldx%lld, shard %lldx%lld",
             (long long)gw->rows, (long long)gw->cols, (long long)no, (long long)ni);
    const int t = s->tp > 1 && s->grid ? s->grid->tp_rank : 0;
    /* ranks holding the same block (kv heads replicated): only the first contributes */
    const int dup = s->in_copies * s->out_copies / s->tp;
    const float contrib = (dup <= 1 || t % dup == 0) ? 1.0f : 0.0f;

    float *W = malloc((size_t)(no * ni) * sizeof(float)); /* [no, ni] */
    float *Om = malloc((size_t)(ni * q) * sizeof(float)); /* [ni, q] rows i0.. of Omega */
    float *Y = malloc((size_t)(O * q) * sizeof(float));   /* [O, q] */
    float *Z = malloc((size_t)(I * q) * sizeof(float));   /* [I, q] */
    double *Dy = malloc((size_t)(O * q) * sizeof(double));
    double *Dz = malloc((size_t)(I * q) * sizeof(double));
    double *V = malloc((size_t)q * q * sizeof(double));
    SL_CHECK(W && Om && Y && Z && Dy && Dz && V, "PiSSA: out of memory");
    for (int64_t o = 0; o < no; o++)
        for (int64_t i = 0; i < ni; i++)
            W[o * ni + i] = gw->dtype == GEMM_F32
                                ? ((const float *)gw->data)[o * gw->ld + i]
                                : gemm_bf16_to_f32(((const uint16_t *)gw->data)[o * gw->ld + i]);
    for (int64_t i = 0; i < ni; i++)
        for (int j = 0; j < q; j++)
            Om[i * q + j] = philox_normal(s->cfg->seed, PHILOX_LORA_INIT_B,
                                          ((uint64_t)(i0 + i) << 32) | (uint64_t)j,
                                          (uint64_t)s->layer, (uint64_t)s->module);

    /* Y = W Omega; Q = orth(Y) (in Dy, and as float in Y); pissa_iters times
     * Z = orth(W^T Q), Q = orth(W Z); then Bs^T = W^T Q [I, q] and one-sided Jacobi:
     * Bs^T = Ub S V^T -> W ~ (Q V) S Ub^T */
    pissa_product(Y, Dy, O, q, 0, W, no, ni, o0, Om, contrib, s, 1);
    for (int it = 0; it < iters; it++) {
        pissa_product(Z, Dz, I, q, 1, W, no, ni, i0, Y + o0 * q, contrib, s, 1);
        pissa_product(Y, Dy, O, q, 0, W, no, ni, o0, Z + i0 * q, contrib, s, 1);
    }
    pissa_product(Z, Dz, I, q, 1, W, no, ni, i0, Y + o0 * q, contrib, s, 0);
    linalg_jacobi_svd(Dz, V, I, q);
    double *sig = malloc((size_t)q * sizeof(double));
    int *ord = malloc((size_t)q * sizeof(int));
    SL_CHECK(sig && ord, "PiSSA: out of memory");
    for (int j = 0; j < q; j++) {
        double nn = 0;
        for (int64_t i = 0; i < I; i++)
            nn += Dz[i * q + j] * Dz[i * q + j];
        sig[j] = sqrt(nn);
        ord[j] = j;
    }
    for (int a = 1; a < q; a++) /* descending singular values (insertion sort, q small) */
        for (int b = a; b > 0 && sig[ord[b]] > sig[ord[b - 1]]; b--) {
            int x = ord[b];
            ord[b] = ord[b - 1];
            ord[b - 1] = x;
        }

    /* A [r, I] = sqrt(S/s) Ub^T, B [O, r] = (Q V) sqrt(S/s); this rank's slices of each */
    const ParamEntry *ea = &pt->e[s->pA], *eb = &pt->e[s->pB];
    float *A = params_value(pt, s->pA);                       /* [r, ea->nc] columns from ea->c0 */
    float *B = params_value(pt, s->pB);                       /* [eb->nr, r] rows from eb->r0 */
    double *Bfull = malloc((size_t)(O * r) * sizeof(double)); /* [O, r] */
    double *Afull = malloc((size_t)(r * I) * sizeof(double)); /* [r, I] */
    SL_CHECK(Bfull && Afull, "PiSSA: out of memory");
    for (int k = 0; k < r; k++) {
        const int j = ord[k];
        const double sq = sqrt(sig[j] / (double)s->scale);
        const double inv = sig[j] > 0 ? 1.0 / sig[j] : 0.0;
        /* sign: the right singular vector's largest entry positive */
        int64_t imax = 0;
        for (int64_t i = 1; i < I; i++)
            if (fabs(Dz[i * q + j]) > fabs(Dz[imax * q + j])) imax = i;
        const double sgn = Dz[imax * q + j] < 0 ? -1.0 : 1.0;
        for (int64_t i = 0; i < I; i++)
            Afull[k * I + i] = sgn * sq * Dz[i * q + j] * inv;
        for (int64_t o = 0; o < O; o++) {
            double u = 0;
            for (int c = 0; c < q; c++)
                u += Dy[o * q + c] * V[c * q + j];
            Bfull[o * r + k] = sgn * sq * u;
        }
    }
    for (int k = 0; k < r; k++)
        for (int64_t c = 0; c < ea->nc; c++)
            A[k * ea->nc + c] = (float)Afull[k * I + ea->c0 + c];
    for (int64_t o = 0; o < eb->nr; o++)
        for (int k = 0; k < r; k++)
            B[o * r + k] = (float)Bfull[(eb->r0 + o) * r + k];

    /* W_res = W - s B A on this rank's block, from the float factors the adapter holds (so
     * W_res + s B A reproduces W to rounding), written back in the shard's dtype. */
    for (int64_t o = 0; o < no; o++)
        for (int64_t i = 0; i < ni; i++) {
            double d = 0;
            for (int k = 0; k < r; k++)
                d += (double)(float)Bfull[(o0 + o) * r + k] * (double)(float)Afull[k * I + i0 + i];
            const float w = (float)((double)W[o * ni + i] - (double)s->scale * d);
            if (gw->dtype == GEMM_F32)
                ((float *)(uintptr_t)gw->data)[o * gw->ld + i] = w;
            else
                ((uint16_t *)(uintptr_t)gw->data)[o * gw->ld + i] = gemm_f32_to_bf16(w);
        }
    /* the initial factors, frozen, for the export's conversion */
    char name[224];
    snprintf(name, sizeof name, "%s", ea->name);
    const size_t na = strlen(name) - strlen(".lora_A.weight");
    snprintf(name + na, sizeof name - na, PISSA_A0_SUFFIX);
    const int iA0 = params_find(pt, name);
    snprintf(name + na, sizeof name - na, PISSA_B0_SUFFIX);
    const int iB0 = params_find(pt, name);
    SL_CHECK(iA0 >= 0 && iB0 >= 0, "PiSSA: %s: initial factors not declared", ea->name);
    memcpy(params_value(pt, iA0), A, params_numel(ea) * sizeof(float));
    memcpy(params_value(pt, iB0), B, params_numel(eb) * sizeof(float));
    free(Afull);
    free(Bfull);
    free(sig);
    free(ord);
    free(V);
    free(Dz);
    free(Dy);
    free(Z);
    free(Y);
    free(Om);
    free(W);
}

void pissa_convert(float *A2, float *B2, const float *A, const float *B, const float *A0,
                   const float *B0, int r, int64_t in, int64_t out) {
    memcpy(A2, A, (size_t)r * (size_t)in * sizeof(float));
    memcpy(A2 + (size_t)r * (size_t)in, A0, (size_t)r * (size_t)in * sizeof(float));
    for (int64_t o = 0; o < out; o++)
        for (int k = 0; k < r; k++) {
            B2[o * 2 * r + k] = B[o * r + k];
            B2[o * 2 * r + r + k] = -B0[o * r + k];
        }
}

double pissa_converted_alpha(double alpha, int use_rslora) {
    return use_rslora ? alpha * sqrt(2.0) : 2.0 * alpha;
}

void pissa_declare_initial(AdapterSlot *s, ParamTable *pt) {
    const ParamEntry *ea = &pt->e[s->pA], *eb = &pt->e[s->pB];
    char pre[160], name[192];
    adapter_peft_prefix(pre, sizeof pre, s->layer, s->module);
    /* values only: the sync class is irrelevant once frozen */
    snprintf(name, sizeof name, "%s" PISSA_A0_SUFFIX, pre);
    const int a0 = params_add(pt, name, 2, ea->grows, ea->gcols, ea->r0, ea->nr, ea->c0, ea->nc,
                              ea->sync, ea->ncopies, s->layer);
    snprintf(name, sizeof name, "%s" PISSA_B0_SUFFIX, pre);
    const int b0 = params_add(pt, name, 2, eb->grows, eb->gcols, eb->r0, eb->nr, eb->c0, eb->nc,
                              eb->sync, eb->ncopies, s->layer);
    params_set_frozen(pt, a0);
    params_set_frozen(pt, b0);
}

/* ---------------------------------------------- PEFT export and settings (adapter_init_pissa.io)
 * With init pissa, every slot's lora_A / lora_B / pissa_A0 / pissa_B0 become the rank-2r
 * lora_A / lora_B (pissa_convert) and adapter_config.json gets r = 2r, lora_alpha =
 * pissa_converted_alpha. */

static int pissa_has_suffix(const char *name, const char *suffix) {
    const size_t n = strlen(name), k = strlen(suffix);
    return n >= k && strcmp(name + n - k, suffix) == 0;
}

/* The tensor named prefix + suffix (prefix: the first plen characters of a name), or NULL. */
static const AdioTensor *pissa_find(const AdioTensor *t, int n, const char *prefix, size_t plen,
                                    const char *suffix) {
    for (int k = 0; k < n; k++)
        if (strncmp(t[k].name, prefix, plen) == 0 && strcmp(t[k].name + plen, suffix) == 0)
            return &t[k];
    return NULL;
}

static int pissa_export_tensors(const AdioCfg *c, const AdioTensor *t, int n, AdioTensor **out,
                                int *nout, void **keep, ErrStatus *st) {
    if (c->slot_r)
        return err_status_set(
            st, "export: PiSSA with per-module ranks or alphas (rank_pattern / alpha_pattern) "
                "cannot be converted yet; export a uniform-rank PiSSA run");
    /* PEFT's conversion (peft_model.py save_pretrained with
     * path_initial_model_for_weight_conversion -> LoraModel.subtract_mutated_init):
     * lora_A = cat([A, A0], dim 0), lora_B = cat([B, -B0], dim 1), r' = 2r, alpha' as
     * pissa_converted_alpha, so s' B' A' = s (B A - B0 A0) applies to the original W. */
    int npairs = 0;
    size_t floats = 0;
    for (int k = 0; k < n; k++)
        if (pissa_has_suffix(t[k].name, ".lora_A.weight")) {
            npairs++;
            floats += 2 * (size_t)(t[k].rows * t[k].cols);
        } else if (pissa_has_suffix(t[k].name, ".lora_B.weight")) {
            floats += 2 * (size_t)(t[k].rows * t[k].cols);
        } else if (!pissa_has_suffix(t[k].name, PISSA_A0_SUFFIX) &&
                   !pissa_has_suffix(t[k].name, PISSA_B0_SUFFIX)) {
            return err_status_set(
                st,
                "export: tensor '%s' is not a PiSSA factor (lora_A / lora_B / pissa_A0 / "
                "pissa_B0)",
                t[k].name);
        }
    if (4 * npairs != n)
        return err_status_set(
            st,
            "export: PiSSA needs lora_A, lora_B, pissa_A0 and pissa_B0 of every module: %d "
            "tensors for %d modules",
            n, npairs);
    AdioTensor *o = calloc((size_t)(2 * npairs > 0 ? 2 * npairs : 1), sizeof *o);
    float *buf = malloc((floats ? floats : 1) * sizeof(float));
    SL_CHECK(o && buf, "out of memory");
    int m = 0;
    size_t off = 0;
    for (int k = 0; k < n; k++) {
        if (!pissa_has_suffix(t[k].name, ".lora_A.weight")) continue;
        const size_t plen = strlen(t[k].name) - strlen(".lora_A.weight");
        const AdioTensor *A = &t[k], *B = pissa_find(t, n, A->name, plen, ".lora_B.weight"),
                         *A0 = pissa_find(t, n, A->name, plen, PISSA_A0_SUFFIX),
                         *B0 = pissa_find(t, n, A->name, plen, PISSA_B0_SUFFIX);
        if (!B || !A0 || !B0 || A0->rows != A->rows || A0->cols != A->cols || B->cols != A->rows ||
            B0->rows != B->rows || B0->cols != B->cols) {
            free(o);
            free(buf);
            return err_status_set(
                st, "export: PiSSA factors of '%.*s' missing or of inconsistent shapes", (int)plen,
                A->name);
        }
        const int r = (int)A->rows;
        float *A2 = buf + off, *B2 = A2 + 2 * (size_t)(r * A->cols);
        off += 2 * (size_t)(r * A->cols) + 2 * (size_t)(B->rows * r);
        pissa_convert(A2, B2, A->data, B->data, A0->data, B0->data, r, A->cols, B->rows);
        o[m++] = (AdioTensor){A->name, 2 * r, A->cols, A2};
        o[m++] = (AdioTensor){B->name, B->rows, 2 * r, B2};
    }
    *out = o;
    *nout = m;
    *keep = buf;
    return 1;
}

static void pissa_peft_config(const AdioCfg *c, PeftConfig *pc) {
    /* PEFT (save_pretrained with path_initial_model_for_weight_conversion): init_lora_weights
     * = True, r *= 2, lora_alpha *= 2 (rsLoRA: *= sqrt(2), the scale alpha / sqrt(r) kept) */
    pc->r = 2 * c->acfg.r;
    pc->lora_alpha = pissa_converted_alpha(c->alpha, c->acfg.use_rslora);
    pc->init = "default";
}

/* pissa_iters in the checkpoint JSON (always, with --init pissa). */
static void pissa_cfg_json(const AdapterCfg *c, char *buf, size_t n) {
    snprintf(buf, n, ", \"pissa_iters\": %d", pissa_opts(c).iters);
}

static int pissa_cfg_from_json(AdapterCfg *c, const json_t *root, ErrStatus *st) {
    (void)st;
    const json_t *pi = json_object_get(root, "pissa_iters");
    if (json_is_integer(pi))
        pissa_set_option(&c->init_opts, "pissa_iters", (double)json_integer_value(pi));
    return 1;
}

static const AdioKindIo pissa_io = {
    .cfg_json = pissa_cfg_json,
    .cfg_from_json = pissa_cfg_from_json,
    .peft_config = pissa_peft_config,
    .export_tensors = pissa_export_tensors,
};

const AdapterInit adapter_init_pissa = {
    .name = "pissa",
    .help = "A, B from the top-r singular vectors of W, the base replaced by the residual "
            "(--pissa-iters)",
    .needs = 2, /* LoRA factors, merged as W + s B A: lora, lora-fa */
    .init = pissa_init,
    .declare = pissa_declare_initial,
    .set_option = pissa_set_option,
    .peft_init = "default", /* the export is the converted plain LoRA */
    .card = "PiSSA: A, B from the top singular vectors of W (randomized SVD); exported as PEFT "
            "does, a LoRA of "
            "twice the rank that applies to the original base",
    .io = &pissa_io,
};
