/* PEFT adapters <-> the model's sharded adapter slots (see adapter_io.h). */
#include "adapter_io.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../io/afile.h"
#include "../io/safetensors.h"
#include "../runtime/err.h"
#include "../runtime/log.h"
#include "../runtime/str.h"
#include "adapter_init.h"

/* A growing string. */
typedef struct {
    char *s;
    size_t n, cap;
} AdioBuf;

static void adio_printf(AdioBuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void adio_printf(AdioBuf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        SL_CHECK(k >= 0, "vsnprintf");
        if (b->s && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        b->cap = (b->cap + (size_t)k + 1) * 2;
        b->s = str_xrealloc(b->s, b->cap);
        if (b->n == 0) b->s[0] = 0;
    }
}

static void adio_module_name(char *buf, size_t n, int64_t layer, int module) {
    snprintf(buf, n, "model.layers.%lld.%s.%s", (long long)layer,
             adapter_module_group((ModuleId)module), adapter_module_name((ModuleId)module));
}

void adio_shape_str(char *buf, size_t n, const StTensor *t) {
    size_t o = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < t->ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
}

/* The PEFT hooks of c's initialisation and of its kind (either may be NULL). */
static const AdioKindIo *adio_init_io(const AdioCfg *c) {
    return adapter_init_of(&c->acfg)->io;
}

static const AdioKindIo *adio_kind_io(const AdioCfg *c) {
    const AdapterKind *kd = adapter_kind_by_name(c->acfg.kind);
    return kd ? kd->io : NULL;
}

/* adapter_config.json's fields of the initialisation (PiSSA: r, alpha of the conversion),
 * then of the kind, after the common ones. */
static void adio_peft_config_hooks(const AdioCfg *c, PeftConfig *pc) {
    const AdioKindIo *io[2] = {adio_init_io(c), adio_kind_io(c)};
    for (int k = 0; k < 2; k++)
        if (io[k] && io[k]->peft_config) io[k]->peft_config(c, pc);
}

/* ------------------------------------------------------------------------ configurations */

void adio_cfg_uniform(AdioCfg *c, int64_t L, unsigned targets, int r, double alpha, int use_rslora,
                      double dropout, const char *init, const char *base_model) {
    memset(c, 0, sizeof *c);
    snprintf(c->acfg.kind, sizeof c->acfg.kind, "lora");
    c->acfg.r = r;
    c->acfg.alpha = (float)alpha;
    c->acfg.use_rslora = use_rslora;
    c->acfg.dropout = (float)dropout;
    snprintf(c->acfg.init, sizeof c->acfg.init, "%s", init ? init : "default");
    c->acfg.targets = targets;
    c->L = L;
    c->alpha = alpha;
    c->dropout = dropout;
    c->base_model = str_dup(base_model ? base_model : "");
}

void adio_cfg_free(AdioCfg *c) {
    free(c->slot_r);
    free(c->slot_alpha);
    free(c->slot_alpha_d);
    free(c->base_model);
    memset(c, 0, sizeof *c);
}

void adio_cfg_slot(const AdioCfg *c, int64_t layer, int module, int *r, double *alpha) {
    const int64_t k = layer * MOD_NMODULES + module;
    if (!(c->acfg.targets & (1u << module))) {
        *r = 0;
        *alpha = c->alpha;
        return;
    }
    *r = c->slot_r ? c->slot_r[k] : c->acfg.r;
    *alpha = c->slot_alpha_d ? c->slot_alpha_d[k] : c->alpha;
}

/* The rank of (layer, module); 0: no adapter there. */
static int adio_slot_r(const AdioCfg *c, int64_t layer, int module) {
    int r;
    double alpha;
    adio_cfg_slot(c, layer, module, &r, &alpha);
    return r;
}

static void adio_cfg_alloc_slots(AdioCfg *c) {
    const size_t n = (size_t)(c->L * MOD_NMODULES);
    c->slot_r = calloc(n ? n : 1, sizeof *c->slot_r);
    c->slot_alpha = calloc(n ? n : 1, sizeof *c->slot_alpha);
    c->slot_alpha_d = calloc(n ? n : 1, sizeof *c->slot_alpha_d);
    SL_CHECK(c->slot_r && c->slot_alpha && c->slot_alpha_d, "out of memory");
    c->acfg.slot_r = c->slot_r;
    c->acfg.slot_alpha = c->slot_alpha;
}

/* Targets from the slots; drops the arrays when every target of every layer has r and
 * alpha (then the configuration is the one flags give). */
static void adio_cfg_settle(AdioCfg *c) {
    unsigned targets = 0;
    for (int64_t l = 0; l < c->L; l++)
        for (int i = 0; i < MOD_NMODULES; i++)
            if (c->slot_r[l * MOD_NMODULES + i] > 0) targets |= 1u << i;
    c->acfg.targets = targets;
    int uniform = 1;
    for (int64_t l = 0; l < c->L && uniform; l++)
        for (int i = 0; i < MOD_NMODULES && uniform; i++) {
            if (!(targets & (1u << i))) continue;
            const int64_t k = l * MOD_NMODULES + i;
            uniform = c->slot_r[k] == c->acfg.r && c->slot_alpha_d[k] == c->alpha;
        }
    if (uniform) {
        free(c->slot_r);
        free(c->slot_alpha);
        free(c->slot_alpha_d);
        c->slot_r = NULL;
        c->slot_alpha = NULL;
        c->slot_alpha_d = NULL;
        c->acfg.slot_r = NULL;
        c->acfg.slot_alpha = NULL;
    }
}

/* A PEFT tensor key: base_model.model.<module>.<kind>; module "model.layers.L.group.name"
 * of this model's seven linears. Returns 1 with *layer, *module and *kind (0 lora_A, 1
 * lora_B, 2 lora_magnitude_vector, -1 another kind) when the module is one; 0 otherwise. */
static int adio_parse_key(const char *name, int64_t L, int64_t *layer, int *module, int *kind) {
    static const char prefix[] = "base_model.model.model.layers.";
    static const char *const suffix[3] = {".lora_A.weight", ".lora_B.weight",
                                          ".lora_magnitude_vector"};
    if (strncmp(name, prefix, sizeof prefix - 1) != 0) return 0;
    const char *p = name + sizeof prefix - 1;
    char *end = NULL;
    if (*p < '0' || *p > '9') return 0;
    errno = 0;
    long long l = strtoll(p, &end, 10);
    if (errno || *end != '.' || l < 0 || l >= L) return 0;
    p = end + 1;
    for (int i = 0; i < MOD_NMODULES; i++) {
        char mod[64];
        snprintf(mod, sizeof mod, "%s.%s", adapter_module_group((ModuleId)i),
                 adapter_module_name((ModuleId)i));
        size_t ml = strlen(mod);
        if (strncmp(p, mod, ml) != 0 || p[ml] != '.') continue;
        *layer = l;
        *module = i;
        *kind = -1;
        for (int k = 0; k < 3; k++)
            if (strcmp(p + ml, suffix[k]) == 0) *kind = k;
        return 1;
    }
    return 0;
}

const AdapterKind *adio_kind_of_peft(const PeftAdapter *a) {
    const AdapterKind *kd = adapter_kind_by_name(a->vera ? "vera" : a->use_dora ? "dora" : "lora");
    SL_CHECK(kd, "adapter kinds lora / dora / vera not registered");
    return kd;
}

/* A target_modules entry that names no linear of this model: PEFT skips such an entry when
 * another one matches (huggingface/peft issue 1959), so it is a warning here too; when none
 * match, the caller refuses the adapter. */
static void adio_warn_unmatched_targets(const PeftAdapter *a, const LlamaModel *m) {
    char mod[128];
    for (int t = 0; t < a->ntargets; t++) {
        int hit = 0;
        for (int64_t l = 0; l < m->L && !hit; l++)
            for (int i = 0; i < MOD_NMODULES && !hit; i++) {
                adio_module_name(mod, sizeof mod, l, i);
                const char *x = a->target_modules[t];
                const size_t ml = strlen(mod), xl = strlen(x);
                hit = strcmp(mod, x) == 0 ||
                      (xl < ml && mod[ml - xl - 1] == '.' && strcmp(mod + ml - xl, x) == 0);
            }
        if (!hit && err_rank() == 0) /* once, not once per rank */
            log_warn("%s/adapter_config.json: target_modules entry '%s' names no module of this "
                     "model (known: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj); "
                     "ignored, as PEFT does",
                     a->dir, a->target_modules[t]);
    }
}

int adio_cfg_from_peft(AdioCfg *c, const PeftAdapter *a, const LlamaModel *m, ErrStatus *st) {
    err_status_ok(st);
    memset(c, 0, sizeof *c);
    const char *file = a->tensors.path;
    const AdapterKind *kd = adio_kind_of_peft(a);
    adio_cfg_uniform(c, m->L, 0, a->r, a->lora_alpha, a->use_rslora, a->lora_dropout, NULL,
                     a->base_model);
    snprintf(c->acfg.kind, sizeof c->acfg.kind, "%s", kd->name);
    adio_cfg_alloc_slots(c);
    char mod[128];
    int any = 0;
    adio_warn_unmatched_targets(a, m);
    for (int64_t l = 0; l < m->L; l++)
        for (int i = 0; i < MOD_NMODULES; i++) {
            adio_module_name(mod, sizeof mod, l, i);
            if (!peft_module_targeted(a, mod)) continue;
            int r = 0;
            double alpha = 0;
            peft_module_rank(a, mod, &r, &alpha);
            const int64_t k = l * MOD_NMODULES + i;
            c->slot_r[k] = r;
            c->slot_alpha_d[k] = alpha;
            c->slot_alpha[k] = (float)alpha;
            any = 1;
        }
    if (!any) {
        adio_cfg_free(c);
        return err_status_set(
            st,
            "%s/adapter_config.json: target_modules match no linear module of this model "
            "(model.layers.N.self_attn.{q,k,v,o}_proj, model.layers.N.mlp.{gate,up,down}_proj, "
            "N < %lld)",
            a->dir, (long long)m->L);
    }
    /* every tensor of the file belongs to a targeted module and is a LoRA factor */
    for (int t = 0; t < a->tensors.ntensors; t++) {
        const char *name = a->tensors.tensors[t].name;
        int64_t l = 0;
        int i = 0, kind = 0;
        if (!adio_parse_key(name, m->L, &l, &i, &kind)) {
            if (kd->io && kd->io->import_key && kd->io->import_key(c, name))
                continue; /* a shared tensor */
            adio_cfg_free(c);
            return err_status_set(
                st,
                "%s: tensor '%s' names no module of this model (expected "
                "base_model.model.model.layers.N.{self_attn,mlp}.MODULE.lora_{A,B}.weight "
                "with N < %lld and MODULE one of the seven linears)",
                file, name, (long long)m->L);
        }
        if (kind != 0 && kind != 1 && kd->io && kd->io->import_key) {
            const char *suffix = strstr(name, adapter_module_name((ModuleId)i));
            suffix = suffix ? suffix + strlen(adapter_module_name((ModuleId)i)) : name;
            if (kd->io->import_key(c, suffix)) continue;
        }
        if (kind == 2) {
            adio_cfg_free(c);
            return err_status_set(
                st,
                "%s: tensor '%s' is a DoRA magnitude vector but adapter_config.json has "
                "use_dora false",
                file, name);
        }
        if (kind < 0) {
            adio_cfg_free(c);
            return err_status_set(
                st,
                "%s: tensor '%s' is not a LoRA factor (lora_A.weight / lora_B.weight); "
                "shardlora does not load it",
                file, name);
        }
        if (c->slot_r[l * MOD_NMODULES + i] == 0) {
            adio_cfg_free(c);
            return err_status_set(
                st,
                "%s: tensor '%s' is for a module that adapter_config.json does not target "
                "(target_modules / layers_to_transform / exclude_modules)",
                file, name);
        }
    }
    if (kd->io && kd->io->import_cfg) {
        if (!kd->io->import_cfg(c, a, m, st)) {
            adio_cfg_free(c);
            return 0;
        }
        adio_cfg_settle(c);
        return 1;
    }
    /* every targeted module has both factors, with the shapes the config and the model imply */
    for (int64_t l = 0; l < m->L; l++)
        for (int i = 0; i < MOD_NMODULES; i++) {
            const int r = c->slot_r[l * MOD_NMODULES + i];
            if (r == 0) continue;
            const ShardDesc *sd = &m->layers[l].lin[i].shard;
            adio_module_name(mod, sizeof mod, l, i);
            for (int f = 0; f < 2; f++) {
                const StTensor *t = peft_tensor(a, mod, f ? "lora_B" : "lora_A");
                const int64_t rows = f ? sd->out : r, cols = f ? r : sd->in;
                if (!t) {
                    adio_cfg_free(c);
                    return err_status_set(st,
                                          "%s: tensor 'base_model.model.%s.%s.weight' is missing "
                                          "(adapter_config.json "
                                          "targets %s)",
                                          file, mod, f ? "lora_B" : "lora_A", mod);
                }
                if (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols) {
                    char have[128];
                    adio_shape_str(have, sizeof have, t);
                    adio_cfg_free(c);
                    return err_status_set(
                        st,
                        "%s: tensor '%s' has shape %s but adapter_config.json (r = %d) and the "
                        "model imply [%lld, %lld]",
                        file, t->name, have, r, (long long)rows, (long long)cols);
                }
                if (t->dtype != ST_F32 && t->dtype != ST_BF16 && t->dtype != ST_F16) {
                    adio_cfg_free(c);
                    return err_status_set(
                        st, "%s: tensor '%s' has dtype %s; LoRA factors must be F32, BF16 or F16",
                        file, t->name, st_dtype_name(t->dtype));
                }
            }
        }
    adio_cfg_settle(c);
    return 1;
}

int adio_load(LlamaModel *m, PeftAdapter *a, ErrStatus *st) {
    err_status_ok(st);
    const ParamTable *p = &m->params;
    for (int i = 0; i < p->n; i++) {
        const ParamEntry *e = &p->e[i];
        const StTensor *t = st_find(&a->tensors, e->name);
        if (!t) return err_status_set(st, "%s: tensor '%s' is missing", a->tensors.path, e->name);
        /* 1-D entries (e.g. DoRA's lora_magnitude_vector [out]) are [1, gcols] in the table */
        const int same = e->ndim == 1
                             ? t->ndim == 1 && t->shape[0] == e->gcols
                             : t->ndim == 2 && t->shape[0] == e->grows && t->shape[1] == e->gcols;
        if (!same) {
            char have[128], want[64];
            adio_shape_str(have, sizeof have, t);
            if (e->ndim == 1)
                snprintf(want, sizeof want, "[%lld]", (long long)e->gcols);
            else
                snprintf(want, sizeof want, "[%lld, %lld]", (long long)e->grows,
                         (long long)e->gcols);
            return err_status_set(st, "%s: tensor '%s' has shape %s, the model's adapter has %s",
                                  a->tensors.path, e->name, have, want);
        }
        if (!st_read_slice(&a->tensors, t, e->r0, e->nr, e->c0, e->nc, ST_F32, params_value(p, i),
                           st))
            return 0;
    }
    return 1;
}

int adio_attach(LlamaModel *m, const char *dir, AdioCfg *c, Grid *g, MemCtx *mem, ErrStatus *st) {
    PeftAdapter a;
    memset(c, 0, sizeof *c);
    if (!peft_read(&a, dir, st)) return 0;
    int ok = adio_cfg_from_peft(c, &a, m, st);
    if (ok) {
        llama_init_adapters(m, &c->acfg, g, mem);
        ok = adio_load(m, &a, st);
    }
    peft_close(&a);
    return ok;
}

/* ------------------------------------------------------------------- checkpoint JSON */

static void adio_targets_csv(unsigned targets, AdioBuf *b) {
    int first = 1;
    for (int i = 0; i < MOD_NMODULES; i++)
        if (targets & (1u << i)) {
            adio_printf(b, "%s%s", first ? "" : ",", adapter_module_name((ModuleId)i));
            first = 0;
        }
    if (first) adio_printf(b, "%s", "");
}

char *adio_cfg_to_json(const AdioCfg *c) {
    AdioBuf b = {NULL, 0, 0};
    /* the uniform form is the one checkpoints of flag-configured runs have always had */
    adio_printf(
        &b,
        "{\"kind\": \"%s\", \"r\": %lld, \"alpha\": %.9g, \"dropout\": %.9g, \"use_rslora\": %s, "
        "\"init\": \"%s\", \"target_modules\": \"",
        c->acfg.kind, (long long)c->acfg.r, c->alpha, c->dropout,
        c->acfg.use_rslora ? "true" : "false", adapter_init_of(&c->acfg)->name);
    adio_targets_csv(c->acfg.targets, &b);
    adio_printf(&b, "\"");
    /* the initialisation's settings, then the kind's (each only when it has some, so plain
     * LoRA keeps the JSON its checkpoints have always had) */
    const AdioKindIo *io[2] = {adio_init_io(c), adio_kind_io(c)};
    for (int k = 0; k < 2; k++)
        if (io[k] && io[k]->cfg_json) {
            char extra[1024] = "";
            io[k]->cfg_json(&c->acfg, extra, sizeof extra);
            adio_printf(&b, "%s", extra);
        }
    if (c->slot_r) {
        const int64_t n = c->L * MOD_NMODULES;
        adio_printf(&b, ", \"slot_r\": [");
        for (int64_t k = 0; k < n; k++)
            adio_printf(&b, "%s%d", k ? ", " : "", c->slot_r[k]);
        adio_printf(&b, "], \"slot_alpha\": [");
        for (int64_t k = 0; k < n; k++)
            adio_printf(&b, "%s%.17g", k ? ", " : "", c->slot_alpha_d[k]);
        adio_printf(&b, "]");
    }
    adio_printf(&b, "}");
    return b.s;
}

int adio_cfg_from_json(AdioCfg *c, const char *json, int64_t L, ErrStatus *st) {
    err_status_ok(st);
    memset(c, 0, sizeof *c);
    json_error_t je;
    json_t *root = json_loads(json, 0, &je);
    if (!root || !json_is_object(root)) {
        if (root) json_decref(root);
        return err_status_set(st, "adapter configuration: not a JSON object (%s)", je.text);
    }
    int ok = 1;
    json_t *kind = json_object_get(root, "kind"), *r = json_object_get(root, "r"),
           *alpha = json_object_get(root, "alpha"), *dropout = json_object_get(root, "dropout"),
           *rs = json_object_get(root, "use_rslora"), *init = json_object_get(root, "init"),
           *targets = json_object_get(root, "target_modules"),
           *sr = json_object_get(root, "slot_r"), *sa = json_object_get(root, "slot_alpha");
    if (!json_is_string(kind) || !json_is_integer(r) || !json_is_number(alpha) ||
        !json_is_number(dropout) || !json_is_boolean(rs) || !json_is_string(init) ||
        !json_is_string(targets)) {
        ok = err_status_set(
            st, "adapter configuration: needs kind, r, alpha, dropout, use_rslora, init and "
                "target_modules");
    } else if (!adapter_kind_by_name(json_string_value(kind))) {
        char names[256];
        adapter_kind_names(names, sizeof names);
        ok = err_status_set(st, "adapter kind '%s' is not known to this build (%s)",
                            json_string_value(kind), names);
    } else if (!adapter_init_by_name(json_string_value(init))) {
        char names[256];
        adapter_init_names(names, sizeof names);
        ok = err_status_set(st, "initialisation '%s' is not known to this build (%s)",
                            json_string_value(init), names);
    }
    unsigned tbits = 0;
    if (ok && json_string_length(targets) > 0)
        ok = adapter_parse_targets(json_string_value(targets), &tbits, st);
    if (ok && (sr || sa)) {
        if (!json_is_array(sr) || !json_is_array(sa) ||
            json_array_size(sr) != json_array_size(sa) || json_array_size(sr) == 0 ||
            json_array_size(sr) % MOD_NMODULES != 0)
            ok = err_status_set(st,
                                "adapter configuration: slot_r and slot_alpha must be arrays of "
                                "layers x %d numbers",
                                MOD_NMODULES);
        else
            L = (int64_t)(json_array_size(sr) / MOD_NMODULES);
    }
    if (ok) {
        adio_cfg_uniform(c, L, tbits, (int)json_integer_value(r), json_number_value(alpha),
                         json_is_true(rs), json_number_value(dropout), json_string_value(init), "");
        snprintf(c->acfg.kind, sizeof c->acfg.kind, "%s", json_string_value(kind));
        const AdioKindIo *io[2] = {adio_init_io(c), adio_kind_io(c)};
        for (int k = 0; ok && k < 2; k++)
            if (io[k] && io[k]->cfg_from_json) ok = io[k]->cfg_from_json(&c->acfg, root, st);
        if (sr) {
            adio_cfg_alloc_slots(c);
            for (int64_t k = 0; ok && k < L * MOD_NMODULES; k++) {
                json_t *x = json_array_get(sr, (size_t)k), *y = json_array_get(sa, (size_t)k);
                if (!json_is_integer(x) || json_integer_value(x) < 0 || !json_is_number(y)) {
                    ok = err_status_set(st, "adapter configuration: slot %lld: bad rank or alpha",
                                        (long long)k);
                    break;
                }
                c->slot_r[k] = (int)json_integer_value(x);
                c->slot_alpha_d[k] = json_number_value(y);
                c->slot_alpha[k] = (float)c->slot_alpha_d[k];
            }
        }
    }
    json_decref(root);
    if (!ok) adio_cfg_free(c);
    return ok;
}

/* ------------------------------------------------------------------------------ export */

/* adapter_config.json: targets as short names with layers_to_transform when the adapted
 * (layer, module) pairs are a product, else as full module names; rank_pattern /
 * alpha_pattern keyed by the short name when a module has one value in every layer, else by
 * full module names. No two patterns match the same module, so their order does not
 * matter. */
static int adio_write_config(const AdioCfg *c, const char *dir, ErrStatus *st) {
    const int64_t L = c->L;
    int used_mod[MOD_NMODULES] = {0};
    int *used_layer = calloc((size_t)(L > 0 ? L : 1), sizeof *used_layer);
    SL_CHECK(used_layer, "out of memory");
    for (int64_t l = 0; l < L; l++)
        for (int i = 0; i < MOD_NMODULES; i++) {
            const int r = adio_slot_r(c, l, i);
            if (r > 0) used_mod[i] = used_layer[l] = 1;
        }
    int product = 1, nlayers_used = 0;
    for (int64_t l = 0; l < L; l++) {
        nlayers_used += used_layer[l];
        for (int i = 0; i < MOD_NMODULES && product; i++) {
            const int r = adio_slot_r(c, l, i);
            if (used_layer[l] && used_mod[i] && r == 0) product = 0;
        }
    }
    AdioBuf targets = {NULL, 0, 0};
    adio_printf(&targets, "%s", "");
    char mod[128];
    int *layers = NULL, nlayers = 0;
    if (product) {
        unsigned bits = 0;
        for (int i = 0; i < MOD_NMODULES; i++)
            bits |= used_mod[i] ? 1u << i : 0u;
        adio_targets_csv(bits, &targets);
        if (nlayers_used < L) {
            layers = calloc((size_t)nlayers_used + 1, sizeof *layers);
            SL_CHECK(layers, "out of memory");
            for (int64_t l = 0; l < L; l++)
                if (used_layer[l]) layers[nlayers++] = (int)l;
        }
    } else {
        int first = 1;
        for (int64_t l = 0; l < L; l++)
            for (int i = 0; i < MOD_NMODULES; i++) {
                const int r = adio_slot_r(c, l, i);
                if (r == 0) continue;
                adio_module_name(mod, sizeof mod, l, i);
                adio_printf(&targets, "%s%s", first ? "" : ",", mod);
                first = 0;
            }
    }
    /* patterns */
    const size_t cap = (size_t)(L * MOD_NMODULES) + MOD_NMODULES;
    char **rkeys = calloc(cap, sizeof *rkeys), **akeys = calloc(cap, sizeof *akeys);
    int *rvals = calloc(cap, sizeof *rvals);
    double *avals = calloc(cap, sizeof *avals);
    SL_CHECK(rkeys && akeys && rvals && avals, "out of memory");
    int nr = 0, na = 0;
    for (int i = 0; i < MOD_NMODULES; i++) {
        if (!used_mod[i]) continue;
        int r0 = -1, same_r = 1, same_a = 1;
        double a0 = 0;
        for (int64_t l = 0; l < L; l++) {
            int r;
            double al;
            adio_cfg_slot(c, l, i, &r, &al);
            if (r == 0) continue;
            if (r0 < 0) {
                r0 = r;
                a0 = al;
            }
            same_r &= r == r0;
            same_a &= al == a0;
        }
        for (int which = 0; which < 2; which++) {
            const int same = which ? same_a : same_r;
            if (same) {
                if (which == 0 && r0 != c->acfg.r) {
                    rkeys[nr] = str_dup(adapter_module_name((ModuleId)i));
                    rvals[nr++] = r0;
                }
                if (which == 1 && a0 != c->alpha) {
                    akeys[na] = str_dup(adapter_module_name((ModuleId)i));
                    avals[na++] = a0;
                }
                continue;
            }
            for (int64_t l = 0; l < L; l++) {
                int r;
                double al;
                adio_cfg_slot(c, l, i, &r, &al);
                if (r == 0) continue;
                adio_module_name(mod, sizeof mod, l, i);
                if (which == 0 && r != c->acfg.r) {
                    rkeys[nr] = str_dup(mod);
                    rvals[nr++] = r;
                }
                if (which == 1 && al != c->alpha) {
                    akeys[na] = str_dup(mod);
                    avals[na++] = al;
                }
            }
        }
    }
    PeftConfig pc;
    memset(&pc, 0, sizeof pc);
    pc.r = c->acfg.r;
    pc.lora_alpha = c->alpha;
    pc.lora_dropout = c->dropout;
    pc.use_rslora = c->acfg.use_rslora;
    pc.use_dora = 0;
    pc.target_modules = targets.s;
    pc.base_model = c->base_model ? c->base_model : "";
    const char *pinit = adapter_init_of(&c->acfg)->peft_init;
    pc.init = pinit ? pinit : "default";
    pc.nrank_pattern = nr;
    pc.rank_keys = (const char *const *)rkeys;
    pc.rank_values = rvals;
    pc.nalpha_pattern = na;
    pc.alpha_keys = (const char *const *)akeys;
    pc.alpha_values = avals;
    pc.nlayers = nlayers;
    pc.layers = layers;
    adio_peft_config_hooks(c, &pc);
    int ok = peft_write_config(&pc, dir, st);
    for (int k = 0; k < nr; k++)
        free(rkeys[k]);
    for (int k = 0; k < na; k++)
        free(akeys[k]);
    free(rkeys);
    free(akeys);
    free(rvals);
    free(avals);
    free(layers);
    free(used_layer);
    free(targets.s);
    return ok;
}

/* One part of a Hub id: 1-96 of [A-Za-z0-9_.-], no '-' or '.' at either end, no "--" or
 * "..". */
static int adio_hub_part_ok(const char *s, size_t n) {
    if (n < 1 || n > 96 || strchr("-.", s[0]) || strchr("-.", s[n - 1])) return 0;
    for (size_t i = 0; i < n; i++) {
        const char c = s[i];
        const int word = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                         (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
        if (!word) return 0;
        if (i > 0 && (c == '-' || c == '.') && s[i - 1] == c) return 0;
    }
    return 1;
}

int adio_hub_id_ok(const char *s, int need_owner) {
    if (!s) return 0;
    const char *slash = strchr(s, '/');
    if (!slash) return !need_owner && adio_hub_part_ok(s, strlen(s));
    return adio_hub_part_ok(s, (size_t)(slash - s)) &&
           adio_hub_part_ok(slash + 1, strlen(slash + 1));
}

/* A JSON value as the card shows it: strings as they are, numbers in their shortest
 * round-trip form (0.05, not 0.050000000000000003). malloc'd. */
static char *adio_card_value(const json_t *v) {
    if (json_is_string(v)) return str_dup(json_string_value(v));
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    SL_CHECK(s, "out of memory");
    str_json_shorten(s);
    return s;
}

/* "key: value" lines of a flat JSON object, in its order ("card" is the card's own part). */
static void adio_card_json_lines(AdioBuf *b, const char *json) {
    if (!json || !*json) return;
    json_t *root = json_loads(json, 0, NULL);
    if (!json_is_object(root)) {
        if (root) json_decref(root);
        adio_printf(b, "- `%s`\n", json);
        return;
    }
    const char *k;
    json_t *v;
    json_object_foreach(root, k, v) {
        if (strcmp(k, "card") == 0) continue;
        char *s = adio_card_value(v);
        adio_printf(b, "- %s: `%s`\n", k, s);
        free(s);
    }
    json_decref(root);
}

/* The run configuration's "card" object (a new reference, or NULL). */
static json_t *adio_card_extra(const AdioCard *card) {
    if (!card || !card->run_config) return NULL;
    json_t *root = json_loads(card->run_config, 0, NULL);
    json_t *c = json_object_get(root, "card");
    if (json_is_object(c))
        json_incref(c);
    else
        c = NULL;
    if (root) json_decref(root);
    return c;
}

static long long adio_json_ll(const json_t *o, const char *key) {
    const json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (long long)json_integer_value(v) : -1;
}

/* "- train: `a.jsonl` (123 bytes), ...; 40 documents -> 12 rows, 700 tokens (650 counted in
 * the loss)" for one of the card's data objects. */
static void adio_card_data_line(AdioBuf *b, const char *what, const json_t *d) {
    if (!json_is_object(d)) return;
    adio_printf(b, "- %s:", what);
    const json_t *files = json_object_get(d, "files"), *f;
    size_t i;
    json_array_foreach(files, i, f) {
        const json_t *name = json_object_get(f, "name");
        adio_printf(b, "%s `%s`", i ? "," : "",
                    json_is_string(name) ? json_string_value(name) : "?");
        if (adio_json_ll(f, "bytes") >= 0)
            adio_printf(b, " (%lld bytes)", adio_json_ll(f, "bytes"));
    }
    const json_t *note = json_object_get(d, "note");
    if (json_is_string(note)) adio_printf(b, " %s", json_string_value(note));
    const long long docs = adio_json_ll(d, "documents"), rows = adio_json_ll(d, "rows"),
                    tokens = adio_json_ll(d, "tokens"), counted = adio_json_ll(d, "counted_tokens");
    if (docs >= 0) adio_printf(b, "; %lld documents", docs);
    if (rows >= 0) adio_printf(b, " -> %lld rows", rows);
    if (tokens >= 0) adio_printf(b, ", %lld tokens", tokens);
    if (counted >= 0) adio_printf(b, " (%lld counted in the loss)", counted);
    adio_printf(b, "\n");
}

/* The card's sections from run_config's "card" object: data, evaluation, versions. */
static void adio_card_sections(AdioBuf *b, const json_t *x) {
    if (!x) return;
    const json_t *td = json_object_get(x, "train_data"), *ed = json_object_get(x, "eval_data");
    if (json_is_object(td) || json_is_object(ed)) {
        adio_printf(b, "## Training data\n\n");
        adio_card_data_line(b, "train", td);
        adio_card_data_line(b, "eval", ed);
        adio_printf(b, "\n");
    }
    const json_t *be = json_object_get(x, "best_eval");
    const json_t *loss = json_object_get(be, "loss"), *ppl = json_object_get(be, "ppl");
    if (json_is_number(loss)) {
        adio_printf(b, "## Evaluation\n\n| metric | value |\n|---|---|\n");
        adio_printf(b, "| best eval loss | %.4f (step %lld) |\n", json_number_value(loss),
                    adio_json_ll(be, "step"));
        if (json_is_number(ppl))
            adio_printf(b, "| eval perplexity | %.3f |\n", json_number_value(ppl));
        adio_printf(b, "\n");
    }
    const json_t *ver = json_object_get(x, "versions");
    if (json_is_object(ver) && json_object_size(ver) > 0) {
        adio_printf(b, "## Framework versions\n\n");
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)ver, k, v) {
            char *s = adio_card_value(v);
            adio_printf(b, "- %s: %s\n", k, s);
            free(s);
        }
        adio_printf(b, "\n");
    }
}

/* The kinds of tensor in the file, from the tensors themselves: per-module suffixes (after
 * "<module>_proj.") with the first one's shape, and shared tensors by name. */
static void adio_card_tensor_kinds(AdioBuf *b, const AdioTensor *t, int n) {
    const char *seen[16];
    int first[16], nseen = 0; /* per suffix, the tensor with the smallest name */
    for (int k = 0; k < n; k++) {
        const char *p = strstr(t[k].name, "_proj.");
        const char *suffix = p ? p + 6 : t[k].name;
        int j = 0;
        while (j < nseen && strcmp(seen[j], suffix) != 0)
            j++;
        if (j == nseen) {
            if (nseen == 16) continue;
            seen[nseen] = suffix;
            first[nseen++] = k;
        } else if (strcmp(t[k].name, t[first[j]].name) < 0) {
            first[j] = k;
        }
    }
    for (int j = 0; j < nseen; j++) {
        const AdioTensor *x = &t[first[j]];
        const int per_module = seen[j] != x->name;
        if (x->rows)
            adio_printf(b, "%s `%s%s` [%lld, %lld]", j ? "," : "", per_module ? "<module>." : "",
                        seen[j], (long long)x->rows, (long long)x->cols);
        else
            adio_printf(b, "%s `%s%s` [%lld]", j ? "," : "", per_module ? "<module>." : "", seen[j],
                        (long long)x->cols);
    }
}

static char *adio_card(const AdioCfg *c, const AdioTensor *t, int n, const AdioCard *card) {
    AdioBuf b = {NULL, 0, 0};
    json_t *extra = adio_card_extra(card);
    /* base_model in the front matter only when it is a Hub id (a local path is not valid
     * there): the caller's, else the run's */
    const json_t *hv = json_object_get(extra, "base_model");
    const char *hub = card && card->base_model ? card->base_model
                      : json_is_string(hv)     ? json_string_value(hv)
                                               : NULL;
    if (hub && !adio_hub_id_ok(hub, 0)) hub = NULL;
    const char *base = hub                               ? hub
                       : c->base_model && *c->base_model ? c->base_model
                                                         : "(unknown base model)";
    int64_t params = 0, shared = 0; /* per-module tensors; shared ones (VeRA's projections) */
    for (int i = 0; i < n; i++) {
        const int64_t k = (t[i].rows ? t[i].rows : 1) * t[i].cols;
        if (strstr(t[i].name, "_proj."))
            params += k;
        else
            shared += k;
    }
    unsigned targets = 0;
    int rmin = 0, rmax = 0, nslots = 0;
    double amin = 0, amax = 0;
    for (int64_t l = 0; l < c->L; l++)
        for (int i = 0; i < MOD_NMODULES; i++) {
            int r;
            double al;
            adio_cfg_slot(c, l, i, &r, &al);
            if (r == 0) continue;
            targets |= 1u << i;
            if (!nslots || r < rmin) rmin = r;
            if (!nslots || r > rmax) rmax = r;
            if (!nslots || al < amin) amin = al;
            if (!nslots || al > amax) amax = al;
            nslots++;
        }
    const AdapterKind *kd = adapter_kind_by_name(c->acfg.kind);
    /* r and lora_alpha as adapter_config.json states them: a kind's peft_config may change
     * them for the export (PiSSA: a LoRA of rank 2r, alpha converted), scaling every slot's
     * value alike (adio_write_config) */
    PeftConfig pc;
    memset(&pc, 0, sizeof pc);
    pc.r = c->acfg.r;
    pc.lora_alpha = c->alpha;
    adio_peft_config_hooks(c, &pc);
    if (pc.r != c->acfg.r && c->acfg.r > 0) {
        rmin = rmin * pc.r / c->acfg.r;
        rmax = rmax * pc.r / c->acfg.r;
    }
    if (pc.lora_alpha != c->alpha && c->alpha != 0) {
        amin *= pc.lora_alpha / c->alpha;
        amax *= pc.lora_alpha / c->alpha;
    }
    const char *title = kd && kd->title ? kd->title : "LoRA";
    const AdioKindIo *kio = kd ? kd->io : NULL;
    /* the PEFT type in lower case names the tag and the dropout key ("lora", "vera") */
    char ptype[16];
    snprintf(ptype, sizeof ptype, "%s", kd && kd->peft_type ? kd->peft_type : "LORA");
    for (char *p = ptype; *p; p++)
        if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
    adio_printf(&b, "---\n");
    if (hub) adio_printf(&b, "base_model: %s\n", hub);
    adio_printf(&b, "library_name: peft\ntags:\n- %s\n- shardlora\n---\n\n", ptype);
    adio_printf(&b, "# %s adapter for %s\n\n", title, base);
    adio_printf(
        &b, "Trained with shardlora %s: %s on a frozen base model, tensor-parallel over MPI ranks.",
        SHARDLORA_VERSION, title);
    if (card && card->step >= 0)
        adio_printf(&b, " %lld optimizer step%s", (long long)card->step,
                    card->step == 1 ? "" : "s");
    if (card && card->tp > 0) adio_printf(&b, " at tp=%d x dp=%d", card->tp, card->dp);
    adio_printf(&b, ".\nThe files are in PEFT's format: `adapter_config.json` and "
                    "`adapter_model.safetensors` (float32:");
    adio_card_tensor_kinds(&b, t, n);
    adio_printf(&b, "; <module> like `base_model.model.model.layers.0.mlp.down_proj`, the shapes "
                    "of the first by name).\n\n");
    adio_printf(&b, "## Adapter\n\n| setting | value |\n|---|---|\n");
    adio_printf(&b, "| peft_type | %s |\n", kd && kd->peft_type ? kd->peft_type : "LORA");
    if (rmin == rmax)
        adio_printf(&b, "| r | %d |\n", rmin);
    else
        adio_printf(&b, "| r | %d to %d per module (rank_pattern; default %d) |\n", rmin, rmax,
                    pc.r);
    if (kio && kio->card_rows) { /* the kind's rows instead of alpha and scale (VeRA) */
        char rows[1024] = "";
        kio->card_rows(c, rows, sizeof rows);
        adio_printf(&b, "%s", rows);
    } else {
        if (amin == amax)
            adio_printf(&b, "| lora_alpha | %.9g |\n", amin);
        else
            adio_printf(&b,
                        "| lora_alpha | %.9g to %.9g per module (alpha_pattern; default %.9g) |\n",
                        amin, amax, pc.lora_alpha);
        adio_printf(&b, "| scale | %s |\n",
                    c->acfg.use_rslora ? "lora_alpha / sqrt(r) (rsLoRA)" : "lora_alpha / r");
    }
    adio_printf(&b, "| target modules | ");
    AdioBuf tb = {NULL, 0, 0};
    adio_targets_csv(targets, &tb);
    for (char *p = tb.s; p && *p; p++)
        if (*p == ',') *p = ' ';
    adio_printf(&b, "%s |\n", tb.s ? tb.s : "");
    free(tb.s);
    adio_printf(&b, "| adapted modules | %d of %lld (%lld layers x 7 linears) |\n", nslots,
                (long long)(c->L * MOD_NMODULES), (long long)c->L);
    adio_printf(&b, "| %s_dropout | %.9g |\n", ptype, c->dropout);
    /* a kind that initialises itself (VeRA) says how; else the initialisation of the factors */
    const char *init = kio && kio->card_init ? kio->card_init : adapter_init_of(&c->acfg)->card;
    adio_printf(&b, "| initialisation | %s |\n", init);
    adio_printf(&b, "| parameters | %lld in the adapted modules", (long long)params);
    if (shared) adio_printf(&b, " (+ %lld in the frozen shared projections)", (long long)shared);
    adio_printf(&b, " |\n\n");
    if (card && (card->run_config || card->optimizer || card->optim_hparams)) {
        adio_printf(&b, "## Training configuration\n\n");
        adio_card_json_lines(&b, card->run_config);
        if (card->optimizer) adio_printf(&b, "- optimizer: `%s`\n", card->optimizer);
        adio_card_json_lines(&b, card->optim_hparams);
        adio_printf(&b, "\n");
    }
    adio_card_sections(&b, extra);
    adio_printf(
        &b,
        "## Usage\n\n```python\nfrom transformers import AutoModelForCausalLM\nfrom peft import "
        "PeftModel\n\n"
        "base = AutoModelForCausalLM.from_pretrained(\"%s\")\n"
        "model = PeftModel.from_pretrained(base, \"path/to/this/directory\")\n```\n\n"
        "With shardlora: `shardlora eval --model BASE_DIR --adapter THIS_DIR --data FILE.jsonl`, "
        "or `shardlora train ... --init-adapter THIS_DIR` to train on from it.\n",
        base);
    if (extra) json_decref(extra); /* after the last use of hub, which points into it */
    return b.s;
}

static int adio_name_cmp(const void *x, const void *y) {
    const AdioTensor *a = *(const AdioTensor *const *)x, *b = *(const AdioTensor *const *)y;
    return strcmp(a->name, b->name);
}

static int adio_export_files(const char *dir, const AdioCfg *c, const AdioTensor *t, int n,
                             const AdioCard *card, ErrStatus *st);

int adio_export(const char *dir, const AdioCfg *c, const AdioTensor *t, int n, const AdioCard *card,
                ErrStatus *st) {
    err_status_ok(st);
    /* the initialisation's export (PiSSA's conversion), then the kind's; each checks and may
     * replace the tensors */
    const AdioKindIo *io[2] = {adio_init_io(c), adio_kind_io(c)};
    if ((io[0] && io[0]->export_tensors) || (io[1] && io[1]->export_tensors)) {
        const AdioTensor *cur = t;
        AdioTensor *list[2] = {NULL, NULL};
        void *keep[2] = {NULL, NULL};
        int ncur = n, ok = 1;
        for (int k = 0; ok && k < 2; k++) {
            if (!io[k] || !io[k]->export_tensors) continue;
            AdioTensor *t2 = NULL;
            int n2 = 0;
            ok = io[k]->export_tensors(c, cur, ncur, &t2, &n2, &keep[k], st);
            if (ok && t2 != cur) list[k] = t2;
            if (ok) {
                cur = t2;
                ncur = n2;
            }
        }
        if (ok) ok = adio_export_files(dir, c, cur, ncur, card, st);
        for (int k = 0; k < 2; k++) {
            free(list[k]);
            free(keep[k]);
        }
        return ok;
    }
    /* the tensors are exactly the slots' factors */
    int64_t want = 0;
    for (int64_t l = 0; l < c->L; l++)
        for (int i = 0; i < MOD_NMODULES; i++) {
            const int r = adio_slot_r(c, l, i);
            want += r > 0 ? 2 : 0;
        }
    for (int k = 0; k < n; k++) {
        int64_t l = 0;
        int i = 0, kind = 0, r = 0;
        double al;
        if (!adio_parse_key(t[k].name, c->L, &l, &i, &kind) || kind < 0 || kind > 1)
            return err_status_set(st,
                                  "export: tensor '%s' is not a LoRA factor of a %lld-layer model",
                                  t[k].name, (long long)c->L);
        adio_cfg_slot(c, l, i, &r, &al);
        if (r == 0 || (kind == 0 ? t[k].rows : t[k].cols) != r)
            return err_status_set(
                st,
                "export: tensor '%s' [%lld, %lld] does not match the adapter configuration "
                "(r = %d there)",
                t[k].name, (long long)t[k].rows, (long long)t[k].cols, r);
    }
    if (want != n)
        return err_status_set(st, "export: %d tensors for an adapter configuration with %lld", n,
                              (long long)want);
    return adio_export_files(dir, c, t, n, card, st);
}

/* The three files of adio_export, tensors already checked. */
static int adio_export_files(const char *dir, const AdioCfg *c, const AdioTensor *t, int n,
                             const AdioCard *card, ErrStatus *st) {
    char tmp[4200], path[4400], dst[4400];
    snprintf(tmp, sizeof tmp, "%s/.export-tmp", dir);
    if (!afile_rmdir_flat(tmp, st)) return 0;
    if (mkdir(tmp, 0777) != 0)
        return err_status_set(st, "%s: cannot create: %s", tmp, strerror(errno));
    const AdioTensor **order = malloc((size_t)(n > 0 ? n : 1) * sizeof *order);
    SL_CHECK(order, "out of memory");
    for (int k = 0; k < n; k++)
        order[k] = &t[k];
    qsort(order, (size_t)n, sizeof *order, adio_name_cmp);
    StWriter w;
    st_writer_init(&w);
    st_writer_meta(&w, "format", "pt");
    for (int k = 0; k < n; k++) {
        /* rows = 0: a 1-D tensor [cols] (adapter_io.h) */
        const int64_t shape[2] = {order[k]->rows ? order[k]->rows : order[k]->cols, order[k]->cols};
        st_writer_add(&w, order[k]->name, ST_F32, order[k]->rows ? 2 : 1, shape, order[k]->data);
    }
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", tmp);
    int ok = st_writer_write(&w, path, st);
    st_writer_free(&w);
    free(order);
    if (ok) ok = adio_write_config(c, tmp, st);
    if (ok) {
        char *md = adio_card(c, t, n, card);
        snprintf(path, sizeof path, "%s/README.md", tmp);
        ok = afile_write_all(path, md, strlen(md), st);
        free(md);
    }
    static const char *const files[3] = {"adapter_model.safetensors", "adapter_config.json",
                                         "README.md"};
    for (int k = 0; ok && k < 3; k++) {
        snprintf(path, sizeof path, "%s/%s", tmp, files[k]);
        snprintf(dst, sizeof dst, "%s/%s", dir, files[k]);
        if (rename(path, dst) != 0)
            ok = err_status_set(st, "%s: cannot move into place: %s", dst, strerror(errno));
    }
    if (ok) {
        snprintf(dst, sizeof dst, "%s/README.md", dir);
        ok = afile_fsync_dir(dst, st);
    }
    ErrStatus ignore;
    afile_rmdir_flat(tmp, &ignore);
    return ok;
}

/* ------------------------------------------------------------- merge_plan helpers */

int adio_merge_adaptable(const char *module) {
    if (!strstr(module, "layers.")) return 0;
    const char *dot = strrchr(module, '.');
    const char *leaf = dot ? dot + 1 : module;
    for (int i = 0; i < MOD_NMODULES; i++)
        if (strcmp(leaf, adapter_module_name((ModuleId)i)) == 0) return 1;
    return 0;
}

int adio_merge_untargeted(const PeftAdapter *a, const char *module, const char *want,
                          ErrStatus *st) {
    if (!adio_merge_adaptable(module) || !peft_module_targeted(a, module)) return 1;
    return err_status_set(st,
                          "%s: module '%s' is targeted by adapter_config.json (target_modules / "
                          "layers_to_transform) but has no %s",
                          a->tensors.path, module, want);
}

int adio_merge_targeted(const PeftAdapter *a, const char *module, const StTensor *t,
                        ErrStatus *st) {
    if (peft_module_targeted(a, module)) return 1;
    return err_status_set(st,
                          "%s: tensor '%s' is for module '%s', which adapter_config.json does not "
                          "target (target_modules / exclude_modules / layers_to_transform)",
                          a->tensors.path, t->name, module);
}

static int adio_is_float(StDtype d) {
    return d == ST_F32 || d == ST_BF16 || d == ST_F16;
}

int adio_merge_check(const AdioMergeItem *it, const PeftAdapter *a, const StTensor *t, int64_t d0,
                     int64_t d1, const char *why, ErrStatus *st) {
    if (!t) {
        if (adio_is_float(it->w->dtype)) return 1;
        return err_status_set(st, "%s: tensor '%s': dtype %s cannot take an adapter", it->w_path,
                              it->w->name, st_dtype_name(it->w->dtype));
    }
    const char *ap = a->tensors.path;
    if (!adio_is_float(t->dtype))
        return err_status_set(st, "%s: tensor '%s': dtype %s (expected F32, BF16 or F16)", ap,
                              t->name, st_dtype_name(t->dtype));
    if (d0 < 0) return 1;
    const int good = d1 < 0 ? t->ndim == 1 && t->shape[0] == d0
                            : t->ndim == 2 && t->shape[0] == d0 && t->shape[1] == d1;
    if (good) return 1;
    char got[96], mshape[96], want[96];
    adio_shape_str(got, sizeof got, t);
    adio_shape_str(mshape, sizeof mshape, it->w);
    if (d1 < 0)
        snprintf(want, sizeof want, "[%lld]", (long long)d0);
    else
        snprintf(want, sizeof want, "[%lld, %lld]", (long long)d0, (long long)d1);
    return err_status_set(
        st,
        "%s: tensor '%s' has shape %s, but the model's '%s' is %s, so it must be %s %s: "
        "adapter for another model?",
        ap, t->name, got, it->w->name, mshape, want, why);
}
