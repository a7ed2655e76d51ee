/* Adapter helpers shared by every kind, and the registry of kinds (see adapter.h). */
#include <stdio.h>
#include <string.h>

#include "adapter.h"

static const char *const adapter_module_names[MOD_NMODULES] = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

const char *adapter_module_name(ModuleId m) {
    return m < MOD_NMODULES ? adapter_module_names[m] : "?";
}

const char *adapter_module_group(ModuleId m) {
    return m <= MOD_O ? "self_attn" : "mlp";
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

const AdapterKind *adapter_kind_by_name(const char *name) {
    if (strcmp(name, "lora") == 0) return &adapter_lora;
    return NULL;
}
