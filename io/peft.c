/* adapter_config.json writer (see peft.h). Field names and values follow PEFT's LoraConfig. */
#include "peft.h"
#include "afile.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

int peft_write_config(const PeftConfig *c, const char *dir, ErrStatus *st) {
    err_status_ok(st);
    json_t *o = json_object();
    json_t *targets = json_array();
    const char *p = c->target_modules;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        json_array_append_new(targets, json_stringn(p, len));
        p = e ? e + 1 : p + len;
    }
    json_object_set_new(o, "peft_type", json_string("LORA"));
    json_object_set_new(o, "task_type", json_string("CAUSAL_LM"));
    json_object_set_new(o, "base_model_name_or_path", json_string(c->base_model));
    json_object_set_new(o, "r", json_integer(c->r));
    json_object_set_new(o, "lora_alpha", json_real(c->lora_alpha));
    json_object_set_new(o, "lora_dropout", json_real(c->lora_dropout));
    json_object_set_new(o, "target_modules", targets);
    json_object_set_new(o, "use_rslora", json_boolean(c->use_rslora));
    json_object_set_new(o, "use_dora", json_boolean(c->use_dora));
    json_object_set_new(o, "bias", json_string("none"));
    json_object_set_new(o, "fan_in_fan_out", json_false());
    json_object_set_new(o, "inference_mode", json_true());
    json_object_set_new(o, "init_lora_weights",
                        strcmp(c->init, "gaussian") == 0 ? json_string("gaussian") : json_true());
    json_object_set_new(o, "modules_to_save", json_null());
    char path[4096];
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    int ok = afile_write_json(path, o, JSON_INDENT(2) | JSON_SORT_KEYS, st);
    json_decref(o);
    return ok;
}
