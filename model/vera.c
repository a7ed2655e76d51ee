/* VeRA (Kopiczko et al. 2024, "VeRA: Vector-based Random Matrix Adaptation") as PEFT
 * implements it (peft/tuners/vera/layer.py, model.py): one pair of frozen random matrices
 * shared by every adapted module, vera_A [r, max_in] and vera_B [max_out, r] (kaiming-uniform
 * with gain sqrt(2): bounds sqrt(6 / max_in) and sqrt(6 / r)), each module using the leading
 * slices A[:, :in] and B[:out, :]; trained vectors lambda_d [r] (init d_initial = 0.1) and
 * lambda_b [out] (init 0):
 *     y = W x + lambda_b ⊙ (B_s (lambda_d ⊙ (A_s dropout(x))))      (no alpha / r scale)
 *
 * The projections are regenerated from their key (PEFT's projection_prng_key; a run from
 * scratch uses its --seed) exactly as PEFT makes them: torch's CPU generator seeded with the
 * key fills vera_A, then vera_B (runtime/torchrng.h). So shardlora's projections are PEFT's
 * for the same key and sizes, and PEFT's adapters load whether or not they saved them. They
 * are the kind's model-wide state (AdapterKind.shared_new), held once per rank, not per
 * layer: r x (max_in + max_out) floats (58 MB at r = 256 on a 70B model). Each rank holds
 * them whole: column layers use all of A[:, :in], row layers all of B[:out]; the slices a rank
 * uses are views with a leading dimension, never copies.
 *
 * Tensor parallelism as LoRA's (DESIGN.md §4) with h = A_s x: column layers: lambda_d
 * replicated (its gradient a TP partial sum through B's row shard), lambda_b sharded with the
 * output rows; row layers: h is a TP partial sum, so y is one too (the caller's all-reduce
 * sums it) and both gradients are TP partial sums; lambda_b replicated. lambda_d is thus
 * always of class adapter_sync_class(tp, tp), lambda_b of the output rows' class.
 * s->pA is lambda_d's entry, s->pB lambda_b's.
 *
 * Legend: N rows, r rank, ni / no local in / out, I / O global, mi / mo = max_in / max_out. */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/err.h"
#include "../runtime/torchrng.h"
#include "adapter.h"
#include "adapter_io.h"
#include "lora.h"

#define VERA_D_INITIAL 0.1f /* PEFT VeraConfig.d_initial */

/* VeRA's settings (AdapterCfg.kind_opts): the shared projections' Philox key (PEFT's
 * projection_prng_key) and dimensions vera_A [r, max_in], vera_B [max_out, r], fixed by an
 * adapter (import, checkpoint JSON) when keyed; otherwise vera_shared_new takes the key from
 * the run's seed and the dimensions from the adapted modules (PEFT's _find_dim) and records
 * them here. */
typedef struct {
    int keyed;
    uint64_t key;
    int64_t max_in, max_out;
} VeraOpts;

static VeraOpts vera_opts(const AdapterCfg *c) {
    VeraOpts o;
    _Static_assert(sizeof o <= sizeof c->kind_opts.b, "VeraOpts does not fit AdapterOpts");
    memcpy(&o, c->kind_opts.b, sizeof o);
    return o;
}

static void vera_opts_set(AdapterCfg *c, const VeraOpts *o) {
    memcpy(c->kind_opts.b, o, sizeof *o);
}

/* The projections of one model (s->shared of its slots). */
typedef struct {
    int r;
    int64_t max_in, max_out; /* PEFT's _find_dim: maxima over the adapted modules */
    uint64_t key;            /* projection_prng_key */
    float *A;                /* [r, max_in] */
    float *B;                /* [max_out, r] */
} VeraProj;

/* Per-slot scratch (s->ext), sized in alloc. */
typedef struct {
    float *Bl; /* [no, r] lambda_b ⊙ B_s, rebuilt by forward and backward */
    float *M;  /* [no, r] dY^T (h ⊙ lambda_d) */
    float *g;  /* [N, r] dY Bl */
} VeraSlot;

/* A [r, max_in] and B [max_out, r] as PEFT makes them for projection_prng_key `key`. */
static void vera_proj_fill(float *A, float *B, uint64_t key, int r, int64_t max_in,
                           int64_t max_out) {
    /* PEFT model.py _init_vera_A_vera_B: generator = torch.Generator(device="cpu")
     * .manual_seed(projection_prng_key); vera_A = _kaiming_init((r, max_in)), then vera_B =
     * _kaiming_init((max_out, r)) from the same generator. _kaiming_init: fan_in = columns,
     * gain sqrt(2), std = gain / sqrt(fan), bound = sqrt(3) * std, uniform_(-bound, bound). */
    TorchRng g;
    torchrng_seed(&g, key);
    const double bA = sqrt(3.0) * (sqrt(2.0) / sqrt((double)max_in));
    const double bB = sqrt(3.0) * (sqrt(2.0) / sqrt((double)r));
    torchrng_uniform_f32(&g, A, (size_t)r * (size_t)max_in, -bA, bA);
    torchrng_uniform_f32(&g, B, (size_t)max_out * (size_t)r, -bB, bB);
}

static VeraSlot *vera_ext(const AdapterSlot *s) {
    return (VeraSlot *)s->ext;
}

static const VeraProj *vera_proj_of(const AdapterSlot *s) {
    return (const VeraProj *)s->shared;
}

static void vera_declare(AdapterSlot *s, ParamTable *pt) {
    char pre[160], name[192];
    const ShardDesc *sd = &s->shard;
    SL_CHECK(!s->cfg->slot_r, "VeRA: one rank for every module (PEFT's VeRA has no rank_pattern)");
    VeraSlot *v = calloc(1, sizeof *v);
    SL_CHECK(v, "VeRA: out of memory");
    s->ext = v;

    adapter_peft_prefix(pre, sizeof pre, s->layer, s->module);
    const int tp = s->tp;
    snprintf(name, sizeof name, "%s.vera_lambda_d", pre);
    s->pA =
        params_add(pt, name, 1, 1, s->r, 0, 1, 0, s->r, adapter_sync_class(tp, tp), tp, s->layer);
    snprintf(name, sizeof name, "%s.vera_lambda_b", pre);
    s->pB = params_add(pt, name, 1, 1, sd->out, 0, 1, sd->o0, sd->no,
                       adapter_sync_class(s->out_copies, tp), s->out_copies, s->layer);
    s->params = pt;
    s->scale = 1.0f;
}

static void vera_destroy(AdapterSlot *s) {
    free(s->ext);
}

/* The projections, once every slot is declared: their sizes are the maxima over the slots
 * (or the adapter's, when it fixes them: import, checkpoint), their key the adapter's or the
 * run seed; both go into cfg so the checkpoints and exports record them. */
static void *vera_shared_new(AdapterCfg *cfg, AdapterSlot *const *slots, int n, MemCtx *mem) {
    VeraProj *p = calloc(1, sizeof *p);
    SL_CHECK(p, "VeRA: out of memory");
    VeraOpts o = vera_opts(cfg);
    p->r = cfg->r;
    for (int k = 0; k < n; k++) {
        const ShardDesc *sd = &slots[k]->shard;
        SL_CHECK(slots[k]->r == p->r, "VeRA: rank %d at layer %d, %d elsewhere", slots[k]->r,
                 slots[k]->layer, p->r);
        SL_CHECK(!o.keyed || (sd->in <= o.max_in && sd->out <= o.max_out),
                 "VeRA: module [%lld, %lld] larger than the adapter's projections [%lld, %lld]",
                 (long long)sd->out, (long long)sd->in, (long long)o.max_out, (long long)o.max_in);
        if (sd->in > p->max_in) p->max_in = sd->in;
        if (sd->out > p->max_out) p->max_out = sd->out;
    }
    if (o.keyed) {
        p->max_in = o.max_in;
        p->max_out = o.max_out;
    }
    p->key = o.keyed ? o.key : cfg->seed;
    o.keyed = 1;
    o.key = p->key;
    o.max_in = p->max_in;
    o.max_out = p->max_out;
    vera_opts_set(cfg, &o);
    p->A = mem_alloc(mem, MEM_FROZEN, (size_t)p->r * (size_t)p->max_in * sizeof(float));
    p->B = mem_alloc(mem, MEM_FROZEN, (size_t)p->max_out * (size_t)p->r * sizeof(float));
    vera_proj_fill(p->A, p->B, p->key, p->r, p->max_in, p->max_out);
    return p;
}

static void vera_shared_free(void *shared, MemCtx *mem) {
    VeraProj *p = shared;
    mem_free(mem, MEM_FROZEN, p->A, (size_t)p->r * (size_t)p->max_in * sizeof(float));
    mem_free(mem, MEM_FROZEN, p->B, (size_t)p->max_out * (size_t)p->r * sizeof(float));
    free(p);
}

static void vera_init(AdapterSlot *s, ParamTable *pt) {
    float *d = params_value(pt, s->pA); /* [r] */
    for (int k = 0; k < s->r; k++)
        d[k] = VERA_D_INITIAL;
    memset(params_value(pt, s->pB), 0, params_numel(&pt->e[s->pB]) * sizeof(float));
}

/* The slot's h, dh [N, r] and, with dropout, xd, tmp [N, ni] are LoRA's (h = Xd A_s^T has
 * LoRA's shape), so adapter_lora's alloc / release size them, as for DoRA; VeraSlot's here. */
static void vera_alloc(AdapterSlot *s, MemCtx *m, int64_t max_rows) {
    adapter_lora.alloc(s, m, max_rows);
    VeraSlot *v = vera_ext(s);
    const size_t r = (size_t)s->r, no = (size_t)s->shard.no, N = (size_t)max_rows;
    v->g = mem_alloc(m, MEM_ACTIVATION, N * r * sizeof(float));
    v->Bl = mem_alloc(m, MEM_ACTIVATION, no * r * sizeof(float));
    v->M = mem_alloc(m, MEM_ACTIVATION, no * r * sizeof(float));
}

static void vera_release(AdapterSlot *s, MemCtx *m) {
    VeraSlot *v = vera_ext(s);
    const size_t r = (size_t)s->r, no = (size_t)s->shard.no, N = (size_t)s->max_rows;
    mem_free(m, MEM_ACTIVATION, v->g, N * r * sizeof(float));
    mem_free(m, MEM_ACTIVATION, v->Bl, no * r * sizeof(float));
    mem_free(m, MEM_ACTIVATION, v->M, no * r * sizeof(float));
    v->g = v->Bl = v->M = NULL;
    adapter_lora.release(s, m);
}

/* LoRA's buffers (adapter_lora.share) and VeraSlot's. */
static void vera_share(AdapterSlot *s, const AdapterSlot *owner) {
    adapter_lora.share(s, owner);
    VeraSlot *v = vera_ext(s);
    const VeraSlot *o = owner ? vera_ext(owner) : NULL;
    v->g = o ? o->g : NULL;
    v->Bl = o ? o->Bl : NULL;
    v->M = o ? o->M : NULL;
}

/* A_s: this slot's [r, ni] view of vera_A (leading dimension max_in); B_s: [no, r] rows of
 * vera_B. Bl = lambda_b ⊙ B_s (row o scaled by lambda_b[o]). */
static const float *vera_A_slice(const AdapterSlot *s) {
    return vera_proj_of(s)->A + s->shard.i0;
}

static void vera_build_Bl(const AdapterSlot *s) {
    VeraSlot *v = vera_ext(s);
    const int64_t r = s->r, no = s->shard.no;
    const float *B = vera_proj_of(s)->B + s->shard.o0 * r;
    const float *lb = params_value(s->params, s->pB);
    for (int64_t o = 0; o < no; o++)
        for (int64_t k = 0; k < r; k++)
            v->Bl[o * r + k] = lb[o] * B[o * r + k];
}

/* Saves h = Xd A_s^T [N, r] (a TP partial sum for row layers) and, with dropout, Xd. */
static void vera_forward(AdapterSlot *s, const AdapterEnv *env, float *Y, const float *X,
                         int64_t N) {
    SL_CHECK(N <= s->max_rows, "VeRA forward: %lld rows > %lld", (long long)N,
             (long long)s->max_rows);
    VeraSlot *v = vera_ext(s);
    const int64_t r = s->r, ni = s->shard.ni, no = s->shard.no, mi = vera_proj_of(s)->max_in;
    const float *ld = params_value(s->params, s->pA);
    const float *Xd = X;
    if (s->cfg->dropout > 0 && env->training) {
        adapter_dropout_forward(s, env, s->xd, X, N);
        Xd = s->xd;
    }
    /* h = Xd A_s^T ; hd = h ⊙ lambda_d ; Y += hd Bl^T */
    gemm_f32(env->gemm, 0, 1, N, r, ni, 1.0f, Xd, ni, vera_A_slice(s), mi, 0.0f, s->h, r);
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < r; k++)
            s->dh[n * r + k] = s->h[n * r + k] * ld[k];
    vera_build_Bl(s);
    gemm_f32(env->gemm, 0, 1, N, no, r, 1.0f, s->dh, r, v->Bl, r, 1.0f, Y, no);
}

/* Accumulates d lambda_b [no] += rowsum(B_s ⊙ (dY^T hd)) and d lambda_d [r] += sum_n h ⊙ g with
 * g = dY Bl; dX += dropout'((g ⊙ lambda_d) A_s). */
static void vera_backward(AdapterSlot *s, const AdapterEnv *env, float *dX, const float *dY,
                          const float *X, int64_t N) {
    VeraSlot *v = vera_ext(s);
    const int64_t r = s->r, ni = s->shard.ni, no = s->shard.no, mi = vera_proj_of(s)->max_in;
    const float *ld = params_value(s->params, s->pA);
    float *dld = params_grad(s->params, s->pA); /* [r] */
    float *dlb = params_grad(s->params, s->pB); /* [no] */
    const float *B = vera_proj_of(s)->B + s->shard.o0 * r;
    const int drop = s->cfg->dropout > 0 && env->training;
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < r; k++)
            s->dh[n * r + k] = s->h[n * r + k] * ld[k];
    gemm_f32(env->gemm, 1, 0, no, r, N, 1.0f, dY, no, s->dh, r, 0.0f, v->M, r);
    for (int64_t o = 0; o < no; o++) {
        float acc = 0.0f;
        for (int64_t k = 0; k < r; k++)
            acc += B[o * r + k] * v->M[o * r + k];
        dlb[o] += acc;
    }
    vera_build_Bl(s);
    gemm_f32(env->gemm, 0, 0, N, r, no, 1.0f, dY, no, v->Bl, r, 0.0f, v->g, r);
    for (int64_t k = 0; k < r; k++) {
        float acc = 0.0f;
        for (int64_t n = 0; n < N; n++)
            acc += s->h[n * r + k] * v->g[n * r + k];
        dld[k] += acc;
    }
    for (int64_t n = 0; n < N; n++)
        for (int64_t k = 0; k < r; k++)
            v->g[n * r + k] *= ld[k];
    if (!drop) {
        gemm_f32(env->gemm, 0, 0, N, ni, r, 1.0f, v->g, r, vera_A_slice(s), mi, 1.0f, dX, ni);
        return;
    }
    gemm_f32(env->gemm, 0, 0, N, ni, r, 1.0f, v->g, r, vera_A_slice(s), mi, 0.0f, s->tmp, ni);
    adapter_dropout_backward(s, env, dX, s->tmp, X, s->xd, N);
}

static double vera_flops_per_token(const AdapterSlot *s) {
    /* forward: A (2 r in) and B (2 r out); backward: M and g (2 r out each), dX (2 r in) */
    const double r = s->r, in = (double)s->shard.in, out = (double)s->shard.out;
    return 2.0 * r * (in + out) + 2.0 * r * (2.0 * out + in);
}

/* ---- merging: PEFT's get_delta_weight (vera/layer.py): delta = (lambda_b ⊙ B_s)
 * (lambda_d ⊙ A_s), i.e. LoRA's merge (lora_merge_rows) with s = 1 of the factors
 *   Ad [r, I] = lambda_d ⊙ A_s (row k scaled by lambda_d[k]), Bd [nr, r] = lambda_b ⊙ B_s rows,
 * formed here for generate --merge-in-memory (on the shard) and `shardlora merge` alike. */

/* Ad [r, n] = lambda_d[k] x A[k, c0 + i] for A with leading dimension lda. */
static void vera_scaled_A(float *Ad, const float *A, int64_t lda, int64_t c0, const float *ld,
                          int r, int64_t n) {
    for (int64_t k = 0; k < r; k++)
        for (int64_t i = 0; i < n; i++)
            Ad[k * n + i] = ld[k] * A[k * lda + c0 + i];
}

/* Bd [nr, r] = lambda_b[o] x B[row0 + o, :] for B [*, r] and lb [nr]. */
static void vera_scaled_B(float *Bd, const float *B, int64_t row0, const float *lb, int r,
                          int64_t nr) {
    for (int64_t o = 0; o < nr; o++)
        for (int64_t k = 0; k < r; k++)
            Bd[o * r + k] = lb[o] * B[(row0 + o) * r + k];
}

/* generate --merge-in-memory: rows [r0, r0 + nr) of this rank's shard (columns i0.. of A,
 * rows o0.. of B); the values are those of the unsharded merge. */
static void vera_merge(const AdapterSlot *s, const AdapterEnv *env, float *W, int64_t r0,
                       int64_t nr) {
    const VeraProj *p = vera_proj_of(s);
    const int r = s->r;
    const int64_t ni = s->shard.ni;
    const int threads = env->gemm && env->gemm->nthreads > 0 ? env->gemm->nthreads : 1;
    float *Ad = malloc((size_t)r * (size_t)ni * sizeof(float)); /* [r, ni] */
    float *Bd = malloc((size_t)nr * (size_t)r * sizeof(float)); /* [nr, r] */
    SL_CHECK(Ad && Bd, "VeRA merge: out of memory");
    vera_scaled_A(Ad, p->A, p->max_in, s->shard.i0, params_value(s->params, s->pA), r, ni);
    vera_scaled_B(Bd, p->B, s->shard.o0 + r0, params_value(s->params, s->pB) + r0, r, nr);
    lora_merge_rows(W, nr, ni, Ad, Bd, r, 1.0f, threads);
    free(Ad);
    free(Bd);
}

/* ---------------------------------------------------------------- PEFT VERA (AdioKindIo) */

/* The checkpoint's adapter JSON keeps what the export needs to regenerate the projections:
 * their key (PEFT's projection_prng_key) and dimensions, read back into VeraOpts
 * (vera_shared_new completes them for a run trained from scratch). */
static void vera_cfg_json(const AdapterCfg *c, char *buf, size_t n) {
    const VeraOpts o = vera_opts(c);
    SL_CHECK(o.keyed, "VeRA: adapter configuration written before the model's projections exist");
    const uint64_t key = o.key;
    const int64_t mi = o.max_in, mo = o.max_out;
    snprintf(buf, n,
             ", \"projection_prng_key\": %llu, \"vera_max_in\": %lld, \"vera_max_out\": %lld",
             (unsigned long long)key, (long long)mi, (long long)mo);
}

static int vera_cfg_from_json(AdapterCfg *c, const json_t *root, ErrStatus *st) {
    const json_t *k = json_object_get(root, "projection_prng_key"),
                 *mi = json_object_get(root, "vera_max_in"),
                 *mo = json_object_get(root, "vera_max_out");
    if (!json_is_integer(k) || !json_is_integer(mi) || !json_is_integer(mo) ||
        json_integer_value(mi) <= 0 || json_integer_value(mo) <= 0)
        return err_status_set(
            st, "adapter configuration: VeRA needs projection_prng_key, vera_max_in and "
                "vera_max_out");
    const VeraOpts o = {1, (uint64_t)json_integer_value(k), json_integer_value(mi),
                        json_integer_value(mo)};
    vera_opts_set(c, &o);
    return 1;
}

static void vera_peft_config(const AdioCfg *c, PeftConfig *pc) {
    pc->peft_type = "VERA";
    pc->d_initial = 0.1; /* VERA_D_INITIAL, written as PEFT writes it */
    pc->save_projection = 1;
    pc->projection_prng_key = vera_opts(&c->acfg).key;
}

static int vera_has_suffix(const char *name, const char *suffix) {
    const size_t n = strlen(name), k = strlen(suffix);
    return n >= k && strcmp(name + n - k, suffix) == 0;
}

/* The lambdas as 1-D tensors plus the shared projections base_model.vera_A
 * [r, max_in] and base_model.vera_B [max_out, r] regenerated from their key (PEFT's
 * get_peft_model_state_dict with save_projection: keys without the adapter name). */
static int vera_export_tensors(const AdioCfg *c, const AdioTensor *t, int n, AdioTensor **out,
                               int *nout, void **keep, ErrStatus *st) {
    const VeraOpts vo = vera_opts(&c->acfg);
    if (!vo.keyed)
        return err_status_set(
            st, "export: VeRA configuration without the projections' key and dimensions");
    const int64_t mi = vo.max_in, mo = vo.max_out;
    const uint64_t key = vo.key;
    const int r = c->acfg.r;
    for (int k = 0; k < n; k++) {
        const int is_d = vera_has_suffix(t[k].name, ".vera_lambda_d"),
                  is_b = vera_has_suffix(t[k].name, ".vera_lambda_b");
        if ((!is_d && !is_b) || t[k].rows != 1 || (is_d && t[k].cols != r) ||
            (is_b && t[k].cols > mo))
            return err_status_set(
                st,
                "export: tensor '%s' [%lld, %lld] is not a VeRA vector of this configuration "
                "(vera_lambda_d [%d] / vera_lambda_b [out <= %lld])",
                t[k].name, (long long)t[k].rows, (long long)t[k].cols, r, (long long)mo);
    }
    AdioTensor *o = calloc((size_t)n + 2, sizeof *o);
    float *buf = malloc((size_t)r * (size_t)(mi + mo) * sizeof(float));
    SL_CHECK(o && buf, "out of memory");
    for (int k = 0; k < n; k++) {
        o[k] = t[k];
        o[k].rows = 0; /* a 1-D tensor (adapter_io.h), as PEFT's [r] / [out] */
    }
    vera_proj_fill(buf, buf + (size_t)r * (size_t)mi, key, r, mi, mo);
    o[n] = (AdioTensor){"base_model.vera_A", r, mi, buf};
    o[n + 1] = (AdioTensor){"base_model.vera_B", mo, r, buf + (size_t)r * (size_t)mi};
    *out = o;
    *nout = n + 2;
    *keep = buf;
    return 1;
}

static const char vera_key_A[] = "base_model.vera_A", vera_key_B[] = "base_model.vera_B";

/* Import (PEFT's VERA format, the keys vera_export_tensors writes): the lambdas of the
 * targeted modules and the shared projections. */
static int vera_import_key(const AdioCfg *c, const char *key) {
    (void)c;
    return strcmp(key, ".vera_lambda_d") == 0 || strcmp(key, ".vera_lambda_b") == 0 ||
           strcmp(key, vera_key_A) == 0 || strcmp(key, vera_key_B) == 0;
}

/* PEFT's adapters load whether they saved their projections or not: saved ones must be the
 * projections of their projection_prng_key (which every PEFT adapter's are; a file whose
 * projections were edited is refused, since only the key is kept here); unsaved ones are
 * regenerated with the sizes PEFT's _find_dim gives on this model. Every lambda's shape is
 * checked by adio_load against the table. */
static int vera_import_cfg(AdioCfg *c, const PeftAdapter *a, const LlamaModel *m, ErrStatus *st) {
    const char *file = a->tensors.path;
    const uint64_t key = a->projection_prng_key;
    const int r = a->r;
    for (int k = 0; k < a->tensors.ntensors; k++) {
        const char *name = a->tensors.tensors[k].name;
        if (!vera_has_suffix(name, ".vera_lambda_d") && !vera_has_suffix(name, ".vera_lambda_b") &&
            strcmp(name, vera_key_A) != 0 && strcmp(name, vera_key_B) != 0)
            return err_status_set(st,
                                  "%s: tensor '%s' is not a VeRA tensor (<module>.vera_lambda_d, "
                                  "<module>.vera_lambda_b, %s, %s)",
                                  file, name, vera_key_A, vera_key_B);
    }
    int64_t need_in = 0, need_out = 0;
    for (int64_t l = 0; l < m->L; l++)
        for (int i = 0; i < MOD_NMODULES; i++) {
            if (c->slot_r[l * MOD_NMODULES + i] == 0) continue;
            const ShardDesc *sd = &m->layers[l].lin[i].shard;
            if (sd->in > need_in) need_in = sd->in;
            if (sd->out > need_out) need_out = sd->out;
        }
    const StTensor *tA = st_find(&a->tensors, vera_key_A), *tB = st_find(&a->tensors, vera_key_B);
    VeraOpts vo = {1, key, need_in, need_out};
    vera_opts_set(&c->acfg, &vo);
    if (!a->save_projection && !tA && !tB) return 1;
    if (!tA || !tB)
        return err_status_set(st, "%s: %s without %s (save_projection %s): the file is incomplete",
                              file, tA ? vera_key_A : vera_key_B, tA ? vera_key_B : vera_key_A,
                              a->save_projection ? "true" : "false");
    if (tA->ndim != 2 || tA->shape[0] != r || tA->shape[1] < need_in || tB->ndim != 2 ||
        tB->shape[1] != r || tB->shape[0] < need_out) {
        char ha[96], hb[96];
        snprintf(ha, sizeof ha, "[%lld, %lld]", (long long)tA->shape[0],
                 tA->ndim > 1 ? (long long)tA->shape[1] : 0LL);
        snprintf(hb, sizeof hb, "[%lld, %lld]", (long long)tB->shape[0],
                 tB->ndim > 1 ? (long long)tB->shape[1] : 0LL);
        return err_status_set(
            st,
            "%s: %s %s and %s %s do not fit r = %d and the targeted modules (need [%d, >= %lld] "
            "and [>= %lld, %d])",
            file, vera_key_A, ha, vera_key_B, hb, r, r, (long long)need_in, (long long)need_out, r);
    }
    const int64_t mi = tA->shape[1], mo = tB->shape[0];
    const size_t nA = (size_t)r * (size_t)mi, nB = (size_t)mo * (size_t)r;
    float *want = malloc((nA + nB) * sizeof(float)), *have = malloc((nA + nB) * sizeof(float));
    SL_CHECK(want && have, "out of memory");
    vera_proj_fill(want, want + nA, key, r, mi, mo);
    StFile *f = (StFile *)&a->tensors; /* reads only (pread) */
    int ok = st_read_all(f, tA, ST_F32, have, st) && st_read_all(f, tB, ST_F32, have + nA, st);
    int64_t bad = 0, first = -1;
    double maxdiff = 0.0;
    for (size_t i = 0; ok && i < nA + nB; i++) {
        if (have[i] == want[i]) continue;
        if (first < 0) first = (int64_t)i;
        bad++;
        const double d = fabs((double)have[i] - (double)want[i]);
        if (!(d <= maxdiff)) maxdiff = d; /* NaN counts as the largest */
    }
    free(want);
    free(have);
    if (!ok) return 0;
    if (bad)
        return err_status_set(
            st,
            "%s: the adapter's VeRA projections are not those of its projection_prng_key %llu "
            "(PEFT: torch.Generator().manual_seed(key), kaiming-uniform vera_A then vera_B): "
            "%lld of %lld values differ, the first at %s[%lld] (max |difference| %.3g)",
            file, (unsigned long long)key, (long long)bad, (long long)(nA + nB),
            first < (int64_t)nA ? vera_key_A : vera_key_B,
            (long long)(first < (int64_t)nA ? first : first - (int64_t)nA), maxdiff);
    vo.max_in = mi;
    vo.max_out = mo;
    vera_opts_set(&c->acfg, &vo);
    return 1;
}

/* Model card: VeRA has no alpha; its scale and projections instead. */
static void vera_card_rows(const AdioCfg *c, char *buf, size_t n) {
    const VeraOpts o = vera_opts(&c->acfg);
    const int r = c->acfg.r;
    /* PEFT's VeRA (peft/tuners/vera): no alpha; y = W x + lambda_b ⊙ B (lambda_d ⊙ A x) */
    snprintf(buf, n,
             "| scale | none: y = W x + lambda_b ⊙ vera_B (lambda_d ⊙ vera_A x) |\n"
             "| projection_prng_key | %llu (vera_A [%d, %lld], vera_B [%lld, %d]) |\n",
             (unsigned long long)o.key, r, (long long)o.max_in, (long long)o.max_out, r);
}

/* ---- `shardlora merge` from a PEFT VERA file (AdioKindIo merge_*) ------------------------ */

/* The projections every item uses, whole, F32: A [r, mi], B [mo, r]. */
typedef struct {
    int r;
    int64_t mi, mo;
    float *A, *B;
} VeraMergeProj;

/* it->module's lambdas: vera_lambda_d [r], vera_lambda_b [rows]; t = {lambda_d, lambda_b}. */
static int vera_merge_plan(AdioMergeItem *it, const PeftAdapter *a, unsigned char *used,
                           ErrStatus *st) {
    const StTensor *LD = peft_tensor(a, it->module, "vera_lambda_d");
    const StTensor *LB = peft_tensor(a, it->module, "vera_lambda_b");
    const StTensor *base = a->tensors.tensors;
    if (LD) used[LD - base] = 1;
    if (LB) used[LB - base] = 1;
    if (!LD && !LB)
        return adio_merge_untargeted(a, it->module, "vera_lambda_d / vera_lambda_b", st);
    const char *ap = a->tensors.path;
    if (!adio_merge_targeted(a, it->module, LD ? LD : LB, st)) return 0;
    if (!LD || !LB)
        return err_status_set(st, "%s: module '%s' has %s but no %s", ap, it->module,
                              LD ? LD->name : LB->name, LD ? "vera_lambda_b" : "vera_lambda_d");
    const StTensor *chk[2] = {LD, LB};
    const int64_t want[2] = {a->r, it->rows};
    for (int i = 0; i < 2; i++) {
        if (!adio_merge_check(it, a, chk[i], -1, -1, NULL, st)) return 0;
        if (chk[i]->ndim != 1 || chk[i]->shape[0] != want[i]) {
            char got[96], mshape[96];
            adio_shape_str(got, sizeof got, chk[i]);
            adio_shape_str(mshape, sizeof mshape, it->w);
            return err_status_set(
                st,
                "%s: tensor '%s' has shape %s, but it must be [%lld] (r = %d, the model's "
                "'%s' is %s): adapter for another model?",
                ap, chk[i]->name, got, (long long)want[i], a->r, it->w->name, mshape);
        }
    }
    if (!adio_merge_check(it, a, NULL, 0, 0, NULL, st)) return 0;
    it->adapted = 1;
    it->t[0] = LD;
    it->t[1] = LB;
    it->r = a->r;
    it->scale = 1.0f;
    it->bad_note = "";
    it->item_floats = (size_t)a->r * (size_t)it->cols + (size_t)a->r; /* Ad, then lambda_d */
    it->row_floats = (size_t)a->r + 1;                                /* Bd rows, lambda_b */
    return 1;
}

/* The projections: read whole from the file (base_model.vera_A / vera_B, which must cover
 * every adapted module), or, when the adapter does not save them (PEFT then ignores any in
 * the file), regenerated from projection_prng_key with the sizes PEFT's _find_dim gives (the
 * maxima over the targeted modules, each of which has lambdas). */
static int vera_merge_shared(PeftAdapter *a, const AdioMergeItem *items, int n, unsigned char *used,
                             void **shared, uint64_t *bytes, ErrStatus *st) {
    const char *ap = a->tensors.path;
    const StTensor *tA = st_find(&a->tensors, vera_key_A), *tB = st_find(&a->tensors, vera_key_B);
    const StTensor *base = a->tensors.tensors;
    const int r = a->r;
    int64_t mi = 0, mo = 0;
    for (int i = 0; i < n; i++)
        if (items[i].adapted) {
            if (items[i].cols > mi) mi = items[i].cols;
            if (items[i].rows > mo) mo = items[i].rows;
        }
    if (tA) used[tA - base] = 1;
    if (tB) used[tB - base] = 1;
    if (a->save_projection) {
        if (!tA && !tB)
            return err_status_set(
                st,
                "%s: save_projection is true but %s and %s are absent (PEFT refuses such a "
                "file too)",
                ap, vera_key_A, vera_key_B);
        if (!tA || !tB)
            return err_status_set(st, "%s: %s without %s: the file is incomplete", ap,
                                  tA ? vera_key_A : vera_key_B, tA ? vera_key_B : vera_key_A);
        const int fa = tA->dtype == ST_F32 || tA->dtype == ST_BF16 || tA->dtype == ST_F16;
        const int fb = tB->dtype == ST_F32 || tB->dtype == ST_BF16 || tB->dtype == ST_F16;
        if (tA->ndim != 2 || tA->shape[0] != r || tA->shape[1] < mi || tB->ndim != 2 ||
            tB->shape[1] != r || tB->shape[0] < mo || !fa || !fb) {
            char ga[96], gb[96];
            adio_shape_str(ga, sizeof ga, tA);
            adio_shape_str(gb, sizeof gb, tB);
            return err_status_set(
                st,
                "%s: %s %s %s and %s %s %s do not cover r = %d and the adapted modules (need "
                "[%d, >= %lld] and [>= %lld, %d], float)",
                ap, vera_key_A, ga, st_dtype_name(tA->dtype), vera_key_B, gb,
                st_dtype_name(tB->dtype), r, r, (long long)mi, (long long)mo, r);
        }
        mi = tA->shape[1];
        mo = tB->shape[0];
    }
    VeraMergeProj *p = calloc(1, sizeof *p);
    SL_CHECK(p, "out of memory");
    p->r = r;
    p->mi = mi;
    p->mo = mo;
    p->A = malloc((size_t)r * (size_t)mi * sizeof(float));
    p->B = malloc((size_t)mo * (size_t)r * sizeof(float));
    SL_CHECK(p->A && p->B, "out of memory");
    *shared = p;
    *bytes = (uint64_t)r * (uint64_t)(mi + mo) * sizeof(float);
    if (!a->save_projection) { /* PEFT's buffers are then not loaded from the file: regenerated */
        vera_proj_fill(p->A, p->B, a->projection_prng_key, r, mi, mo);
        return 1;
    }
    return st_read_all(&a->tensors, tA, ST_F32, p->A, st) &&
           st_read_all(&a->tensors, tB, ST_F32, p->B, st);
}

static void vera_merge_shared_free(void *shared) {
    VeraMergeProj *p = shared;
    if (!p) return;
    free(p->A);
    free(p->B);
    free(p);
}

/* ibuf = Ad [r, cols] (lambda_d [r] read into its tail first). */
static int vera_merge_begin(const AdioMergeItem *it, PeftAdapter *a, const void *shared,
                            float *ibuf, ErrStatus *st) {
    const VeraMergeProj *p = shared;
    float *ld = ibuf + (int64_t)it->r * it->cols;
    if (!st_read_all(&a->tensors, it->t[0], ST_F32, ld, st)) return 0;
    vera_scaled_A(ibuf, p->A, p->mi, 0, ld, it->r, it->cols);
    return 1;
}

/* rbuf = Bd [k, r], then lambda_b [k]. */
static int64_t vera_merge_stream(const AdioMergeItem *it, PeftAdapter *a, const void *shared,
                                 const float *ibuf, float *rbuf, float *W, int64_t row0, int64_t k,
                                 int threads, ErrStatus *st) {
    const VeraMergeProj *p = shared;
    float *Bd = rbuf, *lb = rbuf + k * it->r;
    if (!st_read_slice(&a->tensors, it->t[1], 0, 1, row0, k, ST_F32, lb, st)) return -1;
    vera_scaled_B(Bd, p->B, row0, lb, it->r, k);
    return lora_merge_rows(W, k, it->cols, ibuf, Bd, it->r, it->scale, threads);
}

static const AdioKindIo vera_io = {
    .cfg_json = vera_cfg_json,
    .cfg_from_json = vera_cfg_from_json,
    .peft_config = vera_peft_config,
    .export_tensors = vera_export_tensors,
    .import_key = vera_import_key,
    .import_cfg = vera_import_cfg,
    .card_init = "lambda_d = 0.1, lambda_b = 0; vera_A, vera_B kaiming-uniform from "
                 "torch.Generator().manual_seed(projection_prng_key), as PEFT",
    .card_rows = vera_card_rows,
    .merge_help =
        "W + (lambda_b ⊙ vera_B[:out]) (lambda_d ⊙ vera_A[:, :in]), the projections from the "
        "file or regenerated from projection_prng_key",
    .merge_plan = vera_merge_plan,
    .merge_shared = vera_merge_shared,
    .merge_shared_free = vera_merge_shared_free,
    .merge_begin = vera_merge_begin,
    .merge_rows = vera_merge_stream,
};

const AdapterKind adapter_vera = {
    .name = "vera",
    .title = "VeRA",
    .declare = vera_declare,
    .init = vera_init,
    .alloc = vera_alloc,
    .release = vera_release,
    .forward = vera_forward,
    .backward = vera_backward,
    .flops_per_token = vera_flops_per_token,
    .peft_type = "VERA",
    .own_init = "VeRA initialises its own projections",
    .merge = vera_merge,
    .io = &vera_io,
    .shared_new = vera_shared_new,
    .shared_free = vera_shared_free,
    .destroy = vera_destroy,
    .share = vera_share,
    .saves = adapter_lora_saves, /* h and Xd (g, Bl and M are backward's scratch) */
};
