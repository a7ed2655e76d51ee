/* PEFT adapter files (DESIGN.md §7): adapter_config.json (peft_type "LORA", ...) next to
 * adapter_model.safetensors with PEFT's keys, e.g.
 *   base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight   [r, in]
 *   base_model.model.model.layers.3.self_attn.q_proj.lora_B.weight   [out, r]
 *   base_model.model.model.layers.3.self_attn.q_proj.lora_magnitude_vector  [out] (DoRA)
 * Writing (the config; the tensors go through io/safetensors.h) and reading, with PEFT's
 * rules for per-module rank and alpha (rank_pattern / alpha_pattern: a key K applies to the
 * module whose full name matches the regex "(.*\.)?K$", the first such key in the file's
 * order; otherwise r / lora_alpha) and layers_to_transform. No model semantics here: modules
 * are named by strings ("model.layers.3.self_attn.q_proj"). */
#ifndef SHARDLORA_IO_PEFT_H
#define SHARDLORA_IO_PEFT_H

#include <stdint.h>

#include "../runtime/err.h"
#include "safetensors.h"

typedef struct {
    int r;
    double lora_alpha;
    double lora_dropout;
    int use_rslora;
    int use_dora;
    const char *target_modules; /* comma-separated: short names ("q_proj") or full module
                                 * names ("model.layers.0.self_attn.q_proj") */
    const char *base_model;     /* base_model_name_or_path */
    const char *init;           /* "default" or "gaussian" */
    /* Optional (zero = none): rank_pattern / alpha_pattern entries, written in this order,
     * and layers_to_transform (written with layers_pattern "layers"). */
    int nrank_pattern;
    const char *const *rank_keys;
    const int *rank_values;
    int nalpha_pattern;
    const char *const *alpha_keys;
    const double *alpha_values;
    int nlayers;
    const int *layers;
    /* (appended) peft_type: NULL or "LORA", or "VERA" (VeraConfig keys: vera_dropout =
     * lora_dropout, d_initial, save_projection, projection_prng_key; no lora_alpha, use_dora,
     * use_rslora, patterns). */
    const char *peft_type;
    double d_initial;
    int save_projection;
    uint64_t projection_prng_key;
} PeftConfig;

/* Writes DIR/adapter_config.json (tmp + rename) with every key PEFT's LoraConfig reads
 * (sorted keys, as PEFT's save_pretrained writes them; integral alphas as integers; reals
 * with the fewest digits that read back exactly), so equal configurations give equal
 * bytes. */
int peft_write_config(const PeftConfig *c, const char *dir, ErrStatus *st);

/* A pattern of rank_pattern / alpha_pattern. */
typedef struct {
    char *key;
    double value;
    void *re; /* compiled "(.*\.)?KEY$" (pcre2_code *) */
} PeftPattern;

/* An adapter directory as read. */
typedef struct {
    char *dir;
    int r;
    double lora_alpha, lora_dropout;
    int use_rslora, use_dora;
    char **target_modules; /* the module names of "target_modules" (a list, or "all-linear") */
    int ntargets;
    int all_linear; /* "all-linear" */
    PeftPattern *rank_pattern, *alpha_pattern;
    int nrank_pattern, nalpha_pattern;
    int *layers_to_transform; /* NULL: every layer */
    int nlayers_to_transform;
    char *base_model; /* may be "" */
    StFile tensors;   /* adapter_model.safetensors, open */
    /* (appended) */
    char *target_regex;     /* "target_modules" as a regex string (re.fullmatch), or NULL */
    void *target_re;        /* its compiled form (pcre2_code *) */
    char **exclude_modules; /* "exclude_modules" as a list, or NULL */
    int nexclude;
    void *exclude_re;      /* "exclude_modules" as a regex string (pcre2_code *) */
    char **layers_pattern; /* "layers_pattern" (a string or a list), or NULL */
    int nlayers_pattern;
    /* peft_type "VERA" (PEFT's VeraConfig, peft/tuners/vera/config.py): r (default 256),
     * vera_dropout (read into lora_dropout), d_initial (0.1), save_projection (true),
     * projection_prng_key (0); lora_alpha is set to r (VeRA has no scale), use_rslora /
     * use_dora 0, no patterns. The tensors: per module `<prefix>.vera_lambda_d` [r] and
     * `<prefix>.vera_lambda_b` [out], shared `base_model.vera_A` [r, max_in] and
     * `base_model.vera_B` [max_out, r] when save_projection. */
    int vera; /* 1: peft_type "VERA"; 0: "LORA" */
    double d_initial;
    int save_projection;
    uint64_t projection_prng_key;
} PeftAdapter;

/* Reads DIR/adapter_config.json and opens DIR/adapter_model.safetensors. Refused with a
 * message naming the file and the key: peft_type other than LORA and VERA, fan_in_fan_out true,
 * bias other than "none", modules_to_save, trainable_token_indices, layer_replication, lora_bias,
 * target_parameters, base-weight-changing initialisations (PiSSA, OLoRA, CorDA, LoftQ), a
 * missing file, invalid JSON, wrong types, a regex that does not compile. target_modules may
 * be a list, "all-linear" or a regex string (matched as PEFT does, with re.fullmatch).
 * use_dora is read, not refused (the caller decides). Unknown keys (newer PEFT versions add
 * some) are ignored. */
int peft_read(PeftAdapter *a, const char *dir, ErrStatus *st);
void peft_close(PeftAdapter *a);

/* PEFT's rank and alpha of a module given by its full name (e.g.
 * "model.layers.3.self_attn.q_proj"): from the patterns, else r and lora_alpha. */
void peft_module_rank(const PeftAdapter *a, const char *module, int *r, double *alpha);

/* Whether PEFT puts an adapter on the module (check_target_module_exists in PEFT's
 * tuners_utils.py): exclude_modules first; then target_modules ("all-linear": every module
 * given here, the caller passes only linears that are not the output layer; a regex string:
 * re.fullmatch; a list: the name itself, or a suffix after a '.', the latter filtered by
 * layers_to_transform with the layer index found by layers_pattern). */
int peft_module_targeted(const PeftAdapter *a, const char *module);

/* The tensor of a module ("lora_A", "lora_B" or "lora_magnitude_vector"), or NULL. */
const StTensor *peft_tensor(const PeftAdapter *a, const char *module, const char *which);

#endif
