/* Unit tests of the adapter kinds (model/lora.c, dora.c, vera.c) through lin_forward /
 * lin_backward on one small Linear at tp = 1: every trainable adapter tensor's gradient and
 * the input gradient dX against central finite differences of L = sum(Y ⊙ R) (R fixed,
 * random), for every kind in the registry, with and without dropout, with rsLoRA and with a
 * non-default alpha; dropout masks keyed (the same mask on a second forward, another one at
 * another step); plain LoRA's forward against the formula in double (scale alpha / r or
 * alpha / sqrt(r), the scalar dropout mask); rsLoRA at alpha equal to plain scaling at
 * alpha sqrt(r) for every kind. Exits non-zero on any failure.
 *
 * Legend: N rows, O out, I in, r rank. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "model/adapter.h"
#include "model/linear.h"
#include "model/params.h"
#include "parallel/grid.h"
#include "runtime/gemm.h"
#include "runtime/mem.h"
#include "tests/unit/check.h"

/* ---- helpers ---------------------------------------------------------------------------- */

static double max_abs(const float *a, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        m = fabs((double)a[i]) > m ? fabs((double)a[i]) : m;
    return m;
}

static double rel_err(const float *a, const float *b, int64_t n) {
    double md = 0, mr = max_abs(b, n);
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= md)) md = d;
    }
    return md / (mr > 1e-6 ? mr : 1e-6);
}

/* Every kind is linear in each single parameter and input element (LoRA: s B A x, DoRA with
 * n held: (m/n) ⊙ (W x + s B A x), VeRA: lambda_b ⊙ B (lambda_d ⊙ A x)), so central
 * differences have no truncation error: what remains is fp32 rounding of the forward
 * (sums of ~I terms of size ~1), about 1e-7 of |L| per evaluation, over a step of 2e-1.
 * Measured: max relative error <= 2.1e-6 for every tensor of every kind and case (the PASS
 * lines); FD_TOL leaves a margin of ~50x and still catches a 1% error in one element (the
 * negative control below). */
#define FD_H 1e-1
#define FD_TOL 1e-4

/* ---- the slot set-up, as model/llama.c llama_init_adapters does it ------------------------ */

/* What a case varies; the AdapterCfg fields the test sets are only these (kind, r, alpha,
 * use_rslora, dropout, targets, seed): every other field keeps its zero default. */
typedef struct {
    const char *kind;
    int r;
    float alpha;
    int use_rslora;
    float dropout;
} Case;

/* One adapted Linear and its adapter: the frozen W [O, I] and bias [O] are the caller's. */
typedef struct {
    const AdapterKind *kind;
    AdapterCfg cfg;
    ParamTable pt;
    AdapterSlot slot;
    Linear lin;
    Grid grid; /* one rank: the slot's counted collectives are no-ops at tp = 1 */
    MemCtx *mem;
} Rig;

#define RIG_LAYER 1
#define RIG_MODULE MOD_UP
#define RIG_SEED 20240611u

/* declare -> shared_new (VeRA's projections) -> params_finalize -> init -> alloc, for one
 * slot on a Linear holding the whole W at tp = 1 (SHARD_NONE, as llama_load at tp = 1).
 * The only place that knows the slot's fields: adapt it when the adapter interface moves. */
static void rig_setup(Rig *t, const AdapterKind *kind, const Case *c, const float *W, float *bias,
                      int64_t O, int64_t I, int64_t N, MemCtx *mem) {
    memset(t, 0, sizeof *t);
    t->kind = kind;
    t->mem = mem;
    snprintf(t->cfg.kind, sizeof t->cfg.kind, "%s", kind->name);
    t->cfg.r = c->r;
    t->cfg.alpha = c->alpha;
    t->cfg.use_rslora = c->use_rslora;
    t->cfg.dropout = c->dropout;
    t->cfg.targets = 1u << RIG_MODULE;
    t->cfg.seed = RIG_SEED;

    t->lin.shard = shard_even(SHARD_NONE, O, I, 1, 0);
    t->lin.w = (GemmWeight){GEMM_F32, W, O, I, I, NULL};
    t->lin.bias = bias;
    t->lin.add_bias = bias != NULL;

    AdapterSlot *s = &t->slot;
    params_init(&t->pt);
    s->r = c->r;
    s->alpha = c->alpha;
    s->kind = kind;
    s->cfg = &t->cfg;
    s->layer = RIG_LAYER;
    s->module = RIG_MODULE;
    s->shard = t->lin.shard;
    s->lin = &t->lin;
    t->grid.tp = t->grid.dp = t->grid.pp = t->grid.world_size = 1;
    t->grid.world = t->grid.tp_comm = t->grid.dp_comm = t->grid.pp_comm = MPI_COMM_SELF;
    s->grid = &t->grid;
    s->tp = 1;
    s->in_copies = 1;
    s->out_copies = 1;
    kind->declare(s, &t->pt);
    t->lin.adapter = s;
    if (kind->shared_new) s->shared = kind->shared_new(&t->cfg, &s, 1, mem);
    params_finalize(&t->pt, mem);
    kind->init(s, &t->pt);
    kind->alloc(s, mem, N);
}

static void rig_free(Rig *t) {
    AdapterSlot *s = &t->slot;
    t->kind->release(s, t->mem);
    if (t->kind->destroy) t->kind->destroy(s);
    if (t->kind->shared_free && s->shared) t->kind->shared_free(s->shared, t->mem);
    params_free(&t->pt, t->mem);
}

/* PEFT's inits leave B (LoRA, LoRA-FA, DoRA) and lambda_b (VeRA) at zero, where the
 * gradients of the other factors vanish: every all-zero trainable tensor gets values. */
static void rig_fill_zero_tensors(Rig *t) {
    for (int i = 0; i < t->pt.n; i++) {
        if (params_is_frozen(&t->pt, i)) continue;
        float *v = params_value(&t->pt, i);
        size_t n = params_numel(&t->pt.e[i]);
        if (max_abs(v, (int64_t)n) != 0) continue;
        for (size_t k = 0; k < n; k++)
            v[k] = 0.5f * check_rnd();
    }
}

static void rig_step_begin(Rig *t, const AdapterEnv *env) {
    if (t->kind->step_begin) t->kind->step_begin(&t->slot, env);
}

/* The tensor's name after the module's PEFT prefix ("lora_A.weight", ...). */
static const char *short_name(const Rig *t, int i) {
    const char *n = t->pt.e[i].name, *m = strstr(n, adapter_module_name(RIG_MODULE));
    return m ? m + strlen(adapter_module_name(RIG_MODULE)) + 1 : n;
}

/* ---- the loss and the finite-difference check -------------------------------------------- */

typedef struct {
    Rig *t;
    GemmCtx *gc;
    AdapterEnv env;
    const float *X, *R;
    float *Y;
    int64_t N, O;
    /* DoRA: f = m / n is set in step_begin, where n is computed from A, B and W. Backward
     * treats n as a constant (DESIGN.md §4, PEFT's weight_norm.detach(), the DoRA paper's
     * section 4.3), so the finite differences of A and B must hold n fixed: step_begin runs
     * once at the base point and not again while A or B are perturbed. m enters only
     * through f, which step_begin refreshes: when m is perturbed step_begin runs before each
     * forward (A, B and W are unchanged, so it recomputes the same n). */
    int refresh;
} LossCtx;

static double loss_adapter(void *p) {
    LossCtx *c = p;
    if (c->refresh) rig_step_begin(c->t, &c->env);
    lin_forward(c->gc, &c->t->lin, &c->env, c->Y, c->X, c->N);
    return check_dot_f64(c->Y, c->R, c->N * c->O);
}

/* Only entries whose forward effect step_begin caches need the refresh (see LossCtx). */
static int needs_refresh(const Rig *t, int i) {
    const char *n = t->pt.e[i].name, *suf = ".lora_magnitude_vector";
    size_t ln = strlen(n), ls = strlen(suf);
    return t->kind->step_begin && ln >= ls && strcmp(n + ln - ls, suf) == 0;
}

static int g_negative_done;

/* All finite-difference checks of one kind and case. */
static void test_fd_case(const AdapterKind *kind, const Case *c, GemmCtx *gc, MemCtx *mem) {
    const int64_t O = 12, I = 10, N = 7;
    char label[96], name[320];
    snprintf(label, sizeof label, "%s r%d a%g rs%d p%g", kind->name, c->r, (double)c->alpha,
             c->use_rslora, (double)c->dropout);
    float *W = check_frand(O * I, 0.4f), *bias = check_frand(O, 0.5f),
          *X = check_frand(N * I, 1.0f);
    float *R = check_frand(N * O, 1.0f), *Y = check_falloc(N * O), *Y2 = check_falloc(N * O);
    X[3] = 0.0f; /* dropout's backward draws the mask again where X = 0 */
    Rig t;
    rig_setup(&t, kind, c, W, bias, O, I, N, mem);
    rig_fill_zero_tensors(&t);
    LossCtx lc = {&t, gc, {gc, 77, 3, 5, 1}, X, R, Y, N, O, 0};
    rig_step_begin(&t, &lc.env);

    /* keyed dropout: the same env gives the same mask (the same Y bit for bit); another step
     * another mask; evaluation none */
    lin_forward(gc, &t.lin, &lc.env, Y, X, N);
    lin_forward(gc, &t.lin, &lc.env, Y2, X, N);
    snprintf(name, sizeof name, "%s: forward twice", label);
    CHECK_TRUE(memcmp(Y, Y2, (size_t)(N * O) * sizeof *Y) == 0, "%s: not bit-identical", name);
    if (c->dropout > 0) {
        AdapterEnv e2 = lc.env;
        e2.step++;
        lin_forward(gc, &t.lin, &e2, Y2, X, N);
        double d = rel_err(Y2, Y, N * O);
        CHECK_TRUE(d > 1e-3, "%s: step %lld and %lld gave the same dropout mask (diff %.3e)", label,
                   (long long)lc.env.step, (long long)e2.step, d);
        AdapterEnv ev = lc.env;
        ev.training = 0;
        rig_step_begin(&t, &ev);
        lin_forward(gc, &t.lin, &ev, Y2, X, N);
        d = rel_err(Y2, Y, N * O);
        CHECK_TRUE(d > 1e-3,
                   "%s: dropout %g changed nothing in training (diff %.3e): does the "
                   "kind apply it?",
                   label, (double)c->dropout, d);
        rig_step_begin(&t, &lc.env);
    }

    /* numerical gradients of every trainable tensor and of X */
    const ParamTable *pt = &t.pt;
    float **num = calloc((size_t)pt->n, sizeof *num);
    for (int i = 0; i < pt->n; i++) {
        if (params_is_frozen(pt, i)) continue;
        int64_t n = (int64_t)params_numel(&pt->e[i]);
        num[i] = check_falloc(n);
        lc.refresh = needs_refresh(&t, i);
        check_fd_grad(num[i], params_value(pt, i), n, FD_H, loss_adapter, &lc);
        lc.refresh = 0;
        rig_step_begin(&t, &lc.env); /* back to the base point's f after refreshed steps */
    }
    float *numx = check_falloc(N * I);
    check_fd_grad(numx, X, N * I, FD_H, loss_adapter, &lc);

    /* analytic: forward at the base point, backward into pre-filled buffers (both accumulate) */
    rig_step_begin(&t, &lc.env);
    lin_forward(gc, &t.lin, &lc.env, Y, X, N);
    float *g0 = check_frand((int64_t)pt->trainable, 1.0f), *dx0 = check_frand(N * I, 1.0f);
    float *dx = check_falloc(N * I);
    memcpy(pt->grads, g0, pt->trainable * sizeof *g0);
    memcpy(dx, dx0, (size_t)(N * I) * sizeof *dx);
    lin_backward(gc, &t.lin, &lc.env, dx, R, X, N, 1.0f);
    int ntrained = 0;
    for (int i = 0; i < pt->n; i++) {
        if (!num[i]) continue;
        ntrained++;
        int64_t n = (int64_t)params_numel(&pt->e[i]);
        size_t off = pt->e[i].offset;
        float *ana = check_falloc(n);
        for (int64_t k = 0; k < n; k++)
            ana[k] = pt->grads[off + k] - g0[off + k];
        snprintf(name, sizeof name, "%s d%s", label, short_name(&t, i));
        check_close(name, ana, num[i], n, FD_TOL);
        CHECK_TRUE(max_abs(num[i], n) > 1e-3, "%s: the loss does not depend on it", name);
        if (!g_negative_done) { /* a 1% error in one element must be caught */
            ana[1] += 0.01f * (float)fabs(num[i][1]) + 0.01f * (float)max_abs(num[i], n);
            CHECK_TRUE(rel_err(ana, num[i], n) > FD_TOL, "FD_TOL too loose to catch a 1%% error");
            g_negative_done = 1;
        }
        free(ana);
    }
    CHECK_TRUE(ntrained > 0, "%s: no trainable tensor", label);
    for (int64_t k = 0; k < N * I; k++)
        dx[k] -= dx0[k];
    snprintf(name, sizeof name, "%s dX", label);
    check_close(name, dx, numx, N * I, FD_TOL);

    for (int i = 0; i < pt->n; i++)
        free(num[i]);
    free(num), free(numx), free(g0), free(dx0), free(dx);
    rig_free(&t);
    free(W), free(bias), free(X), free(R), free(Y), free(Y2);
}

/* ---- forward against formulas ------------------------------------------------------------- */

/* Plain LoRA: Y = X W^T + b + s (Xd A^T) B^T in double, s = alpha / r or alpha / sqrt(r)
 * (rsLoRA), Xd = X ⊙ keep with the scalar mask reference adapter_dropout_keep. */
static void test_lora_formula(const Case *c, GemmCtx *gc, MemCtx *mem) {
    const int64_t O = 9, I = 70, N = 5; /* I > one 64-column mask chunk */
    const AdapterKind *kind = adapter_kind_by_name("lora");
    float *W = check_frand(O * I, 0.3f), *bias = check_frand(O, 0.5f),
          *X = check_frand(N * I, 1.0f);
    float *Y = check_falloc(N * O), *want = check_falloc(N * O);
    Rig t;
    rig_setup(&t, kind, c, W, bias, O, I, N, mem);
    rig_fill_zero_tensors(&t);
    const AdapterEnv env = {gc, 99, 2, 11, 1};
    lin_forward(gc, &t.lin, &env, Y, X, N);
    const float *A = params_value(&t.pt, t.slot.pA), *B = params_value(&t.pt, t.slot.pB);
    const int r = c->r;
    const double s = c->use_rslora ? c->alpha / sqrt((double)r) : (double)c->alpha / r;
    int64_t dropped = 0;
    for (int64_t n = 0; n < N; n++) {
        double h[64] = {0};
        for (int k = 0; k < r; k++)
            for (int64_t i = 0; i < I; i++) {
                double keep = c->dropout > 0 ? adapter_dropout_keep(&t.slot, &env, n, i) : 1.0;
                if (k == 0) dropped += keep == 0.0;
                h[k] += (double)X[n * I + i] * keep * A[k * I + i];
            }
        for (int64_t o = 0; o < O; o++) {
            double y = bias[o];
            for (int64_t i = 0; i < I; i++)
                y += (double)X[n * I + i] * W[o * I + i];
            for (int k = 0; k < r; k++)
                y += s * h[k] * B[o * r + k];
            want[n * O + o] = (float)y;
        }
    }
    char name[96];
    snprintf(name, sizeof name, "lora forward vs formula a%g rs%d p%g", (double)c->alpha,
             c->use_rslora, (double)c->dropout);
    check_close(name, Y, want, N * O, 2e-6);
    if (c->dropout > 0) { /* about p of N x I elements dropped */
        double frac = (double)dropped / (double)(N * I);
        CHECK_TRUE(fabs(frac - c->dropout) < 0.1, "dropout %g dropped %.3f of the inputs",
                   (double)c->dropout, frac);
    }
    rig_free(&t);
    free(W), free(bias), free(X), free(Y), free(want);
}

/* rsLoRA's scale alpha / sqrt(r) is plain LoRA's with alpha' = alpha sqrt(r): the same Y
 * for every kind from the same initial state (VeRA has no scale: equal trivially). */
static void test_rslora_equivalence(const AdapterKind *kind, GemmCtx *gc, MemCtx *mem) {
    const int64_t O = 8, I = 6, N = 4;
    const Case rs = {kind->name, 4, 6.0f, 1, 0.0f}, plain = {kind->name, 4, 12.0f, 0, 0.0f};
    float *W = check_frand(O * I, 0.4f), *bias = check_frand(O, 0.5f),
          *X = check_frand(N * I, 1.0f);
    float *Y1 = check_falloc(N * O), *Y2 = check_falloc(N * O);
    const AdapterEnv env = {gc, 5, 1, 0, 1};
    uint64_t saved = check_rng_state;
    Rig t;
    rig_setup(&t, kind, &rs, W, bias, O, I, N, mem);
    rig_fill_zero_tensors(&t);
    rig_step_begin(&t, &env);
    lin_forward(gc, &t.lin, &env, Y1, X, N);
    rig_free(&t);
    check_rng_state = saved; /* the same fill */
    rig_setup(&t, kind, &plain, W, bias, O, I, N, mem);
    rig_fill_zero_tensors(&t);
    rig_step_begin(&t, &env);
    lin_forward(gc, &t.lin, &env, Y2, X, N);
    rig_free(&t);
    char name[96];
    snprintf(name, sizeof name, "%s rsLoRA a6 r4 = plain a12 r4", kind->name);
    check_close(name, Y1, Y2, N * O, 1e-6);
    free(W), free(bias), free(X), free(Y1), free(Y2);
}

int main(int argc, char **argv) {
    gemm_ensure_blas_core(argc, argv);
    Grid grid; /* one rank (MPI_COMM_SELF for the slots): installs the abort hook */
    grid_init(&grid, &argc, &argv);
    MemCtx mem;
    mem_init(&mem, MEM_PIN_OFF);
    GemmCtx gc;
    gemm_init(&gc, &mem, 1, 128);

    /* every registered kind is tested; the ones this test was written for must be there */
    char names[256];
    adapter_kind_names(names, sizeof names);
    printf("adapter kinds: %s\n", names);
    static const char *const expected[] = {"lora", "lora-fa", "dora", "vera"};
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++)
        CHECK_TRUE(adapter_kind_by_name(expected[i]) != NULL,
                   "adapter kind '%s' is missing from the registry (%s)", expected[i], names);
    CHECK_TRUE(adapter_kind_by_name("nope") == NULL, "unknown kind found");

    int nkinds = 0;
    for (char *save = NULL, *k = strtok_r(names, "|", &save); k; k = strtok_r(NULL, "|", &save)) {
        const AdapterKind *kind = adapter_kind_by_name(k);
        CHECK_TRUE(kind != NULL, "registered kind '%s' not found by name", k);
        if (!kind) continue;
        nkinds++;
        const Case cases[] = {
            {k, 4, 8.0f, 0, 0.0f},  /* alpha = 2r */
            {k, 4, 8.0f, 0, 0.3f},  /* dropout */
            {k, 4, 8.0f, 1, 0.0f},  /* rsLoRA */
            {k, 3, 5.0f, 0, 0.0f},  /* non-default alpha, odd rank */
            {k, 3, 5.0f, 1, 0.25f}, /* all at once */
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
            test_fd_case(kind, &cases[i], &gc, &mem);
        test_rslora_equivalence(kind, &gc, &mem);
    }
    CHECK_TRUE(nkinds >= 4, "only %d kinds tested", nkinds);

    const Case fcases[] = {{"lora", 4, 8.0f, 0, 0.0f},
                           {"lora", 4, 8.0f, 1, 0.0f},
                           {"lora", 3, 5.0f, 0, 0.0f},
                           {"lora", 4, 8.0f, 0, 0.3f},
                           {"lora", 3, 5.0f, 1, 0.25f}};
    for (size_t i = 0; i < sizeof fcases / sizeof fcases[0]; i++)
        test_lora_formula(&fcases[i], &gc, &mem);

    gemm_free(&gc, &mem);
    int rc = check_finish();
    grid_finalize(&grid);
    return rc;
}
