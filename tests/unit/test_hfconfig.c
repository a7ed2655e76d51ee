/* Unit test of io/hfconfig: write -> load round trip for every architecture, real-world
 * config.json shapes (Llama 3.1 with llama3 rope_scaling, Mistral, Qwen2, head_dim null,
 * legacy "type"), and every rejection: missing / mistyped fields, unknown architecture,
 * unsupported rope_scaling, malformed JSON, invalid sizes. Messages must name the file and
 * the field. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/hfconfig.h"
#include "tests/unit/check.h"

static void write_text(const char *path, const char *text) {
    check_write_file(path, text, strlen(text));
}

/* Field-by-field equality; prints the first difference. */
static int cfg_equal(const HfcConfig *a, const HfcConfig *b) {
#define SAME(f)                                                                                    \
    if (a->f != b->f) {                                                                            \
        printf("  field %s differs\n", #f);                                                        \
        return 0;                                                                                  \
    }
    SAME(arch)
    SAME(hidden_size)
    SAME(intermediate_size)
    SAME(num_layers)
    SAME(num_heads)
    SAME(num_kv_heads)
    SAME(head_dim)
    SAME(vocab_size)
    SAME(max_position_embeddings)
    SAME(rms_norm_eps)
    SAME(rope_theta)
    SAME(rope_scaling_type)
    SAME(rope_factor)
    SAME(rope_low_freq_factor)
    SAME(rope_high_freq_factor)
    SAME(rope_original_max_position)
    SAME(tie_word_embeddings)
    SAME(qkv_bias)
    SAME(o_bias)
    SAME(mlp_bias)
#undef SAME
    if (strcmp(a->architecture, b->architecture) || strcmp(a->torch_dtype, b->torch_dtype)) {
        printf("  architecture/torch_dtype differ\n");
        return 0;
    }
    return 1;
}

static void test_round_trip(void) {
    printf("round trip per architecture\n");
    for (int arch = HFC_LLAMA; arch <= HFC_QWEN2; arch++) {
        HfcConfig c, r;
        ErrStatus st;
        hfc_defaults(&c, (HfcArch)arch);
        CHECK_TRUE(!strcmp(c.architecture, hfc_arch_name((HfcArch)arch)), "defaults arch name");
        /* Values that do not survive a sloppy float format or a defaulting reader. */
        c.rms_norm_eps = 1e-5 / 3.0;
        c.rope_theta = 500000.0;
        c.num_kv_heads = 2;
        c.head_dim = 48; /* != hidden / heads */
        c.max_position_embeddings = 4096;
        snprintf(c.torch_dtype, sizeof c.torch_dtype, "bfloat16");
        if (arch == HFC_LLAMA) {
            c.qkv_bias = c.o_bias = 1;
            c.mlp_bias = 1;
            c.tie_word_embeddings = 1;
            c.rope_scaling_type = 1;
            c.rope_factor = 8.0;
            c.rope_low_freq_factor = 1.0;
            c.rope_high_freq_factor = 4.0;
            c.rope_original_max_position = 8192;
        }
        const char *p = check_tmp_path("rt.json");
        int ok = hfc_write(&c, p, &st);
        CHECK_TRUE(ok, "%s write: %s", c.architecture, st.msg);
        memset(&r, 0x5a, sizeof r);
        ok = ok && hfc_load(&r, p, &st);
        CHECK_TRUE(ok, "%s load: %s", c.architecture, st.msg);
        CHECK_TRUE(ok && cfg_equal(&c, &r), "%s round trip", c.architecture);
        CHECK_TRUE(access(check_tmp_path("rt.json.tmp"), F_OK) != 0, "tmp left behind");
        printf("  %-20s written, read back: %s\n", c.architecture,
               ok && cfg_equal(&c, &r) ? "equal" : "DIFFERENT");
        /* The defaults themselves are valid. */
        hfc_defaults(&c, (HfcArch)arch);
        ok = hfc_write(&c, p, &st) && hfc_load(&r, p, &st);
        CHECK_TRUE(ok && cfg_equal(&c, &r), "%s defaults round trip: %s", c.architecture, st.msg);
    }
    /* The written text: floats as JSON reals, shortest form. */
    HfcConfig c;
    ErrStatus st;
    hfc_defaults(&c, HFC_LLAMA);
    c.rope_scaling_type = 1;
    c.rope_factor = 8;
    c.rope_low_freq_factor = 1;
    c.rope_high_freq_factor = 4;
    c.rope_original_max_position = 8192;
    hfc_write(&c, check_tmp_path("text.json"), &st);
    FILE *fp = fopen(check_tmp_path("text.json"), "r");
    char text[8192];
    size_t n = fread(text, 1, sizeof text - 1, fp);
    fclose(fp);
    text[n] = 0;
    CHECK_TRUE(strstr(text, "\"rms_norm_eps\": 1e-05,") &&
                   strstr(text, "\"rope_theta\": 10000.0,") && strstr(text, "\"factor\": 8.0") &&
                   strstr(text, "\"model_type\": \"llama\"") &&
                   strstr(text, "\"hidden_act\": \"silu\"") &&
                   strstr(text, "\"architectures\": [\"LlamaForCausalLM\"]"),
               "written text:\n%s", text);
}

/* Parse a literal config; expect success. */
static int load_text(HfcConfig *c, const char *text, ErrStatus *st) {
    const char *p = check_tmp_path("config.json");
    write_text(p, text);
    return hfc_load(c, p, st);
}

static void test_real_configs(void) {
    printf("real-world configs\n");
    HfcConfig c;
    ErrStatus st;
    /* Llama 3.1 8B (as on the Hub). */
    int ok = load_text(&c,
                       "{\n"
                       "  \"architectures\": [\"LlamaForCausalLM\"],\n"
                       "  \"attention_bias\": false,\n"
                       "  \"attention_dropout\": 0.0,\n"
                       "  \"bos_token_id\": 128000,\n"
                       "  \"eos_token_id\": [128001, 128008, 128009],\n"
                       "  \"hidden_act\": \"silu\",\n"
                       "  \"hidden_size\": 4096,\n"
                       "  \"initializer_range\": 0.02,\n"
                       "  \"intermediate_size\": 14336,\n"
                       "  \"max_position_embeddings\": 131072,\n"
                       "  \"mlp_bias\": false,\n"
                       "  \"model_type\": \"llama\",\n"
                       "  \"num_attention_heads\": 32,\n"
                       "  \"num_hidden_layers\": 32,\n"
                       "  \"num_key_value_heads\": 8,\n"
                       "  \"pretraining_tp\": 1,\n"
                       "  \"rms_norm_eps\": 1e-05,\n"
                       "  \"rope_scaling\": {\n"
                       "    \"factor\": 8.0,\n"
                       "    \"low_freq_factor\": 1.0,\n"
                       "    \"high_freq_factor\": 4.0,\n"
                       "    \"original_max_position_embeddings\": 8192,\n"
                       "    \"rope_type\": \"llama3\"\n"
                       "  },\n"
                       "  \"rope_theta\": 500000.0,\n"
                       "  \"tie_word_embeddings\": false,\n"
                       "  \"torch_dtype\": \"bfloat16\",\n"
                       "  \"transformers_version\": \"4.43.0.dev0\",\n"
                       "  \"use_cache\": true,\n"
                       "  \"vocab_size\": 128256\n"
                       "}\n",
                       &st);
    CHECK_TRUE(ok, "llama 3.1: %s", st.msg);
    CHECK_TRUE(ok && c.arch == HFC_LLAMA && c.hidden_size == 4096 && c.intermediate_size == 14336 &&
                   c.num_layers == 32 && c.num_heads == 32 && c.num_kv_heads == 8 &&
                   c.head_dim == 128 && c.vocab_size == 128256 &&
                   c.max_position_embeddings == 131072 && c.rms_norm_eps == 1e-5 &&
                   c.rope_theta == 500000.0 && c.rope_scaling_type == 1 && c.rope_factor == 8.0 &&
                   c.rope_low_freq_factor == 1.0 && c.rope_high_freq_factor == 4.0 &&
                   c.rope_original_max_position == 8192 && !c.tie_word_embeddings && !c.qkv_bias &&
                   !c.o_bias && !c.mlp_bias && !strcmp(c.torch_dtype, "bfloat16"),
               "llama 3.1 values");

    /* Legacy rope_scaling "type", head_dim null, no num_key_value_heads, defaults. */
    ok = load_text(&c,
                   "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64,"
                   " \"intermediate_size\": 160, \"num_hidden_layers\": 2,"
                   " \"num_attention_heads\": 4, \"vocab_size\": 100, \"rms_norm_eps\": 1e-6,"
                   " \"head_dim\": null, \"attention_bias\": true,"
                   " \"rope_scaling\": {\"type\": \"llama3\", \"factor\": 32,"
                   " \"low_freq_factor\": 1, \"high_freq_factor\": 4,"
                   " \"original_max_position_embeddings\": 8192}}",
                   &st);
    CHECK_TRUE(ok && c.head_dim == 16 && c.num_kv_heads == 4 && c.rope_theta == 10000.0 &&
                   c.max_position_embeddings == 2048 && c.rope_scaling_type == 1 &&
                   c.rope_factor == 32.0 && c.qkv_bias && c.o_bias && !c.mlp_bias &&
                   !c.tie_word_embeddings && c.torch_dtype[0] == 0,
               "legacy type / head_dim null / defaults: %s", st.msg);

    /* rope_scaling null and rope_type default mean none. */
    ok = load_text(&c,
                   "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64,"
                   " \"intermediate_size\": 160, \"num_hidden_layers\": 2,"
                   " \"num_attention_heads\": 4, \"vocab_size\": 100, \"rms_norm_eps\": 1e-6,"
                   " \"rope_scaling\": {\"rope_type\": \"default\"}}",
                   &st);
    CHECK_TRUE(ok && c.rope_scaling_type == 0, "rope_type default: %s", st.msg);

    /* Mistral 7B v0.1: sliding_window present; no max_position_embeddings -> its default. */
    ok = load_text(&c,
                   "{\"architectures\": [\"MistralForCausalLM\"], \"hidden_size\": 4096,"
                   " \"intermediate_size\": 14336, \"num_hidden_layers\": 32,"
                   " \"num_attention_heads\": 32, \"num_key_value_heads\": 8,"
                   " \"vocab_size\": 32000, \"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0,"
                   " \"sliding_window\": 4096, \"hidden_act\": \"silu\","
                   " \"torch_dtype\": \"bfloat16\", \"tie_word_embeddings\": false}",
                   &st);
    CHECK_TRUE(ok && c.arch == HFC_MISTRAL && c.max_position_embeddings == 131072 &&
                   c.head_dim == 128 && !c.qkv_bias && !c.o_bias,
               "mistral: %s", st.msg);

    /* Qwen2-0.5B: q/k/v biases implied, tied embeddings, big theta. */
    ok = load_text(&c,
                   "{\"architectures\": [\"Qwen2ForCausalLM\"], \"hidden_size\": 896,"
                   " \"intermediate_size\": 4864, \"num_hidden_layers\": 24,"
                   " \"num_attention_heads\": 14, \"num_key_value_heads\": 2,"
                   " \"vocab_size\": 151936, \"rms_norm_eps\": 1e-06, \"rope_theta\": 1000000.0,"
                   " \"max_position_embeddings\": 32768, \"sliding_window\": 32768,"
                   " \"use_sliding_window\": false, \"max_window_layers\": 24,"
                   " \"tie_word_embeddings\": true, \"torch_dtype\": \"bfloat16\","
                   " \"rope_scaling\": null}",
                   &st);
    CHECK_TRUE(ok && c.arch == HFC_QWEN2 && c.qkv_bias == 1 && c.o_bias == 0 && c.mlp_bias == 0 &&
                   c.head_dim == 64 && c.num_kv_heads == 2 && c.tie_word_embeddings == 1 &&
                   c.rope_theta == 1e6 && c.rope_scaling_type == 0,
               "qwen2: %s", st.msg);

    /* Only model_type (no architectures); transformers v5 "dtype" and rope_parameters. */
    ok = load_text(&c,
                   "{\"model_type\": \"qwen2\", \"hidden_size\": 64, \"intermediate_size\": 160,"
                   " \"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 100,"
                   " \"rms_norm_eps\": 1e-6, \"dtype\": \"float16\","
                   " \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 1e6}}",
                   &st);
    CHECK_TRUE(ok && c.arch == HFC_QWEN2 && !strcmp(c.torch_dtype, "float16") &&
                   c.rope_theta == 1e6 && c.rope_scaling_type == 0,
               "model_type only / v5 fields: %s", st.msg);

    /* _name_or_path (what save_pretrained wrote: a Hub id or a local path) is kept as written,
     * informational: absent, or not a string, gives "" and never refuses the config. */
#define SMALL                                                                                      \
    "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, "                            \
    "\"intermediate_size\": 160, \"num_hidden_layers\": 2, \"num_attention_heads\": 4, "           \
    "\"vocab_size\": 100, \"rms_norm_eps\": 1e-6"
    ok = load_text(&c, SMALL ", \"_name_or_path\": \"meta-llama/Llama-3.1-8B\"}", &st);
    CHECK_TRUE(ok && !strcmp(c.name_or_path, "meta-llama/Llama-3.1-8B"), "_name_or_path: %s '%s'",
               st.msg, c.name_or_path);
    ok = load_text(&c, SMALL ", \"_name_or_path\": 7}", &st);
    CHECK_TRUE(ok && c.name_or_path[0] == 0, "_name_or_path not a string: %s", st.msg);
    ok = load_text(&c, SMALL "}", &st);
    CHECK_TRUE(ok && c.name_or_path[0] == 0, "no _name_or_path: %s", st.msg);
#undef SMALL
}

/* hfc_load must fail, leave c untouched, and name the file and each needle. */
static void expect_fail(const char *what, const char *text, const char *n1, const char *n2) {
    const char *p = check_tmp_path("bad_config.json");
    write_text(p, text);
    HfcConfig c;
    ErrStatus st;
    memset(&c, 0x33, sizeof c);
    int ok = hfc_load(&c, p, &st);
    unsigned char probe[sizeof c];
    memset(probe, 0x33, sizeof probe);
    CHECK_TRUE(!ok, "%s: accepted", what);
    CHECK_TRUE(memcmp(&c, probe, sizeof c) == 0, "%s: config modified on error", what);
    CHECK_TRUE(strstr(st.msg, p) != NULL, "%s: message lacks the path: %s", what, st.msg);
    CHECK_TRUE(!n1 || strstr(st.msg, n1), "%s: message lacks '%s': %s", what, n1, st.msg);
    CHECK_TRUE(!n2 || strstr(st.msg, n2), "%s: message lacks '%s': %s", what, n2, st.msg);
    printf("  %-26s -> %s\n", what, st.msg);
}

#define BASE                                                                                       \
    "\"hidden_size\": 64, \"intermediate_size\": 160, \"num_hidden_layers\": 2,"                   \
    " \"num_attention_heads\": 4, \"vocab_size\": 100, \"rms_norm_eps\": 1e-6"
#define LLAMA "{\"architectures\": [\"LlamaForCausalLM\"], "

static void test_errors(void) {
    printf("rejections\n");
    expect_fail("missing hidden_size",
                LLAMA "\"intermediate_size\": 160, \"num_hidden_layers\": 2,"
                      " \"num_attention_heads\": 4, \"vocab_size\": 100, \"rms_norm_eps\": 1e-6}",
                "missing required field 'hidden_size'", NULL);
    expect_fail("missing rms_norm_eps",
                LLAMA "\"hidden_size\": 64, \"intermediate_size\": 160, \"num_hidden_layers\": 2,"
                      " \"num_attention_heads\": 4, \"vocab_size\": 100}",
                "missing required field 'rms_norm_eps'", NULL);
    {
        /* The exact wording the brief gives. */
        const char *p = check_tmp_path("bad_config.json");
        write_text(p, LLAMA "\"hidden_size\": \"4096\", \"intermediate_size\": 160,"
                            " \"num_hidden_layers\": 2, \"num_attention_heads\": 4,"
                            " \"vocab_size\": 100, \"rms_norm_eps\": 1e-6}");
        HfcConfig c;
        ErrStatus st;
        char want[700];
        snprintf(want, sizeof want, "%s: field 'hidden_size' must be a positive integer", p);
        CHECK_TRUE(!hfc_load(&c, p, &st) && !strcmp(st.msg, want), "string hidden_size: %s",
                   st.msg);
        printf("  %-26s -> %s\n", "string hidden_size", st.msg);
    }
    expect_fail("zero layers",
                LLAMA "\"hidden_size\": 64, \"intermediate_size\": 160, \"num_hidden_layers\": 0,"
                      " \"num_attention_heads\": 4, \"vocab_size\": 100, \"rms_norm_eps\": 1e-6}",
                "field 'num_hidden_layers' must be a positive integer", NULL);
    expect_fail("duplicate key", LLAMA BASE ", \"vocab_size\": 7}", "duplicate", NULL);
    expect_fail("real vocab",
                LLAMA "\"hidden_size\": 64, \"intermediate_size\": 160, \"num_hidden_layers\": 2,"
                      " \"num_attention_heads\": 4, \"vocab_size\": 100.5, \"rms_norm_eps\": 1e-6}",
                "field 'vocab_size' must be a positive integer", NULL);
    expect_fail("negative eps",
                LLAMA "\"hidden_size\": 64, \"intermediate_size\": 160, \"num_hidden_layers\": 2,"
                      " \"num_attention_heads\": 4, \"vocab_size\": 100, \"rms_norm_eps\": -1}",
                "field 'rms_norm_eps' must be a positive number", NULL);
    expect_fail("string theta", LLAMA BASE ", \"rope_theta\": \"1e4\"}",
                "field 'rope_theta' must be a positive number", NULL);
    expect_fail("tie not bool", LLAMA BASE ", \"tie_word_embeddings\": 1}",
                "field 'tie_word_embeddings' must be true or false", NULL);
    expect_fail("kv heads string", LLAMA BASE ", \"num_key_value_heads\": \"2\"}",
                "field 'num_key_value_heads' must be a positive integer", NULL);
    expect_fail("unknown architecture", "{\"architectures\": [\"GPT2LMHeadModel\"], " BASE "}",
                "unsupported architecture 'GPT2LMHeadModel'", NULL);
    expect_fail("architectures not array", "{\"architectures\": \"LlamaForCausalLM\", " BASE "}",
                "field 'architectures' must be a non-empty array of strings", NULL);
    expect_fail("no architecture", "{" BASE "}", "missing field 'architectures'", NULL);
    /* transformers would build a Mistral config for a Llama model class: refused */
    expect_fail("model_type contradicts",
                "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"mistral\", " BASE
                "}",
                "model_type 'mistral' contradicts architectures 'LlamaForCausalLM'", NULL);
    expect_fail("unknown model_type with architectures",
                "{\"architectures\": [\"Qwen2ForCausalLM\"], \"model_type\": \"gpt2\", " BASE "}",
                "model_type 'gpt2' contradicts architectures 'Qwen2ForCausalLM'", NULL);
    expect_fail("unknown model_type", "{\"model_type\": \"gpt2\", " BASE "}",
                "unsupported model_type 'gpt2'", NULL);
    expect_fail("linear rope",
                LLAMA BASE ", \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2}}",
                "unsupported rope_scaling type 'linear'", NULL);
    expect_fail("yarn rope",
                LLAMA BASE ", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4}}",
                "unsupported rope_scaling type 'yarn'", NULL);
    expect_fail("llama3 without factor",
                LLAMA BASE ", \"rope_scaling\": {\"rope_type\": \"llama3\", \"low_freq_factor\": 1,"
                           " \"high_freq_factor\": 4, \"original_max_position_embeddings\": 8192}}",
                "missing required field 'rope_scaling.factor'", NULL);
    expect_fail("llama3 orig not int",
                LLAMA BASE ", \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8,"
                           " \"low_freq_factor\": 1, \"high_freq_factor\": 4,"
                           " \"original_max_position_embeddings\": \"8192\"}}",
                "field 'rope_scaling.original_max_position_embeddings' must be a positive integer",
                NULL);
    expect_fail("llama3 high == low",
                LLAMA BASE ", \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8,"
                           " \"low_freq_factor\": 4, \"high_freq_factor\": 4,"
                           " \"original_max_position_embeddings\": 8192}}",
                "high_freq_factor", NULL);
    expect_fail("rope_scaling no type", LLAMA BASE ", \"rope_scaling\": {\"factor\": 8}}",
                "'rope_scaling' has no 'rope_type'", NULL);
    expect_fail("rope_scaling string", LLAMA BASE ", \"rope_scaling\": \"llama3\"}",
                "field 'rope_scaling' must be an object or null", NULL);
    expect_fail("H % KV", LLAMA BASE ", \"num_key_value_heads\": 3}",
                "num_attention_heads 4 is not a multiple of num_key_value_heads 3", NULL);
    expect_fail("odd head_dim", LLAMA BASE ", \"head_dim\": 15}", "head_dim 15 must be even", NULL);
    expect_fail("C % H, no head_dim",
                LLAMA "\"hidden_size\": 66, \"intermediate_size\": 160, \"num_hidden_layers\": 2,"
                      " \"num_attention_heads\": 4, \"vocab_size\": 100, \"rms_norm_eps\": 1e-6}",
                "no head_dim", NULL);
    expect_fail("gelu", LLAMA BASE ", \"hidden_act\": \"gelu\"}", "'hidden_act' is 'gelu'", NULL);
    expect_fail("long torch_dtype", LLAMA BASE ", \"torch_dtype\": \"float32float32float32\"}",
                "torch_dtype", NULL);
    expect_fail("root array", "[1, 2]", "not a JSON object", NULL);
    expect_fail("malformed JSON", "{\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"x\": }\n",
                "line 3, column", "byte");
    expect_fail("trailing comma", LLAMA BASE ",}", "JSON error at byte", NULL);
    expect_fail("empty file", "", "JSON error", NULL);

    HfcConfig c;
    ErrStatus st;
    CHECK_TRUE(!hfc_load(&c, check_tmp_path("missing.json"), &st) && strstr(st.msg, "cannot open"),
               "missing file: %s", st.msg);

    /* Writer refusals: an invalid config, and an unwritable place (nothing created). */
    hfc_defaults(&c, HFC_MISTRAL);
    c.qkv_bias = 1;
    CHECK_TRUE(!hfc_write(&c, check_tmp_path("w.json"), &st) && strstr(st.msg, "no biases") &&
                   access(check_tmp_path("w.json"), F_OK) != 0,
               "mistral with bias written: %s", st.msg);
    hfc_defaults(&c, HFC_LLAMA);
    c.num_kv_heads = 3;
    CHECK_TRUE(!hfc_write(&c, check_tmp_path("w.json"), &st) &&
                   strstr(st.msg, "num_key_value_heads"),
               "bad kv heads written: %s", st.msg);
    hfc_defaults(&c, HFC_LLAMA);
    const char *p = check_tmp_path("no/such/dir/config.json");
    CHECK_TRUE(!hfc_write(&c, p, &st) && strstr(st.msg, p) && strstr(st.msg, "No such file"),
               "nonexistent dir: %s", st.msg);
    printf("  %-26s -> %s\n", "write into missing dir", st.msg);
    /* An existing file survives a refused write. */
    const char *keep = check_tmp_path("keep.json");
    CHECK_TRUE(hfc_write(&c, keep, &st), "write keep: %s", st.msg);
    c.head_dim = 7;
    CHECK_TRUE(!hfc_write(&c, keep, &st), "odd head_dim written");
    HfcConfig r;
    CHECK_TRUE(hfc_load(&r, keep, &st) && r.head_dim == 32, "existing file damaged: %s", st.msg);
}

int main(void) {
    check_tmp_init("sl_test_hfc");
    CHECK_TRUE(!strcmp(hfc_arch_name(HFC_QWEN2), "Qwen2ForCausalLM") &&
                   !strcmp(hfc_arch_name(HFC_MISTRAL), "MistralForCausalLM"),
               "arch names");
    test_round_trip();
    test_real_configs();
    test_errors();
    check_rm_rf(check_tmp);
    return check_finish();
}
