/* LoRA (Hu et al. 2021) as PEFT implements it: y = W x + s * B A dropout(x), A [r, in],
 * B [out, r], s = alpha / r (rsLoRA, Kalajdzievski 2023: alpha / sqrt(r)). Init: the
 * configured initialisation (adapter_init.h: default, gaussian, pissa) draws A and B.
 * LoRA+ (Hayou et al. 2024, PEFT's create_loraplus_optimizer): lora_B's learning rate =
 * ratio x lora_A's, a setting of the kinds with LoRA factors (LoraOpts, also DoRA's).
 *
 * On sharded linears (DESIGN.md §4): column-parallel: A replicated, B sharded by rows;
 * row-parallel: A sharded by columns, B replicated. Either way the local A is [r, ni] and the
 * local B is [no, r], so forward and backward are the same code; only the sync class of the
 * gradients differs. Every random number is keyed by global coordinates, so the adapter
 * at step 0 and the dropout masks do not depend on the layout.
 *
 * LoRA-FA (Zhang et al. 2023, "LoRA-FA: Memory-efficient Low-rank Adaptation"), kind
 * "lora-fa": the same module with A frozen after its init (a PARAM_FROZEN entry: no
 * gradient, no sync, no optimizer state), only B trained, and B's gradient projected
 * before the optimizer step as PEFT's LoraFAOptimizer does (lorafa_grad_post); it exports
 * as plain LoRA.
 *
 * Merging (lora.h): W + s B A row by row, the same code for generate --merge-in-memory
 * (lora_merge, on the shard) and `shardlora merge` (the io's merge_*, streamed from the PEFT
 * file); DoRA and VeRA merge through lora_merge_rows too. */
#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/err.h"
#include "../runtime/philox.h"
#include "adapter.h"
#include "adapter_init.h"
#include "adapter_io.h"
#include "linalg.h"
#include "lora.h"

/* The LoRA kinds' settings (AdapterCfg.kind_opts, also DoRA's): LoRA+'s ratio, 0 or 1: off. */
typedef struct {
    float loraplus_ratio;
} LoraOpts;

static LoraOpts lora_opts(const AdapterCfg *c) {
    LoraOpts o;
    _Static_assert(sizeof o <= sizeof c->kind_opts.b, "LoraOpts does not fit AdapterOpts");
    memcpy(&o, c->kind_opts.b, sizeof o);
    return o;
}

static int lora_set_option(AdapterOpts *o, const char *key, double value) {
    if (strcmp(key, "loraplus_ratio") != 0) return 0;
    LoraOpts l;
    memcpy(&l, o->b, sizeof l);
    l.loraplus_ratio = (float)value;
    memcpy(o->b, &l, sizeof l);
    return 1;
}

/* LoRA+ is on (PEFT: ratio 1 is plain AdamW). */
static int lora_plus_on(float ratio) {
    return ratio > 0 && ratio != 1.0f;
}

static void lora_declare(AdapterSlot *s, ParamTable *pt) {
    char pre[160], name[192];
    const ShardDesc *sd = &s->shard;
    const int r = s->r;
    adapter_peft_prefix(pre, sizeof pre, s->layer, s->module);
    /* A [r, in] follows the input columns, B [out, r] the output rows of the shard. */
    snprintf(name, sizeof name, "%s.lora_A.weight", pre);
    s->pA = params_add(pt, name, 2, r, sd->in, 0, r, sd->i0, sd->ni,
                       adapter_sync_class(s->in_copies, s->tp), s->in_copies, s->layer);
    snprintf(name, sizeof name, "%s.lora_B.weight", pre);
    s->pB = params_add(pt, name, 2, sd->out, r, sd->o0, sd->no, 0, r,
                       adapter_sync_class(s->out_copies, s->tp), s->out_copies, s->layer);
    s->params = pt;
    s->scale = s->cfg->use_rslora ? s->alpha / sqrtf((float)r) : s->alpha / (float)r;
    const float ratio = lora_opts(s->cfg).loraplus_ratio;
    if (lora_plus_on(ratio)) pt->e[s->pB].lr_scale = ratio;
    const AdapterInit *ini = adapter_init_of(s->cfg);
    if (ini->declare) ini->declare(s, pt); /* e.g. PiSSA's frozen A0, B0 for the export */
}

static void lora_init(AdapterSlot *s, ParamTable *pt) {
    adapter_init_of(s->cfg)->init(s, pt);
}

static void lora_alloc(AdapterSlot *s, MemCtx *m, int64_t max_rows) {
    const size_t r = (size_t)s->r, ni = (size_t)s->shard.ni, N = (size_t)max_rows;
    s->max_rows = max_rows;
    s->h = mem_alloc(m, MEM_ACTIVATION, N * r * sizeof(float));
    s->dh = mem_alloc(m, MEM_ACTIVATION, N * r * sizeof(float));
    if (s->cfg->dropout > 0) {
        s->xd = mem_alloc(m, MEM_ACTIVATION, N * ni * sizeof(float));
        s->tmp = mem_alloc(m, MEM_ACTIVATION, N * ni * sizeof(float));
    }
}

static void lora_release(AdapterSlot *s, MemCtx *m) {
    const size_t r = (size_t)s->r, ni = (size_t)s->shard.ni, N = (size_t)s->max_rows;
    mem_free(m, MEM_ACTIVATION, s->h, N * r * sizeof(float));
    mem_free(m, MEM_ACTIVATION, s->dh, N * r * sizeof(float));
    if (s->xd) mem_free(m, MEM_ACTIVATION, s->xd, N * ni * sizeof(float));
    if (s->tmp) mem_free(m, MEM_ACTIVATION, s->tmp, N * ni * sizeof(float));
    s->h = s->dh = s->xd = s->tmp = NULL;
}

/* What forward saves for backward (adapter.h saves): h [N, r] and, with dropout, Xd [N, ni];
 * dh and tmp are backward's scratch. DoRA and VeRA call it for theirs. */
int adapter_lora_saves(AdapterSlot *s, AdapterSave *out) {
    int n = 0;
    out[n++] = (AdapterSave){&s->h, s->r};
    if (s->xd) out[n++] = (AdapterSave){&s->xd, s->shard.ni};
    return n;
}

/* h, dh, xd, tmp (and dys, which DoRA allocates) of owner (adapter.h share). */
static void lora_share(AdapterSlot *s, const AdapterSlot *owner) {
    s->h = owner ? owner->h : NULL;
    s->dh = owner ? owner->dh : NULL;
    s->xd = owner ? owner->xd : NULL;
    s->tmp = owner ? owner->tmp : NULL;
    s->dys = owner ? owner->dys : NULL;
    s->max_rows = owner ? owner->max_rows : 0;
    s->acts_of = owner;
}

static void lora_forward(AdapterSlot *s, const AdapterEnv *env, float *Y, const float *X,
                         int64_t N) {
    SL_CHECK(N <= s->max_rows, "LoRA forward: %lld rows > %lld", (long long)N,
             (long long)s->max_rows);
    const int64_t r = s->r, ni = s->shard.ni, no = s->shard.no;
    const float *A = params_value(s->params, s->pA); /* [r, ni] */
    const float *B = params_value(s->params, s->pB); /* [no, r] */
    const float *Xd = X;
    if (s->cfg->dropout > 0 && env->training) {
        adapter_dropout_forward(s, env, s->xd, X, N);
        Xd = s->xd;
    }
    /* h [N, r] = Xd A^T ; Y [N, no] += s * h B^T */
    gemm_f32(env->gemm, 0, 1, N, r, ni, 1.0f, Xd, ni, A, ni, 0.0f, s->h, r);
    gemm_f32(env->gemm, 0, 1, N, no, r, s->scale, s->h, r, B, r, 1.0f, Y, no);
}

static void lora_backward(AdapterSlot *s, const AdapterEnv *env, float *dX, const float *dY,
                          const float *X, int64_t N) {
    const int64_t r = s->r, ni = s->shard.ni, no = s->shard.no;
    const float *A = params_value(s->params, s->pA);
    const float *B = params_value(s->params, s->pB);
    float *dA = params_grad(s->params, s->pA); /* [r, ni]; not for a frozen A */
    float *dB = params_grad(s->params, s->pB); /* [no, r] */
    const int drop = s->cfg->dropout > 0 && env->training;
    const float *Xd = drop ? s->xd : X;
    /* dB += s * dY^T h ; dh = s * dY B ; dA += dh^T Xd ; dX += dropout'(dh A) */
    gemm_f32(env->gemm, 1, 0, no, r, N, s->scale, dY, no, s->h, r, 1.0f, dB, r);
    gemm_f32(env->gemm, 0, 0, N, r, no, s->scale, dY, no, B, r, 0.0f, s->dh, r);
    if (!params_is_frozen(s->params, s->pA)) /* LoRA-FA: A has no gradient */
        gemm_f32(env->gemm, 1, 0, r, ni, N, 1.0f, s->dh, r, Xd, ni, 1.0f, dA, ni);
    if (!drop) {
        gemm_f32(env->gemm, 0, 0, N, ni, r, 1.0f, s->dh, r, A, ni, 1.0f, dX, ni);
        return;
    }
    gemm_f32(env->gemm, 0, 0, N, ni, r, 1.0f, s->dh, r, A, ni, 0.0f, s->tmp, ni);
    adapter_dropout_backward(s, env, dX, s->tmp, X, s->xd, N);
}

static double lora_flops_per_token(const AdapterSlot *s) {
    /* forward 2 GEMMs + backward 4 GEMMs, each 2*r*dim flops per token, global shapes */
    const double r = s->r, in = (double)s->shard.in, out = (double)s->shard.out;
    return 2.0 * r * (in + out) + 2.0 * r * (2.0 * out + 2.0 * in);
}

/* ---------------------------------------------------------------- LoRA-FA */

/* PEFT's LoraFAOptimizer (peft/src/peft/optimizers/lorafa.py, step()): before B's AdamW
 * update, g_B [out, r] <- (1 / s^2) g_B pinv(A A^T + 1e-8 I), with s the scaling passed to
 * create_lorafa_optimizer: lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora, one
 * value for every module (so from the configuration's r and alpha, not a rank_pattern /
 * alpha_pattern override). pinv is torch.linalg.pinv's: singular values <= r * FLT_EPSILON
 * x the largest (its default rtol for float32) count as zero. */
#define LORAFA_DELTA 1e-8

/* Per-slot state (s->ext), allocated in declare. A is frozen, so P is made once, on the
 * first grad_post (not at init: --init-adapter and a resumed checkpoint set A after init). */
typedef struct {
    int ready;
    int r;
    double *P;   /* [r, r] pinv(A A^T + delta I) / s^2 */
    double *M;   /* [r, r] scratch: A A^T + delta I */
    double *V;   /* [r, r] scratch (linalg_pinv_sym) */
    double *row; /* [r] scratch: one row of g_B in double */
} LorafaState;

static void lorafa_declare(AdapterSlot *s, ParamTable *pt) {
    lora_declare(s, pt);
    params_set_frozen(pt, s->pA);
    const size_t r = (size_t)s->r;
    LorafaState *f = calloc(1, sizeof *f);
    double *buf = calloc(3 * r * r + r, sizeof *buf);
    SL_CHECK(f && buf, "LoRA-FA: out of memory (rank %d)", s->r);
    f->r = s->r;
    f->P = buf;
    f->M = buf + r * r;
    f->V = buf + 2 * r * r;
    f->row = buf + 3 * r * r;
    s->ext = f;
}

static void lorafa_destroy(AdapterSlot *s) {
    LorafaState *f = s->ext;
    if (!f) return;
    free(f->P); /* the one block of P, M, V, row */
    free(f);
    s->ext = NULL;
}

/* P = pinv(A A^T + delta I) / s^2 (see LORAFA_DELTA). A A^T is summed over the TP group
 * when A is sharded by input columns (row-parallel layers at tp > 1): collective over
 * tp_comm then ([r, r] doubles, counted as GRID_BYTES_OTHER). */
static void lorafa_make_projection(AdapterSlot *s) {
    LorafaState *f = s->ext;
    const int r = f->r;
    const int64_t ni = s->shard.ni;
    const float *A = params_value(s->params, s->pA); /* [r, ni] */
    for (int i = 0; i < r; i++)
        for (int j = 0; j <= i; j++) {
            double acc = 0.0;
            for (int64_t k = 0; k < ni; k++)
                acc += (double)A[i * ni + k] * A[j * ni + k];
            f->M[i * r + j] = f->M[j * r + i] = acc;
        }
    if (s->in_copies < s->tp) { /* each input column is on in_copies of the tp ranks */
        grid_allreduce_sum_f64(s->grid, s->grid->tp_comm, f->M, (size_t)r * (size_t)r,
                               GRID_BYTES_OTHER);
        for (int i = 0; i < r * r; i++)
            f->M[i] /= (double)s->in_copies;
    }
    for (int i = 0; i < r; i++)
        f->M[i * r + i] += LORAFA_DELTA;
    linalg_pinv_sym(f->P, f->M, f->V, r, (double)r * FLT_EPSILON);
    const AdapterCfg *c = s->cfg;
    const double sc =
        c->use_rslora ? (double)c->alpha / sqrt((double)c->r) : (double)c->alpha / (double)c->r;
    for (int i = 0; i < r * r; i++)
        f->P[i] /= sc * sc;
    f->ready = 1;
}

/* g_B [no, r] <- g_B P, in place, after the gradients are summed over the replicas and
 * clipped (PEFT projects in its optimizer's step, after the Trainer's clipping). */
static void lorafa_grad_post(AdapterSlot *s, const AdapterEnv *env) {
    (void)env;
    LorafaState *f = s->ext;
    if (!f->ready) lorafa_make_projection(s);
    const int r = f->r;
    const int64_t no = s->shard.no;
    float *dB = params_grad(s->params, s->pB); /* [no, r] */
    for (int64_t o = 0; o < no; o++) {
        float *g = dB + o * r;
        for (int k = 0; k < r; k++)
            f->row[k] = g[k];
        for (int j = 0; j < r; j++) {
            double acc = 0.0;
            for (int k = 0; k < r; k++)
                acc += f->row[k] * f->P[k * r + j];
            g[j] = (float)acc;
        }
    }
}

static double lorafa_flops_per_token(const AdapterSlot *s) {
    /* no dA GEMM */
    const double r = s->r, in = (double)s->shard.in, out = (double)s->shard.out;
    return 2.0 * r * (in + out) + 2.0 * r * (2.0 * out + in);
}

/* ---------------------------------------------------------------- merging (lora.h) */

/* Columns per block: the accumulator [LORA_MERGE_BLOCK] stays in L1 while the r rows of A
 * stream. */
#define LORA_MERGE_BLOCK 512

/* One row: w [I] += (b A) * s. Returns 1 if the row came out non-finite. */
static int lora_merge_row(float *restrict w, int64_t I, const float *restrict A,
                          const float *restrict b, int r, float s) {
    float acc[LORA_MERGE_BLOCK];
    for (int64_t c0 = 0; c0 < I; c0 += LORA_MERGE_BLOCK) {
        const int64_t n = I - c0 < LORA_MERGE_BLOCK ? I - c0 : LORA_MERGE_BLOCK;
        for (int64_t j = 0; j < n; j++)
            acc[j] = 0.0f;
        for (int k = 0; k < r; k++) {
            const float bk = b[k];
            const float *restrict a = A + (int64_t)k * I + c0;
            for (int64_t j = 0; j < n; j++)
                acc[j] += bk * a[j];
        }
        /* PEFT: delta = (B @ A) * scaling, then W + delta */
        for (int64_t j = 0; j < n; j++)
            w[c0 + j] += acc[j] * s;
    }
    for (int64_t j = 0; j < I; j++)
        if (!isfinite(w[j])) return 1;
    return 0;
}

int64_t lora_merge_rows(float *W, int64_t nr, int64_t I, const float *A, const float *B, int r,
                        float s, int threads) {
    int64_t bad = 0;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : bad)
    for (int64_t o = 0; o < nr; o++)
        bad += lora_merge_row(W + o * I, I, A, B + o * r, r, s);
    return bad;
}

/* generate --merge-in-memory: the shard's rows [r0, r0 + nr) += s B A with the local A
 * [r, ni] and B [no, r] (whichever way the layer is split, each element sees its own row of
 * B and column of A, so the values are those of the unsharded merge). */
static void lora_merge(const AdapterSlot *s, const AdapterEnv *env, float *W, int64_t r0,
                       int64_t nr) {
    const float *A = params_value(s->params, s->pA); /* [r, ni] */
    const float *B = params_value(s->params, s->pB); /* [no, r] */
    const int threads = env->gemm && env->gemm->nthreads > 0 ? env->gemm->nthreads : 1;
    lora_merge_rows(W, nr, s->shard.ni, A, B + r0 * s->r, s->r, s->scale, threads);
}

/* ---------------------------------------------------------------- PEFT file (AdioKindIo) */

/* The checkpoint JSON keeps LoRA+'s ratio when it is on, so plain LoRA keeps the JSON its
 * checkpoints have always had. */
static void lora_cfg_json(const AdapterCfg *c, char *buf, size_t n) {
    const float ratio = lora_opts(c).loraplus_ratio;
    if (lora_plus_on(ratio)) snprintf(buf, n, ", \"loraplus_ratio\": %.9g", (double)ratio);
}

static int lora_cfg_from_json(AdapterCfg *c, const json_t *root, ErrStatus *st) {
    (void)st;
    const json_t *lp = json_object_get(root, "loraplus_ratio");
    if (json_is_number(lp)) lora_set_option(&c->kind_opts, "loraplus_ratio", json_number_value(lp));
    return 1;
}

int lora_merge_plan_factors(AdioMergeItem *it, const PeftAdapter *a, unsigned char *used,
                            int magnitude, ErrStatus *st) {
    const StTensor *A = peft_tensor(a, it->module, "lora_A");
    const StTensor *B = peft_tensor(a, it->module, "lora_B");
    const StTensor *M = peft_tensor(a, it->module, "lora_magnitude_vector");
    const StTensor *base = a->tensors.tensors;
    if (A) used[A - base] = 1;
    if (B) used[B - base] = 1;
    if (M) used[M - base] = 1;
    if (!A && !B && !M) return adio_merge_untargeted(a, it->module, "lora_A / lora_B", st);
    const char *ap = a->tensors.path;
    if (!adio_merge_targeted(a, it->module, A ? A : B ? B : M, st)) return 0;
    if (!A || !B)
        return err_status_set(st, "%s: module '%s' has %s but no %s", ap, it->module,
                              A   ? A->name
                              : B ? B->name
                                  : M->name,
                              A ? "lora_B" : "lora_A");
    if (M && !magnitude)
        return err_status_set(
            st, "%s: tensor '%s': a DoRA magnitude, but adapter_config.json has use_dora false", ap,
            M->name);
    if (!M && magnitude)
        return err_status_set(
            st,
            "%s: module '%s' has no lora_magnitude_vector, but adapter_config.json has "
            "use_dora true",
            ap, it->module);
    int r = 0;
    double alpha = 0;
    peft_module_rank(a, it->module, &r, &alpha);
    char why[64];
    snprintf(why, sizeof why, "(r = %d for this module)", r);
    if (!adio_merge_check(it, a, A, r, it->cols, why, st) ||
        !adio_merge_check(it, a, B, it->rows, r, why, st) ||
        (M && !adio_merge_check(it, a, M, it->rows, -1, why, st)) ||
        !adio_merge_check(it, a, NULL, 0, 0, NULL, st))
        return 0;
    it->adapted = 1;
    it->t[0] = A;
    it->t[1] = B;
    it->t[2] = M;
    it->r = r;
    it->scale = (float)(a->use_rslora ? alpha / sqrt((double)r) : alpha / (double)r);
    it->bad_note = M ? " or have a zero norm" : "";
    it->item_floats = (size_t)r * (size_t)it->cols;
    it->row_floats = (size_t)r + (M ? 1u : 0u);
    return 1;
}

static int lora_merge_plan(AdioMergeItem *it, const PeftAdapter *a, unsigned char *used,
                           ErrStatus *st) {
    return lora_merge_plan_factors(it, a, used, 0, st);
}

int lora_merge_begin(const AdioMergeItem *it, PeftAdapter *a, const void *shared, float *ibuf,
                     ErrStatus *st) {
    (void)shared;
    return st_read_all(&a->tensors, it->t[0], ST_F32, ibuf, st);
}

int lora_merge_read_b(const AdioMergeItem *it, PeftAdapter *a, float *B, int64_t row0, int64_t k,
                      ErrStatus *st) {
    return st_read_slice(&a->tensors, it->t[1], row0, k, 0, it->r, ST_F32, B, st);
}

/* W + s B A on rows [row0, row0 + k): ibuf = A [r, cols], rbuf = B rows [k, r]. */
static int64_t lora_merge_stream(const AdioMergeItem *it, PeftAdapter *a, const void *shared,
                                 const float *ibuf, float *rbuf, float *W, int64_t row0, int64_t k,
                                 int threads, ErrStatus *st) {
    (void)shared;
    if (!lora_merge_read_b(it, a, rbuf, row0, k, st)) return -1;
    return lora_merge_rows(W, k, it->cols, ibuf, rbuf, it->r, it->scale, threads);
}

static const AdioKindIo lora_io = {
    .cfg_json = lora_cfg_json,
    .cfg_from_json = lora_cfg_from_json,
    .merge_help = "W + s·B A, s = alpha / r (alpha / sqrt(r) with use_rslora) per module",
    .merge_plan = lora_merge_plan,
    .merge_begin = lora_merge_begin,
    .merge_rows = lora_merge_stream,
};

const AdapterKind adapter_lora = {
    .name = "lora",
    .declare = lora_declare,
    .init = lora_init,
    .alloc = lora_alloc,
    .release = lora_release,
    .forward = lora_forward,
    .backward = lora_backward,
    .flops_per_token = lora_flops_per_token,
    .set_option = lora_set_option,
    .merge = lora_merge,
    .io = &lora_io, /* LoRA+ in the checkpoint JSON; the merge */
    .share = lora_share,
    .saves = adapter_lora_saves,
};

const AdapterKind adapter_lorafa = {
    .name = "lora-fa",
    .title = "LoRA-FA",
    .declare = lorafa_declare,
    .init = lora_init,
    .alloc = lora_alloc,
    .release = lora_release,
    .forward = lora_forward,
    .backward = lora_backward,
    .flops_per_token = lorafa_flops_per_token,
    .set_option = lora_set_option,
    .merge = lora_merge,
    .io = &lora_io,
    .destroy = lorafa_destroy,
    .grad_post = lorafa_grad_post,
    .share = lora_share,
    .saves = adapter_lora_saves,
};
