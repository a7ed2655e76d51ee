/* libFuzzer harness: a config.json through hfc_load; an accepted one must survive
 * hfc_write and read back with the same values. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "io/hfconfig.h"

static void fz_same(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "fuzz_hfconfig: %s differs after hfc_write + hfc_load\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    HfcConfig c, back;
    ErrStatus st;
    if (!hfc_load(&c, fz_write("config.json", data, size), &st)) return 0;
    const char *again = fz_path("config-again.json");
    if (!hfc_write(&c, again, &st)) {
        fprintf(stderr, "fuzz_hfconfig: an accepted config is not written: %s\n", st.msg);
        abort();
    }
    if (!hfc_load(&back, again, &st)) {
        fprintf(stderr, "fuzz_hfconfig: a written config is not read back: %s\n", st.msg);
        abort();
    }
    fz_same(c.arch == back.arch, "architecture");
    fz_same(c.hidden_size == back.hidden_size && c.intermediate_size == back.intermediate_size &&
                c.num_layers == back.num_layers && c.num_heads == back.num_heads &&
                c.num_kv_heads == back.num_kv_heads && c.head_dim == back.head_dim &&
                c.vocab_size == back.vocab_size,
            "a size");
    fz_same(c.rms_norm_eps == back.rms_norm_eps && c.rope_theta == back.rope_theta, "a real");
    fz_same(c.tie_word_embeddings == back.tie_word_embeddings && c.qkv_bias == back.qkv_bias &&
                c.mlp_bias == back.mlp_bias,
            "a flag");
    fz_same(c.bos_token_id == back.bos_token_id && c.eos_token_id == back.eos_token_id,
            "a token id");
    return 0;
}
