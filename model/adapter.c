/* Adapter helpers shared by every kind, and the registry of kinds (see adapter.h). */
#include <stdio.h>
#include <string.h>

#include "../runtime/philox.h"
#include "../runtime/str.h"
#include "adapter.h"
#include "adapter_init.h"

static const char *const adapter_module_names[MOD_NMODULES] = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

const char *adapter_module_name(ModuleId m) {
    return m < MOD_NMODULES ? adapter_module_names[m] : "?";
}

const char *adapter_module_group(ModuleId m) {
    return m <= MOD_O ? "self_attn" : "mlp";
}

/* ---- LoRA dropout masks (keying in adapter.h) ------------------------------------------ */

/* Below this many elements (rows x columns) a mask pass stays on one thread: a parallel
 * region costs a few us; drawing and applying the mask about 0.8 ns per element. */
#define ADAPTER_DROPOUT_OMP_MIN 16384
/* Columns per Philox call: PHILOX_LANES blocks of 4 words, one column group each. */
#define ADAPTER_DROPOUT_CHUNK (4 * PHILOX_LANES)

/* ceil(in / 4) column groups per global token. */
static uint64_t dropout_groups(const AdapterSlot *s) {
    return ((uint64_t)s->shard.in + 3u) / 4u;
}

/* The counter's c word: layer and module (tensor 2 of the module, after A 0 and B 1). */
static uint64_t dropout_coord_c(const AdapterSlot *s) {
    return ((uint64_t)s->layer << 8) | ((uint64_t)s->module * 4u + 2u);
}

float adapter_dropout_keep(const AdapterSlot *s, const AdapterEnv *env, int64_t n, int64_t i) {
    const float p = s->cfg->dropout;
    const uint64_t t = (uint64_t)(env->token0 + n), j = (uint64_t)(s->shard.i0 + i);
    uint32_t w[4];
    philox_block(env->seed, PHILOX_LORA_DROPOUT, t * dropout_groups(s) + j / 4u,
                 (uint64_t)env->step, dropout_coord_c(s), w);
    return philox_u01(w[j % 4u]) < p ? 0.0f : 1.0f / (1.0f - p);
}

/* What a mask pass needs, copied out of the slot once. */
typedef struct {
    uint64_t seed, step, c, groups;
    float p, kept;
} DropoutKey;

static DropoutKey dropout_key(const AdapterSlot *s, const AdapterEnv *env) {
    DropoutKey k = {env->seed,         (uint64_t)env->step, dropout_coord_c(s),
                    dropout_groups(s), s->cfg->dropout,     1.0f / (1.0f - s->cfg->dropout)};
    return k;
}

/* scale [ADAPTER_DROPOUT_CHUNK]: the keep-scales of global token t at global columns
 * [4 g0, 4 g0 + ADAPTER_DROPOUT_CHUNK), i.e. scale[4 l + q] from word q of lane l (block
 * of group g0 + l); the same numbers as adapter_dropout_keep. Lanes past the row's last
 * group draw blocks nobody uses. */
static void dropout_chunk(const DropoutKey *k, uint64_t t, uint64_t g0, float *restrict scale) {
    uint32_t w[4 * PHILOX_LANES];
    philox_block_lanes(k->seed, PHILOX_LORA_DROPOUT, t * k->groups + g0, k->step, k->c, w);
    const float p = k->p, kept = k->kept;  /* locals, so that the stores cannot alias them */
    for (int l = 0; l < PHILOX_LANES; l++) /* vectorised: compares, then a 4-way interleave */
        for (int q = 0; q < 4; q++)
            scale[4 * l + q] = philox_u01(w[q * PHILOX_LANES + l]) < p ? 0.0f : kept;
}

/* GemmCtx's threads (the BLAS and OpenMP share that count), one below the threshold. */
static int dropout_threads(const AdapterEnv *env, int64_t N, int64_t ni) {
    const int nt = env->gemm && env->gemm->nthreads > 0 ? env->gemm->nthreads : 1;
    return N * ni >= ADAPTER_DROPOUT_OMP_MIN ? nt : 1;
}

void adapter_dropout_forward(const AdapterSlot *s, const AdapterEnv *env, float *Xd, const float *X,
                             int64_t N) {
    const int64_t ni = s->shard.ni, i0 = s->shard.i0;
    const DropoutKey key = dropout_key(s, env);
#pragma omp parallel for num_threads(dropout_threads(env, N, ni)) schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *restrict x = X + n * ni; /* [ni] */
        float *restrict xd = Xd + n * ni;     /* [ni] */
        float scale[ADAPTER_DROPOUT_CHUNK];
        /* chunk c covers local columns [c0, c0 + ADAPTER_DROPOUT_CHUNK), c0 = its first
         * global column (on a group boundary, the first at or below i0) - i0 */
        for (int64_t c0 = -(i0 % 4); c0 < ni; c0 += ADAPTER_DROPOUT_CHUNK) {
            dropout_chunk(&key, (uint64_t)(env->token0 + n), (uint64_t)(i0 + c0) / 4u, scale);
            const int64_t lo = c0 > 0 ? c0 : 0;
            const int64_t hi = c0 + ADAPTER_DROPOUT_CHUNK < ni ? c0 + ADAPTER_DROPOUT_CHUNK : ni;
            for (int64_t i = lo; i < hi; i++)
                xd[i] = x[i] * scale[i - c0];
        }
    }
}

/* The mask is read back from forward's Xd = X ⊙ keep rather than drawn again (5x faster
 * here): keep is 0 or 1/(1-p) >= 1, so where X ≠ 0, Xd ≠ 0 exactly when the element was
 * kept (no underflow); only where X = 0 is it drawn again. */
void adapter_dropout_backward(const AdapterSlot *s, const AdapterEnv *env, float *dX,
                              const float *G, const float *X, const float *Xd, int64_t N) {
    const int64_t ni = s->shard.ni;
    const float kept = 1.0f / (1.0f - s->cfg->dropout);
#pragma omp parallel for num_threads(dropout_threads(env, N, ni)) schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *restrict g = G + n * ni, *restrict x = X + n * ni, *restrict xd = Xd + n * ni;
        float *restrict dx = dX + n * ni; /* [ni] each */
        int zeros = 0;
        for (int64_t i = 0; i < ni; i++) {
            dx[i] += g[i] * (xd[i] != 0.0f ? kept : 0.0f);
            zeros |= x[i] == 0.0f;
        }
        if (zeros) /* rare: draw those elements' keep (the pass above added g * 0 there) */
            for (int64_t i = 0; i < ni; i++)
                if (x[i] == 0.0f) dx[i] += g[i] * adapter_dropout_keep(s, env, n, i);
    }
}

ParamSync adapter_sync_class(int copies, int tp) {
    if (copies <= 1) return PARAM_SYNC_DP;
    return copies >= tp ? PARAM_SYNC_WORLD : PARAM_SYNC_KV;
}

void adapter_peft_prefix(char *buf, size_t n, int layer, ModuleId m) {
    snprintf(buf, n, "base_model.model.model.layers.%d.%s.%s", layer, adapter_module_group(m),
             adapter_module_name(m));
}

int adapter_parse_targets(const char *s, unsigned *targets, ErrStatus *st) {
    err_status_ok(st);
    *targets = 0;
    if (strcmp(s, "all") == 0 || strcmp(s, "all-linear") == 0) {
        *targets = (1u << MOD_NMODULES) - 1;
        return 1;
    }
    const char *p = s;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        int found = -1;
        for (int m = 0; m < MOD_NMODULES; m++)
            if (strlen(adapter_module_names[m]) == len &&
                strncmp(p, adapter_module_names[m], len) == 0)
                found = m;
        if (found < 0)
            return err_status_set(st,
                                  "--target-modules: unknown module '%.*s' (known: q_proj, k_proj, "
                                  "v_proj, o_proj, gate_proj, up_proj, down_proj, all)",
                                  (int)len, p);
        *targets |= 1u << found;
        p = e ? e + 1 : p + len;
    }
    if (!*targets) return err_status_set(st, "--target-modules: no module given");
    return 1;
}

/* The registry: adding a variant = its file + one line here. */
static const AdapterKind *const adapter_kinds[] = {
    &adapter_lora,
    &adapter_lorafa,
    &adapter_dora,
    &adapter_vera,
};
enum { ADAPTER_NKINDS = (int)(sizeof adapter_kinds / sizeof adapter_kinds[0]) };

const AdapterKind *adapter_kind_by_name(const char *name) {
    for (int i = 0; i < ADAPTER_NKINDS; i++)
        if (strcmp(name, adapter_kinds[i]->name) == 0) return adapter_kinds[i];
    return NULL;
}

const AdapterKind *adapter_kind_at(int i) {
    return i >= 0 && i < ADAPTER_NKINDS ? adapter_kinds[i] : NULL;
}

int adapter_cfg_set_option(AdapterCfg *c, const char *key, double value) {
    const AdapterKind *k = adapter_kind_by_name(c->kind);
    const AdapterInit *ini = adapter_init_by_name(c->init[0] ? c->init : "default");
    if (ini && ini->set_option && ini->set_option(&c->init_opts, key, value)) return 1;
    return k && k->set_option && k->set_option(&c->kind_opts, key, value);
}

static const char *adapter_kind_name_at(int i) {
    return i >= 0 && i < ADAPTER_NKINDS ? adapter_kinds[i]->name : NULL;
}

void adapter_kind_names(char *buf, size_t n) {
    str_join_names(buf, n, "|", adapter_kind_name_at);
}
