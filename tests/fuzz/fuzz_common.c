/* Scratch files and the fixed tokenizer of the fuzz harnesses (see fuzz_common.h). */
#include "fuzz_common.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/afile.h"
#include "io/tokenizer.h"

static char fz_scratch[256];

static void fz_cleanup(void) {
    ErrStatus st;
    if (fz_scratch[0]) afile_rmdir_flat(fz_scratch, &st);
}

const char *fz_dir(void) {
    if (fz_scratch[0]) return fz_scratch;
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
    snprintf(fz_scratch, sizeof fz_scratch, "%s/sl-fuzz-XXXXXX", base ? base : "/tmp");
    if (!mkdtemp(fz_scratch)) {
        perror("fuzz: mkdtemp");
        abort();
    }
    atexit(fz_cleanup);
    return fz_scratch;
}

const char *fz_path(const char *name) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", fz_dir(), name);
    return path;
}

const char *fz_write(const char *name, const uint8_t *data, size_t n) {
    const char *path = fz_path(name);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) {
        perror(path);
        abort();
    }
    return path;
}

/* Special tokens of the hand-written chat layouts (io/chatfmt.h) and the usual BOS / EOS. */
static const char *const fz_specials[] = {
    "<s>",        "</s>",     "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|eot_id|>", "[INST]",   "[/INST]",           "<|im_start|>",        "<|im_end|>",
    "<<SYS>>",    "<</SYS>>",
};
#define FZ_NSPECIAL ((int)(sizeof fz_specials / sizeof fz_specials[0]))
/* Merges over byte-level strings ("Ġ" is the space): enough to exercise BPE ranks. */
static const char *const fz_merges[][2] = {
    {"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {"Ġ", "t"}, {"Ġt", "he"},
    {"i", "n"}, {"Ġ", "a"}, {"e", "r"},   {"o", "n"},    {"Ġ", "w"}, {"Ġw", "o"},
};
#define FZ_NMERGE ((int)(sizeof fz_merges / sizeof fz_merges[0]))

static json_t *fz_bytelevel(void) {
    return json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0,
                     "trim_offsets", 1, "use_regex", 1);
}

static json_t *fz_tokenizer_json(void) {
    json_t *vocab = json_object(), *merges = json_array(), *added = json_array();
    int id = 0;
    for (int b = 0; b < 256; b++) {
        char u[4];
        tok_byte_char(b, u);
        json_object_set_new(vocab, u, json_integer(id++));
    }
    for (int i = 0; i < FZ_NMERGE; i++) {
        char both[64];
        snprintf(both, sizeof both, "%s%s", fz_merges[i][0], fz_merges[i][1]);
        if (!json_object_get(vocab, both)) json_object_set_new(vocab, both, json_integer(id++));
        json_array_append_new(merges, json_pack("[s, s]", fz_merges[i][0], fz_merges[i][1]));
    }
    for (int i = 0; i < FZ_NSPECIAL; i++) {
        json_array_append_new(added,
                              json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", id, "content",
                                        fz_specials[i], "single_word", 0, "lstrip", 0, "rstrip", 0,
                                        "normalized", 0, "special", 1));
        json_object_set_new(vocab, fz_specials[i], json_integer(id++));
    }
    json_t *model =
        json_pack("{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:o, s:o}", "type", "BPE", "dropout",
                  "unk_token", "continuing_subword_prefix", "end_of_word_suffix", "fuse_unk", 0,
                  "byte_fallback", 0, "vocab", vocab, "merges", merges);
    return json_pack("{s:s, s:n, s:n, s:o, s:n, s:o, s:o, s:o, s:o}", "version", "1.0",
                     "truncation", "padding", "added_tokens", added, "normalizer", "pre_tokenizer",
                     fz_bytelevel(), "post_processor", fz_bytelevel(), "decoder", fz_bytelevel(),
                     "model", model);
}

const char *fz_fixed_tokenizer(void) {
    static char path[512];
    if (path[0]) return path;
    snprintf(path, sizeof path, "%s", fz_path("fixed-tokenizer.json"));
    json_t *root = fz_tokenizer_json();
    if (!root || json_dump_file(root, path, JSON_INDENT(1)) != 0) {
        fprintf(stderr, "fuzz: cannot write %s\n", path);
        abort();
    }
    json_decref(root);
    return path;
}
