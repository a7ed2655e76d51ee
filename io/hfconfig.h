/* Hugging Face config.json for the Llama family: LlamaForCausalLM, MistralForCausalLM,
 * Qwen2ForCausalLM. Unknown architecture, a missing or mistyped field: a clear message
 * naming the file and the field. */
#ifndef SHARDLORA_IO_HFCONFIG_H
#define SHARDLORA_IO_HFCONFIG_H

#include <stdint.h>

#include "../runtime/err.h"

typedef enum { HFC_LLAMA = 0, HFC_MISTRAL, HFC_QWEN2 } HfcArch;

typedef struct {
    HfcArch arch;
    char architecture[64];     /* "LlamaForCausalLM", ... */
    int64_t hidden_size;       /* C */
    int64_t intermediate_size; /* F */
    int64_t num_layers;        /* L (num_hidden_layers) */
    int64_t num_heads;         /* H */
    int64_t num_kv_heads;      /* KV (default H) */
    int64_t head_dim;          /* D (default C / H) */
    int64_t vocab_size;        /* V */
    int64_t max_position_embeddings;
    double rms_norm_eps;
    double rope_theta;     /* default 10000 */
    int rope_scaling_type; /* 0 none, 1 llama3 */
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int64_t rope_original_max_position;
    int tie_word_embeddings;            /* default 0 */
    int qkv_bias;                       /* Qwen2: always 1; Llama: attention_bias */
    int o_bias;                         /* Llama attention_bias also puts a bias on o_proj */
    int mlp_bias;                       /* Llama mlp_bias */
    char torch_dtype[16];               /* as written, informational */
    char name_or_path[256];             /* _name_or_path as written ("" when absent or longer) */
    int64_t bos_token_id, eos_token_id; /* -1 when absent (a list: its first id) */
} HfcConfig;

/* Parse and validate (positive sizes, H % KV == 0, even D). */
int hfc_load(HfcConfig *c, const char *path, ErrStatus *st);
/* Write a config.json that hfc_load and transformers both read (atomically, io/afile.h).
 * c is validated as hfc_load validates; 0 with st on a bad config or a failed write. */
int hfc_write(const HfcConfig *c, const char *path, ErrStatus *st);
/* The checks hfc_load and hfc_write make (positive sizes within shardlora's maxima, H % KV
 * == 0, even D, ...); messages start with path. */
int hfc_validate(const HfcConfig *c, const char *path, ErrStatus *st);
/* Fill defaults for a given architecture (used by make-model before flags). */
void hfc_defaults(HfcConfig *c, HfcArch arch);
const char *hfc_arch_name(HfcArch a);

#endif
