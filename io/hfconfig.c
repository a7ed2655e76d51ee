/* Hugging Face config.json reader / writer for the Llama family (see hfconfig.h). Defaults
 * follow the transformers config classes (LlamaConfig, MistralConfig, Qwen2Config) so a
 * file means the same here as in transformers. */
#include "hfconfig.h"

#include "afile.h"
#include "runtime/log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define HFC_MAX_FILE ((size_t)16 * 1024 * 1024)

typedef struct {
    HfcArch arch;
    const char *architecture; /* architectures[0] */
    const char *model_type;
    int64_t default_max_pos; /* transformers' default max_position_embeddings */
} HfcArchInfo;

static const HfcArchInfo hfc_archs[] = {
    {HFC_LLAMA, "LlamaForCausalLM", "llama", 2048},
    {HFC_MISTRAL, "MistralForCausalLM", "mistral", 4096 * 32},
    {HFC_QWEN2, "Qwen2ForCausalLM", "qwen2", 32768},
};
#define HFC_NARCH ((int)(sizeof hfc_archs / sizeof hfc_archs[0]))

const char *hfc_arch_name(HfcArch a) {
    for (int i = 0; i < HFC_NARCH; i++)
        if (hfc_archs[i].arch == a) return hfc_archs[i].architecture;
    return "unknown";
}

static const HfcArchInfo *hfc_arch_info(HfcArch a) {
    for (int i = 0; i < HFC_NARCH; i++)
        if (hfc_archs[i].arch == a) return &hfc_archs[i];
    return NULL;
}

void hfc_defaults(HfcConfig *c, HfcArch arch) {
    memset(c, 0, sizeof *c);
    c->arch = arch;
    snprintf(c->architecture, sizeof c->architecture, "%s", hfc_arch_name(arch));
    /* A small model (a few M parameters) with GQA so every code path is exercised. The vocab
     * matches the family's tokenizer so its token ids are in range. */
    c->hidden_size = 256;
    c->intermediate_size = 688;
    c->num_layers = 4;
    c->num_heads = 8;
    c->num_kv_heads = 4;
    c->head_dim = 32;
    c->vocab_size = arch == HFC_QWEN2 ? 151936 : 32000;
    c->bos_token_id = c->eos_token_id = -1;
    c->max_position_embeddings = 2048;
    c->rms_norm_eps = arch == HFC_QWEN2 ? 1e-6 : 1e-5;
    c->rope_theta = 10000.0;
    c->rope_scaling_type = 0;
    c->tie_word_embeddings = 0;
    c->qkv_bias = arch == HFC_QWEN2;
    c->o_bias = 0;
    c->mlp_bias = 0;
    snprintf(c->torch_dtype, sizeof c->torch_dtype, "float32");
}

/* ---- field readers: absent (or null, for optional fields) -> default ------------------ */

typedef struct {
    const char *path;
    ErrStatus *st;
} HfcCtx;

/* prefix.key for messages about nested fields. */
static void hfc_field_name(char *buf, size_t n, const char *prefix, const char *key) {
    if (prefix)
        snprintf(buf, n, "%s.%s", prefix, key);
    else
        snprintf(buf, n, "%s", key);
}

/* The field `key` of obj into *v: 1 present, 0 error (a required one missing), -1 absent or
 * null (optional); fname gets its dotted name for messages. */
static int hfc_field(HfcCtx *x, const json_t *obj, const char *prefix, const char *key,
                     int required, char *fname, size_t nfname, const json_t **v) {
    hfc_field_name(fname, nfname, prefix, key);
    *v = json_object_get(obj, key);
    if (*v && (required || !json_is_null(*v))) return 1;
    if (required) return err_status_set(x->st, "%s: missing required field '%s'", x->path, fname);
    return -1;
}

/* 1 value read, 0 error, -1 absent/null (optional). */
static int hfc_get_pos_int(HfcCtx *x, const json_t *obj, const char *prefix, const char *key,
                           int required, int64_t *out) {
    char fname[128];
    const json_t *v;
    int have = hfc_field(x, obj, prefix, key, required, fname, sizeof fname, &v);
    if (have <= 0) return have;
    if (!json_is_integer(v) || json_integer_value(v) <= 0)
        return err_status_set(x->st, "%s: field '%s' must be a positive integer", x->path, fname);
    *out = (int64_t)json_integer_value(v);
    return 1;
}

static int hfc_get_pos_num(HfcCtx *x, const json_t *obj, const char *prefix, const char *key,
                           int required, double *out) {
    char fname[128];
    const json_t *v;
    int have = hfc_field(x, obj, prefix, key, required, fname, sizeof fname, &v);
    if (have <= 0) return have;
    if (!json_is_number(v) || !(json_number_value(v) > 0) || !isfinite(json_number_value(v)))
        return err_status_set(x->st, "%s: field '%s' must be a positive number", x->path, fname);
    *out = json_number_value(v);
    return 1;
}

static int hfc_get_bool(HfcCtx *x, const json_t *obj, const char *key, int *out) {
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return -1;
    if (!json_is_boolean(v))
        return err_status_set(x->st, "%s: field '%s' must be true or false", x->path, key);
    *out = json_is_true(v);
    return 1;
}

/* Optional token id: an integer or a non-empty list of them (its first is taken, as
 * generation stops at any of them; the first is the one to append). 1 read, -1 absent. */
static int hfc_get_token_id(HfcCtx *x, const json_t *obj, const char *key, int64_t *out) {
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return -1;
    if (json_is_array(v) && json_array_size(v) > 0) v = json_array_get(v, 0);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return err_status_set(x->st, "%s: field '%s' must be a token id or a list of them", x->path,
                              key);
    *out = json_integer_value(v);
    return 1;
}

/* Optional string; 1 read, -1 absent/null, 0 error. */
static int hfc_get_str(HfcCtx *x, const json_t *obj, const char *prefix, const char *key,
                       const char **out) {
    char fname[128];
    hfc_field_name(fname, sizeof fname, prefix, key);
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return -1;
    if (!json_is_string(v))
        return err_status_set(x->st, "%s: field '%s' must be a string", x->path, fname);
    *out = json_string_value(v);
    return 1;
}

/* ---- validation shared by load and write --------------------------------------------- */

/* Sizes past any real model's are refused before they become allocations: with these
 * maxima every product of two or three of them (a matrix, a layer's weights, an activation
 * row) fits int64_t and size_t. Token ids are int32_t, hence the vocabulary's bound. */
static int hfc_check_maxima(const HfcConfig *c, const char *path, ErrStatus *st) {
    const struct {
        const char *name;
        int64_t v, max;
    } sizes[] = {
        {"hidden_size", c->hidden_size, (int64_t)1 << 20},
        {"intermediate_size", c->intermediate_size, (int64_t)1 << 22},
        {"num_hidden_layers", c->num_layers, (int64_t)1 << 14},
        {"num_attention_heads", c->num_heads, (int64_t)1 << 14},
        {"num_key_value_heads", c->num_kv_heads, (int64_t)1 << 14},
        {"head_dim", c->head_dim, (int64_t)1 << 14},
        {"vocab_size", c->vocab_size, INT32_MAX},
        {"max_position_embeddings", c->max_position_embeddings, (int64_t)1 << 40},
    };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (sizes[i].v > sizes[i].max)
            return err_status_set(
                st, "%s: field '%s' is %" PRId64 ", more than the %" PRId64 " shardlora accepts",
                path, sizes[i].name, sizes[i].v, sizes[i].max);
    if (c->num_heads * c->head_dim > ((int64_t)1 << 20))
        return err_status_set(st,
                              "%s: num_attention_heads %" PRId64 " x head_dim %" PRId64
                              " is more than the %d shardlora accepts",
                              path, c->num_heads, c->head_dim, 1 << 20);
    return 1;
}

int hfc_validate(const HfcConfig *c, const char *path, ErrStatus *st) {
    const struct {
        const char *name;
        int64_t v;
    } sizes[] = {
        {"hidden_size", c->hidden_size},
        {"intermediate_size", c->intermediate_size},
        {"num_hidden_layers", c->num_layers},
        {"num_attention_heads", c->num_heads},
        {"num_key_value_heads", c->num_kv_heads},
        {"head_dim", c->head_dim},
        {"vocab_size", c->vocab_size},
        {"max_position_embeddings", c->max_position_embeddings},
    };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (sizes[i].v <= 0)
            return err_status_set(st, "%s: field '%s' must be a positive integer (got %" PRId64 ")",
                                  path, sizes[i].name, sizes[i].v);
    if (!hfc_check_maxima(c, path, st)) return 0;
    const HfcArchInfo *ai = hfc_arch_info(c->arch);
    if (!ai) return err_status_set(st, "%s: unknown architecture enum %d", path, (int)c->arch);
    if (c->num_heads % c->num_kv_heads != 0)
        return err_status_set(st,
                              "%s: num_attention_heads %" PRId64
                              " is not a multiple of num_key_value_heads %" PRId64,
                              path, c->num_heads, c->num_kv_heads);
    if (c->head_dim % 2 != 0)
        return err_status_set(st, "%s: head_dim %" PRId64 " must be even (RoPE rotates pairs)",
                              path, c->head_dim);
    if (!(c->rms_norm_eps > 0) || !isfinite(c->rms_norm_eps))
        return err_status_set(st, "%s: field 'rms_norm_eps' must be a positive number", path);
    if (!(c->rope_theta > 0) || !isfinite(c->rope_theta))
        return err_status_set(st, "%s: field 'rope_theta' must be a positive number", path);
    if (c->rope_scaling_type == 1) {
        if (!(c->rope_factor > 0) || !(c->rope_low_freq_factor > 0) ||
            !(c->rope_high_freq_factor > 0) || c->rope_original_max_position <= 0)
            return err_status_set(st,
                                  "%s: rope_scaling (llama3): factor, low_freq_factor, "
                                  "high_freq_factor and original_max_position_embeddings must "
                                  "be positive",
                                  path);
        /* The llama3 formula divides by (high - low). */
        if (!(c->rope_high_freq_factor > c->rope_low_freq_factor))
            return err_status_set(st,
                                  "%s: rope_scaling.high_freq_factor (%g) must be greater than "
                                  "low_freq_factor (%g)",
                                  path, c->rope_high_freq_factor, c->rope_low_freq_factor);
    } else if (c->rope_scaling_type != 0) {
        return err_status_set(st, "%s: unknown rope_scaling_type %d", path, c->rope_scaling_type);
    }
    /* What transformers builds for each class: Qwen2 has q/k/v biases only; Mistral has no
     * biases; Llama's attention_bias covers q, k, v and o together. */
    if (c->arch == HFC_QWEN2 && (!c->qkv_bias || c->o_bias || c->mlp_bias))
        return err_status_set(st, "%s: Qwen2ForCausalLM has q/k/v biases only", path);
    if (c->arch == HFC_MISTRAL && (c->qkv_bias || c->o_bias || c->mlp_bias))
        return err_status_set(st, "%s: MistralForCausalLM has no biases", path);
    if (c->arch == HFC_LLAMA && c->qkv_bias != c->o_bias)
        return err_status_set(st,
                              "%s: LlamaForCausalLM's attention_bias sets q/k/v and o biases "
                              "together",
                              path);
    return 1;
}

/* ---- load ---------------------------------------------------------------------------- */

static const char *hfc_arch_model_type(HfcArch a) {
    for (int i = 0; i < HFC_NARCH; i++)
        if (hfc_archs[i].arch == a) return hfc_archs[i].model_type;
    return "unknown";
}

/* Sets c->arch from an 'architectures' name or (by_type) a model_type; 0 if unsupported. */
static int hfc_find_arch(const char *name, int by_type, HfcConfig *c) {
    for (int i = 0; i < HFC_NARCH; i++) {
        if (strcmp(name, by_type ? hfc_archs[i].model_type : hfc_archs[i].architecture) == 0) {
            c->arch = hfc_archs[i].arch;
            return 1;
        }
    }
    return 0;
}

/* architectures[0] picks the model class, model_type the config class (transformers'
 * AutoModel / AutoConfig): both must name the same architecture. Without architectures the
 * model_type decides, with a warning; without both the file is refused. */
static int hfc_parse_arch(HfcCtx *x, const json_t *root, HfcConfig *c) {
    const char *mt = NULL;
    const int rt = hfc_get_str(x, root, NULL, "model_type", &mt);
    if (rt == 0) return 0;
    const json_t *a = json_object_get(root, "architectures");
    if (a && !json_is_null(a)) {
        if (!json_is_array(a) || json_array_size(a) == 0 || !json_is_string(json_array_get(a, 0)))
            return err_status_set(
                x->st, "%s: field 'architectures' must be a non-empty array of strings", x->path);
        const char *name = json_string_value(json_array_get(a, 0));
        if (!hfc_find_arch(name, 0, c))
            return err_status_set(x->st,
                                  "%s: unsupported architecture '%s' in 'architectures' "
                                  "(supported: LlamaForCausalLM, MistralForCausalLM, "
                                  "Qwen2ForCausalLM)",
                                  x->path, name);
        HfcConfig by_type;
        if (rt > 0 && (!hfc_find_arch(mt, 1, &by_type) || by_type.arch != c->arch))
            return err_status_set(x->st,
                                  "%s: model_type '%s' contradicts architectures '%s' (which "
                                  "has model_type '%s')",
                                  x->path, mt, name, hfc_arch_model_type(c->arch));
        return 1;
    }
    if (rt < 0)
        return err_status_set(
            x->st, "%s: missing field 'architectures' (and no 'model_type' to infer it from)",
            x->path);
    if (!hfc_find_arch(mt, 1, c))
        return err_status_set(x->st,
                              "%s: no 'architectures' and unsupported model_type '%s' (supported: "
                              "llama, mistral, qwen2)",
                              x->path, mt);
    if (err_rank() == 0)
        log_warn("%s: no 'architectures'; using %s from model_type '%s'", x->path,
                 hfc_arch_name(c->arch), mt);
    return 1;
}

/* rope_scaling (or transformers v5's rope_parameters): null, "default", or llama3. */
static int hfc_parse_rope(HfcCtx *x, const json_t *root, HfcConfig *c) {
    const char *key = "rope_scaling";
    const json_t *rs = json_object_get(root, key);
    const json_t *rp = json_object_get(root, "rope_parameters");
    if ((!rs || json_is_null(rs)) && rp && !json_is_null(rp)) {
        key = "rope_parameters";
        rs = rp;
    }
    if (rp && !json_is_null(rp)) {
        if (!json_is_object(rp))
            return err_status_set(x->st, "%s: field 'rope_parameters' must be an object or null",
                                  x->path);
        /* v5 moved rope_theta in here; the top-level field still wins when both exist. */
        if (!json_object_get(root, "rope_theta") &&
            !hfc_get_pos_num(x, rp, "rope_parameters", "rope_theta", 0, &c->rope_theta))
            return 0;
    }
    c->rope_scaling_type = 0;
    if (!rs || json_is_null(rs)) return 1;
    if (!json_is_object(rs))
        return err_status_set(x->st, "%s: field '%s' must be an object or null", x->path, key);
    const char *type = NULL;
    int r = hfc_get_str(x, rs, key, "rope_type", &type);
    if (r == 0) return 0;
    if (r < 0) {
        r = hfc_get_str(x, rs, key, "type", &type); /* the pre-4.45 name */
        if (r == 0) return 0;
        if (r < 0) return err_status_set(x->st, "%s: field '%s' has no 'rope_type'", x->path, key);
    }
    if (strcmp(type, "default") == 0) return 1;
    if (strcmp(type, "llama3") != 0)
        return err_status_set(x->st, "%s: unsupported rope_scaling type '%s' (supported: llama3)",
                              x->path, type);
    c->rope_scaling_type = 1;
    if (!hfc_get_pos_num(x, rs, key, "factor", 1, &c->rope_factor) ||
        !hfc_get_pos_num(x, rs, key, "low_freq_factor", 1, &c->rope_low_freq_factor) ||
        !hfc_get_pos_num(x, rs, key, "high_freq_factor", 1, &c->rope_high_freq_factor) ||
        !hfc_get_pos_int(x, rs, key, "original_max_position_embeddings", 1,
                         &c->rope_original_max_position))
        return 0;
    return 1;
}

static int hfc_parse(HfcCtx *x, const json_t *root, HfcConfig *c) {
    if (!json_is_object(root)) return err_status_set(x->st, "%s: not a JSON object", x->path);
    if (!hfc_parse_arch(x, root, c)) return 0;
    HfcArch arch = c->arch;
    memset(c, 0, sizeof *c);
    c->arch = arch;
    snprintf(c->architecture, sizeof c->architecture, "%s", hfc_arch_name(arch));

    if (!hfc_get_pos_int(x, root, NULL, "hidden_size", 1, &c->hidden_size) ||
        !hfc_get_pos_int(x, root, NULL, "intermediate_size", 1, &c->intermediate_size) ||
        !hfc_get_pos_int(x, root, NULL, "num_hidden_layers", 1, &c->num_layers) ||
        !hfc_get_pos_int(x, root, NULL, "num_attention_heads", 1, &c->num_heads) ||
        !hfc_get_pos_int(x, root, NULL, "vocab_size", 1, &c->vocab_size) ||
        !hfc_get_pos_num(x, root, NULL, "rms_norm_eps", 1, &c->rms_norm_eps))
        return 0;

    int r;
    c->num_kv_heads = c->num_heads;
    if (!hfc_get_pos_int(x, root, NULL, "num_key_value_heads", 0, &c->num_kv_heads)) return 0;
    r = hfc_get_pos_int(x, root, NULL, "head_dim", 0, &c->head_dim);
    if (r == 0) return 0;
    if (r < 0) {
        if (c->hidden_size % c->num_heads != 0)
            return err_status_set(x->st,
                                  "%s: hidden_size %" PRId64
                                  " is not a multiple of num_attention_heads %" PRId64
                                  " and no head_dim is given",
                                  x->path, c->hidden_size, c->num_heads);
        c->head_dim = c->hidden_size / c->num_heads;
    }
    c->rope_theta = 10000.0;
    if (!hfc_get_pos_num(x, root, NULL, "rope_theta", 0, &c->rope_theta)) return 0;
    c->max_position_embeddings = hfc_arch_info(arch)->default_max_pos;
    if (!hfc_get_pos_int(x, root, NULL, "max_position_embeddings", 0, &c->max_position_embeddings))
        return 0;
    if (!hfc_get_bool(x, root, "tie_word_embeddings", &c->tie_word_embeddings)) return 0;
    c->bos_token_id = c->eos_token_id = -1;
    if (!hfc_get_token_id(x, root, "bos_token_id", &c->bos_token_id) ||
        !hfc_get_token_id(x, root, "eos_token_id", &c->eos_token_id))
        return 0;
    int attn_bias = 0, mlp_bias = 0;
    if (!hfc_get_bool(x, root, "attention_bias", &attn_bias) ||
        !hfc_get_bool(x, root, "mlp_bias", &mlp_bias))
        return 0;
    /* transformers hard-codes the biases of Qwen2 (q/k/v only) and Mistral (none) and
     * ignores these keys for them; only Llama reads them. */
    if (arch == HFC_LLAMA) {
        c->qkv_bias = c->o_bias = attn_bias;
        c->mlp_bias = mlp_bias;
    } else if (arch == HFC_QWEN2) {
        c->qkv_bias = 1;
    }

    const char *act = NULL;
    r = hfc_get_str(x, root, NULL, "hidden_act", &act);
    if (r == 0) return 0;
    if (r > 0 && strcmp(act, "silu") != 0)
        return err_status_set(x->st, "%s: field 'hidden_act' is '%s'; only 'silu' is supported",
                              x->path, act);

    /* transformers >= 4.56 writes "dtype"; older versions "torch_dtype". */
    const char *dt = NULL;
    r = hfc_get_str(x, root, NULL, "torch_dtype", &dt);
    if (r < 0) r = hfc_get_str(x, root, NULL, "dtype", &dt);
    if (r == 0) return 0;
    if (r > 0) {
        if (strlen(dt) >= sizeof c->torch_dtype)
            return err_status_set(x->st, "%s: field 'torch_dtype' value '%s' is too long", x->path,
                                  dt);
        snprintf(c->torch_dtype, sizeof c->torch_dtype, "%s", dt);
    }
    /* informational (the model card's base_model when it is a Hub id): never refused */
    const json_t *np = json_object_get(root, "_name_or_path");
    if (json_is_string(np) && strlen(json_string_value(np)) < sizeof c->name_or_path)
        snprintf(c->name_or_path, sizeof c->name_or_path, "%s", json_string_value(np));
    if (!hfc_parse_rope(x, root, c)) return 0;
    return hfc_validate(c, x->path, x->st);
}

int hfc_load(HfcConfig *c, const char *path, ErrStatus *st) {
    err_status_ok(st);
    HfcCtx x = {path, st};
    json_t *root = afile_read_json(path, HFC_MAX_FILE, JSON_REJECT_DUPLICATES, st);
    if (!root) return 0;
    HfcConfig tmp;
    memset(&tmp, 0, sizeof tmp);
    int ok = hfc_parse(&x, root, &tmp);
    json_decref(root);
    if (ok) *c = tmp; /* c is untouched on error */
    return ok;
}

/* ---- write --------------------------------------------------------------------------- */

typedef struct {
    char buf[8192];
    size_t len;
} HfcText;

static void hfc_put(HfcText *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void hfc_put(HfcText *t, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->buf + t->len, sizeof t->buf - t->len, fmt, ap);
    va_end(ap);
    SL_CHECK(n >= 0 && (size_t)n < sizeof t->buf - t->len, "config.json text too long");
    t->len += (size_t)n;
}

/* Shortest text that reads back as the same double, and always a JSON real ("8.0", not
 * "8"), as transformers writes floats. Assumes the C locale (no decimal comma). */
static void hfc_fmt_real(char *buf, size_t n, double v) {
    /* Integral values print as "500000.0", not the shorter "5e+05". */
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(buf, n, "%.1f", v);
        return;
    }
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, n, "%.*g", p, v);
        if (strtod(buf, NULL) == v) break;
    }
    if (!strpbrk(buf, ".eE")) {
        size_t k = strlen(buf);
        if (k + 2 < n) memcpy(buf + k, ".0", 3);
    }
}

static void hfc_put_real(HfcText *t, const char *key, double v, const char *sep) {
    char num[64];
    hfc_fmt_real(num, sizeof num, v);
    hfc_put(t, "  \"%s\": %s%s\n", key, num, sep);
}

static void hfc_put_str(HfcText *t, const char *key, const char *v, const char *sep) {
    json_t *s = json_string(v);
    char *enc = s ? json_dumps(s, JSON_ENCODE_ANY) : NULL;
    SL_CHECK(enc != NULL, "cannot encode '%s' as JSON", key);
    hfc_put(t, "  \"%s\": %s%s\n", key, enc, sep);
    free(enc);
    json_decref(s);
}

int hfc_write(const HfcConfig *c, const char *path, ErrStatus *st) {
    err_status_ok(st);
    if (!hfc_validate(c, path, st)) return 0;
    const HfcArchInfo *ai = hfc_arch_info(c->arch);
    HfcText *tp = malloc(sizeof *tp); /* 8 KB; kept off the stack */
    SL_CHECK(tp != NULL, "out of memory");
    tp->len = 0;
    hfc_put(tp, "{\n");
    hfc_put(tp, "  \"architectures\": [\"%s\"],\n", ai->architecture);
    hfc_put(tp, "  \"model_type\": \"%s\",\n", ai->model_type);
    if (c->arch == HFC_LLAMA) {
        hfc_put(tp, "  \"attention_bias\": %s,\n", c->qkv_bias ? "true" : "false");
        hfc_put(tp, "  \"mlp_bias\": %s,\n", c->mlp_bias ? "true" : "false");
    }
    hfc_put(tp, "  \"attention_dropout\": 0.0,\n");
    hfc_put(tp, "  \"hidden_act\": \"silu\",\n");
    hfc_put(tp, "  \"hidden_size\": %" PRId64 ",\n", c->hidden_size);
    hfc_put(tp, "  \"head_dim\": %" PRId64 ",\n", c->head_dim);
    hfc_put(tp, "  \"intermediate_size\": %" PRId64 ",\n", c->intermediate_size);
    hfc_put(tp, "  \"max_position_embeddings\": %" PRId64 ",\n", c->max_position_embeddings);
    hfc_put(tp, "  \"num_attention_heads\": %" PRId64 ",\n", c->num_heads);
    hfc_put(tp, "  \"num_hidden_layers\": %" PRId64 ",\n", c->num_layers);
    hfc_put(tp, "  \"num_key_value_heads\": %" PRId64 ",\n", c->num_kv_heads);
    hfc_put_real(tp, "rms_norm_eps", c->rms_norm_eps, ",");
    if (c->rope_scaling_type == 1) {
        char f[64], lo[64], hi[64];
        hfc_fmt_real(f, sizeof f, c->rope_factor);
        hfc_fmt_real(lo, sizeof lo, c->rope_low_freq_factor);
        hfc_fmt_real(hi, sizeof hi, c->rope_high_freq_factor);
        hfc_put(tp,
                "  \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": %s, "
                "\"low_freq_factor\": %s, \"high_freq_factor\": %s, "
                "\"original_max_position_embeddings\": %" PRId64 "},\n",
                f, lo, hi, c->rope_original_max_position);
    } else {
        hfc_put(tp, "  \"rope_scaling\": null,\n");
    }
    hfc_put_real(tp, "rope_theta", c->rope_theta, ",");
    /* We attend over the whole sequence; tell transformers to do the same. */
    if (c->arch == HFC_MISTRAL) hfc_put(tp, "  \"sliding_window\": null,\n");
    if (c->arch == HFC_QWEN2) hfc_put(tp, "  \"use_sliding_window\": false,\n");
    hfc_put(tp, "  \"tie_word_embeddings\": %s,\n", c->tie_word_embeddings ? "true" : "false");
    if (c->torch_dtype[0]) hfc_put_str(tp, "torch_dtype", c->torch_dtype, ",");
    if (c->bos_token_id >= 0) hfc_put(tp, "  \"bos_token_id\": %" PRId64 ",\n", c->bos_token_id);
    if (c->eos_token_id >= 0) hfc_put(tp, "  \"eos_token_id\": %" PRId64 ",\n", c->eos_token_id);
    hfc_put(tp, "  \"use_cache\": true,\n");
    hfc_put(tp, "  \"vocab_size\": %" PRId64 "\n", c->vocab_size);
    hfc_put(tp, "}\n");
    int ok = afile_write_all(path, tp->buf, tp->len, st);
    free(tp);
    return ok;
}
