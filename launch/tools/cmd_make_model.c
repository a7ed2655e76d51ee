/* `shardlora make-model`: writes a real Hugging Face model directory (config.json,
 * safetensors weights, optionally sharded with an index, a byte-level tokenizer.json from
 * bytetok.h or a copy of --tokenizer) with deterministic SYNTHETIC random weights from
 * Philox: linear and embedding weights N(0, init_std^2) (default init_std = 1/sqrt(hidden)),
 * biases N(0, 0.02^2), norm weights 1 + N(0, 0.1^2) (not all ones, so tests exercise the
 * norm weights). For tests, benchmarks and the demo: no package ships pretrained weights. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include "../../io/afile.h"
#include "../../io/hfconfig.h"
#include "../../io/safetensors.h"
#include "../../runtime/gemm.h"
#include "../../runtime/log.h"
#include "../../runtime/philox.h"
#include "../args.h"
#include "../cmds.h"
#include "bytetok.h"

typedef enum { MM_MATRIX = 0, MM_NORM, MM_BIAS } MmKind;

typedef struct {
    char name[160];
    int64_t rows, cols; /* cols 0: 1-D */
    MmKind kind;
    void *data;
    size_t bytes;
    int file;
} MmTensor;

static void mm_add(MmTensor *t, int *n, const char *name, int64_t rows, int64_t cols, MmKind k) {
    MmTensor *x = &t[(*n)++];
    memset(x, 0, sizeof *x);
    snprintf(x->name, sizeof x->name, "%s", name);
    x->rows = rows;
    x->cols = cols;
    x->kind = k;
}

/* Copies tokenizer_config.json from beside FILE into OUT when it exists (the chat template
 * and the special tokens live there). */
static int mm_copy_tokenizer_config(const char *tokenizer_file, const char *out) {
    char src[4200], dst[4200];
    const char *slash = strrchr(tokenizer_file, '/');
    int dirlen = slash ? (int)(slash - tokenizer_file) : 1;
    snprintf(src, sizeof src, "%.*s/tokenizer_config.json", dirlen, slash ? tokenizer_file : ".");
    snprintf(dst, sizeof dst, "%s/tokenizer_config.json", out);
    ErrStatus ignore; /* optional beside the tokenizer */
    FILE *in = afile_fopen_input(src, &ignore);
    if (!in) return 0;
    char *buf = NULL;
    size_t n = 0, cap = 0, k;
    do {
        if (n + 65536 > cap) {
            cap = cap ? 2 * cap : 131072;
            char *nb = realloc(buf, cap);
            SL_CHECK(nb, "out of memory");
            buf = nb;
        }
        k = fread(buf + n, 1, cap - n, in);
        n += k;
    } while (k > 0);
    fclose(in);
    ErrStatus st;
    int ok = afile_write_all(dst, buf, n, &st);
    free(buf);
    if (!ok) {
        fprintf(stderr, "shardlora make-model: %s\n", st.msg);
        return EXIT_IO;
    }
    return 0;
}

/* The options, as given (init_std and shards are settled by mm_config and mm_assign_files). */
typedef struct {
    const char *out, *arch, *dtype, *rope_scaling, *tokenizer;
    int64_t layers, hidden, ffn, heads, kv_heads, head_dim, vocab, shards, max_pos, rope_orig;
    double rope_theta, rms_eps, init_std, rope_factor, rope_low, rope_high;
    int tie, qkv_bias, force;
    uint64_t seed;
} MmOpts;

/* Parses argv into o. Returns 1 to go on, or 0 with *rc the exit status (0 after --help). */
static int mm_parse_opts(MmOpts *o, int argc, char **argv, int *rc) {
    *o = (MmOpts){.arch = "llama",
                  .dtype = "F32",
                  .rope_scaling = "none",
                  .layers = 2,
                  .hidden = 64,
                  .ffn = 176,
                  .heads = 4,
                  .kv_heads = -1,
                  .head_dim = -1,
                  .vocab = 512,
                  .shards = 1,
                  .max_pos = 2048,
                  .rope_orig = 256,
                  .rope_theta = 10000.0,
                  .rms_eps = 1e-5,
                  .init_std = -1,
                  .rope_factor = 8.0,
                  .rope_low = 1.0,
                  .rope_high = 4.0,
                  .seed = 1234};
    /* one option per line: name, type, destination, metavar, help, required, seen */
    // clang-format off
    ArgSpec specs[] = {
        {"out", ARG_STR, &o->out, "DIR", "output model directory", 1, 0},
        {"arch", ARG_STR, &o->arch, "NAME", "llama | mistral | qwen2", 0, 0},
        {"layers", ARG_INT, &o->layers, "N", "num_hidden_layers", 0, 0},
        {"hidden", ARG_INT, &o->hidden, "N", "hidden_size", 0, 0},
        {"ffn", ARG_INT, &o->ffn, "N", "intermediate_size", 0, 0},
        {"heads", ARG_INT, &o->heads, "N", "num_attention_heads", 0, 0},
        {"kv-heads", ARG_INT, &o->kv_heads, "N", "num_key_value_heads (-1: = heads)", 0, 0},
        {"head-dim", ARG_INT, &o->head_dim, "N", "head_dim (-1: hidden / heads)", 0, 0},
        {"vocab", ARG_INT, &o->vocab, "N", "vocab_size", 0, 0},
        {"tie", ARG_BOOL, &o->tie, NULL, "tie_word_embeddings (no lm_head.weight)", 0, 0},
        {"qkv-bias", ARG_BOOL, &o->qkv_bias, NULL, "biases on q/k/v (qwen2 always has them)", 0,
         0},
        {"rope-theta", ARG_FLOAT, &o->rope_theta, "X", "rope_theta", 0, 0},
        {"rope-scaling", ARG_STR, &o->rope_scaling, "TYPE", "none | llama3", 0, 0},
        {"rope-factor", ARG_FLOAT, &o->rope_factor, "X", "llama3 rope_scaling factor", 0, 0},
        {"rope-low-freq-factor", ARG_FLOAT, &o->rope_low, "X", "llama3 low_freq_factor", 0, 0},
        {"rope-high-freq-factor", ARG_FLOAT, &o->rope_high, "X", "llama3 high_freq_factor", 0,
         0},
        {"rope-original-max-pos", ARG_INT, &o->rope_orig, "N",
         "llama3 original_max_position_embeddings", 0, 0},
        {"max-pos", ARG_INT, &o->max_pos, "N", "max_position_embeddings", 0, 0},
        {"rms-eps", ARG_FLOAT, &o->rms_eps, "X", "rms_norm_eps", 0, 0},
        {"init-std", ARG_FLOAT, &o->init_std, "X",
         "std of the random linear/embedding weights (-1: 1/sqrt(hidden), so a frozen lm_head can "
         "still express real token distributions)", 0, 0},
        {"dtype", ARG_STR, &o->dtype, "T", "F32 | BF16 (weights; norms and biases too)", 0, 0},
        {"seed", ARG_U64, &o->seed, "N", "seed of the weights (Philox)", 0, 0},
        {"shards", ARG_INT, &o->shards, "N",
         "split the weights over N safetensors files with model.safetensors.index.json", 0, 0},
        {"tokenizer", ARG_STR, &o->tokenizer, "FILE",
         "copy this tokenizer.json, and the tokenizer_config.json next to it if there is one "
         "(default: write a byte-level one when vocab >= 259)", 0, 0},
        {"force", ARG_BOOL, &o->force, NULL, "overwrite an existing model in --out", 0, 0},
    };
    // clang-format on
    const int nspecs = (int)(sizeof specs / sizeof specs[0]);
    return args_command(specs, nspecs, argc, argv, 2, "make-model",
                        "shardlora make-model --out DIR [options]",
                        "Write a Hugging Face model directory with deterministic synthetic "
                        "random weights (for tests, benchmarks and demos).",
                        rc);
}

/* The config.json of the options (and o->init_std's default); 0, or EXIT_USAGE with the
 * message printed. */
static int mm_config(MmOpts *o, HfcConfig *c, HfcArch *arch, StDtype *dtype) {
    HfcArch a = strcmp(o->arch, "llama") == 0     ? HFC_LLAMA
                : strcmp(o->arch, "mistral") == 0 ? HFC_MISTRAL
                : strcmp(o->arch, "qwen2") == 0   ? HFC_QWEN2
                                                  : (HfcArch)-1;
    if ((int)a < 0) {
        fprintf(stderr, "shardlora make-model: --arch '%s': expected llama, mistral or qwen2\n",
                o->arch);
        return EXIT_USAGE;
    }
    int sdt = st_dtype_parse(o->dtype);
    if (sdt != ST_F32 && sdt != ST_BF16) {
        fprintf(stderr, "shardlora make-model: --dtype '%s': expected F32 or BF16\n", o->dtype);
        return EXIT_USAGE;
    }
    if (o->layers < 1 || o->hidden < 2 || o->ffn < 1 || o->heads < 1 || o->vocab < 2 ||
        o->shards < 1) {
        fprintf(stderr, "shardlora make-model: sizes must be positive\n");
        return EXIT_USAGE;
    }
    if (o->init_std <= 0) o->init_std = 1.0 / sqrt((double)o->hidden);
    hfc_defaults(c, a);
    c->hidden_size = o->hidden;
    c->intermediate_size = o->ffn;
    c->num_layers = o->layers;
    c->num_heads = o->heads;
    c->num_kv_heads = o->kv_heads > 0 ? o->kv_heads : o->heads;
    c->head_dim = o->head_dim > 0 ? o->head_dim : o->hidden / o->heads;
    c->vocab_size = o->vocab;
    if (!o->tokenizer && o->vocab >= BYTETOK_VOCAB_SIZE) {
        c->bos_token_id = 256; /* the byte-level tokenizer's <s> and </s> */
        c->eos_token_id = 257;
    }
    c->max_position_embeddings = o->max_pos;
    c->rms_norm_eps = o->rms_eps;
    c->rope_theta = o->rope_theta;
    c->tie_word_embeddings = o->tie;
    if (a == HFC_QWEN2) {
        c->qkv_bias = 1;
        c->o_bias = 0;
    } else {
        c->qkv_bias = o->qkv_bias;
        c->o_bias = o->qkv_bias; /* Llama's attention_bias puts a bias on o_proj too */
    }
    if (strcmp(o->rope_scaling, "llama3") == 0) {
        c->rope_scaling_type = 1;
        c->rope_factor = o->rope_factor;
        c->rope_low_freq_factor = o->rope_low;
        c->rope_high_freq_factor = o->rope_high;
        c->rope_original_max_position = o->rope_orig;
    } else if (strcmp(o->rope_scaling, "none") != 0) {
        fprintf(stderr, "shardlora make-model: --rope-scaling '%s': expected none or llama3\n",
                o->rope_scaling);
        return EXIT_USAGE;
    }
    snprintf(c->torch_dtype, sizeof c->torch_dtype, "%s", sdt == ST_BF16 ? "bfloat16" : "float32");
    if (c->num_heads % c->num_kv_heads || c->head_dim % 2) {
        fprintf(stderr,
                "shardlora make-model: heads must be a multiple of kv-heads and head-dim even\n");
        return EXIT_USAGE;
    }
    ErrStatus st; /* sizes within what the loader accepts, before any tensor is made */
    if (!hfc_validate(c, "config.json", &st)) {
        fprintf(stderr, "shardlora make-model: %s\n", st.msg);
        return EXIT_USAGE;
    }
    *arch = a;
    *dtype = (StDtype)sdt;
    return 0;
}

/* Refuses an existing model in OUT unless --force, then creates OUT. 0 or the exit status. */
static int mm_prepare_out(const MmOpts *o) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", o->out);
    struct stat sb;
    if (!o->force && stat(path, &sb) == 0) {
        fprintf(stderr,
                "shardlora make-model: %s already contains a model (use --force to overwrite)\n",
                o->out);
        return EXIT_USAGE;
    }
    if (!afile_mkdirs(o->out)) {
        fprintf(stderr, "shardlora make-model: cannot create %s: %s\n", o->out, strerror(errno));
        return EXIT_IO;
    }
    return 0;
}

/* The tensors of config c, in Hugging Face order, without data; their count in *n. */
static MmTensor *mm_list_tensors(const HfcConfig *c, int *n) {
    const int64_t C = c->hidden_size, F = c->intermediate_size, V = c->vocab_size,
                  HD = c->num_heads * c->head_dim, KD = c->num_kv_heads * c->head_dim;
    int cap = (int)(c->num_layers * 16 + 8);
    MmTensor *t = calloc((size_t)cap, sizeof *t);
    SL_CHECK(t != NULL, "out of memory");
    char name[160];
    *n = 0;
    mm_add(t, n, "model.embed_tokens.weight", V, C, MM_MATRIX);
    static const char *mods[7] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                  "gate_proj", "up_proj", "down_proj"};
    for (int64_t l = 0; l < c->num_layers; l++) {
        const int64_t outs[7] = {HD, KD, KD, C, F, F, C}, ins[7] = {C, C, C, HD, C, C, F};
        for (int i = 0; i < 7; i++) {
            snprintf(name, sizeof name, "model.layers.%lld.%s.%s.weight", (long long)l,
                     i < 4 ? "self_attn" : "mlp", mods[i]);
            mm_add(t, n, name, outs[i], ins[i], MM_MATRIX);
            int bias = (i < 3 && c->qkv_bias) || (i == 3 && c->o_bias);
            if (bias) {
                snprintf(name, sizeof name, "model.layers.%lld.self_attn.%s.bias", (long long)l,
                         mods[i]);
                mm_add(t, n, name, outs[i], 0, MM_BIAS);
            }
        }
        snprintf(name, sizeof name, "model.layers.%lld.input_layernorm.weight", (long long)l);
        mm_add(t, n, name, C, 0, MM_NORM);
        snprintf(name, sizeof name, "model.layers.%lld.post_attention_layernorm.weight",
                 (long long)l);
        mm_add(t, n, name, C, 0, MM_NORM);
    }
    mm_add(t, n, "model.norm.weight", C, 0, MM_NORM);
    if (!c->tie_word_embeddings) mm_add(t, n, "lm_head.weight", V, C, MM_MATRIX);
    return t;
}

/* Draws every tensor's values from Philox (see the top of the file) in dtype; the total
 * bytes in *total. 0, or EXIT_IO when out of memory. */
static int mm_fill_tensors(MmTensor *t, int n, const MmOpts *o, StDtype dtype, size_t *total) {
    size_t esize = st_dtype_size(dtype);
    *total = 0;
    for (int i = 0; i < n; i++) {
        size_t numel = (size_t)(t[i].rows * (t[i].cols ? t[i].cols : 1));
        t[i].bytes = numel * esize;
        *total += t[i].bytes;
        t[i].data = malloc(t[i].bytes ? t[i].bytes : 1);
        if (!t[i].data) {
            fprintf(stderr, "shardlora make-model: out of memory\n");
            return EXIT_IO;
        }
        for (size_t j = 0; j < numel; j++) {
            float z = philox_normal(o->seed, PHILOX_MODEL_INIT, j, (uint64_t)i, 0);
            float v = t[i].kind == MM_MATRIX ? (float)o->init_std * z
                      : t[i].kind == MM_BIAS ? 0.02f * z
                                             : 1.0f + 0.1f * z;
            if (dtype == ST_BF16)
                ((uint16_t *)t[i].data)[j] = gemm_f32_to_bf16(v);
            else
                ((float *)t[i].data)[j] = v;
        }
    }
    return 0;
}

/* Splits the tensors into files by cumulative bytes; *shards is capped at n. */
static void mm_assign_files(MmTensor *t, int n, int64_t *shards, size_t total) {
    if (*shards > n) *shards = n;
    size_t acc = 0;
    for (int i = 0; i < n; i++) {
        int f = (int)((double)acc / (double)total * (double)*shards);
        t[i].file = f < *shards ? f : (int)*shards - 1;
        acc += t[i].bytes;
    }
}

/* The safetensors files, and model.safetensors.index.json when there is more than one.
 * 0 or EXIT_IO with the message printed. */
static int mm_write_weights(const MmTensor *t, int n, const char *out, int64_t shards,
                            StDtype dtype, size_t total) {
    char path[4096];
    ErrStatus st;
    int rc = 0;
    json_t *wmap = json_object();
    for (int64_t f = 0; f < shards && rc == 0; f++) {
        char fname[128];
        if (shards == 1)
            snprintf(fname, sizeof fname, "model.safetensors");
        else
            snprintf(fname, sizeof fname, "model-%05lld-of-%05lld.safetensors", (long long)f + 1,
                     (long long)shards);
        StWriter w;
        st_writer_init(&w);
        st_writer_meta(&w, "format", "pt");
        st_writer_meta(&w, "shardlora", "synthetic random weights (make-model)");
        for (int i = 0; i < n; i++) {
            if (t[i].file != f) continue;
            int64_t shape[2] = {t[i].rows, t[i].cols};
            st_writer_add(&w, t[i].name, dtype, t[i].cols ? 2 : 1, shape, t[i].data);
            json_object_set_new(wmap, t[i].name, json_string(fname));
        }
        snprintf(path, sizeof path, "%s/%s", out, fname);
        if (!st_writer_write(&w, path, &st)) {
            fprintf(stderr, "shardlora make-model: %s\n", st.msg);
            rc = EXIT_IO;
        }
        st_writer_free(&w);
    }
    if (rc == 0 && shards > 1) {
        json_t *idx = json_object(), *meta = json_object();
        json_object_set_new(meta, "total_size", json_integer((json_int_t)total));
        json_object_set_new(idx, "metadata", meta);
        json_object_set(idx, "weight_map", wmap);
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", out);
        if (!afile_write_json(path, idx, JSON_INDENT(2), &st)) {
            fprintf(stderr, "shardlora make-model: %s\n", st.msg);
            rc = EXIT_IO;
        }
        json_decref(idx);
    }
    json_decref(wmap);
    return rc;
}

/* OUT/tokenizer.json: a copy of --tokenizer (with its tokenizer_config.json), else the
 * byte-level one when the vocabulary has room for it, else none (said on stderr).
 * 0 or EXIT_IO with the message printed. */
static int mm_write_tokenizer(const MmOpts *o) {
    char path[4096];
    ErrStatus st;
    int rc = 0;
    snprintf(path, sizeof path, "%s/tokenizer.json", o->out);
    if (o->tokenizer) {
        ErrStatus why;
        FILE *in = afile_fopen_input(o->tokenizer, &why), *out = in ? fopen(path, "wb") : NULL;
        if (!in) {
            fprintf(stderr, "shardlora make-model: %s\n", why.msg);
            rc = EXIT_BAD_INPUT;
        } else if (!out) {
            fprintf(stderr, "shardlora make-model: cannot copy %s to %s: %s\n", o->tokenizer, path,
                    strerror(errno));
            rc = EXIT_IO;
        } else {
            char buf[65536];
            size_t k;
            while ((k = fread(buf, 1, sizeof buf, in)) > 0)
                fwrite(buf, 1, k, out);
        }
        if (in) fclose(in);
        if (out) fclose(out);
        if (rc == 0) rc = mm_copy_tokenizer_config(o->tokenizer, o->out);
    } else if (o->vocab >= BYTETOK_VOCAB_SIZE) {
        if (!bytetok_write(path, &st)) {
            fprintf(stderr, "shardlora make-model: %s\n", st.msg);
            rc = EXIT_IO;
        }
    } else {
        fprintf(stderr,
                "make-model: no tokenizer.json written: the byte-level tokenizer needs "
                "--vocab >= %d (or pass --tokenizer FILE)\n",
                BYTETOK_VOCAB_SIZE);
    }
    return rc;
}

int cmd_make_model(int argc, char **argv) {
    MmOpts o;
    HfcConfig c;
    HfcArch arch;
    StDtype dtype;
    int rc;
    if (!mm_parse_opts(&o, argc, argv, &rc)) return rc;
    if ((rc = mm_config(&o, &c, &arch, &dtype)) != 0) return rc;
    if ((rc = mm_prepare_out(&o)) != 0) return rc;

    int n = 0;
    size_t total = 0;
    MmTensor *t = mm_list_tensors(&c, &n);
    rc = mm_fill_tensors(t, n, &o, dtype, &total);
    if (rc == 0) {
        mm_assign_files(t, n, &o.shards, total);
        rc = mm_write_weights(t, n, o.out, o.shards, dtype, total);
    }
    if (rc == 0) rc = mm_write_tokenizer(&o);
    if (rc == 0) {
        char path[4096];
        ErrStatus st;
        snprintf(path, sizeof path, "%s/config.json", o.out);
        if (!hfc_write(&c, path, &st)) {
            fprintf(stderr, "shardlora make-model: %s\n", st.msg);
            rc = EXIT_IO;
        }
    }
    for (int i = 0; i < n; i++)
        free(t[i].data);
    free(t);
    if (rc == 0)
        fprintf(stderr,
                "make-model: wrote %s (%s, %lld layers, hidden %lld, %lld tensors, %.1f MiB %s in "
                "%lld file%s; synthetic weights, seed %llu)\n",
                o.out, hfc_arch_name(arch), (long long)o.layers, (long long)c.hidden_size,
                (long long)n, (double)total / 1048576.0, o.dtype, (long long)o.shards,
                o.shards > 1 ? "s" : "", (unsigned long long)o.seed);
    return rc;
}
