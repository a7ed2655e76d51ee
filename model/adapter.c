/* Adapter helpers shared by every kind, and the registry of kinds (see adapter.h). */
#include <stdio.h>
#include <string.h>

#include "../runtime/philox.h"
#include "adapter.h"

static const char *const adapter_module_names[MOD_NMODULES] = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

const char *adapter_module_name(ModuleId m) {
    return m < MOD_NMODULES ? adapter_module_names[m] : "?";
}

const char *adapter_module_group(ModuleId m) {
    return m <= MOD_O ? "self_attn" : "mlp";
}

float adapter_dropout_keep(const AdapterSlot *s, const AdapterEnv *env, int64_t n, int64_t i) {
    const float p = s->cfg->dropout;
    const uint64_t a = (uint64_t)(env->token0 + n) * (uint64_t)s->shard.in + (uint64_t)(s->shard.i0 + i);
    const uint64_t c = ((uint64_t)s->layer << 8) | ((uint64_t)s->module * 4u + 2u);
    uint32_t w[4];
    philox_block(env->seed, PHILOX_LORA_DROPOUT, a, (uint64_t)env->step, c, w);
    return philox_u01(w[0]) < p ? 0.0f : 1.0f / (1.0f - p);
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
            if (strlen(adapter_module_names[m]) == len && strncmp(p, adapter_module_names[m], len) == 0)
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

/* Initialisations of the LoRA factors (pissa: model/pissa.c). */
static const char *const adapter_inits[] = {"default", "gaussian", "pissa"};

int adapter_init_known(const char *name) {
    for (size_t i = 0; i < sizeof adapter_inits / sizeof adapter_inits[0]; i++)
        if (strcmp(name, adapter_inits[i]) == 0) return 1;
    return 0;
}

void adapter_kind_names(char *buf, size_t n) {
    size_t len = 0;
    if (n) buf[0] = 0;
    for (int i = 0; i < ADAPTER_NKINDS && len < n; i++) {
        snprintf(buf + len, n - len, "%s%s", i ? "|" : "", adapter_kinds[i]->name);
        len = strlen(buf);
    }
}
