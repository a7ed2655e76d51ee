/* libFuzzer harness: adapter_config.json through peft_read (next to a fixed, valid
 * adapter_model.safetensors), then the module queries PEFT's rules answer (targets, rank
 * and alpha patterns, layers_to_transform). */
#include <stdio.h>
#include <stdlib.h>

#include "fuzz_common.h"
#include "io/peft.h"

static void fz_write_tensors(void) {
    static float a[2 * 4], b[4 * 2];
    static const int64_t sa[2] = {2, 4}, sb[2] = {4, 2};
    StWriter w;
    ErrStatus st;
    st_writer_init(&w);
    st_writer_add(&w, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", ST_F32, 2,
                  sa, a);
    st_writer_add(&w, "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", ST_F32, 2,
                  sb, b);
    if (!st_writer_write(&w, fz_path("adapter_model.safetensors"), &st)) {
        fprintf(stderr, "fuzz_peft: %s\n", st.msg);
        abort();
    }
    st_writer_free(&w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int ready; /* the safetensors file is written once */
    static const char *const modules[] = {
        "model.layers.0.self_attn.q_proj",
        "model.layers.1.self_attn.v_proj",
        "model.layers.12.mlp.down_proj",
        "model.h.3.attn.c_attn",
        "lm_head",
        "q_proj",
    };
    if (!ready) {
        fz_write_tensors();
        ready = 1;
    }
    fz_write("adapter_config.json", data, size);
    PeftAdapter a;
    ErrStatus st;
    if (!peft_read(&a, fz_dir(), &st)) return 0;
    for (size_t i = 0; i < sizeof modules / sizeof modules[0]; i++) {
        int r;
        double alpha;
        (void)peft_module_targeted(&a, modules[i]);
        peft_module_rank(&a, modules[i], &r, &alpha);
        (void)peft_tensor(&a, modules[i], "lora_A");
    }
    peft_close(&a);
    return 0;
}
