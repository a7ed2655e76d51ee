/* LoRA (Hu et al. 2021) as PEFT implements it: y = W x + s * B A dropout(x), A [r, in],
 * B [out, r], s = alpha / r (rsLoRA, Kalajdzievski 2023: alpha / sqrt(r)). Init: A from
 * PEFT's kaiming_uniform(a = sqrt(5)), i.e. uniform(-1/sqrt(in), 1/sqrt(in)), or
 * N(0, 1/r) for init "gaussian"; B = 0.
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
 * as plain LoRA. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/err.h"
#include "../runtime/philox.h"
#include "adapter.h"
#include "adapter_io.h"
#include "linalg.h"
#include "pissa.h"

/* Counter coordinates: the module id and the tensor (A/B) go into c. */
static uint64_t lora_coord_c(const AdapterSlot *s, int tensor) {
    return (uint64_t)s->module * 4u + (uint64_t)tensor;
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
    if (s->cfg->init_pissa) pissa_declare_initial(s, pt); /* frozen A0, B0 for the export */
}

static void lora_init(AdapterSlot *s, ParamTable *pt) {
    if (s->cfg->init_pissa) {
        pissa_init(s, pt); /* model/pissa.c */
        return;
    }
    const ParamEntry *ea = &pt->e[s->pA];
    float *A = params_value(pt, s->pA); /* [r, ni] */
    const float bound = 1.0f / sqrtf((float)ea->gcols);
    for (int64_t i = 0; i < ea->nr; i++) {
        for (int64_t j = 0; j < ea->nc; j++) {
            uint64_t gi = (uint64_t)(ea->r0 + i), gj = (uint64_t)(ea->c0 + j);
            uint64_t a = gi * (uint64_t)ea->gcols + gj;
            A[i * ea->nc + j] =
                s->cfg->init_gaussian
                    ? philox_normal(s->cfg->seed, PHILOX_LORA_INIT_A, a, (uint64_t)s->layer,
                                    lora_coord_c(s, 0)) / (float)s->r
                    : philox_uniform(s->cfg->seed, PHILOX_LORA_INIT_A, a, (uint64_t)s->layer,
                                     lora_coord_c(s, 0), -bound, bound);
        }
    }
    memset(params_value(pt, s->pB), 0, params_numel(&pt->e[s->pB]) * sizeof(float));
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
 * tp_comm then. */
static void lorafa_make_projection(AdapterSlot *s) {
    LorafaState *f = s->ext;
    const int r = f->r;
    const int64_t ni = s->shard.ni;
    const float *A = params_value(s->params, s->pA); /* [r, ni] */
    for (int i = 0; i < r; i++)
        for (int j = 0; j <= i; j++) {
            double acc = 0.0;
            for (int64_t k = 0; k < ni; k++) acc += (double)A[i * ni + k] * A[j * ni + k];
            f->M[i * r + j] = f->M[j * r + i] = acc;
        }
    if (s->in_copies < s->tp) { /* each input column is on in_copies of the tp ranks */
        MPI_Allreduce(MPI_IN_PLACE, f->M, r * r, MPI_DOUBLE, MPI_SUM, s->tp_comm);
        for (int i = 0; i < r * r; i++) f->M[i] /= (double)s->in_copies;
    }
    for (int i = 0; i < r; i++) f->M[i * r + i] += LORAFA_DELTA;
    linalg_pinv_sym(f->P, f->M, f->V, r, (double)r * FLT_EPSILON);
    const AdapterCfg *c = s->cfg;
    const double sc = c->use_rslora ? (double)c->alpha / sqrt((double)c->r)
                                    : (double)c->alpha / (double)c->r;
    for (int i = 0; i < r * r; i++) f->P[i] /= sc * sc;
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
        for (int k = 0; k < r; k++) f->row[k] = g[k];
        for (int j = 0; j < r; j++) {
            double acc = 0.0;
            for (int k = 0; k < r; k++) acc += f->row[k] * f->P[k * r + j];
            g[j] = (float)acc;
        }
    }
}

static double lorafa_flops_per_token(const AdapterSlot *s) {
    /* no dA GEMM */
    const double r = s->r, in = (double)s->shard.in, out = (double)s->shard.out;
    return 2.0 * r * (in + out) + 2.0 * r * (2.0 * out + in);
}

const AdapterKind adapter_lora = {
    .name = "lora",
    .declare = lora_declare,
    .init = lora_init,
    .alloc = lora_alloc,
    .release = lora_release,
    .forward = lora_forward,
    .backward = lora_backward,
    .flops_per_token = lora_flops_per_token,
    .io = &pissa_lora_io, /* --init pissa exports the rank-2r conversion (model/pissa.c) */
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
    .io = &pissa_lora_io,
    .destroy = lorafa_destroy,
    .grad_post = lorafa_grad_post,
};
