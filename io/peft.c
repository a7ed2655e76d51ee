/* PEFT adapter files (see peft.h): the adapter_config.json writer and the reader of an
 * adapter directory, with PEFT's rules for which modules get an adapter and with which rank
 * and alpha. Field names, defaults and matching rules follow PEFT (huggingface/peft):
 *   src/peft/tuners/lora/config.py   LoraConfig fields and defaults (r 8, lora_alpha 8,
 *                                    lora_dropout 0, bias "none", use_rslora/use_dora false)
 *   src/peft/utils/other.py          get_pattern_key: re.match(rf"(.*\.)?({key})$", name),
 *                                    the first key in the file's order wins
 *   src/peft/tuners/tuners_utils.py  check_target_module_exists: exclude_modules, a regex
 *                                    string (re.fullmatch), a list (name == key or name ends
 *                                    with "." + key), layers_to_transform with
 *                                    re.match(rf".*\.{layers_pattern}\.(\d+)\.", name) or,
 *                                    without layers_pattern, re.match(r".*\.[^.]*\.(\d+)\.")
 *   src/peft/tuners/lora/model.py    _create_and_replace: r = rank_pattern.get(key, r),
 *                                    alpha = alpha_pattern.get(key, lora_alpha)
 *   src/peft/tuners/vera/config.py   VeraConfig fields and defaults (r 256, vera_dropout 0,
 *                                    d_initial 0.1, save_projection true,
 *                                    projection_prng_key 0; no alpha, no patterns) */
#include "peft.h"
#include "afile.h"

#define PCRE2_CODE_UNIT_WIDTH 8
/* adapter_config.json is a few kB; patterns for every module of a big model stay far below */
#define PEFT_MAX_CONFIG ((size_t)64 << 20)
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------ writer */

/* Fewest significant digits (<= 17) with which x reads back exactly. */
static int peft_digits(double x) {
    char buf[64];
    for (int p = 1; p < 17; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, x);
        if (strtod(buf, NULL) == x) return p;
    }
    return 17;
}

/* An alpha as PEFT users write it: an integer when it is one. */
static json_t *peft_number(double x, int *digits) {
    if (x == floor(x) && fabs(x) < 1e15) return json_integer((json_int_t)x);
    int d = peft_digits(x);
    if (d > *digits) *digits = d;
    return json_real(x);
}

static json_t *peft_real(double x, int *digits) {
    int d = peft_digits(x);
    if (d > *digits) *digits = d;
    return json_real(x);
}

int peft_write_config(const PeftConfig *c, const char *dir, ErrStatus *st) {
    err_status_ok(st);
    int digits = 1;
    json_t *o = json_object();
    json_t *targets = json_array();
    const char *p = c->target_modules;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len) json_array_append_new(targets, json_stringn(p, len));
        p = e ? e + 1 : p + len;
    }
    json_t *rank_pattern = json_object(), *alpha_pattern = json_object();
    for (int i = 0; i < c->nrank_pattern; i++)
        json_object_set_new(rank_pattern, c->rank_keys[i], json_integer(c->rank_values[i]));
    for (int i = 0; i < c->nalpha_pattern; i++)
        json_object_set_new(alpha_pattern, c->alpha_keys[i],
                            peft_number(c->alpha_values[i], &digits));
    json_t *layers = json_null();
    if (c->nlayers > 0) {
        layers = json_array();
        for (int i = 0; i < c->nlayers; i++)
            json_array_append_new(layers, json_integer(c->layers[i]));
    }
    if (c->peft_type && strcmp(c->peft_type, "VERA") == 0) {
        /* PEFT's VeraConfig (peft/tuners/vera/config.py) */
        json_decref(rank_pattern);
        json_decref(alpha_pattern);
        json_object_set_new(o, "base_model_name_or_path",
                            json_string(c->base_model ? c->base_model : ""));
        json_object_set_new(o, "bias", json_string("none"));
        json_object_set_new(o, "d_initial", peft_real(c->d_initial, &digits));
        json_object_set_new(o, "fan_in_fan_out", json_false());
        json_object_set_new(o, "inference_mode", json_true());
        json_object_set_new(o, "init_weights", json_true());
        json_object_set_new(o, "layers_pattern",
                            c->nlayers > 0 ? json_string("layers") : json_null());
        json_object_set_new(o, "layers_to_transform", layers);
        json_object_set_new(o, "modules_to_save", json_null());
        json_object_set_new(o, "peft_type", json_string("VERA"));
        json_object_set_new(o, "projection_prng_key",
                            json_integer((json_int_t)c->projection_prng_key));
        json_object_set_new(o, "r", json_integer(c->r));
        json_object_set_new(o, "revision", json_null());
        json_object_set_new(o, "save_projection", json_boolean(c->save_projection));
        json_object_set_new(o, "target_modules", targets);
        json_object_set_new(o, "task_type", json_string("CAUSAL_LM"));
        json_object_set_new(o, "vera_dropout", peft_real(c->lora_dropout, &digits));
        char vpath[4096];
        snprintf(vpath, sizeof vpath, "%s/adapter_config.json", dir);
        int vok = afile_write_json(
            vpath, o, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(digits), st);
        json_decref(o);
        return vok;
    }
    json_object_set_new(o, "alpha_pattern", alpha_pattern);
    json_object_set_new(o, "base_model_name_or_path",
                        json_string(c->base_model ? c->base_model : ""));
    json_object_set_new(o, "bias", json_string("none"));
    json_object_set_new(o, "fan_in_fan_out", json_false());
    json_object_set_new(o, "inference_mode", json_true());
    json_object_set_new(o, "init_lora_weights",
                        c->init && strcmp(c->init, "gaussian") == 0 ? json_string("gaussian")
                                                                    : json_true());
    json_object_set_new(o, "layers_pattern", c->nlayers > 0 ? json_string("layers") : json_null());
    json_object_set_new(o, "layers_to_transform", layers);
    json_object_set_new(o, "lora_alpha", peft_number(c->lora_alpha, &digits));
    json_object_set_new(o, "lora_dropout", peft_real(c->lora_dropout, &digits));
    json_object_set_new(o, "modules_to_save", json_null());
    json_object_set_new(o, "peft_type", json_string("LORA"));
    json_object_set_new(o, "r", json_integer(c->r));
    json_object_set_new(o, "rank_pattern", rank_pattern);
    json_object_set_new(o, "revision", json_null());
    json_object_set_new(o, "target_modules", targets);
    json_object_set_new(o, "task_type", json_string("CAUSAL_LM"));
    json_object_set_new(o, "use_dora", json_boolean(c->use_dora));
    json_object_set_new(o, "use_rslora", json_boolean(c->use_rslora));
    char path[4096];
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    /* Keys sorted, as PEFT writes them; the patterns we write never overlap, so their order
     * does not matter for PEFT's first-match rule. */
    int ok = afile_write_json(path, o,
                              JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(digits), st);
    json_decref(o);
    return ok;
}

/* ------------------------------------------------------------------------------ reader */

static char *peft_strdup(const char *s) {
    char *d = strdup(s);
    SL_CHECK(d != NULL, "out of memory");
    return d;
}

/* Compiles a Python `re` pattern (the subset PCRE2 shares with it, which is what module
 * names need). */
static pcre2_code *peft_compile(const char *pat, const char *path, const char *key, ErrStatus *st) {
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &ec, &eo, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        err_status_set(st, "%s: %s: regex '%s' does not compile at offset %zu: %s", path, key, pat,
                       (size_t)eo, (char *)msg);
    }
    return re;
}

/* re.match (anchored at the start) or re.fullmatch (also at the end) of s. */
static int peft_re_match(const void *re, const char *s, int full) {
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    SL_CHECK(md != NULL, "out of memory");
    int rc = pcre2_match(re, (PCRE2_SPTR)s, strlen(s), 0,
                         PCRE2_ANCHORED | (full ? PCRE2_ENDANCHORED : 0), md, NULL);
    pcre2_match_data_free(md);
    return rc > 0;
}

/* re.match of s returning group 1 as an integer (the layer index), or -1. */
static long peft_re_group_int(const void *re, const char *s) {
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    SL_CHECK(md != NULL, "out of memory");
    long v = -1;
    int rc = pcre2_match(re, (PCRE2_SPTR)s, strlen(s), 0, PCRE2_ANCHORED, md, NULL);
    if (rc > 1) {
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        if (ov[2] != PCRE2_UNSET) {
            char buf[32];
            size_t n = ov[3] - ov[2];
            if (n < sizeof buf) {
                memcpy(buf, s + ov[2], n);
                buf[n] = 0;
                v = strtol(buf, NULL, 10);
            }
        }
    }
    pcre2_match_data_free(md);
    return v;
}

/* A list of strings (or, with allow_string, one string as a list of one). */
static int peft_get_strings(json_t *v, const char *path, const char *key, int allow_string,
                            char ***out, int *n, ErrStatus *st) {
    *out = NULL;
    *n = 0;
    if (allow_string && json_is_string(v)) {
        *out = malloc(sizeof **out);
        SL_CHECK(*out, "out of memory");
        (*out)[0] = peft_strdup(json_string_value(v));
        *n = 1;
        return 1;
    }
    if (!json_is_array(v))
        return err_status_set(st, "%s: '%s' must be a list of strings", path, key);
    size_t k = json_array_size(v);
    *out = calloc(k ? k : 1, sizeof **out);
    SL_CHECK(*out, "out of memory");
    for (size_t i = 0; i < k; i++) {
        json_t *s = json_array_get(v, i);
        if (!json_is_string(s))
            return err_status_set(st, "%s: '%s'[%zu] must be a string", path, key, i);
        (*out)[i] = peft_strdup(json_string_value(s));
        (*n)++;
    }
    return 1;
}

/* rank_pattern / alpha_pattern: {regex: number}, in the file's order. */
static int peft_get_patterns(json_t *root, const char *path, const char *key, int integer,
                             PeftPattern **out, int *n, ErrStatus *st) {
    *out = NULL;
    *n = 0;
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 1;
    if (!json_is_object(v))
        return err_status_set(st, "%s: '%s' must be an object {name: value}", path, key);
    size_t k = json_object_size(v);
    *out = calloc(k ? k : 1, sizeof **out);
    SL_CHECK(*out, "out of memory");
    const char *name;
    json_t *val;
    json_object_foreach(v, name, val) {
        PeftPattern *p = &(*out)[*n];
        /* A rank is an int (peft_module_rank): larger values are refused, not truncated. */
        if (integer ? !json_is_integer(val) || json_integer_value(val) < 1 ||
                          json_integer_value(val) > INT_MAX
                    : !json_is_number(val))
            return err_status_set(st, "%s: %s['%s'] must be %s", path, key, name,
                                  integer ? "a positive integer below 2^31" : "a number");
        p->key = peft_strdup(name);
        p->value = json_number_value(val);
        /* PEFT: re.match(rf"(.*\.)?({key})$", module_name) */
        size_t len = strlen(name) + 16;
        char *pat = malloc(len);
        SL_CHECK(pat, "out of memory");
        snprintf(pat, len, "(.*\\.)?(%s)$", name);
        char where[256];
        snprintf(where, sizeof where, "%s['%.200s']", key, name);
        p->re = peft_compile(pat, path, where, st);
        free(pat);
        (*n)++;
        if (!p->re) return 0;
    }
    return 1;
}

static int peft_get_bool(json_t *root, const char *path, const char *key, int dflt, int *out,
                         ErrStatus *st) {
    json_t *v = json_object_get(root, key);
    *out = dflt;
    if (!v || json_is_null(v)) return 1;
    if (!json_is_boolean(v)) return err_status_set(st, "%s: '%s' must be true or false", path, key);
    *out = json_is_true(v);
    return 1;
}

static int peft_get_number(json_t *root, const char *path, const char *key, double dflt,
                           double *out, ErrStatus *st) {
    json_t *v = json_object_get(root, key);
    *out = dflt;
    if (!v || json_is_null(v)) return 1;
    if (!json_is_number(v)) return err_status_set(st, "%s: '%s' must be a number", path, key);
    *out = json_number_value(v);
    return 1;
}

/* A key that changes what the adapter computes in a way shardlora does not: refused when
 * present with a value other than its default (null, false, [] or {}). */
static int peft_is_unset(json_t *v) {
    return !v || json_is_null(v) || json_is_false(v) ||
           (json_is_array(v) && json_array_size(v) == 0) ||
           (json_is_object(v) && json_object_size(v) == 0);
}

/* peft_type (LORA or VERA), r, the dropout and the kind's own keys. */
static int peft_parse_kind(PeftAdapter *a, json_t *root, const char *path, ErrStatus *st) {
    json_t *v = json_object_get(root, "peft_type");
    if (!json_is_string(v))
        return err_status_set(st, "%s: 'peft_type' is missing or not a string (expected \"LORA\")",
                              path);
    a->vera = strcmp(json_string_value(v), "VERA") == 0;
    if (!a->vera && strcmp(json_string_value(v), "LORA") != 0)
        return err_status_set(
            st, "%s: peft_type \"%s\" is not supported (only \"LORA\" and \"VERA\" adapters)", path,
            json_string_value(v));
    v = json_object_get(root, "r");
    a->r = a->vera ? 256 : 8; /* the defaults of VeraConfig / LoraConfig */
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 1 << 20)
            return err_status_set(st, "%s: 'r' must be a positive integer", path);
        a->r = (int)json_integer_value(v);
    }
    const char *dropout_key = a->vera ? "vera_dropout" : "lora_dropout";
    if (!peft_get_number(root, path, dropout_key, 0.0, &a->lora_dropout, st)) return 0;
    if (!(a->lora_dropout >= 0 && a->lora_dropout < 1))
        return err_status_set(st, "%s: '%s' %g is not in [0, 1)", path, dropout_key,
                              a->lora_dropout);
    if (a->vera) {
        /* VeraConfig: no alpha (the update is unscaled: alpha / r = 1), no rsLoRA / DoRA /
         * patterns; d_initial only sets lambda_d's initial value, which the file replaces */
        a->lora_alpha = a->r;
        if (!peft_get_number(root, path, "d_initial", 0.1, &a->d_initial, st)) return 0;
        if (!peft_get_bool(root, path, "save_projection", 1, &a->save_projection, st)) return 0;
        v = json_object_get(root, "projection_prng_key");
        if (v && !json_is_null(v)) {
            if (!json_is_integer(v) || json_integer_value(v) < 0)
                return err_status_set(
                    st, "%s: 'projection_prng_key' must be a non-negative integer", path);
            a->projection_prng_key = (uint64_t)json_integer_value(v);
        }
    } else {
        if (!peft_get_number(root, path, "lora_alpha", 8.0, &a->lora_alpha, st)) return 0;
        /* scaling = lora_alpha / r (PEFT LoraLayer.update_layer): 0 makes every update zero */
        if (a->lora_alpha == 0)
            return err_status_set(
                st, "%s: lora_alpha 0 scales the update to zero: the adapter would change nothing",
                path);
        if (!peft_get_bool(root, path, "use_rslora", 0, &a->use_rslora, st)) return 0;
        if (!peft_get_bool(root, path, "use_dora", 0, &a->use_dora, st)) return 0;
    }
    return 1;
}

/* What shardlora cannot honour: a Conv1D layout, trained biases, modules or tokens saved
 * whole, and initialisations that changed the base weights -- refused, naming the key. */
static int peft_parse_refused(json_t *root, const char *path, ErrStatus *st) {
    json_t *v;
    int fifo = 0;
    if (!peft_get_bool(root, path, "fan_in_fan_out", 0, &fifo, st)) return 0;
    if (fifo)
        return err_status_set(
            st,
            "%s: fan_in_fan_out true (GPT-2 Conv1D layout) is not supported: Llama-family "
            "linears store W as [out, in]",
            path);
    v = json_object_get(root, "bias");
    if (v && !json_is_null(v) && !(json_is_string(v) && strcmp(json_string_value(v), "none") == 0))
        return err_status_set(
            st, "%s: bias %s is not supported (only \"none\": the adapter trains no biases)", path,
            json_is_string(v) ? json_string_value(v) : "(not a string)");
    static const char *const refused[][2] = {
        {"modules_to_save", "whole modules saved next to the adapter"},
        {"trainable_token_indices", "trainable embedding rows"},
        {"layer_replication", "layer replication"},
        {"lora_bias", "a trainable bias on lora_B"},
        {"target_parameters", "adapters on parameters instead of modules"},
        {"alora_invocation_tokens", "activated LoRA"},
        {"use_qalora", "QA-LoRA"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        if (!peft_is_unset(json_object_get(root, refused[i][0])))
            return err_status_set(st, "%s: '%s' is set (%s); shardlora does not support it", path,
                                  refused[i][0], refused[i][1]);
    v = json_object_get(root, "init_lora_weights");
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (strncmp(s, "pissa", 5) == 0 || strcmp(s, "olora") == 0 || strcmp(s, "corda") == 0 ||
            strcmp(s, "loftq") == 0)
            return err_status_set(
                st,
                "%s: init_lora_weights \"%s\" changes the base weights, which this adapter "
                "then needs; convert it to a plain LoRA adapter first (PEFT's "
                "path_initial_model_for_weight_conversion)",
                path, s);
    }
    return 1;
}

/* target_modules (a list, a regex or "all-linear") and exclude_modules. */
static int peft_parse_targets(PeftAdapter *a, json_t *root, const char *path, ErrStatus *st) {
    json_t *v;
    v = json_object_get(root, "target_modules");
    if (!v || json_is_null(v))
        return err_status_set(st, "%s: 'target_modules' is missing (null)", path);
    if (json_is_string(v)) {
        if (strcmp(json_string_value(v), "all-linear") == 0) {
            a->all_linear = 1;
        } else {
            a->target_regex = peft_strdup(json_string_value(v));
            if (!(a->target_re = peft_compile(a->target_regex, path, "target_modules", st)))
                return 0;
        }
    } else {
        if (!peft_get_strings(v, path, "target_modules", 0, &a->target_modules, &a->ntargets, st))
            return 0;
        if (a->ntargets == 0) return err_status_set(st, "%s: 'target_modules' is empty", path);
    }
    v = json_object_get(root, "exclude_modules");
    if (json_is_string(v)) {
        if (!(a->exclude_re = peft_compile(json_string_value(v), path, "exclude_modules", st)))
            return 0;
    } else if (v && !json_is_null(v)) {
        if (!peft_get_strings(v, path, "exclude_modules", 0, &a->exclude_modules, &a->nexclude, st))
            return 0;
    }
    return 1;
}

/* layers_to_transform and layers_pattern (not with a regex target_modules). */
static int peft_parse_layers(PeftAdapter *a, json_t *root, const char *path, ErrStatus *st) {
    json_t *v;
    v = json_object_get(root, "layers_to_transform");
    if (json_is_integer(v)) {
        a->layers_to_transform = malloc(sizeof(int));
        SL_CHECK(a->layers_to_transform, "out of memory");
        a->layers_to_transform[0] = (int)json_integer_value(v);
        a->nlayers_to_transform = 1;
    } else if (json_is_array(v)) {
        size_t k = json_array_size(v);
        a->layers_to_transform = calloc(k ? k : 1, sizeof(int));
        SL_CHECK(a->layers_to_transform, "out of memory");
        for (size_t i = 0; i < k; i++) {
            json_t *x = json_array_get(v, i);
            if (!json_is_integer(x) || json_integer_value(x) < 0)
                return err_status_set(st, "%s: layers_to_transform[%zu] must be a layer index",
                                      path, i);
            a->layers_to_transform[i] = (int)json_integer_value(x);
        }
        /* PEFT: an empty list transforms every layer */
        a->nlayers_to_transform = (int)k;
        if (k == 0) {
            free(a->layers_to_transform);
            a->layers_to_transform = NULL;
        }
    } else if (v && !json_is_null(v)) {
        return err_status_set(
            st, "%s: 'layers_to_transform' must be a layer index or a list of them", path);
    }
    v = json_object_get(root, "layers_pattern");
    if (v && !json_is_null(v)) {
        if (!peft_get_strings(v, path, "layers_pattern", 1, &a->layers_pattern, &a->nlayers_pattern,
                              st))
            return 0;
    }
    if (a->target_regex && (a->layers_to_transform || a->nlayers_pattern))
        return err_status_set(
            st,
            "%s: layers_to_transform / layers_pattern cannot be used with a regex "
            "target_modules (PEFT refuses it too)",
            path);
    return 1;
}

static int peft_parse(PeftAdapter *a, json_t *root, const char *path, ErrStatus *st) {
    if (!json_is_object(root)) return err_status_set(st, "%s: not a JSON object", path);
    if (!peft_parse_kind(a, root, path, st) || !peft_parse_refused(root, path, st) ||
        !peft_parse_targets(a, root, path, st) || !peft_parse_layers(a, root, path, st))
        return 0;
    json_t *v;
    if (!a->vera) {
        if (!peft_get_patterns(root, path, "rank_pattern", 1, &a->rank_pattern, &a->nrank_pattern,
                               st))
            return 0;
        if (!peft_get_patterns(root, path, "alpha_pattern", 0, &a->alpha_pattern,
                               &a->nalpha_pattern, st))
            return 0;
    }
    v = json_object_get(root, "base_model_name_or_path");
    a->base_model = peft_strdup(json_is_string(v) ? json_string_value(v) : "");
    return 1;
}

int peft_read(PeftAdapter *a, const char *dir, ErrStatus *st) {
    err_status_ok(st);
    memset(a, 0, sizeof *a);
    a->dir = peft_strdup(dir);
    char path[4200];
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    /* Python's json (PEFT) lets the last duplicate win; jansson does the same */
    json_t *root = afile_read_json(path, PEFT_MAX_CONFIG, 0, st);
    if (!root) {
        if (access(path, F_OK) != 0) { /* the message the missing-adapter case always had */
            int e = errno;
            err_status_set(st, "%s: cannot read the adapter: %s", path, strerror(e));
        }
        peft_close(a);
        return 0;
    }
    int ok = peft_parse(a, root, path, st);
    json_decref(root);
    if (ok) {
        snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
        if (access(path, F_OK) != 0) {
            char bin[4200];
            snprintf(bin, sizeof bin, "%s/adapter_model.bin", dir);
            ok = err_status_set(
                st, "%s: missing%s", path,
                access(bin, F_OK) == 0
                    ? " (adapter_model.bin, a pickle, is not read: save the adapter with "
                      "safe_serialization=True)"
                    : "");
        } else {
            ok = st_open(&a->tensors, path, st);
        }
    }
    if (!ok) peft_close(a);
    return ok;
}

static void peft_free_strings(char **v, int n) {
    for (int i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

static void peft_free_patterns(PeftPattern *p, int n) {
    for (int i = 0; p && i < n; i++) {
        free(p[i].key);
        if (p[i].re) pcre2_code_free(p[i].re);
    }
    free(p);
}

void peft_close(PeftAdapter *a) {
    if (a->tensors.path) st_close(&a->tensors);
    free(a->dir);
    peft_free_strings(a->target_modules, a->ntargets);
    peft_free_patterns(a->rank_pattern, a->nrank_pattern);
    peft_free_patterns(a->alpha_pattern, a->nalpha_pattern);
    free(a->layers_to_transform);
    free(a->base_model);
    free(a->target_regex);
    if (a->target_re) pcre2_code_free(a->target_re);
    peft_free_strings(a->exclude_modules, a->nexclude);
    if (a->exclude_re) pcre2_code_free(a->exclude_re);
    peft_free_strings(a->layers_pattern, a->nlayers_pattern);
    memset(a, 0, sizeof *a);
}

/* name == key, or name ends with "." + key */
static int peft_name_matches(const char *name, const char *key) {
    size_t n = strlen(name), k = strlen(key);
    if (n == k) return strcmp(name, key) == 0;
    return n > k && name[n - k - 1] == '.' && strcmp(name + n - k, key) == 0;
}

/* The layer index PEFT finds in a module name, or -1. */
static long peft_layer_index(const PeftAdapter *a, const char *module) {
    long idx = -1;
    if (a->nlayers_pattern == 0) {
        ErrStatus ignore;
        pcre2_code *re = peft_compile(".*\\.[^.]*\\.(\\d+)\\.", "", "", &ignore);
        SL_CHECK(re, "built-in regex");
        idx = peft_re_group_int(re, module);
        pcre2_code_free(re);
        return idx;
    }
    for (int i = 0; i < a->nlayers_pattern && idx < 0; i++) {
        size_t len = strlen(a->layers_pattern[i]) + 32;
        char *pat = malloc(len);
        SL_CHECK(pat, "out of memory");
        snprintf(pat, len, ".*\\.%s\\.(\\d+)\\.", a->layers_pattern[i]);
        ErrStatus ignore;
        pcre2_code *re = peft_compile(pat, "", "", &ignore);
        free(pat);
        if (!re) continue; /* a pattern that does not compile matches nothing */
        idx = peft_re_group_int(re, module);
        pcre2_code_free(re);
    }
    return idx;
}

int peft_module_targeted(const PeftAdapter *a, const char *module) {
    if (a->exclude_re && peft_re_match(a->exclude_re, module, 1)) return 0;
    for (int i = 0; i < a->nexclude; i++)
        if (peft_name_matches(module, a->exclude_modules[i])) return 0;
    if (a->all_linear) return 1;
    if (a->target_re) return peft_re_match(a->target_re, module, 1);
    for (int i = 0; i < a->ntargets; i++)
        if (strcmp(module, a->target_modules[i]) == 0)
            return 1; /* named in full: no layer filter */
    int found = 0;
    for (int i = 0; i < a->ntargets && !found; i++)
        found = peft_name_matches(module, a->target_modules[i]);
    if (!found || !a->layers_to_transform) return found;
    long idx = peft_layer_index(a, module);
    if (idx < 0) return 0;
    for (int i = 0; i < a->nlayers_to_transform; i++)
        if (a->layers_to_transform[i] == idx) return 1;
    return 0;
}

void peft_module_rank(const PeftAdapter *a, const char *module, int *r, double *alpha) {
    *r = a->r;
    *alpha = a->lora_alpha;
    for (int i = 0; i < a->nrank_pattern; i++)
        if (peft_re_match(a->rank_pattern[i].re, module, 0)) {
            *r = (int)a->rank_pattern[i].value;
            break;
        }
    for (int i = 0; i < a->nalpha_pattern; i++)
        if (peft_re_match(a->alpha_pattern[i].re, module, 0)) {
            *alpha = a->alpha_pattern[i].value;
            break;
        }
}

const StTensor *peft_tensor(const PeftAdapter *a, const char *module, const char *which) {
    char name[512];
    snprintf(name, sizeof name, "base_model.model.%s.%s%s", module, which,
             strcmp(which, "lora_magnitude_vector") == 0 || strncmp(which, "vera_lambda_", 12) == 0
                 ? ""
                 : ".weight");
    return st_find(&a->tensors, name);
}
