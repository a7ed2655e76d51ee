/* libFuzzer harness for io/tokenizer. The first byte picks the mode:
 *   even: the rest is text for a fixed byte-level BPE tokenizer (fuzz_common.c): encode with
 *         and without the post-processor, decode the ids (decode(encode(x)) must give x back
 *         for valid UTF-8), and decode the bytes themselves read as ids;
 *   odd:  the rest is a tokenizer.json: tok_load, and if it loads, encode a few strings and
 *         decode the low ids. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "fuzz_common.h"
#include "io/tokenizer.h"

static const char *const fz_texts[] = {
    "Hello world",
    " the  quick\tbrown\n\nfox 12345!",
    "<s>[INST] hi [/INST]</s>",
    "\xc3\xa9t\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80",
    "\xff\xfe bad utf-8 \xc3",
};

static int fz_valid_utf8(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate(s + i, (utf8proc_ssize_t)(n - i), &cp);
        if (k <= 0) return 0;
        i += (size_t)k;
    }
    return 1;
}

static void fz_fixed(const uint8_t *text, size_t n) {
    static Tokenizer *tk; /* loaded once: the harness has no context argument */
    ErrStatus st;
    if (!tk && !(tk = tok_load(fz_fixed_tokenizer(), &st))) {
        fprintf(stderr, "fuzz_tokenizer: the fixed tokenizer does not load: %s\n", st.msg);
        abort();
    }
    TokIds ids = {0};
    for (int add = 0; add <= 1; add++) {
        ids.n = 0;
        if (!tok_encode(tk, (const char *)text, n, add, &ids, &st)) continue;
        for (int skip = 0; skip <= 1; skip++) {
            size_t len;
            char *back = tok_decode(tk, ids.ids, ids.n, skip, &len);
            if (!add && !skip && fz_valid_utf8(text, n) && (len != n || memcmp(back, text, n))) {
                fprintf(stderr, "fuzz_tokenizer: decode(encode(x)) != x (%zu vs %zu bytes)\n", len,
                        n);
                abort();
            }
            free(back);
        }
    }
    tok_ids_free(&ids);
    size_t len;
    int32_t raw[256];
    size_t nraw = n / 4 < 256 ? n / 4 : 256;
    memcpy(raw, text, nraw * 4);
    free(tok_decode(tk, raw, nraw, n & 1, &len));
}

static void fz_loaded(Tokenizer *tk) {
    ErrStatus st;
    TokIds ids = {0};
    for (size_t i = 0; i < sizeof fz_texts / sizeof fz_texts[0]; i++) {
        ids.n = 0;
        if (!tok_encode(tk, fz_texts[i], strlen(fz_texts[i]), (int)(i & 1), &ids, &st)) continue;
        size_t len;
        free(tok_decode(tk, ids.ids, ids.n, (int)(i & 1), &len));
    }
    int32_t low[64];
    int32_t v = tok_vocab_size(tk);
    for (int i = 0; i < 64; i++)
        low[i] = v > 0 ? i % v : i;
    size_t len, before, after;
    free(tok_decode(tk, low, 64, 0, &len));
    tok_post_counts(tk, &before, &after);
    (void)tok_token_id(tk, "</s>");
    tok_ids_free(&ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    if ((data[0] & 1) == 0) {
        fz_fixed(data + 1, size - 1);
        return 0;
    }
    ErrStatus st;
    Tokenizer *tk = tok_load(fz_write("tokenizer.json", data + 1, size - 1), &st);
    if (tk) {
        fz_loaded(tk);
        tok_free(tk);
    }
    return 0;
}
