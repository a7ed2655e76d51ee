/* PEFT adapter files: adapter_config.json (peft_type "LORA", ...) next to
 * adapter_model.safetensors with PEFT's keys (DESIGN.md §7). The full interop (reading
 * adapters, DoRA, merge) builds on this. */
#ifndef SHARDLORA_IO_PEFT_H
#define SHARDLORA_IO_PEFT_H

#include "../runtime/err.h"

typedef struct {
    int r;
    double lora_alpha;
    double lora_dropout;
    int use_rslora;
    int use_dora;
    const char *target_modules; /* comma-separated */
    const char *base_model;     /* base_model_name_or_path */
    const char *init;           /* "default" or "gaussian" */
} PeftConfig;

/* Writes DIR/adapter_config.json (tmp + rename). */
int peft_write_config(const PeftConfig *c, const char *dir, ErrStatus *st);

#endif
