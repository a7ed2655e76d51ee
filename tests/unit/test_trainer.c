/* Unit tests of train/ (Session, Trainer) on one rank with a tiny Llama written here
 * (config.json by hfc_write, model.safetensors by io/safetensors' writer) and LoRA on every
 * module: trainer_grads + trainer_update = trainer_step bit for bit over two steps; the
 * step's loss = trainer_eval's on the same rows before the update; clipping to
 * max_grad_norm (the norm after it, the direction kept, no clipping below the threshold);
 * gradient accumulation exact (G = 2 as 2 micro-batches of 1 and as 1 of 2: the same loss,
 * gradients and SGD update); a NaN reports finite = 0 and trainer_step skips the update
 * (parameters and optimizer state untouched); --recompute layer gives the same bits as none
 * with fewer activation bytes (LoRA with dropout, DoRA, VeRA, per-slot ranks). Exits non-zero
 * on any failure.
 *
 * Legend: B sequences per micro-batch, T tokens per sequence, G sequences per step, C hidden,
 * F ffn, L layers, H heads, KV kv heads, D head dim, V vocabulary. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/hfconfig.h"
#include "io/safetensors.h"
#include "parallel/grid.h"
#include "runtime/gemm.h"
#include "runtime/kernels.h"
#include "tests/unit/check.h"
#include "train/session.h"
#include "train/trainer.h"

enum { L = 2, C = 16, H = 4, KV = 2, D = 4, F = 24, V = 50, T = 8, G = 2 };

/* ---- the tiny model directory ------------------------------------------------------------ */

typedef struct {
    char name[96];
    int64_t shape[2];
    int ndim;
    float *data;
} MTensor;

static int g_nt;
static MTensor g_t[8 + 9 * L];

static void add_tensor(const char *name, int64_t rows, int64_t cols, float scale, float offset) {
    MTensor *t = &g_t[g_nt++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = cols ? 2 : 1;
    t->shape[0] = rows;
    t->shape[1] = cols;
    size_t n = (size_t)rows * (size_t)(cols ? cols : 1);
    t->data = check_falloc((int64_t)n);
    for (size_t i = 0; i < n; i++)
        t->data[i] = offset + scale * check_rnd();
}

/* config.json + model.safetensors of a Llama with GQA (H = 4, KV = 2), untied lm_head. */
static int write_model(const char *dir) {
    ErrStatus st;
    HfcConfig c;
    hfc_defaults(&c, HFC_LLAMA);
    c.hidden_size = C;
    c.intermediate_size = F;
    c.num_layers = L;
    c.num_heads = H;
    c.num_kv_heads = KV;
    c.head_dim = D;
    c.vocab_size = V;
    c.max_position_embeddings = 64;
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (!hfc_write(&c, path, &st)) {
        fprintf(stderr, "%s\n", st.msg);
        return 0;
    }
    const float ws = 1.7f / sqrtf((float)C); /* uniform: std ~ 1 / sqrt(C) */
    add_tensor("model.embed_tokens.weight", V, C, 1.0f, 0.0f);
    add_tensor("lm_head.weight", V, C, ws, 0.0f);
    add_tensor("model.norm.weight", C, 0, 0.1f, 1.0f);
    static const char *const mods[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                        "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                        "mlp.down_proj"};
    const int64_t rows[7] = {H * D, KV * D, KV * D, C, F, F, C};
    const int64_t cols[7] = {C, C, C, H * D, C, C, F};
    char name[96];
    for (int l = 0; l < L; l++) {
        for (int i = 0; i < 7; i++) {
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, mods[i]);
            add_tensor(name, rows[i], cols[i], 1.7f / sqrtf((float)cols[i]), 0.0f);
        }
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        add_tensor(name, C, 0, 0.1f, 1.0f);
        snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
        add_tensor(name, C, 0, 0.1f, 1.0f);
    }
    StWriter w;
    st_writer_init(&w);
    for (int i = 0; i < g_nt; i++)
        st_writer_add(&w, g_t[i].name, ST_F32, g_t[i].ndim, g_t[i].shape, g_t[i].data);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    int ok = st_writer_write(&w, path, &st);
    if (!ok) fprintf(stderr, "%s\n", st.msg);
    st_writer_free(&w);
    for (int i = 0; i < g_nt; i++)
        free(g_t[i].data);
    return ok;
}

static void remove_model(const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    unlink(path);
    rmdir(dir);
}

/* ---- rows -------------------------------------------------------------------------------- */

/* Row i: ids from a fixed pattern, the first two tokens not counted (-100), positions 0..T-1. */
static void row_fn(void *ctx, int64_t i, int64_t Tn, int32_t *ids, int64_t *labels, int64_t *pos) {
    (void)ctx;
    for (int64_t t = 0; t < Tn; t++) {
        ids[t] = (int32_t)((i * 31 + t * 7 + (i * t) % 5) % V);
        labels[t] = t < 2 ? -100 : ids[t];
        pos[t] = t;
    }
}

static const RowSource g_src = {NULL, row_fn};

/* ---- set-up -------------------------------------------------------------------------------- */

/* A session with micro-batches of B sequences and adapters of `kind` (r 4, alpha 8, the
 * given dropout; slot_r: per-slot ranks or NULL) on every module, keeping activations as rc
 * says; B (VeRA: lambda_b) of every slot gets fixed non-zero values (PEFT's B = 0 leaves A's
 * gradient 0). */
static int open_session_as(Session *s, Grid *g, const char *dir, int64_t B, const char *kind,
                           float dropout, const int *slot_r, LlamaRecompute rc) {
    ErrStatus st;
    if (!session_open(s, g, dir, MEM_PIN_OFF, LLAMA_BASE_FILE, NULL, &st)) {
        fprintf(stderr, "session_open: %s\n", st.msg);
        return 0;
    }
    session_compute_init(s, 1, session_max_cols(s), T, kern_ops_reference());
    AdapterCfg a;
    memset(&a, 0, sizeof a);
    snprintf(a.kind, sizeof a.kind, "%s", kind);
    a.r = 4;
    a.alpha = 8.0f;
    a.dropout = dropout;
    a.targets = (1u << MOD_NMODULES) - 1;
    a.seed = 1234;
    a.slot_r = slot_r;
    llama_init_adapters(&s->m, &a, g, &s->mem);
    ParamTable *p = &s->m.params;
    for (int i = 0; i < p->n; i++) {
        if (!strstr(p->e[i].name, ".lora_B.") && !strstr(p->e[i].name, ".vera_lambda_b")) continue;
        float *v = params_value(p, i);
        for (size_t k = 0; k < params_numel(&p->e[i]); k++)
            v[k] = 0.05f * (float)sin(0.7 * (double)k + 1.3 * i);
    }
    session_batches_init(s, B, T, rc, 1);
    return 1;
}

static int open_session(Session *s, Grid *g, const char *dir, int64_t B) {
    return open_session_as(s, g, dir, B, "lora", 0.0f, NULL, LLAMA_RECOMPUTE_NONE);
}

static void optim_cfg(OptimCfg *o, OptimKind kind, float lr) {
    optim_defaults(o);
    o->kind = kind;
    o->lr = lr;
}

/* The parameters back to v0 and a fresh trainer (a new optimizer state). */
static void reset(Trainer *t, Session *s, const float *v0, double max_grad_norm,
                  const OptimCfg *oc) {
    if (t->s) trainer_free(t);
    memcpy(s->m.params.values, v0, s->m.params.total * sizeof(float));
    TrainerCfg tc = {G, max_grad_norm, 99};
    trainer_init(t, s, &tc, oc);
}

static double grad_norm(const ParamTable *p) {
    return sqrt(params_sumsq(p, p->grads));
}

/* ---- the tests ------------------------------------------------------------------------------ */

/* trainer_step = trainer_grads + trainer_update, two steps from the same start. */
static void test_step_composed(Session *s, const float *v0) {
    Trainer t = {0};
    OptimCfg oc;
    optim_cfg(&oc, OPTIM_ADAMW, 1e-2f);
    ParamTable *p = &s->m.params;
    float *va = check_falloc((int64_t)p->total), *ma = check_falloc((int64_t)p->trainable);
    TrainerStep a[2], b[2];
    reset(&t, s, v0, 1.0, &oc);
    for (int k = 0; k < 2; k++)
        trainer_step(&t, &g_src, k * G, k + 1, 1e-2f, &a[k]);
    memcpy(va, p->values, p->total * sizeof(float));
    memcpy(ma, t.opt.m, p->trainable * sizeof(float));
    reset(&t, s, v0, 1.0, &oc);
    for (int k = 0; k < 2; k++) {
        trainer_grads(&t, &g_src, k * G, k + 1, &b[k]);
        CHECK_TRUE(!b[k].updated, "trainer_grads reported an update");
        trainer_update(&t, 1e-2f, &b[k]);
    }
    int same = memcmp(va, p->values, p->total * sizeof(float)) == 0 &&
               memcmp(ma, t.opt.m, p->trainable * sizeof(float)) == 0;
    for (int k = 0; k < 2; k++)
        same &= a[k].loss == b[k].loss && a[k].grad_norm == b[k].grad_norm &&
                a[k].counted == b[k].counted && a[k].updated && b[k].updated && a[k].finite;
    CHECK_TRUE(same, "trainer_step != trainer_grads + trainer_update (losses %.9g %.9g)", a[1].loss,
               b[1].loss);
    double moved = 0;
    for (size_t i = 0; i < p->total; i++)
        moved += fabs((double)p->values[i] - v0[i]);
    CHECK_TRUE(moved > 0, "two steps did not change the adapter");
    printf("%s trainer_step = trainer_grads + trainer_update, 2 steps (losses %.6f %.6f)\n",
           same ? "PASS" : "FAIL", a[0].loss, a[1].loss);
    trainer_free(&t);
    free(va), free(ma);
}

/* The step's loss = trainer_eval's on rows [0, G) before the update; after it, another one. */
static void test_loss_eval(Session *s, const float *v0, double *norm_out) {
    Trainer t = {0};
    OptimCfg oc;
    optim_cfg(&oc, OPTIM_ADAMW, 1e-2f);
    reset(&t, s, v0, 0.0, &oc);
    int64_t tokens = 0;
    double le = trainer_eval(s, &g_src, G, 99, NULL, NULL, &tokens);
    TrainerStep o;
    trainer_grads(&t, &g_src, 0, 1, &o);
    float a = (float)o.loss, b = (float)le;
    check_close("step loss vs trainer_eval on the same rows", &a, &b, 1, 1e-6);
    CHECK_TRUE(tokens == o.counted && o.counted == G * (T - 2),
               "counted tokens: eval %lld, step %lld, want %d", (long long)tokens,
               (long long)o.counted, G * (T - 2));
    CHECK_TRUE(o.finite && o.grad_norm > 0 && fabs(o.loss - log((double)V)) < 2.0,
               "loss %.4f (ln V = %.4f), norm %.3g", o.loss, log((double)V), o.grad_norm);
    *norm_out = o.grad_norm;
    trainer_update(&t, 1e-2f, &o);
    double le2 = trainer_eval(s, &g_src, G, 99, NULL, NULL, &tokens);
    CHECK_TRUE(le2 != le, "the update did not change the evaluation loss");
    printf("     eval loss before %.6f, after one step %.6f\n", le, le2);
    trainer_free(&t);
}

/* torch's clip_grad_norm_: the norm after clipping is max_grad_norm, the direction kept; a
 * gradient below the threshold is left alone. */
static void test_clip(Session *s, const float *v0, double norm) {
    Trainer t = {0};
    OptimCfg oc;
    optim_cfg(&oc, OPTIM_ADAMW, 1e-2f);
    ParamTable *p = &s->m.params;
    float *g0 = check_falloc((int64_t)p->trainable), *scaled = check_falloc((int64_t)p->trainable);
    const double maxn = 0.3 * norm;
    reset(&t, s, v0, maxn, &oc);
    TrainerStep o;
    trainer_grads(&t, &g_src, 0, 1, &o);
    CHECK_TRUE(fabs(o.grad_norm - norm) <= 1e-6 * norm, "grad_norm %.9g, before %.9g", o.grad_norm,
               norm);
    float want = (float)sqrt(params_sumsq(p, p->grads));
    float got = (float)o.grad_norm;
    check_close("reported grad_norm = ||grads||", &got, &want, 1, 1e-6);
    memcpy(g0, p->grads, p->trainable * sizeof(float));
    trainer_update(&t, 1e-2f, &o);
    got = (float)grad_norm(p);
    want = (float)maxn;
    check_close("norm after clipping = max_grad_norm", &got, &want, 1, 1e-5);
    const float coef = (float)(maxn / norm);
    for (size_t i = 0; i < p->trainable; i++)
        scaled[i] = g0[i] * coef;
    /* torch's coefficient is max / (norm + 1e-6): 1e-6 / norm relative off this one */
    check_close("clipped gradient = gradient x max / norm", p->grads, scaled, (int64_t)p->trainable,
                1e-5);
    /* below the threshold: untouched */
    reset(&t, s, v0, 2.0 * norm, &oc);
    trainer_grads(&t, &g_src, 0, 1, &o);
    memcpy(g0, p->grads, p->trainable * sizeof(float));
    trainer_update(&t, 1e-2f, &o);
    CHECK_TRUE(memcmp(g0, p->grads, p->trainable * sizeof(float)) == 0,
               "a gradient below max_grad_norm was changed");
    trainer_free(&t);
    free(g0), free(scaled);
}

/* G = 2 as two micro-batches of 1 (s1) and as one of 2 (s2): the same loss, gradients and SGD
 * update (SGD, so the update is the gradient, not Adam's normalised step). */
static void test_accumulation(Session *s1, Session *s2, const float *v0) {
    Trainer t1 = {0}, t2 = {0};
    OptimCfg oc;
    optim_cfg(&oc, OPTIM_SGD, 0.5f);
    ParamTable *p1 = &s1->m.params, *p2 = &s2->m.params;
    CHECK_TRUE(p1->total == p2->total, "different tables");
    reset(&t1, s1, v0, 0.0, &oc);
    reset(&t2, s2, v0, 0.0, &oc);
    CHECK_TRUE(t1.nmicro == 2 && t2.nmicro == 1, "micro-batches %lld %lld", (long long)t1.nmicro,
               (long long)t2.nmicro);
    TrainerStep o1, o2;
    trainer_grads(&t1, &g_src, 0, 1, &o1);
    trainer_grads(&t2, &g_src, 0, 1, &o2);
    float a = (float)o1.loss, b = (float)o2.loss;
    check_close("accumulation: loss B=1 x 2 vs B=2", &a, &b, 1, 1e-6);
    CHECK_TRUE(o1.counted == o2.counted, "counted %lld vs %lld", (long long)o1.counted,
               (long long)o2.counted);
    check_close("accumulation: gradients B=1 x 2 vs B=2", p1->grads, p2->grads,
                (int64_t)p1->trainable, 1e-5);
    trainer_update(&t1, 0.5f, &o1);
    trainer_update(&t2, 0.5f, &o2);
    float *d1 = check_falloc((int64_t)p1->total), *d2 = check_falloc((int64_t)p1->total);
    for (size_t i = 0; i < p1->total; i++) {
        d1[i] = p1->values[i] - v0[i];
        d2[i] = p2->values[i] - v0[i];
    }
    check_close("accumulation: SGD update B=1 x 2 vs B=2", d1, d2, (int64_t)p1->total, 1e-5);
    trainer_free(&t1);
    trainer_free(&t2);
    free(d1), free(d2);
}

/* A NaN parameter: finite = 0; trainer_step does not update (values, optimizer state and
 * step count unchanged). */
static void test_nan(Session *s, const float *v0) {
    Trainer t = {0};
    OptimCfg oc;
    optim_cfg(&oc, OPTIM_ADAMW, 1e-2f);
    ParamTable *p = &s->m.params;
    reset(&t, s, v0, 1.0, &oc);
    TrainerStep o;
    trainer_step(&t, &g_src, 0, 1, 1e-2f, &o); /* a real step first: the state is not zero */
    CHECK_TRUE(o.finite && o.updated, "first step finite %d updated %d", o.finite, o.updated);
    int ia = -1;
    for (int i = 0; i < p->n && ia < 0; i++)
        if (strstr(p->e[i].name, "layers.1.self_attn.q_proj.lora_A")) ia = i;
    CHECK_TRUE(ia >= 0, "no lora_A of layer 1's q_proj");
    if (ia < 0) return;
    params_value(p, ia)[3] = NAN;
    float *v = check_falloc((int64_t)p->total), *m = check_falloc((int64_t)p->trainable);
    memcpy(v, p->values, p->total * sizeof(float));
    memcpy(m, t.opt.m, p->trainable * sizeof(float));
    const int64_t steps = t.opt.step;
    trainer_step(&t, &g_src, G, 2, 1e-2f, &o);
    CHECK_TRUE(!o.finite && !o.updated, "NaN: finite %d updated %d (loss %g)", o.finite, o.updated,
               o.loss);
    CHECK_TRUE(isnan(o.loss), "NaN parameter, loss %g", o.loss);
    CHECK_TRUE(memcmp(v, p->values, p->total * sizeof(float)) == 0 &&
                   memcmp(m, t.opt.m, p->trainable * sizeof(float)) == 0 && t.opt.step == steps,
               "a non-finite step changed the adapter or the optimizer");
    printf("%s NaN: finite 0, no update\n", !o.finite && !o.updated ? "PASS" : "FAIL");
    trainer_free(&t);
    free(v), free(m);
}

/* --recompute layer = none bit for bit: two AdamW steps of G = 2 in micro-batches of 1 (so
 * two forward/backward pairs per step) give the same losses, gradients, adapter and
 * optimizer state, with LoRA dropout (the recomputed forward draws the same masks), DoRA
 * (norms once per step, with and without dropout: its two forms), VeRA and per-slot ranks
 * (the shared buffers sized by the largest); the per-layer activations and the adapters'
 * buffers exist once (fewer activation bytes). */
static void test_recompute(Grid *g, const char *dir) {
    static int ranks[L * MOD_NMODULES];
    for (int k = 0; k < L * MOD_NMODULES; k++)
        ranks[k] = 2 + 2 * (k / MOD_NMODULES) + (k % 3 == 0); /* 2..5, layer 1 larger */
    const struct {
        const char *kind;
        float dropout;
        const int *slot_r;
    } cases[] = {{"lora", 0.25f, NULL},
                 {"lora", 0.0f, ranks},
                 {"dora", 0.0f, NULL},
                 {"dora", 0.25f, NULL},
                 {"vera", 0.25f, NULL}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        Session sn, sl;
        if (!open_session_as(&sn, g, dir, 1, cases[c].kind, cases[c].dropout, cases[c].slot_r,
                             LLAMA_RECOMPUTE_NONE) ||
            !open_session_as(&sl, g, dir, 1, cases[c].kind, cases[c].dropout, cases[c].slot_r,
                             LLAMA_RECOMPUTE_LAYER)) {
            CHECK_TRUE(0, "cannot open the sessions");
            return;
        }
        ParamTable *pn = &sn.m.params, *pl = &sl.m.params;
        CHECK_TRUE(pn->total == pl->total && pn->trainable == pl->trainable &&
                       memcmp(pn->values, pl->values, pn->total * sizeof(float)) == 0,
                   "%s: the sessions start from different adapters", cases[c].kind);
        Trainer tn = {0}, tl = {0};
        OptimCfg oc;
        optim_cfg(&oc, OPTIM_ADAMW, 1e-2f);
        TrainerCfg tc = {G, 1.0, 99};
        trainer_init(&tn, &sn, &tc, &oc);
        trainer_init(&tl, &sl, &tc, &oc);
        int same = tn.nmicro == 2 && tl.nmicro == 2;
        TrainerStep on, ol;
        for (int k = 0; k < 2; k++) {
            trainer_grads(&tn, &g_src, k * G, k + 1, &on);
            trainer_grads(&tl, &g_src, k * G, k + 1, &ol);
            same &= memcmp(&on.loss, &ol.loss, sizeof on.loss) == 0 && on.counted == ol.counted &&
                    memcmp(pn->grads, pl->grads, pn->trainable * sizeof(float)) == 0;
            trainer_update(&tn, 1e-2f, &on);
            trainer_update(&tl, 1e-2f, &ol);
        }
        same &= memcmp(pn->values, pl->values, pn->total * sizeof(float)) == 0 &&
                memcmp(tn.opt.m, tl.opt.m, pn->trainable * sizeof(float)) == 0;
        double gmax = 0;
        for (size_t i = 0; i < pn->trainable; i++)
            gmax = fmax(gmax, fabs((double)pn->grads[i] - pl->grads[i]));
        const int64_t an = sn.mem.peak[MEM_ACTIVATION], al = sl.mem.peak[MEM_ACTIVATION];
        const int smaller = sl.acts.bytes < sn.acts.bytes && al < an;
        CHECK_TRUE(same,
                   "%s dropout %g%s: recompute layer differs from none (loss %.9g vs %.9g, "
                   "max gradient difference %.3g)",
                   cases[c].kind, (double)cases[c].dropout, cases[c].slot_r ? " per-slot r" : "",
                   on.loss, ol.loss, gmax);
        CHECK_TRUE(smaller, "%s: activation bytes %lld (peak %lld) with layer, %lld (%lld) without",
                   cases[c].kind, (long long)sl.acts.bytes, (long long)al, (long long)sn.acts.bytes,
                   (long long)an);
        printf("%s recompute layer = none bit for bit: %s dropout %g%s (loss %.6f, max gradient "
               "difference %g); activation peak %lld -> %lld bytes\n",
               same && smaller ? "PASS" : "FAIL", cases[c].kind, (double)cases[c].dropout,
               cases[c].slot_r ? " per-slot r" : "", ol.loss, gmax, (long long)an, (long long)al);
        trainer_free(&tn);
        trainer_free(&tl);
        session_free(&sl);
        session_free(&sn);
    }
}

int main(int argc, char **argv) {
    gemm_ensure_blas_core(argc, argv);
    Grid g;
    grid_init(&g, &argc, &argv);
    ErrStatus st;
    SL_CHECK(grid_setup(&g, 1, &st), "%s", st.msg);
    char dir[] = "/tmp/shardlora-test-trainer.XXXXXX";
    if (!mkdtemp(dir) || !write_model(dir)) {
        fprintf(stderr, "cannot write the model in %s\n", dir);
        return 2;
    }
    Session s1, s2;
    if (!open_session(&s1, &g, dir, 1) || !open_session(&s2, &g, dir, 2)) return 2;
    ParamTable *p = &s1.m.params;
    float *v0 = check_falloc((int64_t)p->total);
    memcpy(v0, p->values, p->total * sizeof(float));
    CHECK_TRUE(memcmp(v0, s2.m.params.values, p->total * sizeof(float)) == 0,
               "two sessions start from different adapters");

    double norm = 0;
    test_step_composed(&s1, v0);
    test_loss_eval(&s1, v0, &norm);
    test_clip(&s1, v0, norm);
    test_accumulation(&s1, &s2, v0);
    test_nan(&s1, v0);
    test_recompute(&g, dir);

    free(v0);
    session_free(&s2);
    session_free(&s1);
    remove_model(dir);
    int rc = check_finish();
    grid_finalize(&g);
    return rc;
}
